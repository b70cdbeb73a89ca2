/**
 * What the PC/SC end-to-end tests need from the machine, and the child processes they run.
 *
 * - Capability detection: root (mount namespaces), pcscd, unshare, the vpcd driver and the native
 *   `pcsclite` binding. Missing → the e2e tests are skipped with the reason; with
 *   HSM_ONBOARD_REQUIRE_ALL=1 (set by `npm test` under CI=true) a missing capability is an error.
 * - libpcsclite reads PCSCLITE_CSOCK_NAME once per process, so PC/SC clients of a private pcscd run
 *   as child processes. They import the project compiled into a private temporary build (not
 *   dist/, which other runs may be rewriting), which links the project's node_modules.
 * - Every child is stopped by its own PID (SIGTERM, then SIGKILL after a bound).
 */
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rename, rm, symlink, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

export interface Capability {
  ok: boolean;
  /** Why not, when not ok. */
  reason: string;
}

function onPath(command: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}

let cached: Capability | undefined;

/** Can this machine run a private pcscd with vpcd, and talk to it through the pcsclite binding? */
export function pcscE2eCapability(): Capability {
  cached ??= detect();
  return cached;
}

function detect(): Capability {
  const missing: string[] = [];
  if (process.platform !== "linux") return { ok: false, reason: "needs Linux" };
  if (process.getuid?.() !== 0) missing.push("root (mount namespaces for a private pcscd)");
  for (const cmd of ["pcscd", "unshare"]) if (!onPath(cmd)) missing.push(cmd);
  if (
    ![
      "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
      "/usr/lib64/pcsc/drivers/serial/libifdvpcd.so",
      "/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so",
    ].some((p) => existsSync(p))
  ) {
    missing.push("vpcd driver (vsmartcard-vpcd)");
  }
  try {
    const require = createRequire(join(PROJECT_ROOT, "package.json"));
    const main = require.resolve("pcsclite");
    if (!existsSync(join(dirname(main), "build", "Release", "pcsclite.node"))) {
      missing.push("pcsclite native build (libpcsclite-dev, then npm rebuild pcsclite)");
    }
  } catch {
    missing.push("npm package pcsclite");
  }
  if (missing.length === 0 && spawnSync("unshare", ["-m", "--propagation", "private", "true"]).status !== 0) {
    missing.push("permission to create mount namespaces");
  }
  if (missing.length === 0) return { ok: true, reason: "" };
  return { ok: false, reason: `PC/SC e2e needs: ${missing.join(", ")}` };
}

/** Network namespaces too (ip netns), for the quickack measurement. */
export function netnsCapability(): Capability {
  const base = pcscE2eCapability();
  if (!base.ok) return base;
  if (!onPath("ip")) return { ok: false, reason: "needs iproute2 (ip)" };
  return { ok: true, reason: "" };
}

/**
 * For `describe.skipIf(!cap.ok)`: throws when the run demands every test
 * (HSM_ONBOARD_REQUIRE_ALL=1), so that CI fails instead of skipping silently.
 */
export function requireOrSkip(cap: Capability): Capability {
  if (!cap.ok && process.env.HSM_ONBOARD_REQUIRE_ALL === "1") {
    throw new Error(`HSM_ONBOARD_REQUIRE_ALL=1 but ${cap.reason}`);
  }
  return cap;
}

/** `requireOrSkip` for a reason string (undefined when the capability is there). */
export function requireOrSkipReason(reason: string | undefined): string | undefined {
  return requireOrSkip({ ok: reason === undefined, reason: reason ?? "" }).ok ? undefined : reason;
}

export const toolAvailable = (command: string): boolean => onPath(command);

// ---------------------------------------------------------------------------------------------
// Private build for child processes
// ---------------------------------------------------------------------------------------------

export interface PrivateBuild {
  /** Directory holding the compiled src/ tree (e.g. `${dir}/transport/pcsc-transport.js`). */
  dir: string;
  /** file:// URL of a compiled module, for `import()` in a child script. */
  url(modulePath: string): string;
  cleanup(): Promise<void>;
}

/**
 * Compiles src/ with tsconfig.build.json into a temporary directory that resolves packages from
 * the project's node_modules. Type errors elsewhere in the tree do not stop the emit; the modules
 * this build must contain are checked instead.
 */
export async function buildForChildren(required: readonly string[]): Promise<PrivateBuild> {
  const dir = await mkdtemp(join(tmpdir(), "hsm-onboard-e2e-build-"));
  const cleanup = () => rm(dir, { recursive: true, force: true });
  try {
    await writeFile(join(dir, "package.json"), '{ "type": "module" }\n');
    await symlink(join(PROJECT_ROOT, "node_modules"), join(dir, "node_modules"), "dir");
    const tsc = join(PROJECT_ROOT, "node_modules", "typescript", "bin", "tsc");
    const result = await promisify(execFile)(
      process.execPath,
      [tsc, "-p", join(PROJECT_ROOT, "tsconfig.build.json"), "--outDir", dir, "--sourceMap", "false"],
      { cwd: PROJECT_ROOT, timeout: 120_000 },
    ).catch((error: { stdout?: string }) => ({ stdout: error.stdout ?? "" }));
    const absent = required.filter((m) => !existsSync(join(dir, m)));
    if (absent.length > 0) {
      throw new Error(`private build lacks ${absent.join(", ")}:\n${result.stdout.slice(0, 2000)}`);
    }
  } catch (error) {
    await cleanup();
    throw error;
  }
  return { dir, url: (m) => `file://${join(dir, m)}`, cleanup };
}

// ---------------------------------------------------------------------------------------------
// Child processes speaking JSON lines
// ---------------------------------------------------------------------------------------------

export type ChildMessage = Record<string, unknown> & { ev?: string };

/**
 * Resolves at the next call of a function in `waiters` (a child's new output or its exit) or after
 * `ms`, whichever comes first; the waiter is removed either way.
 */
export function nextWake(waiters: Set<() => void>, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      waiters.delete(done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    waiters.add(done);
  });
}

/**
 * A node child running an ES module script; each stdout line that parses as JSON is a message.
 * Stdin takes one command per line.
 */
export class NodeChild {
  readonly messages: ChildMessage[] = [];
  private readonly child: ChildProcess;
  private stdoutRest = "";
  stderr = "";
  private waiters = new Set<() => void>();
  readonly exited: Promise<number | null>;

  constructor(
    scriptPath: string,
    env: Record<string, string>,
    options: { netns?: string; args?: string[] } = {},
  ) {
    // setpriv --pdeathsig: the child is terminated even if the test process dies without cleanup.
    const guard = onPath("setpriv") ? ["setpriv", "--pdeathsig", "TERM"] : [];
    const argv = [...guard, process.execPath, scriptPath, ...(options.args ?? [])];
    const [command, ...args] = (options.netns ? ["ip", "netns", "exec", options.netns, ...argv] : argv) as [
      string,
      ...string[],
    ];
    this.child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
    this.child.stdout?.setEncoding("utf8");
    this.child.stderr?.setEncoding("utf8");
    this.child.stdout?.on("data", (chunk: string) => {
      const lines = (this.stdoutRest + chunk).split("\n");
      this.stdoutRest = lines.pop() ?? "";
      for (const line of lines) {
        try {
          this.messages.push(JSON.parse(line) as ChildMessage);
        } catch {
          this.messages.push({ ev: "text", text: line });
        }
      }
      this.wake();
    });
    this.child.stderr?.on("data", (chunk: string) => {
      this.stderr += chunk;
      this.wake();
    });
    this.exited = new Promise((resolve) => {
      this.child.once("exit", (code) => {
        this.wake();
        resolve(code);
      });
    });
    this.child.stdin?.on("error", () => {});
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Waits (bounded) for a message matching `predicate`, searching from message index `from`. */
  async waitFor(
    predicate: (m: ChildMessage) => boolean,
    timeoutMs: number,
    from = 0,
  ): Promise<{ message: ChildMessage; index: number }> {
    const deadline = Date.now() + timeoutMs;
    // Each turn waits for new output, the exit or the deadline: bounded by time, and by count.
    for (let turn = 0; turn < 10_000; turn++) {
      const index = this.messages.findIndex((m, i) => i >= from && predicate(m));
      if (index >= 0) return { message: this.messages[index]!, index };
      const left = deadline - Date.now();
      if (left <= 0 || !this.running) break;
      await nextWake(this.waiters, left);
    }
    throw new Error(
      `child ${this.pid}: no matching message within ${timeoutMs} ms (running: ${this.running});\n` +
        `messages: ${JSON.stringify(this.messages.slice(from)).slice(0, 3000)}\nstderr: ${this.stderr.slice(-3000)}`,
    );
  }

  /** Waits (bounded) until standard error matches `pattern`. */
  async waitForStderr(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (let turn = 0; turn < 10_000; turn++) {
      const m = pattern.exec(this.stderr);
      if (m) return m;
      const left = deadline - Date.now();
      if (left <= 0 || !this.running) break;
      await nextWake(this.waiters, left);
    }
    throw new Error(
      `child ${this.pid}: stderr never matched ${pattern} within ${timeoutMs} ms:\n${this.stderr.slice(-3000)}`,
    );
  }

  waitForEvent(ev: string, timeoutMs: number, from = 0): Promise<{ message: ChildMessage; index: number }> {
    return this.waitFor((m) => m.ev === ev, timeoutMs, from);
  }

  send(line: string): void {
    this.child.stdin?.write(`${line}\n`);
  }

  signal(signal: NodeJS.Signals): void {
    if (this.running) this.child.kill(signal);
  }

  /** Exit code within the bound, or throws. */
  async exitCode(timeoutMs: number): Promise<number | null> {
    const result = await Promise.race([this.exited, sleep(timeoutMs).then(() => "timeout" as const)]);
    if (result === "timeout") throw new Error(`child ${this.pid} still running after ${timeoutMs} ms`);
    return result;
  }

  /** SIGTERM, bounded wait, SIGKILL: stops exactly this child. */
  async stop(timeoutMs = 3000): Promise<void> {
    if (!this.running) return;
    this.child.kill("SIGTERM");
    const r = await Promise.race([this.exited.then(() => true), sleep(timeoutMs).then(() => false)]);
    if (!r && this.running) {
      this.child.kill("SIGKILL");
      await Promise.race([this.exited, sleep(2000)]);
    }
  }
}

/**
 * One run of the compiled CLI (`cliLauncher`) to its end: stdout and stderr collected, stdin written
 * up front and closed, bounded waits. Started under `setpriv --pdeathsig TERM`.
 */
export class CliRun {
  readonly child: ChildProcess;
  stdout = "";
  stderr = "";
  readonly exited: Promise<number | null>;
  constructor(script: string, args: string[], env: Record<string, string>, input = "") {
    this.child = spawn("setpriv", ["--pdeathsig", "TERM", process.execPath, script, ...args], {
      env: { ...process.env, ...env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child.stdout?.on("data", (d: Buffer) => {
      this.stdout += d.toString();
    });
    this.child.stderr?.on("data", (d: Buffer) => {
      this.stderr += d.toString();
    });
    this.child.stdin?.on("error", () => {});
    this.child.stdin?.end(input);
    this.exited = new Promise((resolve) => this.child.once("close", (code) => resolve(code)));
  }
  /** The exit code; after `timeoutMs` the child is sent SIGTERM and this throws. */
  async code(timeoutMs = 180_000): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const result = await Promise.race([
      this.exited,
      new Promise<"timeout">((r) => {
        timer = setTimeout(() => r("timeout"), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (result === "timeout") {
      this.child.kill("SIGTERM");
      throw new Error(`still running after ${timeoutMs} ms:\n${this.stderr.slice(-3000)}`);
    }
    return result;
  }
  /** Waits (bounded) until stderr matches; throws when the child exits or the time is up first. */
  async waitForStderr(pattern: RegExp, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let turn = 0; turn < 10_000 && Date.now() < deadline; turn++) {
      if (pattern.test(this.stderr)) return;
      if (this.child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`stderr never matched ${pattern}:\n${this.stderr.slice(-3000)}`);
  }
  json<T>(): T {
    return JSON.parse(this.stdout) as T;
  }
}

/**
 * Virtual cards "inserted" into a private pcscd's vpcd readers: one `card emulate --state FILE`
 * child of the compiled CLI per reader slot, removed (SIGTERM, bounded) by its own PID.
 */
export class EmulatedCards {
  private readonly inserted = new Map<number, NodeChild>();
  constructor(
    private readonly cli: string,
    private readonly pcscd: { readonly slots: readonly { readonly vpcdPort: number }[] },
  ) {}
  /** Starts the card of `stateFile` on reader `slot`; resolves once it is connected to vpcd. */
  async insert(stateFile: string, slot = 0): Promise<void> {
    const port = this.pcscd.slots[slot]!.vpcdPort;
    const child = new NodeChild(
      this.cli,
      {},
      { args: ["card", "emulate", "--vpcd", `127.0.0.1:${port}`, "--state", stateFile] },
    );
    this.inserted.set(slot, child);
    await child.waitForStderr(/inserted: connected to vpcd/, 10_000);
  }
  async remove(slot = 0): Promise<void> {
    const child = this.inserted.get(slot);
    this.inserted.delete(slot);
    if (!child) return;
    child.signal("SIGTERM");
    await child.exitCode(10_000);
  }
  async removeAll(): Promise<void> {
    for (const slot of [...this.inserted.keys()]) await this.remove(slot);
  }
}

/** Runs a command with a time bound; resolves with its output whatever the exit status. */
export async function runTool(
  command: string,
  args: string[],
  env: Record<string, string>,
  timeoutMs = 10_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await promisify(execFile)(command, args, {
      env: { ...process.env, ...env },
      timeout: timeoutMs,
      killSignal: "SIGKILL",
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (error) {
    const e = error as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

/** Median of a list of numbers (undefined for none). */
export function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Wall clock with sub-millisecond resolution, comparable across processes of one machine. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

// ---------------------------------------------------------------------------------------------
// The PC/SC client child: src/transport driven by JSON commands on stdin
// ---------------------------------------------------------------------------------------------

/**
 * Child script: opens a ReaderWatcher on the pcscd named by PCSCLITE_CSOCK_NAME and prints every
 * event as a JSON line (with `t`, a wall-clock time in ms comparable with `nowMs()`). Commands
 * (one JSON object per stdin line): wait, connect, transmit, loop, close, removal, reopen, exit.
 */
const CLIENT_SCRIPT = String.raw`
import { createInterface } from "node:readline";
const { ReaderWatcher } = await import(process.env.HSM_E2E_WATCHER_URL);
const now = () => performance.timeOrigin + performance.now();
const out = (o) => process.stdout.write(JSON.stringify({ t: now(), ...o }) + "\n");
const hex = (u) => Buffer.from(u).toString("hex").toUpperCase();
const describe = (e) => ({ code: e?.code, name: e?.name, exitCode: e?.exitCode, message: String(e?.message ?? e) });
let watcher;
let transport;
const attach = (w) => {
  w.on("event", (e) =>
    out({ ev: e.type, reader: e.reader, atr: e.atr ? hex(e.atr) : undefined, contactless: e.contactless }),
  );
  w.on("error", (e) => out({ ev: "watcher-error", ...describe(e) }));
};
try {
  watcher = await ReaderWatcher.open();
} catch (e) {
  out({ ev: "open-failed", ...describe(e) });
  process.exit(3);
}
attach(watcher);
out({
  ev: "ready",
  readers: watcher.readers().map((r) => r.name),
  present: watcher.present().map((p) => p.reader),
});
const commands = {
  async wait({ reader, timeoutMs }) {
    const started = now();
    const c = await watcher.waitForCard({ reader, timeoutMs });
    out({ ev: "card", reader: c.reader, atr: hex(c.atr), contactless: c.contactless, waitedMs: now() - started });
  },
  async connect({ reader }) {
    transport = await watcher.connect({ reader });
    out({ ev: "connected", reader: transport.readerName, protocol: transport.protocol, atr: hex(transport.atr), contactless: transport.contactless });
  },
  async transmit({ apdu, count = 1 }) {
    const command = Uint8Array.from(Buffer.from(apdu, "hex"));
    const times = [];
    const responses = new Set();
    for (let i = 0; i < count; i++) {
      const s = now();
      const r = await transport.transmit(command);
      times.push(now() - s);
      responses.add(hex(r));
    }
    out({ ev: "transmitted", responses: [...responses], times });
  },
  async loop({ apdu, max = 500 }) {
    const command = Uint8Array.from(Buffer.from(apdu, "hex"));
    let count = 0;
    try {
      for (; count < max; count++) {
        await transport.transmit(command);
        if (count === 0) out({ ev: "loop-running" });
      }
      out({ ev: "loop-ended", count });
    } catch (e) {
      out({ ev: "loop-ended", count, error: describe(e) });
    }
  },
  async close() {
    await transport?.close();
    transport = undefined;
    out({ ev: "closed" });
  },
  async removal({ reader, timeoutMs }) {
    await watcher.waitForRemoval({ reader, timeoutMs });
    out({ ev: "no-card" });
  },
  async reopen({ attempts = 30, delayMs = 100 }) {
    watcher.close();
    let last;
    for (let i = 0; i < attempts; i++) {
      try {
        watcher = await ReaderWatcher.open();
        attach(watcher);
        out({ ev: "reopened", attempt: i + 1, readers: watcher.readers().map((r) => r.name), present: watcher.present().map((p) => p.reader) });
        return;
      } catch (e) {
        last = e;
        await new Promise((r) => setTimeout(r, delayMs));
      }
    }
    throw last;
  },
  async exit() {
    await transport?.close();
    watcher.close();
    out({ ev: "bye" });
    rl.close();
    process.stdin.destroy();
  },
};
const rl = createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  let cmd = "?";
  try {
    const { cmd: name, ...args } = JSON.parse(line);
    cmd = name;
    await commands[name](args);
  } catch (e) {
    out({ ev: "failed", cmd, ...describe(e) });
  }
});
`;

/** Writes the client script into the build and returns a function that starts one client. */
export async function pcscClientLauncher(
  build: PrivateBuild,
): Promise<(env: Record<string, string>, options?: { netns?: string }) => NodeChild> {
  const script = await writeLauncher(build, "e2e-pcsc-client.mjs", CLIENT_SCRIPT);
  const watcherUrl = build.url("transport/reader-watcher.js");
  return (env, options) => new NodeChild(script, { ...env, HSM_E2E_WATCHER_URL: watcherUrl }, options);
}

/** Writes a launcher for the compiled CLI into the build; returns its path (run it with NodeChild). */
export async function cliLauncher(build: PrivateBuild): Promise<string> {
  return writeLauncher(
    build,
    "e2e-hsm-onboard.mjs",
    'import { main } from "./cli/main.js";\nawait main(process.argv.slice(2));\n',
  );
}

/**
 * Puts a launcher script into the build once, atomically (temporary file, then rename). Callers ask
 * for it before every child; rewriting it in place (truncate, write) let a child that was starting
 * meanwhile read an empty module and exit 0 without running anything (seen as a crash point "not
 * reached" in test/security/crash.test.ts, whose points run two at a time on one build).
 */
const launchers = new Map<string, Promise<string>>();
function writeLauncher(build: PrivateBuild, name: string, source: string): Promise<string> {
  const script = join(build.dir, name);
  let written = launchers.get(script);
  if (!written) {
    const temporary = `${script}.${process.pid}.tmp`;
    written = writeFile(temporary, source)
      .then(() => rename(temporary, script))
      .then(() => script);
    written.catch(() => launchers.delete(script));
    launchers.set(script, written);
  }
  return written;
}

/** One JSON command line for the client child. */
export function command(cmd: string, args: Record<string, unknown> = {}): string {
  return JSON.stringify({ cmd, ...args });
}
