/**
 * CardTransport over an in-process ApduResponder (the virtual PIV card): tests and the embedded demo
 * talk to the card exactly as they would over PC/SC, APDU bytes in, response bytes out.
 */

import { NoCardError } from "../errors.js";
import type { ApduResponder } from "./apdu-responder.js";
import type { CardTransport } from "./card-transport.js";

export interface InProcessTransportOptions {
  readonly readerName?: string;
  /** Defaults to what the ATR says (PC/SC contactless ATRs start `3B 8x 80 01`). */
  readonly contactless?: boolean;
}

/** True for a PC/SC contactless ATR (`3B 8n 80 01 …`, PC/SC Part 3). */
export function isContactlessAtr(atr: Uint8Array): boolean {
  return (
    atr.length >= 4 && atr[0] === 0x3b && (atr[1]! & 0xf0) === 0x80 && atr[2] === 0x80 && atr[3] === 0x01
  );
}

export class InProcessTransport implements CardTransport {
  readonly atr: Uint8Array;
  readonly contactless: boolean;
  readonly readerName: string;
  private open = true;

  /** Powers the card on (its ATR becomes `atr`). */
  constructor(
    private readonly card: ApduResponder,
    options: InProcessTransportOptions = {},
  ) {
    this.atr = card.powerOn();
    this.contactless = options.contactless ?? isContactlessAtr(this.atr);
    this.readerName = options.readerName ?? "In-process virtual card";
  }

  async transmit(command: Uint8Array): Promise<Uint8Array> {
    if (!this.open) throw new NoCardError(`${this.readerName}: card connection is closed`);
    return this.card.transmit(command.slice());
  }

  /** Powers the card off: its security state (PIN verified, management key) is gone. */
  async close(): Promise<void> {
    if (!this.open) return;
    this.open = false;
    this.card.powerOff();
  }
}
