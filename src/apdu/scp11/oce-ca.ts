/**
 * The owner's side of SCP11a on the card's issuer security domain (GP Card Specification 2.3
 * Amendment F §7; as yubikit's `SecurityDomainSession.put_key` / `store_ca_issuer` /
 * `get_supported_ca_identifiers` do it on a YubiKey 5.7):
 *
 *   GET DATA FF33 (plain, ISD selected)   → `42 <SKI> 83 02 <KID KVN>` per OCE CA key (KLOC), or 6A88
 *   PUT KEY   80 D8 <replace KVN> 10      `KVN ‖ B0 <04‖X‖Y> ‖ F0 01 <curve: 00 P-256, 01 P-384> ‖ 00`
 *                                         → the card answers the KVN (no key check value for a public key)
 *   STORE DATA 00 E2 90 00                `A6 { 80 01 00 (KLOC) | 42 <SKI> | 83 02 <KID KVN> }`
 *
 * PUT KEY and STORE DATA travel wrapped, inside an SCP11 session opened on the ISD itself
 * (`openScp11` with no application to select). The station later reads FF33 before it opens SCP11a:
 * an OCE CA identifier that is not its own issuer's tells it, before any PIN, that the card belongs
 * to another owner.
 */
import type { KeyObject } from "node:crypto";
import { ScpUnavailableError } from "../../errors.js";
import type { SmartCardProtocol } from "../chaining.js";
import { GP_INS } from "../instructions.js";
import { formatSw } from "../response.js";
import { concatBytes, decodeTlvs, encodeTlv } from "../tlv.js";
import { ScpMalformedError } from "./errors.js";
import { DEFAULT_OCE_KID } from "./host.js";

/** GET DATA tag of the CA-KLOC identifiers. */
export const TAG_CA_KLOC_IDENTIFIERS = 0xff33;
/** At most this many OCE CA identifiers are accepted from a card (a YubiKey holds a handful). */
export const MAX_OCE_CA_IDENTIFIERS = 16;

export interface OceCaIdentifier {
  /** The CA's subject key identifier, as the owner stored it. */
  readonly ski: Uint8Array;
  readonly kid: number;
  readonly kvn: number;
}

/**
 * Decodes GET DATA FF33 (untrusted bytes): pairs `42 <SKI 1..32 bytes>` then `83 02 <KID KVN>`.
 * Anything else is ScpMalformedError.
 */
export function decodeOceCaIdentifiers(data: Uint8Array): OceCaIdentifier[] {
  let items: ReturnType<typeof decodeTlvs>;
  try {
    items = decodeTlvs(data, { maxItems: 2 * MAX_OCE_CA_IDENTIFIERS });
  } catch (cause) {
    throw new ScpMalformedError("OCE CA identifiers (FF33) are not BER-TLV", { cause });
  }
  if (items.length % 2 !== 0) throw new ScpMalformedError("OCE CA identifiers (FF33): unpaired item");
  const out: OceCaIdentifier[] = [];
  for (let i = 0; i < items.length; i += 2) {
    const ski = items[i]!;
    const ref = items[i + 1]!;
    if (ski.tag !== 0x42 || ski.value.length === 0 || ski.value.length > 32)
      throw new ScpMalformedError("OCE CA identifiers (FF33): expected 42 with a 1-32 byte key identifier");
    if (ref.tag !== 0x83 || ref.value.length !== 2)
      throw new ScpMalformedError("OCE CA identifiers (FF33): expected 83 with KID and KVN");
    out.push({ ski: ski.value.slice(), kid: ref.value[0]!, kvn: ref.value[1]! });
  }
  return out;
}

/** Reads the card's OCE CA identifiers (the ISD must be selected); [] when the card has none (6A88). */
export async function readOceCaIdentifiers(protocol: SmartCardProtocol): Promise<OceCaIdentifier[]> {
  const r = await protocol.transmit({
    cla: 0x00,
    ins: GP_INS.getData,
    p1: TAG_CA_KLOC_IDENTIFIERS >> 8,
    p2: TAG_CA_KLOC_IDENTIFIERS & 0xff,
    le: 256,
  });
  if (r.sw === 0x6a88 || r.sw === 0x6a82) return [];
  if (r.sw !== 0x9000) throw new ScpUnavailableError(`OCE CA identifiers: card answered ${formatSw(r.sw)}`);
  return decodeOceCaIdentifiers(r.data);
}

/** PUT KEY's curve identifier and the point of an EC public key (P-256 or P-384). */
function curveAndPoint(publicKey: KeyObject): { curve: number; point: Uint8Array } {
  const crv = publicKey.asymmetricKeyDetails?.namedCurve;
  const size = crv === "prime256v1" ? 32 : crv === "secp384r1" ? 48 : 0;
  if (publicKey.asymmetricKeyType !== "ec" || size === 0)
    throw new RangeError("the OCE CA key must be an EC P-256 or P-384 public key");
  const jwk = publicKey.export({ format: "jwk" });
  const coord = (s: string | undefined) => {
    const b = Buffer.from(s ?? "", "base64url");
    const o = new Uint8Array(size);
    o.set(b, size - b.length);
    return o;
  };
  return {
    curve: size === 32 ? 0x00 : 0x01,
    point: concatBytes(Uint8Array.of(0x04), coord(jwk.x), coord(jwk.y)),
  };
}

/** The data field of PUT KEY for an OCE CA public key. */
export function encodePutOceCaKey(publicKey: KeyObject, kvn: number): Uint8Array {
  const { curve, point } = curveAndPoint(publicKey);
  return concatBytes(
    Uint8Array.of(kvn),
    encodeTlv(0xb0, point),
    encodeTlv(0xf0, Uint8Array.of(curve)),
    Uint8Array.of(0x00),
  );
}

export interface InstallOceCaOptions {
  /** The OCE CA's public key (the owner's token CA key). */
  readonly publicKey: KeyObject;
  /** Its subject key identifier (what FF33 will list). */
  readonly ski: Uint8Array;
  readonly kid?: number;
  readonly kvn?: number;
  /** KVN of the OCE CA key this one replaces (0: none installed). */
  readonly replaceKvn?: number;
}

/**
 * Installs the OCE CA key and its identifier. `protocol` must run an SCP11 session opened on the ISD
 * (every command here is wrapped). A refusal is ScpUnavailableError naming the status word: 6985
 * when the session may not administer the OCE CA (SCP11b on a card that already has one).
 */
export async function installOceCaKey(
  protocol: SmartCardProtocol,
  options: InstallOceCaOptions,
): Promise<void> {
  const kid = options.kid ?? DEFAULT_OCE_KID;
  const kvn = options.kvn ?? 0x01;
  const put = await protocol.transmit({
    cla: 0x80,
    ins: GP_INS.putKey,
    p1: options.replaceKvn ?? 0,
    p2: kid,
    data: encodePutOceCaKey(options.publicKey, kvn),
    le: 256,
  });
  if (put.sw !== 0x9000)
    throw new ScpUnavailableError(`PUT KEY of the OCE CA key refused: card answered ${formatSw(put.sw)}`);
  if (put.data.length !== 1 || put.data[0] !== kvn)
    throw new ScpMalformedError("PUT KEY: the card did not confirm the key version");
  const store = await protocol.transmit({
    cla: 0x00,
    ins: GP_INS.storeData,
    p1: 0x90,
    p2: 0x00,
    data: encodeTlv(
      0xa6,
      concatBytes(
        encodeTlv(0x80, Uint8Array.of(0x00)),
        encodeTlv(0x42, options.ski),
        encodeTlv(0x83, Uint8Array.of(kid, kvn)),
      ),
    ),
  });
  if (store.sw !== 0x9000)
    throw new ScpUnavailableError(
      `STORE DATA of the OCE CA identifier refused: card answered ${formatSw(store.sw)}`,
    );
}
