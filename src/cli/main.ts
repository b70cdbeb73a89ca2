import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { ExitCode, isOnboardError } from "../errors.js";
import { type CliContext, processContext, writeJson, writeLine } from "./context.js";
import { EXIT_CODE_MEANINGS, exitCodeHelp } from "./exit-codes.js";

const PROGRAM = "hsm-onboard";

type CommandMaker = (ctx: CliContext) => Command;

/**
 * The command groups, each loaded only when needed: `hsm-onboard agent run` loads the agent's
 * commands and what they import, not the station's, the PKI tools' or the simulator's (SPEC.md §9:
 * an agent's start-up CPU and resident memory). In help order.
 */
const COMMAND_GROUPS: Record<string, () => Promise<CommandMaker>> = {
  plan: async () => (await import("./commands/plan/index.js")).planCommand,
  card: async () => (await import("./commands/card/index.js")).cardCommand,
  pki: async () => (await import("./commands/pki/index.js")).pkiCommand,
  agent: async () => (await import("./commands/agent/index.js")).agentCommand,
  station: async () => (await import("./commands/station/index.js")).stationCommand,
  demo: async () => (await import("./commands/demo.js")).demoCommand,
  sim: async () => (await import("./commands/sim/index.js")).simCommand,
};

/**
 * Loads the command groups `argv` needs: only the group it names, when its first word (before any
 * option) is one; every group otherwise (top-level help, an unknown command and its suggestions).
 */
export async function loadCommandGroups(argv?: readonly string[]): Promise<CommandMaker[]> {
  const first = argv?.[0];
  const names =
    first !== undefined && Object.hasOwn(COMMAND_GROUPS, first) ? [first] : Object.keys(COMMAND_GROUPS);
  return Promise.all(names.map((name) => COMMAND_GROUPS[name]!()));
}

export function buildProgram(ctx: CliContext, groups: readonly CommandMaker[]): Command {
  const program = new Command(PROGRAM)
    .description("Trusted, zero-touch first network setup of HSMs with a secure element")
    .version(packageVersion())
    .showHelpAfterError("(run with --help for usage)")
    .addHelpText("after", exitCodeHelp());
  program.addCommand(versionCommand(ctx));
  for (const make of groups) program.addCommand(make(ctx));
  applyToAll(program, (cmd) =>
    cmd.exitOverride().configureOutput({
      writeOut: (s) => ctx.stdout.write(s),
      writeErr: (s) => ctx.stderr.write(s),
    }),
  );
  return program;
}

/**
 * The program's entry (bin/hsm-onboard.js): runs the CLI, flushes standard output and error, then
 * exits with the command's code. A command is over when its action returns (long-running ones —
 * card emulate, agent run, station serve — return only on SIGTERM/SIGINT), so nothing may keep the
 * process alive after it: pcsc-lite's native monitor thread can, after a card was released.
 */
export async function main(argv: readonly string[]): Promise<never> {
  const code = await runCli(argv);
  const flushed = (stream: NodeJS.WriteStream) =>
    new Promise<void>((resolve) => {
      if (stream.destroyed || !stream.writable) return resolve();
      stream.write("", () => resolve());
    });
  await Promise.race([
    Promise.all([flushed(process.stdout), flushed(process.stderr)]),
    new Promise((resolve) => setTimeout(resolve, 2000).unref()),
  ]);
  process.exit(code);
}

/** Runs the CLI with `argv` (without node and script) and returns the process exit code. */
export async function runCli(argv: readonly string[], ctx: CliContext = processContext()): Promise<number> {
  try {
    const program = buildProgram(ctx, await loadCommandGroups(argv));
    await program.parseAsync([...argv], { from: "user" });
    return ctx.exitCode;
  } catch (error) {
    return reportError(error, ctx, wantsJson(argv));
  }
}

/** `--json` among the options (not after a `--` that ends them). */
function wantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf("--");
  return (end === -1 ? argv : argv.slice(0, end)).includes("--json");
}

/**
 * The one-line message on standard error; under --json also, on standard output, the object
 * `{"error": {"code", "exit", "message"}}` a script can parse (code: the error's stable code).
 */
function reportError(error: unknown, ctx: CliContext, json: boolean): number {
  const report = (code: string, exit: number, message: string) => {
    if (json) writeJson(ctx.stdout, { error: { code, exit, meaning: meaningOf(exit), message } });
    return exit;
  };
  if (error instanceof CommanderError) {
    // Commander already printed its one-line message (or the help/version text).
    if (error.code === "commander.helpDisplayed" || error.code === "commander.version") return ExitCode.ok;
    if (error.code === "commander.help") return ExitCode.ok;
    return report("ERR_USAGE", ExitCode.usage, error.message.replace(/^error: /, ""));
  }
  if (isOnboardError(error)) {
    writeLine(ctx.stderr, `${PROGRAM}: ${error.message}`);
    return report(error.code, error.exitCode, error.message);
  }
  const message = error instanceof Error ? error.message : String(error);
  writeLine(ctx.stderr, `${PROGRAM}: internal error: ${message}`);
  if (ctx.env.HSM_ONBOARD_DEBUG && error instanceof Error && error.stack) writeLine(ctx.stderr, error.stack);
  return report("ERR_INTERNAL", ExitCode.internal, message);
}

function meaningOf(exit: number): string {
  return (EXIT_CODE_MEANINGS as Record<number, string>)[exit] ?? "unknown";
}

/** `hsm-onboard version [--json]`: the same as --version, as a command. */
function versionCommand(ctx: CliContext): Command {
  return new Command("version")
    .description("Print the version of hsm-onboard")
    .option("--json", "print {name, version, node} as JSON")
    .action((options: { json?: boolean }) => {
      if (options.json)
        writeJson(ctx.stdout, { name: PROGRAM, version: packageVersion(), node: process.versions.node });
      else writeLine(ctx.stdout, packageVersion());
    });
}

function applyToAll(cmd: Command, fn: (c: Command) => void): void {
  fn(cmd);
  for (const sub of cmd.commands) applyToAll(sub, fn);
}

let version: string | undefined;

/**
 * The package's own version, from its package.json: two levels above both src/cli and dist/cli.
 * Read on first use (importing the CLI reads no file); "unknown" in a build outside the package.
 */
function packageVersion(): string {
  if (version === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
        name?: string;
        version?: string;
      };
      version = pkg.name === PROGRAM && typeof pkg.version === "string" ? pkg.version : "unknown";
    } catch {
      version = "unknown";
    }
  }
  return version;
}
