/**
 * SCP11 secure messaging (GP Card Specification 2.3 Amendment F §6.2, with SCP03's C-MAC,
 * C-DECRYPTION, R-MAC and R-ENCRYPTION), both sides, pure:
 *
 * - command: CLA |= 04; data padded `80 00…` to whole blocks (always: an empty command carries one
 *   block), AES-CBC under S-ENC with IV = AES-ECB(S-ENC, counter as 16 bytes), counter += 1;
 *   C-MAC = AES-CMAC(S-MAC, chain ‖ CLA INS P1 P2 Lc′ ‖ encrypted data), Lc′ counting the 8 MAC
 *   bytes, in short form (1 byte) unless the wrapped data exceeds 255 bytes or the card received an
 *   extended APDU (`00 hi lo`); the full CMAC is the next chain value, its first 8 bytes are sent.
 *   Le is never MACed, and the host sends none (the card answers up to 256 bytes, then 61xx).
 * - response (9000, 62xx, 63xx): R-MAC = AES-CMAC(S-RMAC, chain ‖ encrypted data ‖ SW)[0..8],
 *   the chain unchanged; data encrypted with IV = AES-ECB(S-ENC, 80 ‖ (counter − 1) as 15 bytes).
 *   Other status words come back bare.
 *
 * The host is strict where a card may be lax: every 9000/62xx/63xx answer must carry an R-MAC
 * (this project's virtual card always sends one), and a bare error status carries no data.
 * Any failure poisons the channel: later calls throw ScpIntegrityError without computing anything.
 */
import type { CommandApdu } from "../command.js";
import type { ResponseApdu } from "../response.js";
import { concatBytes } from "../tlv.js";
import { aesCbc, aesCmac, aesEcbEncrypt, macEqual } from "./cmac.js";
import { ScpIntegrityError } from "./errors.js";
import type { Scp11Session, ScpSessionKeys } from "./handshake.js";

export const SCP_MAC_BYTES = 8;
const BLOCK = 16;
/** CLA bit b3: secure messaging, GP proprietary (the "04" of 84). */
export const CLA_SECURE_MESSAGING = 0x04;
/** Wrapped command data cannot exceed the largest extended Lc. */
const MAX_WRAPPED_DATA = 65535;

export function padIso9797m2(data: Uint8Array): Uint8Array {
  const out = new Uint8Array((Math.floor(data.length / BLOCK) + 1) * BLOCK);
  out.set(data, 0);
  out[data.length] = 0x80;
  return out;
}

/** Strips `80 00…` padding confined to the last block; undefined when the padding is wrong. */
export function unpadIso9797m2(data: Uint8Array): Uint8Array | undefined {
  if (data.length === 0 || data.length % BLOCK !== 0) return undefined;
  let i = data.length - 1;
  const floor = data.length - BLOCK;
  while (i >= floor && data[i] === 0x00) i--;
  if (i < floor || data[i] !== 0x80) return undefined;
  return data.slice(0, i);
}

function counterBlock(counter: number, response: boolean): Uint8Array {
  const b = new Uint8Array(BLOCK);
  const view = new DataView(b.buffer);
  // Counters beyond 2^53 cannot happen in a session (a card would need that many commands).
  view.setUint32(8, Math.floor(counter / 2 ** 32));
  view.setUint32(12, counter >>> 0);
  if (response) b[0] = 0x80;
  return b;
}

function isProtectedStatus(sw: number): boolean {
  return sw === 0x9000 || sw >> 8 === 0x62 || sw >> 8 === 0x63;
}

function lcField(length: number, extended: boolean): Uint8Array {
  return extended || length > 255 ? Uint8Array.of(0, length >> 8, length & 0xff) : Uint8Array.of(length);
}

/** State shared by both ends: keys, MAC chaining value, encryption counter, poisoned flag. */
abstract class ScpChannelState {
  protected readonly keys: ScpSessionKeys;
  protected chain: Uint8Array;
  protected counter = 1;
  private failure: string | undefined;

  constructor(session: Scp11Session) {
    this.keys = session.keys;
    this.chain = session.receipt.slice();
  }

  /** True once a check failed or the session was ended. */
  get closed(): boolean {
    return this.failure !== undefined;
  }

  /** Ends the session for good (SELECT, reset, failure); later use throws. */
  close(reason: string): void {
    this.failure ??= reason;
  }

  protected ensureOpen(): void {
    if (this.failure) throw new ScpIntegrityError(`secure channel closed: ${this.failure}`);
  }

  protected fail(reason: string): never {
    this.close(reason);
    throw new ScpIntegrityError(`secure channel: ${reason}`);
  }

  protected commandIv(): Uint8Array {
    return aesEcbEncrypt(this.keys.sEnc, counterBlock(this.counter, false));
  }

  protected responseIv(): Uint8Array {
    return aesEcbEncrypt(this.keys.sEnc, counterBlock(this.counter - 1, true));
  }

  protected cmacInput(
    cla: number,
    ins: number,
    p1: number,
    p2: number,
    encrypted: Uint8Array,
    extended: boolean,
  ) {
    const lc = encrypted.length + SCP_MAC_BYTES;
    return concatBytes(this.chain, Uint8Array.of(cla, ins, p1, p2), lcField(lc, extended), encrypted);
  }

  protected rmac(encrypted: Uint8Array, sw: number): Uint8Array {
    return aesCmac(
      this.keys.sRmac,
      concatBytes(this.chain, encrypted, Uint8Array.of(sw >> 8, sw & 0xff)),
    ).slice(0, SCP_MAC_BYTES);
  }
}

/** The host (OCE) end: wraps commands, unwraps and checks responses. */
export class ScpHostChannel extends ScpChannelState {
  /**
   * Wraps one command (before command chaining). The result has CLA | 04, the encrypted data and
   * the C-MAC, and no Le — unless `extendedLe` is given: then it asks for that many bytes and will
   * travel as an extended APDU, so Lc′ is MACed in extended form (what the card then sees).
   */
  wrap(command: CommandApdu, extendedLe?: number): CommandApdu {
    this.ensureOpen();
    // The whole command is wrapped, on the basic channel; command chaining happens below.
    if ((command.cla & 0x13) !== 0)
      throw new RangeError("wrap the whole command, before chaining, on channel 0");
    const cla = command.cla | CLA_SECURE_MESSAGING;
    const encrypted = aesCbc(
      this.keys.sEnc,
      this.commandIv(),
      padIso9797m2(command.data ?? new Uint8Array(0)),
    );
    this.counter++;
    if (encrypted.length + SCP_MAC_BYTES > MAX_WRAPPED_DATA) this.fail("command too long to wrap");
    const extended = extendedLe !== undefined;
    const mac = aesCmac(
      this.keys.sMac,
      this.cmacInput(cla, command.ins, command.p1, command.p2, encrypted, extended),
    );
    this.chain = mac;
    return {
      cla,
      ins: command.ins,
      p1: command.p1,
      p2: command.p2,
      data: concatBytes(encrypted, mac.subarray(0, SCP_MAC_BYTES)),
      ...(extended ? { le: extendedLe } : {}),
    };
  }

  /** Checks the R-MAC and decrypts; any failure closes the channel (ScpIntegrityError). */
  unwrap(response: ResponseApdu): ResponseApdu {
    this.ensureOpen();
    const { data, sw } = response;
    if (!isProtectedStatus(sw)) {
      if (data.length !== 0) this.fail(`card answered ${sw.toString(16)} with unprotected data`);
      return response;
    }
    if (data.length < SCP_MAC_BYTES) this.fail("card answer without R-MAC");
    const encrypted = data.subarray(0, data.length - SCP_MAC_BYTES);
    const mac = data.subarray(data.length - SCP_MAC_BYTES);
    if (!macEqual(this.rmac(encrypted, sw), mac)) this.fail("R-MAC of the card's answer does not verify");
    if (encrypted.length === 0) return { data: new Uint8Array(0), sw };
    if (encrypted.length % BLOCK !== 0) this.fail("encrypted answer is not whole blocks");
    const plain = unpadIso9797m2(aesCbc(this.keys.sEnc, this.responseIv(), encrypted, true));
    if (!plain) this.fail("padding of the card's answer is wrong");
    return { data: plain, sw };
  }
}

/** A wrapped command as the card sees it after command-chaining reassembly. */
export interface WrappedCommand {
  readonly cla: number;
  readonly ins: number;
  readonly p1: number;
  readonly p2: number;
  readonly data: Uint8Array;
  /** True when the card received it as one extended APDU (Lc′ then counts in extended form). */
  readonly extended: boolean;
}

/** The card (SD) end: checks and decrypts commands, encrypts and MACs responses. */
export class ScpCardChannel extends ScpChannelState {
  /** The plaintext data of a wrapped command; any failure closes the channel (ScpIntegrityError). */
  unwrapCommand(command: WrappedCommand): Uint8Array {
    this.ensureOpen();
    if ((command.cla & CLA_SECURE_MESSAGING) === 0) this.fail("command without secure messaging");
    const n = command.data.length;
    if (n < BLOCK + SCP_MAC_BYTES || (n - SCP_MAC_BYTES) % BLOCK !== 0)
      this.fail("wrapped command of a wrong length");
    const encrypted = command.data.subarray(0, n - SCP_MAC_BYTES);
    const mac = command.data.subarray(n - SCP_MAC_BYTES);
    const cla = command.cla & ~0x10; // the chaining bit is not part of the MACed header
    const full = aesCmac(
      this.keys.sMac,
      this.cmacInput(cla, command.ins, command.p1, command.p2, encrypted, command.extended),
    );
    if (!macEqual(full.subarray(0, SCP_MAC_BYTES), mac)) this.fail("C-MAC does not verify");
    this.chain = full;
    const plain = unpadIso9797m2(aesCbc(this.keys.sEnc, this.commandIv(), encrypted, true));
    this.counter++;
    if (!plain) this.fail("padding of the command is wrong");
    return plain;
  }

  /**
   * The data field to send with `sw`: encrypted data ‖ R-MAC for 9000/62xx/63xx, else nothing.
   * `pad` is ISO 9797-1 method 2; only a hostile test card passes another one.
   */
  wrapResponse(
    data: Uint8Array,
    sw: number,
    pad: (data: Uint8Array) => Uint8Array = padIso9797m2,
  ): Uint8Array {
    this.ensureOpen();
    if (!isProtectedStatus(sw)) return new Uint8Array(0);
    const encrypted =
      data.length === 0 ? new Uint8Array(0) : aesCbc(this.keys.sEnc, this.responseIv(), pad(data));
    return concatBytes(encrypted, this.rmac(encrypted, sw));
  }
}
