/**
 * The APDU processor stack, after yubikit's `SmartCardProtocol`: small processors, each wrapping
 * the next one down to the transport:
 *
 *   sendApdu ─▶ [processors added with `use`, e.g. secure messaging (SPEC §10)]
 *            ─▶ response chaining (GET RESPONSE while SW1 = 61; bounded)
 *            ─▶ command chaining (CLA | 10, 255-byte blocks or extended APDUs)
 *            ─▶ encoding (short or extended) ─▶ CardTransport
 *
 * `SmartCardProtocol.sendApdu` is the one place where a status word other than 9000 becomes a
 * typed error (via `statusError`, status-words.ts). A secure-messaging processor added with `use`
 * sits above both chaining processors, as SP 800-73-4 Part 2 §4 wants: protected commands are
 * chained and protected responses are fetched with plain GET RESPONSE.
 */
import { ResponseChainingError } from "../errors.js";
import type { CardTransport } from "../transport/card-transport.js";
import {
  type ApduFormat,
  CLA_CHAINING,
  type CommandApdu,
  EXTENDED_MAX_LE,
  encodeCommandApdu,
  SHORT_MAX_DATA,
  SHORT_MAX_LE,
} from "./command.js";
import { decodeResponseApdu, formatSw, type ResponseApdu, sw1, sw2 } from "./response.js";
import { SW, statusError } from "./status-words.js";
import { concatBytes } from "./tlv.js";
import { type ApduTraceSink, TracingTransport } from "./trace.js";

export { ResponseChainingError } from "../errors.js";

export interface ApduProcessor {
  process(command: CommandApdu): Promise<ResponseApdu>;
}

/** Builds a processor on top of `next` (see `SmartCardProtocol.use`). */
export type ApduProcessorLayer = (next: ApduProcessor) => ApduProcessor;

/** Largest extended APDU a YubiKey 5 (firmware ≥ 4.3) takes, as yubikit's MaxApduSize.YK4_3. */
export const YUBIKEY_MAX_APDU_SIZE = 3062;
/** Default bound on the bytes one response may reassemble to (PIV objects are ≤ ~3 KB). */
export const DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024;
/** Default bound on GET RESPONSE / Le-retry round trips for one command. */
export const DEFAULT_MAX_RESPONSE_CHUNKS = 160;

export interface ProtocolFormat {
  format: ApduFormat;
  /** Largest encoded extended APDU the card takes (used when `format` is extended). */
  maxApduSize: number;
}

/** Encodes commands (short when they fit, else extended when allowed) and decodes responses. */
export class EncodingProcessor implements ApduProcessor {
  constructor(
    private readonly transport: CardTransport,
    private readonly config: () => ProtocolFormat,
  ) {}

  async process(command: CommandApdu): Promise<ResponseApdu> {
    const { format } = this.config();
    const data = command.data ?? new Uint8Array(0);
    const le = command.le;
    let bytes: Uint8Array;
    if (format === "short" || (data.length <= SHORT_MAX_DATA && (le === undefined || le <= SHORT_MAX_LE))) {
      // In short form, Ne above 256 means "as much as the format allows"; the rest comes via 61xx.
      bytes = encodeCommandApdu(
        { ...command, le: le === undefined ? undefined : Math.min(le, SHORT_MAX_LE) },
        "short",
      );
    } else {
      bytes = encodeCommandApdu(command, "extended");
    }
    return decodeResponseApdu(await this.transport.transmit(bytes));
  }
}

/**
 * ISO/IEC 7816-4 §5.1.1.1 command chaining: a command whose data does not fit one APDU is sent in
 * blocks with CLA | 10 on all but the last block. Blocks are 255 bytes in short form (as ypt and
 * yubikit); in extended form a command that fits `maxApduSize` goes in one APDU, a larger one in
 * blocks of that size. A block answered with anything but 9000 ends the chain with that answer.
 */
export class CommandChainingProcessor implements ApduProcessor {
  constructor(
    private readonly next: ApduProcessor,
    private readonly config: () => ProtocolFormat,
  ) {}

  async process(command: CommandApdu): Promise<ResponseApdu> {
    const data = command.data ?? new Uint8Array(0);
    const { format, maxApduSize } = this.config();
    // Extended overhead: 4 header + 3 Lc + 2 Le.
    const block = format === "extended" ? Math.max(SHORT_MAX_DATA, maxApduSize - 9) : SHORT_MAX_DATA;
    if (data.length <= block) return this.next.process(command);
    let offset = 0;
    while (data.length - offset > block) {
      const r = await this.next.process({
        cla: command.cla | CLA_CHAINING,
        ins: command.ins,
        p1: command.p1,
        p2: command.p2,
        data: data.subarray(offset, offset + block),
      });
      if (r.sw !== SW.ok) return r;
      offset += block;
    }
    return this.next.process({ ...command, data: data.subarray(offset) });
  }
}

export interface ResponseChainingLimits {
  /** Most bytes one reassembled response may have. */
  maxResponseBytes: number;
  /** Most extra round trips (GET RESPONSE, Le retry) for one command. */
  maxResponseChunks: number;
}

/**
 * Response chaining: while SW1 = 61, GET RESPONSE (`00 C0 00 00 xx`) fetches the next piece; a 6Cxx
 * (wrong Le) is retried once with the Le the card named; a second 6Cxx is a `ResponseChainingError`. Bounded in round trips and in bytes, so a
 * card answering 61xx forever yields a `ResponseChainingError` after a fixed number of APDUs.
 */
export class ResponseChainingProcessor implements ApduProcessor {
  constructor(
    private readonly next: ApduProcessor,
    private readonly limits: () => ResponseChainingLimits,
  ) {}

  async process(command: CommandApdu): Promise<ResponseApdu> {
    const { maxResponseBytes, maxResponseChunks } = this.limits();
    let r = await this.next.process(command);
    let rounds = 0;
    if (sw1(r.sw) === SW.wrongLeSw1) {
      rounds++;
      r = await this.next.process({ ...command, le: sw2(r.sw) === 0 ? SHORT_MAX_LE : sw2(r.sw) });
      // The protocol allows one correction; a card that names a wrong Le again is broken or hostile.
      if (sw1(r.sw) === SW.wrongLeSw1) {
        throw new ResponseChainingError(`card answered wrong Le (${formatSw(r.sw)}) to the corrected Le`);
      }
    }
    const parts: Uint8Array[] = [r.data];
    let total = r.data.length;
    const check = () => {
      if (total > maxResponseBytes) {
        throw new ResponseChainingError(`card response exceeds ${maxResponseBytes} bytes`);
      }
    };
    check();
    while (sw1(r.sw) === SW.moreDataSw1) {
      if (++rounds > maxResponseChunks) {
        throw new ResponseChainingError(
          `card still announces more data after ${maxResponseChunks} GET RESPONSE`,
        );
      }
      r = await this.next.process({
        cla: command.cla & 0x03, // keep the logical channel; never chained, never SM
        ins: 0xc0,
        p1: 0,
        p2: 0,
        le: sw2(r.sw) === 0 ? SHORT_MAX_LE : sw2(r.sw),
      });
      parts.push(r.data);
      total += r.data.length;
      check();
    }
    return { data: parts.length === 1 ? r.data : concatBytes(...parts), sw: r.sw };
  }
}

export interface SmartCardProtocolOptions {
  /** Start in this format (default short); `PivSession.open` switches to extended when it may. */
  readonly format?: ApduFormat;
  readonly maxApduSize?: number;
  readonly maxResponseBytes?: number;
  readonly maxResponseChunks?: number;
  /** Opt-in debug trace of every APDU, with secrets redacted (trace.ts). */
  readonly trace?: ApduTraceSink;
}

/**
 * A card connection that speaks command APDUs. Also exported as `ApduChannel`.
 * Commands are serialised: concurrent callers never interleave their chains.
 */
export class SmartCardProtocol {
  readonly transport: CardTransport;
  private formatConfig: ProtocolFormat;
  private readonly limits: ResponseChainingLimits;
  private top: ApduProcessor;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(transport: CardTransport, options: SmartCardProtocolOptions = {}) {
    this.transport = options.trace ? new TracingTransport(transport, options.trace) : transport;
    this.formatConfig = {
      format: options.format ?? "short",
      maxApduSize: options.maxApduSize ?? YUBIKEY_MAX_APDU_SIZE,
    };
    this.limits = {
      maxResponseBytes: options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES,
      maxResponseChunks: options.maxResponseChunks ?? DEFAULT_MAX_RESPONSE_CHUNKS,
    };
    const fmt = () => this.formatConfig;
    const encoding = new EncodingProcessor(this.transport, fmt);
    const commandChaining = new CommandChainingProcessor(encoding, fmt);
    this.top = new ResponseChainingProcessor(commandChaining, () => this.limits);
  }

  get format(): ApduFormat {
    return this.formatConfig.format;
  }

  /** Largest Ne worth asking for in the current format. */
  get maxLe(): number {
    return this.formatConfig.format === "extended" ? EXTENDED_MAX_LE : SHORT_MAX_LE;
  }

  /** Switches between short and extended APDUs (e.g. once the card's version is known). */
  configure(format: ApduFormat, maxApduSize = this.formatConfig.maxApduSize): void {
    this.formatConfig = { format, maxApduSize };
  }

  /** Puts a processor on top of the stack (e.g. secure messaging once a session key exists). */
  use(layer: ApduProcessorLayer): void {
    this.top = layer(this.top);
  }

  /** Sends a command through the stack and returns the final response, whatever its status word. */
  transmit(command: CommandApdu): Promise<ResponseApdu> {
    const run = this.queue.then(() => this.top.process(command));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Sends a command; returns the response data on 9000, throws the typed error otherwise. */
  async sendApdu(command: CommandApdu): Promise<Uint8Array> {
    const r = await this.transmit(command);
    if (r.sw !== SW.ok) throw statusError(r.sw);
    return r.data;
  }

  /** SELECT by AID (`00 A4 04 00`); returns the FCI data. */
  select(aid: Uint8Array): Promise<Uint8Array> {
    return this.sendApdu({ cla: 0, ins: 0xa4, p1: 0x04, p2: 0x00, data: aid, le: SHORT_MAX_LE });
  }

  close(): Promise<void> {
    return this.transport.close();
  }
}

export { SmartCardProtocol as ApduChannel };
