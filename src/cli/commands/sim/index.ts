import { Command } from "commander";
import type { CliContext } from "../../context.js";
import { simRackCommand, simServeCommand } from "./rack.js";

/** `hsm-onboard sim …`: simulations on real system components (SPEC.md §7). */
export function simCommand(ctx: CliContext): Command {
  return new Command("sim")
    .description("Simulations through the real stack: pcscd, virtual cards, network namespaces (root)")
    .addCommand(simRackCommand(ctx))
    .addCommand(simServeCommand(ctx), { hidden: true });
}
