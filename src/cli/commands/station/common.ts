/**
 * What the station commands share: the station directory option, opening the officer's card (PC/SC
 * by default; a virtual card state file named by HSM_ONBOARD_VIRTUAL_CARD for tests and demos), and
 * small formatting helpers.
 */
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { InvalidArgumentError } from "commander";
import { UsageError } from "../../../errors.js";
import { describeTokenUri, type Pkcs11TokenUri } from "../../../pkcs11/uri.js";
import { readScpTrust, secureChannelPolicy } from "../../../secure-element/channel-policy.js";
import type { OpenedCard } from "../../../secure-element/open-card.js";
import type { SecureElement } from "../../../secure-element/secure-element.js";
import type { CrlUpdate } from "../../../station/crl-update.js";
import { OCE_FILES, readStationOce } from "../../../station/oce.js";
import { resolveStationDir } from "../../../station/station-dir.js";
import { elementOpener } from "../../card-opener.js";
import { type CliContext, writeLine } from "../../context.js";

export const STATION_DIR_HELP =
  "station directory (default $XDG_DATA_HOME/hsm-onboard/station, else ~/.local/share/hsm-onboard/station)";

export const DEFAULT_CARD_TIMEOUT_SECONDS = 60;

export function stationDirOf(ctx: CliContext, option: string | undefined): string {
  return resolveStationDir(option, ctx.env, ctx.cwd);
}

/** Commander parser for a whole number in [min, max]. */
export function integerIn(name: string, min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be a whole number from ${min} to ${max}`);
    }
    return n;
  };
}

export interface StationCardOptions {
  readonly reader?: string;
  readonly timeoutSeconds: number;
  /** Who is asked for the card, for the prompt. */
  readonly whose: string;
  /** The station directory: its SCP trust anchors make the secure channel required. */
  readonly stationDir: string;
  /** `--allow-plaintext`: a card that cannot open SCP11 is used in clear (and that is shown). */
  readonly allowPlaintext: boolean;
  /** `--scp11a`: require the station's OCE key (SCP11a is the default whenever the key exists). */
  readonly scp11a?: boolean;
  /** `--token`: this PKCS#11 token instead of a PIV card (the SCP policy does not apply to it). */
  readonly token?: Pkcs11TokenUri;
}

export const SCP11A_HELP =
  "require SCP11a (mutual: the station proves its OCE certificate, pki issue-oce); the default whenever the station has one";

export const ALLOW_PLAINTEXT_HELP =
  "accept a card that cannot open the SCP11 secure channel (older cards); shown and recorded";

/**
 * Waits for the card and opens it. The prompt goes to stderr (stdout stays clean for --json) and
 * only when no card is present yet.
 */
export async function openStationCard(
  ctx: CliContext,
  options: StationCardOptions,
): Promise<OpenedCard<SecureElement>> {
  if (options.scp11a && options.token !== undefined) {
    throw new UsageError("--scp11a is for PIV cards: a PKCS#11 token's channel is its own");
  }
  const oce = await readStationOce(options.stationDir);
  if (options.scp11a && !oce) {
    throw new UsageError(
      `--scp11a: the station has no OCE key (${options.stationDir}/${OCE_FILES.key}): pki issue-oce --pki OWNER_PKI --station-dir ${options.stationDir}`,
    );
  }
  const anchors = await readScpTrust(options.stationDir);
  if (options.scp11a && !anchors) {
    throw new UsageError("--scp11a: no SCP trust anchor installed (station init --scp-trust FILE)");
  }
  const channel = secureChannelPolicy(anchors, options.allowPlaintext, oce);
  const card = await elementOpener(
    ctx,
    options,
  )({
    element: { channel },
    ...(options.reader === undefined ? {} : { reader: options.reader }),
    timeoutMs: options.timeoutSeconds * 1000,
    onPrompt: ({ readers }) => {
      const where =
        options.reader !== undefined
          ? ` into the reader matching "${options.reader}"`
          : options.token !== undefined
            ? ` (${describeTokenUri(options.token)})`
            : readers.length === 0
              ? " (no reader connected yet: plug in the reader or token)"
              : "";
      writeLine(
        ctx.stderr,
        `Insert or tap ${options.whose}${where}… (waiting up to ${options.timeoutSeconds} s)`,
      );
    },
  });
  const c = card.element.info.channel;
  writeLine(
    ctx.stderr,
    c.kind === "scp11"
      ? `Secure channel: ${c.protocol} to the card's SD key (certified by "${c.chain.at(-1)}")${
          c.protocol === "SCP11a" ? "; the card accepted the station's OCE certificate" : ""
        }`
      : c.kind === "token"
        ? "Channel: PKCS#11 token (its module reaches it; SCP11 does not apply to tokens)"
        : `WARNING: no secure channel to the card: PIN and configuration cross the reader in clear${
            channel.scp
              ? " (--allow-plaintext)"
              : " (--allow-plaintext; no SCP trust anchor installed: station init --scp-trust)"
          }`,
  );
  return card;
}

export function plural(n: number, singular: string, pluralForm = `${singular}s`): string {
  return `${n} ${n === 1 ? singular : pluralForm}`;
}

/** 50225 → "50,225". */
export function bytes(n: number): string {
  return n.toLocaleString("en-US");
}

/** One line about a CRL the station took in. */
export function crlLine(update: CrlUpdate): string {
  const entries = update.crl.entries.length;
  return (
    `CRL of "${update.issuer.subject}": number ${update.crlNumber}` +
    (update.unchanged
      ? " (unchanged)"
      : update.previousNumber !== undefined
        ? ` (was ${update.previousNumber})`
        : "") +
    `, ${entries} revoked, next update ${update.crl.nextUpdate?.toISOString() ?? "none"}`
  );
}

/** The bytes of an input file (relative to the working directory); UsageError when unreadable. */
export async function readInput(ctx: CliContext, file: string): Promise<Uint8Array> {
  const path = resolve(ctx.cwd, file);
  try {
    return new Uint8Array(await readFile(path));
  } catch (error) {
    throw new UsageError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
}
