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

const OPENSSL_CURVES: Readonly<Record<string, NamedCurve>> = {
  prime256v1: "P-256",
  secp384r1: "P-384",
  "P-256": "P-256",
  "P-384": "P-384",
};
