/**
 * Where a CA's private key lives (SPEC.md §4; docs/PKI.md, "CA keys"): a PEM file — plain PKCS#8
 * (accepted with a warning each time it is loaded) or passphrase-encrypted PKCS#8 — or a key on a
 * PKCS#11 token named by an RFC 7512 URI:
 *
 *   pkcs11:token=ACME%20CA;object=token-ca?module-path=/usr/lib/softhsm/libsofthsm2.so
 *
 * The token's user PIN is never part of the URI (a `pin-value` or `pin-source` is refused): the
 * caller asks for it (terminal, file descriptor or an environment variable it names). A key on a
 * token signs through CKM_ECDSA over a digest computed here (SHA-256 for P-256, SHA-384 for P-384);
 * the token returns r‖s, which certificate and CRL generators encode as DER like any WebCrypto
 * signature (keys.ts, externalSigningKey).
 */
import { createHash, createPublicKey, randomBytes, verify } from "node:crypto";
import { ECDSA_PROFILES, ecdsaRawToDer } from "../crypto/ecdsa.js";
import { UsageError } from "../errors.js";
import type { Pkcs11ModuleRegistry } from "../pkcs11/module.js";
import type { EcPrivateKey, ObjectSelector, Pkcs11Token } from "../pkcs11/pkcs11-token.js";
import { formatPkcs11Uri, isPkcs11Uri, type Pkcs11Uri, parsePkcs11Uri } from "../pkcs11/uri.js";
import type { X509Certificate } from "../util/x509.js";
import { readPrivateKeyFile } from "./key-files.js";
import {
  type CryptoKey,
  type CryptoProvider,
  cryptoForKey,
  externalSigningKey,
  hashForCurve,
  type NamedCurve,
  nodeCrypto,
} from "./keys.js";

export { isPkcs11Uri } from "../pkcs11/uri.js";

/** How a CA key's secrets are obtained; each is asked only when needed. */
export interface CaKeySecrets {
  /** The user PIN of the token holding a `pkcs11:` key. */
  readonly pin: (what: string) => Promise<string>;
  /** The passphrase of an encrypted key file. */
  readonly passphrase: (what: string) => Promise<string>;
  /** Receives the one-line warning for a plain key file. */
  readonly warn: (line: string) => void;
}

export interface OpenedCaKey {
  /** Signs like a WebCrypto ECDSA private key (IssuerCredentials.privateKey). */
  readonly key: CryptoKey;
  readonly curve: NamedCurve;
  /** SubjectPublicKeyInfo DER, when known (a file always; a token when it holds the public key object). */
  readonly spki?: Uint8Array;
  readonly kind: "file" | "pkcs11";
  /** For messages: the file, or the URI (never a PIN). */
  readonly description: string;
  /** Stores the CA certificate next to a token key (same label and id); a no-op for a file. */
  storeCertificate(der: Uint8Array): void;
  /** Logs out and closes the token session; a no-op for a file. */
  close(): void;
}

export interface OpenCaKeyOptions {
  readonly crypto?: CryptoProvider;
  /** Module registry (tests). */
  readonly registry?: Pkcs11ModuleRegistry;
}

/** Checks that a `pkcs11:` reference names one key the way this project can use it. */
export function parseCaKeyUri(reference: string): Pkcs11Uri & { readonly modulePath: string } {
  const uri = parsePkcs11Uri(reference);
  if (uri.pinValue !== undefined || uri.pinSource !== undefined) {
    throw new UsageError(
      "PKCS#11 URI: no pin-value or pin-source here: the PIN is asked, or read with --ca-pin-fd N or --ca-pin-env NAME",
    );
  }
  if (uri.modulePath === undefined) throw new UsageError("PKCS#11 URI: module-path is required");
  if (uri.token === undefined && uri.serial === undefined) {
    throw new UsageError("PKCS#11 URI: token (label) or serial is required");
  }
  if (uri.object === undefined && uri.id === undefined) {
    throw new UsageError("PKCS#11 URI: object (the key's label) or id is required");
  }
  if (uri.type !== undefined && uri.type !== "private") {
    throw new UsageError("PKCS#11 URI: type must be private (the CA's private key)");
  }
  return { ...uri, modulePath: uri.modulePath };
}

/** The reference as stored and printed: a URI normalised without any PIN; a file as given. */
export function canonicalCaKeyReference(reference: string): string {
  if (!isPkcs11Uri(reference)) return reference;
  const { pinValue: _p, pinSource: _s, ...rest } = parseCaKeyUri(reference);
  return formatPkcs11Uri(rest);
}

function selectorOf(uri: Pkcs11Uri): ObjectSelector {
  return {
    ...(uri.object !== undefined ? { label: uri.object } : {}),
    ...(uri.id !== undefined ? { id: uri.id } : {}),
  };
}

function describeToken(uri: Pkcs11Uri): string {
  return uri.token !== undefined ? `token "${uri.token}"` : `token serial ${uri.serial}`;
}

interface PooledToken {
  readonly token: Pkcs11Token;
  refs: number;
}

/**
 * Logged-in tokens shared by the CA keys open at one time. A PKCS#11 login belongs to the application
 * and the token, not to a session: a second session's C_Logout/C_Login (Pkcs11Token.login drops an
 * existing login first) would invalidate the first key's handle (SoftHSM2 drops the handles of
 * private objects at logout: CKR_OBJECT_HANDLE_INVALID). So two CA keys on one token (pki init
 * --root-key … --device-ca-key …) share one session and one login, and the PIN is asked once.
 */
const pool = new Map<string, PooledToken>();

function poolKey(uri: Pkcs11Uri & { modulePath: string }): string {
  return JSON.stringify([uri.modulePath, uri.token ?? null, uri.serial ?? null]);
}

async function acquireToken(
  uri: Pkcs11Uri & { modulePath: string },
  secrets: Pick<CaKeySecrets, "pin">,
  options: OpenCaKeyOptions,
): Promise<{ token: Pkcs11Token; release: () => void }> {
  const key = poolKey(uri);
  let entry = pool.get(key);
  if (!entry) {
    const pin = await secrets.pin(`PIN of PKCS#11 ${describeToken(uri)}`);
    entry = pool.get(key); // another open may have raced through the await
    if (!entry) {
      const { Pkcs11Token: TokenClass } = await import("../pkcs11/pkcs11-token.js");
      const token = await TokenClass.open({
        modulePath: uri.modulePath,
        ...(uri.token !== undefined ? { tokenLabel: uri.token } : {}),
        ...(uri.serial !== undefined ? { tokenSerial: uri.serial } : {}),
        ...(options.registry ? { registry: options.registry } : {}),
      });
      try {
        token.login(pin);
      } catch (error) {
        token.close();
        throw error;
      }
      entry = { token, refs: 0 };
      pool.set(key, entry);
    }
  }
  entry.refs += 1;
  const held = entry;
  let released = false;
  return {
    token: held.token,
    release: () => {
      if (released) return;
      released = true;
      held.refs -= 1;
      if (held.refs === 0) {
        pool.delete(key);
        held.token.close();
      }
    },
  };
}

function tokenKey(
  token: Pkcs11Token,
  privateKey: EcPrivateKey,
  uri: Pkcs11Uri,
  spki: Uint8Array | undefined,
  release: () => void,
): OpenedCaKey {
  const description = formatPkcs11Uri(uri);
  const key = externalSigningKey(privateKey.curve, async (data, hash) => {
    const wanted = ECDSA_PROFILES[privateKey.curve === "P-384" ? "ES384" : "ES256"].hash;
    if (hash.replace("-", "").toLowerCase() !== wanted.replace("-", "").toLowerCase()) {
      throw new UsageError(`a ${privateKey.curve} token key signs with ${wanted} only, not ${hash}`);
    }
    // CKM_ECDSA signs a digest: the hash is computed here, never by the token.
    return token.signDigest(privateKey, createHash(wanted).update(data).digest());
  });
  return {
    key,
    curve: privateKey.curve,
    ...(spki ? { spki } : {}),
    kind: "pkcs11",
    description,
    storeCertificate: (der) =>
      token.importCertificate({
        label: privateKey.label || (uri.object ?? "ca"),
        ...(privateKey.id.length > 0 ? { id: privateKey.id } : {}),
        der,
        authority: true,
        replace: true,
      }),
    close: release,
  };
}

/**
 * Opens the CA key `reference` names: a `pkcs11:` URI (the PIN is asked through `secrets.pin`) or a
 * key file (a passphrase through `secrets.passphrase` when it is encrypted; a warning when it is not).
 * Close it when done.
 */
export async function openCaKey(
  reference: string,
  secrets: CaKeySecrets,
  options: OpenCaKeyOptions = {},
): Promise<OpenedCaKey> {
  if (!isPkcs11Uri(reference)) {
    const file = await readPrivateKeyFile(reference, {
      passphrase: () => secrets.passphrase(`passphrase of ${reference}`),
      warn: secrets.warn,
      ...(options.crypto ? { crypto: options.crypto } : {}),
    });
    return {
      key: file.key,
      curve: file.curve,
      spki: file.spki,
      kind: "file",
      description: reference,
      storeCertificate: () => {},
      close: () => {},
    };
  }
  const uri = parseCaKeyUri(reference);
  const { token, release } = await acquireToken(uri, secrets, options);
  try {
    const selector = selectorOf(uri);
    const privateKey = token.findPrivateKey(selector);
    if (!privateKey) {
      throw new UsageError(`${describeToken(uri)} has no EC private key ${describeSelector(selector)}`);
    }
    return tokenKey(token, privateKey, uri, token.publicKeySpki(selector), release);
  } catch (error) {
    release();
    throw error;
  }
}

/**
 * Generates a CA key pair on the token `reference` names (object= is the label of both halves; id=
 * their CKA_ID): private, sensitive, never extractable. Refused when a key with that label or id is
 * there already: a CA key is never replaced by accident.
 */
export async function generateCaKeyOnToken(
  reference: string,
  curve: NamedCurve,
  secrets: Pick<CaKeySecrets, "pin">,
  options: OpenCaKeyOptions = {},
): Promise<OpenedCaKey> {
  const uri = parseCaKeyUri(reference);
  if (uri.object === undefined) throw new UsageError("PKCS#11 URI: a new key needs object= (its label)");
  const { token, release } = await acquireToken(uri, secrets, options);
  try {
    const existing = [
      token.findPrivateKey({ label: uri.object }),
      ...(uri.id !== undefined ? [token.findPrivateKey({ id: uri.id })] : []),
    ].filter((k) => k !== undefined);
    if (existing.length > 0) {
      throw new UsageError(
        `${describeToken(uri)} already holds a private key ${describeSelector(selectorOf(uri))}: use it without --new-key, or name another object`,
      );
    }
    const pair = token.generateEcKeyPair({
      label: uri.object,
      ...(uri.id !== undefined ? { id: uri.id } : {}),
      curve,
      requireLogin: true,
    });
    return tokenKey(token, pair.privateKey, uri, pair.spki, release);
  } catch (error) {
    release();
    throw error;
  }
}

function describeSelector(selector: ObjectSelector): string {
  const parts = [
    selector.label !== undefined ? `labelled "${selector.label}"` : "",
    selector.id !== undefined ? `with id ${Buffer.from(selector.id).toString("hex")}` : "",
  ].filter(Boolean);
  return parts.join(" and ");
}

/**
 * Refuses a CA key that is not the key of `certificate`: compared by public key when it is known,
 * otherwise by a signature over a random challenge that the certificate's key must verify.
 */
export async function assertKeyOfCertificate(
  opened: OpenedCaKey,
  certificate: X509Certificate,
  what: string,
  crypto?: CryptoProvider,
): Promise<void> {
  const certificateSpki = Buffer.from(certificate.publicKey.rawData);
  if (opened.spki) {
    if (!Buffer.from(opened.spki).equals(certificateSpki)) {
      throw new UsageError(`${opened.description} is not the key of ${what}`);
    }
    return;
  }
  const provider = cryptoForKey(opened.key, crypto ?? nodeCrypto);
  const challenge = randomBytes(32);
  const hash = hashForCurve(opened.curve);
  const raw = new Uint8Array(await provider.subtle.sign({ name: "ECDSA", hash }, opened.key, challenge));
  const der = ecdsaRawToDer(raw, opened.curve === "P-384" ? "ES384" : "ES256");
  const publicKey = createPublicKey({ key: certificateSpki, format: "der", type: "spki" });
  if (!verify(hash.replace("-", "").toLowerCase(), challenge, publicKey, der)) {
    throw new UsageError(`${opened.description} is not the key of ${what}`);
  }
}
