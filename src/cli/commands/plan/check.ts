import { resolve } from "node:path";
import type { Readable } from "node:stream";
import { Command, Option } from "commander";
import {
  checkPlan,
  MAX_PLAN_BYTES,
  PLAN_FORMATS,
  type PlanFormat,
  planFormatFromPath,
  readPlanFile,
  summarizePlan,
} from "../../../config/plan.js";
import { bytesLimitMessage } from "../../../config/plan-limits.js";
import { ExitCode, formatPlanProblem, PlanInvalidError } from "../../../errors.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";

const EXAMPLES = `
The format comes from the file name (.yaml, .yml, .json, .csv), else from the content.
Exit status: 0 valid, 23 invalid (every problem listed, one per line; also a plan past the size
limits: 16 MiB, 20,000 HSMs), 2 unreadable file.

Examples:
  $ hsm-onboard plan check examples/rack-4.yaml
  $ hsm-onboard plan check examples/rack-4.csv --owner "ACME Bank"
  $ hsm-onboard plan check examples/room-40.yaml --json
  $ cat rack.csv | hsm-onboard plan check - --format csv --owner "ACME Bank"
`;

interface PlanCheckOptions {
  readonly owner?: string;
  readonly format?: PlanFormat;
  readonly json?: boolean;
}

/** `hsm-onboard plan check PLAN [--json] [--owner NAME]` (SPEC.md §7, §7.1). */
export function planCheckCommand(ctx: CliContext): Command {
  return new Command("check")
    .description("Validate a network plan (YAML, JSON or CSV) and list every problem in it")
    .argument("<plan>", "plan file, or - for standard input")
    .option(
      "--owner <name>",
      "owner (customer organisation): required for CSV; must match a YAML/JSON plan's owner",
    )
    .addOption(
      new Option("--format <format>", "input format, when the name does not tell").choices(PLAN_FORMATS),
    )
    .option("--json", "print {valid, problems, summary} as JSON")
    .addHelpText("after", EXAMPLES)
    .action(async (plan: string, options: PlanCheckOptions) => {
      const fromStdin = plan === "-";
      const bytes = fromStdin ? await readStdin(ctx.stdin) : await readPlanFile(resolve(ctx.cwd, plan), plan);
      const format = options.format ?? (fromStdin ? undefined : planFormatFromPath(plan)) ?? "auto";
      const result = checkPlan(bytes, format, options.owner === undefined ? {} : { owner: options.owner });
      const summary = result.plan ? summarizePlan(result.plan) : null;

      if (options.json) {
        writeJson(ctx.stdout, {
          valid: summary !== null,
          format: result.format,
          problems: result.problems,
          summary,
        });
      } else if (summary) {
        const { owner, hsms, subnets, interfaces, ipv4Addresses, ipv6Addresses } = summary;
        writeLine(
          ctx.stdout,
          `${plan}: valid ${result.format.toUpperCase()} plan for ${JSON.stringify(owner)}: ` +
            `${count(hsms, "HSM")}, ${count(subnets, "subnet")}, ${count(interfaces, "interface")}, ` +
            `${count(ipv4Addresses, "IPv4 address", "IPv4 addresses")}, ` +
            `${count(ipv6Addresses, "IPv6 address", "IPv6 addresses")}`,
        );
      } else {
        for (const problem of result.problems) writeLine(ctx.stdout, formatPlanProblem(problem));
        writeLine(
          ctx.stderr,
          `hsm-onboard: ${plan}: plan invalid: ${count(result.problems.length, "problem")}`,
        );
      }
      ctx.exitCode = summary ? ExitCode.ok : ExitCode.planInvalid;
    });
}

function count(n: number, singular: string, plural = `${singular}s`): string {
  return `${n} ${n === 1 ? singular : plural}`;
}

async function readStdin(stdin: Readable): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stdin) {
    const buffer = typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer);
    total += buffer.length;
    if (total > MAX_PLAN_BYTES) {
      throw new PlanInvalidError([
        { entry: "plan (standard input)", field: "", message: bytesLimitMessage() },
      ]);
    }
    chunks.push(buffer);
  }
  return Buffer.concat(chunks, total);
}
