/**
 * Opening a virtual card state file in-process, as a `CardOpener` (src/secure-element/open-card.ts):
 * the CLI injects it when HSM_ONBOARD_VIRTUAL_CARD names a file (tests, demos), the sim uses it
 * directly. The product's secure-element layer never loads the emulator.
 */
import { existsSync } from "node:fs";
import { basename } from "node:path";
import { NoCardError } from "../errors.js";
import {
  type CardOpener,
  type OpenCardOptions,
  type OpenedCard,
  openInProcessCard,
} from "../secure-element/open-card.js";
import { VirtualPivCard } from "./virtual-piv-card.js";

/**
 * Opens the virtual card whose state is in `path` (each open a fresh power-on). NoCardError when the
 * file is missing: it would otherwise silently become a factory-fresh card. `source` names where
 * the path came from, for the message.
 */
export function openVirtualCardFile(
  path: string,
  options: { readonly element?: OpenCardOptions["element"]; readonly source?: string } = {},
): Promise<OpenedCard> {
  if (!existsSync(path)) {
    throw new NoCardError(`no virtual card state at ${path}${options.source ? ` (${options.source})` : ""}`);
  }
  return openInProcessCard(VirtualPivCard.fromFile(path), {
    readerName: `Virtual card ${basename(path)}`,
    ...(options.element ? { element: options.element } : {}),
  });
}

/** A CardOpener that opens the virtual card state file `path` instead of waiting on PC/SC. */
export function virtualCardOpener(path: string, source?: string): CardOpener {
  return async (options) =>
    openVirtualCardFile(path, {
      ...(options.element ? { element: options.element } : {}),
      ...(source ? { source } : {}),
    });
}
