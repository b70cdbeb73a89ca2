/**
 * Opening "the card the user is about to present", shared by the station and the agent.
 *
 *   const card = await openCard({ reader, timeoutMs: 60_000, signal, onPrompt: () => say("Insert or tap the card…") });
 *   try { … card.element … } finally { await card.dispose(); }
 *
 * - PC/SC (the default): a ReaderWatcher (src/transport/reader-watcher.ts) waits for a card by event —
 *   a card already in a reader counts at once (an HSM racked with the card inserted) — then a
 *   PcscTransport connects to it (SHARED, reset on disconnect so no verified PIN outlives the
 *   session) and a PIV session is opened on it. `onPrompt` is called once, only when no card is
 *   present yet, so a caller prints its prompt exactly when the user has something to do.
 * - In-process (tests and the embedded demo): `openInProcessCard(card)` opens any ApduResponder (the
 *   virtual PIV card) directly. This layer never loads the emulator: the CLI and sim layers inject
 *   a `CardOpener` for a virtual card (src/card-emulator/open-virtual-card.ts, src/cli/card-opener.ts).
 *
 * Failures: NoCardError (exit 10) when no card came in time or the reader service is not there;
 * ApplicationNotAvailableError (exit 11) for a card without PIV; PcscUnavailableError (exit 1)
 * when the native binding is missing. Bounded throughout: one deadline for the whole open, at most
 * MAX_CONNECT_ATTEMPTS connects (a card pulled between the event and the connect is waited for again).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { NoCardError } from "../errors.js";
import type { ApduResponder } from "../transport/apdu-responder.js";
import { InProcessTransport } from "../transport/in-process.js";
import { CardRemovedError, PcscError } from "../transport/pcsc-binding.js";
import type { PcscContextOptions } from "../transport/pcsc-context.js";
import { ReaderWatcher } from "../transport/reader-watcher.js";
import { PivElement, type PivElementOptions } from "./piv-element.js";
import type { SecureElement } from "./secure-element.js";

/** Connect attempts within one openCard before giving up (a card that keeps vanishing or is mute). */
export const MAX_CONNECT_ATTEMPTS = 5;

export interface CardPrompt {
  /** The reader filter in force, if any. */
  readonly reader?: string;
  /** Readers connected right now (possibly none: a USB token brings its own reader). */
  readonly readers: readonly string[];
}

export interface OpenCardOptions {
  /** Case-insensitive substring of the reader name; any reader when absent. */
  readonly reader?: string;
  /** Bound on the whole open, waiting for the card included (NoCardError, exit 10, after it). */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** Called once when no card is present and the wait begins: time to ask for the card. */
  readonly onPrompt?: (prompt: CardPrompt) => void;
  /** PC/SC context options: a substitute binding for tests, the ready timeout. */
  readonly pcsc?: PcscContextOptions;
  /** Options of the PIV element (storage limits). */
  readonly element?: Omit<PivElementOptions, "ownsTransport">;
}

/**
 * An open card (a PIV card by default; a PKCS#11 token from open-token.ts). `dispose()` ends the
 * session (PIN forgotten, card reset) and stops watching readers.
 */
export interface OpenedCard<E extends SecureElement = PivElement> extends AsyncDisposable {
  readonly element: E;
  readonly readerName: string;
  readonly contactless: boolean;
  /** True for a card opened in-process: no reader, so it is never taken out. */
  readonly inProcess: boolean;
  /**
   * Resolves once this card (token) has been taken out, or `signal` fires; absent for PC/SC cards,
   * whose removal the caller watches on the reader.
   */
  waitForRemoval?(options: { readonly signal?: AbortSignal }): Promise<void>;
  dispose(): Promise<void>;
}

/**
 * How a caller opens "the card the user presents": `openCard` (PC/SC) in the product; a virtual card
 * injected by the CLI or sim layer for tests and demos. It changes where the card is, not what is
 * trusted: the card must still pass every check (chain, CRL, live challenge, PIN).
 */
export type CardOpener<E extends SecureElement = PivElement> = (
  options: OpenCardOptions,
) => Promise<OpenedCard<E>>;

/** Waits for a card (see the file comment) and opens its PIV application. */
export async function openCard(options: OpenCardOptions): Promise<OpenedCard> {
  return openPcscCard(options);
}

/** Opens a card in-process (the virtual card: tests, the embedded demo). Each open is a fresh power-on. */
export async function openInProcessCard(
  card: ApduResponder,
  options: { readerName?: string; element?: OpenCardOptions["element"] } = {},
): Promise<OpenedCard> {
  const transport = new InProcessTransport(card, {
    readerName: options.readerName ?? "In-process virtual card",
  });
  let element: PivElement;
  try {
    element = await PivElement.open(transport, { ...options.element, ownsTransport: true });
  } catch (error) {
    await transport.close();
    throw error;
  }
  return opened(element, transport.readerName, transport.contactless, true, async () => {});
}

async function openPcscCard(options: OpenCardOptions): Promise<OpenedCard> {
  const deadline = Date.now() + Math.max(0, options.timeoutMs);
  const watcher = await ReaderWatcher.open(options.pcsc);
  try {
    if (watcher.present(options.reader).length === 0) {
      options.onPrompt?.({
        ...(options.reader === undefined ? {} : { reader: options.reader }),
        readers: watcher.readers().map((r) => r.name),
      });
    }
    let lastError: unknown;
    for (let attempt = 0; attempt < MAX_CONNECT_ATTEMPTS; attempt++) {
      const presence = await watcher.waitForCard({
        ...(options.reader === undefined ? {} : { reader: options.reader }),
        timeoutMs: Math.max(0, deadline - Date.now()),
        ...(options.signal ? { signal: options.signal } : {}),
      });
      let transport: Awaited<ReturnType<ReaderWatcher["connect"]>>;
      try {
        transport = await watcher.connect({ reader: presence.reader });
      } catch (error) {
        // Pulled between the event and the connect, or not answering: wait for it again.
        if (!isTransient(error) || Date.now() >= deadline) throw error;
        lastError = error;
        await sleep(Math.min(100, Math.max(0, deadline - Date.now())), undefined, {
          ...(options.signal ? { signal: options.signal } : {}),
        });
        continue;
      }
      try {
        const element = await PivElement.open(transport, { ...options.element, ownsTransport: true });
        return opened(element, transport.readerName, transport.contactless, false, async () =>
          watcher.close(),
        );
      } catch (error) {
        await transport.close();
        if (!(error instanceof CardRemovedError) || Date.now() >= deadline) throw error;
        lastError = error;
      }
    }
    throw new NoCardError(
      `could not open the card after ${MAX_CONNECT_ATTEMPTS} attempts` +
        (lastError instanceof Error ? `: ${lastError.message}` : ""),
      { cause: lastError },
    );
  } catch (error) {
    watcher.close();
    throw error;
  }
}

function isTransient(error: unknown): boolean {
  return error instanceof NoCardError || error instanceof CardRemovedError || error instanceof PcscError;
}

function opened(
  element: PivElement,
  readerName: string,
  contactless: boolean,
  inProcess: boolean,
  release: () => Promise<void>,
): OpenedCard {
  let disposed: Promise<void> | undefined;
  const dispose = () => {
    disposed ??= (async () => {
      try {
        await element.close();
      } finally {
        await release();
      }
    })();
    return disposed;
  };
  return { element, readerName, contactless, inProcess, dispose, [Symbol.asyncDispose]: dispose };
}
