/**
 * The CLI as a child process, for the fault tests that need a real process to die or a namespace of
 * its own: the project compiled into a private directory (test/helpers/pcsc-env.ts
 * buildForChildren), run with `node`, optionally inside a network namespace (`ip netns exec`) and/or a
 * private mount namespace, each child bounded in time and stopped by its own PID.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
  const reportDir = mkdtempSync(join(tmpdir(), "hsm-child-report-"));
  const child = spawn(command, rest, {
    env: { ...process.env, ...(options.env ?? {}), NODE_OPTIONS: reportOptions(reportDir) },
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
    const where = await whereStuck(child, reportDir);
    await stopChild(child);
    running.delete(child);
    rmSync(reportDir, { recursive: true, force: true });
    throw new Error(
      `hsm-onboard ${args.join(" ")} still running after ${bound} ms:\n${stderr.slice(-2000)}\n${where}`,
    );
  }
  rmSync(reportDir, { recursive: true, force: true });
  running.delete(child);
  // Let the pipes drain.
  await sleep(10);
  return { ...outcome, stdout, stderr, ms: performance.now() - started };
}

/**
 * Node options that make the child write a diagnostic report (JS stack, libuv handles) on SIGUSR2:
 * a child stuck past its bound is asked where it is before it is killed. The caller's NODE_OPTIONS
 * are kept.
 */
function reportOptions(dir: string): string {
  const own = `--report-on-signal --report-signal=SIGUSR2 --report-directory=${dir}`;
  return [process.env.NODE_OPTIONS, own].filter(Boolean).join(" ");
}

/**
 * Where a stuck child is: its kernel wait channel, its own children (an `ip` or PIN program it waits
 * for), and Node's report (JavaScript stack and open handles), asked for with SIGUSR2. Best effort:
 * the child's PID is node's only when every wrapper execs (setpriv, ip netns exec do).
 */
async function whereStuck(child: ChildProcess, reportDir: string): Promise<string> {
  const pid = child.pid;
  if (pid === undefined) return "(no pid)";
  const lines: string[] = [`--- where pid ${pid} is stuck ---`];
  const read = (path: string): string => {
    try {
      return readFileSync(path, "utf8").trim();
    } catch (error) {
      return `(${(error as Error).message})`;
    }
  };
  lines.push(
    `wchan: ${read(`/proc/${pid}/wchan`)}`,
    `cmdline: ${read(`/proc/${pid}/cmdline`).replaceAll("\0", " ")}`,
  );
  try {
    const threads = readdirSync(`/proc/${pid}/task`).map(
      (tid) => `${tid}:${read(`/proc/${pid}/task/${tid}/comm`)}:${read(`/proc/${pid}/task/${tid}/wchan`)}`,
    );
    lines.push(`threads: ${threads.join(" ")}`);
  } catch (error) {
    lines.push(`threads: ${(error as Error).message}`);
  }
  const tree = spawnSync("ps", ["-o", "pid,ppid,stat,wchan:20,etime,args", "--ppid", String(pid)], {
    encoding: "utf8",
  });
  lines.push(`children:\n${tree.stdout?.trim() || "(none)"}`);
  try {
    process.kill(pid, "SIGUSR2");
  } catch (error) {
    lines.push(`SIGUSR2: ${(error as Error).message}`);
  }
  for (let turn = 0; turn < 40; turn++) {
    const file = readdirSync(reportDir).find((name) => name.endsWith(".json"));
    if (file) {
      await sleep(200);
      try {
        const report = JSON.parse(readFileSync(join(reportDir, file), "utf8")) as {
          javascriptStack?: { message?: string; stack?: string[] };
          libuv?: { type: string; is_active: boolean; is_referenced?: boolean; [key: string]: unknown }[];
        };
        lines.push(`JS stack: ${report.javascriptStack?.message ?? ""}`);
        lines.push(...(report.javascriptStack?.stack ?? []).slice(0, 30));
        const active = (report.libuv ?? []).filter((h) => h.is_active && h.is_referenced !== false);
        lines.push(`active libuv handles (${active.length}):`);
        for (const h of active.slice(0, 30)) lines.push(`  ${JSON.stringify(h)}`);
      } catch (error) {
        lines.push(`report unreadable: ${(error as Error).message}`);
      }
      return lines.join("\n");
    }
    await sleep(100);
  }
  lines.push("no Node report within 4 s (the main thread is blocked in native code?)");
  return lines.join("\n");
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
  const reportDir = mkdtempSync(join(tmpdir(), "hsm-child-report-"));
  const child = spawn(command, rest, {
    env: { ...process.env, ...(options.env ?? {}), NODE_OPTIONS: reportOptions(reportDir) },
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
      rmSync(reportDir, { recursive: true, force: true });
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
          `hsm-onboard ${args.join(" ")} still running after ${timeoutMs} ms:\n${stderr.slice(-2000)}\n${await whereStuck(child, reportDir)}`,
        );
      await sleep(10);
      return { ...outcome, stdout, stderr, ms: performance.now() - started };
    },
    stop: () => stopChild(child),
  };
}
