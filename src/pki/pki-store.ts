import { mkdir, readFile, realpath, rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { z } from "zod";
import { UsageError } from "../errors.js";
import { bytesEqual } from "../util/bytes.js";
import { atomicWriteFile, readJsonFile } from "../util/fs.js";
import { acquireLockFile } from "../util/lock.js";
import { X509Certificate, type X509Crl } from "../util/x509.js";
import {
  assertKeyOfCertificate,
  type CaKeySecrets,
  canonicalCaKeyReference,
  generateCaKeyOnToken,
  isPkcs11Uri,
  type OpenedCaKey,
  openCaKey,
  parseCaKeyUri,
} from "./ca-key.js";
import { CRL_REASONS, type CrlReasonName, crlToPem, DEFAULT_CRL_VALIDITY_DAYS, issueCrl } from "./crl.js";
import { certificateParts } from "./der.js";
import { DEVICE_FILES } from "./files.js";
import {
  type CryptoKeyPairLike,
  createDeviceIdentity,
  createRootCa,
  DEFAULT_MANUFACTURER,
  type IssuerCredentials,
  issueCaCertificate,
  type OnboardingPki,
} from "./issue.js";
import { privateKeyPem } from "./key-files.js";
import { type CryptoKey, type CryptoProvider, nodeCrypto } from "./keys.js";

/**
 * The on-disk PKI directory written by `pki init` and `pki issue-token-ca`. A CA key is a PKCS#8 file
 * (mode 0600; passphrase-encrypted with `--encrypt`, plain otherwise, which warns each time it is
 * loaded) or a key on a PKCS#11 token, recorded in pki-state.json as `keys.<ca>` (a `pkcs11:` URI
 * without PIN) instead of a key file (docs/PKI.md, "CA keys"). Every file is written atomically
 * (temporary file, fsync, rename, fsync of the directory), and operations that change the CRL state
 * hold a lock file.
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
const keyReference = z.string().refine(isPkcs11Uri, "a key reference in the state is a pkcs11: URI");
const pkiStateSchema = z.object({
  version: z.literal(1),
  /** CA keys held in a PKCS#11 token (no PIN in them); a CA not named here has its key file. */
  keys: z
    .object({
      root: keyReference.optional(),
      tokenCa: keyReference.optional(),
      deviceCa: keyReference.optional(),
    })
    .optional(),
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

/** The three CAs whose keys a PKI directory can hold. */
export type CaName = "root" | "tokenCa" | "deviceCa";

const CA_FILES: Readonly<Record<CaName, { cert: string; key: string; what: string }>> = {
  root: { cert: PKI_FILES.rootCert, key: PKI_FILES.rootKey, what: "the root CA" },
  tokenCa: { cert: PKI_FILES.tokenCaCert, key: PKI_FILES.tokenCaKey, what: "the token CA" },
  deviceCa: { cert: PKI_FILES.deviceCaCert, key: PKI_FILES.deviceCaKey, what: "the device CA" },
};

/**
 * Secrets for library callers that give none: a plain key file loads (no warning; the CLI passes
 * one), an encrypted file or a token key is refused with the option that supplies the secret.
 */
export const NO_SECRETS: CaKeySecrets = {
  pin: async (what) => {
    throw new UsageError(`the ${what} is needed: give it with --ca-pin-fd N or --ca-pin-env NAME`);
  },
  passphrase: async (what) => {
    throw new UsageError(
      `the ${what} is needed: give it with --ca-passphrase-fd N or --ca-passphrase-env NAME`,
    );
  },
  warn: () => {},
};

/** Options of every function that loads a CA key. */
export interface CaKeyLoadOptions {
  readonly crypto?: CryptoProvider;
  readonly secrets?: CaKeySecrets;
  /** Load this CA key instead of the one the directory records (a file path or a pkcs11: URI). */
  readonly keyOverride?: Partial<Record<CaName, string>>;
}

/** Where a CA's key is: the override, else the state's pkcs11: reference, else the key file. */
export function caKeyReference(
  dir: string,
  state: PkiState | undefined,
  ca: CaName,
  override?: string,
): string {
  return override ?? state?.keys?.[ca] ?? join(dir, CA_FILES[ca].key);
}

/** A CA certificate with its key opened (close it: a token key holds a session). */
export interface OpenedIssuer extends IssuerCredentials {
  readonly opened: OpenedCaKey;
}

/** Opens one CA of a PKI directory: its certificate and its key, checked to belong together. */
export async function openIssuer(
  dir: string,
  state: PkiState,
  ca: CaName,
  options: CaKeyLoadOptions = {},
): Promise<OpenedIssuer> {
  const certificate = await readCertificateFile(join(dir, CA_FILES[ca].cert));
  const reference = caKeyReference(dir, state, ca, options.keyOverride?.[ca]);
  const opened = await openCaKey(reference, options.secrets ?? NO_SECRETS, {
    ...(options.crypto ? { crypto: options.crypto } : {}),
  }).catch((error: unknown) => {
    const cause = (error as { cause?: NodeJS.ErrnoException }).cause;
    if (!isPkcs11Uri(reference) && cause?.code === "ENOENT") {
      throw new UsageError(`${dir} has no key for ${CA_FILES[ca].what} (${reference})`, { cause: error });
    }
    throw error;
  });
  try {
    await assertKeyOfCertificate(
      opened,
      certificate,
      `${CA_FILES[ca].what} certificate ${CA_FILES[ca].cert}`,
      options.crypto,
    );
  } catch (error) {
    opened.close();
    throw error;
  }
  return { certificate, privateKey: opened.key, opened };
}

/** Whether `dir` already holds any file of a PKI. */
export async function holdsPki(dir: string): Promise<boolean> {
  for (const file of Object.values(PKI_FILES)) {
    if (await exists(join(dir, file))) return true;
  }
  return false;
}

export interface InitPkiOptions {
  /** Encrypt the key files with this passphrase (PBES2, scrypt; key-files.ts). */
  readonly passphrase?: string;
  /** CAs whose key is in a PKCS#11 token (pkcs11: URIs); the others get key files. */
  readonly tokenKeys?: Partial<Record<CaName, string>>;
  /** Generate the keys named in `tokenKeys` on their tokens (else they must exist there). */
  readonly generateKeys?: boolean;
  /** PIN of the tokens. */
  readonly secrets?: CaKeySecrets;
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
  const tokenKeys = Object.entries(options.tokenKeys ?? {}).filter(
    (entry): entry is [CaName, string] => entry[1] !== undefined,
  );
  for (const [, reference] of tokenKeys) parseCaKeyUri(reference); // no PIN in them, before anything is written
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!options.force && (await holdsPki(dir))) {
    throw new UsageError(`${dir} already holds a PKI; pass --force to replace it`);
  }
  return withPkiLock(dir, async () => {
    const manufacturer = options.manufacturer ?? DEFAULT_MANUFACTURER;
    const opened = new Map<CaName, OpenedCaKey>();
    try {
      const keysOf = async (ca: CaName): Promise<CryptoKeyPairLike | undefined> => {
        const reference = options.tokenKeys?.[ca];
        if (reference === undefined) return undefined;
        const secrets = options.secrets ?? NO_SECRETS;
        const key = options.generateKeys
          ? await generateCaKeyOnToken(reference, "P-384", secrets, { crypto })
          : await openCaKey(reference, secrets, { crypto });
        opened.set(ca, key);
        if (!key.spki) {
          throw new UsageError(
            `${key.description}: the token holds no public key object for this key, so it cannot be certified`,
          );
        }
        return { publicKey: await importPublicKey(key.spki, crypto), privateKey: key.key };
      };
      const now = options.now ? { now: options.now } : {};
      const rootKeys = await keysOf("root");
      const root = await createRootCa({
        ...now,
        organization: manufacturer,
        crypto,
        ...(rootKeys ? { keys: rootKeys } : {}),
      });
      const tokenOrganization = options.owner ?? manufacturer;
      const tokenCaKeys = await keysOf("tokenCa");
      const tokenCa = await issueCaCertificate({
        ...now,
        crypto,
        issuer: root,
        kind: "tokenCa",
        organization: tokenOrganization,
        commonName: `${tokenOrganization} Token CA`,
        ...(tokenCaKeys ? { keys: tokenCaKeys } : {}),
      });
      const deviceCaKeys = await keysOf("deviceCa");
      const deviceCa = await issueCaCertificate({
        ...now,
        crypto,
        issuer: root,
        kind: "deviceCa",
        organization: manufacturer,
        commonName: `${manufacturer} Device CA`,
        ...(deviceCaKeys ? { keys: deviceCaKeys } : {}),
      });
      const pki: OnboardingPki = { root, tokenCa, deviceCa };
      const keys = Object.fromEntries(
        tokenKeys.map(([ca, reference]) => [ca, canonicalCaKeyReference(reference)]),
      );
      const state: PkiState = {
        version: 1,
        ...(tokenKeys.length > 0 ? { keys } : {}),
        ...(options.owner !== undefined ? { owner: options.owner } : {}),
        manufacturer,
        nextCrlNumber: 1,
        crlValidityDays: options.crlValidityDays ?? DEFAULT_CRL_VALIDITY_DAYS,
        revoked: [],
      };
      for (const ca of ["root", "tokenCa", "deviceCa"] as const) {
        const credentials = pki[ca];
        const inToken = opened.get(ca);
        if (inToken) {
          // The certificate goes next to the key on the token too; no key file (an old one is removed).
          inToken.storeCertificate(new Uint8Array(credentials.certificate.rawData));
          await rm(join(dir, CA_FILES[ca].key), { force: true });
          await atomicWriteFile(join(dir, CA_FILES[ca].cert), pem(credentials.certificate));
        } else {
          await writeCredentials(
            dir,
            CA_FILES[ca].cert,
            CA_FILES[ca].key,
            credentials,
            crypto,
            options.passphrase,
          );
        }
      }
      const { crl, state: next } = await signNextCrl(dir, pki.tokenCa, state, options.now, crypto);
      return { pki, crl, state: next };
    } finally {
      for (const key of opened.values()) key.close();
    }
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
  options: IssueTokenCaOptions = {},
): Promise<{ tokenCa: IssuerCredentials; root: X509Certificate; crl: X509Crl; state: PkiState }> {
  const crypto = options.crypto ?? nodeCrypto;
  const secrets = options.secrets ?? NO_SECRETS;
  const tokenKey = options.tokenCaKey;
  if (tokenKey && !isPkcs11Uri(tokenKey.reference)) {
    throw new UsageError("--token-ca-key: a new token CA key goes into a token: give a pkcs11: URI");
  }
  if (tokenKey) parseCaKeyUri(tokenKey.reference); // its rules (no PIN in it) before anything is read
  if (tokenKey && options.passphrase !== undefined) {
    throw new UsageError("--encrypt is for a key file; a key in a token has no file to encrypt");
  }
  const manufacturerState = await readState(manufacturerDir);
  if ((await realpathOrSelf(manufacturerDir)) === (await realpathOrSelf(outDir))) {
    throw new UsageError("--out must be a directory of its own, not the manufacturer's PKI directory");
  }
  const root = await openIssuer(manufacturerDir, manufacturerState, "root", { crypto, secrets });
  let tokenCaKey: OpenedCaKey | undefined;
  try {
    await mkdir(outDir, { recursive: true, mode: 0o700 });
    if (!options.force && (await holdsPki(outDir))) {
      throw new UsageError(`${outDir} already holds a PKI; pass --force to replace it`);
    }
    return await withPkiLock(outDir, async () => {
      let keys: { publicKey: CryptoKey; privateKey: CryptoKey } | undefined;
      if (tokenKey) {
        tokenCaKey = tokenKey.generate
          ? await generateCaKeyOnToken(tokenKey.reference, "P-384", secrets, { crypto })
          : await openCaKey(tokenKey.reference, secrets, { crypto });
        if (!tokenCaKey.spki) {
          throw new UsageError(
            `${tokenCaKey.description}: the token holds no public key object for this key, so it cannot be certified`,
          );
        }
        keys = { publicKey: await importPublicKey(tokenCaKey.spki, crypto), privateKey: tokenCaKey.key };
      }
      const issued = await issueCaCertificate({
        issuer: root,
        kind: "tokenCa",
        organization: owner,
        commonName: `${owner} Token CA`,
        ...(options.now ? { now: options.now } : {}),
        ...(keys ? { keys } : {}),
        crypto,
      });
      const state: PkiState = {
        version: 1,
        ...(tokenKey ? { keys: { tokenCa: canonicalCaKeyReference(tokenKey.reference) } } : {}),
        owner,
        manufacturer: manufacturerState.manufacturer,
        nextCrlNumber: 1,
        crlValidityDays: options.crlValidityDays ?? DEFAULT_CRL_VALIDITY_DAYS,
        revoked: [],
      };
      // An owner directory from an earlier --force must not keep another PKI's keys.
      const stale: string[] = [PKI_FILES.rootKey, PKI_FILES.deviceCaKey, PKI_FILES.deviceCaCert];
      if (tokenKey) stale.push(PKI_FILES.tokenCaKey);
      for (const file of stale) await rm(join(outDir, file), { force: true });
      await atomicWriteFile(join(outDir, PKI_FILES.rootCert), pem(root.certificate));
      if (tokenCaKey) {
        // The token then holds its certificate next to the key (same label and id), as PKCS#11 tools expect.
        tokenCaKey.storeCertificate(new Uint8Array(issued.certificate.rawData));
        await atomicWriteFile(join(outDir, PKI_FILES.tokenCaCert), pem(issued.certificate));
      } else {
        const passphrase =
          options.passphrase ?? (options.newPassphrase ? await options.newPassphrase() : undefined);
        await writeCredentials(
          outDir,
          PKI_FILES.tokenCaCert,
          PKI_FILES.tokenCaKey,
          issued,
          crypto,
          passphrase,
        );
      }
      const { crl, state: next } = await signNextCrl(outDir, issued, state, options.now, crypto);
      return { tokenCa: issued, root: root.certificate, crl, state: next };
    });
  } finally {
    tokenCaKey?.close();
    root.opened.close();
  }
}

export interface IssueTokenCaOptions {
  readonly force?: boolean;
  readonly now?: Date;
  readonly crlValidityDays?: number;
  readonly crypto?: CryptoProvider;
  /** Secrets of the root key (and of the token for a pkcs11: token CA key). */
  readonly secrets?: CaKeySecrets;
  /** The token CA key in a PKCS#11 token (a pkcs11: URI); `generate` makes the key pair there first. */
  readonly tokenCaKey?: { readonly reference: string; readonly generate: boolean };
  /** Encrypt the new token-ca.key.pem with this passphrase. */
  readonly passphrase?: string;
  /** Or ask for it, after the root key is open (so a terminal asks in a sensible order). */
  readonly newPassphrase?: () => Promise<string>;
}

async function importPublicKey(spki: Uint8Array, crypto: CryptoProvider): Promise<CryptoKey> {
  const { curveOfSpki } = await import("./keys.js");
  return crypto.subtle.importKey("spki", spki, { name: "ECDSA", namedCurve: curveOfSpki(spki) }, true, [
    "verify",
  ]);
}

/** A PKI directory as far as its token CA goes: the state, the root certificate, the token CA and key. */
export interface LoadedTokenCa {
  readonly dir: string;
  readonly state: PkiState;
  readonly root: { readonly certificate: X509Certificate };
  readonly tokenCa: IssuerCredentials;
  /** Closes the token CA key (a token session); a no-op for a key file. */
  close(): void;
}

/**
 * Reads what revoking and CRL signing need: a manufacturer's directory (`pki init`) or an owner's
 * (`pki issue-token-ca`), which holds no root or device CA key.
 */
export async function loadTokenCaDirectory(
  dir: string,
  options: CryptoProvider | CaKeyLoadOptions = {},
): Promise<LoadedTokenCa> {
  const load = loadOptions(options);
  const state = await readState(dir);
  const root = await readCertificateFile(join(dir, PKI_FILES.rootCert));
  const tokenCa = await openIssuer(dir, state, "tokenCa", load);
  return {
    dir,
    state,
    root: { certificate: root },
    tokenCa: { certificate: tokenCa.certificate, privateKey: tokenCa.privateKey },
    close: () => tokenCa.opened.close(),
  };
}

function loadOptions(options: CryptoProvider | CaKeyLoadOptions): CaKeyLoadOptions {
  return "subtle" in options ? { crypto: options as CryptoProvider } : (options as CaKeyLoadOptions);
}

/** Reads a PKI directory written by `pki init` (all three CA keys; close it when they are in a token). */
export async function loadPkiDirectory(
  dir: string,
  options: CryptoProvider | CaKeyLoadOptions = {},
): Promise<LoadedPki & { close(): void }> {
  const load = loadOptions(options);
  const state = await readState(dir);
  const opened: OpenedIssuer[] = [];
  const close = () => {
    for (const issuer of opened) issuer.opened.close();
  };
  try {
    for (const ca of ["root", "tokenCa", "deviceCa"] as const)
      opened.push(await openIssuer(dir, state, ca, load));
  } catch (error) {
    close();
    throw error;
  }
  const [root, tokenCa, deviceCa] = opened.map((o) => ({
    certificate: o.certificate,
    privateKey: o.privateKey,
  })) as [IssuerCredentials, IssuerCredentials, IssuerCredentials];
  return { dir, state, root, tokenCa, deviceCa, close };
}

/** `pki issue-device`: a device key, its certificate and the chain up to the root, in `outDir`. */
export async function issueDeviceToDirectory(
  pkiDir: string,
  outDir: string,
  serial: string,
  options: { force?: boolean; now?: Date; crypto?: CryptoProvider; secrets?: CaKeySecrets } = {},
): Promise<{ certificate: X509Certificate; files: { key: string; cert: string; chain: string } }> {
  const crypto = options.crypto ?? nodeCrypto;
  const state = await readState(pkiDir);
  const rootCertificate = await readCertificateFile(join(pkiDir, PKI_FILES.rootCert));
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
  // Only the device CA key is needed (not the root's or the token CA's).
  const deviceCa = await openIssuer(pkiDir, state, "deviceCa", {
    crypto,
    ...(options.secrets ? { secrets: options.secrets } : {}),
  });
  try {
    const { certificate, privateKey } = await createDeviceIdentity({
      deviceCa,
      serial,
      manufacturer: state.manufacturer,
      ...(options.now ? { now: options.now } : {}),
      crypto,
    });
    // The key first: a certificate without its key is useless, a key without a certificate is harmless.
    // The device key stays a plain file: the agent reads it unattended (or the HSM holds it: pkcs11:).
    await atomicWriteFile(files.key, await privateKeyPem(privateKey, undefined, crypto), KEY_MODE);
    await atomicWriteFile(files.cert, pem(certificate));
    await atomicWriteFile(files.chain, pem(deviceCa.certificate) + pem(rootCertificate));
    return { certificate, files };
  } finally {
    deviceCa.opened.close();
  }
}

/**
 * `pki revoke`: records the certificate as revoked by the token CA and signs a new CRL. Returns
 * `alreadyRevoked` (and signs nothing) when it was revoked before.
 */
export async function revokeInPki(
  dir: string,
  certificateFile: string,
  reason: CrlReasonName,
  options: { now?: Date } & CaKeyLoadOptions = {},
): Promise<{ certificate: X509Certificate; record: RevokedRecord; alreadyRevoked: boolean; crl?: X509Crl }> {
  const crypto = options.crypto ?? nodeCrypto;
  const certificate = await readCertificateFile(certificateFile);
  return withPkiLock(dir, async () => {
    // Checked with the certificates alone, so a refused revocation asks no PIN or passphrase.
    const state = await readState(dir);
    const tokenCaCertificate = await readCertificateFile(join(dir, PKI_FILES.tokenCaCert));
    await assertIssuedBy(certificate, tokenCaCertificate, certificateFile, crypto);
    const serialNumber = certificate.serialNumber.toLowerCase();
    const previous = state.revoked.find((r) => r.serialNumber === serialNumber);
    if (previous) return { certificate, record: previous, alreadyRevoked: true };
    const pki = await loadTokenCaDirectory(dir, { ...options, crypto });
    try {
      const record: RevokedRecord = {
        serialNumber,
        revokedAt: (options.now ?? new Date()).toISOString(),
        reason,
        subject: certificate.subject,
      };
      const next: PkiState = { ...pki.state, revoked: [...pki.state.revoked, record] };
      const { crl } = await signNextCrl(dir, pki.tokenCa, next, options.now, crypto);
      return { certificate, record, alreadyRevoked: false, crl };
    } finally {
      pki.close();
    }
  });
}

/** `pki crl`: signs a fresh CRL (next CRL number) with the current revocations. */
export async function resignCrl(
  dir: string,
  options: { now?: Date; validityDays?: number } & CaKeyLoadOptions = {},
): Promise<{ crl: X509Crl; state: PkiState }> {
  const crypto = options.crypto ?? nodeCrypto;
  return withPkiLock(dir, async () => {
    const pki = await loadTokenCaDirectory(dir, { ...options, crypto });
    try {
      const state =
        options.validityDays !== undefined
          ? { ...pki.state, crlValidityDays: options.validityDays }
          : pki.state;
      return await signNextCrl(dir, pki.tokenCa, state, options.now, crypto);
    } finally {
      pki.close();
    }
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

/** The state of a PKI directory, or undefined when it has no state file (any other problem throws). */
export async function readPkiStateIfAny(dir: string): Promise<PkiState | undefined> {
  if (!(await exists(join(dir, PKI_FILES.state)))) return undefined;
  return readState(dir);
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
  passphrase?: string,
): Promise<void> {
  await atomicWriteFile(
    join(dir, keyFile),
    await privateKeyPem(credentials.privateKey, passphrase, crypto),
    KEY_MODE,
  );
  await atomicWriteFile(join(dir, certFile), pem(credentials.certificate));
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
  issuerCertificate: X509Certificate,
  file: string,
  crypto: CryptoProvider,
): Promise<void> {
  const sameName = bytesEqual(
    certificateParts(certificate.rawData).issuer,
    certificateParts(issuerCertificate.rawData).subject,
  );
  const signed =
    sameName &&
    (await certificate
      .verify({ publicKey: issuerCertificate.publicKey, signatureOnly: true }, crypto)
      .catch(() => false));
  if (!signed)
    throw new UsageError(`${file} was not issued by this PKI's token CA ("${issuerCertificate.subject}")`);
}

function pem(certificate: X509Certificate): string {
  return `${certificate.toString("pem")}\n`;
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
