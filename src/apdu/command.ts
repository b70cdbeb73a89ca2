/**
 * ISO/IEC 7816-4 §5.1 command APDUs: encoding in short or extended form, and the strict decoding a
 * card (the virtual PIV card) needs to tell the four cases apart.
 *
 * Le is carried as Ne, the number of response bytes expected: 1..256 in short form (256 is encoded
 * as `00`), 1..65536 in extended form (65536 is `00 00`). `le: undefined` means "no Le field".
 */
import { ApduLengthError } from "../errors.js";

export { ApduLengthError } from "../errors.js";

export interface CommandApdu {
  readonly cla: number;
  readonly ins: number;
  readonly p1: number;
  readonly p2: number;
  /** Command data field (Lc is its length); empty or absent for cases 1 and 2. */
  readonly data?: Uint8Array;
  /** Ne: maximum number of response data bytes expected; absent = no Le field. */
  readonly le?: number;
}

export type ApduFormat = "short" | "extended";

/** A command APDU as a card sees it after decoding. */
export interface DecodedCommandApdu {
  readonly cla: number;
  readonly ins: number;
  readonly p1: number;
  readonly p2: number;
  readonly data: Uint8Array;
  readonly le: number | undefined;
  /** True when Lc/Le used the extended (3-byte / 2-byte) form. */
  readonly extended: boolean;
}

export const SHORT_MAX_DATA = 255;
export const SHORT_MAX_LE = 256;
export const EXTENDED_MAX_DATA = 65535;
export const EXTENDED_MAX_LE = 65536;

/** CLA bit b5: "command is not the last of a chain" (ISO/IEC 7816-4 §5.1.1.1). */
export const CLA_CHAINING = 0x10;

function checkByte(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xff)
    throw new RangeError(`APDU ${name} must be a byte, got ${v}`);
}

/** Encodes a command APDU; throws ApduLengthError when data or Le do not fit the chosen format. */
export function encodeCommandApdu(cmd: CommandApdu, format: ApduFormat = "short"): Uint8Array {
  checkByte("CLA", cmd.cla);
  checkByte("INS", cmd.ins);
  checkByte("P1", cmd.p1);
  checkByte("P2", cmd.p2);
  const data = cmd.data ?? new Uint8Array(0);
  const le = cmd.le;
  const header = [cmd.cla, cmd.ins, cmd.p1, cmd.p2];

  if (format === "short") {
    if (data.length > SHORT_MAX_DATA) {
      throw new ApduLengthError(`short APDU data is ${data.length} bytes (max ${SHORT_MAX_DATA})`);
    }
    if (le !== undefined && (!Number.isInteger(le) || le < 1 || le > SHORT_MAX_LE)) {
      throw new ApduLengthError(`short APDU Le must be 1..${SHORT_MAX_LE}, got ${le}`);
    }
    const out = new Uint8Array(4 + (data.length > 0 ? 1 + data.length : 0) + (le !== undefined ? 1 : 0));
    out.set(header, 0);
    let o = 4;
    if (data.length > 0) {
      out[o++] = data.length;
      out.set(data, o);
      o += data.length;
    }
    if (le !== undefined) out[o] = le & 0xff; // 256 → 00
    return out;
  }

  if (data.length > EXTENDED_MAX_DATA) {
    throw new ApduLengthError(`extended APDU data is ${data.length} bytes (max ${EXTENDED_MAX_DATA})`);
  }
  if (le !== undefined && (!Number.isInteger(le) || le < 1 || le > EXTENDED_MAX_LE)) {
    throw new ApduLengthError(`extended APDU Le must be 1..${EXTENDED_MAX_LE}, got ${le}`);
  }
  const hasData = data.length > 0;
  const hasLe = le !== undefined;
  // Case 1 has no body at all; otherwise one 00 byte introduces the extended lengths.
  const len = 4 + (hasData || hasLe ? 1 : 0) + (hasData ? 2 + data.length : 0) + (hasLe ? 2 : 0);
  const out = new Uint8Array(len);
  out.set(header, 0);
  let o = 4;
  if (hasData || hasLe) out[o++] = 0;
  if (hasData) {
    out[o++] = data.length >> 8;
    out[o++] = data.length & 0xff;
    out.set(data, o);
    o += data.length;
  }
  if (hasLe) {
    const v = le & 0xffff; // 65536 → 00 00
    out[o++] = v >> 8;
    out[o] = v & 0xff;
  }
  return out;
}

/**
 * Decodes a command APDU (ISO/IEC 7816-3 §12.1.3 case analysis). Anything that fits none of the
 * cases 1, 2S, 3S, 4S, 2E, 3E, 4E is an ApduLengthError (a card answers 6700).
 */
export function decodeCommandApdu(bytes: Uint8Array): DecodedCommandApdu {
  if (bytes.length < 4) throw new ApduLengthError(`command APDU of ${bytes.length} bytes (min 4)`);
  const cla = bytes[0]!;
  const ins = bytes[1]!;
  const p1 = bytes[2]!;
  const p2 = bytes[3]!;
  const body = bytes.subarray(4);
  const n = body.length;
  const make = (data: Uint8Array, le: number | undefined, extended: boolean): DecodedCommandApdu => ({
    cla,
    ins,
    p1,
    p2,
    data: data.slice(),
    le,
    extended,
  });
  if (n === 0) return make(new Uint8Array(0), undefined, false); // case 1
  const b0 = body[0]!;
  if (n === 1) return make(new Uint8Array(0), b0 === 0 ? 256 : b0, false); // case 2S
  if (b0 !== 0) {
    if (n === 1 + b0) return make(body.subarray(1), undefined, false); // case 3S
    if (n === 2 + b0) {
      const le = body[n - 1]!;
      return make(body.subarray(1, 1 + b0), le === 0 ? 256 : le, false); // case 4S
    }
    throw new ApduLengthError(`short Lc ${b0} does not match ${n - 1} body bytes`);
  }
  // b0 = 00 and n ≥ 2: extended form.
  if (n === 3) {
    const le = (body[1]! << 8) | body[2]!;
    return make(new Uint8Array(0), le === 0 ? 65536 : le, true); // case 2E
  }
  if (n < 3) throw new ApduLengthError(`truncated extended length (${n} body bytes)`);
  const lc = (body[1]! << 8) | body[2]!;
  if (lc === 0) throw new ApduLengthError("extended Lc of zero");
  if (n === 3 + lc) return make(body.subarray(3), undefined, true); // case 3E
  if (n === 5 + lc) {
    const le = (body[3 + lc]! << 8) | body[4 + lc]!;
    return make(body.subarray(3, 3 + lc), le === 0 ? 65536 : le, true); // case 4E
  }
  throw new ApduLengthError(`extended Lc ${lc} does not match ${n - 3} body bytes`);
}

/** True when the command's CLA says more blocks of a chain follow. */
export function isChained(cla: number): boolean {
  return (cla & CLA_CHAINING) !== 0;
}
