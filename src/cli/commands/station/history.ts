import { Command } from "commander";
import type { HistoryEntry } from "../../../station/inventory/inventory.js";
import { type CliContext, writeJson } from "../../context.js";
import { integerIn, STATION_DIR_HELP } from "./common.js";
import { DB_HELP, openCommandInventory } from "./inventory.js";

interface HistoryOptions {
  readonly owner?: string;
  readonly limit: number;
  readonly json?: boolean;
  readonly stationDir?: string;
  readonly db?: string;
}

/** `hsm-onboard station history [--owner NAME] [--limit N] [--json]` (issue 14). */
export function stationHistoryCommand(ctx: CliContext): Command {
  return new Command("history")
    .description(
      "What the stations did, newest first: plans, writes and co-signatures, receipts collected, journal",
    )
    .option("--owner <name>", "only this owner's plans, writes and sequence numbers")
    .option("--limit <n>", "at most this many entries", integerIn("--limit", 1, 1_000_000), 100)
    .option("--json", "print the history as JSON")
    .option("--station-dir <dir>", STATION_DIR_HELP)
    .option("--db <url>", DB_HELP)
    .addHelpText(
      "after",
      `
Needs no card. Exit status: 0, 2 usage (database unusable).

Examples:
  $ hsm-onboard station history --limit 20
  $ hsm-onboard station history --owner "ACME Bank" --json`,
    )
    .action(async (options: HistoryOptions) => {
      const inventory = await openCommandInventory(ctx, options);
      let entries: HistoryEntry[];
      try {
        entries = await inventory.history({
          limit: options.limit,
          ...(options.owner === undefined ? {} : { owner: options.owner }),
        });
      } finally {
        await inventory.close();
      }
      if (options.json) {
        writeJson(
          ctx.stdout,
          entries.map((e) => ({ ...e, owner: e.owner ?? null, time: e.time.toISOString() })),
        );
        return;
      }
      ctx.stdout.write(
        entries.map((e) => `${e.time.toISOString().slice(0, 19)}Z  ${e.kind.padEnd(8)} ${e.text}\n`).join(""),
      );
    });
}
