/**
 * CA private keys in files: passphrase-encrypted PKCS#8 (RFC 5958 EncryptedPrivateKeyInfo, PBES2 of
 * RFC 8018) or plain PKCS#8 / SEC 1, which is accepted with a warning each time it is loaded.
 *
 * Written: PBES2 with scrypt (RFC 7914 §7; N = 2^14, r = 8, p = 1, the largest cost OpenSSL 3 still
 * reads under its 32 MiB scrypt memory limit, and what `openssl pkcs8 -topk8 -scrypt` writes) and
 * AES-256-CBC. Read: any PBES2 file OpenSSL reads (scrypt or PBKDF2, as `openssl pkcs8 -topk8
 * -scrypt` or `-v2 aes-256-cbc` write them). Legacy "Proc-Type: 4,ENCRYPTED" PEM (one MD5 round to
 * derive the key) is refused with the command that converts it.
 */
import {
  createCipheriv,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  randomBytes,
  scryptSync,
} from "node:crypto";
import { readFile } from "node:fs/promises";
import { UsageError, WrongPassphraseError } from "../errors.js";
import { type CryptoKey, type CryptoProvider, type NamedCurve, nodeCrypto } from "./keys.js";

/** scrypt cost of the files this project writes (OpenSSL's default for `pkcs8 -scrypt`). */
export const SCRYPT_PARAMETERS = { N: 2 ** 14, r: 8, p: 1 } as const;
/** The shortest passphrase a key file is written with. */
export const MIN_PASSPHRASE_LENGTH = 12;

const ENCRYPTED_LABEL = "ENCRYPTED PRIVATE KEY";

export function isEncryptedPkcs8Pem(text: string): boolean {
  return text.includes(`-----BEGIN ${ENCRYPTED_LABEL}-----`);
}

function isLegacyEncryptedPem(text: string): boolean {
  return /Proc-Type:\s*4,\s*ENCRYPTED/i.test(text);
}

// ---- DER writer (only what EncryptedPrivateKeyInfo needs) -------------------------------------------

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

const sequence = (...content: Buffer[]) => tlv(0x30, ...content);
const octetString = (bytes: Buffer) => tlv(0x04, bytes);

function integer(n: number): Buffer {
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  if (bytes.length === 0 || (bytes[0] as number) & 0x80) bytes.unshift(0);
  return tlv(0x02, Buffer.from(bytes));
}

function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split(".").map(Number) as [number, number, ...number[]];
  const out = [40 * a + b];
  for (const arc of rest) {
    const chunk: number[] = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

const OID_PBES2 = "1.2.840.113549.1.5.13";
const OID_SCRYPT = "1.3.6.1.4.1.11591.4.11";
const OID_AES256_CBC = "2.16.840.1.101.3.4.1.42";

/**
 * Encrypts a private key as PEM "ENCRYPTED PRIVATE KEY": PBES2, scrypt ({@link SCRYPT_PARAMETERS},
 * 16-byte random salt), AES-256-CBC with a random IV. OpenSSL and node:crypto read it.
 */
export function encryptPrivateKeyPkcs8(pkcs8: Uint8Array, passphrase: string): string {
  checkNewPassphrase(passphrase);
  const salt = randomBytes(16);
  const iv = randomBytes(16);
  const { N, r, p } = SCRYPT_PARAMETERS;
  const key = scryptSync(Buffer.from(passphrase.normalize("NFC"), "utf8"), salt, 32, {
    N,
    r,
    p,
    maxmem: 256 * N * r,
  });
  const cipher = createCipheriv("aes-256-cbc", key, iv);
  const encrypted = Buffer.concat([cipher.update(pkcs8), cipher.final()]);
  key.fill(0);
  const der = sequence(
    sequence(
      oid(OID_PBES2),
      sequence(
        sequence(
          oid(OID_SCRYPT),
          sequence(octetString(salt), integer(N), integer(r), integer(p), integer(32)),
        ),
        sequence(oid(OID_AES256_CBC), octetString(iv)),
      ),
    ),
    octetString(encrypted),
  );
  const body = der.toString("base64").replace(/.{64}/g, "$&\n");
  return `-----BEGIN ${ENCRYPTED_LABEL}-----\n${body}${body.endsWith("\n") ? "" : "\n"}-----END ${ENCRYPTED_LABEL}-----\n`;
}

/** A passphrase a new key file may be written with: long enough, and no line break in it. */
export function checkNewPassphrase(passphrase: string): void {
  if ([...passphrase].length < MIN_PASSPHRASE_LENGTH) {
    throw new UsageError(`a key passphrase must have at least ${MIN_PASSPHRASE_LENGTH} characters`);
  }
  if (/[\r\n\0]/.test(passphrase))
    throw new UsageError("a key passphrase must not contain a line break or NUL");
}

/** PEM of a private key: encrypted with `passphrase` when one is given, plain PKCS#8 otherwise. */
export async function privateKeyPem(
  key: CryptoKey,
  passphrase: string | undefined,
  crypto: CryptoProvider = nodeCrypto,
): Promise<string> {
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", key));
  try {
    if (passphrase !== undefined) return encryptPrivateKeyPkcs8(pkcs8, passphrase);
    const body = Buffer.from(pkcs8).toString("base64").replace(/.{64}/g, "$&\n");
    return `-----BEGIN PRIVATE KEY-----\n${body}${body.endsWith("\n") ? "" : "\n"}-----END PRIVATE KEY-----\n`;
  } finally {
    pkcs8.fill(0);
  }
}

// ---- reading ------------------------------------------------------------------------------------------

export interface KeyFileOptions {
  /** Asked only for an encrypted file. */
  readonly passphrase: () => Promise<string>;
  /** Receives the one-line warning a plain key file raises (stderr in the CLI). */
  readonly warn: (line: string) => void;
  readonly crypto?: CryptoProvider;
}

export interface LoadedKeyFile {
  /** A non-extractable ECDSA signing key. */
  readonly key: CryptoKey;
  readonly curve: NamedCurve;
  /** SubjectPublicKeyInfo DER of the key's public half. */
  readonly spki: Uint8Array;
  readonly encrypted: boolean;
}

const CURVES: Readonly<Record<string, NamedCurve>> = { prime256v1: "P-256", secp384r1: "P-384" };

/** The one-line warning for a plain key file (exported for tests and docs). */
export function plainKeyWarning(path: string): string {
  return (
    `warning: ${path} is an unencrypted private key: whoever can read the file can sign with it ` +
    "(encrypt it: hsm-onboard pki encrypt-key --key FILE, or keep the key in a token: pkcs11:…)"
  );
}

/** Parses a private key PEM (asking for the passphrase when it is encrypted). */
export async function decodePrivateKeyPem(
  pem: string,
  where: string,
  options: KeyFileOptions,
): Promise<LoadedKeyFile> {
  if (isLegacyEncryptedPem(pem)) {
    throw new UsageError(
      `${where}: legacy encrypted PEM (Proc-Type) is not accepted; convert it: openssl pkcs8 -topk8 -scrypt -in OLD -out NEW`,
    );
  }
  const encrypted = isEncryptedPkcs8Pem(pem);
  let keyObject: KeyObject;
  if (encrypted) {
    const passphrase = await options.passphrase();
    try {
      keyObject = createPrivateKey({ key: pem, format: "pem", passphrase: passphrase.normalize("NFC") });
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === "ERR_OSSL_BAD_DECRYPT" || code === "ERR_OSSL_EVP_BAD_DECRYPT") {
        throw new WrongPassphraseError(`${where}: wrong passphrase (or the file is damaged)`, {
          cause: error,
        });
      }
      throw new UsageError(`${where}: not a readable encrypted private key (${code ?? "unknown format"})`, {
        cause: error,
      });
    }
  } else {
    try {
      keyObject = createPrivateKey({ key: pem, format: "pem" });
    } catch (error) {
      throw new UsageError(`${where}: not a readable PEM private key`, { cause: error });
    }
  }
  const named =
    keyObject.asymmetricKeyType === "ec"
      ? CURVES[keyObject.asymmetricKeyDetails?.namedCurve ?? ""]
      : undefined;
  if (!named) throw new UsageError(`${where}: the key must be ECDSA P-256 or P-384`);
  if (!encrypted) options.warn(plainKeyWarning(where));
  const crypto = options.crypto ?? nodeCrypto;
  const pkcs8 = keyObject.export({ type: "pkcs8", format: "der" });
  try {
    const key = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "ECDSA", namedCurve: named }, false, [
      "sign",
    ]);
    const spki = new Uint8Array(createPublicKey(keyObject).export({ type: "spki", format: "der" }));
    return { key, curve: named, spki, encrypted };
  } finally {
    pkcs8.fill(0);
  }
}

/** Reads a key file; UsageError when it is missing or unreadable. */
export async function readPrivateKeyFile(path: string, options: KeyFileOptions): Promise<LoadedKeyFile> {
  let pem: string;
  try {
    pem = await readFile(path, "utf8");
  } catch (error) {
    throw new UsageError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, {
      cause: error,
    });
  }
  return decodePrivateKeyPem(pem, path, options);
}
