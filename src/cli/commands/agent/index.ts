import { Command } from "commander";
import type { CliContext } from "../../context.js";
import { agentAuditCommand } from "./audit.js";
import { agentFactoryInitCommand } from "./factory-init.js";
import { agentRunCommand } from "./run.js";
import { agentStatusCommand } from "./status.js";

/** `hsm-onboard agent …`: the HSM side (SPEC.md §6). One subcommand per file. */
export function agentCommand(ctx: CliContext): Command {
  const agent = new Command("agent").description(
    "HSM side: factory setup, wait for a configuration card and apply it, status, audit log",
  );
  for (const make of [agentFactoryInitCommand, agentRunCommand, agentStatusCommand, agentAuditCommand]) {
    agent.addCommand(make(ctx));
  }
  return agent;
}
