import { MalformedError } from "../errors.js";

/**
 * Object identifiers used by the onboarding PKI.
 *
 * The project's own OIDs live under the UUID arc 2.25 (ITU-T X.667 / RFC 4122 §6: `2.25.<the UUID as
 * one unsigned decimal integer>`), which needs no registration. The UUID was generated once at
 * random (11757d98-aa5a-479d-98fd-bff2a826ba1e) and must never change: certificates already issued
 * carry these values. See docs/PKI.md.
 */
export const ONBOARDING_ARC = "2.25.23206922057394896487462355858318866974";

/** Extended key usages (RFC 5280 §4.2.1.12) that mark what an onboarding key may do. */
export const EKU = {
  /** A secure element's card-authentication key (PIV slot 9E): answers the station's and agent's challenge. */
  tokenAuth: `${ONBOARDING_ARC}.1`,
  /** A secure element's signing key (PIV slot 9C): signs customer configurations (the manifest). */
  configSigning: `${ONBOARDING_ARC}.2`,
  /** An HSM's device key: signs onboarding receipts. */
  deviceReceipt: `${ONBOARDING_ARC}.3`,
  /** id-PIV-cardAuth (FIPS 201-3 / SP 800-78): carried by 9E certificates so PIV tooling recognises them. */
  pivCardAuth: "2.16.840.1.101.3.6.8",
  /** anyExtendedKeyUsage (RFC 5280 §4.2.1.12): never accepted in place of an onboarding EKU. */
  any: "2.5.29.37.0",
} as const;

/** Certificate and CRL extensions (RFC 5280 §4.2, §5.2, §5.3). */
export const EXT = {
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  crlNumber: "2.5.29.20",
  crlReason: "2.5.29.21",
  invalidityDate: "2.5.29.24",
  deltaCrlIndicator: "2.5.29.27",
  issuingDistributionPoint: "2.5.29.28",
  certificateIssuer: "2.5.29.29",
  nameConstraints: "2.5.29.30",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
} as const;

/** Subject attribute types (X.520). */
export const ATTR = {
  commonName: "2.5.4.3",
  serialNumber: "2.5.4.5",
  organization: "2.5.4.10",
} as const;

/**
 * Encodes a dotted OID as DER content octets (X.690 §8.19). Written by hand because arcs under 2.25
 * are 128-bit integers, which need BigInt arithmetic.
 */
export function encodeOidContent(oid: string): Uint8Array {
  const arcs = parseDotted(oid);
  const [first, second, ...rest] = arcs;
  if (first === undefined || second === undefined || first > 2n || (first < 2n && second > 39n)) {
    throw new TypeError(`not a valid object identifier: ${oid}`);
  }
  const out: number[] = [];
  for (const arc of [first * 40n + second, ...rest]) out.push(...base128(arc));
  return Uint8Array.from(out);
}

/** Decodes DER content octets of an OBJECT IDENTIFIER to dotted form, arcs of any size. */
export function decodeOidContent(content: Uint8Array): string {
  if (content.length === 0) throw new MalformedError("empty object identifier");
  const arcs: bigint[] = [];
  let value = 0n;
  let started = false;
  for (const byte of content) {
    // A sub-identifier must be minimally encoded: no leading 0x80 octet (X.690 §8.19.2).
    if (!started && byte === 0x80) throw new MalformedError("object identifier not minimally encoded");
    started = true;
    value = (value << 7n) | BigInt(byte & 0x7f);
    if ((byte & 0x80) === 0) {
      arcs.push(value);
      value = 0n;
      started = false;
    }
  }
  if (started) throw new MalformedError("object identifier truncated");
  const [head, ...rest] = arcs as [bigint, ...bigint[]];
  const first = head < 80n ? head / 40n : 2n;
  const second = head - first * 40n;
  return [first, second, ...rest].join(".");
}

function parseDotted(oid: string): bigint[] {
  if (!/^\d+(\.\d+)+$/.test(oid)) throw new TypeError(`not a valid object identifier: ${oid}`);
  return oid.split(".").map((arc) => BigInt(arc));
}

function base128(value: bigint): number[] {
  const bytes = [Number(value & 0x7fn)];
  for (let v = value >> 7n; v > 0n; v >>= 7n) bytes.unshift(Number(v & 0x7fn) | 0x80);
  return bytes;
}
