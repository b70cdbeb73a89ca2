import { resolve } from "node:path";
import { Command, Option } from "commander";
import { MAX_SET_CARDS } from "../../../config/manifest.js";
import { loadPlanFile, PLAN_FORMATS, type PlanFormat } from "../../../config/plan.js";
import type { NetworkPlan } from "../../../config/plan-model.js";
import { formatPlanProblem, PlanInvalidError, UsageError } from "../../../errors.js";
import type { Pkcs11TokenUri } from "../../../pkcs11/uri.js";
import { channelLabel } from "../../../secure-element/secure-element.js";
import {
  type CardSetJournal,
  readCardSetJournal,
  remainingCards,
} from "../../../station/card-set-journal.js";
import { loadStationTrust } from "../../../station/station-dir.js";
import {
  DEFAULT_VALID_DAYS,
  MAX_VALID_DAYS,
  type WriteResult,
  writeConfigurationToCard,
} from "../../../station/write-card.js";
import { parseTokenOption, TOKEN_HELP, usesVirtualCard } from "../../card-opener.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { parseFd, type SecretSource, secretSource } from "../../secrets.js";
import {
  ALLOW_PLAINTEXT_HELP,
  bytes,
  DEFAULT_CARD_TIMEOUT_SECONDS,
  integerIn,
  openStationCard,
  plural,
  SCP11A_HELP,
  STATION_DIR_HELP,
  stationDirOf,
} from "./common.js";
import { awaitRemoval } from "./cosign.js";
import { openCommandInventory } from "./inventory.js";

interface WriteOptions {
  readonly plan: string;
  readonly owner?: string;
  readonly format?: PlanFormat;
  readonly reader?: string;
  readonly token?: Pkcs11TokenUri;
  readonly validDays: number;
  readonly timeout: number;
  readonly stationDir?: string;
  readonly allowPlaintext?: boolean;
  readonly scp11a?: boolean;
  readonly json?: boolean;
  readonly pinStdin?: boolean;
  readonly pinFd?: number;
  readonly totpStdin?: boolean;
  readonly db?: string;
  readonly cosigners: number;
  readonly resume?: string;
}

const HELP = `
Steps: wait for the card, authenticate it (chain to the manufacturer root, the token CA's CRL, a
live challenge on its 9E key), the officer's PIN (and TOTP code when the officer is enrolled at
this station), check the plan's owner against the card's, allocate the owner's next sequence
number, encode and sign with the card's 9C key, check that it fits, write (the manifest last),
read everything back and verify it. Progress goes to standard error; the summary (or --json) to
standard output.

A plan larger than one card (issue 13) is written as a card set: the first card says how many
cards the plan needs; each card is a complete signed configuration for its serial range, all with
one configuration id and sequence ("card k of n" in the manifest). With one reader, remove each
card when told and insert the next (a card already holding a card of the set is refused before
its PIN). Each card is authenticated and asks for its own PIN. An interrupted set is finished with
--resume ID and the same plan: the remaining cards get the same id, sequence and content.

Secrets: from the terminal with echo off; with --pin-stdin one per line from standard input (PIN,
then the TOTP code if asked); with --pin-fd N from that descriptor; --totp-stdin reads the TOTP code
from standard input whatever the PIN source.

Exit status: 0 written and verified, 2 usage, 10 no card in time, 11 card not trusted, 12 card
revoked, 13 wrong PIN (tries left shown) or TOTP code rejected, 14 PIN blocked, 15 read-back
mismatch, 16 plan of another owner, 22 does not fit the card (nothing written), 23 plan invalid.
For a card set, the status of the card that ended the session; a set left unfinished prints the
--resume command to finish it.

Examples:
  $ hsm-onboard station write --plan examples/rack-4.yaml
  $ hsm-onboard station write --plan rack.csv --owner "ACME Bank" --reader Yubico --valid-days 7
  $ printf '%s\\n' "$PIN" | hsm-onboard station write --plan room-40.yaml --pin-stdin --json
  $ hsm-onboard station write --plan hall-5000.csv --owner "ACME Bank" --reader Yubico
  $ hsm-onboard station write --plan hall-5000.csv --owner "ACME Bank" --resume 3f2a9c1e
  $ hsm-onboard station write --plan rack.yaml --token 'pkcs11:token=Alice?module-path=/usr/lib/libeToken.so'
`;

/** `hsm-onboard station write --plan PLAN [--reader NAME] [--valid-days N] [--station-dir DIR] [--json]` (SPEC.md §7). */
export function stationWriteCommand(ctx: CliContext): Command {
  return new Command("write")
    .description("Write a signed network configuration for one HSM or a whole rack onto the officer's card")
    .requiredOption("--plan <file>", "network plan (YAML, JSON or CSV)")
    .option("--owner <name>", "owner of a CSV plan (must match the owner in a YAML/JSON plan)")
    .addOption(
      new Option("--format <format>", "plan format, when the file name does not tell").choices(PLAN_FORMATS),
    )
    .option("--reader <name>", "use the reader whose name contains this (default: any)")
    .option("--token <pkcs11-uri>", TOKEN_HELP, parseTokenOption)
    .option(
      "--valid-days <n>",
      "days the configuration stays valid",
      integerIn("--valid-days", 1, MAX_VALID_DAYS),
      DEFAULT_VALID_DAYS,
    )
    .option(
      "--timeout <seconds>",
      "how long to wait for the card",
      integerIn("--timeout", 1, 3600),
      DEFAULT_CARD_TIMEOUT_SECONDS,
    )
    .option(
      "--cosigners <n>",
      "co-signatures to keep room for (dual control: station cosign adds them)",
      integerIn("--cosigners", 0, 15),
      0,
    )
    .option(
      "--resume <id>",
      "finish the card set of this configuration id (same plan): the cards not yet written",
    )
    .option("--station-dir <dir>", STATION_DIR_HELP)
    .option("--allow-plaintext", ALLOW_PLAINTEXT_HELP)
    .option("--scp11a", SCP11A_HELP)
    .option("--json", "print the summary as JSON")
    .option("--pin-stdin", "read the PIN (then the TOTP code) from standard input, one per line")
    .option("--pin-fd <n>", "read the PIN (then the TOTP code) from this file descriptor", parseFd)
    .option("--totp-stdin", "read the TOTP code from standard input")
    .addHelpText("after", HELP)
    .action(async (options: WriteOptions) => {
      const dir = stationDirOf(ctx, options.stationDir);
      await loadStationTrust(dir); // not initialised: say so before asking for a card
      const plan = await loadPlan(ctx, options);
      // The inventory allocates the sequence and records the write; unusable: say so before the card.
      const inventory = await openCommandInventory(ctx, options);
      if (!options.pinStdin && options.pinFd === undefined && !(ctx.stdin as { isTTY?: boolean }).isTTY) {
        // Say it now, not after the officer has inserted the card.
        await inventory.close();
        throw new UsageError("no terminal to read the PIN from: use --pin-stdin or --pin-fd N");
      }
      const pinSource = secretSource(ctx, {
        ...(options.pinStdin ? { pinStdin: true } : {}),
        ...(options.pinFd === undefined ? {} : { pinFd: options.pinFd }),
      });
      let totpSource: SecretSource | undefined;
      const results: WriteResult[] = [];
      // The channel each card was written through (SCP11a, SCP11b, plaintext or token).
      const channels: string[] = [];
      let journal: CardSetJournal | undefined;
      try {
        journal = options.resume === undefined ? undefined : await readCardSetJournal(dir, options.resume);
        if (journal) {
          const left = remainingCards(journal);
          writeLine(
            ctx.stderr,
            `Card set ${journal.configurationId} (sequence ${journal.sequence}): ` +
              `${journal.written.length} of ${journal.cards.length} cards written; ` +
              (left.length === 0 ? "nothing left to write" : `next: card ${left.join(", ")}`),
          );
        }
        // One card per pass; a set has at most MAX_SET_CARDS (bounded loop).
        for (let pass = 0; pass < MAX_SET_CARDS; pass++) {
          const next = journal ? remainingCards(journal)[0] : undefined;
          const whose =
            journal && next !== undefined
              ? `an officer's card for card ${next} of ${journal.cards.length}`
              : "the officer's card";
          const card = await openStationCard(ctx, {
            ...(options.reader === undefined ? {} : { reader: options.reader }),
            ...(options.token === undefined ? {} : { token: options.token }),
            timeoutSeconds: options.timeout,
            whose: options.token === undefined ? whose : whose.replace(/card$/, "token"),
            stationDir: dir,
            allowPlaintext: options.allowPlaintext === true,
            scp11a: options.scp11a === true,
          });
          let result: WriteResult;
          try {
            writeLine(ctx.stderr, `Card found in ${card.readerName}`);
            result = await writeConfigurationToCard({
              element: card.element,
              plan,
              stationDir: dir,
              inventory,
              validDays: options.validDays,
              cosigners: options.cosigners,
              allowCardSet: true,
              ...(journal ? { cardSet: journal } : {}),
              pin: (request) =>
                pinSource.read(
                  `PIN of ${request.officer ? `"${request.officer}"` : "the card"} (${
                    request.triesLeft < 0 ? "tries left unknown" : plural(request.triesLeft, "try", "tries")
                  } left)`,
                ),
              totpCode: (request) => {
                totpSource ??=
                  options.totpStdin && !options.pinStdin ? secretSource(ctx, { pinStdin: true }) : pinSource;
                return totpSource.read(`TOTP code of "${request.officer}"`);
              },
              onProgress: (progress) => {
                const counter = progress.total ? `[${progress.done}/${progress.total}] ` : "";
                writeLine(ctx.stderr, `  ${counter}${progress.message}`);
              },
            });
          } finally {
            await card.dispose();
          }
          results.push(result);
          channels.push(channelLabel(card.element.info.channel));
          if (!result.cardSet) break;
          journal = result.cardSet.journal;
          const { index, count, remaining } = result.cardSet;
          writeLine(
            ctx.stderr,
            `Card ${index} of ${count} written and verified (${plural(result.hsms, "HSM")}, serials ${result.cardSet.ranges[index - 1]!.firstSerial}..${result.cardSet.ranges[index - 1]!.lastSerial})`,
          );
          if (remaining.length === 0) break;
          if (options.token !== undefined) {
            // One token per run: the next card of the set is another token, named by its own URI.
            writeLine(
              ctx.stderr,
              `Next: card ${remaining[0]} of ${count} on another token: hsm-onboard station write --plan ${options.plan} --resume ${result.configurationId.slice(0, 8)} --token 'pkcs11:token=…'`,
            );
            break;
          }
          if (!usesVirtualCard(ctx)) {
            await awaitRemoval(
              ctx,
              options.reader ?? card.readerName,
              `Remove card ${index} of ${count}`,
              options.timeout * 1000,
            );
          }
        }
      } catch (error) {
        if (journal && remainingCards(journal).length > 0) {
          writeLine(
            ctx.stderr,
            `hsm-onboard: card set ${journal.configurationId}: ${journal.written.length} of ${journal.cards.length} cards written; ` +
              `finish it with: hsm-onboard station write --plan ${options.plan}${options.owner === undefined ? "" : ` --owner ${JSON.stringify(options.owner)}`} --resume ${journal.configurationId.slice(0, 8)}`,
          );
        }
        throw error;
      } finally {
        pinSource.close();
        if (totpSource !== pinSource) totpSource?.close();
        await inventory.close();
      }
      const last = results.at(-1);
      if (!last)
        throw new UsageError(`every card of set ${journal?.configurationId ?? ""} is written already`);
      if (!last.cardSet) {
        if (options.json) writeJson(ctx.stdout, { ...writeResultJson(last), channel: channels.at(-1) });
        else printSummary(ctx, last);
        return;
      }
      const set = last.cardSet;
      if (options.json) {
        writeJson(ctx.stdout, {
          owner: last.owner,
          configurationId: last.configurationId,
          sequence: last.sequence,
          hsms: set.planHsms,
          cards: set.count,
          ranges: set.ranges,
          written: results.map((r, i) => ({
            ...writeResultJson(r),
            cardIndex: r.cardSet?.index ?? null,
            channel: channels[i],
          })),
          remaining: set.remaining,
          verified: true,
        });
      } else {
        for (const r of results) {
          writeLine(ctx.stdout, `Card ${r.cardSet?.index} of ${set.count}:`);
          printSummary(ctx, r);
        }
        writeLine(
          ctx.stdout,
          set.remaining.length === 0
            ? `Card set complete: ${plural(set.count, "card")}, ${plural(set.planHsms, "HSM")}, configuration ${last.configurationId}, sequence ${last.sequence}`
            : `Card set incomplete: cards ${set.remaining.join(", ")} of ${set.count} still to write (--resume ${last.configurationId.slice(0, 8)})`,
        );
      }
    });
}

async function loadPlan(ctx: CliContext, options: WriteOptions): Promise<NetworkPlan> {
  try {
    return await loadPlanFile(resolve(ctx.cwd, options.plan), {
      ...(options.owner === undefined ? {} : { owner: options.owner }),
      ...(options.format === undefined ? {} : { format: options.format }),
    });
  } catch (error) {
    if (error instanceof PlanInvalidError) {
      for (const problem of error.problems)
        writeLine(ctx.stderr, `${options.plan}: ${formatPlanProblem(problem)}`);
    }
    throw error;
  }
}

export function writeResultJson(result: WriteResult) {
  return {
    owner: result.owner,
    officer: result.officer ?? null,
    card: result.card,
    configurationId: result.configurationId,
    sequence: result.sequence,
    issuedAt: result.issuedAt.toISOString(),
    notBefore: result.notBefore.toISOString(),
    notAfter: result.notAfter.toISOString(),
    hsms: result.hsms,
    shards: result.shards.map((s) => ({
      ...s,
      objectId: s.objectId.toString(16).toUpperCase(),
    })),
    manifestBytes: result.manifestBytes,
    configurationBytes: result.configurationBytes,
    crlBytes: result.crlBytes,
    crlNumber: Number(result.crlNumber),
    certificatesBytes: result.certificatesBytes,
    usedBytes: result.capacity.usedBytes,
    freeBytes: result.capacity.freeBytes,
    totalBytes: result.capacity.totalBytes,
    removed: result.removed,
    archivedReceipts: result.archivedReceipts ?? null,
    previousSequence: result.previousSequence ?? null,
    cosigners: result.cosigners,
    verified: true,
    durationMs: result.durationMs,
  };
}

function printSummary(ctx: CliContext, r: WriteResult): void {
  const line = (label: string, value: string) => writeLine(ctx.stdout, `  ${label.padEnd(14)}${value}`);
  writeLine(
    ctx.stdout,
    `Configuration written and verified on the card in ${r.card.name}${r.card.serial ? ` (serial ${r.card.serial})` : ""}`,
  );
  line("owner", `"${r.owner}"${r.officer ? `, signed by officer "${r.officer}"` : ""}`);
  line("configuration", r.configurationId);
  line(
    "sequence",
    `${r.sequence}${r.previousSequence !== undefined ? ` (the card held sequence ${r.previousSequence})` : ""}`,
  );
  const days = Math.round((r.notAfter.getTime() - r.issuedAt.getTime()) / 86_400_000);
  line("valid", `${r.notBefore.toISOString()} → ${r.notAfter.toISOString()} (${plural(days, "day")})`);
  line("HSMs", `${r.hsms} in ${plural(r.shards.length, "shard")}`);
  for (const s of r.shards) {
    line(
      s.item,
      `${s.firstSerial} … ${s.lastSerial}  ${plural(s.hsms, "HSM")}  ${bytes(s.bytes)} bytes  sha256 ${s.sha256.slice(0, 16)}…`,
    );
  }
  line("manifest", `${bytes(r.manifestBytes)} bytes (${bytes(r.configurationBytes)} with the shards)`);
  line(
    "CRL",
    `number ${r.crlNumber}, ${bytes(r.crlBytes)} bytes; certificates ${bytes(r.certificatesBytes)} bytes`,
  );
  line(
    "card",
    `${bytes(r.capacity.usedBytes)} bytes used, ${bytes(r.capacity.freeBytes)} free of ${bytes(r.capacity.totalBytes)}`,
  );
  if (r.removed.length > 0) line("removed", r.removed.join(", "));
  if (r.archivedReceipts) line("archived", `previous receipts in ${r.archivedReceipts}`);
  line("took", `${r.durationMs} ms`);
}
