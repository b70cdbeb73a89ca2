/**
 * Runs the CLI in-process with in-memory streams, for tests of any command:
 *
 *   const result = await runCliInProcess(["plan", "check", "rack-4.yaml"], { cwd: examplesDir });
 *   expect(result.exitCode).toBe(0);
 *   expect(result.stdout).toContain("valid");
 *
 * `createTestContext` gives the context and the collectors on their own, for a test that builds the
 * program itself or runs several commands against one context.
 */
import { PassThrough } from "node:stream";
import type { CliContext } from "../../src/cli/context.js";
import { runCli } from "../../src/cli/main.js";

export interface TestContextOptions {
  /** What the command reads from standard input; the stream ends after it. Default: nothing. */
  readonly stdin?: string | Uint8Array;
  /** Environment seen by the command. Default: empty (nothing leaks in from the test process). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Working directory relative paths resolve against. Default: `process.cwd()`. */
  readonly cwd?: string;
}

export interface TestContext {
  readonly ctx: CliContext;
  /** Everything written to standard output so far. */
  stdout(): string;
  /** Everything written to standard error so far. */
  stderr(): string;
  /** Waits until everything written so far has been collected. */
  settle(): Promise<void>;
}

export interface CliResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function createTestContext(options: TestContextOptions = {}): TestContext {
  const stdin = new PassThrough();
  stdin.end(options.stdin ?? "");
  const out = collect();
  const err = collect();
  const ctx: CliContext = {
    stdin,
    stdout: out.stream,
    stderr: err.stream,
    env: { ...(options.env ?? {}) },
    cwd: options.cwd ?? process.cwd(),
    exitCode: 0,
  };
  return {
    ctx,
    stdout: out.text,
    stderr: err.text,
    // PassThrough may hand a chunk on in a later tick; one macrotask turn lets it through.
    settle: () => new Promise((done) => setImmediate(done)),
  };
}

export async function runCliInProcess(
  argv: readonly string[],
  options: TestContextOptions = {},
): Promise<CliResult> {
  const t = createTestContext(options);
  const exitCode = await runCli(argv, t.ctx);
  await t.settle();
  return { exitCode, stdout: t.stdout(), stderr: t.stderr() };
}

/** Non-empty lines of a command's output. */
export function outputLines(text: string): string[] {
  return text.split("\n").filter((line) => line.length > 0);
}

function collect(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on("data", (chunk: Buffer | string) => {
    chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  });
  return { stream, text: () => Buffer.concat(chunks).toString("utf8") };
}
