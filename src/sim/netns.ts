/**
 * Network namespaces and the processes the rack simulation runs in them (TESTBED.md, network
 * namespaces; docs/TESTBED-NOTES.md).
 *
 * - Every command is `ip …` or `ip netns exec NS …` through execFile/spawn (no shell), each bounded
 *   in time, and every namespace this module creates is named by the caller with its run's prefix.
 * - Traffic to simulated addresses only ever starts inside a namespace (`ip netns exec NS`); nothing
 *   here connects to anything from the namespace the caller runs in.
 * - A process is stopped only by the PID it was started with, and only while /proc says it is still
 *   the same process (its start time): a PID reused by the system after a crash is never signalled.
 */

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { NetnsCommandError } from "../errors.js";

export { NetnsCommandError } from "../errors.js";

/** Bound on one `ip` command. */
const IP_TIMEOUT_MS = 10_000;

/** Runs a program (no shell) with a time bound; resolves with its standard output. */
export function run(program: string, args: readonly string[], timeoutMs = IP_TIMEOUT_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      program,
      [...args],
      { timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) {
          const detail = String(stderr).trim() || error.message;
          reject(new NetnsCommandError(`${program} ${args.join(" ")}: ${detail}`, String(stderr)));
        } else {
          resolve(String(stdout));
        }
      },
    );
  });
}

/** `ip ARGS`. */
export function ip(args: readonly string[]): Promise<string> {
  return run("ip", args);
}

/** `ip -n NS ARGS`: an iproute2 command applied inside namespace NS. */
export function ipIn(ns: string, args: readonly string[]): Promise<string> {
  return run("ip", ["-n", ns, ...args]);
}

/** argv that runs `argv` inside namespace `ns`. */
export function inNamespace(ns: string, argv: readonly string[]): string[] {
  return ["ip", "netns", "exec", ns, ...argv];
}

/** Namespace names: what `ip netns add` accepts and what fits a file name under /run/netns. */
export function checkNamespaceName(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(name))
    throw new Error(`not a usable namespace name: ${name}`);
  return name;
}

/** Creates namespace `name` with its loopback up. */
export async function addNamespace(name: string): Promise<void> {
  await ip(["netns", "add", checkNamespaceName(name)]);
  await ipIn(name, ["link", "set", "lo", "up"]);
}

/** Deletes namespace `name`; false when it did not exist. */
export async function deleteNamespace(name: string): Promise<boolean> {
  checkNamespaceName(name);
  if (!(await listNamespaces()).includes(name)) return false;
  await ip(["netns", "del", name]);
  return true;
}

/** Names of the network namespaces `ip netns` knows. */
export async function listNamespaces(): Promise<string[]> {
  const text = await ip(["-json", "netns", "list"]);
  if (text.trim() === "") return [];
  const list = JSON.parse(text) as { name?: string }[];
  return list.map((n) => n.name).filter((n): n is string => typeof n === "string");
}

/**
 * The quickack route (docs/TESTBED-NOTES.md): over loopback vpcd's length and body arrive in two
 * segments and the delayed ACK between them costs ~43 ms per APDU; `quickack 1` on the local route
 * brings a SELECT to ~0.4 ms. Only ever inside a namespace the caller created.
 */
export async function enableQuickack(ns: string): Promise<void> {
  await ipIn(ns, [
    "route",
    "change",
    "local",
    "127.0.0.1",
    "dev",
    "lo",
    "proto",
    "kernel",
    "scope",
    "host",
    "src",
    "127.0.0.1",
    "table",
    "local",
    "quickack",
    "1",
  ]);
}

/** Sets kernel parameters of namespace `ns` (`sysctl -w` run inside it). */
export async function setSysctls(
  ns: string,
  values: Readonly<Record<string, string | number>>,
): Promise<void> {
  const assignments = Object.entries(values).map(([key, value]) => {
    if (!/^[a-z0-9_.]+$/i.test(key)) throw new Error(`not a sysctl key: ${key}`);
    return `${key}=${value}`;
  });
  if (assignments.length === 0) return;
  const [program, ...args] = inNamespace(ns, ["sysctl", "-q", "-w", ...assignments]) as [string, ...string[]];
  await run(program, args);
}

// ---- processes --------------------------------------------------------------------------------

/** Start time of process `pid` in clock ticks since boot (/proc/PID/stat field 22), or undefined. */
export async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) is in parentheses and may hold spaces: count from its end.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[19];
  } catch {
    return undefined;
  }
}

/** Whether `pid` is still the process recorded with `startTime`. */
export async function isSameProcess(pid: number, startTime: string | undefined): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 1) return false;
  const now = await processStartTime(pid);
  return now !== undefined && (startTime === undefined || now === startTime);
}

/**
 * Stops a process recorded earlier (maybe by another run): SIGTERM, a bounded wait, SIGKILL — only
 * while it is still the very process that was recorded. Returns whether it was running.
 */
export async function stopRecordedProcess(
  pid: number,
  startTime: string | undefined,
  timeoutMs = 3000,
): Promise<boolean> {
  if (!(await isSameProcess(pid, startTime))) return false;
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return false;
  }
  const deadline = Date.now() + timeoutMs;
  for (let turn = 0; turn < Math.ceil(timeoutMs / 50) + 1; turn++) {
    if (!(await isSameProcess(pid, startTime))) return true;
    if (Date.now() >= deadline) break;
    await sleep(50);
  }
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // gone meanwhile
  }
  return true;
}

let setprivFound: boolean | undefined;
function haveSetpriv(): boolean {
  setprivFound ??= ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"].some((p) => existsSync(p));
  return setprivFound;
}

export interface SpawnInNamespaceOptions {
  readonly env?: Readonly<Record<string, string>>;
  /** Where standard output and standard error go: collected in memory (default) or a file descriptor. */
  readonly output?: "pipe" | number;
  /** Text written to standard input, which is then closed (default: no input). */
  readonly input?: string;
  /**
   * Outlive this process (`sim rack --keep`): own session, no parent-death signal. Otherwise the
   * child gets SIGTERM when this process dies without stopping it (setpriv --pdeathsig).
   */
  readonly detached?: boolean;
}

/**
 * A child process run inside a network namespace (`ip netns exec`, which execs: the PID is the
 * program's own). Output is collected; waits are bounded; stop() signals exactly this PID.
 */
export class NamespaceProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  stdout = "";
  stderr = "";
  #waiters = new Set<() => void>();
  #startTime: string | undefined;

  constructor(
    readonly namespace: string,
    argv: readonly string[],
    options: SpawnInNamespaceOptions = {},
  ) {
    const guard = !options.detached && haveSetpriv() ? ["setpriv", "--pdeathsig", "TERM"] : [];
    const [command, ...args] = inNamespace(namespace, [...guard, ...argv]) as [string, ...string[]];
    const output = options.output ?? "pipe";
    this.child = spawn(command, args, {
      env: { ...process.env, ...options.env },
      stdio: [options.input === undefined ? "ignore" : "pipe", output, output],
      detached: options.detached ?? false,
    });
    if (options.input !== undefined) {
      this.child.stdin?.on("error", () => {});
      this.child.stdin?.end(options.input);
    }
    this.child.stdout?.setEncoding("utf8");
    this.child.stderr?.setEncoding("utf8");
    this.child.stdout?.on("data", (chunk: string) => {
      this.stdout += chunk;
      this.#wake();
    });
    this.child.stderr?.on("data", (chunk: string) => {
      this.stderr += chunk;
      this.#wake();
    });
    this.child.once("error", (error) => {
      this.stderr += `\n${error.message}`;
    });
    this.exited = new Promise((resolve) => {
      this.child.once("close", (code) => {
        this.#wake();
        resolve(code);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The start time /proc gives this process (read once, right after the start). */
  async startTime(): Promise<string | undefined> {
    if (this.#startTime === undefined && this.child.pid !== undefined) {
      this.#startTime = await processStartTime(this.child.pid);
    }
    return this.#startTime;
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  /** Waits (bounded, abortable) until `predicate` holds; re-checked on every output and on exit. */
  async waitUntil(
    predicate: () => boolean,
    what: string,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let turn = 0; turn < 100_000; turn++) {
      if (predicate()) return;
      if (signal?.aborted) throw new Error(`interrupted while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) break;
      if (!this.running) {
        // Output may still be in flight after the exit: one more look once the streams closed.
        await within(this.exited, Math.min(left, 500));
        if (predicate()) return;
        throw new Error(
          `${what}: the process ended (exit ${this.child.exitCode ?? this.child.signalCode}) first: ${tail(this.stderr)}`,
        );
      }
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.#waiters.delete(done);
          signal?.removeEventListener("abort", done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(left, 1000));
        this.#waiters.add(done);
        signal?.addEventListener("abort", done, { once: true });
      });
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${tail(this.stderr)}`);
  }

  /** The exit code within the bound (abortable); throws on timeout. */
  async exitCode(timeoutMs: number, signal?: AbortSignal): Promise<number | null> {
    const result = await within(this.exited, timeoutMs, signal);
    if (result === TIMED_OUT) throw new Error(`process ${this.pid} still running after ${timeoutMs} ms`);
    if (result === ABORTED) throw new Error("interrupted");
    return result;
  }

  /** SIGTERM, bounded wait, SIGKILL, bounded wait: stops exactly this child. */
  async stop(timeoutMs = 3000): Promise<void> {
    if (!this.running) return;
    this.child.kill("SIGTERM");
    if ((await within(this.exited, timeoutMs)) === TIMED_OUT && this.running) {
      this.child.kill("SIGKILL");
      await within(this.exited, 2000);
    }
  }
}

const TIMED_OUT = Symbol("timed out");
const ABORTED = Symbol("aborted");

/**
 * `promise`, or TIMED_OUT after `ms`, or ABORTED when `signal` fires — whichever comes first. The
 * timer and the listener are removed at once, so a settled wait keeps nothing alive.
 */
export async function within<T>(
  promise: Promise<T>,
  ms: number,
  signal?: AbortSignal,
): Promise<T | typeof TIMED_OUT | typeof ABORTED> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<typeof TIMED_OUT>((resolve) => {
        timer = setTimeout(() => resolve(TIMED_OUT), ms);
      }),
      new Promise<typeof ABORTED>((resolve) => {
        onAbort = () => resolve(ABORTED);
        if (signal?.aborted) resolve(ABORTED);
        else signal?.addEventListener("abort", onAbort, { once: true });
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener("abort", onAbort);
  }
}

function tail(text: string, max = 1500): string {
  const t = text.trim();
  return t.length > max ? `…${t.slice(-max)}` : t || "(no output)";
}
