import { Command, CommanderError } from "commander";
import { ExitCode, isOnboardError } from "../errors.js";
import { agentCommand } from "./commands/agent/index.js";
import { cardCommand } from "./commands/card/index.js";
import { demoCommand } from "./commands/demo.js";
import { pkiCommand } from "./commands/pki/index.js";
import { planCommand } from "./commands/plan/index.js";
import { simCommand } from "./commands/sim/index.js";
import { stationCommand } from "./commands/station/index.js";
import { type CliContext, processContext, writeLine } from "./context.js";

const PROGRAM = "hsm-onboard";

export function buildProgram(ctx: CliContext): Command {
  const program = new Command(PROGRAM)
    .description("Trusted, zero-touch first network setup of HSMs with a secure element")
    .version(VERSION)
    .showHelpAfterError("(run with --help for usage)");
  program.addCommand(planCommand(ctx));
  program.addCommand(cardCommand(ctx));
  program.addCommand(pkiCommand(ctx));
  program.addCommand(agentCommand(ctx));
  program.addCommand(stationCommand(ctx));
  program.addCommand(demoCommand(ctx));
  program.addCommand(simCommand(ctx));
  applyToAll(program, (cmd) =>
    cmd.exitOverride().configureOutput({
      writeOut: (s) => ctx.stdout.write(s),
      writeErr: (s) => ctx.stderr.write(s),
    }),
  );
  return program;
}

/** Runs the CLI with `argv` (without node and script) and returns the process exit code. */
export async function runCli(argv: readonly string[], ctx: CliContext = processContext()): Promise<number> {
  const program = buildProgram(ctx);
  try {
    await program.parseAsync([...argv], { from: "user" });
    return ctx.exitCode;
  } catch (error) {
    return reportError(error, ctx);
  }
}

function reportError(error: unknown, ctx: CliContext): number {
  if (error instanceof CommanderError) {
    // Commander already printed its one-line message (or the help/version text).
    if (error.code === "commander.helpDisplayed" || error.code === "commander.version") return ExitCode.ok;
    if (error.code === "commander.help") return ExitCode.ok;
    return ExitCode.usage;
  }
  if (isOnboardError(error)) {
    writeLine(ctx.stderr, `${PROGRAM}: ${error.message}`);
    return error.exitCode;
  }
  const message = error instanceof Error ? error.message : String(error);
  writeLine(ctx.stderr, `${PROGRAM}: internal error: ${message}`);
  if (ctx.env.HSM_ONBOARD_DEBUG && error instanceof Error && error.stack) writeLine(ctx.stderr, error.stack);
  return ExitCode.internal;
}

function applyToAll(cmd: Command, fn: (c: Command) => void): void {
  fn(cmd);
  for (const sub of cmd.commands) applyToAll(sub, fn);
}

const VERSION = "0.1.0";
