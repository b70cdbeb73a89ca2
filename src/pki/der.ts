import { MalformedError } from "../errors.js";
import { decodeOidContent } from "./oids.js";

/**
 * A small, strict DER reader (X.690 §10) for the parts of certificates and CRLs that validation
 * needs, and the raw views built on it: the exact bytes of names (RFC 5280 §6.1.3 (a)(4) name
 * chaining compares encodings — byte-equal DER — not re-serialised or string forms), both copies of
 * the signature algorithm, the signed bytes and the signature, validity, the public key, extensions,
 * CRL entries, EKU OIDs with 128-bit arcs and CRL numbers beyond 2^53.
 *
 * Strict: definite, minimal lengths only; every element read is bounded by its parent; only the
 * fixed RFC 5280 shapes are walked (no recursion driven by the input), so a hostile encoding costs
 * at most one pass over its bytes. Anything else is a MalformedError. OpenSSL (node:crypto's
 * X509Certificate) parses every certificate a second time in src/pki/fast-x509.ts.
 */

/** Bigger inputs are refused before reading them (a card object holds at most 3,063 bytes). */
export const MAX_CERTIFICATE_BYTES = 64 * 1024;
export const MAX_CRL_BYTES = 4 * 1024 * 1024;

/** id-ecPublicKey (RFC 5480 §2.1.1). */
export const ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1";

/** Identifier octets (X.690 §8.1.2) of the universal and context-specific tags used here. */
export const TAG = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  null: 0x05,
  oid: 0x06,
  enumerated: 0x0a,
  utf8String: 0x0c,
  printableString: 0x13,
  teletexString: 0x14,
  ia5String: 0x16,
  utcTime: 0x17,
  generalizedTime: 0x18,
  universalString: 0x1c,
  bmpString: 0x1e,
  sequence: 0x30,
  set: 0x31,
} as const;

/** One element: its first identifier octet and where its header, content and end lie in `bytes`. */
export interface DerElement {
  readonly tag: number;
  readonly start: number;
  readonly contentStart: number;
  readonly end: number;
}

/** Reads consecutive elements from `bytes[pos, end)`. */
export class DerReader {
  readonly #bytes: Uint8Array;
  #pos: number;
  readonly #end: number;
  readonly #what: string;

  constructor(bytes: Uint8Array, start: number, end: number, what: string) {
    this.#bytes = bytes;
    this.#pos = start;
    this.#end = end;
    this.#what = what;
  }

  /** A reader over the content of a constructed element. */
  static inside(bytes: Uint8Array, element: DerElement, what: string): DerReader {
    return new DerReader(bytes, element.contentStart, element.end, what);
  }

  get done(): boolean {
    return this.#pos >= this.#end;
  }

  /** The identifier octet of the next element, or undefined at the end. */
  peek(): number | undefined {
    return this.done ? undefined : this.#bytes[this.#pos];
  }

  /** The next element, whatever its tag. */
  next(): DerElement {
    if (this.done) throw malformed(this.#what, "truncated");
    const element = readHeader(this.#bytes, this.#pos, this.#end, this.#what);
    this.#pos = element.end;
    return element;
  }

  /** The next element, which must carry `tag`. */
  expect(tag: number, field: string): DerElement {
    const element = this.next();
    if (element.tag !== tag) throw malformed(this.#what, `${field}: unexpected tag ${hexByte(element.tag)}`);
    return element;
  }

  /** The next element if it carries `tag`. */
  optional(tag: number): DerElement | undefined {
    return this.peek() === tag ? this.next() : undefined;
  }

  /** Nothing may follow. */
  end(): void {
    if (!this.done) throw malformed(this.#what, "unexpected trailing data");
  }
}

function readHeader(bytes: Uint8Array, start: number, limit: number, what: string): DerElement {
  let pos = start;
  const tag = bytes[pos++]!;
  if ((tag & 0x1f) === 0x1f) {
    // High tag number form (X.690 §8.1.2.4): skipped over, never matched; at most 4 octets, minimal.
    if (pos >= limit || bytes[pos] === 0x80) throw malformed(what, "bad tag");
    let octets = 0;
    while (pos < limit && (bytes[pos]! & 0x80) !== 0) {
      pos++;
      if (++octets > 3) throw malformed(what, "tag number too large");
    }
    pos++;
  }
  if (pos >= limit) throw malformed(what, "truncated header");
  const first = bytes[pos++]!;
  let length: number;
  if (first < 0x80) {
    length = first;
  } else {
    const count = first & 0x7f;
    // 0x80 is BER's indefinite length, never DER (X.690 §10.1); more than 4 octets is never needed here.
    if (count === 0 || count > 4) throw malformed(what, "bad length");
    if (pos + count > limit) throw malformed(what, "truncated length");
    if (bytes[pos] === 0) throw malformed(what, "non-minimal length");
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + bytes[pos++]!;
    if (length < 0x80) throw malformed(what, "non-minimal length");
  }
  const end = pos + length;
  if (end > limit) throw malformed(what, "element runs past its container");
  return { tag, start, contentStart: pos, end };
}

/** The single element that makes up all of `bytes`. */
export function readOnly(bytes: Uint8Array, what: string): DerElement {
  if (bytes.length === 0) throw malformed(what, "empty");
  const reader = new DerReader(bytes, 0, bytes.length, what);
  const element = reader.next();
  reader.end();
  return element;
}

export function contentOf(bytes: Uint8Array, element: DerElement): Uint8Array {
  return bytes.subarray(element.contentStart, element.end);
}

export function encodingOf(bytes: Uint8Array, element: DerElement): Uint8Array {
  return bytes.subarray(element.start, element.end);
}

/** INTEGER content (X.690 §8.3): non-empty, minimal two's complement. Returned as the content octets. */
export function integerContent(bytes: Uint8Array, element: DerElement, what: string): Uint8Array {
  if (element.tag !== TAG.integer) throw malformed(what, "not an INTEGER");
  const content = contentOf(bytes, element);
  if (content.length === 0) throw malformed(what, "empty INTEGER");
  if (content.length > 1) {
    const a = content[0]!;
    const b = content[1]!;
    if ((a === 0x00 && (b & 0x80) === 0) || (a === 0xff && (b & 0x80) !== 0)) {
      throw malformed(what, "INTEGER not minimally encoded");
    }
  }
  return content;
}

/** A non-negative INTEGER no larger than `max` (versions, pathLenConstraint, reason codes). */
export function smallNonNegative(bytes: Uint8Array, element: DerElement, max: number, what: string): number {
  const content = integerContent(bytes, element, what);
  if ((content[0]! & 0x80) !== 0) throw malformed(what, "negative");
  if (content.length > 4) throw malformed(what, "out of range");
  let value = 0;
  for (const byte of content) value = value * 256 + byte;
  if (value > max) throw malformed(what, "out of range");
  return value;
}

export function integerToBigInt(content: Uint8Array): bigint {
  let value = 0n;
  for (const byte of content) value = (value << 8n) | BigInt(byte);
  return (content[0]! & 0x80) !== 0 ? value - (1n << BigInt(content.length * 8)) : value;
}

/** BOOLEAN (X.690 §11.1: DER writes TRUE as FF). */
export function readBoolean(bytes: Uint8Array, element: DerElement, what: string): boolean {
  const content = contentOf(bytes, element);
  if (element.tag !== TAG.boolean || content.length !== 1 || (content[0] !== 0x00 && content[0] !== 0xff)) {
    throw malformed(what, "bad BOOLEAN");
  }
  return content[0] === 0xff;
}

/** BIT STRING (X.690 §8.6): the number of unused bits (0–7, 0 when empty) and the octets. */
export function readBitString(
  bytes: Uint8Array,
  element: DerElement,
  what: string,
): { unusedBits: number; data: Uint8Array } {
  const content = contentOf(bytes, element);
  const unusedBits = content[0];
  if (element.tag !== TAG.bitString || unusedBits === undefined || unusedBits > 7) {
    throw malformed(what, "bad BIT STRING");
  }
  if (content.length === 1 && unusedBits !== 0) throw malformed(what, "bad BIT STRING");
  return { unusedBits, data: content.subarray(1) };
}

/** OBJECT IDENTIFIER (X.690 §8.19) to dotted form; arcs beyond 2^53 go through BigInt (oids.ts). */
export function readOid(bytes: Uint8Array, element: DerElement, what: string): string {
  if (element.tag !== TAG.oid) throw malformed(what, "not an OBJECT IDENTIFIER");
  const content = contentOf(bytes, element);
  if (content.length === 0 || (content[content.length - 1]! & 0x80) !== 0) {
    throw malformed(what, "bad OBJECT IDENTIFIER");
  }
  // The same few dozen OIDs recur in every certificate: remember their dotted forms.
  const key = content.length <= 24 ? String.fromCharCode(...content) : undefined;
  const known = key === undefined ? undefined : dottedOids.get(key);
  if (known !== undefined) return known;
  const dotted = decodeOid(content, what);
  if (key !== undefined && dottedOids.size < 512) dottedOids.set(key, dotted);
  return dotted;
}

const dottedOids = new Map<string, string>();

function decodeOid(content: Uint8Array, what: string): string {
  const arcs: number[] = [];
  let value = 0;
  let fresh = true;
  for (const byte of content) {
    if (fresh && byte === 0x80) throw malformed(what, "OBJECT IDENTIFIER not minimally encoded");
    fresh = false;
    value = value * 128 + (byte & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER / 128) return decodeOidContent(content); // 128-bit arcs (2.25)
    if ((byte & 0x80) === 0) {
      arcs.push(value);
      value = 0;
      fresh = true;
    }
  }
  const head = arcs[0]!;
  const first = head < 80 ? Math.floor(head / 40) : 2;
  return `${first}.${head - first * 40}${arcs.length > 1 ? `.${arcs.slice(1).join(".")}` : ""}`;
}

/**
 * Time (RFC 5280 §4.1.2.5): UTCTime YYMMDDHHMMSSZ (YY ≥ 50 → 19YY) or GeneralizedTime
 * YYYYMMDDHHMMSSZ, seconds present, no fractions, Zulu — the only forms RFC 5280 allows.
 */
export function readTime(bytes: Uint8Array, element: DerElement, what: string): Date {
  const content = contentOf(bytes, element);
  let digits: number;
  if (element.tag === TAG.utcTime) digits = 12;
  else if (element.tag === TAG.generalizedTime) digits = 14;
  else throw malformed(what, "not a Time");
  if (content.length !== digits + 1 || content[digits] !== 0x5a) throw malformed(what, "bad time format");
  const n = (from: number, count: number): number => {
    let value = 0;
    for (let i = from; i < from + count; i++) {
      const d = content[i]! - 0x30;
      if (d < 0 || d > 9) throw malformed(what, "bad time format");
      value = value * 10 + d;
    }
    return value;
  };
  let year: number;
  let at: number;
  if (digits === 12) {
    const yy = n(0, 2);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
    at = 2;
  } else {
    year = n(0, 4);
    at = 4;
  }
  const month = n(at, 2);
  const day = n(at + 2, 2);
  const hour = n(at + 4, 2);
  const minute = n(at + 6, 2);
  const second = n(at + 8, 2);
  const ms = Date.UTC(year, month - 1, day, hour, minute, second);
  const date = new Date(ms);
  // Date.UTC rolls 31 February over into March: a round trip catches every out-of-range field.
  if (
    month < 1 ||
    date.getUTCFullYear() !== year ||
    date.getUTCMonth() !== month - 1 ||
    date.getUTCDate() !== day ||
    date.getUTCHours() !== hour ||
    date.getUTCMinutes() !== minute ||
    date.getUTCSeconds() !== second
  ) {
    throw malformed(what, "time out of range");
  }
  return date;
}

/** AlgorithmIdentifier (RFC 5280 §4.1.1.2): the OID and the parameters' encoding, if any. */
export interface AlgorithmIdentifier {
  /** The whole encoding, for byte comparison of the two copies in a certificate or CRL. */
  readonly encoding: Uint8Array;
  readonly oid: string;
  readonly parameters?: Uint8Array;
}

export function readAlgorithm(bytes: Uint8Array, element: DerElement, what: string): AlgorithmIdentifier {
  if (element.tag !== TAG.sequence) throw malformed(what, "AlgorithmIdentifier is not a SEQUENCE");
  const reader = DerReader.inside(bytes, element, what);
  const oid = readOid(bytes, reader.next(), what);
  const parameters = reader.done ? undefined : encodingOf(bytes, reader.next());
  reader.end();
  return { encoding: encodingOf(bytes, element), oid, ...(parameters ? { parameters } : {}) };
}

/** One AttributeTypeAndValue of a Name (X.501): the type and the value's tag, content and encoding. */
export interface NameAttribute {
  readonly type: string;
  readonly valueTag: number;
  readonly value: Uint8Array;
  readonly valueEncoding: Uint8Array;
}

/** Name (RFC 5280 §4.1.2.4): RDNSequence, each RDN a non-empty SET OF AttributeTypeAndValue. */
export interface ParsedName {
  readonly encoding: Uint8Array;
  readonly rdns: readonly (readonly NameAttribute[])[];
}

export function readName(bytes: Uint8Array, element: DerElement, what: string): ParsedName {
  if (element.tag !== TAG.sequence) throw malformed(what, "Name is not a SEQUENCE");
  const rdns: NameAttribute[][] = [];
  const sequence = DerReader.inside(bytes, element, what);
  while (!sequence.done) {
    const set = DerReader.inside(bytes, sequence.expect(TAG.set, "RelativeDistinguishedName"), what);
    const rdn: NameAttribute[] = [];
    while (!set.done) {
      const pair = DerReader.inside(bytes, set.expect(TAG.sequence, "AttributeTypeAndValue"), what);
      const type = readOid(bytes, pair.next(), what);
      const value = pair.next();
      pair.end();
      checkAttributeValue(value, what);
      if (value.tag === TAG.integer) integerContent(bytes, value, what); // minimal, non-empty
      rdn.push({
        type,
        valueTag: value.tag,
        value: contentOf(bytes, value),
        valueEncoding: encodingOf(bytes, value),
      });
    }
    if (rdn.length === 0) throw malformed(what, "empty RelativeDistinguishedName");
    rdns.push(rdn);
  }
  return { encoding: encodingOf(bytes, element), rdns };
}

/**
 * A name's attribute value must be a primitive universal type (X.520 values are strings, and OpenSSL
 * reads nothing else there); BMPString and UniversalString come in whole characters.
 */
/** NumericString, PrintableString, TeletexString, VideotexString, IA5String, GraphicString,
 * VisibleString, GeneralString, UniversalString, BMPString, UTF8String; INTEGER. */
const NAME_VALUE_TAGS: ReadonlySet<number> = new Set([
  0x12,
  0x13,
  0x14,
  0x15,
  0x16,
  0x19,
  0x1a,
  0x1b,
  0x1c,
  0x1e,
  0x0c,
  TAG.integer,
]);

function checkAttributeValue(value: DerElement, what: string): void {
  const length = value.end - value.contentStart;
  // The string types, and INTEGER (which @peculiar/x509 reads there); nothing else — the
  // differential test found this reader taking values (tag 0, a BIT STRING with 65 unused bits) that
  // OpenSSL and @peculiar/x509 both refuse.
  if (!NAME_VALUE_TAGS.has(value.tag)) {
    throw malformed(what, "name attribute value is not a string (or INTEGER)");
  }
  if (
    (value.tag === TAG.bmpString && length % 2 !== 0) ||
    (value.tag === TAG.universalString && length % 4 !== 0)
  ) {
    throw malformed(what, "name attribute value is not whole characters");
  }
}

/** Extension (RFC 5280 §4.1): extnID, critical (DEFAULT FALSE), and the content of extnValue. */
export interface RawExtension {
  readonly oid: string;
  readonly critical: boolean;
  readonly value: Uint8Array;
}

/**
 * Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension. `allowEmpty`: CRLs as @peculiar/x509 writes
 * them (this project's own) carry empty SEQUENCEs where there are none; OpenSSL reads those too.
 */
export function readExtensions(
  bytes: Uint8Array,
  element: DerElement,
  what: string,
  allowEmpty = false,
): RawExtension[] {
  if (element.tag !== TAG.sequence) throw malformed(what, "Extensions is not a SEQUENCE");
  const reader = DerReader.inside(bytes, element, what);
  const extensions: RawExtension[] = [];
  while (!reader.done) {
    const ext = DerReader.inside(bytes, reader.expect(TAG.sequence, "Extension"), what);
    const oid = readOid(bytes, ext.next(), what);
    const criticalElement = ext.optional(TAG.boolean);
    const critical = criticalElement ? readBoolean(bytes, criticalElement, what) : false;
    const value = contentOf(bytes, ext.expect(TAG.octetString, "extnValue"));
    ext.end();
    extensions.push({ oid, critical, value });
  }
  if (extensions.length === 0 && !allowEmpty) throw malformed(what, "empty Extensions");
  return extensions;
}

/** SubjectPublicKeyInfo (RFC 5280 §4.1.2.7). */
export interface PublicKeyInfo {
  readonly encoding: Uint8Array;
  readonly algorithm: AlgorithmIdentifier;
  readonly key: Uint8Array;
}

/** A Certificate (RFC 5280 §4.1), field by field; every array is a view into the input. */
export interface CertificateStructure {
  /** tbsCertificate, its whole encoding: the signed bytes. */
  readonly tbs: Uint8Array;
  /** 0 (v1), 1 (v2) or 2 (v3). */
  readonly version: number;
  /** serialNumber content octets. */
  readonly serialNumber: Uint8Array;
  /** tbsCertificate.signature */
  readonly innerAlgorithm: AlgorithmIdentifier;
  readonly issuer: ParsedName;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly subject: ParsedName;
  readonly publicKey: PublicKeyInfo;
  readonly extensions: readonly RawExtension[];
  /** Certificate.signatureAlgorithm */
  readonly outerAlgorithm: AlgorithmIdentifier;
  /** signatureValue, whole octets. */
  readonly signature: Uint8Array;
}

export function parseCertificateStructure(der: Uint8Array): CertificateStructure {
  const what = "certificate";
  if (der.length > MAX_CERTIFICATE_BYTES) throw malformed(what, `larger than ${MAX_CERTIFICATE_BYTES} bytes`);
  const outer = readOnly(der, what);
  if (outer.tag !== TAG.sequence) throw malformed(what, "not a SEQUENCE");
  const top = DerReader.inside(der, outer, what);
  const tbsElement = top.expect(TAG.sequence, "tbsCertificate");
  const outerAlgorithm = readAlgorithm(der, top.next(), what);
  const signature = readBitString(der, top.next(), what);
  top.end();
  if (signature.unusedBits !== 0) throw malformed(what, "signature is not whole octets");

  const tbs = DerReader.inside(der, tbsElement, what);
  const versionElement = tbs.optional(0xa0);
  let version = 0;
  if (versionElement) {
    const inner = DerReader.inside(der, versionElement, what);
    version = smallNonNegative(der, inner.next(), 2, "certificate version");
    inner.end();
  }
  const serialNumber = integerContent(der, tbs.next(), "certificate serialNumber");
  const innerAlgorithm = readAlgorithm(der, tbs.next(), what);
  const issuer = readName(der, tbs.next(), what);
  const validity = DerReader.inside(der, tbs.expect(TAG.sequence, "validity"), what);
  const notBefore = readTime(der, validity.next(), "notBefore");
  const notAfter = readTime(der, validity.next(), "notAfter");
  validity.end();
  const subject = readName(der, tbs.next(), what);
  const spkiElement = tbs.expect(TAG.sequence, "subjectPublicKeyInfo");
  const spki = DerReader.inside(der, spkiElement, what);
  const keyAlgorithm = readAlgorithm(der, spki.next(), what);
  const keyBits = readBitString(der, spki.next(), what);
  spki.end();
  if (keyBits.unusedBits !== 0) throw malformed(what, "public key is not whole octets");
  if (keyAlgorithm.oid === ID_EC_PUBLIC_KEY) {
    // ECParameters (RFC 5480 §2.1.1): a namedCurve OID here; implicitCA and specifiedCurve are refused.
    const parameters = keyAlgorithm.parameters;
    if (!parameters) throw malformed(what, "EC public key without a named curve");
    readOid(parameters, readOnly(parameters, what), what);
  }
  // issuerUniqueID [1], subjectUniqueID [2]: v2 and v3 only (RFC 5280 §4.1.2.8).
  for (const tag of [0x81, 0x82]) {
    if (tbs.optional(tag) && version < 1) throw malformed(what, "unique identifier in a v1 certificate");
  }
  let extensions: RawExtension[] = [];
  const extensionsElement = tbs.optional(0xa3);
  if (extensionsElement) {
    if (version !== 2) throw malformed(what, "extensions in a certificate that is not v3");
    const inner = DerReader.inside(der, extensionsElement, what);
    extensions = readExtensions(der, inner.next(), what);
    inner.end();
  }
  tbs.end();
  return {
    tbs: encodingOf(der, tbsElement),
    version,
    serialNumber,
    innerAlgorithm,
    issuer,
    notBefore,
    notAfter,
    subject,
    publicKey: { encoding: encodingOf(der, spkiElement), algorithm: keyAlgorithm, key: keyBits.data },
    extensions,
    outerAlgorithm,
    signature: signature.data,
  };
}

/** One revokedCertificates entry (RFC 5280 §5.1.2.6). */
export interface CrlEntryStructure {
  readonly serialNumber: Uint8Array;
  readonly revocationDate: Date;
  readonly extensions: readonly RawExtension[];
}

/** A CertificateList (RFC 5280 §5.1), field by field; every array is a view into the input. */
export interface CrlStructure {
  /** tbsCertList, its whole encoding: the signed bytes. */
  readonly tbs: Uint8Array;
  /** The version INTEGER (1 = v2) when present. */
  readonly version?: number;
  readonly innerAlgorithm: AlgorithmIdentifier;
  readonly issuer: ParsedName;
  readonly thisUpdate: Date;
  readonly nextUpdate?: Date;
  readonly entries: readonly CrlEntryStructure[];
  readonly extensions: readonly RawExtension[];
  readonly outerAlgorithm: AlgorithmIdentifier;
  readonly signature: Uint8Array;
}

export function parseCrlStructure(der: Uint8Array): CrlStructure {
  const what = "CRL";
  if (der.length > MAX_CRL_BYTES) throw malformed(what, `larger than ${MAX_CRL_BYTES} bytes`);
  const outer = readOnly(der, what);
  if (outer.tag !== TAG.sequence) throw malformed(what, "not a SEQUENCE");
  const top = DerReader.inside(der, outer, what);
  const tbsElement = top.expect(TAG.sequence, "tbsCertList");
  const outerAlgorithm = readAlgorithm(der, top.next(), what);
  const signature = readBitString(der, top.next(), what);
  top.end();
  if (signature.unusedBits !== 0) throw malformed(what, "signature is not whole octets");

  const tbs = DerReader.inside(der, tbsElement, what);
  const versionElement = tbs.optional(TAG.integer);
  const version = versionElement ? smallNonNegative(der, versionElement, 1, "CRL version") : undefined;
  const innerAlgorithm = readAlgorithm(der, tbs.next(), what);
  const issuer = readName(der, tbs.next(), what);
  const thisUpdate = readTime(der, tbs.next(), "thisUpdate");
  const next = tbs.peek();
  const nextUpdate =
    next === TAG.utcTime || next === TAG.generalizedTime
      ? readTime(der, tbs.next(), "nextUpdate")
      : undefined;
  const entries: CrlEntryStructure[] = [];
  const entriesElement = tbs.optional(TAG.sequence);
  if (entriesElement) {
    const list = DerReader.inside(der, entriesElement, what);
    while (!list.done) {
      const entry = DerReader.inside(der, list.expect(TAG.sequence, "revoked certificate"), what);
      const serialNumber = integerContent(der, entry.next(), "revoked serial number");
      const revocationDate = readTime(der, entry.next(), "revocationDate");
      const extensionsElement = entry.optional(TAG.sequence);
      const extensions = extensionsElement ? readExtensions(der, extensionsElement, what, true) : [];
      entry.end();
      entries.push({ serialNumber, revocationDate, extensions });
    }
  }
  let extensions: RawExtension[] = [];
  const extensionsElement = tbs.optional(0xa0);
  if (extensionsElement) {
    const inner = DerReader.inside(der, extensionsElement, what);
    extensions = readExtensions(der, inner.next(), what, true);
    inner.end();
  }
  tbs.end();
  return {
    tbs: encodingOf(der, tbsElement),
    ...(version !== undefined ? { version } : {}),
    innerAlgorithm,
    issuer,
    thisUpdate,
    ...(nextUpdate ? { nextUpdate } : {}),
    entries,
    extensions,
    outerAlgorithm,
    signature: signature.data,
  };
}

// ---- the raw views other layers use --------------------------------------------------------------

/** Raw parts of a Certificate (RFC 5280 §4.1). */
export interface CertificateParts {
  readonly issuer: Uint8Array;
  readonly subject: Uint8Array;
  /** tbsCertificate.signature */
  readonly innerSignatureAlgorithm: Uint8Array;
  /** Certificate.signatureAlgorithm */
  readonly outerSignatureAlgorithm: Uint8Array;
}

/** Raw parts of a CertificateList (RFC 5280 §5.1). */
export interface CrlParts {
  readonly issuer: Uint8Array;
  readonly innerSignatureAlgorithm: Uint8Array;
  readonly outerSignatureAlgorithm: Uint8Array;
}

export function certificateParts(der: ArrayBuffer | Uint8Array): CertificateParts {
  const s = parseCertificateStructure(toBytes(der));
  return {
    issuer: s.issuer.encoding.slice(),
    subject: s.subject.encoding.slice(),
    innerSignatureAlgorithm: s.innerAlgorithm.encoding.slice(),
    outerSignatureAlgorithm: s.outerAlgorithm.encoding.slice(),
  };
}

export function crlParts(der: ArrayBuffer | Uint8Array): CrlParts {
  const s = parseCrlStructure(toBytes(der));
  return {
    issuer: s.issuer.encoding.slice(),
    innerSignatureAlgorithm: s.innerAlgorithm.encoding.slice(),
    outerSignatureAlgorithm: s.outerAlgorithm.encoding.slice(),
  };
}

/** Decodes an ExtKeyUsageSyntax (SEQUENCE SIZE (1..MAX) OF KeyPurposeId) to dotted OIDs. */
export function decodeExtendedKeyUsage(extnValue: ArrayBuffer | Uint8Array): string[] {
  const what = "extended key usage";
  const bytes = toBytes(extnValue);
  const element = readOnly(bytes, what);
  if (element.tag !== TAG.sequence) throw malformed(what, "expected a SEQUENCE");
  const reader = DerReader.inside(bytes, element, what);
  const usages: string[] = [];
  while (!reader.done) {
    const item = reader.next();
    if (item.tag !== TAG.oid) throw new MalformedError("extended key usage: not an OID");
    usages.push(readOid(bytes, item, what));
  }
  if (usages.length === 0) throw new MalformedError("extended key usage: empty");
  return usages;
}

/** Decodes a CRLNumber (INTEGER (0..MAX), at most 20 octets: RFC 5280 §5.2.3). */
export function decodeCrlNumber(extnValue: ArrayBuffer | Uint8Array): bigint {
  const bytes = toBytes(extnValue);
  const element = readOnly(bytes, "CRL number");
  if (element.tag !== TAG.integer) throw new MalformedError("CRL number: not an INTEGER");
  const content = integerContent(bytes, element, "CRL number");
  const n = integerToBigInt(content);
  if (n < 0n || content.length > 20) throw new MalformedError("CRL number out of range");
  return n;
}

/** The DER INTEGER of a CRL number (the extnValue content of the CRL number extension). */
export function encodeCrlNumber(n: bigint): ArrayBuffer {
  if (n < 0n) throw new RangeError("CRL number must not be negative");
  const octets: number[] = [];
  for (let v = n; v > 0n; v >>= 8n) octets.unshift(Number(v & 0xffn));
  if (octets.length === 0 || (octets[0]! & 0x80) !== 0) octets.unshift(0); // positive, minimal
  if (octets.length > 0x7f) throw new RangeError("CRL number too large");
  const out = new Uint8Array(2 + octets.length);
  out[0] = TAG.integer;
  out[1] = octets.length;
  out.set(octets, 2);
  return out.buffer;
}

/** Serial numbers are compared as integers, whatever leading-zero padding their hex form carries. */
export function serialToBigInt(hex: string): bigint {
  return BigInt(`0x${hex.length > 0 ? hex : "0"}`);
}

function toBytes(input: ArrayBuffer | Uint8Array): Uint8Array {
  return input instanceof Uint8Array ? input : new Uint8Array(input);
}

function malformed(what: string, detail: string): MalformedError {
  return new MalformedError(`${what}: malformed DER (${detail})`);
}

function hexByte(b: number): string {
  return b.toString(16).padStart(2, "0");
}
