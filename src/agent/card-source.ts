/**
 * Where `agent run` gets its cards: openCard (src/secure-element/open-card.ts) — PC/SC by insertion
 * event, a card already in a reader counting at once (an HSM racked with the card inserted) — or the
 * opener the caller injects (an in-process virtual card for the demo and the CLI tests). Between two
 * cards the agent waits for the previous card to be taken out, again by event.
 */
import {
  type CardOpener,
  type OpenCardOptions,
  type OpenedCard,
  openCard,
} from "../secure-element/open-card.js";
import type { SecureElement } from "../secure-element/secure-element.js";

export interface CardWaitOptions {
  /** Bound on the wait (Infinity: until `signal`). */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

export interface CardSource {
  /** Waits for a card and opens it; NoCardError after the timeout. */
  nextCard(options: CardWaitOptions): Promise<SecureElement>;
  /** Ends the session with the card last opened (PIN forgotten, card reset). */
  release(): Promise<void>;
  /** Resolves once the card last opened has been taken out (or `signal` fires). */
  waitForRemoval(options: { readonly signal?: AbortSignal }): Promise<void>;
}

export interface CardSourceOptions {
  /** Substring of the reader name (PC/SC). */
  readonly reader?: string;
  /** Opens the card instead of PC/SC (an in-process virtual card, a PKCS#11 token); PC/SC when absent. */
  readonly openCard?: CardOpener<SecureElement>;
  /** Called when no card is present and the wait begins. */
  readonly onPrompt?: () => void;
  /** Options of each card's element: the secure-channel policy (SPEC §4). */
  readonly element?: OpenCardOptions["element"];
}

export function cardSource(options: CardSourceOptions): CardSource {
  let current: OpenedCard<SecureElement> | undefined;
  let lastRemoval: OpenedCard<SecureElement>["waitForRemoval"];
  let lastReader: string | undefined;
  let lastInProcess = false;
  const open = options.openCard ?? openCard;
  return {
    async nextCard({ timeoutMs, signal }) {
      lastReader = undefined;
      lastRemoval = undefined;
      current = await open({
        timeoutMs,
        ...(options.reader !== undefined ? { reader: options.reader } : {}),
        ...(signal ? { signal } : {}),
        ...(options.onPrompt ? { onPrompt: options.onPrompt } : {}),
        ...(options.element ? { element: options.element } : {}),
      });
      lastReader = current.readerName;
      lastInProcess = current.inProcess;
      lastRemoval = current.waitForRemoval;
      return current.element;
    },
    async release() {
      const card = current;
      current = undefined;
      await card?.dispose();
    },
    async waitForRemoval({ signal }) {
      // A PKCS#11 token: watched on its module's slots, not on a PC/SC reader.
      if (lastRemoval) return lastRemoval({ ...(signal ? { signal } : {}) });
      if (lastInProcess) {
        // An in-process card is never pulled: the wait lasts until the agent is stopped. Nothing else
        // keeps the event loop alive meanwhile, so a timer does (or Node would exit mid-wait).
        await new Promise<void>((resolve) => {
          if (!signal || signal.aborted) return resolve();
          const keepAlive = setInterval(() => {}, 60_000);
          signal.addEventListener(
            "abort",
            () => {
              clearInterval(keepAlive);
              resolve();
            },
            { once: true },
          );
        });
        return;
      }
      const { ReaderWatcher } = await import("../transport/reader-watcher.js");
      // The reader of the card last opened; after a card that could not be opened, any matching reader.
      const reader = lastReader ?? options.reader;
      const watcher = await ReaderWatcher.open();
      try {
        await watcher.waitForRemoval({
          ...(reader !== undefined ? { reader } : {}),
          timeoutMs: Number.POSITIVE_INFINITY,
          ...(signal ? { signal } : {}),
        });
      } catch (error) {
        if (!signal?.aborted) throw error;
      } finally {
        watcher.close();
      }
    },
  };
}
