/**
 * Latency and size profiles of secure elements, and the cost model the benchmarks use (SPEC.md §9,
 * docs/PERFORMANCE.md). The virtual card answers in microseconds; a real card does not. Instead of
 * sleeping, the benchmarks count every APDU and byte that crosses the card interface and add up a
 * MODELED time per exchange:
 *
 *   time(exchange) = link.perApduMs + (command bytes + response bytes) × link.perByteMs
 *                  + processing(INS, outcome)
 *
 * where processing is what the card's own CPU spends: SELECT, PIN check (VERIFY 20), ECDSA
 * signature (GENERAL AUTHENTICATE 87 with a challenge, per curve), management-key steps (87 on 9B),
 * GET DATA (CB), PUT DATA (DB, per byte written), GET RESPONSE (C0). The model is pure and
 * deterministic: the same exchanges always give the same figure, so it can be unit-tested and
 * compared across plans. Nothing here waits.
 *
 * Each profile also names the emulator card model (`card`) that reproduces its size behaviour: the
 * host stack picks extended or short APDUs from the ATR and firmware version the card presents
 * (PivSession.open), so running the virtual card with `profile.card` makes the real host code send
 * the APDU sequence that card would get.
 *
 * The figures are assumptions, written down with their reasoning in `assumptions` and in
 * docs/PERFORMANCE.md, not measurements of hardware.
 */
import { decodeCommandApdu } from "../apdu/command.js";
import { PIV_INS } from "../apdu/instructions.js";
import { decodeTlv, decodeTlvs, findTlv } from "../apdu/tlv.js";
import { type CardProfile, YUBIKEY_5_PROFILE } from "./profiles.js";

export type ModeledCurve = "P-256" | "P-384";

export interface LinkModel {
  /** "extended": the card takes extended APDUs (whole ~3 KB objects in one exchange); "short": 255/256-byte pieces. */
  readonly apduFormat: "extended" | "short";
  /** Largest command APDU, and largest response APDU (data + SW), one exchange may carry. */
  readonly maxMessageBytes: number;
  /** Fixed cost of one command/response exchange (reader, USB, card OS dispatch). */
  readonly perApduMs: number;
  /** Cost of each byte on the link, command and response alike. */
  readonly perByteMs: number;
}

export interface ProcessingModel {
  /** SELECT (A4). */
  readonly selectMs: number;
  /** VERIFY (20) with a PIN, right or wrong: the card compares and updates its retry counter. */
  readonly pinVerifyMs: number;
  /** GENERAL AUTHENTICATE (87) with a challenge (tag 81): one ECDSA signature. */
  readonly signMs: Readonly<Record<ModeledCurve, number>>;
  /** GENERAL AUTHENTICATE (87) with a peer point (tag 85): one ECDH, costed like a signature. */
  readonly ecdhMs: Readonly<Record<ModeledCurve, number>>;
  /** One step of the management-key mutual authentication (87 on key 9B): a block cipher operation. */
  readonly managementAuthMs: number;
  /** GET DATA (CB): object lookup. */
  readonly getDataMs: number;
  /** PUT DATA (DB), once per command. */
  readonly putDataMs: number;
  /** PUT DATA (DB), per byte of command data written to non-volatile memory. */
  readonly putDataPerByteMs: number;
  /** GET RESPONSE (C0). */
  readonly getResponseMs: number;
  /** Anything else (GET VERSION, GET SERIAL, GET METADATA, an empty VERIFY, refused commands). */
  readonly otherMs: number;
  /**
   * SCP11 INTERNAL/MUTUAL AUTHENTICATE (80 88 / 80 82): an ephemeral P-256 key pair, two ECDH, the
   * X9.63 KDF and the receipt CMAC on the card.
   */
  readonly scpHandshakeMs: number;
  /** Per wrapped APDU (CLA x4): C-MAC check and decryption of the command, encryption and R-MAC of the answer. */
  readonly scpWrapMs: number;
}

export interface LatencyProfile {
  /** Short name used on the command line and in reports: `yubikey5`, `etoken`. */
  readonly name: string;
  readonly title: string;
  /** The virtual card model that reproduces this card's size behaviour (ATR, firmware, limits). */
  readonly card: CardProfile;
  readonly link: LinkModel;
  readonly processing: ProcessingModel;
  /** Where each figure comes from; repeated in docs/PERFORMANCE.md. */
  readonly assumptions: readonly string[];
}

// ---- profiles -----------------------------------------------------------------------------------

/** ISO/IEC 7816-3 §8.2.5: TCK makes T0 … TCK XOR to zero. */
function withTck(bytes: readonly number[]): Uint8Array {
  let x = 0;
  for (const b of bytes.slice(1)) x ^= b;
  return Uint8Array.from([...bytes, x]);
}

/**
 * A synthetic ATR for a short-APDU T=1 token: TA1 = 18 (Fi 372, Di 12: 115,200 bit/s at a
 * 3.5712 MHz clock), TC1 = FF (11 etu per character under T=1), TD1/TD2 = T=1 with IFSC 254
 * (TA3 = FE), TB3 = 45; historical bytes "BENCH". T0 = D5 has no TB1, so the host stack (which asks
 * for TA1–TD1 before it tries extended APDUs) stays with short APDUs, as it must for such a token.
 */
export const ETOKEN_BENCH_ATR = withTck([
  0x3b, 0xd5, 0x18, 0xff, 0x81, 0x31, 0xfe, 0x45, 0x42, 0x45, 0x4e, 0x43, 0x48,
]);

/**
 * The virtual card as an eToken-class token: the ETOKEN_BENCH_ATR (so the host keeps short APDUs)
 * and no extended Lc. The applet behind it is still the emulated PIV applet with its firmware 5.4.3
 * answers (GET VERSION, GET SERIAL, GET METADATA for the management key type), and the YubiKey object
 * limits are kept so that the same card layout is measured on both profiles.
 */
export const ETOKEN_CARD_PROFILE: CardProfile = {
  ...YUBIKEY_5_PROFILE,
  name: "eToken-class short-APDU token (benchmark model)",
  atr: { contact: ETOKEN_BENCH_ATR, contactless: ETOKEN_BENCH_ATR },
  maxExtendedLc: 0,
};

/**
 * YubiKey 5 over USB CCID, calibrated to the figures of SPEC.md §9: SELECT ≈ 1.3 ms, ≈ 1.5 ms per
 * 256-byte APDU, P-256 signature ≈ 72 ms, PIN ≈ 9 ms (each as the host sees it, link included).
 */
export const YUBIKEY5_LATENCY: LatencyProfile = {
  name: "yubikey5",
  title: "YubiKey 5 (USB, extended APDUs)",
  card: YUBIKEY_5_PROFILE,
  link: {
    apduFormat: "extended",
    // yubikit MaxApduSize.YK4_3 (3,062) for a command; a response carries an object (≤ 3,063) plus
    // its 53 header and SW.
    maxMessageBytes: 3072,
    perApduMs: 1.0,
    perByteMs: 0.5 / 256,
  },
  processing: {
    selectMs: 0.2,
    pinVerifyMs: 8.0,
    signMs: { "P-256": 71.0, "P-384": 139.0 },
    ecdhMs: { "P-256": 71.0, "P-384": 139.0 },
    managementAuthMs: 1.5,
    getDataMs: 0,
    putDataMs: 5.0,
    putDataPerByteMs: 0.004,
    getResponseMs: 0,
    otherMs: 0,
    scpHandshakeMs: 3 * 71.0 + 2.0,
    scpWrapMs: 0.3,
  },
  assumptions: [
    "Link: 1.0 ms per exchange plus 0.5 ms per 256 bytes (1.95 µs/byte), so a 256-byte response APDU " +
      "costs ≈ 1.5 ms and a SELECT (15 + 21 bytes, +0.2 ms processing) ≈ 1.27 ms (SPEC.md §9).",
    "ECDSA P-256 signature: 71 ms on the card + ≈ 1.2 ms link ≈ 72 ms (SPEC.md §9).",
    "ECDSA P-384 signature: 139 ms + link ≈ 140 ms. Assumed ≈ 2× P-256 (a 384-bit scalar " +
      "multiplication on the same crypto coprocessor); not measured on hardware.",
    "PIN VERIFY: 8 ms (compare + retry counter written to flash) + link ≈ 9 ms (SPEC.md §9).",
    "Management-key step (3DES/AES block operation): 1.5 ms. PUT DATA: 5 ms + 4 µs per byte written " +
      "to flash (≈ 10 ms for a 700-byte receipt). Assumptions, not measurements.",
    "Extended APDUs: up to 3,062-byte commands (yubikit YK4_3); objects ≤ 3,063 bytes, ≈ 50,225 in all.",
    "SCP11b handshake (80 88): 215 ms on the card = three P-256 scalar multiplications (ephemeral key " +
      "pair, ECDH with ePK.OCE twice: ShSee and ShSes) costed like the 71 ms signature, + 2 ms for the " +
      "X9.63 KDF and receipt CMAC. An assumption from the signature figure, not a measurement: Yubico " +
      "publishes no SCP11 timing. Each wrapped APDU: + 0.3 ms (AES-CBC and CMAC of command and answer).",
  ],
};

/**
 * An older short-APDU USB token (eToken-class): an ISO/IEC 7816-3 T=1 chip behind a USB CCID bridge.
 * Short APDUs only, at most 271 bytes per message, so every object above 256 bytes comes in
 * GET RESPONSE pieces and every command above 255 bytes is chained.
 */
export const ETOKEN_LATENCY: LatencyProfile = {
  name: "etoken",
  title: "eToken-class USB token (short APDUs, 115.2 kbit/s T=1)",
  card: ETOKEN_CARD_PROFILE,
  link: {
    apduFormat: "short",
    maxMessageBytes: 271,
    perApduMs: 4.0,
    // 11 etu per byte at 115,200 bit/s (TA1 = 18, TC1 = FF in ETOKEN_BENCH_ATR).
    perByteMs: 11 / 115.2,
    // = 0.0955 ms per byte, ≈ 10.5 kB/s
  },
  processing: {
    selectMs: 2.0,
    pinVerifyMs: 20.0,
    signMs: { "P-256": 180.0, "P-384": 420.0 },
    ecdhMs: { "P-256": 180.0, "P-384": 420.0 },
    managementAuthMs: 5.0,
    getDataMs: 1.0,
    putDataMs: 10.0,
    putDataPerByteMs: 0.05,
    getResponseMs: 0.5,
    otherMs: 1.0,
    scpHandshakeMs: 3 * 180.0 + 5.0,
    scpWrapMs: 2.0,
  },
  assumptions: [
    "Short APDUs only, ≤ 271 bytes per message: responses in 256-byte GET RESPONSE pieces, commands " +
      "chained in 255-byte blocks.",
    "Link: ISO/IEC 7816-3 T=1 at 115,200 bit/s (Fi 372 / Di 12 at 3.5712 MHz), 11 etu per byte → " +
      "95.5 µs/byte (≈ 10.5 kB/s); 4 ms per exchange for T=1 block framing, the USB CCID bridge and " +
      "the card OS.",
    "EEPROM-class chip: PIN VERIFY 20 ms; ECDSA P-256 180 ms, P-384 420 ms; PUT DATA 10 ms + 50 µs " +
      "per byte (EEPROM page writes); GET DATA 1 ms; management-key step 5 ms. Assumptions for an " +
      "older Java Card / PIV token generation, not measurements.",
    "Same object limits as the YubiKey (3,063 / 50,225 bytes) so that one card layout is measured. " +
      "The emulated applet still answers the Yubico GET VERSION, GET SERIAL and GET METADATA (3 short " +
      "APDUs); a card without them answers 6D00 and the host then probes the OTP applet (+2 APDUs) and " +
      "assumes a 3DES management key.",
    "SCP11 (were such a token to offer it): 3 × 180 ms + 5 ms handshake, 2 ms per wrapped APDU. " +
      "Hypothetical: eToken-class PIV tokens do not implement SCP11; the channel is reported as absent.",
  ],
};

export const LATENCY_PROFILES: Readonly<Record<string, LatencyProfile>> = {
  yubikey5: YUBIKEY5_LATENCY,
  etoken: ETOKEN_LATENCY,
};

// ---- the model ------------------------------------------------------------------------------------

export type ApduKind =
  | "select"
  | "verify-pin"
  | "verify-other"
  | "sign"
  | "ecdh"
  | "management-auth"
  | "get-data"
  | "put-data"
  | "get-response"
  | "scp-handshake"
  | "other";

export interface ApduCost {
  readonly ins: number;
  readonly kind: ApduKind;
  /** What the breakdown shows, e.g. `GENERAL AUTHENTICATE 87 (sign P-256)`. */
  readonly label: string;
  /** Command APDU bytes (host → card) and response APDU bytes, SW included (card → host). */
  readonly commandBytes: number;
  readonly responseBytes: number;
  readonly sw: number;
  readonly linkMs: number;
  readonly processingMs: number;
  readonly totalMs: number;
  /** The exchange does not fit the profile: a message above maxMessageBytes, or an extended APDU on a short-only link. */
  readonly outOfProfile: boolean;
  /** A block of a command chain that is not the last one (CLA 10). */
  readonly chainedBlock: boolean;
  /** For GET DATA / PUT DATA: the object id a tag list `5C 03 …` at the start of the data names. */
  readonly objectId?: number;
}

const KEY_MANAGEMENT = 0x9b;
const CLA_CHAINING = 0x10;
/** PIV algorithm identifiers (SP 800-78-4 Table 6-2). */
const ALGORITHM_CURVE: Readonly<Record<number, ModeledCurve>> = { 17: "P-256", 20: "P-384" };

function insName(ins: number): string {
  return ins.toString(16).toUpperCase().padStart(2, "0");
}

/** Names for the breakdown of commands the model charges as "other". */
const OTHER_LABELS: Readonly<Record<number, string>> = {
  71: "GENERATE ASYMMETRIC KEY PAIR 47",
  36: "CHANGE REFERENCE DATA 24",
  44: "RESET RETRY COUNTER 2C",
  247: "GET METADATA F7 (Yubico)",
  248: "GET SERIAL F8 (Yubico)",
  253: "GET VERSION FD (Yubico)",
  255: "SET MANAGEMENT KEY FF (Yubico)",
};

/** True when the card did the work: 9000, or 61xx (the answer is waiting for GET RESPONSE). */
function performed(sw: number): boolean {
  return sw === 0x9000 || sw >> 8 === 0x61;
}

interface Decoded {
  readonly cla: number;
  readonly p1: number;
  readonly p2: number;
  readonly data: Uint8Array;
  readonly extended: boolean;
}

function decode(command: Uint8Array): Decoded | undefined {
  try {
    return decodeCommandApdu(command);
  } catch {
    return undefined;
  }
}

/** GENERAL AUTHENTICATE on a key slot: challenge (81) → sign, peer point (85) → ECDH. */
function authenticateKind(data: Uint8Array): "sign" | "ecdh" | undefined {
  try {
    const items = decodeTlvs(decodeTlv(data, 0x7c).value);
    if (findTlv(items, 0x81) !== undefined) return "sign";
    if (findTlv(items, 0x85) !== undefined) return "ecdh";
  } catch {
    // Not a well-formed dynamic authentication template: the card refuses it cheaply.
  }
  return undefined;
}

/** The object id of a GET/PUT DATA tag list `5C 03 xx xx xx` at the start of the data. */
function objectIdOf(data: Uint8Array): number | undefined {
  if (data.length >= 5 && data[0] === 0x5c && data[1] === 0x03) {
    return (data[2]! << 16) | (data[3]! << 8) | data[4]!;
  }
  return undefined;
}

/**
 * The modeled cost of one exchange. Pure: depends only on the profile and the bytes. Processing is
 * charged on the last block of a chain (CLA 10 blocks only carry data), and only when the card did
 * the work (a refused signature costs a cheap "other").
 */
export function modelApdu(
  profile: LatencyProfile,
  command: Uint8Array,
  response: Uint8Array,
  /**
   * For a command wrapped by SCP11: the command as the card unwrapped it (plain header and data),
   * when the meter can know it (the virtual card says, metered-card.ts). Processing is then charged
   * by what the command asks (an empty VERIFY is not a PIN check); the link by the wire bytes.
   */
  unwrapped?: Uint8Array,
): ApduCost {
  const { link, processing: p } = profile;
  const ins = command[1] ?? 0;
  const sw =
    response.length >= 2 ? (response[response.length - 2]! << 8) | response[response.length - 1]! : 0;
  const wire = decode(command);
  const chainedBlock = wire !== undefined && (wire.cla & CLA_CHAINING) !== 0;
  const ok = performed(sw);
  let kind: ApduKind = "other";
  let label = OTHER_LABELS[ins] ?? `INS ${insName(ins)}`;
  let processingMs = p.otherMs;
  let objectId: number | undefined;

  const wrapped = wire !== undefined && (wire.cla & 0x04) !== 0 && (wire.cla & 0x80) === 0;
  const plain = wrapped && unwrapped !== undefined && !chainedBlock ? decode(unwrapped) : undefined;
  /** What the card processes: the unwrapped command when known, else the wire command. */
  const decoded = plain ?? wire;
  const gp = decoded !== undefined && (decoded.cla & 0x80) !== 0;
  if (gp && (ins === 0x88 || ins === 0x82)) {
    kind = "scp-handshake";
    label = ins === 0x88 ? "INTERNAL AUTHENTICATE 88 (SCP11b)" : "MUTUAL AUTHENTICATE 82 (SCP11a)";
    processingMs = ok ? p.scpHandshakeMs : p.otherMs;
  } else if (gp && ins === 0x2a) {
    label = "PERFORM SECURITY OPERATION 2A (SCP11a OCE certificate)";
  } else if (ins === 0xca) {
    label = "GET DATA CA (SD certificate store)";
  } else {
    switch (ins) {
      case PIV_INS.select:
        kind = "select";
        label = "SELECT A4";
        processingMs = p.selectMs;
        break;
      case PIV_INS.verify:
        if (decoded && decoded.data.length > 0 && decoded.p1 === 0x00) {
          kind = "verify-pin";
          label = "VERIFY 20 (PIN)";
          processingMs = p.pinVerifyMs;
        } else {
          kind = "verify-other";
          label = "VERIFY 20 (status / logout)";
        }
        break;
      case PIV_INS.generalAuthenticate: {
        if (decoded?.p2 === KEY_MANAGEMENT) {
          kind = "management-auth";
          label = "GENERAL AUTHENTICATE 87 (management key)";
          processingMs = ok ? p.managementAuthMs : p.otherMs;
          break;
        }
        const curve = decoded ? ALGORITHM_CURVE[decoded.p1] : undefined;
        // Wrapped and not unwrapped for us, the template cannot be read: in these flows it is the 9E
        // challenge (a signature).
        const what =
          decoded && !chainedBlock
            ? wrapped && !plain
              ? "sign"
              : authenticateKind(decoded.data)
            : undefined;
        if (curve && what) {
          kind = what;
          label = `GENERAL AUTHENTICATE 87 (${what} ${curve})`;
          processingMs = ok ? (what === "sign" ? p.signMs[curve] : p.ecdhMs[curve]) : p.otherMs;
        } else {
          label = "GENERAL AUTHENTICATE 87";
        }
        break;
      }
      case PIV_INS.getData:
        kind = "get-data";
        label = "GET DATA CB";
        processingMs = p.getDataMs;
        objectId = decoded ? objectIdOf(decoded.data) : undefined;
        break;
      case PIV_INS.putData: {
        kind = "put-data";
        label = "PUT DATA DB";
        // The wire's data length (a wrapped block carries padding and MAC too): as before the hint,
        // and never counted twice for a chain (the card unwraps only at its last block).
        const written = wire?.data.length ?? 0;
        // Every block is written to memory; the command's fixed cost comes with its last block.
        processingMs = (chainedBlock ? 0 : ok ? p.putDataMs : p.otherMs) + written * p.putDataPerByteMs;
        objectId = decoded ? objectIdOf(decoded.data) : undefined;
        break;
      }
      case PIV_INS.getResponse:
        kind = "get-response";
        label = "GET RESPONSE C0";
        processingMs = p.getResponseMs;
        break;
      default:
        break;
    }
  }
  if (chainedBlock && kind !== "put-data") processingMs = 0;
  if (wrapped && !chainedBlock) processingMs += p.scpWrapMs;

  const linkMs = link.perApduMs + (command.length + response.length) * link.perByteMs;
  const outOfProfile =
    command.length > link.maxMessageBytes ||
    response.length > link.maxMessageBytes ||
    (link.apduFormat === "short" && wire?.extended === true);
  return {
    ins,
    kind,
    label,
    commandBytes: command.length,
    responseBytes: response.length,
    sw,
    linkMs,
    processingMs,
    totalMs: linkMs + processingMs,
    outOfProfile,
    chainedBlock,
    ...(objectId === undefined ? {} : { objectId }),
  };
}

/** Totals over a sequence of exchanges. */
export interface MeterTotals {
  readonly apdus: number;
  /** Host → card: command APDU bytes. */
  readonly bytesOut: number;
  /** Card → host: response APDU bytes, SW included. */
  readonly bytesIn: number;
  readonly modeledMs: number;
  readonly linkMs: number;
  readonly processingMs: number;
  /** Exchanges that do not fit the profile (should be 0). */
  readonly outOfProfile: number;
  /** Measured wall time spent inside the emulated card (to subtract from host-side measurements). */
  readonly emulatorMs: number;
  /**
   * Measured CPU (process.cpuUsage) spent inside the emulated card, where the wrapper measures it
   * (MeteredCard): the figure to subtract from host CPU, which wall time is not on a loaded machine.
   */
  readonly emulatorCpuMs: number;
}

export interface MeterLine {
  readonly label: string;
  readonly apdus: number;
  readonly bytesOut: number;
  readonly bytesIn: number;
  readonly modeledMs: number;
}

/**
 * Accumulates the cost of every exchange it is shown (see metered-card.ts for the wrappers that feed
 * it). `breakdown()` groups by command; `objects()` gives the bytes moved per data object.
 */
export class ApduMeter {
  readonly #lines = new Map<
    string,
    { apdus: number; bytesOut: number; bytesIn: number; modeledMs: number }
  >();
  readonly #objects = new Map<number, { reads: number; writes: number; bytesIn: number; bytesOut: number }>();
  #totals = ApduMeter.#zero();
  /** Object of a GET DATA whose answer continues with GET RESPONSE. */
  #pendingRead: number | undefined;
  /** Object of a PUT DATA chain in progress. */
  #chainObject: number | undefined;
  /** Every exchange's cost, in order, when constructed with `keepTrace`. */
  readonly trace: ApduCost[] = [];

  constructor(
    readonly profile: LatencyProfile,
    private readonly options: { readonly keepTrace?: boolean } = {},
  ) {}

  static #zero(): { -readonly [K in keyof MeterTotals]: MeterTotals[K] } {
    return {
      apdus: 0,
      bytesOut: 0,
      bytesIn: 0,
      modeledMs: 0,
      linkMs: 0,
      processingMs: 0,
      outOfProfile: 0,
      emulatorMs: 0,
      emulatorCpuMs: 0,
    };
  }

  /**
   * Records one exchange; `emulatorMs` is the wall time the emulated card took to answer it;
   * `unwrapped` the plain command inside an SCP11-wrapped one, when known (see modelApdu);
   * `emulatorCpuMs` the CPU the emulated card used for it.
   */
  record(
    command: Uint8Array,
    response: Uint8Array,
    emulatorMs = 0,
    unwrapped?: Uint8Array,
    emulatorCpuMs = 0,
  ): ApduCost {
    const cost = modelApdu(this.profile, command, response, unwrapped);
    const t = this.#totals;
    t.apdus++;
    t.bytesOut += cost.commandBytes;
    t.bytesIn += cost.responseBytes;
    t.modeledMs += cost.totalMs;
    t.linkMs += cost.linkMs;
    t.processingMs += cost.processingMs;
    if (cost.outOfProfile) t.outOfProfile++;
    t.emulatorMs += emulatorMs;
    t.emulatorCpuMs += emulatorCpuMs;
    const line = this.#lines.get(cost.label) ?? { apdus: 0, bytesOut: 0, bytesIn: 0, modeledMs: 0 };
    line.apdus++;
    line.bytesOut += cost.commandBytes;
    line.bytesIn += cost.responseBytes;
    line.modeledMs += cost.totalMs;
    this.#lines.set(cost.label, line);
    this.#attributeObject(cost);
    if (this.options.keepTrace) this.trace.push(cost);
    return cost;
  }

  /**
   * Bytes per data object: GET RESPONSE pieces count towards the GET DATA that announced them (61xx),
   * the later blocks of a chained PUT DATA towards the object its first block named.
   */
  #attributeObject(cost: ApduCost): void {
    let target: number | undefined;
    if (cost.kind === "put-data") {
      target = this.#chainObject ?? cost.objectId;
      this.#chainObject = cost.chainedBlock ? target : undefined;
    } else {
      this.#chainObject = undefined;
      if (cost.kind === "get-data") target = cost.objectId;
      else if (cost.kind === "get-response") target = this.#pendingRead;
    }
    const more = cost.sw >> 8 === 0x61;
    this.#pendingRead =
      more && (cost.kind === "get-data" || cost.kind === "get-response") ? target : undefined;
    if (target === undefined) return;
    const o = this.#objects.get(target) ?? { reads: 0, writes: 0, bytesIn: 0, bytesOut: 0 };
    if (cost.kind === "get-data") o.reads++;
    if (cost.kind === "put-data" && !cost.chainedBlock) o.writes++;
    o.bytesIn += cost.responseBytes;
    o.bytesOut += cost.commandBytes;
    this.#objects.set(target, o);
  }

  get totals(): MeterTotals {
    return { ...this.#totals };
  }

  /** Per command label, most expensive first. */
  breakdown(): MeterLine[] {
    return [...this.#lines.entries()]
      .map(([label, l]) => ({ label, ...l }))
      .sort((a, b) => b.modeledMs - a.modeledMs || a.label.localeCompare(b.label));
  }

  /** Bytes moved per data object, by object id. */
  objects(): ReadonlyMap<number, { reads: number; writes: number; bytesIn: number; bytesOut: number }> {
    return new Map([...this.#objects.entries()].map(([id, o]) => [id, { ...o }]));
  }

  reset(): void {
    this.#totals = ApduMeter.#zero();
    this.#lines.clear();
    this.#objects.clear();
    this.#pendingRead = undefined;
    this.#chainObject = undefined;
    this.trace.length = 0;
  }
}

/** Modeled cost of a fixed sequence of exchanges (command, response), e.g. a recorded trace. */
export function modelSequence(
  profile: LatencyProfile,
  exchanges: Iterable<readonly [command: Uint8Array, response: Uint8Array]>,
): MeterTotals {
  const meter = new ApduMeter(profile);
  for (const [command, response] of exchanges) meter.record(command, response);
  return meter.totals;
}
