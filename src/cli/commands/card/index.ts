import { Command } from "commander";
import type { CliContext } from "../../context.js";
import { cardEmulateCommand } from "./emulate.js";

/** `hsm-onboard card …`: one subcommand per file; add new ones to the list below. */
export function cardCommand(ctx: CliContext): Command {
  const subcommands = [cardEmulateCommand];
  const card = new Command("card").description("Secure element: emulate a virtual PIV card (more to come)");
  for (const make of subcommands) card.addCommand(make(ctx));
  return card;
}
