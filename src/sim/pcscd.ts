/**
 * A private pcscd with its own vpcd virtual reader(s), isolated from any other pcscd on the box.
 *
 * pcscd's socket path is compiled in (/run/pcscd/pcscd.comm). Each instance therefore runs in its
 * own mount namespace with a per-instance directory bound over /run/pcscd, and clients reach it
 * through `PCSCLITE_CSOCK_NAME=<dir>/run/pcscd.comm` (read once per client process). Its reader
 * configuration is a private reader.conf.d holding vpcd entries on free TCP ports. Optionally the
 * whole thing runs inside a network namespace (`ip netns exec`), which keeps vpcd's listening
 * sockets (they bind every address) off the host's interfaces.
 *
 * Needs root (mount namespaces, bind mounts); the caller keeps the handle and calls stop().
 */

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { PcscdStartError } from "../errors.js";

export { PcscdStartError } from "../errors.js";

/** Where distributions put vsmartcard's pcsc-lite driver. */
const VPCD_DRIVER_CANDIDATES = [
  "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
  "/usr/lib64/pcsc/drivers/serial/libifdvpcd.so",
  "/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so",
  "/usr/lib/x86_64-linux-gnu/pcsc/drivers/serial/libifdvpcd.so",
  "/usr/lib/aarch64-linux-gnu/pcsc/drivers/serial/libifdvpcd.so",
];

let setprivFound: boolean | undefined;
function setprivPath(): boolean {
  setprivFound ??= ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"].some((p) => existsSync(p));
  return setprivFound;
}

export function findVpcdDriver(): string | undefined {
  return VPCD_DRIVER_CANDIDATES.find((p) => existsSync(p));
}

export interface PrivatePcscdOptions {
  /** Work directory (run/, conf/, pcscd.log); a fresh temporary one by default, removed by stop(). */
  dir?: string;
  /** First vpcd TCP port; a free run of ports by default. */
  vpcdPort?: number;
  /** vpcd entries: each gives two slots on two consecutive ports (default 1, at most 8). */
  entries?: number;
  /** FRIENDLYNAME of the vpcd entries (default "Virtual PCD"). */
  friendlyName?: string;
  /** Run inside this network namespace (`ip netns exec NAME`). */
  netns?: string;
  /** pcscd -d -a: debug and APDU logging into pcscd.log. */
  debug?: boolean;
  /** Bound on the wait for the socket and the vpcd ports (default 5000 ms). */
  readyTimeoutMs?: number;
  /** Bound on the wait after SIGTERM before SIGKILL (default 3000 ms). */
  stopTimeoutMs?: number;
  /** Path of libifdvpcd.so; found in the usual places by default. */
  vpcdDriver?: string;
  /**
   * A shared object preloaded into this pcscd (LD_PRELOAD); by default $HSM_ONBOARD_PCSCD_PRELOAD.
   * The test suite uses it for test/helpers/vpcd-nodelay.c: Debian 12's vpcd sends each command's
   * 2-byte length and its body in two writes without TCP_NODELAY, so the body waits for the card
   * side's delayed ACK (~40 ms per APDU on loopback); with TCP_NODELAY an APDU takes ~1 ms.
   */
  preload?: string;
}

export interface PrivatePcscd {
  readonly dir: string;
  /** Value for PCSCLITE_CSOCK_NAME. */
  readonly socketPath: string;
  /** TCP port of the first vpcd slot (the one `readerName` names). */
  readonly vpcdPort: number;
  /** Name pcscd gives the first slot, e.g. "Virtual PCD 00 00". */
  readonly readerName: string;
  /** Every slot: reader name and vpcd port. */
  readonly slots: readonly { readerName: string; vpcdPort: number }[];
  readonly logPath: string;
  /** PID of the pcscd process (undefined once stopped). */
  readonly pid: number | undefined;
  /** Environment for client processes of this instance. */
  readonly env: { PCSCLITE_CSOCK_NAME: string };
  /** Stops pcscd (SIGTERM, then SIGKILL after the bound) and removes a temporary work dir. */
  stop(): Promise<void>;
  /** Stops and starts pcscd again with the same directory and ports (a "pcscd restart"). */
  restart(): Promise<void>;
}

/** Finds `count` consecutive TCP ports that are free on every IPv4 address (vpcd binds 0.0.0.0). */
export async function findFreePortRun(count: number, attempts = 20): Promise<number> {
  for (let attempt = 0; attempt < attempts; attempt++) {
    const first = await listenOn(0);
    if (!first) continue;
    const base = first.port;
    const held = [first];
    let ok = base + count - 1 <= 65535;
    for (let k = 1; ok && k < count; k++) {
      const next = await listenOn(base + k);
      if (next) held.push(next);
      else ok = false;
    }
    await Promise.all(held.map((h) => h.close()));
    if (ok) return base;
  }
  throw new Error(`no run of ${count} free TCP ports found in ${attempts} attempts`);
}

function listenOn(port: number): Promise<{ port: number; close: () => Promise<void> } | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(undefined));
    server.listen({ port, host: "0.0.0.0", exclusive: true }, () => {
      const address = server.address();
      const bound = typeof address === "object" && address ? address.port : port;
      resolve({ port: bound, close: () => new Promise((r) => server.close(() => r())) });
    });
  });
}

export async function startPrivatePcscd(options: PrivatePcscdOptions = {}): Promise<PrivatePcscd> {
  // A free port found here can be taken by someone else before vpcd binds it (several instances
  // starting at once): with ports of our own choosing, try again with fresh ones, boundedly.
  const attempts = options.vpcdPort === undefined ? 3 : 1;
  let lastError: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      return await startOnce(options);
    } catch (error) {
      lastError = error;
      if (!(error instanceof PcscdStartError)) break;
    }
  }
  throw lastError;
}

async function startOnce(options: PrivatePcscdOptions): Promise<PrivatePcscd> {
  const entries = options.entries ?? 1;
  if (!Number.isInteger(entries) || entries < 1 || entries > 8) throw new RangeError("entries must be 1..8");
  const driver = options.vpcdDriver ?? findVpcdDriver();
  if (!driver) throw new Error("vpcd driver (libifdvpcd.so, package vsmartcard-vpcd) not found");
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), "hsm-onboard-pcscd-")));
  try {
    const vpcdPort = options.vpcdPort ?? (await findFreePortRun(2 * entries));
    const friendlyName = options.friendlyName ?? "Virtual PCD";
    const runDir = join(dir, "run");
    const confDir = join(dir, "conf");
    await mkdir(runDir, { recursive: true });
    await mkdir(confDir, { recursive: true });
    // The mount point itself must exist in the parent namespace; it stays empty there.
    await mkdir("/run/pcscd", { recursive: true });
    const slots: { readerName: string; vpcdPort: number }[] = [];
    for (let e = 0; e < entries; e++) {
      const port = vpcdPort + 2 * e;
      // vpcd: DEVICENAME "/dev/null:PORT" = listen on PORT (and PORT+1 for the second slot).
      await writeFile(
        join(confDir, `vpcd-${e}`),
        `FRIENDLYNAME "${friendlyName}"\nDEVICENAME   /dev/null:0x${port.toString(16).toUpperCase()}\n` +
          `LIBPATH      ${driver}\nCHANNELID    0x${port.toString(16).toUpperCase()}\n`,
      );
      const index = e.toString(16).toUpperCase().padStart(2, "0");
      slots.push({ readerName: `${friendlyName} ${index} 00`, vpcdPort: port });
      slots.push({ readerName: `${friendlyName} ${index} 01`, vpcdPort: port + 1 });
    }
    const instance = new PcscdInstance(dir, ownDir, runDir, confDir, slots, options);
    await instance.launch();
    return instance;
  } catch (error) {
    if (ownDir) await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

class PcscdInstance implements PrivatePcscd {
  readonly socketPath: string;
  readonly logPath: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();

  constructor(
    readonly dir: string,
    private readonly ownDir: boolean,
    private readonly runDir: string,
    private readonly confDir: string,
    readonly slots: readonly { readerName: string; vpcdPort: number }[],
    private readonly options: PrivatePcscdOptions,
  ) {
    this.socketPath = join(runDir, "pcscd.comm");
    this.logPath = join(dir, "pcscd.log");
  }

  get vpcdPort(): number {
    return this.slots[0]!.vpcdPort;
  }

  get readerName(): string {
    return this.slots[0]!.readerName;
  }

  get pid(): number | undefined {
    return this.child?.exitCode === null && this.child.signalCode === null ? this.child.pid : undefined;
  }

  get env(): { PCSCLITE_CSOCK_NAME: string } {
    return { PCSCLITE_CSOCK_NAME: this.socketPath };
  }

  async launch(): Promise<void> {
    // A stale socket from a killed instance would look "ready" at once.
    await rm(this.socketPath, { force: true });
    const log = await open(this.logPath, "a");
    const pcscdArgs = ["-f", "-c", this.confDir, ...(this.options.debug ? ["-d", "-a"] : [])];
    // Paths go in as positional parameters: no shell quoting of user paths.
    const script = 'mount --bind "$1" /run/pcscd && shift && exec pcscd "$@"';
    const unshareArgs = [
      "-m",
      "--propagation",
      "private",
      "sh",
      "-c",
      script,
      "sh",
      this.runDir,
      ...pcscdArgs,
    ];
    // setpriv --pdeathsig: pcscd gets SIGTERM if this process dies without calling stop().
    const guard = setprivPath() ? ["setpriv", "--pdeathsig", "TERM"] : [];
    const argv = [
      ...(this.options.netns ? ["ip", "netns", "exec", this.options.netns] : []),
      ...guard,
      "unshare",
      ...unshareArgs,
    ];
    const [command, ...args] = argv as [string, ...string[]];
    let child: ChildProcess;
    try {
      // ip netns exec, setpriv and unshare exec their command, sh execs pcscd: the PID is pcscd's.
      const preload = this.options.preload ?? process.env.HSM_ONBOARD_PCSCD_PRELOAD;
      child = spawn(command, args, {
        stdio: ["ignore", log.fd, log.fd],
        ...(preload ? { env: { ...process.env, LD_PRELOAD: preload } } : {}),
      });
    } finally {
      await log.close();
    }
    this.child = child;
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once("exit", () => resolve());
    });
    child.once("error", () => {
      // spawn failure (no unshare/ip): reported by waitReady through the exit.
    });
    try {
      await this.waitReady(this.options.readyTimeoutMs ?? 5000);
    } catch (error) {
      await this.kill();
      throw error;
    }
  }

  /** Polls, boundedly, for the socket file and for vpcd listening on every port. */
  private async waitReady(timeoutMs: number): Promise<void> {
    const stepMs = 20;
    const deadline = Date.now() + timeoutMs;
    const ports = this.slots.map((s) => s.vpcdPort);
    for (let step = 0; step <= Math.ceil(timeoutMs / stepMs); step++) {
      const child = this.child;
      if (!child || child.exitCode !== null || child.signalCode !== null) {
        throw new PcscdStartError(
          `pcscd exited during start-up (code ${child?.exitCode ?? "?"}, signal ${child?.signalCode ?? "none"})`,
          await this.readLog(),
        );
      }
      if (existsSync(this.socketPath) && child.pid && (await listeningPorts(child.pid, ports))) return;
      if (Date.now() >= deadline) break;
      await sleep(stepMs);
    }
    throw new PcscdStartError(`pcscd not ready after ${timeoutMs} ms`, await this.readLog());
  }

  private async readLog(): Promise<string> {
    try {
      return (await readFile(this.logPath, "utf8")).slice(-4000);
    } catch {
      return "";
    }
  }

  /** SIGTERM, bounded wait, SIGKILL, bounded wait. Only ever signals the PID it started. */
  private async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const bounded = (ms: number) => Promise.race([this.exited.then(() => true), sleep(ms).then(() => false)]);
    child.kill("SIGTERM");
    if (await bounded(this.options.stopTimeoutMs ?? 3000)) return;
    child.kill("SIGKILL");
    if (!(await bounded(2000))) throw new Error(`pcscd (pid ${child.pid}) did not exit after SIGKILL`);
  }

  async stop(): Promise<void> {
    await this.kill();
    this.child = undefined;
    if (this.ownDir) await rm(this.dir, { recursive: true, force: true });
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.launch();
  }
}

/** Whether the process's network namespace has a TCP listener on each port (/proc/PID/net/tcp*). */
async function listeningPorts(pid: number, ports: readonly number[]): Promise<boolean> {
  const listening = new Set<number>();
  for (const file of ["tcp", "tcp6"]) {
    let text: string;
    try {
      text = await readFile(`/proc/${pid}/net/${file}`, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      // fields[1] = local "ADDR:PORT" (hex), fields[3] = state; 0A = LISTEN
      if (fields[3] !== "0A" || !fields[1]) continue;
      const port = Number.parseInt(fields[1].split(":").pop() ?? "", 16);
      if (Number.isInteger(port)) listening.add(port);
    }
  }
  return ports.every((p) => listening.has(p));
}
