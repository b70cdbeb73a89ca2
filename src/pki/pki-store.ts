import { mkdir, readFile, realpath, rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { z } from "zod";
import { UsageError } from "../errors.js";
import { bytesEqual } from "../util/bytes.js";
import { atomicWriteFile, readJsonFile } from "../util/fs.js";
import { acquireLockFile } from "../util/lock.js";
import { X509Certificate, type X509Crl } from "../util/x509.js";
import { CRL_REASONS, type CrlReasonName, crlToPem, DEFAULT_CRL_VALIDITY_DAYS, issueCrl } from "./crl.js";
import { certificateParts } from "./der.js";
import { DEVICE_FILES } from "./files.js";
import {
  createDeviceIdentity,
  createPki,
  DEFAULT_MANUFACTURER,
  type IssuerCredentials,
  issueCaCertificate,
  type OnboardingPki,
} from "./issue.js";
import { type CryptoProvider, exportPrivateKeyPem, importPrivateKeyPem, nodeCrypto } from "./keys.js";

/**
 * The on-disk PKI directory written by `pki init` (a development and test PKI: keys are unencrypted
 * PKCS#8 files, mode 0600). Every file is written atomically (temporary file, fsync, rename, fsync of
 * the directory), and operations that change the CRL state hold a lock file.
 */
export const PKI_FILES = {
  rootCert: "root.pem",
  rootKey: "root.key.pem",
  tokenCaCert: "token-ca.pem",
  tokenCaKey: "token-ca.key.pem",
  deviceCaCert: "device-ca.pem",
  deviceCaKey: "device-ca.key.pem",
  crl: "token-ca.crl.pem",
  state: "pki-state.json",
} as const;

export { DEVICE_FILES } from "./files.js";

const LOCK_FILE = ".pki.lock";
const KEY_MODE = 0o600;

const revokedRecord = z.object({
  serialNumber: z.string().regex(/^[0-9a-f]+$/),
  revokedAt: z.iso.datetime(),
  reason: z.enum(CRL_REASONS),
  subject: z.string(),
});
const pkiStateSchema = z.object({
  version: z.literal(1),
  owner: z.string().optional(),
  manufacturer: z.string(),
  /** CRL number the next signed CRL gets; numbers are never reused. */
  nextCrlNumber: z.int().positive(),
  crlValidityDays: z.number().positive(),
  revoked: z.array(revokedRecord),
});
export type PkiState = z.infer<typeof pkiStateSchema>;
export type RevokedRecord = z.infer<typeof revokedRecord>;

export interface LoadedPki extends OnboardingPki {
  readonly dir: string;
  readonly state: PkiState;
}

/** Whether `dir` already holds any file of a PKI. */
export async function holdsPki(dir: string): Promise<boolean> {
  for (const file of Object.values(PKI_FILES)) {
    if (await exists(join(dir, file))) return true;
  }
  return false;
}

export interface InitPkiOptions {
  readonly owner?: string;
  readonly manufacturer?: string;
  readonly force?: boolean;
  readonly now?: Date;
  readonly crlValidityDays?: number;
  readonly crypto?: CryptoProvider;
}

/** `pki init`: a new root, token CA, device CA and an empty CRL number 1 in `dir`. */
export async function initPkiDirectory(
  dir: string,
  options: InitPkiOptions = {},
): Promise<{ pki: OnboardingPki; crl: X509Crl; state: PkiState }> {
  const crypto = options.crypto ?? nodeCrypto;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!options.force && (await holdsPki(dir))) {
    throw new UsageError(`${dir} already holds a PKI; pass --force to replace it`);
  }
  return withPkiLock(dir, async () => {
    const manufacturer = options.manufacturer ?? DEFAULT_MANUFACTURER;
    const pki = await createPki({
      ...(options.owner !== undefined ? { owner: options.owner } : {}),
      manufacturer,
      ...(options.now ? { now: options.now } : {}),
      crypto,
    });
    const state: PkiState = {
      version: 1,
      ...(options.owner !== undefined ? { owner: options.owner } : {}),
      manufacturer,
      nextCrlNumber: 1,
      crlValidityDays: options.crlValidityDays ?? DEFAULT_CRL_VALIDITY_DAYS,
      revoked: [],
    };
    await writeCredentials(dir, PKI_FILES.rootCert, PKI_FILES.rootKey, pki.root, crypto);
    await writeCredentials(dir, PKI_FILES.tokenCaCert, PKI_FILES.tokenCaKey, pki.tokenCa, crypto);
    await writeCredentials(dir, PKI_FILES.deviceCaCert, PKI_FILES.deviceCaKey, pki.deviceCa, crypto);
    const { crl, state: next } = await signNextCrl(dir, pki.tokenCa, state, options.now, crypto);
    return { pki, crl, state: next };
  });
}

/**
 * `pki issue-token-ca`: the manufacturer (the PKI directory holding the root key) issues `owner` its
 * own token CA (O = owner, name constraints O = owner, CA-level EKU token-auth + config-signing).
 * `outDir` becomes the owner's PKI directory: the token CA certificate and key, the root
 * certificate (no root or device CA key), an empty CRL number 1 and a state file naming the owner —
 * what `card personalize --pki`, `pki revoke` and `pki crl` need.
 */
export async function issueTokenCaToDirectory(
  manufacturerDir: string,
  owner: string,
  outDir: string,
  options: { force?: boolean; now?: Date; crlValidityDays?: number; crypto?: CryptoProvider } = {},
): Promise<{ tokenCa: IssuerCredentials; root: X509Certificate; crl: X509Crl; state: PkiState }> {
  const crypto = options.crypto ?? nodeCrypto;
  const manufacturerState = await readState(manufacturerDir);
  const root = await readCredentials(manufacturerDir, PKI_FILES.rootCert, PKI_FILES.rootKey, crypto);
  if ((await realpathOrSelf(manufacturerDir)) === (await realpathOrSelf(outDir))) {
    throw new UsageError("--out must be a directory of its own, not the manufacturer's PKI directory");
  }
  await mkdir(outDir, { recursive: true, mode: 0o700 });
  if (!options.force && (await holdsPki(outDir))) {
    throw new UsageError(`${outDir} already holds a PKI; pass --force to replace it`);
  }
  return withPkiLock(outDir, async () => {
    const tokenCa = await issueCaCertificate({
      issuer: root,
      kind: "tokenCa",
      organization: owner,
      commonName: `${owner} Token CA`,
      ...(options.now ? { now: options.now } : {}),
      crypto,
    });
    const state: PkiState = {
      version: 1,
      owner,
      manufacturer: manufacturerState.manufacturer,
      nextCrlNumber: 1,
      crlValidityDays: options.crlValidityDays ?? DEFAULT_CRL_VALIDITY_DAYS,
      revoked: [],
    };
    // An owner directory from an earlier --force must not keep another PKI's keys.
    for (const stale of [PKI_FILES.rootKey, PKI_FILES.deviceCaKey, PKI_FILES.deviceCaCert]) {
      await rm(join(outDir, stale), { force: true });
    }
    await atomicWriteFile(join(outDir, PKI_FILES.rootCert), pem(root.certificate));
    await writeCredentials(outDir, PKI_FILES.tokenCaCert, PKI_FILES.tokenCaKey, tokenCa, crypto);
    const { crl, state: next } = await signNextCrl(outDir, tokenCa, state, options.now, crypto);
    return { tokenCa, root: root.certificate, crl, state: next };
  });
}

/** A PKI directory as far as its token CA goes: the state, the root certificate, the token CA and key. */
export interface LoadedTokenCa {
  readonly dir: string;
  readonly state: PkiState;
  readonly root: { readonly certificate: X509Certificate };
  readonly tokenCa: IssuerCredentials;
}

/**
 * Reads what revoking and CRL signing need: a manufacturer's directory (`pki init`) or an owner's
 * (`pki issue-token-ca`), which holds no root or device CA key.
 */
export async function loadTokenCaDirectory(
  dir: string,
  crypto: CryptoProvider = nodeCrypto,
): Promise<LoadedTokenCa> {
  const state = await readState(dir);
  const [root, tokenCa] = await Promise.all([
    readCertificateFile(join(dir, PKI_FILES.rootCert)),
    readCredentials(dir, PKI_FILES.tokenCaCert, PKI_FILES.tokenCaKey, crypto),
  ]);
  return { dir, state, root: { certificate: root }, tokenCa };
}

/** Reads a PKI directory written by `pki init`. */
export async function loadPkiDirectory(dir: string, crypto: CryptoProvider = nodeCrypto): Promise<LoadedPki> {
  const state = await readState(dir);
  const [root, tokenCa, deviceCa] = await Promise.all([
    readCredentials(dir, PKI_FILES.rootCert, PKI_FILES.rootKey, crypto),
    readCredentials(dir, PKI_FILES.tokenCaCert, PKI_FILES.tokenCaKey, crypto),
    readCredentials(dir, PKI_FILES.deviceCaCert, PKI_FILES.deviceCaKey, crypto),
  ]);
  return { dir, state, root, tokenCa, deviceCa };
}

/** `pki issue-device`: a device key, its certificate and the chain up to the root, in `outDir`. */
export async function issueDeviceToDirectory(
  pkiDir: string,
  outDir: string,
  serial: string,
  options: { force?: boolean; now?: Date; crypto?: CryptoProvider } = {},
): Promise<{ certificate: X509Certificate; files: { key: string; cert: string; chain: string } }> {
  const crypto = options.crypto ?? nodeCrypto;
  const pki = await loadPkiDirectory(pkiDir, crypto);
  const files = {
    key: join(outDir, DEVICE_FILES.key),
    cert: join(outDir, DEVICE_FILES.cert),
    chain: join(outDir, DEVICE_FILES.chain),
  };
  await mkdir(outDir, { recursive: true, mode: 0o700 });
  if (!options.force) {
    for (const file of Object.values(files)) {
      if (await exists(file)) throw new UsageError(`${file} already exists; pass --force to replace it`);
    }
  }
  const { certificate, privateKey } = await createDeviceIdentity({
    deviceCa: pki.deviceCa,
    serial,
    manufacturer: pki.state.manufacturer,
    ...(options.now ? { now: options.now } : {}),
    crypto,
  });
  // The key first: a certificate without its key is useless, a key without a certificate is harmless.
  await atomicWriteFile(files.key, await exportPrivateKeyPem(privateKey, crypto), KEY_MODE);
  await atomicWriteFile(files.cert, pem(certificate));
  await atomicWriteFile(files.chain, pem(pki.deviceCa.certificate) + pem(pki.root.certificate));
  return { certificate, files };
}

/**
 * `pki revoke`: records the certificate as revoked by the token CA and signs a new CRL. Returns
 * `alreadyRevoked` (and signs nothing) when it was revoked before.
 */
export async function revokeInPki(
  dir: string,
  certificateFile: string,
  reason: CrlReasonName,
  options: { now?: Date; crypto?: CryptoProvider } = {},
): Promise<{ certificate: X509Certificate; record: RevokedRecord; alreadyRevoked: boolean; crl?: X509Crl }> {
  const crypto = options.crypto ?? nodeCrypto;
  const certificate = await readCertificateFile(certificateFile);
  return withPkiLock(dir, async () => {
    const pki = await loadTokenCaDirectory(dir, crypto);
    await assertIssuedBy(certificate, pki.tokenCa, certificateFile, crypto);
    const serialNumber = certificate.serialNumber.toLowerCase();
    const previous = pki.state.revoked.find((r) => r.serialNumber === serialNumber);
    if (previous) return { certificate, record: previous, alreadyRevoked: true };
    const record: RevokedRecord = {
      serialNumber,
      revokedAt: (options.now ?? new Date()).toISOString(),
      reason,
      subject: certificate.subject,
    };
    const state: PkiState = { ...pki.state, revoked: [...pki.state.revoked, record] };
    const { crl } = await signNextCrl(dir, pki.tokenCa, state, options.now, crypto);
    return { certificate, record, alreadyRevoked: false, crl };
  });
}

/** `pki crl`: signs a fresh CRL (next CRL number) with the current revocations. */
export async function resignCrl(
  dir: string,
  options: { now?: Date; validityDays?: number; crypto?: CryptoProvider } = {},
): Promise<{ crl: X509Crl; state: PkiState }> {
  const crypto = options.crypto ?? nodeCrypto;
  return withPkiLock(dir, async () => {
    const pki = await loadTokenCaDirectory(dir, crypto);
    const state =
      options.validityDays !== undefined
        ? { ...pki.state, crlValidityDays: options.validityDays }
        : pki.state;
    return signNextCrl(dir, pki.tokenCa, state, options.now, crypto);
  });
}

/**
 * Signs CRL number `state.nextCrlNumber`. The state advancing past that number is made durable
 * before the CRL file is written, so a crash can skip a number but never sign two CRLs with one.
 */
async function signNextCrl(
  dir: string,
  tokenCa: IssuerCredentials,
  state: PkiState,
  now: Date | undefined,
  crypto: CryptoProvider,
): Promise<{ crl: X509Crl; state: PkiState }> {
  const crlNumber = state.nextCrlNumber;
  const next: PkiState = { ...state, nextCrlNumber: crlNumber + 1 };
  await atomicWriteFile(join(dir, PKI_FILES.state), `${JSON.stringify(next, null, 2)}\n`);
  const crl = await issueCrl({
    issuer: tokenCa,
    crlNumber: BigInt(crlNumber),
    entries: state.revoked.map((r) => ({
      serialNumber: r.serialNumber,
      revokedAt: new Date(r.revokedAt),
      reason: r.reason,
    })),
    validityDays: state.crlValidityDays,
    ...(now ? { now } : {}),
    crypto,
  });
  await atomicWriteFile(join(dir, PKI_FILES.crl), crlToPem(crl));
  return { crl, state: next };
}

/** Runs `fn` holding the directory's lock file (src/util/lock.ts), so two CRL updates cannot interleave. */
export async function withPkiLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(dir, LOCK_FILE);
  const busy = () =>
    new UsageError(`${dir} is locked by another pki command (remove ${lock} if none is running)`);
  let release: () => Promise<void>;
  try {
    release = await acquireLockFile(lock, { busy });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT")
      throw new UsageError(`no PKI directory at ${dir}`);
    throw error;
  }
  try {
    return await fn();
  } finally {
    await release();
  }
}

async function readState(dir: string): Promise<PkiState> {
  return readJsonFile(join(dir, PKI_FILES.state), pkiStateSchema, {
    what: "PKI state",
    missing: () => {
      throw new UsageError(`${dir} is not a PKI directory (no ${PKI_FILES.state}; run pki init)`);
    },
  });
}

async function writeCredentials(
  dir: string,
  certFile: string,
  keyFile: string,
  credentials: IssuerCredentials,
  crypto: CryptoProvider,
): Promise<void> {
  await atomicWriteFile(
    join(dir, keyFile),
    await exportPrivateKeyPem(credentials.privateKey, crypto),
    KEY_MODE,
  );
  await atomicWriteFile(join(dir, certFile), pem(credentials.certificate));
}

async function readCredentials(
  dir: string,
  certFile: string,
  keyFile: string,
  crypto: CryptoProvider,
): Promise<IssuerCredentials> {
  const certificate = await readCertificateFile(join(dir, certFile));
  const keyPath = join(dir, keyFile);
  const { key } = await importPrivateKeyPem(await readText(keyPath), crypto).catch((error: unknown) => {
    throw new UsageError(`${keyPath}: ${(error as Error).message}`, { cause: error });
  });
  return { certificate, privateKey: key };
}

/** Reads a certificate from a PEM or DER file. */
export async function readCertificateFile(path: string): Promise<X509Certificate> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    throw new UsageError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, {
      cause: error,
    });
  }
  try {
    const text = bytes.toString("latin1");
    return text.includes("-----BEGIN CERTIFICATE-----")
      ? new X509Certificate(text)
      : new X509Certificate(new Uint8Array(bytes).buffer);
  } catch (error) {
    throw new UsageError(`${path} is not a readable X.509 certificate`, { cause: error });
  }
}

/** The certificate must be signed by this token CA: revoking someone else's serial would mean nothing. */
async function assertIssuedBy(
  certificate: X509Certificate,
  issuer: IssuerCredentials,
  file: string,
  crypto: CryptoProvider,
): Promise<void> {
  const sameName = bytesEqual(
    certificateParts(certificate.rawData).issuer,
    certificateParts(issuer.certificate.rawData).subject,
  );
  const signed =
    sameName &&
    (await certificate
      .verify({ publicKey: issuer.certificate.publicKey, signatureOnly: true }, crypto)
      .catch(() => false));
  if (!signed)
    throw new UsageError(`${file} was not issued by this PKI's token CA ("${issuer.certificate.subject}")`);
}

function pem(certificate: X509Certificate): string {
  return `${certificate.toString("pem")}\n`;
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    throw new UsageError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, {
      cause: error,
    });
  }
}

async function realpathOrSelf(path: string): Promise<string> {
  return realpath(path).catch(() => resolve(path));
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
