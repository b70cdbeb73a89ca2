/**
 * PIV identifiers and data-object layouts (SP 800-73-4 Part 1 §3 and Appendix A; Yubico PIV
 * extensions). Pure: builders and parsers of object contents — the bytes inside the `53` wrapper of
 * GET/PUT DATA — shared by the session (client side) and the virtual card.
 */
import { gunzipSync, gzipSync } from "node:zlib";
import { concatBytes, decodeTlv, decodeTlvs, encodeTlv, encodeTlvs, findTlv, TlvError } from "../apdu/tlv.js";

// ---------------------------------------------------------------------------------------------
// Application identifiers
// ---------------------------------------------------------------------------------------------

/** PIV AID: RID A0 00 00 03 08, PIX 00 00 10 00, version 01 00 (SP 800-73-4 Part 1 §2.2). */
export const PIV_AID = Uint8Array.from([0xa0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00]);
/** NIST RID, what yubico-piv-tool selects. */
export const PIV_RID = PIV_AID.subarray(0, 5);
export const YUBICO_OTP_AID = Uint8Array.from([0xa0, 0x00, 0x00, 0x05, 0x27, 0x20, 0x01, 0x01]);
export const YUBICO_MANAGEMENT_AID = Uint8Array.from([0xa0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17]);

// ---------------------------------------------------------------------------------------------
// Data objects
// ---------------------------------------------------------------------------------------------

export const ObjectId = {
  cardCapabilityContainer: 0x5fc107,
  chuid: 0x5fc102,
  certificate9A: 0x5fc105,
  certificate9C: 0x5fc10a,
  certificate9D: 0x5fc10b,
  certificate9E: 0x5fc101,
  fingerprints: 0x5fc103,
  securityObject: 0x5fc106,
  facialImage: 0x5fc108,
  printedInformation: 0x5fc109,
  keyHistory: 0x5fc10c,
  iris: 0x5fc121,
  pairingCodeReference: 0x5fc123,
  discovery: 0x7e,
  biometricGroupTemplate: 0x7f61,
  /** Yubico ADMIN DATA (PIN-protected management key flags) */
  yubicoAdminData: 0x5fff00,
  /** Yubico attestation certificate (slot F9) */
  yubicoAttestation: 0x5fff01,
} as const;

export const PIV_OBJECT_MIN = 0x5fc101;
export const PIV_OBJECT_MAX = 0x5fc123;
/** Vendor range YubiKeys accept for PUT/GET DATA. */
export const VENDOR_OBJECT_MIN = 0x5fff00;
export const VENDOR_OBJECT_MAX = 0x5fffff;
/** First vendor object free for applications: 5FFF00/5FFF01 are Yubico's (SPEC §5). */
export const APPLICATION_OBJECT_MIN = 0x5fff10;

/** Objects that need the PIN verified before GET DATA (SP 800-73-4 Part 1 Table 3). */
export const PIN_PROTECTED_OBJECTS: ReadonlySet<number> = new Set([
  ObjectId.fingerprints,
  ObjectId.facialImage,
  ObjectId.printedInformation,
  ObjectId.iris,
]);

export function isVendorObjectId(id: number): boolean {
  return Number.isInteger(id) && id >= VENDOR_OBJECT_MIN && id <= VENDOR_OBJECT_MAX;
}

export function isPivObjectId(id: number): boolean {
  return Number.isInteger(id) && id >= PIV_OBJECT_MIN && id <= PIV_OBJECT_MAX;
}

/** Objects a GET/PUT DATA may name on a YubiKey-like card. */
export function isDataObjectId(id: number): boolean {
  return (
    isPivObjectId(id) ||
    isVendorObjectId(id) ||
    id === ObjectId.discovery ||
    id === ObjectId.biometricGroupTemplate
  );
}

/** Bytes of an object id as it appears in tag list `5C`: 1 byte (7E), 2 (7F61) or 3. */
export function objectIdBytes(id: number): Uint8Array {
  if (id === ObjectId.discovery) return Uint8Array.of(0x7e);
  if (id === ObjectId.biometricGroupTemplate) return Uint8Array.of(0x7f, 0x61);
  if (!Number.isInteger(id) || id < 0x010000 || id > 0xffffff)
    throw new RangeError(`invalid PIV object id ${id}`);
  return Uint8Array.of(id >> 16, (id >> 8) & 0xff, id & 0xff);
}

/** `5C L <id>`: the tag list of GET DATA and PUT DATA. */
export function encodeObjectTagList(id: number): Uint8Array {
  return encodeTlv(0x5c, objectIdBytes(id));
}

export function objectIdFromBytes(bytes: Uint8Array): number | undefined {
  if (bytes.length < 1 || bytes.length > 3) return undefined;
  let v = 0;
  for (const b of bytes) v = v * 256 + b;
  return v;
}

export function formatObjectId(id: number): string {
  return id
    .toString(16)
    .toUpperCase()
    .padStart(id > 0xffff ? 6 : 2, "0");
}

// ---------------------------------------------------------------------------------------------
// Key slots
// ---------------------------------------------------------------------------------------------

export type RetiredSlot =
  | "82"
  | "83"
  | "84"
  | "85"
  | "86"
  | "87"
  | "88"
  | "89"
  | "8A"
  | "8B"
  | "8C"
  | "8D"
  | "8E"
  | "8F"
  | "90"
  | "91"
  | "92"
  | "93"
  | "94"
  | "95";
/** Key references (SP 800-78-4 Table 4-1): 9A authentication, 9C signature, 9D key management, 9E card authentication, 82–95 retired, F9 Yubico attestation. */
export type PivSlot = "9A" | "9C" | "9D" | "9E" | RetiredSlot | "F9";

export function slotReference(slot: PivSlot): number {
  const ref = Number.parseInt(slot, 16);
  if (slotFromReference(ref) !== slot) throw new RangeError(`invalid PIV slot ${slot}`);
  return ref;
}

export function slotFromReference(ref: number): PivSlot | undefined {
  if (
    ref === 0x9a ||
    ref === 0x9c ||
    ref === 0x9d ||
    ref === 0x9e ||
    ref === 0xf9 ||
    (ref >= 0x82 && ref <= 0x95)
  ) {
    return ref.toString(16).toUpperCase() as PivSlot;
  }
  return undefined;
}

/** The data object that holds the certificate of a slot. */
export function certificateObjectId(slot: PivSlot): number {
  switch (slot) {
    case "9A":
      return ObjectId.certificate9A;
    case "9C":
      return ObjectId.certificate9C;
    case "9D":
      return ObjectId.certificate9D;
    case "9E":
      return ObjectId.certificate9E;
    case "F9":
      return ObjectId.yubicoAttestation;
    default:
      // Retired 82..95 → 5FC10D..5FC120
      return 0x5fc10d + (slotReference(slot) - 0x82);
  }
}

// ---------------------------------------------------------------------------------------------
// Algorithms and policies
// ---------------------------------------------------------------------------------------------

export type EcCurve = "P-256" | "P-384";

/** SP 800-78-4 Table 6-2 algorithm identifiers. */
export const KeyAlgorithm = { rsa1024: 0x06, rsa2048: 0x07, eccP256: 0x11, eccP384: 0x14 } as const;

export function curveAlgorithm(curve: EcCurve): number {
  return curve === "P-256" ? KeyAlgorithm.eccP256 : KeyAlgorithm.eccP384;
}

export function curveFromAlgorithm(alg: number): EcCurve | undefined {
  if (alg === KeyAlgorithm.eccP256) return "P-256";
  if (alg === KeyAlgorithm.eccP384) return "P-384";
  return undefined;
}

/** Field size in bytes (also the longest digest the card signs). */
export function curveSize(curve: EcCurve): number {
  return curve === "P-256" ? 32 : 48;
}

export type PinPolicy = "default" | "never" | "once" | "always";
export type TouchPolicy = "default" | "never" | "always" | "cached";

export const PIN_POLICY: Readonly<Record<PinPolicy, number>> = { default: 0, never: 1, once: 2, always: 3 };
export const TOUCH_POLICY: Readonly<Record<TouchPolicy, number>> = {
  default: 0,
  never: 1,
  always: 2,
  cached: 3,
};

export function pinPolicyFromByte(b: number): PinPolicy | undefined {
  return (Object.keys(PIN_POLICY) as PinPolicy[]).find((k) => PIN_POLICY[k] === b);
}
export function touchPolicyFromByte(b: number): TouchPolicy | undefined {
  return (Object.keys(TOUCH_POLICY) as TouchPolicy[]).find((k) => TOUCH_POLICY[k] === b);
}

/** YubiKey default PIN policy of a slot (9C always, 9E never, others once). */
export function defaultPinPolicy(slot: PivSlot): Exclude<PinPolicy, "default"> {
  if (slot === "9C") return "always";
  if (slot === "9E") return "never";
  return "once";
}

// ---------------------------------------------------------------------------------------------
// Certificate objects: 70 cert, 71 CertInfo, FE EDC (SP 800-73-4 Part 1 Appendix A)
// ---------------------------------------------------------------------------------------------

/** Largest decompressed certificate accepted from a card (gzip bombs). */
export const MAX_CERTIFICATE_SIZE = 16 * 1024;

export function encodeCertificateObject(der: Uint8Array, options: { compress?: boolean } = {}): Uint8Array {
  const compress = options.compress ?? false;
  const body = compress ? new Uint8Array(gzipSync(der)) : der;
  return encodeTlvs([
    [0x70, body],
    [0x71, Uint8Array.of(compress ? 0x01 : 0x00)],
    [0xfe, new Uint8Array(0)],
  ]);
}

/** The DER certificate inside a certificate object; gzip (CertInfo 01, Yubico) is inflated, bounded. */
export function decodeCertificateObject(content: Uint8Array): Uint8Array {
  const items = decodeTlvs(content);
  const body = findTlv(items, 0x70);
  if (body === undefined) throw new TlvError("certificate object without tag 70");
  const info = findTlv(items, 0x71);
  let der: Uint8Array = body;
  if (info !== undefined && info.length > 0 && (info[0]! & 0x01) !== 0) {
    try {
      der = new Uint8Array(gunzipSync(body, { maxOutputLength: MAX_CERTIFICATE_SIZE }));
    } catch (e) {
      throw new TlvError("certificate object: bad or oversized gzip data", { cause: e });
    }
  }
  if (der.length < 2 || der[0] !== 0x30)
    throw new TlvError("certificate object does not hold a DER SEQUENCE");
  return der;
}

// ---------------------------------------------------------------------------------------------
// CHUID, CCC, Discovery, Key History
// ---------------------------------------------------------------------------------------------

export interface FascN {
  agency: string; // 4 digits
  system: string; // 4 digits
  credential: string; // 6 digits
  cs: string; // 1 digit
  ici: string; // 1 digit
  pi: string; // 10 digits
  oc: string; // 1 digit
  oi: string; // 4 digits
  poa: string; // 1 digit
}

/** Agency 9999 ("test/non-federal"): OpenSC then takes the card serial from the CHUID GUID. */
export const DEFAULT_FASCN: FascN = {
  agency: "9999",
  system: "9999",
  credential: "999999",
  cs: "9",
  ici: "9",
  pi: "9999999999",
  oc: "1",
  oi: "9999",
  poa: "1",
};

/**
 * FASC-N (TIG SCEPACS §6): 40 characters of 4 data bits (least significant first) + odd parity,
 * 200 bits = 25 bytes: SS agency FS system FS credential FS CS FS ICI FS PI OC OI POA ES LRC.
 */
export function encodeFascN(f: FascN = DEFAULT_FASCN): Uint8Array {
  const SS = 0xb;
  const FS = 0xd;
  const ES = 0xf;
  const digits = (s: string, n: number) => {
    if (!new RegExp(`^[0-9]{${n}}$`).test(s)) throw new RangeError(`FASC-N field "${s}" must be ${n} digits`);
    return Array.from(s, (c) => c.charCodeAt(0) - 48);
  };
  const chars = [
    SS,
    ...digits(f.agency, 4),
    FS,
    ...digits(f.system, 4),
    FS,
    ...digits(f.credential, 6),
    FS,
    ...digits(f.cs, 1),
    FS,
    ...digits(f.ici, 1),
    FS,
    ...digits(f.pi, 10),
    ...digits(f.oc, 1),
    ...digits(f.oi, 4),
    ...digits(f.poa, 1),
    ES,
  ];
  chars.push(chars.reduce((a, b) => a ^ b, 0)); // LRC over the data bits
  const bits: number[] = [];
  for (const c of chars) {
    let ones = 0;
    for (let i = 0; i < 4; i++) {
      const bit = (c >> i) & 1;
      ones += bit;
      bits.push(bit);
    }
    bits.push(ones % 2 === 0 ? 1 : 0);
  }
  const out = new Uint8Array(25);
  bits.forEach((bit, i) => {
    if (bit) out[i >> 3]! |= 0x80 >> (i & 7);
  });
  return out;
}

function yyyymmdd(d: Date): Uint8Array {
  const s =
    String(d.getUTCFullYear()).padStart(4, "0") +
    String(d.getUTCMonth() + 1).padStart(2, "0") +
    String(d.getUTCDate()).padStart(2, "0");
  return new TextEncoder().encode(s);
}

/** CHUID (SP 800-73-4 Part 1 Table 9): FASC-N, GUID, expiration, empty signature, EDC. */
export function buildChuid(options: { guid: Uint8Array; expires: Date; fascn?: FascN }): Uint8Array {
  if (options.guid.length !== 16) throw new RangeError("CHUID GUID must be 16 bytes");
  return encodeTlvs([
    [0x30, encodeFascN(options.fascn)],
    [0x34, options.guid],
    [0x35, yyyymmdd(options.expires)],
    [0x3e, new Uint8Array(0)],
    [0xfe, new Uint8Array(0)],
  ]);
}

export interface Chuid {
  fascn: Uint8Array | undefined;
  guid: Uint8Array | undefined;
  expires: string | undefined;
}

export function parseChuid(content: Uint8Array): Chuid {
  const items = decodeTlvs(content);
  const exp = findTlv(items, 0x35);
  return {
    fascn: findTlv(items, 0x30),
    guid: findTlv(items, 0x34),
    expires: exp ? new TextDecoder().decode(exp) : undefined,
  };
}

/** CCC (SP 800-73-4 Part 1 Table 8): card identifier `A0 00 00 01 16 FF 02` + 14 unique bytes. */
export function buildCcc(unique: Uint8Array): Uint8Array {
  if (unique.length !== 14) throw new RangeError("CCC card identifier suffix must be 14 bytes");
  const empty = new Uint8Array(0);
  return encodeTlvs([
    [0xf0, concatBytes(Uint8Array.of(0xa0, 0x00, 0x00, 0x01, 0x16, 0xff, 0x02), unique)],
    [0xf1, Uint8Array.of(0x21)],
    [0xf2, Uint8Array.of(0x21)],
    [0xf3, empty],
    [0xf4, Uint8Array.of(0x00)],
    [0xf5, Uint8Array.of(0x10)],
    [0xf6, empty],
    [0xf7, empty],
    [0xfa, empty],
    [0xfb, empty],
    [0xfc, empty],
    [0xfd, empty],
    [0xfe, empty],
  ]);
}

/** Discovery object (Part 1 Table 18) as the card returns it: `7E 12 4F 0B <AID> 5F2F 02 <policy>`. PIN usage policy 40 00 = PIV PIN only. */
export function buildDiscoveryObject(pinUsagePolicy: Uint8Array = Uint8Array.of(0x40, 0x00)): Uint8Array {
  return encodeTlv(
    0x7e,
    encodeTlvs([
      [0x4f, PIV_AID],
      [0x5f2f, pinUsagePolicy],
    ]),
  );
}

/** Key History (Part 1 Table 19): needed for retired slots to be visible to OpenSC. */
export function buildKeyHistory(onCard: number, offCard: number): Uint8Array {
  return encodeTlvs([
    [0xc1, Uint8Array.of(onCard)],
    [0xc2, Uint8Array.of(offCard)],
    [0xfe, new Uint8Array(0)],
  ]);
}

// ---------------------------------------------------------------------------------------------
// Yubico PIN-protected management key (ykman "PivmanData" / "PivmanProtectedData")
// ---------------------------------------------------------------------------------------------

/** ADMIN DATA 5FFF00 flag bits (tag 81). */
export const PivmanFlag = { pukBlocked: 0x01, managementKeyStored: 0x02 } as const;

export interface PivmanData {
  flags: number;
  /** PIN-derived management key salt (deprecated convention); kept if present */
  salt?: Uint8Array;
  /** tag 83, big-endian seconds as yubikit writes them */
  pinLastChanged?: Uint8Array;
}

/** ADMIN DATA content: `80 L {[81 01 flags] [82 10 salt] [83 04 time]}`. */
export function parsePivmanData(content: Uint8Array): PivmanData {
  const inner = decodeTlvs(decodeTlv(content, 0x80).value);
  const flags = findTlv(inner, 0x81);
  const salt = findTlv(inner, 0x82);
  const time = findTlv(inner, 0x83);
  return {
    flags: flags && flags.length > 0 ? flags[0]! : 0,
    ...(salt ? { salt: salt.slice() } : {}),
    ...(time ? { pinLastChanged: time.slice() } : {}),
  };
}

export function encodePivmanData(d: PivmanData): Uint8Array {
  const items: [number, Uint8Array][] = [];
  if (d.flags !== 0) items.push([0x81, Uint8Array.of(d.flags)]);
  if (d.salt) items.push([0x82, d.salt]);
  if (d.pinLastChanged) items.push([0x83, d.pinLastChanged]);
  return encodeTlv(0x80, encodeTlvs(items));
}

/** PRINTED 5FC109 content in the Yubico convention: `88 L {89 L key}`. */
export function encodePivmanProtectedData(managementKey: Uint8Array): Uint8Array {
  return encodeTlv(0x88, encodeTlv(0x89, managementKey));
}

/** The management key in a PRINTED object written by the Yubico convention, or undefined. */
export function parsePivmanProtectedData(content: Uint8Array): Uint8Array | undefined {
  const inner = decodeTlvs(decodeTlv(content, 0x88).value);
  return findTlv(inner, 0x89)?.slice();
}
