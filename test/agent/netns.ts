/**
 * Network namespaces for the iproute2 applier tests (TESTBED.md, network namespaces):
 * - capability: root, `ip`, and permission to create a namespace; VLANs also need the kernel's
 *   8021q support (detected by creating one in a scratch namespace). Missing → the tests skip with
 *   the reason; under HSM_ONBOARD_REQUIRE_ALL=1 they fail instead (requireOrSkip).
 * - every namespace is created here with a unique name (`hot-<pid>-<n>-<role>`) and deleted by
 *   cleanup(), which tests call in afterEach/afterAll; all traffic starts inside these namespaces.
 * - every child process is started here and stopped by its own PID.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import type { Capability } from "../helpers/pcsc-env.js";

let counter = 0;

function ipOk(args: string[]): boolean {
  return spawnSync("ip", args, { stdio: "ignore", timeout: 10_000 }).status === 0;
}

let netnsCap: Capability | undefined;
let vlanCap: Capability | undefined;

export function netnsCapability(): Capability {
  netnsCap ??= (() => {
    if (process.getuid?.() !== 0)
      return { ok: false, reason: "iproute2 applier tests need root (network namespaces)" };
    if (spawnSync("sh", ["-c", "command -v ip"], { stdio: "ignore" }).status !== 0) {
      return { ok: false, reason: "iproute2 applier tests need the ip command (iproute2)" };
    }
    const name = `hot-${process.pid}-cap`;
    if (!ipOk(["netns", "add", name])) return { ok: false, reason: "cannot create network namespaces here" };
    ipOk(["netns", "del", name]);
    return { ok: true, reason: "" };
  })();
  return netnsCap;
}

/** 802.1Q VLAN subinterfaces: the kernel's 8021q support (absent from some VM kernels). */
export function vlanCapability(): Capability {
  vlanCap ??= (() => {
    const base = netnsCapability();
    if (!base.ok) return base;
    const name = `hot-${process.pid}-vlancap`;
    if (!ipOk(["netns", "add", name])) return { ok: false, reason: "cannot create network namespaces here" };
    try {
      const ok =
        ipOk(["-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1"]) &&
        ipOk(["-n", name, "link", "add", "link", "v0", "name", "v0.5", "type", "vlan", "id", "5"]);
      return ok
        ? { ok: true, reason: "" }
        : { ok: false, reason: "the kernel has no 802.1Q VLAN support (8021q)" };
    } finally {
      ipOk(["netns", "del", name]);
    }
  })();
  return vlanCap;
}

export function ip(args: readonly string[]): string {
  return execFileSync("ip", [...args], { encoding: "utf8", timeout: 10_000 });
}

/** `ip -n NS -json addr show` parsed, for before/after comparisons. */
export function addrJson(ns: string): unknown {
  return JSON.parse(ip(["-n", ns, "-json", "addr", "show"]) || "[]");
}

/** Routes of the main table (IPv4 and IPv6) in `ns`. */
export function routesJson(ns: string): unknown {
  return {
    v4: JSON.parse(ip(["-n", ns, "-json", "route", "show", "table", "main"]) || "[]"),
    v6: JSON.parse(ip(["-n", ns, "-6", "-json", "route", "show", "table", "main"]) || "[]"),
  };
}

/**
 * Waits (bounded) until no address in `ns` is tentative: the kernel runs DAD on the link-local
 * address of every link that comes up, and a snapshot taken meanwhile differs from one taken after.
 */
export async function settled(ns: string): Promise<void> {
  await waitUntil(
    () => !JSON.stringify(addrJson(ns)).includes('"tentative"'),
    5000,
    `DAD to finish in ${ns}`,
  );
}

/** Namespaces created by one test file, all removed by cleanup(). */
export class NetnsLab {
  readonly #namespaces: string[] = [];
  readonly #children = new Set<ChildProcess>();

  /** A new namespace with its loopback up. */
  namespace(role: string): string {
    const name = `hot-${process.pid}-${++counter}-${role}`;
    ip(["netns", "add", name]);
    this.#namespaces.push(name);
    ip(["-n", name, "link", "set", "lo", "up"]);
    return name;
  }

  /** A veth pair: `a` in nsA, `b` in nsB (both down, unconfigured). */
  link(nsA: string, a: string, nsB: string, b: string): void {
    ip(["-n", nsA, "link", "add", a, "type", "veth", "peer", "name", b, "netns", nsB]);
  }

  /** Starts `node -e script` inside `ns`; stopped by cleanup() if still running. */
  node(ns: string, script: string, args: string[] = []): ChildProcess & { output: () => string } {
    const child = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", script, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.#children.add(child);
    let out = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.once("exit", () => this.#children.delete(child));
    return Object.assign(child, { output: () => out });
  }

  async cleanup(): Promise<void> {
    for (const child of [...this.#children]) await stopChild(child);
    while (this.#namespaces.length > 0) {
      const name = this.#namespaces.pop()!;
      ipOk(["netns", "del", name]);
    }
  }
}

/** Waits (bounded) until `predicate` holds. */
export async function waitUntil(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let turn = 0; turn < 10_000; turn++) {
    if (predicate()) return;
    if (Date.now() >= deadline) break;
    await sleep(20);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Exit code of a child within the bound (SIGKILL after it). */
export async function exitOf(child: ChildProcess, timeoutMs: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const code = await Promise.race([
    new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c))),
    sleep(timeoutMs).then(() => "timeout" as const),
  ]);
  if (code === "timeout") {
    await stopChild(child);
    throw new Error(`child ${child.pid} still running after ${timeoutMs} ms`);
  }
  return code;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const exited = await Promise.race([
    new Promise<boolean>((resolve) => child.once("exit", () => resolve(true))),
    sleep(2000).then(() => false),
  ]);
  if (!exited) child.kill("SIGKILL");
}

/**
 * A TCP server inside `ns` bound to `host:port`: answers each connection with `reply` and prints
 * `listening` once bound; it exits after `lifetimeMs` at the latest.
 */
export const TCP_SERVER = `
const net = require("node:net");
const [host, port, reply, lifetime] = process.argv.slice(1);
const server = net.createServer((socket) => socket.end(reply));
server.listen({ host, port: Number(port) }, () => console.log("listening"));
server.on("error", (e) => { console.log("error " + e.code); process.exit(2); });
setTimeout(() => process.exit(0), Number(lifetime)).unref();
`;

/** A TCP client inside `ns`: connects to `host:port`, prints what it got, exits 0 (1 on failure). */
export const TCP_CLIENT = `
const net = require("node:net");
const [host, port, timeout] = process.argv.slice(1);
const socket = net.connect({ host, port: Number(port), timeout: Number(timeout) });
let data = "";
socket.on("data", (d) => (data += d));
socket.on("end", () => { console.log("got " + data); process.exit(0); });
socket.on("timeout", () => { console.log("timeout"); process.exit(1); });
socket.on("error", (e) => { console.log("error " + e.code); process.exit(1); });
`;
