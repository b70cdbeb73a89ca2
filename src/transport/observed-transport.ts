/**
 * The one CardTransport decorator: forwards everything to `inner` unchanged and shows each exchange
 * to an observer. The redacting APDU trace (src/apdu/trace.ts) and the APDU meter
 * (src/card-emulator/metered-card.ts) are observers of it.
 */
import type { CardTransport } from "./card-transport.js";

export interface TransportObserver {
  /** Before the command goes out (a copy: the observer may keep it). */
  command?(command: Uint8Array): void;
  /** After the response came back; `elapsedMs` is the wall time of the exchange. */
  response?(command: Uint8Array, response: Uint8Array, elapsedMs: number): void;
}

export class ObservedTransport implements CardTransport {
  constructor(
    readonly inner: CardTransport,
    readonly observer: TransportObserver,
  ) {}

  get atr(): Uint8Array {
    return this.inner.atr;
  }

  get contactless(): boolean {
    return this.inner.contactless;
  }

  get readerName(): string {
    return this.inner.readerName;
  }

  async transmit(command: Uint8Array): Promise<Uint8Array> {
    const sent = command.slice();
    this.observer.command?.(sent);
    const started = performance.now();
    const response = await this.inner.transmit(command);
    this.observer.response?.(sent, response, performance.now() - started);
    return response;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
