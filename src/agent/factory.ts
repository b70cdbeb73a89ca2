/**
 * `agent factory-init`: what an HSM receives at the factory (SPEC.md §4): its serial, the manufacturer
 * root (the only trust anchor), its device identity (checked here: it must chain to that root and
 * name this serial), optionally an initial CRL (its number becomes the replay floor), an owner it is
 * bound to, and the quorum of co-signatures a configuration needs.
 */
import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { UsageError } from "../errors.js";
import { crlNumberOf, parseCrl } from "../pki/crl.js";
import { crlParts } from "../pki/der.js";
import { checkSerial } from "../pki/profiles.js";
import { atomicWriteFile } from "../util/fs.js";
import { AuditLog } from "./audit-log.js";
import { describeDevice, loadDeviceIdentity, validateDeviceIdentity } from "./device-identity.js";
import { AgentStateStore, crlIssuerKey, STATE_FILES } from "./state-store.js";

export interface FactoryInitOptions {
  readonly stateDir: string;
  readonly serial: string;
  /** The manufacturer root, PEM or DER. */
  readonly root: Uint8Array;
  /** A `pki issue-device` directory (absolute) or a PKCS#11 URI. */
  readonly device: string;
  /** The token CA's CRL, PEM or DER. */
  readonly crl?: Uint8Array;
  /** Bind the HSM to this owner now rather than at the first onboarding. */
  readonly owner?: string;
  /** Valid co-signatures a configuration needs (default 1). */
  readonly quorum?: number;
  readonly force?: boolean;
  readonly clock?: () => Date;
}

export interface FactoryInitResult {
  readonly stateDir: string;
  readonly serial: string;
  readonly rootSubject: string;
  readonly rootSha256: string;
  readonly device: string;
  readonly deviceSubject: string;
  readonly owner?: string;
  readonly quorum: number;
  readonly crlNumber?: string;
}

/** Reads a PEM or DER certificate into DER. */
export function certificateDer(bytes: Uint8Array, what: string): Uint8Array {
  try {
    const text = Buffer.from(bytes).toString("latin1");
    const certificate = text.includes("-----BEGIN CERTIFICATE-----")
      ? new X509Certificate(text)
      : new X509Certificate(Buffer.from(bytes));
    return new Uint8Array(certificate.raw);
  } catch (error) {
    throw new UsageError(`${what} is not a readable X.509 certificate`, { cause: error });
  }
}

export async function factoryInit(options: FactoryInitOptions): Promise<FactoryInitResult> {
  const clock = options.clock ?? (() => new Date());
  const serial = checkSerial("--serial", options.serial);
  const quorum = options.quorum ?? 1;
  if (!Number.isInteger(quorum) || quorum < 1 || quorum > 16) throw new UsageError("--quorum must be 1..16");
  const rootDer = certificateDer(options.root, "the trust anchor");
  const root = new X509Certificate(rootDer);
  if (!root.ca || root.subject !== root.issuer || !root.verify(root.publicKey)) {
    throw new UsageError("the trust anchor must be a self-signed CA certificate (the manufacturer root)");
  }
  const identity = await loadDeviceIdentity(options.device);
  let deviceSubject: string;
  try {
    await validateDeviceIdentity(identity, rootDer, serial, clock());
    deviceSubject = new X509Certificate(identity.certificate).subject.replace(/\n/g, ", ");
  } finally {
    await identity.close();
  }
  let crl: { issuer: string; number: bigint; der: Uint8Array } | undefined;
  if (options.crl) {
    let parsed: ReturnType<typeof parseCrl>;
    try {
      parsed = parseCrl(
        Buffer.from(options.crl).toString("latin1").includes("-----BEGIN")
          ? Buffer.from(options.crl).toString("latin1")
          : options.crl,
      );
    } catch (error) {
      throw new UsageError("--crl is not a readable CRL", { cause: error });
    }
    const number = crlNumberOf(parsed);
    if (number === undefined) throw new UsageError("--crl has no CRL number");
    crl = {
      issuer: crlIssuerKey(crlParts(parsed.rawData).issuer),
      number,
      der: new Uint8Array(parsed.rawData),
    };
  }
  const store = await AgentStateStore.create(
    options.stateDir,
    {
      serial,
      stage: "factory",
      device: options.device,
      ...(options.owner !== undefined ? { owner: { name: options.owner, boundBy: "factory" as const } } : {}),
      quorum: { required: quorum, pinned: false },
      crlNumbers: crl ? { [crl.issuer]: crl.number.toString() } : {},
    },
    { clock, ...(options.force ? { force: true } : {}) },
  );
  await atomicWriteFile(join(options.stateDir, STATE_FILES.root), `${root.toString()}`, 0o644);
  if (crl) await store.storeCrl(crl.issuer, crl.der);
  const rootSha256 = root.fingerprint256.replace(/:/g, "").toLowerCase();
  const audit = await AuditLog.open(store.path("audit"), { clock });
  const record = await audit.append("factory-init", {
    serial,
    rootSha256,
    device: describeDevice(options.device),
    ...(options.owner !== undefined ? { owner: options.owner } : {}),
    quorum,
    ...(crl ? { crlNumber: crl.number.toString() } : {}),
  });
  await store.update((s) => ({ ...s, auditHead: { seq: record.seq, hash: record.hash } }));
  return {
    stateDir: options.stateDir,
    serial,
    rootSubject: root.subject.replace(/\n/g, ", "),
    rootSha256,
    device: describeDevice(options.device),
    deviceSubject,
    ...(options.owner !== undefined ? { owner: options.owner } : {}),
    quorum,
    ...(crl ? { crlNumber: crl.number.toString() } : {}),
  };
}

/** The manufacturer root installed in a state directory (DER). */
export async function readTrustAnchor(stateDir: string): Promise<Uint8Array> {
  const path = join(stateDir, STATE_FILES.root);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    throw new UsageError(
      `cannot read the trust anchor ${path}: ${(error as NodeJS.ErrnoException).code ?? error}`,
    );
  }
  return certificateDer(bytes, path);
}
