import {
  createHash,
  createPublicKey,
  type KeyObject,
  X509Certificate as NodeX509Certificate,
  verify,
} from "node:crypto";
import { ecdsaDerToRawOfSize } from "../crypto/ecdsa.js";
import { MalformedError } from "../errors.js";
import { bytesEqual, hex } from "../util/bytes.js";
import {
  decodeGeneralNames,
  decodeNameConstraints,
  type GeneralNameValue,
  type NameConstraints,
} from "./constraints.js";
import {
  type AlgorithmIdentifier,
  type CertificateStructure,
  type CrlStructure,
  DerReader,
  decodeCrlNumber,
  decodeExtendedKeyUsage,
  ID_EC_PUBLIC_KEY,
  type ParsedName,
  parseCertificateStructure,
  parseCrlStructure,
  type RawExtension,
  readBitString,
  readBoolean,
  readOid,
  readOnly,
  smallNonNegative,
  TAG,
} from "./der.js";
import type { CryptoProvider } from "./keys.js";
import { EXT } from "./oids.js";

/**
 * Certificates and CRLs for validation without an X.509 object library on the path. Each input is
 * read once by the strict DER reader in der.ts (the signed bytes, names as DER, validity, public key,
 * extensions); OpenSSL (node:crypto) builds an issuer's public key from its SubjectPublicKeyInfo and
 * verifies the signatures. Parsed objects are kept in small LRU caches keyed by the SHA-256 of their
 * DER (a hit is compared byte for byte), and successful signature verifications are remembered by
 * (signed object, issuer key): the agent validates two chains per onboarding that share the token
 * CA, the root and the CRL, so the second one re-verifies only its leaf.
 *
 * Nothing here loads @peculiar/x509 or asn1js (≈ 20 MiB of resident memory in the agent): the
 * agent's path imports only node:crypto. Strings (subject, issuer, serial) are formatted exactly as
 * @peculiar/x509 formats them, so error messages and results read the same on either path.
 *
 * Measured on the reference machine (docs/PERFORMANCE.md), per certificate: this reader ≈ 25 µs
 * once optimised, ≈ 0.2 ms on a first run; node:crypto's X509Certificate ≈ 0.23 ms (most of it
 * decoding the key, which a leaf does not need here); @peculiar/x509 ≈ 3.6 ms; asn1js.fromBER alone
 * ≈ 0.24 ms warm, 7 ms on a first run, and 52 ms and 8 MiB to load.
 */

/** keyUsage bits (RFC 5280 §4.2.1.3), numbered as @peculiar/x509's KeyUsageFlags. */
export const KEY_USAGE = {
  digitalSignature: 1,
  nonRepudiation: 2,
  keyEncipherment: 4,
  dataEncipherment: 8,
  keyAgreement: 16,
  keyCertSign: 32,
  cRLSign: 64,
  encipherOnly: 128,
  decipherOnly: 256,
} as const;

export type HashName = "sha256" | "sha384" | "sha512";
export type EcCurveName = "P-256" | "P-384" | "P-521";

/** ecdsa-with-SHA2 signature algorithms (RFC 5758 §3.2): the only ones validation accepts. */
const ECDSA_SIGNATURES: Readonly<Record<string, HashName>> = {
  "1.2.840.10045.4.3.2": "sha256",
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
};
/** Names other algorithms go by in messages (WebCrypto names, as @peculiar/x509 reports them). */
const OTHER_SIGNATURES: Readonly<Record<string, string>> = {
  "1.2.840.10045.4.1": "ECDSA SHA-1",
  "1.2.840.113549.1.1.5": "RSASSA-PKCS1-v1_5 SHA-1",
  "1.2.840.113549.1.1.11": "RSASSA-PKCS1-v1_5 SHA-256",
  "1.2.840.113549.1.1.12": "RSASSA-PKCS1-v1_5 SHA-384",
  "1.2.840.113549.1.1.13": "RSASSA-PKCS1-v1_5 SHA-512",
  "1.2.840.113549.1.1.10": "RSA-PSS",
  "1.3.101.112": "Ed25519",
  "1.3.101.113": "Ed448",
};
const NAMED_CURVES: Readonly<Record<string, EcCurveName>> = {
  "1.2.840.10045.3.1.7": "P-256",
  "1.3.132.0.34": "P-384",
  "1.3.132.0.35": "P-521",
};
const CURVE_FIELD_BYTES: Readonly<Record<EcCurveName, number>> = { "P-256": 32, "P-384": 48, "P-521": 66 };
const WEBCRYPTO_HASH: Readonly<Record<HashName, string>> = {
  sha256: "SHA-256",
  sha384: "SHA-384",
  sha512: "SHA-512",
};

/** CRL reason codes (RFC 5280 §5.3.1) by value, as @peculiar/x509's X509CrlReason names them. */
const CRL_REASON_NAMES: Readonly<Record<number, string>> = {
  0: "unspecified",
  1: "keyCompromise",
  2: "cACompromise",
  3: "affiliationChanged",
  4: "superseded",
  5: "cessationOfOperation",
  6: "certificateHold",
  8: "removeFromCRL",
  9: "privilegeWithdrawn",
  10: "aACompromise",
};

// ---- parsed objects ------------------------------------------------------------------------------

export interface BasicConstraints {
  readonly ca: boolean;
  readonly pathLength?: number;
}

/**
 * A certificate parsed for validation. Shared by the cache: handed to no caller outside src/pki, and
 * never changed (CertificateView is what callers get). Strings and the public key are made when
 * first needed: a leaf's key is never needed here, and names are only printed for errors and views.
 */
export class ParsedCertificate {
  /** A private copy of the DER. */
  readonly der: Uint8Array;
  /** SHA-256 of the DER, base64: cache and memo key. */
  readonly id: string;
  readonly structure: CertificateStructure;
  /** SHA-256 of the SubjectPublicKeyInfo, base64: memo key of signatures made with this key. */
  readonly publicKeyId: string;
  /** The hash of an ecdsa-with-SHA2 signature algorithm; undefined for any other algorithm. */
  readonly signatureHash: HashName | undefined;
  /** The named curve of an EC public key; undefined for anything else. */
  readonly keyCurve: EcCurveName | undefined;
  readonly extensions: readonly RawExtension[];
  /** An extension OID that appears twice, if any (validation refuses the certificate). */
  readonly duplicateExtension: string | undefined;
  readonly basicConstraints: BasicConstraints | undefined;
  readonly keyUsage: number | undefined;
  readonly subjectKeyId: string | undefined;
  readonly authorityKeyId: string | undefined;
  /** The extendedKeyUsage OIDs, if the extension is present (a CA's: what it may issue for). */
  readonly extendedKeyUsage: readonly string[] | undefined;
  /** A CA's name constraints (RFC 5280 §4.2.1.10), if present. */
  readonly nameConstraints: NameConstraints | undefined;
  /** The subjectAltName entries (empty without the extension). */
  readonly altNames: readonly GeneralNameValue[];
  #subject: string | undefined;
  #issuer: string | undefined;
  #publicKey: KeyObject | undefined;

  /** Parses `der`, which the new object keeps: pass a private copy. MalformedError if not well-formed. */
  constructor(der: Uint8Array, id: string) {
    const structure = parseCertificateStructure(der);
    this.der = der;
    this.id = id;
    this.structure = structure;
    this.extensions = structure.extensions;
    const seen = new Set<string>();
    let duplicate: string | undefined;
    for (const ext of structure.extensions) {
      if (seen.has(ext.oid)) duplicate ??= ext.oid;
      seen.add(ext.oid);
    }
    this.duplicateExtension = duplicate;
    const first = (oid: string) => structure.extensions.find((e) => e.oid === oid)?.value;
    try {
      const bc = first(EXT.basicConstraints);
      this.basicConstraints = bc ? decodeBasicConstraints(bc) : undefined;
      const ku = first(EXT.keyUsage);
      this.keyUsage = ku ? decodeKeyUsage(ku) : undefined;
      const ski = first(EXT.subjectKeyIdentifier);
      this.subjectKeyId = ski ? decodeSubjectKeyId(ski) : undefined;
      const aki = first(EXT.authorityKeyIdentifier);
      this.authorityKeyId = aki ? decodeAuthorityKeyId(aki) : undefined;
      const eku = first(EXT.extKeyUsage);
      this.extendedKeyUsage = eku ? Object.freeze(decodeExtendedKeyUsage(eku)) : undefined;
      const nc = first(EXT.nameConstraints);
      this.nameConstraints = nc ? decodeNameConstraints(nc) : undefined;
      const san = first(EXT.subjectAltName);
      this.altNames = san ? decodeGeneralNames(san) : [];
    } catch (error) {
      throw new MalformedError(`certificate "${this.subject}": malformed extension`, { cause: error });
    }
    const key = structure.publicKey.algorithm;
    this.keyCurve =
      key.oid === ID_EC_PUBLIC_KEY && key.parameters ? NAMED_CURVES[oidOf(key.parameters)] : undefined;
    this.signatureHash = signatureHashOf(structure.outerAlgorithm);
    this.publicKeyId = digest(structure.publicKey.encoding);
    Object.freeze(this);
  }

  /** The subject as @peculiar/x509 prints it (RFC 4514-like, in encoding order). */
  get subject(): string {
    this.#subject ??= nameToString(this.structure.subject);
    return this.#subject;
  }

  get issuer(): string {
    this.#issuer ??= nameToString(this.structure.issuer);
    return this.#issuer;
  }

  /** Hex serial, as @peculiar/x509 gives it (a sign octet 00 dropped). */
  get serialNumber(): string {
    return serialHex(this.structure.serialNumber);
  }

  get signatureAlgorithmName(): string {
    return signatureAlgorithmName(this.structure.outerAlgorithm.oid);
  }

  /** The public key, read by OpenSSL (which checks the point is on its curve); throws if it cannot. */
  publicKey(): KeyObject {
    this.#publicKey ??= createPublicKey({
      key: Buffer.from(this.structure.publicKey.encoding),
      format: "der",
      type: "spki",
    });
    return this.#publicKey;
  }
}

/** A CRL parsed for validation (shared by the cache: never handed out, never changed). */
export class ParsedCrl {
  readonly der: Uint8Array;
  readonly id: string;
  readonly structure: CrlStructure;
  readonly signatureHash: HashName | undefined;
  #issuer: string | undefined;

  /** Parses `der`, which the new object keeps: pass a private copy. MalformedError if not well-formed. */
  constructor(der: Uint8Array, id: string) {
    this.structure = parseCrlStructure(der);
    this.der = der;
    this.id = id;
    this.signatureHash = signatureHashOf(this.structure.outerAlgorithm);
    Object.freeze(this);
  }

  /** The issuer as @peculiar/x509 prints it. */
  get issuer(): string {
    this.#issuer ??= nameToString(this.structure.issuer);
    return this.#issuer;
  }
}

/**
 * Parses a certificate given as DER (only), from the cache when these bytes were seen before.
 */
export function parseCertificate(input: Uint8Array | ArrayBuffer): ParsedCertificate {
  const der = toDer(input, "certificate");
  const id = digest(der);
  const cached = certificates.get(id);
  if (cached && bytesEqual(cached.der, der)) return cached;
  const parsed = new ParsedCertificate(der.slice(), id);
  certificates.set(id, parsed);
  return parsed;
}

/** Parses a CRL given as DER (only), from the cache when seen before. */
export function parseCrlDer(input: Uint8Array | ArrayBuffer): ParsedCrl {
  const der = toDer(input, "CRL");
  const id = digest(der);
  const cached = crls.get(id);
  if (cached && bytesEqual(cached.der, der)) return cached;
  const parsed = new ParsedCrl(der.slice(), id);
  crls.set(id, parsed);
  return parsed;
}

/** ecdsa-with-SHA2 with absent parameters (RFC 5758 §3.2), or undefined. */
function signatureHashOf(algorithm: AlgorithmIdentifier): HashName | undefined {
  return algorithm.parameters ? undefined : ECDSA_SIGNATURES[algorithm.oid];
}

function signatureAlgorithmName(oid: string): string {
  const hash = ECDSA_SIGNATURES[oid];
  return hash ? `ECDSA ${WEBCRYPTO_HASH[hash]}` : (OTHER_SIGNATURES[oid] ?? oid);
}

// ---- signatures ----------------------------------------------------------------------------------

/**
 * Whether `cert` carries a valid ecdsa-with-SHA2 signature by `issuer`'s key over its
 * tbsCertificate. With Node's own WebCrypto (the default) the check runs in OpenSSL directly and a
 * success is remembered; another provider (a card, a PKCS#11 token) is asked every time.
 */
export function certificateSignedBy(
  cert: ParsedCertificate,
  issuer: ParsedCertificate,
  provider: CryptoProvider | undefined,
): boolean | Promise<boolean> {
  return signedBy(
    cert.id,
    cert.signatureHash,
    cert.structure.tbs,
    cert.structure.signature,
    issuer,
    provider,
  );
}

/** The same for a CRL's tbsCertList. */
export function crlSignedBy(
  crl: ParsedCrl,
  issuer: ParsedCertificate,
  provider: CryptoProvider | undefined,
): boolean | Promise<boolean> {
  return signedBy(crl.id, crl.signatureHash, crl.structure.tbs, crl.structure.signature, issuer, provider);
}

/**
 * A self-signed trust anchor's own signature, whatever its algorithm (OpenSSL's X509_verify, which
 * also requires both signature algorithm fields to agree). An anchor that is not ECDSA is refused
 * later, when it signs the next certificate of a path.
 */
export function selfSigned(
  anchor: ParsedCertificate,
  provider: CryptoProvider | undefined,
): boolean | Promise<boolean> {
  if (anchor.signatureHash && anchor.keyCurve) return certificateSignedBy(anchor, anchor, provider);
  const key = `${anchor.id}|${anchor.publicKeyId}`;
  if (verified.get(key)) return true;
  let ok = false;
  try {
    const native = new NodeX509Certificate(anchor.der);
    ok = native.verify(native.publicKey);
  } catch {
    ok = false;
  }
  if (ok) verified.set(key, true);
  return ok;
}

function signedBy(
  signedId: string,
  hash: HashName | undefined,
  tbs: Uint8Array,
  signature: Uint8Array,
  issuer: ParsedCertificate,
  provider: CryptoProvider | undefined,
): boolean | Promise<boolean> {
  const curve = issuer.keyCurve;
  if (!hash || !curve) return false;
  if (provider !== undefined) return webCryptoVerify(provider, issuer, curve, hash, tbs, signature);
  const key = `${signedId}|${issuer.publicKeyId}`;
  if (verified.get(key)) return true;
  let ok: boolean;
  try {
    ok = verify(hash, tbs, issuer.publicKey(), signature);
  } catch {
    ok = false;
  }
  if (ok) verified.set(key, true);
  return ok;
}

async function webCryptoVerify(
  provider: CryptoProvider,
  issuer: ParsedCertificate,
  curve: EcCurveName,
  hash: HashName,
  tbs: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  try {
    const raw = ecdsaSignatureToRaw(signature, CURVE_FIELD_BYTES[curve]);
    if (!raw) return false;
    const key = await provider.subtle.importKey(
      "spki",
      issuer.structure.publicKey.encoding,
      { name: "ECDSA", namedCurve: curve },
      false,
      ["verify"],
    );
    return await provider.subtle.verify({ name: "ECDSA", hash: WEBCRYPTO_HASH[hash] }, key, raw, tbs);
  } catch {
    return false;
  }
}

/** Ecdsa-Sig-Value (RFC 5480 §2.2.3 / RFC 3279) to the r‖s form WebCrypto verifies; undefined if unfit. */
function ecdsaSignatureToRaw(der: Uint8Array, size: number): Uint8Array | undefined {
  try {
    return ecdsaDerToRawOfSize(der, size, "ECDSA signature");
  } catch {
    return undefined;
  }
}

// ---- extensions ----------------------------------------------------------------------------------

/** BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER (0..MAX) OPTIONAL } */
function decodeBasicConstraints(value: Uint8Array): BasicConstraints {
  const what = "basicConstraints";
  const element = readOnly(value, what);
  if (element.tag !== TAG.sequence) throw new MalformedError(`${what}: not a SEQUENCE`);
  const reader = DerReader.inside(value, element, what);
  const caElement = reader.optional(TAG.boolean);
  const ca = caElement ? readBoolean(value, caElement, what) : false;
  const pathElement = reader.optional(TAG.integer);
  const pathLength = pathElement ? smallNonNegative(value, pathElement, 0x7fffffff, what) : undefined;
  reader.end();
  return pathLength !== undefined ? { ca, pathLength } : { ca };
}

/** KeyUsage ::= BIT STRING; named bit n is KEY_USAGE value 2^n (bits beyond decipherOnly ignored). */
function decodeKeyUsage(value: Uint8Array): number {
  const element = readOnly(value, "keyUsage");
  const { unusedBits, data } = readBitString(value, element, "keyUsage");
  let flags = 0;
  const bits = Math.min(data.length * 8 - unusedBits, 9);
  for (let bit = 0; bit < bits; bit++) {
    if ((data[bit >> 3]! & (0x80 >> (bit & 7))) !== 0) flags |= 1 << bit;
  }
  return flags;
}

/** SubjectKeyIdentifier ::= OCTET STRING, as lowercase hex. */
function decodeSubjectKeyId(value: Uint8Array): string {
  const element = readOnly(value, "subjectKeyIdentifier");
  if (element.tag !== TAG.octetString) throw new MalformedError("subjectKeyIdentifier: not an OCTET STRING");
  return hex(value.subarray(element.contentStart, element.end));
}

/** AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING OPTIONAL, [1] …, [2] … } */
function decodeAuthorityKeyId(value: Uint8Array): string | undefined {
  const what = "authorityKeyIdentifier";
  const element = readOnly(value, what);
  if (element.tag !== TAG.sequence) throw new MalformedError(`${what}: not a SEQUENCE`);
  const reader = DerReader.inside(value, element, what);
  const keyId = reader.optional(0x80);
  reader.optional(0xa1); // authorityCertIssuer GeneralNames
  const serial = reader.optional(0x82); // authorityCertSerialNumber
  if (serial && serial.end === serial.contentStart) throw new MalformedError(`${what}: empty serial`);
  reader.end();
  return keyId ? hex(value.subarray(keyId.contentStart, keyId.end)) : undefined;
}

/** The CRL number of a parsed CRL; undefined when it has none, MalformedError when twice or unreadable. */
export function crlNumberOfParsed(crl: ParsedCrl): bigint | undefined {
  const numbers = crl.structure.extensions.filter((e) => e.oid === EXT.crlNumber);
  if (numbers.length > 1) throw new MalformedError("CRL carries more than one CRL number");
  return numbers[0] ? decodeCrlNumber(numbers[0].value) : undefined;
}

/** A CRL entry's reason code name (RFC 5280 §5.3.1), when it carries a readable one. */
export function crlEntryReason(extensions: readonly RawExtension[]): string | undefined {
  const ext = extensions.find((e) => e.oid === EXT.crlReason);
  if (!ext) return undefined;
  const element = readOnly(ext.value, "CRL reason");
  if (element.tag !== TAG.enumerated) throw new MalformedError("CRL reason: not an ENUMERATED");
  // ENUMERATED shares INTEGER's encoding rules (X.690 §8.4).
  const value = smallNonNegative(ext.value, { ...element, tag: TAG.integer }, 0xffff, "CRL reason");
  return CRL_REASON_NAMES[value];
}

// ---- names ---------------------------------------------------------------------------------------

/** Short names @peculiar/x509 prints; other attribute types print as their OID. */
const ATTRIBUTE_NAMES: Readonly<Record<string, string>> = {
  "2.5.4.3": "CN",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "2.5.4.6": "C",
  "0.9.2342.19200300.100.1.25": "DC",
  "1.2.840.113549.1.9.1": "E",
  "2.5.4.42": "G",
  "2.5.4.43": "I",
  "2.5.4.4": "SN",
  "2.5.4.12": "T",
};

/** Strict, BOM kept: what asn1js reads; it falls back to the raw octets when they are not UTF-8. */
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function utf8OrRaw(content: Uint8Array): string {
  try {
    return utf8.decode(content);
  } catch {
    return latin1(content);
  }
}

/** The text of a directory string, or undefined for a value of another type (printed as #hex). */
function attributeText(tag: number, content: Uint8Array): string | undefined {
  switch (tag) {
    case TAG.utf8String:
      return utf8OrRaw(content);
    case TAG.printableString:
    case TAG.ia5String:
    case TAG.teletexString:
      return latin1(content);
    case TAG.bmpString: {
      let s = "";
      for (let i = 0; i + 1 < content.length; i += 2)
        s += String.fromCharCode((content[i]! << 8) | content[i + 1]!);
      return s;
    }
    case TAG.universalString: {
      let s = "";
      for (let i = 0; i + 3 < content.length; i += 4) {
        const cp =
          ((content[i]! << 24) | (content[i + 1]! << 16) | (content[i + 2]! << 8) | content[i + 3]!) >>> 0;
        s += cp <= 0x10ffff ? String.fromCodePoint(cp) : "\ufffd";
      }
      return s;
    }
    default:
      return undefined;
  }
}

/** RFC 4514 escaping as @peculiar/x509's Name.toString does it. */
function escapeValue(value: string): string {
  return value
    .replace(/([,+"\\<>;])/g, "\\$1")
    .replace(/^([ #])/, "\\$1")
    .replace(/([ ]$)/, "\\$1")
    .replace(/([\r\n\t])/, (c) => `\\${Buffer.from(c, "utf8").toString("hex").toUpperCase()}`);
}

/** A Name as text: RDNs in encoding order joined by ", ", multi-valued RDNs by "+". */
export function nameToString(name: ParsedName): string {
  return name.rdns
    .map((rdn) =>
      rdn
        .map((a) => {
          const text = attributeText(a.valueTag, a.value);
          const value = text === undefined ? `#${hex(a.valueEncoding)}` : escapeValue(text);
          return `${ATTRIBUTE_NAMES[a.type] ?? a.type}=${value}`;
        })
        .join("+"),
    )
    .join(", ");
}

/** Every value of one attribute type in a Name, unescaped (a non-string value as hex). */
export function nameValues(name: ParsedName, type: string): string[] {
  const values: string[] = [];
  for (const rdn of name.rdns) {
    for (const a of rdn) {
      if (a.type === type) values.push(attributeText(a.valueTag, a.value) ?? hex(a.valueEncoding));
    }
  }
  return values;
}

// ---- public read-only views ----------------------------------------------------------------------

/**
 * A validated certificate as handed to callers: read-only, every byte array a fresh copy, so no
 * caller can change what the caches hold.
 */
export class CertificateView {
  readonly #cert: ParsedCertificate;
  /** Subject and issuer as @peculiar/x509 prints them ("CN=…, O=…", in encoding order). */
  readonly subject: string;
  readonly issuer: string;
  /** Lowercase hex serial number (a sign octet 00 dropped), as @peculiar/x509 gives it. */
  readonly serialNumber: string;

  constructor(cert: ParsedCertificate) {
    this.#cert = cert;
    this.subject = cert.subject;
    this.issuer = cert.issuer;
    this.serialNumber = cert.serialNumber;
  }

  /** The DER, a copy. */
  get rawData(): ArrayBuffer {
    return this.#cert.der.slice().buffer;
  }

  get notBefore(): Date {
    return new Date(this.#cert.structure.notBefore.getTime());
  }

  get notAfter(): Date {
    return new Date(this.#cert.structure.notAfter.getTime());
  }

  /** The subject Name's DER, a copy. */
  get subjectDer(): Uint8Array {
    return this.#cert.structure.subject.encoding.slice();
  }

  /** Values of one subject attribute (an OID such as 2.5.4.10), as @peculiar/x509's getField returns them. */
  subjectValues(type: string): string[] {
    return nameValues(this.#cert.structure.subject, type);
  }

  /** Whether `other` (this class, an @peculiar/x509 certificate, or DER) is the same certificate. */
  equal(other: { readonly rawData: ArrayBuffer } | Uint8Array): boolean {
    const bytes = other instanceof Uint8Array ? other : new Uint8Array(other.rawData);
    return bytesEqual(this.#cert.der, bytes);
  }
}

/** A CRL as handed to callers: read-only, its DER a fresh copy on every read. */
export class CrlView {
  readonly #crl: ParsedCrl;
  /** The issuer as @peculiar/x509 prints it. */
  readonly issuer: string;

  constructor(crl: ParsedCrl) {
    this.#crl = crl;
    this.issuer = crl.issuer;
  }

  get rawData(): ArrayBuffer {
    return this.#crl.der.slice().buffer;
  }

  /** The issuer Name's DER, a copy (what crlParts(…).issuer gives). */
  get issuerDer(): Uint8Array {
    return this.#crl.structure.issuer.encoding.slice();
  }

  get thisUpdate(): Date {
    return new Date(this.#crl.structure.thisUpdate.getTime());
  }

  get nextUpdate(): Date | undefined {
    const next = this.#crl.structure.nextUpdate;
    return next ? new Date(next.getTime()) : undefined;
  }

  /** The CRL number; undefined when it has none, MalformedError when it has two or an unreadable one. */
  get crlNumber(): bigint | undefined {
    return crlNumberOfParsed(this.#crl);
  }
}

/**
 * Reads a CRL (DER only) without an X.509 library: what the agent needs to store
 * a CRL and learn its issuer and number. MalformedError when it is not a well-formed CRL.
 */
export function readCrl(input: Uint8Array | ArrayBuffer): CrlView {
  return new CrlView(parseCrlDer(input));
}

/** The CRL number of a CRL view or DER; see CrlView.crlNumber. */
export function crlNumberOfDer(input: CrlView | Uint8Array | ArrayBuffer): bigint | undefined {
  return input instanceof CrlView ? input.crlNumber : crlNumberOfParsed(parseCrlDer(input));
}

// ---- inputs --------------------------------------------------------------------------------------

/**
 * The DER handed over: bytes (a Uint8Array or ArrayBuffer) holding one element that starts as a
 * SEQUENCE. Nothing is decoded from text — no PEM, hex or base64 guessing: the agent reads DER from
 * a card, and callers holding PEM (the station, the CLI) go through validate-chain.ts.
 */
function toDer(input: Uint8Array | ArrayBuffer, what: string): Uint8Array {
  const bytes =
    input instanceof Uint8Array ? input : input instanceof ArrayBuffer ? new Uint8Array(input) : undefined;
  if (!bytes) throw new MalformedError(`${what}: expected DER bytes`);
  if (bytes.length === 0 || bytes[0] !== TAG.sequence)
    throw new MalformedError(`${what}: not DER (no SEQUENCE)`);
  return bytes;
}

// ---- caches --------------------------------------------------------------------------------------

/** A small least-recently-used map: enough for an agent's root, token CA, cards and CRLs. */
class Lru<V> {
  readonly #map = new Map<string, V>();
  readonly #capacity: number;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  get(key: string): V | undefined {
    const value = this.#map.get(key);
    if (value !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, value);
    }
    return value;
  }

  set(key: string, value: V): void {
    this.#map.delete(key);
    this.#map.set(key, value);
    if (this.#map.size > this.#capacity) this.#map.delete(this.#map.keys().next().value!);
  }

  clear(): void {
    this.#map.clear();
  }

  get size(): number {
    return this.#map.size;
  }
}

export const CACHE_LIMITS = { certificates: 64, crls: 16, signatures: 256 } as const;
const certificates = new Lru<ParsedCertificate>(CACHE_LIMITS.certificates);
const crls = new Lru<ParsedCrl>(CACHE_LIMITS.crls);
/** `${signed object id}|${issuer key id}` of every signature that verified (with Node's crypto). */
const verified = new Lru<true>(CACHE_LIMITS.signatures);

/** Forgets every parsed object and remembered signature (tests, and cold-path measurements). */
export function clearValidationCaches(): void {
  certificates.clear();
  crls.clear();
  verified.clear();
}

/** Entries held, for tests. */
export function validationCacheSizes(): { certificates: number; crls: number; signatures: number } {
  return { certificates: certificates.size, crls: crls.size, signatures: verified.size };
}

// ---- helpers -------------------------------------------------------------------------------------

function digest(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("base64");
}

function latin1(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
}

/** The serial's hex as @peculiar/x509 prints it: one 00 sign octet before a high bit dropped. */
function serialHex(content: Uint8Array): string {
  return hex(content.length > 1 && content[0] === 0 && content[1]! > 0x7f ? content.subarray(1) : content);
}

/** The dotted form of an OBJECT IDENTIFIER's encoding; "" when it is something else. */
function oidOf(encoding: Uint8Array): string {
  try {
    return readOid(encoding, readOnly(encoding, "OID"), "OID");
  } catch {
    return "";
  }
}
