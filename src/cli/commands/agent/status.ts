import { Command } from "commander";
import { describeDevice } from "../../../agent/device-identity.js";
import { DEFAULT_NETWORKD_DIR } from "../../../agent/factory.js";
import type { HostSettingsChoice } from "../../../agent/host-settings.js";
import { plannedAddresses } from "../../../agent/net/net-backend.js";
import { AgentStateStore } from "../../../agent/state-store.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { resolveStateDir, STATE_DIR_HELP } from "./state-dir.js";

/**
 * What the factory's host-settings choice does with this applier (host-settings.ts): the hostname
 * through systemd-hostnamed or sethostname; DNS and NTP files only for iproute2 (networkd has them in
 * its .network files whatever the choice).
 */
function describeHostSettings(choice: HostSettingsChoice, applier: string | null): string {
  if (applier === "dry-run") return `${choice} (dry run: nothing applied)`;
  const dnsNtp =
    applier === "networkd"
      ? "DNS and NTP in the .network files"
      : applier === "iproute2"
        ? choice === "none"
          ? "DNS and NTP not applied"
          : "DNS and NTP as files: resolv.conf, timesyncd drop-in"
        : undefined;
  const hostname =
    choice === "hostnamed"
      ? "hostname through systemd-hostnamed"
      : choice === "sethostname"
        ? "hostname set by the agent (sethostname, needs CAP_SYS_ADMIN)"
        : "hostname not applied";
  return `${choice} (${hostname}${dnsNtp ? `; ${dnsNtp}` : ""})`;
}

interface StatusOptions {
  stateDir?: string;
  json?: boolean;
}

export function agentStatusCommand(ctx: CliContext): Command {
  return new Command("status")
    .description(
      "Show the agent's stage, serial, owner, network applier, host settings, applied configuration and last error",
    )
    .option("--state-dir <dir>", STATE_DIR_HELP)
    .option("--json", "print the status as JSON")
    .addHelpText(
      "after",
      `
"network applier" and "host settings" are the choices recorded by factory-init (--net,
--host-settings hostnamed|sethostname|none; a state without a host-settings choice reads as none);
agent run --net/--host-settings override them for that run only. --json carries them as "applier"
and "hostSettings"; with the networkd applier, "networkDir" is where its .network files go.

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
        /** Where the networkd applier writes its .network files (factory-init --network-dir). */
        networkDir: state.applier === "networkd" ? (state.networkDir ?? DEFAULT_NETWORKD_DIR) : null,
        /** factory-init --host-settings (absent in older states: none, as agent run reads it). */
        hostSettings: state.hostSettings ?? "none",
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
        `network applier: ${status.applier ?? "none chosen (factory-init --net)"}${status.networkDir ? ` (.network files in ${status.networkDir})` : ""}`,
        `host settings: ${describeHostSettings(status.hostSettings, status.applier)}`,
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
