import { Command } from "commander";
import type { HsmState, Inventory } from "../../../station/inventory/inventory.js";
import { dbOf, openInventory } from "../../../station/inventory/open.js";
import { hsmStateJson, stateOf } from "../../../station/inventory/state.js";
import { type CliContext, writeJson } from "../../context.js";
import { STATION_DIR_HELP, stationDirOf } from "./common.js";

export const DB_HELP =
  "inventory database: postgresql://… shared by several stations (default $HSM_ONBOARD_DB, else inventory.sqlite in the station directory)";

interface InventoryOptions {
  readonly owner?: string;
  readonly json?: boolean;
  readonly stationDir?: string;
  readonly db?: string;
}

/** Opens the command's inventory (--db, HSM_ONBOARD_DB, or the station's SQLite file). */
export function openCommandInventory(
  ctx: CliContext,
  options: { readonly stationDir?: string; readonly db?: string },
): Promise<Inventory> {
  const db = dbOf(options.db, ctx.env);
  return openInventory({
    stationDir: stationDirOf(ctx, options.stationDir),
    ...(db === undefined ? {} : { db }),
  });
}

/** `hsm-onboard station inventory [--owner NAME] [--json]` (issue 14). */
export function stationInventoryCommand(ctx: CliContext): Command {
  return new Command("inventory")
    .description(
      "Every planned HSM: written to which card, onboarded with a verified receipt, exit code, when",
    )
    .option("--owner <name>", "only this owner's HSMs")
    .option("--json", "print the inventory as JSON")
    .option("--station-dir <dir>", STATION_DIR_HELP)
    .option("--db <url>", DB_HELP)
    .addHelpText(
      "after",
      `
States: planned · on card (written, no receipt yet) · onboarded ✓ (verified receipt, configured) ·
failed ✗ (verified receipt with another exit code) · receipt ✗ (a receipt that does not verify) ·
dry run (the HSM applied nothing). Needs no card. Exit status: 0, 2 usage (database unusable).

Examples:
  $ hsm-onboard station inventory --owner "ACME Bank"
  $ HSM_ONBOARD_DB=postgresql://station@db/inventory hsm-onboard station inventory --json`,
    )
    .action(async (options: InventoryOptions) => {
      const inventory = await openCommandInventory(ctx, options);
      let states: HsmState[];
      try {
        states = await inventory.inventory(options.owner === undefined ? {} : { owner: options.owner });
      } finally {
        await inventory.close();
      }
      if (options.json) {
        writeJson(ctx.stdout, states.map(hsmStateJson));
        return;
      }
      const rows = states.map((s) => {
        const { state, detail } = stateOf(s);
        const when = `${(s.receipt?.at ?? s.written?.at ?? s.plannedAt).toISOString().slice(0, 19)}Z`;
        return [s.owner, s.serial, s.hostname, state, String(s.written?.sequence ?? "-"), when, detail];
      });
      const header = ["OWNER", "SERIAL", "HOSTNAME", "STATE", "SEQ", "WHEN", "DETAIL"];
      const widths = header.map((h, i) => Math.min(40, Math.max(h.length, ...rows.map((r) => r[i]!.length))));
      const line = (r: readonly string[]) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
          .join("  ")
          .trimEnd();
      const counts = new Map<string, number>();
      for (const r of rows) counts.set(r[3]!, (counts.get(r[3]!) ?? 0) + 1);
      const summary = [...counts].map(([k, v]) => `${v} ${k}`).join(", ");
      ctx.stdout.write(
        `${[line(header), ...rows.map(line), `${states.length} HSMs${summary ? `: ${summary}` : ""}`].join("\n")}\n`,
      );
    });
}
