/**
 * How a CLI run opens cards: PC/SC (`openCard`) unless the context injects another opener, or
 * HSM_ONBOARD_VIRTUAL_CARD names a virtual card state file (tests and demos). The emulator is
 * imported only in that case, so the product's card path (src/secure-element) never contains it.
 * A command given `--token pkcs11:…` opens that PKCS#11 token instead (src/secure-element/open-token.ts).
 */
import { resolve } from "node:path";
import { InvalidArgumentError } from "commander";
import { UsageError } from "../errors.js";
import { type Pkcs11TokenUri, parsePkcs11TokenUri } from "../pkcs11/uri.js";
import { type CardOpener, openCard } from "../secure-element/open-card.js";
import { openToken, tokenFilterOf } from "../secure-element/open-token.js";
import type { SecureElement } from "../secure-element/secure-element.js";
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

// ---- PKCS#11 tokens (--token) ------------------------------------------------------------------

/** Help of every `--token` option. */
export const TOKEN_HELP =
  "use this PKCS#11 token (e.g. an eToken) instead of a PIV card: 'pkcs11:token=LABEL?module-path=/path/module.so' (RFC 7512; the PIN is never in the URI)";

/** Commander parser of `--token`: the URI checked before anything else (exit 2 when refused). */
export function parseTokenOption(value: string): Pkcs11TokenUri {
  try {
    const uri = parsePkcs11TokenUri(value);
    tokenFilterOf(uri);
    return uri;
  } catch (error) {
    throw new InvalidArgumentError(error instanceof Error ? error.message : String(error));
  }
}

/**
 * The opener of a command that takes `--reader` or `--token`: the token when one is named (the
 * reader filter and the SCP channel policy do not apply to it), else this run's card opener.
 */
export function elementOpener(
  ctx: CliContext,
  options: { readonly token?: Pkcs11TokenUri; readonly reader?: string },
): CardOpener<SecureElement> {
  if (options.token === undefined) return cardOpener(ctx);
  if (options.reader !== undefined) throw new UsageError("use either --reader or --token, not both");
  const uri = options.token;
  return (open) =>
    openToken(uri, {
      timeoutMs: open.timeoutMs,
      ...(open.signal ? { signal: open.signal } : {}),
      ...(open.onPrompt ? { onPrompt: open.onPrompt } : {}),
    });
}
