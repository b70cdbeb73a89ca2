import { resolve } from "node:path";
import type { Readable } from "node:stream";
import { Command, Option } from "commander";
import {
  type CardSetPlan,
  NOMINAL_CARD_BUDGET_BYTES,
  NOMINAL_MANIFEST_ENVELOPE_BYTES,
  planCardSet,
} from "../../../config/card-set.js";
import { encodeManifestPayload } from "../../../config/manifest.js";
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
import type { NetworkPlan } from "../../../config/plan-model.js";
import { CardFullError, ExitCode, formatPlanProblem, PlanInvalidError } from "../../../errors.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";

const EXAMPLES = `
The format comes from the file name (.yaml, .yml, .json, .csv), else from the content.
Cards: how many cards the plan needs and the HSMs on each, estimated for a card with
45,110 bytes for the configuration (a YubiKey 5 or the station's virtual card after personalisation:
a manifest and 13 shards of 3,063 bytes); station write splits with the real card's room. A plan
larger than one card is written as a card set (station write --help).

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
      const cards = result.plan ? cardsFor(result.plan) : undefined;

      if (options.json) {
        writeJson(ctx.stdout, {
          valid: summary !== null,
          format: result.format,
          problems: result.problems,
          summary,
          cards: cards?.set ? cards.set.cards.length : null,
          hsmsPerCard: cards?.set ? cards.set.cards.map((c) => c.hsms) : null,
          cardRanges: cards?.set ? cards.set.cards.map((c) => c.range) : null,
          cardBudgetBytes: NOMINAL_CARD_BUDGET_BYTES,
          ...(cards?.problem ? { cardProblem: cards.problem } : {}),
        });
      } else if (summary) {
        const { owner, hsms, subnets, interfaces, ipv4Addresses, ipv6Addresses } = summary;
        writeLine(
          ctx.stdout,
          `${plan}: valid ${result.format.toUpperCase()} plan for ${JSON.stringify(owner)}: ` +
            `${count(hsms, "HSM")}, ${count(subnets, "subnet")}, ${count(interfaces, "interface")}, ` +
            `${count(ipv4Addresses, "IPv4 address", "IPv4 addresses")}, ` +
            `${count(ipv6Addresses, "IPv6 address", "IPv6 addresses")}; ${cardsText(cards)}`,
        );
        if (cards?.set && cards.set.cards.length > 1) {
          writeLine(
            ctx.stdout,
            `${plan}: card set: ` +
              cards.set.cards
                .map((c) => `card ${c.index} serials ${c.range.firstSerial}..${c.range.lastSerial}`)
                .join(", "),
          );
        }
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

/** The card set the plan needs on a nominal card (NOMINAL_CARD_BUDGET_BYTES), or why none holds it. */
function cardsFor(plan: NetworkPlan): { set?: CardSetPlan; problem?: string } {
  try {
    return {
      set: planCardSet(plan, {
        budgetBytes: NOMINAL_CARD_BUDGET_BYTES,
        manifestLength: (m) => encodeManifestPayload(m).length + NOMINAL_MANIFEST_ENVELOPE_BYTES,
      }),
    };
  } catch (error) {
    if (error instanceof CardFullError) return { problem: error.message };
    throw error;
  }
}

function cardsText(cards: { set?: CardSetPlan; problem?: string } | undefined): string {
  if (cards?.set === undefined) return `no card set holds it (${cards?.problem ?? "unknown"})`;
  const n = cards.set.cards.length;
  return n === 1 ? "1 card" : `${n} cards (${cards.set.cards.map((c) => c.hsms).join(" + ")} HSMs)`;
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
