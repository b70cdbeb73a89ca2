import { Command } from "commander";
import { describeDevice } from "../../../agent/device-identity.js";
import { plannedAddresses } from "../../../agent/net/net-backend.js";
import { AgentStateStore } from "../../../agent/state-store.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { resolveStateDir, STATE_DIR_HELP } from "./state-dir.js";

interface StatusOptions {
  stateDir?: string;
  json?: boolean;
}

export function agentStatusCommand(ctx: CliContext): Command {
  return new Command("status")
    .description("Show the agent's stage, serial, owner, applied configuration and last error")
    .option("--state-dir <dir>", STATE_DIR_HELP)
    .option("--json", "print the status as JSON")
    .addHelpText(
      "after",
      `
Examples:
  $ hsm-onboard agent status --state-dir /var/lib/hsm-onboard
  $ hsm-onboard agent status --state-dir ./agent --json`,
    )
    .action(async (options: StatusOptions) => {
      const { state } = await AgentStateStore.open(resolveStateDir(ctx, options.stateDir));
      const configured = state.configured;
      const status = {
        stage: state.stage,
        serial: state.serial,
        device: describeDevice(state.device),
        owner: state.owner ?? null,
        quorum: state.quorum.required,
        sequence: configured?.sequence ?? null,
        configurationId: configured?.configurationId ?? null,
        hostname: configured?.network.hostname ?? null,
        addresses: configured ? plannedAddresses(configured.network) : [],
        interfaces:
          configured?.network.links.map((l) => ({
            name: l.name,
            device: l.device,
            ...(l.vlan !== undefined ? { vlan: l.vlan } : {}),
            ...(l.mtu !== undefined ? { mtu: l.mtu } : {}),
            ...(l.gateway4 !== undefined ? { gateway4: l.gateway4 } : {}),
            ...(l.gateway6 !== undefined ? { gateway6: l.gateway6 } : {}),
          })) ?? [],
        dns: configured?.network.dns ?? [],
        ntp: configured?.network.ntp ?? [],
        appliedAt: configured?.appliedAt ?? null,
        backend: configured?.backend ?? null,
        /** The configuration was verified but nothing applied (a dry-run applier): never "configured". */
        dryRun: configured?.backend === "dry-run",
        applier: state.applier ?? null,
        channel: configured?.card.channel ?? null,
        applyInProgress: state.applying
          ? { sequence: state.applying.sequence, startedAt: state.applying.startedAt }
          : null,
        lastError: state.lastError ?? null,
        updatedAt: state.updatedAt,
      };
      if (options.json) {
        writeJson(ctx.stdout, status);
        return;
      }
      const lines = [
        `HSM ${status.serial}: ${status.stage}`,
        `owner: ${status.owner ? `${status.owner.name} (${status.owner.boundBy === "factory" ? "bound at the factory" : "pinned at first onboarding"})` : "not yet bound"}; quorum ${status.quorum}`,
        `network applier: ${status.applier ?? "none chosen (factory-init --net)"}`,
        configured && status.dryRun
          ? `dry run — nothing applied: ${status.hostname} ${status.addresses.join(" ")} recorded only (sequence ${status.sequence}, ${status.appliedAt}; card read over ${status.channel ?? "an unrecorded channel"})`
          : configured
            ? `configured: ${status.hostname} ${status.addresses.join(" ")} (sequence ${status.sequence}, ${status.backend}, ${status.appliedAt}; card read over ${status.channel ?? "an unrecorded channel"})`
            : "configured: no",
      ];
      if (status.applyInProgress)
        lines.push(
          `apply in progress: sequence ${status.applyInProgress.sequence} since ${status.applyInProgress.startedAt}`,
        );
      if (status.lastError) {
        lines.push(
          `last error: ${status.lastError.message} (exit ${status.lastError.exitCode}, ${status.lastError.at})`,
        );
      }
      for (const line of lines) writeLine(ctx.stdout, line);
    });
}
