/**
 * Reader watching: readers added/removed, cards inserted/removed, as typed events or an async
 * iterator, and `waitForCard`. Everything is driven by pcsc-lite's own blocking
 * SCardGetStatusChange threads inside the binding: no polling here.
 *
 * pcscd itself polls drivers without hotplug (vpcd among them) about every 400 ms, so an
 * insertion or removal shows up here within that period.
 */
import { EventEmitter } from "node:events";
import { NoCardError, type OnboardError, WaitTimeoutError } from "../errors.js";
import { isContactless } from "./pcsc-atr.js";
import { ReaderState } from "./pcsc-binding.js";
import {
  cardEventCount,
  cardPresent,
  PcscContext,
  type PcscContextOptions,
  type ReaderStatus,
  readerMatches,
} from "./pcsc-context.js";
import { type PcscConnectOptions, PcscTransport } from "./pcsc-transport.js";

export { WaitTimeoutError } from "../errors.js";

export interface ReaderAddedEvent {
  type: "reader-added";
  reader: string;
}
export interface ReaderRemovedEvent {
  type: "reader-removed";
  reader: string;
}
export interface CardInsertedEvent {
  type: "card-inserted";
  reader: string;
  atr: Uint8Array;
  contactless: boolean;
}
export interface CardRemovedEvent {
  type: "card-removed";
  reader: string;
}
/** A card is in the reader but did not answer its reset (wrong way round, broken, hostile). */
export interface CardMuteEvent {
  type: "card-mute";
  reader: string;
}
export type ReaderEvent =
  | ReaderAddedEvent
  | ReaderRemovedEvent
  | CardInsertedEvent
  | CardRemovedEvent
  | CardMuteEvent;

export interface ReaderWatcherEvents {
  "reader-added": [ReaderAddedEvent];
  "reader-removed": [ReaderRemovedEvent];
  "card-inserted": [CardInsertedEvent];
  "card-removed": [CardRemovedEvent];
  "card-mute": [CardMuteEvent];
  /** Every event above, in order. */
  event: [ReaderEvent];
  /** The PC/SC service went away; the watcher is closed afterwards. */
  error: [OnboardError];
}

/** A card that is present now. */
export interface CardPresence {
  reader: string;
  atr: Uint8Array;
  contactless: boolean;
}

export interface WaitOptions {
  /** Case-insensitive substring of the reader name; any reader when absent. */
  reader?: string;
  /** Bound on the wait; `Infinity` only together with a signal that will fire. */
  timeoutMs: number;
  signal?: AbortSignal;
}

export type ReaderWatcherOptions = PcscContextOptions;

/** Bound on the queue behind `events()`: a consumer that stops reading loses the oldest events. */
const MAX_QUEUED_EVENTS = 1024;

export class ReaderWatcher extends EventEmitter<ReaderWatcherEvents> {
  private closed = false;
  private failure: OnboardError | undefined;
  /** Called once when the watcher closes: with the failure when the PC/SC service was lost. */
  private readonly closeHandlers = new Set<(failure: OnboardError | undefined) => void>();

  private constructor(private readonly context: PcscContext) {
    super();
    context.on("reader-added", (reader) => this.publish({ type: "reader-added", reader }));
    context.on("reader-removed", (reader, lastState) => this.onReaderRemoved(reader, lastState));
    context.on("status", (status, previous) => this.onStatus(status, previous));
    context.on("error", (error) => this.onServiceLost(error));
  }

  /**
   * Opens a PC/SC context and resolves once the current readers and their cards are known, so
   * `present()` and `waitForCard` see a card that was inserted before the watcher started (a card
   * already in the slot when an HSM is racked). Reader-added / card-inserted events for those are
   * emitted before `open` resolves, i.e. before anyone can listen: read `present()` instead.
   */
  static async open(options: ReaderWatcherOptions = {}): Promise<ReaderWatcher> {
    return new ReaderWatcher(await PcscContext.open(options));
  }

  /** Readers and their state right now. */
  readers(): ReaderStatus[] {
    return this.context.snapshot();
  }

  /** Cards present right now (optionally only in readers matching `reader`). */
  present(reader?: string): CardPresence[] {
    return this.context
      .snapshot()
      .filter((r) => readerMatches(r.name, reader) && cardPresent(r.state))
      .map((r) => ({ reader: r.name, atr: r.atr, contactless: isContactless(r.name, r.atr) }));
  }

  /**
   * Resolves with the card as soon as one is present in a matching reader — immediately if one
   * already is. Rejects with NoCardError after `timeoutMs`, with the signal's reason on abort, and
   * with the watcher's failure if the PC/SC service goes away.
   */
  waitForCard(options: WaitOptions): Promise<CardPresence> {
    const now = this.present(options.reader)[0];
    if (now) return Promise.resolve(now);
    const where = options.reader === undefined ? "any reader" : `a reader matching "${options.reader}"`;
    return this.waitFor<CardPresence>(
      options,
      () => new NoCardError(`no card in ${where} after ${formatMs(options.timeoutMs)}`),
      (event) =>
        event.type === "card-inserted" && readerMatches(event.reader, options.reader)
          ? { reader: event.reader, atr: event.atr, contactless: event.contactless }
          : undefined,
    );
  }

  /**
   * Resolves once no matching reader holds a card (immediately if none does). Rejects with
   * WaitTimeoutError after `timeoutMs`.
   */
  waitForRemoval(options: WaitOptions): Promise<void> {
    if (this.present(options.reader).length === 0) return Promise.resolve();
    return this.waitFor<true>(
      options,
      () => new WaitTimeoutError(`card still present after ${formatMs(options.timeoutMs)}`),
      (event) =>
        (event.type === "card-removed" || event.type === "reader-removed") &&
        this.present(options.reader).length === 0
          ? true
          : undefined,
    ).then(() => undefined);
  }

  /** Connects to the card in the first matching reader that holds one (SHARED mode by default). */
  connect(options: PcscConnectOptions & { reader?: string } = {}): Promise<PcscTransport> {
    if (this.closed) return Promise.reject(this.failure ?? new NoCardError("reader watcher is closed"));
    return PcscTransport.connectIn(this.context, options);
  }

  /**
   * Events as an async iterator, from now until the watcher closes, `signal` fires or the consumer
   * stops. Bounded queue: at most 1024 unread events are kept (the oldest are dropped).
   */
  events(options: { signal?: AbortSignal } = {}): AsyncIterableIterator<ReaderEvent> {
    const queue: ReaderEvent[] = [];
    let wake: (() => void) | undefined;
    let finished = false;
    let failure: OnboardError | undefined;
    const onEvent = (event: ReaderEvent) => {
      if (queue.length >= MAX_QUEUED_EVENTS) queue.shift();
      queue.push(event);
      wake?.();
    };
    const finish = (error?: OnboardError) => {
      if (finished) return;
      finished = true;
      failure = error;
      this.off("event", onEvent);
      this.closeHandlers.delete(finish);
      options.signal?.removeEventListener("abort", onAbort);
      wake?.();
    };
    const onAbort = () => finish();
    if (this.closed) finished = true;
    else {
      this.on("event", onEvent);
      this.closeHandlers.add(finish);
      if (options.signal?.aborted) finish();
      else options.signal?.addEventListener("abort", onAbort, { once: true });
    }
    const take = (): IteratorResult<ReaderEvent> | undefined => {
      const event = queue.shift();
      if (event) return { value: event, done: false };
      if (!finished) return undefined;
      if (failure) {
        // The service loss is reported once, to the consumer that was iterating.
        const error = failure;
        failure = undefined;
        throw error;
      }
      return { value: undefined, done: true };
    };
    const iterator: AsyncIterableIterator<ReaderEvent> = {
      next: async () => {
        const ready = take();
        if (ready) return ready;
        // Every wake-up comes with a queued event or with `finished`.
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
        return take() ?? { value: undefined, done: true };
      },
      return: async () => {
        finish();
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }

  /** Stops watching and releases the PC/SC context. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.context.close();
    for (const handler of [...this.closeHandlers]) handler(undefined);
    this.closeHandlers.clear();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  // -------------------------------------------------------------------------------------------

  private waitFor<T>(
    options: WaitOptions,
    onTimeout: () => OnboardError,
    match: (event: ReaderEvent) => T | undefined,
  ): Promise<T> {
    if (this.closed) return Promise.reject(this.failure ?? new NoCardError("reader watcher is closed"));
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const cleanup = () => {
        if (timer) clearTimeout(timer);
        this.off("event", onEvent);
        this.closeHandlers.delete(onClose);
        signal?.removeEventListener("abort", onAbort);
      };
      const onEvent = (event: ReaderEvent) => {
        const value = match(event);
        if (value === undefined) return;
        cleanup();
        resolve(value);
      };
      const onClose = (failure: OnboardError | undefined) => {
        cleanup();
        reject(failure ?? new NoCardError("reader watcher closed while waiting"));
      };
      const onAbort = () => {
        cleanup();
        reject(signal?.reason);
      };
      this.on("event", onEvent);
      this.closeHandlers.add(onClose);
      signal?.addEventListener("abort", onAbort, { once: true });
      if (Number.isFinite(options.timeoutMs)) {
        timer = setTimeout(
          () => {
            cleanup();
            reject(onTimeout());
          },
          Math.max(0, options.timeoutMs),
        );
      } else if (!signal) {
        cleanup();
        reject(new RangeError("an unbounded wait needs an AbortSignal"));
      }
    });
  }

  private publish(event: ReaderEvent): void {
    if (this.closed) return;
    // Typed emit per event type, then the catch-all.
    switch (event.type) {
      case "reader-added":
        this.emit("reader-added", event);
        break;
      case "reader-removed":
        this.emit("reader-removed", event);
        break;
      case "card-inserted":
        this.emit("card-inserted", event);
        break;
      case "card-removed":
        this.emit("card-removed", event);
        break;
      case "card-mute":
        this.emit("card-mute", event);
        break;
    }
    this.emit("event", event);
  }

  /**
   * Turns two successive status words into events. pcsc-lite counts card insertions and removals
   * in the high word: a card pulled and put back between two status reads keeps the PRESENT bit
   * but moves the counter, and is reported as a removal followed by an insertion.
   */
  private onStatus(status: ReaderStatus, previous: number | undefined): void {
    const was = cardPresent(previous);
    const is = cardPresent(status.state);
    const counterMoved =
      previous !== undefined && cardEventCount(status.state) - cardEventCount(previous) >= 2;
    if (was && (!is || counterMoved)) this.publish({ type: "card-removed", reader: status.name });
    if (is && (!was || counterMoved)) {
      this.publish({
        type: "card-inserted",
        reader: status.name,
        atr: status.atr,
        contactless: isContactless(status.name, status.atr),
      });
    }
    const mute = ((status.state ?? 0) & ReaderState.mute) !== 0;
    const wasMute = ((previous ?? 0) & ReaderState.mute) !== 0;
    if (mute && !wasMute) this.publish({ type: "card-mute", reader: status.name });
  }

  private onReaderRemoved(reader: string, lastState: number | undefined): void {
    // A card in a reader that went away went with it.
    if (cardPresent(lastState)) this.publish({ type: "card-removed", reader });
    this.publish({ type: "reader-removed", reader });
  }

  private onServiceLost(error: OnboardError): void {
    if (this.closed) return;
    this.failure = error;
    if (this.listenerCount("error") > 0) this.emit("error", error);
    const handlers = [...this.closeHandlers];
    this.closed = true;
    this.context.close();
    for (const handler of handlers) handler(error);
    this.closeHandlers.clear();
  }
}

function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(ms % 1000 === 0 ? 0 : 1)} s` : `${ms} ms`;
}
