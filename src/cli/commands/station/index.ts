import { Command } from "commander";
import type { CliContext } from "../../context.js";
import { stationCosignCommand } from "./cosign.js";
import { stationEnrollTotpCommand } from "./enroll-totp.js";
import { stationHistoryCommand } from "./history.js";
import { stationInitCommand } from "./init.js";
import { DB_HELP, stationInventoryCommand } from "./inventory.js";
import { stationReceiptsCommand } from "./receipts.js";
import { stationServeCommand } from "./serve.js";
import { stationUpdateCrlCommand } from "./update-crl.js";
import { stationWriteCommand } from "./write.js";

/** `hsm-onboard station …`: the officer's side (SPEC.md §1, §7). One subcommand per file. */
export function stationCommand(ctx: CliContext): Command {
  const subcommands = [
    stationInitCommand,
    stationUpdateCrlCommand,
    stationEnrollTotpCommand,
    stationWriteCommand,
    stationCosignCommand,
    stationReceiptsCommand,
    stationInventoryCommand,
    stationHistoryCommand,
    stationServeCommand,
  ];
  const station = new Command("station").description(
    "Officer's station: trust anchor and CRL, TOTP enrolment, write configurations to cards, read receipts",
  );
  for (const make of subcommands) {
    const command = make(ctx);
    // Every station command takes the inventory database (issue 14).
    if (!command.options.some((o) => o.long === "--db")) command.option("--db <url>", DB_HELP);
    station.addCommand(command);
  }
  return station;
}
