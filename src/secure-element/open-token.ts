/**
 * Opening the PKCS#11 token a `--token pkcs11:…?module-path=…` URI names (src/pkcs11/uri.ts), as
 * open-card.ts opens a PIV card: wait for it (bounded), then a Pkcs11Element on it.
 *
 * Detecting the token's insertion goes through the module's slots, never PC/SC (a SafeNet eToken
 * is reached through its vendor's module). Every `pollMs` (default 250 ms), bounded by one deadline:
 * - the pending slot events are taken with C_WaitForSlotEvent(CKF_DONT_BLOCK). The blocking form is
 *   never used: it would hold the event loop (and the signal) as long as the module likes. A module
 *   may have no events (CKR_FUNCTION_NOT_SUPPORTED) or answer CKR_NO_EVENT and never raise one
 *   (SoftHSM2 2.6), so events only hasten a look, they are not waited for;
 * - without an event, when this wait is the module's only user, the module is finalised and
 *   initialised again: a module may build its slot list at C_Initialize only. SoftHSM2 does (2.6.1,
 *   checked): its object store enumerates the token directory once, when C_Initialize creates it,
 *   and afterwards learns only of tokens it initialises itself — a token softhsm2-util makes meanwhile
 *   is missing from C_GetSlotList(tokenPresent) however often and however long it is asked (a
 *   deleted one stays listed), until C_Finalize + C_Initialize. So merely polling the slot list of a
 *   module kept initialised would never see it (test/secure-element/open-token.test.ts shows both).
 *   The cost is small: on SoftHSM2 a 10 s wait at 250 ms took ≈ 1 % of one core with the
 *   re-initialisation, ≈ 0.3–0.7 % without it. While another user holds the module (an open
 *   element) it is not re-initialised, and only its slot list is polled;
 * - then C_GetSlotList(tokenPresent) and the tokens' info are matched against the URI.
 * NoCardError (exit 10) at the deadline; the signal ends the wait at once.
 *
 * The secure channel policy does not apply: between library and token the channel is the token's
 * business (SecureChannelInfo "token"), so a token is neither refused for lacking SCP11 nor
 * reported as "plaintext".
 */
import { setTimeout as sleep } from "node:timers/promises";
import { NoCardError, UsageError } from "../errors.js";
import { CKF_DONT_BLOCK, CKR_FUNCTION_NOT_SUPPORTED } from "../pkcs11/constants.js";
import { returnValueOf } from "../pkcs11/errors.js";
import {
  defaultModuleRegistry,
  type Handle,
  type Pkcs11ModuleLease,
  type Pkcs11ModuleRegistry,
} from "../pkcs11/module.js";
import { describeTokenFilter, matchingTokenSlots, type TokenFilter } from "../pkcs11/pkcs11-token.js";
import { describeTokenUri, type Pkcs11TokenUri } from "../pkcs11/uri.js";
import type { CardPrompt, OpenedCard } from "./open-card.js";
import { Pkcs11Element, type Pkcs11ElementOptions } from "./pkcs11-element.js";

/** Default interval between two looks at the slots. */
export const TOKEN_POLL_MS = 250;

export interface OpenTokenOptions {
  /** Bound on the whole open, waiting for the token included (NoCardError, exit 10, after it). */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** Called once when the token is not there and the wait begins. */
  readonly onPrompt?: (prompt: CardPrompt) => void;
  /** Interval between looks at the slots (default {@link TOKEN_POLL_MS}). */
  readonly pollMs?: number;
  /** Where the module is loaded (tests: a registry over a fake module). */
  readonly registry?: Pkcs11ModuleRegistry;
  /** Storage budget and role labels of the element. */
  readonly element?: Omit<Pkcs11ElementOptions, keyof TokenFilter | "modulePath" | "registry">;
}

/** How the wait noticed the token. */
export type TokenWaitMode = "present" | "slot-event" | "poll";

/** The Pkcs11TokenOptions filter of a URI; UsageError for a URI that names an object or no token. */
export function tokenFilterOf(uri: Pkcs11TokenUri): TokenFilter {
  if (uri.object !== undefined || uri.type !== undefined || uri.id !== undefined) {
    throw new UsageError(
      "--token names a token (token=, serial=); object=, type= and id= are not taken: the onboarding objects have fixed labels (docs/CARD.md)",
    );
  }
  if (uri.token === undefined && uri.serial === undefined) {
    throw new UsageError(
      "--token needs token=LABEL or serial=SERIAL (a slot id alone can change when a token is initialised)",
    );
  }
  return {
    ...(uri.token !== undefined ? { tokenLabel: uri.token } : {}),
    ...(uri.serial !== undefined ? { tokenSerial: uri.serial } : {}),
    ...(uri.manufacturer !== undefined ? { tokenManufacturer: uri.manufacturer } : {}),
    ...(uri.model !== undefined ? { tokenModel: uri.model } : {}),
    ...(uri.slotId !== undefined ? { slotId: uri.slotId } : {}),
  };
}

/** Waits for the token the URI names (see the file comment) and opens it. */
export async function openToken(
  uri: Pkcs11TokenUri,
  options: OpenTokenOptions,
): Promise<OpenedCard<Pkcs11Element>> {
  const filter = tokenFilterOf(uri);
  const registry = options.registry ?? defaultModuleRegistry;
  const pollMs = options.pollMs ?? TOKEN_POLL_MS;
  const deadline = Date.now() + Math.max(0, options.timeoutMs);
  const lease = await waitForToken(uri.modulePath, filter, {
    registry,
    pollMs,
    deadline,
    ...(options.signal ? { signal: options.signal } : {}),
    onWaiting: () =>
      options.onPrompt?.({
        reader: `PKCS#11 ${describeTokenUri(uri)}`,
        readers: [],
      }),
  });
  let element: Pkcs11Element;
  try {
    // Opened while the wait still holds the module, so it is not finalised in between.
    element = await Pkcs11Element.open({
      ...options.element,
      ...filter,
      modulePath: uri.modulePath,
      registry,
    });
  } finally {
    lease.release();
  }
  const readerName = `PKCS#11 token "${element.info.name}"${element.info.serial ? ` (serial ${element.info.serial})` : ""}`;
  let disposed: Promise<void> | undefined;
  const dispose = () => {
    disposed ??= element.close();
    return disposed;
  };
  return {
    element,
    readerName,
    contactless: false,
    inProcess: false,
    waitForRemoval: ({ signal }) =>
      waitForTokenRemoval(uri.modulePath, filter, { registry, pollMs, ...(signal ? { signal } : {}) }),
    dispose,
    [Symbol.asyncDispose]: dispose,
  };
}

interface WaitOptions {
  readonly registry: Pkcs11ModuleRegistry;
  readonly pollMs: number;
  readonly deadline: number;
  readonly signal?: AbortSignal;
  readonly onWaiting?: (mode: Exclude<TokenWaitMode, "present">) => void;
  /** Reports how the token was found (tests, diagnostics). */
  readonly onFound?: (mode: TokenWaitMode) => void;
}

/**
 * Resolves with a lease on the module once exactly one present token matches `filter`; the caller
 * opens it and releases the lease. NoCardError at the deadline; the signal's reason when aborted.
 */
export async function waitForToken(
  modulePath: string,
  filter: TokenFilter,
  options: WaitOptions,
): Promise<Pkcs11ModuleLease> {
  let lease = await options.registry.acquire(modulePath);
  try {
    drainSlotEvents(lease);
    if (matchingTokenSlots(lease.api, filter).length > 0) {
      options.onFound?.("present");
      return lease;
    }
    options.onWaiting?.("poll");
    for (;;) {
      const left = options.deadline - Date.now();
      if (left <= 0) {
        throw new NoCardError(
          `no PKCS#11 token with ${describeTokenFilter(filter)} in ${modulePath} (looked every ${options.pollMs} ms)`,
        );
      }
      await sleep(
        Math.min(options.pollMs, left),
        undefined,
        options.signal ? { signal: options.signal } : {},
      );
      const event = drainSlotEvents(lease);
      if (!event && options.registry.activeLeases(modulePath) === 1) {
        // No event, and the only user: initialise the module again so it sees tokens that came since.
        lease.release();
        lease = await options.registry.acquire(modulePath);
      }
      if (matchingTokenSlots(lease.api, filter).length > 0) {
        options.onFound?.(event ? "slot-event" : "poll");
        return lease;
      }
    }
  } catch (error) {
    lease.release();
    throw error;
  }
}

/** Resolves once no present token matches `filter` any more, or when `signal` fires. */
export async function waitForTokenRemoval(
  modulePath: string,
  filter: TokenFilter,
  options: {
    readonly registry?: Pkcs11ModuleRegistry;
    readonly pollMs?: number;
    readonly signal?: AbortSignal;
  },
): Promise<void> {
  const registry = options.registry ?? defaultModuleRegistry;
  const pollMs = options.pollMs ?? TOKEN_POLL_MS;
  for (;;) {
    // A fresh lease each look (the module re-initialised when nobody else holds it).
    const lease = await registry.acquire(modulePath);
    let present: boolean;
    try {
      present = matchingTokenSlots(lease.api, filter).length > 0;
    } finally {
      lease.release();
    }
    if (!present) return;
    try {
      await sleep(pollMs, undefined, options.signal ? { signal: options.signal } : {});
    } catch {
      return; // aborted: the agent is stopping
    }
  }
}

/**
 * Takes the pending slot events without blocking (C_WaitForSlotEvent with CKF_DONT_BLOCK, at most
 * 64): true when there was one. A module without slot events (CKR_FUNCTION_NOT_SUPPORTED, or no
 * function) has none; SoftHSM2 2.6 answers CKR_NO_EVENT without ever raising one.
 */
function drainSlotEvents(lease: Pkcs11ModuleLease): boolean {
  const wait = lease.api.C_WaitForSlotEvent;
  if (!wait) return false;
  let any = false;
  for (let i = 0; i < 64; i++) {
    let slot: Handle | null;
    try {
      slot = wait.call(lease.api, CKF_DONT_BLOCK);
    } catch (error) {
      if (returnValueOf(error) === CKR_FUNCTION_NOT_SUPPORTED) return any;
      throw error;
    }
    if (slot === null) return any;
    any = true;
  }
  return any;
}
