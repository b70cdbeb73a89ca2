/**
 * The virtual card's GlobalPlatform side of SCP11 (GP Card Specification 2.3 Amendment F), as a
 * YubiKey 5.7 does it for PIV:
 * - the issuer security domain (SELECT A000000151000000): GET DATA BF21 returns the certificate
 *   store of an SD key (A6 { 83 KID KVN }), bare (leaf last), as a YubiKey 5.7.4 does; 6A88 for an
 *   unknown key;
 * - in PIV: PERFORM SECURITY OPERATION (80 2A) receives the OCE chain and checks it against the OCE
 *   CA key the owner installed (SCP11a); INTERNAL AUTHENTICATE (80 88, SCP11b) and MUTUAL
 *   AUTHENTICATE (80 82, SCP11a/c) open a session with a fresh ephemeral key.
 * Keys persist with the card state; sessions and received OCE chains are volatile (power-off,
 * SELECT or any failure ends them). The card has no clock: OCE certificates are checked for their
 * signatures and key, not their dates (GP cards do the same).
 */
import { createPrivateKey, createPublicKey, type KeyObject, randomBytes, X509Certificate } from "node:crypto";
import { encodeCertificateStore } from "../apdu/scp11/cert-store.js";
import {
  cardHandshake,
  externalAuthenticateMac,
  macEqual,
  p256Point,
  SCP03_DEFAULT_KEYS,
  SCP03_DEFAULT_KVN,
  SCP03_SECURITY_LEVEL,
  ScpCardChannel,
  ScpMalformedError,
  type ScpSessionKeys,
  scp03Keys,
} from "../apdu/scp11/index.js";
import { SW } from "../apdu/status-words.js";
import { concatBytes, decodeTlv, decodeTlvs, encodeTlv } from "../apdu/tlv.js";
import type { CardScpKeyState, CardScpState } from "./card-state-store.js";

export interface ScpReply {
  data?: Uint8Array;
  sw: number;
}

/** Volatile SCP state of one power cycle. */
export interface ScpVolatile {
  session?: ScpCardChannel;
  /**
   * May this session change the OCE CA key (PUT KEY, STORE DATA in the ISD)? Yes for SCP03 (the
   * static key set: on a factory card the well-known default keys, as a YubiKey 5.7 ships them) and
   * SCP11a/c (the OCE proved a certificate under the installed OCE CA); never for SCP11b, which
   * authenticates only the card (as on a YubiKey). Never outside a session.
   */
  ownerAuthorized?: boolean;
  /** SCP03 between INITIALIZE UPDATE and EXTERNAL AUTHENTICATE. */
  scp03Pending?: { keys: ScpSessionKeys; hostCryptogram: Uint8Array };
  /** OCE chain received by PSO so far (verified link by link); `pkOce` once the leaf arrived. */
  oce?: { kid: number; kvn: number; last: KeyObject; pkOce?: Uint8Array };
}

const b64 = (s: string) => new Uint8Array(Buffer.from(s, "base64"));

/** Answer to SELECT of the ISD: an FCI with the AID (tag 84), as GP cards give. */
export function isdFci(aid: Uint8Array): Uint8Array {
  return Uint8Array.from([0x6f, aid.length + 2, 0x84, aid.length, ...aid]);
}

function findKey(scp: CardScpState | undefined, kid: number, kvn: number): CardScpKeyState | undefined {
  return scp?.keys.find((k) => k.kid === kid && (kvn === 0 || k.kvn === kvn));
}

/** GET DATA in the ISD: only BF21 (certificate store) is supported. */
export function isdGetData(
  scp: CardScpState | undefined,
  p1: number,
  p2: number,
  data: Uint8Array,
): ScpReply {
  if (p1 === TAG_CA_KLOC_IDENTIFIERS >> 8 && p2 === (TAG_CA_KLOC_IDENTIFIERS & 0xff))
    return caKlocIdentifiers(scp);
  if (p1 !== 0xbf || p2 !== 0x21) return { sw: SW.referenceNotFound };
  let kid: number;
  let kvn: number;
  try {
    const ref = decodeTlv(decodeTlv(data, 0xa6).value, 0x83).value;
    if (ref.length !== 2) return { sw: SW.incorrectData };
    kid = ref[0]!;
    kvn = ref[1]!;
  } catch {
    return { sw: SW.incorrectData };
  }
  const key = findKey(scp, kid, kvn);
  if (!key) return { sw: SW.referenceNotFound };
  return { data: encodeCertificateStore(key.certificates.map(b64), false), sw: SW.ok };
}

/**
 * PERFORM SECURITY OPERATION with one OCE certificate (whole, after chaining): P1 = KVN, P2 = KID of
 * the OCE CA key, b8 of P2 set while more certificates follow. Each one must be signed by the one
 * before it (the first by the OCE CA key).
 */
export function performSecurityOperation(
  scp: CardScpState | undefined,
  v: ScpVolatile,
  p1: number,
  p2: number,
  data: Uint8Array,
): ScpReply {
  const kvn = p1 & 0x7f;
  const kid = p2 & 0x7f;
  const more = (p2 & 0x80) !== 0;
  const ca = scp?.oceCa;
  if (!ca || ca.kid !== kid || ca.kvn !== kvn) {
    v.oce = undefined;
    return { sw: SW.referenceNotFound };
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(Buffer.from(data));
  } catch {
    v.oce = undefined;
    return { sw: SW.incorrectData };
  }
  const issuerKey =
    v.oce && v.oce.kid === kid && v.oce.kvn === kvn && !v.oce.pkOce
      ? v.oce.last
      : createPublicKey({ key: Buffer.from(ca.spki, "base64"), format: "der", type: "spki" });
  let ok = false;
  try {
    ok = cert.verify(issuerKey);
  } catch {
    ok = false;
  }
  if (!ok) {
    v.oce = undefined;
    return { sw: SW.incorrectData };
  }
  if (more) {
    v.oce = { kid, kvn, last: cert.publicKey };
    return { sw: SW.ok };
  }
  try {
    v.oce = { kid, kvn, last: cert.publicKey, pkOce: p256Point(cert.publicKey) };
  } catch {
    v.oce = undefined;
    return { sw: SW.incorrectData };
  }
  return { sw: SW.ok };
}

/**
 * INTERNAL AUTHENTICATE (SCP11b) or MUTUAL AUTHENTICATE (SCP11a/c): P1 = KVN, P2 = KID of the SD
 * key. On success the session starts (the answer itself travels unwrapped).
 */
export function authenticate(
  scp: CardScpState | undefined,
  v: ScpVolatile,
  mutual: boolean,
  p1: number,
  p2: number,
  data: Uint8Array,
): ScpReply {
  v.session = undefined;
  const key = findKey(scp, p2, p1);
  if (!key) return { sw: SW.referenceNotFound };
  const skSd = createPrivateKey({ key: Buffer.from(key.pkcs8, "base64"), format: "der", type: "pkcs8" });
  const pkOce = mutual ? v.oce?.pkOce : undefined;
  if (mutual && !pkOce) return { sw: SW.conditionsNotSatisfied };
  try {
    const r = cardHandshake({ authData: data, skSd, ...(pkOce ? { pkOce } : {}) });
    // 11b only by INTERNAL AUTHENTICATE, 11a/c only by MUTUAL AUTHENTICATE, and with the matching key.
    const expectedKid = r.variant === "b" ? 0x13 : r.variant === "a" ? 0x11 : 0x15;
    if ((r.variant === "b") === mutual || p2 !== expectedKid) return { sw: SW.incorrectData };
    v.oce = undefined;
    v.session = new ScpCardChannel(r);
    v.ownerAuthorized = r.variant !== "b";
    return { data: r.answer, sw: SW.ok };
  } catch (e) {
    if (e instanceof ScpMalformedError) return { sw: SW.incorrectData };
    return { sw: SW.incorrectData };
  }
}

// ---------------------------------------------------------------------------------------------
// Owner administration of the OCE CA key (ISD, inside a session): PUT KEY, STORE DATA, GET DATA FF33
// ---------------------------------------------------------------------------------------------

/** KID of the OCE CA key (KLOC) for SCP11a/c (GP Amendment F §7.1.1; YubiKey 0x10). */
export const OCE_CA_KID = 0x10;
/** GET DATA tag of the CA-KLOC identifiers (SKI and key reference of each OCE CA key). */
export const TAG_CA_KLOC_IDENTIFIERS = 0xff33;
/** Curve identifiers of PUT KEY's key parameter (tag F0), GP Amendment F / yubikit `Curve`. */
const PUT_KEY_CURVES: Readonly<Record<number, { crv: "P-256" | "P-384"; size: number }>> = {
  0: { crv: "P-256", size: 32 },
  1: { crv: "P-384", size: 48 },
};
/** The OCE CA key as stored in the card state (SPKI DER, base64). */
export interface OceCaInstall {
  kid: number;
  kvn: number;
  spki: string;
}

/** PUT KEY and STORE DATA of the OCE CA: 6982 outside a session, 6985 in one that may not administer it. */
function oceCaAdministrationRefused(v: ScpVolatile): ScpReply | undefined {
  if (!v.session) return { sw: SW.securityStatusNotSatisfied };
  // A 6982 inside a session means "session lost" to the host: a refusal that keeps it is 6985.
  if (!v.ownerAuthorized) return { sw: SW.conditionsNotSatisfied };
  return undefined;
}

/**
 * PUT KEY `80 D8 <replace KVN> 10` with `KVN ‖ B0 <point> ‖ F0 01 <curve> ‖ 00` (no key check value
 * for a public key): installs the OCE CA public key. Only inside a session that may administer the
 * OCE CA (`ownerAuthorized`), else 6985 (6982 outside a session); a card keeps one OCE CA key, so an installed key is
 * replaced only by naming its KVN in P1. Answers the KVN.
 */
export function putOceCaKey(
  scp: CardScpState | undefined,
  v: ScpVolatile,
  p1: number,
  p2: number,
  data: Uint8Array,
): ScpReply & { install?: OceCaInstall } {
  const refused = oceCaAdministrationRefused(v);
  if (refused) return refused;
  if (p2 !== OCE_CA_KID) return { sw: SW.incorrectP1P2 };
  const existing = scp?.oceCa;
  if (existing ? p1 !== existing.kvn : p1 !== 0) return { sw: SW.incorrectP1P2 };
  if (data.length < 2) return { sw: SW.incorrectData };
  const kvn = data[0]!;
  if (kvn === 0 || kvn > 0x7f || data[data.length - 1] !== 0x00) return { sw: SW.incorrectData };
  let point: Uint8Array;
  let curve: { crv: "P-256" | "P-384"; size: number } | undefined;
  try {
    const items = decodeTlvs(data.subarray(1, data.length - 1), { maxItems: 2 });
    if (
      items.length !== 2 ||
      items[0]!.tag !== 0xb0 ||
      items[1]!.tag !== 0xf0 ||
      items[1]!.value.length !== 1
    )
      return { sw: SW.incorrectData };
    point = items[0]!.value;
    curve = PUT_KEY_CURVES[items[1]!.value[0]!];
  } catch {
    return { sw: SW.incorrectData };
  }
  if (!curve || point.length !== 1 + 2 * curve.size || point[0] !== 0x04) return { sw: SW.incorrectData };
  let spki: Buffer;
  try {
    const b64u = (b: Uint8Array) => Buffer.from(b).toString("base64url");
    spki = createPublicKey({
      key: {
        kty: "EC",
        crv: curve.crv,
        x: b64u(point.subarray(1, 1 + curve.size)),
        y: b64u(point.subarray(1 + curve.size)),
      },
      format: "jwk",
    }).export({ format: "der", type: "spki" });
  } catch {
    return { sw: SW.incorrectData }; // not on the curve
  }
  return { data: Uint8Array.of(kvn), sw: SW.ok, install: { kid: p2, kvn, spki: spki.toString("base64") } };
}

/**
 * STORE DATA `E2 90 00` with `A6 { 80 01 <KLCC?> | 42 <SKI> | 83 02 <KID KVN> }`: the key identifier
 * of the installed OCE CA key (GET DATA FF33 lists it). Same authorisation as PUT KEY.
 */
export function storeOceCaIdentifier(
  scp: CardScpState | undefined,
  v: ScpVolatile,
  p1: number,
  p2: number,
  data: Uint8Array,
): ScpReply & { ski?: string } {
  const refused = oceCaAdministrationRefused(v);
  if (refused) return refused;
  if (p1 !== 0x90 || p2 !== 0x00) return { sw: SW.incorrectP1P2 };
  try {
    const items = decodeTlvs(decodeTlv(data, 0xa6).value, { maxItems: 3 });
    const get = (tag: number) => {
      const found = items.filter((i) => i.tag === tag);
      if (found.length !== 1) throw new RangeError(`tag ${tag}`);
      return found[0]!.value;
    };
    const klcc = get(0x80);
    const ski = get(0x42);
    const ref = get(0x83);
    const ca = scp?.oceCa;
    if (klcc.length !== 1 || klcc[0] !== 0x00 || ski.length === 0 || ski.length > 32 || ref.length !== 2)
      return { sw: SW.incorrectData };
    if (!ca || ref[0] !== ca.kid || ref[1] !== ca.kvn) return { sw: SW.referenceNotFound };
    return { sw: SW.ok, ski: Buffer.from(ski).toString("base64") };
  } catch {
    return { sw: SW.incorrectData };
  }
}

/** GET DATA FF33: `42 <SKI> 83 02 <KID KVN>` of the OCE CA key, 6A88 when none is identified. */
export function caKlocIdentifiers(scp: CardScpState | undefined): ScpReply {
  const ca = scp?.oceCa;
  if (!ca?.ski) return { sw: SW.referenceNotFound };
  return {
    data: concatBytes(encodeTlv(0x42, b64(ca.ski)), encodeTlv(0x83, Uint8Array.of(ca.kid, ca.kvn))),
    sw: SW.ok,
  };
}

// ---------------------------------------------------------------------------------------------
// SCP03 on the ISD with the factory default key set (KVN FF), as a YubiKey 5.7 ships it
// ---------------------------------------------------------------------------------------------

/**
 * INITIALIZE UPDATE `80 50 <KVN 00|FF> 00 <host challenge>`: a fresh card challenge; the answer is
 * diversification data (10 zero bytes), key information `FF 03 00`, card challenge, card cryptogram.
 * The virtual card keeps the default key set (replacing it is not implemented).
 */
export function initializeUpdate(
  scp: CardScpState | undefined,
  v: ScpVolatile,
  p1: number,
  p2: number,
  data: Uint8Array,
): ScpReply {
  v.session = undefined;
  v.ownerAuthorized = false;
  v.scp03Pending = undefined;
  if (!scp) return { sw: SW.referenceNotFound };
  if (p2 !== 0x00) return { sw: SW.incorrectP1P2 };
  if (p1 !== 0x00 && p1 !== SCP03_DEFAULT_KVN) return { sw: SW.referenceNotFound };
  if (data.length !== 8) return { sw: SW.incorrectData };
  const cardChallenge = new Uint8Array(randomBytes(8));
  const h = scp03Keys(SCP03_DEFAULT_KEYS, data, cardChallenge);
  v.scp03Pending = { keys: h.keys, hostCryptogram: h.hostCryptogram };
  return {
    data: concatBytes(
      new Uint8Array(10),
      Uint8Array.of(SCP03_DEFAULT_KVN, 0x03, 0x00),
      cardChallenge,
      h.cardCryptogram,
    ),
    sw: SW.ok,
  };
}

/** EXTERNAL AUTHENTICATE `84 82 33 00 <host cryptogram ‖ C-MAC>`: opens the SCP03 session. */
export function externalAuthenticate(
  v: ScpVolatile,
  p1: number,
  p2: number,
  data: Uint8Array,
  extended = false,
): ScpReply {
  const pending = v.scp03Pending;
  v.scp03Pending = undefined;
  if (!pending) return { sw: SW.conditionsNotSatisfied };
  if (p1 !== SCP03_SECURITY_LEVEL || p2 !== 0x00) return { sw: SW.incorrectP1P2 };
  if (data.length !== 16) return { sw: SW.incorrectData };
  const mac = externalAuthenticateMac(pending.keys.sMac, p1, pending.hostCryptogram, extended);
  if (
    !macEqual(data.subarray(0, 8), pending.hostCryptogram) ||
    !macEqual(data.subarray(8), mac.subarray(0, 8))
  )
    return { sw: SW.securityStatusNotSatisfied };
  v.session = new ScpCardChannel({ keys: pending.keys, receipt: mac });
  v.ownerAuthorized = true;
  return { sw: SW.ok };
}
