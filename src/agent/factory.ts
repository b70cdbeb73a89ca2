/**
 * `agent factory-init`: what an HSM receives at the factory (SPEC.md §4): its serial, the manufacturer
 * root (the only trust anchor), its device identity (checked here: it must chain to that root and
 * name this serial), optionally an initial CRL (its number becomes the replay floor), the owner it is
 * bound to — by its token CA's key (issue 10: a name alone binds nothing when one root serves many
 * owners) — and the quorum of co-signatures a configuration needs.
 */
import { X509Certificate } from "node:crypto";
import { chmod, mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { UsageError } from "../errors.js";
import { isPkcs11Uri } from "../pkcs11/uri.js";
import { isTokenCa, spkiSha256, tokenCaOwner } from "../pki/ca-facts.js";
import { type CrlView, readCrl } from "../pki/fast-x509.js";
import { DEVICE_FILES } from "../pki/files.js";
import { PEM_LABELS, pemToDer } from "../pki/pem.js";
import { checkSerial } from "../pki/profiles.js";
import { atomicWriteFile } from "../util/fs.js";
import { AuditLog } from "./audit-log.js";
import {
  describeDevice,
  loadDeviceIdentity,
  parseDeviceUri,
  validateDeviceIdentity,
} from "./device-identity.js";
import type { HostSettingsChoice } from "./host-settings.js";
import { AgentStateStore, crlIssuerKey, STATE_FILES } from "./state-store.js";

/** Where networkd reads administrator .network/.netdev files. */
export const DEFAULT_NETWORKD_DIR = "/etc/systemd/network";

export interface FactoryInitOptions {
  readonly stateDir: string;
  readonly serial: string;
  /** The manufacturer root, PEM or DER. */
  readonly root: Uint8Array;
  /** A `pki issue-device` directory (absolute) or a PKCS#11 URI. */
  readonly device: string;
  /** The token CA's CRL, PEM or DER. */
  readonly crl?: Uint8Array;
  /**
   * Bind the HSM now (rather than at the first onboarding) to the owner whose token CA this is (PEM
   * or DER): the binding pins its key (SPKI SHA-256), never a name.
   */
  readonly ownerCa?: Uint8Array;
  /**
   * The owner's name, for display beside `ownerCa` only (it must be the token CA's owner). Alone it
   * is refused: any owner's token CA under the same root can issue certificates that name it.
   */
  readonly owner?: string;
  /** Valid co-signatures a configuration needs (default 1). */
  readonly quorum?: number;
  /**
   * The network applier this HSM uses (issue 12): chosen here, explicitly — `dry-run` changes
   * nothing and says so in the state, the audit log, `agent status` and every receipt.
   */
  readonly applier: "iproute2" | "networkd" | "dry-run";
  /** For `networkd`: the directory its .network/.netdev files go into (default /etc/systemd/network). */
  readonly networkDir?: string;
  /**
   * How the hostname (and with iproute2 DNS and NTP) is applied (host-settings.ts). Default here:
   * none (library callers, tests, sim); `agent factory-init` defaults to hostnamed for a real applier.
   */
  readonly hostSettings?: HostSettingsChoice;
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
  /** SPKI SHA-256 of the owner's token CA: what the HSM is bound to. */
  readonly ownerCaSpkiSha256?: string;
  readonly quorum: number;
  readonly crlNumber?: string;
  readonly applier: "iproute2" | "networkd" | "dry-run";
  readonly hostSettings: HostSettingsChoice;
}

/**
 * The owner binding `ownerCa` makes: a token CA certificate issued by `root` (signature checked),
 * limited to one owner by its name constraints and CA-level EKU (SPEC.md §4), and its key pin.
 */
export function ownerBinding(
  ownerCa: Uint8Array,
  rootDer: Uint8Array,
  displayName: string | undefined,
): { name: string; tokenCaSpkiSha256: string } {
  const der = certificateDer(ownerCa, "--owner-ca");
  const certificate = new X509Certificate(der);
  if (!certificate.verify(new X509Certificate(rootDer).publicKey)) {
    throw new UsageError("--owner-ca is not issued by the trust anchor (the manufacturer root)");
  }
  const name = isTokenCa(der) ? tokenCaOwner(der) : undefined;
  if (name === undefined) {
    throw new UsageError(
      "--owner-ca must be an owner's token CA (CA-level EKU token-auth/config-signing, name constraints O = its owner), as pki issue-token-ca issues it",
    );
  }
  if (displayName !== undefined && displayName !== name) {
    throw new UsageError(`--owner "${displayName}" is not the owner of --owner-ca ("${name}")`);
  }
  return { name, tokenCaSpkiSha256: spkiSha256(der) };
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
  // The device reference is persisted in state.json: never with a PIN in it (issue 10 finding 5).
  if (isPkcs11Uri(options.device) && parseDeviceUri(options.device).pinValue !== undefined) {
    throw new UsageError(
      "--device: a PKCS#11 pin-value would be stored in the agent state; give pin-source=file:/path (a file only the agent can read) instead",
    );
  }
  const rootDer = certificateDer(options.root, "the trust anchor");
  const root = new X509Certificate(rootDer);
  if (!root.ca || root.subject !== root.issuer || !root.verify(root.publicKey)) {
    throw new UsageError("the trust anchor must be a self-signed CA certificate (the manufacturer root)");
  }
  if (options.owner !== undefined && options.ownerCa === undefined) {
    throw new UsageError(
      "--owner alone does not bind an HSM (every owner's token CA under the root can name any owner): give --owner-ca TOKEN-CA.pem, the owner's token CA, to bind by its key",
    );
  }
  const binding = options.ownerCa ? ownerBinding(options.ownerCa, rootDer, options.owner) : undefined;
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
    let parsed: CrlView;
    let number: bigint | undefined;
    try {
      const text = Buffer.from(options.crl).toString("latin1");
      parsed = readCrl(text.includes("-----BEGIN") ? pemToDer(text, PEM_LABELS.crl) : options.crl);
      number = parsed.crlNumber;
    } catch (error) {
      throw new UsageError("--crl is not a readable CRL", { cause: error });
    }
    if (number === undefined) throw new UsageError("--crl has no CRL number");
    crl = {
      issuer: crlIssuerKey(parsed.issuerDer),
      number,
      der: new Uint8Array(parsed.rawData),
    };
  }
  // The HSM owns its device key from here on (issue 12): a key directory is copied into the state
  // directory (key 0600), so the state never points into a `pki issue-device` output; a PKCS#11 key
  // stays a URI (the token holds the key; a URI with a PIN in it is refused above).
  const hostSettings = options.hostSettings ?? "none";
  if (options.applier === "dry-run" && hostSettings !== "none")
    throw new UsageError("host settings change the host: not with the dry-run applier");
  const device = isPkcs11Uri(options.device) ? options.device : join(options.stateDir, STATE_FILES.device);
  const store = await AgentStateStore.create(
    options.stateDir,
    {
      serial,
      stage: "factory",
      device,
      applier: options.applier,
      ...(options.applier === "networkd" ? { networkDir: options.networkDir ?? DEFAULT_NETWORKD_DIR } : {}),
      hostSettings,
      ...(binding ? { owner: { ...binding, boundBy: "factory" as const } } : {}),
      quorum: { required: quorum, pinned: false },
      crlNumbers: crl ? { [crl.issuer]: crl.number.toString() } : {},
    },
    { clock, ...(options.force ? { force: true } : {}) },
  );
  await atomicWriteFile(join(options.stateDir, STATE_FILES.root), `${root.toString()}`, 0o644);
  if (device !== options.device) await copyDeviceKey(options.device, device);
  if (crl) await store.storeCrl(crl.issuer, crl.der);
  const rootSha256 = root.fingerprint256.replace(/:/g, "").toLowerCase();
  const audit = await AuditLog.open(store.path("audit"), { clock });
  const record = await audit.append("factory-init", {
    serial,
    rootSha256,
    device: describeDevice(options.device),
    ...(binding ? { owner: binding.name, ownerCaSpkiSha256: binding.tokenCaSpkiSha256 } : {}),
    quorum,
    applier: options.applier,
    hostSettings,
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
    ...(binding ? { owner: binding.name, ownerCaSpkiSha256: binding.tokenCaSpkiSha256 } : {}),
    quorum,
    ...(crl ? { crlNumber: crl.number.toString() } : {}),
    applier: options.applier,
    hostSettings,
  };
}

/** Copies a `pki issue-device` directory's key (0600), certificate and chain into `to` (0700). */
async function copyDeviceKey(from: string, to: string): Promise<void> {
  await mkdir(to, { recursive: true, mode: 0o700 });
  await chmod(to, 0o700);
  for (const [file, mode] of [
    [DEVICE_FILES.key, 0o600],
    [DEVICE_FILES.cert, 0o644],
    [DEVICE_FILES.chain, 0o644],
  ] as const) {
    let bytes: Buffer;
    try {
      bytes = await readFile(join(from, file));
    } catch (error) {
      if (file === DEVICE_FILES.chain && (error as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new UsageError(
        `cannot copy the device key: ${join(from, file)}: ${(error as NodeJS.ErrnoException).code ?? error}`,
      );
    }
    await atomicWriteFile(join(to, file), bytes, mode);
    bytes.fill(0);
  }
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
