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
import { createPrivateKey, createPublicKey, type KeyObject, X509Certificate } from "node:crypto";
import { encodeCertificateStore } from "../apdu/scp11/cert-store.js";
import { cardHandshake, p256Point, ScpCardChannel, ScpMalformedError } from "../apdu/scp11/index.js";
import { SW } from "../apdu/status-words.js";
import { decodeTlv } from "../apdu/tlv.js";
import type { CardScpKeyState, CardScpState } from "./card-state-store.js";

export interface ScpReply {
  data?: Uint8Array;
  sw: number;
}

/** Volatile SCP state of one power cycle. */
export interface ScpVolatile {
  session?: ScpCardChannel;
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
    return { data: r.answer, sw: SW.ok };
  } catch (e) {
    if (e instanceof ScpMalformedError) return { sw: SW.incorrectData };
    return { sw: SW.incorrectData };
  }
}
