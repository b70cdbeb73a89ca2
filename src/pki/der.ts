import * as asn1js from "asn1js";
import { MalformedError } from "../errors.js";
import { decodeOidContent } from "./oids.js";

/**
 * The few raw-DER views that validation needs and @peculiar/x509 does not expose: the exact bytes of
 * names (RFC 5280 §6.1.3 (a)(4) name chaining is done on the encodings here — byte-equal DER — not on
 * re-serialised or string forms), the two copies of the signature algorithm, EKU OIDs with 128-bit
 * arcs, and CRL numbers larger than 2^53.
 */

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
  const [tbs, outerAlg] = signedSequence(der, "certificate");
  const fields = sequenceItems(tbs, "tbsCertificate");
  // version is [0] EXPLICIT and optional (absent for v1).
  const first = fields[0];
  const offset = first && first.idBlock.tagClass === 3 && first.idBlock.tagNumber === 0 ? 1 : 0;
  const innerAlg = fields[offset + 1];
  const issuer = fields[offset + 2];
  const subject = fields[offset + 4];
  if (!innerAlg || !issuer || !subject) throw new MalformedError("certificate: truncated tbsCertificate");
  return {
    issuer: raw(issuer),
    subject: raw(subject),
    innerSignatureAlgorithm: raw(innerAlg),
    outerSignatureAlgorithm: raw(outerAlg),
  };
}

export function crlParts(der: ArrayBuffer | Uint8Array): CrlParts {
  const [tbs, outerAlg] = signedSequence(der, "CRL");
  const fields = sequenceItems(tbs, "tbsCertList");
  // version is an optional plain INTEGER (present, v2, whenever extensions are used).
  const offset = fields[0] instanceof asn1js.Integer ? 1 : 0;
  const innerAlg = fields[offset];
  const issuer = fields[offset + 1];
  if (!innerAlg || !issuer) throw new MalformedError("CRL: truncated tbsCertList");
  return {
    issuer: raw(issuer),
    innerSignatureAlgorithm: raw(innerAlg),
    outerSignatureAlgorithm: raw(outerAlg),
  };
}

/** Decodes an ExtKeyUsageSyntax (SEQUENCE SIZE (1..MAX) OF KeyPurposeId) to dotted OIDs. */
export function decodeExtendedKeyUsage(extnValue: ArrayBuffer | Uint8Array): string[] {
  const items = sequenceItems(parseDer(extnValue, "extended key usage"), "extended key usage");
  if (items.length === 0) throw new MalformedError("extended key usage: empty");
  return items.map((item) => {
    if (!(item instanceof asn1js.ObjectIdentifier))
      throw new MalformedError("extended key usage: not an OID");
    return decodeOidContent(contentOf(raw(item)));
  });
}

/** Decodes a CRLNumber (INTEGER (0..MAX), at most 20 octets: RFC 5280 §5.2.3). */
export function decodeCrlNumber(extnValue: ArrayBuffer | Uint8Array): bigint {
  const value = parseDer(extnValue, "CRL number");
  if (!(value instanceof asn1js.Integer)) throw new MalformedError("CRL number: not an INTEGER");
  const n = value.toBigInt();
  if (n < 0n || contentOf(raw(value)).length > 20) throw new MalformedError("CRL number out of range");
  return n;
}

export function encodeCrlNumber(n: bigint): ArrayBuffer {
  if (n < 0n) throw new RangeError("CRL number must not be negative");
  return asn1js.Integer.fromBigInt(n).toBER();
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Serial numbers are compared as integers, whatever leading-zero padding their hex form carries. */
export function serialToBigInt(hex: string): bigint {
  return BigInt(`0x${hex.length > 0 ? hex : "0"}`);
}

function signedSequence(der: ArrayBuffer | Uint8Array, what: string): [asn1js.AsnType, asn1js.AsnType] {
  const items = sequenceItems(parseDer(der, what), what);
  const [tbs, alg, signature] = items;
  if (items.length !== 3 || !tbs || !alg || !signature)
    throw new MalformedError(`${what}: not a signed structure`);
  return [tbs, alg];
}

function parseDer(der: ArrayBuffer | Uint8Array, what: string): asn1js.AsnType {
  const bytes = der instanceof Uint8Array ? der : new Uint8Array(der);
  const parsed = asn1js.fromBER(bytes);
  if (parsed.offset === -1 || parsed.offset !== bytes.length) {
    throw new MalformedError(
      `${what}: malformed DER${parsed.result.error ? ` (${parsed.result.error})` : ""}`,
    );
  }
  return parsed.result;
}

function sequenceItems(node: asn1js.AsnType, what: string): asn1js.AsnType[] {
  if (!(node instanceof asn1js.Sequence)) throw new MalformedError(`${what}: expected a SEQUENCE`);
  return node.valueBlock.value;
}

function raw(node: asn1js.AsnType): Uint8Array {
  return new Uint8Array(node.valueBeforeDecodeView);
}

/** Strips the identifier and length octets of a DER TLV (X.690 §8.1.3). */
function contentOf(tlv: Uint8Array): Uint8Array {
  const lengthByte = tlv[1] ?? 0;
  const headerLength = lengthByte < 0x80 ? 2 : 2 + (lengthByte & 0x7f);
  return tlv.subarray(headerLength);
}
