import { join } from "node:path";
import { Command } from "commander";
import { type AuditRecord, readAuditLog } from "../../../agent/audit-log.js";
import { AgentStateStore, STATE_FILES } from "../../../agent/state-store.js";
import { ExitCode } from "../../../errors.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { resolveStateDir, STATE_DIR_HELP } from "./state-dir.js";

interface AuditOptions {
  stateDir?: string;
  verify?: boolean;
  json?: boolean;
}

function describeRecord(r: AuditRecord): string {
  const fields = Object.entries(r.data)
    .filter(([k]) => k !== "serial")
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  return `#${r.seq} ${r.time} ${r.event}${fields.length > 0 ? ` ${fields.join(" ")}` : ""}`;
}

export function agentAuditCommand(ctx: CliContext): Command {
  return new Command("audit")
    .description("Print the agent's audit log; --verify checks its hash chain (exit 15 if broken)")
    .option("--state-dir <dir>", STATE_DIR_HELP)
    .option("--verify", "check the hash chain and that the log reaches the newest record the agent wrote")
    .option("--json", "print the records (and the verification) as JSON")
    .addHelpText(
      "after",
      `
Each record is chained to the one before by SHA-256: an edited, deleted, reordered or cut record
breaks the chain at that place. The state file remembers the newest record, so a log cut at its
end is found as well.

Examples:
  $ hsm-onboard agent audit --state-dir /var/lib/hsm-onboard
  $ hsm-onboard agent audit --state-dir ./agent --verify`,
    )
    .action(async (options: AuditOptions) => {
      const dir = resolveStateDir(ctx, options.stateDir);
      const { state } = await AgentStateStore.open(dir);
      const result = await readAuditLog(
        join(dir, STATE_FILES.audit),
        state.auditHead ? { expectedHead: state.auditHead } : {},
      );
      if (options.json) {
        writeJson(ctx.stdout, {
          records: result.records,
          ...(options.verify ? { verified: result.ok, problems: result.problems } : {}),
        });
      } else {
        for (const record of result.records) writeLine(ctx.stdout, describeRecord(record));
        if (options.verify) {
          if (result.ok)
            writeLine(ctx.stderr, `audit log intact: ${result.records.length} records, chain verified`);
          for (const p of result.problems) writeLine(ctx.stderr, `audit log broken: ${p.message}`);
        }
      }
      if (options.verify && !result.ok) ctx.exitCode = ExitCode.integrity;
    });
}
