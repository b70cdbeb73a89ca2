/**
 * An in-memory stand-in for the `pcsclite` binding with the same observable behaviour: the
 * factory reads the reader list on the next tick through `start(callback)`, announces new readers
 * with "reader", closes readers that disappeared (their "end" follows asynchronously), each reader
 * reports its first status asynchronously and then every change, with pcsc-lite's card event
 * counter in the high 16 bits of the state word.
 */
import { EventEmitter } from "node:events";
import type {
  PcscBindingContext,
  PcscBindingFactory,
  PcscBindingReader,
  PcscBindingReaderStatus,
} from "../../src/transport/pcsc-binding.js";
import { ReaderState } from "../../src/transport/pcsc-binding.js";

type Cb<T> = (error: Error | null | undefined, value: T) => void;

export interface FakeCard {
  atr: Uint8Array;
  mute?: boolean;
  /** Answers a command; throws to simulate a transmit failure. */
  transmit?: (command: Buffer) => Buffer;
}

export class FakeReader extends EventEmitter implements PcscBindingReader {
  card: FakeCard | undefined;
  events = 0;
  connected = false;
  closed = false;
  readonly transmits: { data: Buffer; responseLength: number; protocol: number }[] = [];
  readonly disconnects: number[] = [];
  connectError: Error | undefined;
  protocol = 2;

  constructor(readonly name: string) {
    super();
  }

  state(): number {
    if (!this.card) return ReaderState.empty | (this.events << 16);
    return ReaderState.present | (this.card.mute ? ReaderState.mute : 0) | (this.events << 16);
  }

  /**
   * pcsclite runs reader callbacks with the reader's mutex held, and close() takes that mutex:
   * closing a reader from inside one of its own callbacks deadlocks the real binding. The fake
   * makes that mistake loud.
   */
  private inCallback = false;
  private emitLocked(event: string, ...args: unknown[]): void {
    this.inCallback = true;
    try {
      this.emit(event, ...args);
    } finally {
      this.inCallback = false;
    }
  }

  report(): void {
    if (this.closed) return;
    const status: PcscBindingReaderStatus = { state: this.state() };
    if (this.card) status.atr = Buffer.from(this.card.atr);
    setImmediate(() => {
      if (!this.closed) this.emitLocked("status", status);
    });
  }

  insert(card: FakeCard): void {
    this.card = card;
    this.events++;
    this.report();
  }

  remove(): void {
    this.card = undefined;
    this.connected = false;
    this.events++;
    this.report();
  }

  /** Pulled and put back faster than a status read: only the counter shows it. */
  swap(card: FakeCard): void {
    this.card = card;
    this.events += 2;
    this.report();
  }

  connect(options: { share_mode: number; protocol: number }, callback: Cb<number>): void {
    setImmediate(() => {
      if (this.connectError) return callback(this.connectError, 0);
      if (!this.card)
        return callback(new Error("SCardConnect error: No smart card inserted.(0x8010000c)"), 0);
      this.connected = true;
      this.lastConnect = options;
      callback(null, this.protocol);
    });
  }
  lastConnect: { share_mode: number; protocol: number } | undefined;

  disconnect(disposition: number, callback: (error: Error | null | undefined) => void): void {
    this.disconnects.push(disposition);
    this.connected = false;
    setImmediate(() => callback(null));
  }

  transmit(data: Buffer, responseLength: number, protocol: number, callback: Cb<Buffer>): void {
    this.transmits.push({ data, responseLength, protocol });
    setImmediate(() => {
      if (!this.card || !this.connected) {
        return callback(new Error("SCardTransmit error: Card was removed.(0x80100069)"), Buffer.alloc(0));
      }
      try {
        const answer = this.card.transmit ? this.card.transmit(data) : Buffer.from([0x90, 0x00]);
        callback(null, answer);
      } catch (error) {
        callback(error as Error, Buffer.alloc(0));
      }
    });
  }

  close(): void {
    if (this.inCallback) throw new Error("deadlock: reader closed from inside its own callback");
    if (this.closed) return;
    this.closed = true;
    setImmediate(() => this.emitLocked("end"));
  }

  /** The status thread failed (pcscd gone): error, then end. */
  fail(error: Error): void {
    setImmediate(() => {
      this.emitLocked("error", error);
      this.closed = true;
      this.emitLocked("end");
    });
  }
}

export class FakePcsc extends EventEmitter implements PcscBindingContext {
  readonly readers = new Map<string, FakeReader>();
  closed = false;
  private listCallback: Cb<Buffer> | undefined;
  /** Set to false to model a binding that never delivers its first list. */
  deliverLists = true;

  constructor(private names: string[]) {
    super();
    // Like pcsclite: the list is read on the next tick, through `this.start` (looked up then).
    process.nextTick(() => this.start?.((error, data) => this.onList(error, data)));
  }

  start?: (callback: Cb<Buffer>) => void = (callback) => {
    this.listCallback = callback;
    if (this.deliverLists) this.deliver();
  };

  private deliver(): void {
    const data = Buffer.from(this.names.map((n) => `${n}\0`).join("") + (this.names.length ? "\0" : ""));
    setImmediate(() => {
      if (!this.closed) this.listCallback?.(null, data);
    });
  }

  /** What pcsclite's own list callback does. */
  private onList(error: Error | null | undefined, data: Buffer): void {
    if (error) {
      this.emit("error", error);
      return;
    }
    const names = data.toString().split("\0").filter(Boolean);
    for (const name of names) {
      if (this.readers.has(name)) continue;
      const reader = this.pending.get(name) ?? new FakeReader(name);
      this.pending.delete(name);
      this.readers.set(name, reader);
      reader.on("end", () => this.readers.delete(name));
      reader.report();
      this.emit("reader", reader);
    }
    for (const [name, reader] of this.readers) if (!names.includes(name)) reader.close();
  }

  /** Readers created before they are announced, so a test can put a card in first. */
  private readonly pending = new Map<string, FakeReader>();

  prepare(name: string): FakeReader {
    const reader = new FakeReader(name);
    this.pending.set(name, reader);
    return reader;
  }

  setReaders(names: string[]): void {
    this.names = names;
    this.deliver();
  }

  reader(name: string): FakeReader {
    const r = this.readers.get(name);
    if (!r) throw new Error(`no fake reader ${name}`);
    return r;
  }

  /** pcscd went away. */
  loseService(): void {
    const error = new Error("SCardGetStatusChange error: Service not available.(0x8010001d)");
    setImmediate(() => this.emit("error", error));
    for (const reader of this.readers.values()) reader.fail(error);
  }

  close(): void {
    this.closed = true;
  }
}

/** A factory that hands out one FakePcsc (and remembers it). */
export function fakeBinding(
  names: string[] = [],
  setup?: (fake: FakePcsc) => void,
): {
  factory: PcscBindingFactory;
  instances: FakePcsc[];
} {
  const instances: FakePcsc[] = [];
  const factory: PcscBindingFactory = () => {
    const fake = new FakePcsc(names);
    setup?.(fake);
    instances.push(fake);
    return fake;
  };
  return { factory, instances };
}
