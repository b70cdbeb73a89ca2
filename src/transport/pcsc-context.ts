/**
 * `PcscContext` owns one pcsc-lite context: the reader list and each reader's last status. The
 * reader watcher (reader-watcher.ts) turns its raw status words into insert/remove events.
 */
import { EventEmitter } from "node:events";
import type { OnboardError } from "../errors.js";
import {
  isServiceGone,
  loadPcscBinding,
  type PcscBindingContext,
  type PcscBindingFactory,
  type PcscBindingReader,
  PcscError,
  ReaderState,
  ScardCode,
  toPcscError,
} from "./pcsc-binding.js";

// ---------------------------------------------------------------------------------------------
// PcscContext: one pcsc-lite context, its readers and their last status
// ---------------------------------------------------------------------------------------------

export interface ReaderStatus {
  readonly name: string;
  /** Raw SCARD_STATE_* word, event counter included; undefined until the first status. */
  readonly state: number | undefined;
  readonly atr: Uint8Array;
}

export interface PcscContextEvents {
  /** The reader list was (re)read; fires for empty lists too. */
  list: [readonly string[]];
  "reader-added": [string];
  /** With the reader's last state word, so a card that went with it can be reported. */
  "reader-removed": [string, number | undefined];
  status: [ReaderStatus, previousState: number | undefined];
  error: [OnboardError];
}

export interface PcscContextOptions {
  /** Substitute binding (tests); the real `pcsclite` module otherwise. */
  binding?: PcscBindingFactory;
  /** Bound on the wait for the first reader list and first statuses (default 3000 ms). */
  readyTimeoutMs?: number;
}

interface TrackedReader {
  reader: PcscBindingReader;
  state: number | undefined;
  atr: Uint8Array;
}

/**
 * One pcsc-lite context. pcsclite 1.0.x announces readers only as "new reader" events, so an
 * empty reader list would be indistinguishable from "not read yet"; the context therefore wraps
 * the binding's own list callback (called on every reader list change, empty lists included) to
 * know when the first list is in. `open()` resolves once that list and each reader's first status
 * have arrived, so a snapshot taken right after is complete.
 */
export class PcscContext extends EventEmitter<PcscContextEvents> {
  private readonly readers = new Map<string, TrackedReader>();
  private closed = false;
  private listSeen = false;

  private constructor(private readonly binding: PcscBindingContext) {
    super();
  }

  static async open(options: PcscContextOptions = {}): Promise<PcscContext> {
    const factory = options.binding ?? (await loadPcscBinding());
    let binding: PcscBindingContext;
    try {
      binding = factory();
    } catch (error) {
      throw toPcscError(error, "SCardEstablishContext");
    }
    const context = new PcscContext(binding);
    context.attach();
    try {
      await context.whenReady(options.readyTimeoutMs ?? 3000);
    } catch (error) {
      context.close();
      throw error;
    }
    return context;
  }

  /** Current readers and their status. */
  snapshot(): ReaderStatus[] {
    return [...this.readers.values()].map((t) => ({ name: t.reader.name, state: t.state, atr: t.atr }));
  }

  /** The binding reader object (for connecting), if the reader is present. */
  bindingReader(name: string): PcscBindingReader | undefined {
    return this.readers.get(name)?.reader;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Stops every status thread of the binding; the process can then exit. Idempotent; no event is
   * emitted afterwards.
   *
   * The native release happens on a later turn of the event loop: pcsclite runs its reader
   * callbacks with that reader's mutex held and `close()` takes the same mutex, so closing from an
   * event handler (a "card inserted" handler that closes the watcher, or the reaction to pcscd
   * going away) would deadlock the main thread if done synchronously.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const readers = [...this.readers.values()].map((t) => t.reader);
    this.readers.clear();
    this.removeAllListeners();
    setImmediate(() => {
      for (const reader of readers) {
        try {
          reader.close();
        } catch {
          // already closed by the binding (reader gone)
        }
      }
      try {
        this.binding.close();
      } catch {
        // the binding's context may already have failed (pcscd gone)
      }
    });
  }

  private attach(): void {
    const b = this.binding;
    const originalStart = b.start;
    if (typeof originalStart === "function") {
      // Called by pcsclite on the next tick; wrap it to see every reader list, empty ones too.
      b.start = (callback) =>
        originalStart.call(b, (error, data) => {
          callback(error, data);
          if (!error && !this.closed) this.onList(parseReaderList(data));
        });
    }
    b.on("reader", (reader) => this.onReader(reader));
    b.on("error", (error) => {
      if (this.closed) return;
      this.fail(toPcscError(error, "SCardGetStatusChange"));
    });
  }

  private onList(names: readonly string[]): void {
    this.listSeen = true;
    // pcsclite itself closes readers that disappeared; their "end" reports the removal.
    this.emit("list", names);
  }

  private onReader(reader: PcscBindingReader): void {
    if (this.closed) {
      reader.close();
      return;
    }
    const tracked: TrackedReader = { reader, state: undefined, atr: new Uint8Array(0) };
    this.readers.set(reader.name, tracked);
    reader.on("status", (status) => {
      if (this.closed || this.readers.get(reader.name) !== tracked) return;
      const previous = tracked.state;
      tracked.state = status.state;
      tracked.atr = status.atr && status.atr.length > 0 ? new Uint8Array(status.atr) : new Uint8Array(0);
      this.emit("status", { name: reader.name, state: tracked.state, atr: tracked.atr }, previous);
    });
    reader.on("error", (error) => {
      // A reader's status thread failed: usually pcscd went away or the reader was unplugged.
      // Its "end" follows and reports the removal; only a lost service is worth an error.
      if (this.closed) return;
      const typed = toPcscError(error, "SCardGetStatusChange");
      if (typed instanceof PcscError && isServiceGone(typed.scardCode)) this.fail(typed);
    });
    reader.on("end", () => {
      if (this.readers.get(reader.name) !== tracked) return;
      this.readers.delete(reader.name);
      if (!this.closed) this.emit("reader-removed", reader.name, tracked.state);
    });
    this.emit("reader-added", reader.name);
  }

  private fail(error: OnboardError): void {
    if (this.listenerCount("error") > 0) this.emit("error", error);
  }

  private isReady(): boolean {
    if (!this.listSeen) return false;
    for (const t of this.readers.values()) if (t.state === undefined) return false;
    return true;
  }

  private whenReady(timeoutMs: number): Promise<void> {
    if (this.isReady()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.isReady()) done();
      };
      const onError = (error: OnboardError) => done(error);
      const timer = setTimeout(
        () =>
          done(
            new PcscError(
              `PC/SC reader list not available after ${timeoutMs} ms`,
              "SCardListReaders",
              ScardCode.timeout,
            ),
          ),
        timeoutMs,
      );
      const done = (error?: OnboardError) => {
        clearTimeout(timer);
        this.off("list", check);
        this.off("status", check);
        this.off("error", onError);
        if (error) reject(error);
        else resolve();
      };
      this.on("list", check);
      this.on("status", check);
      this.on("error", onError);
    });
  }
}

/** pcsc-lite multi-string: `name\0name\0\0`. */
function parseReaderList(data: Buffer | undefined): string[] {
  if (!data || data.length === 0) return [];
  return data
    .toString("utf8")
    .split("\0")
    .filter((s) => s.length > 0);
}

/** Whether a status word says "a card is there and answered its reset". */
export function cardPresent(state: number | undefined): boolean {
  if (state === undefined) return false;
  return (state & ReaderState.present) !== 0 && (state & ReaderState.mute) === 0;
}

/** The card event counter pcsc-lite keeps in the high 16 bits of the state word. */
export function cardEventCount(state: number | undefined): number {
  return state === undefined ? 0 : (state >>> 16) & 0xffff;
}

export function readerMatches(name: string, wanted: string | undefined): boolean {
  return wanted === undefined || name.toLowerCase().includes(wanted.toLowerCase());
}
