import { Command } from "commander";
import type { CliContext } from "../../context.js";
import { planCheckCommand } from "./check.js";

export function planCommand(ctx: CliContext): Command {
  return new Command("plan")
    .description("Network plans: check before writing a card")
    .addCommand(planCheckCommand(ctx));
}
