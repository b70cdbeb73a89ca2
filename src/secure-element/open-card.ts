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
 * - In-process (tests and the embedded demo): `openInProcessCard(card)` opens a VirtualPivCard
 *   directly; `openCard({ virtualCardState: FILE })` does the same for a card state file, so a CLI
 *   run can be pointed at a virtual card (see VIRTUAL_CARD_ENV) with everything else unchanged.
 *
 * Failures: NoCardError (exit 10) when no card came in time or the reader service is not there;
 * ApplicationNotAvailableError (exit 11) for a card without PIV; PcscUnavailableError (exit 1)
 * when the native binding is missing. Bounded throughout: one deadline for the whole open, at most
 * MAX_CONNECT_ATTEMPTS connects (a card pulled between the event and the connect is waited for again).
 */
import { existsSync } from "node:fs";
import { basename } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { VirtualPivCard } from "../card-emulator/virtual-piv-card.js";
import { NoCardError } from "../errors.js";
import { InProcessTransport } from "../transport/in-process.js";
import { CardRemovedError, PcscError } from "../transport/pcsc-binding.js";
import type { PcscContextOptions } from "../transport/pcsc-context.js";
import { ReaderWatcher } from "../transport/reader-watcher.js";
import { PivElement, type PivElementOptions } from "./piv-element.js";

/**
 * Environment variable a command reads to open a virtual card state file in-process instead of
 * waiting on PC/SC: for tests and demos only. The card must still pass every check (chain to the
 * trust anchor, CRL, live challenge, PIN), so it changes where the card is, not what is trusted.
 */
export const VIRTUAL_CARD_ENV = "HSM_ONBOARD_VIRTUAL_CARD";

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
  /** Open this virtual card state file in-process instead of using PC/SC (tests, demo). */
  readonly virtualCardState?: string;
  /** PC/SC context options: a substitute binding for tests, the ready timeout. */
  readonly pcsc?: PcscContextOptions;
  /** Options of the PIV element (storage limits). */
  readonly element?: Omit<PivElementOptions, "ownsTransport">;
}

/** An open card. `dispose()` ends the session (PIN forgotten, card reset) and stops watching readers. */
export interface OpenedCard extends AsyncDisposable {
  readonly element: PivElement;
  readonly readerName: string;
  readonly contactless: boolean;
  dispose(): Promise<void>;
}

/** Waits for a card (see the file comment) and opens its PIV application. */
export async function openCard(options: OpenCardOptions): Promise<OpenedCard> {
  if (options.virtualCardState !== undefined) {
    const path = options.virtualCardState;
    // A missing file would silently become a factory-fresh card: say what is wrong instead.
    if (!existsSync(path)) throw new NoCardError(`no virtual card state at ${path} (${VIRTUAL_CARD_ENV})`);
    return openInProcessCard(VirtualPivCard.fromFile(path), {
      readerName: `Virtual card ${basename(path)}`,
      element: options.element,
    });
  }
  return openPcscCard(options);
}

/** Opens a virtual card in-process (tests, the embedded demo). Each open is a fresh power-on. */
export async function openInProcessCard(
  card: VirtualPivCard,
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
  return opened(element, transport.readerName, transport.contactless, async () => {});
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
        return opened(element, transport.readerName, transport.contactless, async () => watcher.close());
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
  return { element, readerName, contactless, dispose, [Symbol.asyncDispose]: dispose };
}
