/**
 * CardTransport over PC/SC (pcsc-lite through the optional native `pcsclite` binding, pcsc-binding.ts).
 *
 * `PcscTransport` is one connection to one card: SHARED mode, T=0 or T=1, a response buffer large
 * enough for extended-length APDUs, disconnect with a card reset so that a verified PIN does not
 * outlive the session.
 */

import { NoCardError } from "../errors.js";
import type { CardTransport } from "./card-transport.js";
import { isContactless } from "./pcsc-atr.js";
import {
  CardRemovedError,
  PCSC_MAX_BUFFER_EXTENDED,
  type PcscBindingReader,
  PcscError,
  SCARD_LEAVE_CARD,
  SCARD_PROTOCOL_T0,
  SCARD_PROTOCOL_T1,
  SCARD_RESET_CARD,
  SCARD_SHARE_EXCLUSIVE,
  SCARD_SHARE_SHARED,
  SCARD_UNPOWER_CARD,
  toPcscError,
} from "./pcsc-binding.js";
import { cardPresent, PcscContext, type PcscContextOptions, readerMatches } from "./pcsc-context.js";

// ---------------------------------------------------------------------------------------------
// PcscTransport: one connection to one card
// ---------------------------------------------------------------------------------------------

export type PcscProtocol = "T0" | "T1";

export interface PcscConnectOptions {
  /** Exclusive access instead of the default SHARED mode. */
  exclusive?: boolean;
  /** Restrict the protocol; both are offered by default. */
  protocol?: PcscProtocol;
  /**
   * What to do with the card on close. Default "reset": the PIV applet forgets a verified PIN,
   * so the next application (sharing the reader) does not inherit it.
   */
  disposition?: "reset" | "leave" | "unpower";
}

export interface PcscOpenOptions extends PcscConnectOptions, PcscContextOptions {
  /** Case-insensitive substring of the reader name; any reader with a card when absent. */
  reader?: string;
}

/** SP 800-73-4 and ISO 7816-4: the largest command APDU pcsc-lite passes. */
const MAX_COMMAND_LENGTH = PCSC_MAX_BUFFER_EXTENDED;

export class PcscTransport implements CardTransport {
  readonly contactless: boolean;
  private closing: Promise<void> | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly reader: PcscBindingReader,
    readonly protocol: PcscProtocol,
    readonly atr: Uint8Array,
    private readonly disposition: number,
    private readonly onClose: () => void,
  ) {
    this.contactless = isContactless(reader.name, atr);
  }

  get readerName(): string {
    return this.reader.name;
  }

  /**
   * Opens its own PC/SC context, connects to the card in the first reader whose name contains
   * `options.reader` and that holds a card, and closes the context again on `close()`. Does not
   * wait for a card: see ReaderWatcher.waitForCard for that.
   */
  static async open(options: PcscOpenOptions = {}): Promise<PcscTransport> {
    const context = await PcscContext.open(options);
    try {
      return await PcscTransport.connectIn(context, options, () => context.close());
    } catch (error) {
      context.close();
      throw error;
    }
  }

  /**
   * Connects within an existing context (the reader watcher's). `onClose` runs after the card is
   * disconnected.
   */
  static async connectIn(
    context: PcscContext,
    options: PcscOpenOptions,
    onClose: () => void = () => {},
  ): Promise<PcscTransport> {
    const all = context.snapshot();
    const matching = all.filter((r) => readerMatches(r.name, options.reader));
    if (matching.length === 0) {
      const known = all.map((r) => `"${r.name}"`).join(", ") || "none";
      throw new NoCardError(
        options.reader === undefined
          ? "no smart-card reader found"
          : `no reader matching "${options.reader}" (readers: ${known})`,
      );
    }
    const withCard = matching.find((r) => cardPresent(r.state));
    if (!withCard) {
      throw new NoCardError(`no card in ${matching.map((r) => `"${r.name}"`).join(", ")}`);
    }
    const reader = context.bindingReader(withCard.name);
    if (!reader) throw new NoCardError(`reader "${withCard.name}" went away`);
    return PcscTransport.connectReader(reader, withCard.atr, options, onClose);
  }

  /** Connects to the card in `reader` (whose ATR the caller got from its status). */
  static connectReader(
    reader: PcscBindingReader,
    atr: Uint8Array,
    options: PcscConnectOptions = {},
    onClose: () => void = () => {},
  ): Promise<PcscTransport> {
    const protocols =
      options.protocol === "T0"
        ? SCARD_PROTOCOL_T0
        : options.protocol === "T1"
          ? SCARD_PROTOCOL_T1
          : SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1;
    const disposition =
      options.disposition === "leave"
        ? SCARD_LEAVE_CARD
        : options.disposition === "unpower"
          ? SCARD_UNPOWER_CARD
          : SCARD_RESET_CARD;
    const shareMode = options.exclusive ? SCARD_SHARE_EXCLUSIVE : SCARD_SHARE_SHARED;
    return new Promise((resolve, reject) => {
      reader.connect({ share_mode: shareMode, protocol: protocols }, (error, protocol) => {
        if (error) {
          reject(toPcscError(error, "SCardConnect", reader.name));
          return;
        }
        const chosen: PcscProtocol = protocol === SCARD_PROTOCOL_T0 ? "T0" : "T1";
        resolve(new PcscTransport(reader, chosen, atr, disposition, onClose));
      });
    });
  }

  /** One command APDU in, response data ‖ SW1 SW2 out. Calls are serialised in order. */
  transmit(command: Uint8Array): Promise<Uint8Array> {
    const run = () => this.transmitNow(command);
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private transmitNow(command: Uint8Array): Promise<Uint8Array> {
    if (this.closing) return Promise.reject(new PcscError("transport is closed", "SCardTransmit", undefined));
    if (command.length < 4 || command.length > MAX_COMMAND_LENGTH) {
      return Promise.reject(
        new PcscError(`command APDU of ${command.length} bytes is out of range`, "SCardTransmit", undefined),
      );
    }
    const protocol = this.protocol === "T0" ? SCARD_PROTOCOL_T0 : SCARD_PROTOCOL_T1;
    return new Promise((resolve, reject) => {
      this.reader.transmit(Buffer.from(command), PCSC_MAX_BUFFER_EXTENDED, protocol, (error, response) => {
        if (error) {
          reject(toPcscError(error, "SCardTransmit", this.reader.name));
          return;
        }
        if (response.length === 0) {
          // vpcd (and some readers) report a card that went away mid-command as an empty answer.
          reject(
            new CardRemovedError(
              `no answer from the card in "${this.reader.name}" (removed during the command?)`,
              this.reader.name,
            ),
          );
          return;
        }
        if (response.length < 2) {
          reject(
            new PcscError(
              `response of ${response.length} bytes has no status word`,
              "SCardTransmit",
              undefined,
            ),
          );
          return;
        }
        resolve(new Uint8Array(response));
      });
    });
  }

  /** Disconnects (resetting the card by default). Idempotent; never throws for a gone card. */
  close(): Promise<void> {
    this.closing ??= this.queue.then(
      () =>
        new Promise<void>((resolve) => {
          this.reader.disconnect(this.disposition, () => {
            // A card already removed cannot be reset; nothing more to do either way.
            try {
              this.onClose();
            } finally {
              resolve();
            }
          });
        }),
    );
    return this.closing;
  }
}
