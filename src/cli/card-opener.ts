/**
 * How a CLI run opens cards: PC/SC (`openCard`) unless the context injects another opener, or
 * HSM_ONBOARD_VIRTUAL_CARD names a virtual card state file (tests and demos). The emulator is
 * imported only in that case, so the product's card path (src/secure-element) never contains it.
 */
import { resolve } from "node:path";
import { type CardOpener, openCard } from "../secure-element/open-card.js";
import type { CliContext } from "./context.js";

/**
 * Environment variable a command reads to open a virtual card state file in-process instead of
 * waiting on PC/SC: for tests and demos only. The card must still pass every check (chain to the
 * trust anchor, CRL, live challenge, PIN), so it changes where the card is, not what is trusted.
 */
export const VIRTUAL_CARD_ENV = "HSM_ONBOARD_VIRTUAL_CARD";

/** Whether this run opens an in-process card (injected or named by VIRTUAL_CARD_ENV). */
export function usesVirtualCard(ctx: CliContext): boolean {
  return ctx.openCard !== undefined || Boolean(ctx.env[VIRTUAL_CARD_ENV]);
}

/** The card opener of this run: the injected one, else the virtual card named by VIRTUAL_CARD_ENV, else PC/SC. */
export function cardOpener(ctx: CliContext): CardOpener {
  if (ctx.openCard) return ctx.openCard;
  const file = ctx.env[VIRTUAL_CARD_ENV];
  if (!file) return openCard;
  const path = resolve(ctx.cwd, file);
  return async (options) => {
    const { virtualCardOpener } = await import("../card-emulator/open-virtual-card.js");
    return virtualCardOpener(path, VIRTUAL_CARD_ENV)(options);
  };
}
