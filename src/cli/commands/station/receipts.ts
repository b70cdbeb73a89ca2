import { Command } from "commander";
import { ExitCode } from "../../../errors.js";
import type { Pkcs11TokenUri } from "../../../pkcs11/uri.js";
import { type CollectResult, collectReceiptsToStation } from "../../../station/collect-receipts.js";
import { stationName } from "../../../station/inventory/open.js";
import { receiptRecordsOf } from "../../../station/inventory/record.js";
import { type ReceiptReport, type ReceiptRow, readReceipts } from "../../../station/read-receipts.js";
import { parseTokenOption, TOKEN_HELP } from "../../card-opener.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { parseFd, secretSource } from "../../secrets.js";
import {
  ALLOW_PLAINTEXT_HELP,
  DEFAULT_CARD_TIMEOUT_SECONDS,
  integerIn,
  openStationCard,
  plural,
  SCP11A_HELP,
  STATION_DIR_HELP,
  stationDirOf,
} from "./common.js";
import { openCommandInventory } from "./inventory.js";

interface ReceiptsOptions {
  readonly reader?: string;
  readonly token?: Pkcs11TokenUri;
  readonly timeout: number;
  readonly stationDir?: string;
  readonly allowPlaintext?: boolean;
  readonly scp11a?: boolean;
  readonly json?: boolean;
  readonly db?: string;
  readonly collect?: boolean;
  readonly pinStdin?: boolean;
  readonly pinFd?: number;
}

/** `hsm-onboard station receipts [--reader NAME] [--station-dir DIR] [--json]` (SPEC.md §7). */
export function stationReceiptsCommand(ctx: CliContext): Command {
  return new Command("receipts")
    .description("Show, verified, which HSMs came up with which addresses (the receipts on the card)")
    .option("--reader <name>", "use the reader whose name contains this (default: any)")
    .option("--token <pkcs11-uri>", TOKEN_HELP, parseTokenOption)
    .option(
      "--timeout <seconds>",
      "how long to wait for the card",
      integerIn("--timeout", 1, 3600),
      DEFAULT_CARD_TIMEOUT_SECONDS,
    )
    .option("--station-dir <dir>", STATION_DIR_HELP)
    .option("--allow-plaintext", ALLOW_PLAINTEXT_HELP)
    .option("--scp11a", SCP11A_HELP)
    .option("--json", "print the report as JSON")
    .option(
      "--collect",
      "archive the verified receipts in the station directory (durably), then clear them from the card (PIN)",
    )
    .option("--pin-stdin", "with --collect: read the PIN from standard input")
    .option("--pin-fd <n>", "with --collect: read the PIN from this file descriptor", parseFd)
    .addHelpText(
      "after",
      `
No PIN is needed to read. With --collect the receipts are then archived in the station directory
(receipts-archive/, fsync'd and read back) and the receipt objects whose every receipt is verified
are cleared from the card (the card's PIN), so that the next rack's receipts fit; an object holding
a receipt that is not verified stays on the card (exit 15). A receipt is verified (✓) when its signature and device certificate chain to the
trust anchor, the certificate names the receipt's HSM serial, it is for the configuration the card
holds now, and the state the HSM applied is its planned entry. Otherwise ✗ and the reason.
Exit status: 0 read (whatever the receipts say), 10 no card, 15 at least one receipt is forged or
unreadable.

Examples:
  $ hsm-onboard station receipts
  $ hsm-onboard station receipts --reader Yubico --json`,
    )
    .action(async (options: ReceiptsOptions) => {
      const dir = stationDirOf(ctx, options.stationDir);
      const card = await openStationCard(ctx, {
        ...(options.reader === undefined ? {} : { reader: options.reader }),
        ...(options.token === undefined ? {} : { token: options.token }),
        timeoutSeconds: options.timeout,
        whose: "the card with the receipts",
        stationDir: dir,
        allowPlaintext: options.allowPlaintext === true,
        scp11a: options.scp11a === true,
      });
      let report: ReceiptReport;
      let collected: CollectResult | undefined;
      try {
        if (options.collect) {
          // Receipts mid-room (issue 13): verified, archived durably, only then cleared.
          const pins = secretSource(ctx, {
            ...(options.pinStdin ? { pinStdin: true } : {}),
            ...(options.pinFd === undefined ? {} : { pinFd: options.pinFd }),
          });
          try {
            collected = await collectReceiptsToStation({
              element: card.element,
              stationDir: dir,
              pin: (request) =>
                pins.read(
                  `PIN of the card (${request.triesLeft < 0 ? "tries left unknown" : plural(request.triesLeft, "try", "tries")} left)`,
                ),
              onProgress: (message) => writeLine(ctx.stderr, `  ${message}`),
            });
          } finally {
            pins.close();
          }
          report = collected.report;
        } else {
          report = await readReceipts({ element: card.element, stationDir: dir });
        }
      } finally {
        await card.dispose();
      }
      // Every receipt read, verified or not, goes into the inventory (issue 14).
      const inventory = await openCommandInventory(ctx, options);
      try {
        await inventory.recordReceipts(receiptRecordsOf(report, new Date(), stationName(dir)));
      } finally {
        await inventory.close();
      }
      if (options.json) {
        writeJson(ctx.stdout, {
          ...reportJson(report),
          ...(collected
            ? {
                collected: {
                  archive: collected.archive ?? null,
                  receiptsArchived: collected.receiptsArchived,
                  cleared: collected.cleared,
                  kept: collected.kept,
                  freeBytes: collected.freeBytes,
                },
              }
            : {}),
        });
      } else {
        printReport(ctx, report);
        if (collected) {
          writeLine(
            ctx.stdout,
            `Collected: ${plural(collected.receiptsArchived, "receipt")} archived in ${collected.archive ?? "(nothing to archive)"}; ` +
              `${plural(collected.cleared.length, "object")} cleared, ${plural(collected.kept.length, "object")} kept; ${collected.freeBytes} bytes free`,
          );
          for (const k of collected.kept) writeLine(ctx.stdout, `  kept ${k.item}: ${k.reason}`);
        }
      }
      if (report.receipts.some((r) => !r.authentic) || (collected?.kept.length ?? 0) > 0) {
        ctx.exitCode = ExitCode.integrity;
      }
    });
}

function reportJson(report: ReceiptReport) {
  return {
    card: report.card,
    configuration: report.configuration
      ? {
          ...report.configuration,
          notBefore: report.configuration.notBefore.toISOString(),
          notAfter: report.configuration.notAfter.toISOString(),
        }
      : null,
    configurationProblem: report.configurationProblem ?? null,
    receipts: report.receipts.map((r) => ({
      location: r.location,
      serial: r.serial ?? null,
      hostname: r.hostname ?? null,
      addresses: r.addresses,
      outcome: r.outcome ?? null,
      outcomeName: r.outcomeName ?? null,
      dryRun: r.dryRun === true,
      channel: r.channel ?? null,
      time: r.time?.toISOString() ?? null,
      configurationId: r.configurationId ?? null,
      sequence: r.sequence ?? null,
      authentic: r.authentic,
      current: r.current,
      verified: r.verified,
      revoked: r.revoked === true,
      reason: r.reason ?? null,
    })),
  };
}

function printReport(ctx: CliContext, report: ReceiptReport): void {
  const c = report.configuration;
  writeLine(
    ctx.stdout,
    c
      ? `Card in ${report.card.name}: configuration ${c.configurationId} of "${c.owner}", sequence ${c.sequence}, valid until ${c.notAfter.toISOString()}`
      : `Card in ${report.card.name}: ${report.configurationProblem ?? "no configuration"}`,
  );
  if (report.receipts.length === 0) {
    writeLine(ctx.stdout, "No receipts on the card yet.");
    return;
  }
  const header = ["SERIAL", "HOSTNAME", "ADDRESSES APPLIED", "OUTCOME", "CHANNEL", "TIME", "VERIFIED"];
  const rows = report.receipts.map((r: ReceiptRow) => [
    r.serial ?? "?",
    r.hostname ?? "-",
    r.addresses.length > 0 ? r.addresses.join(", ") : "-",
    r.outcomeName === undefined ? "-" : `${r.outcomeName} (${r.outcome})`,
    r.channel ?? "-",
    r.time ? r.time.toISOString().replace(".000Z", "Z") : "-",
    r.verified ? "✓" : `✗ ${r.reason ?? ""}`,
  ]);
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((row) => (i === 6 ? 0 : row[i]!.length))),
  );
  const format = (cells: string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  writeLine(ctx.stdout, format(header));
  for (const row of rows) writeLine(ctx.stdout, format(row));
  const verified = report.receipts.filter((r) => r.verified).length;
  writeLine(ctx.stdout, `${plural(report.receipts.length, "receipt")}, ${verified} verified`);
}
