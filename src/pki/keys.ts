import { createPrivateKey, createPublicKey, KeyObject, webcrypto } from "node:crypto";
import { UsageError } from "../errors.js";

/**
 * The crypto provider every PKI operation takes as a parameter (STYLE.md: crypto as a parameter), so
 * keys held by a card or a PKCS#11 token can do the signing. Node's WebCrypto is the default.
 */
export type CryptoProvider = webcrypto.Crypto;
export type CryptoKey = webcrypto.CryptoKey;
export type CryptoKeyPair = webcrypto.CryptoKeyPair;

export const nodeCrypto: CryptoProvider = webcrypto;

export type NamedCurve = "P-256" | "P-384";

/** SHA-2 hash matched to the curve (RFC 5480 §4 / NSA Suite B pairing). */
export function hashForCurve(curve: NamedCurve): "SHA-256" | "SHA-384" {
  return curve === "P-384" ? "SHA-384" : "SHA-256";
}

/** A public key as the card layer or a test hands it over. */
export type PublicKeyInput = Uint8Array | ArrayBuffer | KeyObject | CryptoKey;

export async function generateEcKeyPair(
  curve: NamedCurve,
  crypto: CryptoProvider = nodeCrypto,
  extractable = true,
): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey({ name: "ECDSA", namedCurve: curve }, extractable, ["sign", "verify"]);
}

/** SubjectPublicKeyInfo DER of an ECDSA P-256/P-384 public key; anything else is refused. */
export async function toSpki(key: PublicKeyInput, crypto: CryptoProvider = nodeCrypto): Promise<Uint8Array> {
  let spki: Uint8Array;
  if (key instanceof KeyObject) {
    if (key.type !== "public") throw new UsageError("expected a public key, got a private or secret key");
    spki = new Uint8Array(key.export({ type: "spki", format: "der" }));
  } else if (key instanceof Uint8Array) {
    spki = key;
  } else if (key instanceof ArrayBuffer) {
    spki = new Uint8Array(key);
  } else {
    spki = new Uint8Array(await crypto.subtle.exportKey("spki", key));
  }
  curveOfSpki(spki);
  return spki;
}

/** The named curve of an EC SubjectPublicKeyInfo; a non-EC key or another curve is a usage error. */
export function curveOfSpki(spki: Uint8Array): NamedCurve {
  let curve: string | undefined;
  try {
    const key = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
    curve = key.asymmetricKeyType === "ec" ? key.asymmetricKeyDetails?.namedCurve : undefined;
  } catch (error) {
    throw new UsageError("public key is not a valid SubjectPublicKeyInfo", { cause: error });
  }
  const named = curve ? OPENSSL_CURVES[curve] : undefined;
  if (!named)
    throw new UsageError(`public key must be ECDSA P-256 or P-384 (got ${curve ?? "a non-EC key"})`);
  return named;
}

/** PKCS#8 PEM ("PRIVATE KEY"), readable by OpenSSL and node:crypto. */
export async function exportPrivateKeyPem(
  key: CryptoKey,
  crypto: CryptoProvider = nodeCrypto,
): Promise<string> {
  const der = Buffer.from(await crypto.subtle.exportKey("pkcs8", key));
  const body = der.toString("base64").replace(/.{64}/g, "$&\n");
  return `-----BEGIN PRIVATE KEY-----\n${body}${body.endsWith("\n") ? "" : "\n"}-----END PRIVATE KEY-----\n`;
}

/** Imports an EC private key (PKCS#8 or SEC 1 PEM) as a non-extractable ECDSA signing key. */
export async function importPrivateKeyPem(
  pem: string,
  crypto: CryptoProvider = nodeCrypto,
): Promise<{ key: CryptoKey; curve: NamedCurve }> {
  let pkcs8: Buffer;
  let curve: string | undefined;
  try {
    const keyObject = createPrivateKey({ key: pem, format: "pem" });
    curve = keyObject.asymmetricKeyType === "ec" ? keyObject.asymmetricKeyDetails?.namedCurve : undefined;
    pkcs8 = keyObject.export({ type: "pkcs8", format: "der" });
  } catch (error) {
    throw new UsageError("not a readable PEM private key", { cause: error });
  }
  const named = curve ? OPENSSL_CURVES[curve] : undefined;
  if (!named)
    throw new UsageError(`private key must be ECDSA P-256 or P-384 (got ${curve ?? "a non-EC key"})`);
  const key = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "ECDSA", namedCurve: named }, false, [
    "sign",
  ]);
  return { key, curve: named };
}

/** Signs `data` (the whole message; the signer hashes it with `hash`) and returns raw r‖s. */
export type ExternalSign = (data: Uint8Array, hash: "SHA-256" | "SHA-384") => Promise<Uint8Array>;

const externalSigners = new WeakMap<object, ExternalSign>();

/**
 * A CryptoKey stand-in for a private key held elsewhere (a PKCS#11 token): it carries the algorithm
 * WebCrypto callers read (ECDSA and its curve) and signs through `sign`. Only the providers made by
 * {@link cryptoForKey} can sign with it; node's own WebCrypto refuses it (it is no native key).
 */
export function externalSigningKey(curve: NamedCurve, sign: ExternalSign): CryptoKey {
  const key = Object.freeze({
    type: "private",
    extractable: false,
    algorithm: Object.freeze({ name: "ECDSA", namedCurve: curve }),
    usages: Object.freeze(["sign"]),
  }) as unknown as CryptoKey;
  externalSigners.set(key, sign);
  return key;
}

/**
 * `crypto` unchanged for a native key; for an {@link externalSigningKey}, a provider that sends
 * `subtle.sign` with that key to its signer and everything else (digests, random numbers, other keys)
 * to `crypto`. The signer returns r‖s, the WebCrypto form, so certificate and CRL generators encode
 * the signature as they would a software one.
 */
export function cryptoForKey(key: CryptoKey, crypto: CryptoProvider): CryptoProvider {
  const sign = externalSigners.get(key);
  if (!sign) return crypto;
  const subtle = crypto.subtle;
  const wrappedSubtle = new Proxy(subtle, {
    get(target, property) {
      if (property === "sign") {
        return async (
          algorithm: { name?: string; hash?: string | { name: string } },
          k: CryptoKey,
          data: ArrayBuffer | ArrayBufferView,
        ) => {
          if (k !== key) return target.sign(algorithm as never, k, data);
          const hash = typeof algorithm.hash === "string" ? algorithm.hash : algorithm.hash?.name;
          if (algorithm.name !== "ECDSA" || (hash !== "SHA-256" && hash !== "SHA-384")) {
            throw new UsageError(
              `a token key signs ECDSA with SHA-256 or SHA-384 only (asked: ${algorithm.name})`,
            );
          }
          const bytes =
            data instanceof ArrayBuffer
              ? new Uint8Array(data)
              : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
          const signature = await sign(bytes, hash);
          return signature.buffer.slice(signature.byteOffset, signature.byteOffset + signature.byteLength);
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return {
    subtle: wrappedSubtle,
    getRandomValues: <T extends ArrayBufferView | null>(array: T) =>
      crypto.getRandomValues(array as never) as T,
    randomUUID: () => crypto.randomUUID(),
    CryptoKey: crypto.CryptoKey,
  } as unknown as CryptoProvider;
}

const OPENSSL_CURVES: Readonly<Record<string, NamedCurve>> = {
  prime256v1: "P-256",
  secp384r1: "P-384",
  "P-256": "P-256",
  "P-384": "P-384",
};
