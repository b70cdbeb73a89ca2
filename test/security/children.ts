/**
 * The CLI as a child process, for the fault tests that need a real process to die or a namespace of
 * its own: the project compiled into a private directory (test/helpers/pcsc-env.ts
 * buildForChildren), run with `node`, optionally inside a network namespace (`ip netns exec`) and/or a
 * private mount namespace, each child bounded in time and stopped by its own PID.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { cliLauncher, type PrivateBuild } from "../helpers/pcsc-env.js";

export interface ChildResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

export interface RunOptions {
  readonly env?: Record<string, string>;
  readonly netns?: string;
  /** Written to standard input, which is then closed. */
  readonly stdin?: string;
  readonly timeoutMs?: number;
  /** Wraps the node command line: e.g. an `unshare -m … sh -c` that prepares a mount first. */
  readonly wrap?: (argv: string[]) => string[];
}

const running = new Set<ChildProcess>();
const hasSetpriv = spawnSync("sh", ["-c", "command -v setpriv"], { stdio: "ignore" }).status === 0;

/** Runs `hsm-onboard ARGS` from `build` to its end (or kills it by PID after the bound). */
export async function runCliChild(
  build: PrivateBuild,
  args: string[],
  options: RunOptions = {},
): Promise<ChildResult> {
  const script = await cliLauncher(build);
  // setpriv --pdeathsig: the child dies with the test worker even if cleanup never runs.
  const guard = hasSetpriv ? ["setpriv", "--pdeathsig", "KILL"] : [];
  let argv = [...guard, process.execPath, script, ...args];
  if (options.wrap) argv = options.wrap(argv);
  if (options.netns) argv = ["ip", "netns", "exec", options.netns, ...argv];
  const [command, ...rest] = argv as [string, ...string[]];
  const started = performance.now();
  const child = spawn(command, rest, {
    env: { ...process.env, ...(options.env ?? {}) },
    stdio: ["pipe", "pipe", "pipe"],
  });
  running.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (s: string) => {
    stdout += s;
  });
  child.stderr?.setEncoding("utf8").on("data", (s: string) => {
    stderr += s;
  });
  child.stdin?.on("error", () => {});
  child.stdin?.end(options.stdin ?? "");
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const bound = options.timeoutMs ?? 30_000;
  const outcome = await Promise.race([exit, sleep(bound).then(() => undefined)]);
  if (!outcome) {
    await stopChild(child);
    running.delete(child);
    throw new Error(`hsm-onboard ${args.join(" ")} still running after ${bound} ms:\n${stderr.slice(-2000)}`);
  }
  running.delete(child);
  // Let the pipes drain.
  await sleep(10);
  return { ...outcome, stdout, stderr, ms: performance.now() - started };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const ended = await Promise.race([
    new Promise<boolean>((resolve) => child.once("exit", () => resolve(true))),
    sleep(2000).then(() => false),
  ]);
  if (!ended) child.kill("SIGKILL");
}

/** Stops every child still running (afterEach/afterAll), each by its own PID. */
export async function stopChildren(): Promise<void> {
  for (const child of [...running]) {
    await stopChild(child);
    running.delete(child);
  }
}

/** A CLI child left running: its output so far, a bounded wait on standard error, its exit. */
export interface LiveChild {
  readonly pid: number | undefined;
  stderr(): string;
  stdout(): string;
  /** Waits (bounded) until standard error matches `pattern`. */
  waitForStderr(pattern: RegExp, timeoutMs: number): Promise<void>;
  /** Waits (bounded) for the exit. */
  exit(timeoutMs: number): Promise<ChildResult>;
  /** SIGTERM, then SIGKILL after a bound: this child only. */
  stop(): Promise<void>;
}

export async function startCliChild(
  build: PrivateBuild,
  args: string[],
  options: RunOptions = {},
): Promise<LiveChild> {
  const script = await cliLauncher(build);
  const guard = hasSetpriv ? ["setpriv", "--pdeathsig", "KILL"] : [];
  let argv = [...guard, process.execPath, script, ...args];
  if (options.wrap) argv = options.wrap(argv);
  if (options.netns) argv = ["ip", "netns", "exec", options.netns, ...argv];
  const [command, ...rest] = argv as [string, ...string[]];
  const started = performance.now();
  const child = spawn(command, rest, {
    env: { ...process.env, ...(options.env ?? {}) },
    stdio: ["pipe", "pipe", "pipe"],
  });
  running.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (s: string) => {
    stdout += s;
  });
  child.stderr?.setEncoding("utf8").on("data", (s: string) => {
    stderr += s;
  });
  child.stdin?.on("error", () => {});
  child.stdin?.end(options.stdin ?? "");
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }),
  );
  return {
    pid: child.pid,
    stderr: () => stderr,
    stdout: () => stdout,
    async waitForStderr(pattern, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (let turn = 0; turn < 10_000 && Date.now() < deadline; turn++) {
        if (pattern.test(stderr)) return;
        if (child.exitCode !== null || child.signalCode !== null) break;
        await sleep(25);
      }
      if (pattern.test(stderr)) return;
      throw new Error(
        `hsm-onboard ${args.join(" ")}: stderr never matched ${pattern}:\n${stderr.slice(-2000)}`,
      );
    },
    async exit(timeoutMs) {
      const outcome = await Promise.race([exited, sleep(timeoutMs).then(() => undefined)]);
      if (!outcome)
        throw new Error(
          `hsm-onboard ${args.join(" ")} still running after ${timeoutMs} ms:\n${stderr.slice(-2000)}`,
        );
      await sleep(10);
      return { ...outcome, stdout, stderr, ms: performance.now() - started };
    },
    stop: () => stopChild(child),
  };
}
