import { Command } from "commander";
import type { CliContext } from "../../context.js";
import { cardEmulateCommand } from "./emulate.js";
import { cardPersonalizeCommand } from "./personalize.js";
import { cardStatusCommand } from "./status.js";

/** `hsm-onboard card …`: one subcommand per file; add new ones to the list below. */
export function cardCommand(ctx: CliContext): Command {
  const subcommands = [cardEmulateCommand, cardPersonalizeCommand, cardStatusCommand];
  const card = new Command("card").description(
    "Secure element: personalise a PIV card, show its status, emulate a virtual one",
  );
  for (const make of subcommands) card.addCommand(make(ctx));
  return card;
}
