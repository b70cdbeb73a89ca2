/**
 * `hsm-onboard sim rack` end to end, as root: the compiled CLI builds a LAN namespace with a bridge,
 * a station and one namespace per HSM with its own pcscd + vpcd reader and agent process, moves ONE
 * virtual card (a `card emulate` process) from reader to reader, and checks every HSM by TCP from the
 * LAN namespace. Here the test checks the report, checks reachability itself (from inside the LAN
 * namespace of a kept run), and checks that nothing is left: no namespace of the run, no process
 * running from its work directory, no state file — after a normal run, after `--cleanup`, and after
 * Ctrl-C (SIGINT).
 *
 * Each run records its state in a private directory (HSM_ONBOARD_SIM_STATE_DIR), so `--cleanup` here
 * never touches other runs on the machine.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { within } from "../../src/sim/netns.js";
import { openInventory } from "../../src/station/inventory/open.js";
import { digestMatch, stateOf } from "../../src/station/inventory/state.js";
import {
  buildForChildren,
  cliLauncher,
  netnsCapability,
  type PrivateBuild,
  requireOrSkip,
  runTool,
} from "../helpers/pcsc-env.js";

const cap = requireOrSkip(netnsCapability());

interface RackJson {
  ok: boolean;
  exitCode: number;
  problems: string[];
  runId: string;
  applier: string;
  lan: { namespace: string; addresses: string[] };
  station: { namespace: string };
  hsms: {
    serial: string;
    hostname: string;
    namespace: string;
    addresses: string[];
    configured: boolean;
    reachable: { address: string; port: number; ok: boolean; banner: string | null }[];
    receipt: { verified: boolean };
    onboardingMs: number;
  }[];
  kept: boolean;
  stateFile: string;
  workDir: string;
  timings: Record<string, number>;
}

/** A run of the compiled CLI: its output, its exit, bounded. */
class CliRun {
  readonly child: ChildProcess;
  stdout = "";
  stderr = "";
  readonly exited: Promise<number | null>;
  constructor(script: string, args: string[], env: Record<string, string>, cwd: string) {
    // setpriv --pdeathsig: the run is stopped (and cleans up) even if this test process dies.
    this.child = spawn("setpriv", ["--pdeathsig", "TERM", process.execPath, script, ...args], {
      env: { ...process.env, ...env },
      cwd,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout?.on("data", (d: Buffer) => {
      this.stdout += d.toString();
    });
    this.child.stderr?.on("data", (d: Buffer) => {
      this.stderr += d.toString();
    });
    this.exited = new Promise((resolve) => this.child.once("close", (code) => resolve(code)));
  }
  async exitCode(timeoutMs: number): Promise<number | null> {
    const code = await within(this.exited, timeoutMs);
    if (typeof code === "symbol") {
      this.child.kill("SIGTERM");
      await within(this.exited, 20_000);
      throw new Error(`sim rack still running after ${timeoutMs} ms:\n${this.stderr.slice(-3000)}`);
    }
    return code;
  }
  async waitForStderr(pattern: RegExp, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let turn = 0; turn < 10_000 && Date.now() < deadline; turn++) {
      if (pattern.test(this.stderr)) return;
      if (this.child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`stderr never matched ${pattern}:\n${this.stderr.slice(-3000)}`);
  }
}

async function namespacesOf(runId: string): Promise<string[]> {
  const out = await runTool("ip", ["-json", "netns", "list"], {});
  const list = out.stdout.trim() ? (JSON.parse(out.stdout) as { name: string }[]) : [];
  return list.map((n) => n.name).filter((n) => n.startsWith(`${runId}-`));
}

/** PIDs of processes whose command line mentions `text` (the run's work directory or its id). */
async function processesMentioning(text: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (cmdline.includes(text)) pids.push(Number(entry));
  }
  return pids;
}

/** Everything of the run is gone: namespaces, processes, state file, work directory. */
async function expectNothingLeft(runId: string, workDir: string, stateFile: string): Promise<void> {
  expect(await namespacesOf(runId)).toEqual([]);
  expect(await processesMentioning(workDir)).toEqual([]);
  expect(await processesMentioning(runId)).toEqual([]);
  expect(existsSync(stateFile)).toBe(false);
  expect(existsSync(workDir)).toBe(false);
}

describe.skipIf(!cap.ok)(
  `sim rack through pcscd, vpcd and namespaces${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let build: PrivateBuild;
    let cli: string;
    let stateDir: string;
    let env: Record<string, string>;

    beforeAll(async () => {
      build = await buildForChildren(["cli/main.js", "sim/rack.js", "sim/tcp-service.js"]);
      cli = await cliLauncher(build);
      stateDir = await mkdtemp(join(tmpdir(), "hsm-onboard-rack-state-"));
      env = { HSM_ONBOARD_SIM_STATE_DIR: stateDir };
    }, 120_000);

    afterAll(async () => {
      // Whatever a failed test left: only this file's runs are recorded in stateDir.
      if (cli) {
        const cleanup = new CliRun(cli, ["sim", "rack", "--cleanup"], env, tmpdir());
        await cleanup.exitCode(60_000).catch(() => undefined);
      }
      if (stateDir) await rm(stateDir, { recursive: true, force: true });
      await build?.cleanup();
    }, 90_000);

    test("4 HSMs --json: every address answers from the LAN with its serial, receipts verified, nothing left", async () => {
      const run = new CliRun(cli, ["sim", "rack", "--hsms", "4", "--json"], env, tmpdir());
      const code = await run.exitCode(100_000);
      expect(run.stderr).toMatch(/✓ namespaces, processes and files removed/);
      expect(code, run.stderr.slice(-3000)).toBe(0);
      const report = JSON.parse(run.stdout) as RackJson;
      expect(report).toMatchObject({ ok: true, exitCode: 0, problems: [], kept: false });
      expect(report.lan.namespace).toBe(`${report.runId}-lan`);
      expect(report.lan.addresses).toContain("198.51.100.250/24");
      expect(report.hsms.map((h) => h.serial)).toEqual(["1234567", "1234568", "1234569", "1234570"]);
      for (const [i, h] of report.hsms.entries()) {
        expect(h.namespace).toBe(`${report.runId}-hsm${i + 1}`);
        expect(h.configured).toBe(true);
        expect(h.addresses).toEqual([`198.51.100.${11 + i}/24`, `2001:db8:100::${11 + i}/64`]);
        // One TCP connection per assigned address, made from inside the LAN namespace.
        expect(h.reachable.map((r) => r.address)).toEqual(h.addresses.map((a) => a.split("/")[0]));
        for (const r of h.reachable) {
          expect(r).toMatchObject({
            port: 1792,
            ok: true,
            banner: `HSM-ONBOARD-SIM serial=${h.serial} hostname=${h.hostname}`,
          });
        }
        expect(h.receipt.verified).toBe(true);
      }
      await expectNothingLeft(report.runId, report.workDir, report.stateFile);
    }, 120_000);

    test("--net networkd: each HSM configured through the real systemd-networkd in its namespace; receipts verified; no networkd left", async () => {
      const run = new CliRun(
        cli,
        ["sim", "rack", "--hsms", "2", "--net", "networkd", "--json"],
        env,
        tmpdir(),
      );
      const code = await run.exitCode(120_000);
      expect(code, run.stderr.slice(-3000)).toBe(0);
      const report = JSON.parse(run.stdout) as RackJson;
      expect(report).toMatchObject({ ok: true, exitCode: 0, problems: [], kept: false, applier: "networkd" });
      expect(run.stderr).toMatch(/\(networkd\)/);
      for (const [i, h] of report.hsms.entries()) {
        expect(h.configured).toBe(true);
        expect(h.addresses).toEqual([`198.51.100.${11 + i}/24`, `2001:db8:100::${11 + i}/64`]);
        expect(h.reachable.every((r) => r.ok)).toBe(true);
        expect(h.receipt.verified).toBe(true);
      }
      await expectNothingLeft(report.runId, report.workDir, report.stateFile);
      // No systemd-networkd of this run is left (each one had the run's directory bind-mounted).
      for (const entry of await readdir("/proc")) {
        if (!/^\d+$/.test(entry)) continue;
        const comm = await readFile(`/proc/${entry}/comm`, "utf8").catch(() => "");
        if (comm.trim() !== "systemd-network") continue;
        const mounts = await readFile(`/proc/${entry}/mountinfo`, "utf8").catch(() => "");
        expect(mounts, `systemd-networkd ${entry}`).not.toContain(report.workDir);
      }
    }, 150_000);

    test("--keep leaves a rack anyone can reach from the LAN namespace; --cleanup removes it", async () => {
      const run = new CliRun(cli, ["sim", "rack", "--hsms", "1", "--keep", "--json"], env, tmpdir());
      const code = await run.exitCode(60_000);
      expect(code, run.stderr.slice(-3000)).toBe(0);
      const report = JSON.parse(run.stdout) as RackJson;
      expect(report.kept).toBe(true);
      const hsm = report.hsms[0]!;
      expect(await namespacesOf(report.runId)).toEqual(
        expect.arrayContaining([report.lan.namespace, report.station.namespace, hsm.namespace]),
      );
      // Our own check, independent of sim rack's probe: a TCP connection started inside the LAN
      // namespace to each kept address (never from this namespace).
      for (const address of hsm.addresses.map((a) => a.split("/")[0]!)) {
        const script =
          'const s=require("net").connect({host:process.argv[1],port:1792,timeout:3000});let d="";' +
          's.on("data",(c)=>d+=c);s.on("end",()=>{console.log(d.trim());process.exit(0)});' +
          's.on("timeout",()=>process.exit(2));s.on("error",()=>process.exit(3));';
        const probe = await runTool(
          "ip",
          ["netns", "exec", report.lan.namespace, process.execPath, "-e", script, address],
          {},
          10_000,
        );
        expect(probe.code, probe.stderr).toBe(0);
        expect(probe.stdout.trim()).toBe(`HSM-ONBOARD-SIM serial=${hsm.serial} hostname=${hsm.hostname}`);
      }
      const recorded = JSON.parse(await readFile(report.stateFile, "utf8")) as {
        processes: { pid: number }[];
      };
      expect(recorded.processes).toHaveLength(1); // the TCP service; pcscd, agent and card were stopped
      // The station's inventory holds the room (issue 14): `station serve` on it shows a real rack.
      const inventory = await openInventory({ stationDir: join(report.workDir, "station") });
      try {
        const states = await inventory.inventory();
        expect(states.map((s) => [s.serial, stateOf(s).state])).toEqual([[hsm.serial, "onboarded ✓"]]);
        const [state] = states;
        expect(state?.written?.sequence).toBe(1);
        expect(state?.receipt).toMatchObject({ verified: true, dryRun: false, channel: "SCP11b" });
        expect(state?.receipt?.deviceSubject).toContain(hsm.serial);
        expect(digestMatch(state!)).toBe(true);
      } finally {
        await inventory.close();
      }

      const cleanup = new CliRun(cli, ["sim", "rack", "--cleanup", "--json"], env, tmpdir());
      expect(await cleanup.exitCode(60_000)).toBe(0);
      const removed = JSON.parse(cleanup.stdout) as {
        removed: { runId: string; namespaces: string[]; processes: number }[];
      };
      expect(removed.removed).toEqual([
        expect.objectContaining({
          runId: report.runId,
          processes: 1,
          namespaces: expect.arrayContaining([hsm.namespace]),
        }),
      ]);
      for (const { pid } of recorded.processes) expect(existsSync(`/proc/${pid}`)).toBe(false);
      await expectNothingLeft(report.runId, report.workDir, report.stateFile);
    }, 90_000);

    test("Ctrl-C (SIGINT) half-way: exit 130 and everything it had set up is removed", async () => {
      const run = new CliRun(cli, ["sim", "rack", "--hsms", "2", "--json"], env, tmpdir());
      await run.waitForStderr(/private pcscd instances/, 60_000);
      // setpriv execs node: the child's PID is the run's, and its run id starts with it.
      const state = (await readdir(stateDir)).find((f) => f.startsWith(`hob-${run.child.pid}-`));
      expect(state).toBeDefined();
      const record = JSON.parse(await readFile(join(stateDir, state!), "utf8")) as {
        runId: string;
        workDir: string;
      };
      expect((await namespacesOf(record.runId)).length).toBe(4);
      run.child.kill("SIGINT");
      expect(await run.exitCode(60_000)).toBe(130);
      expect(run.stderr).toMatch(/interrupted; what it had set up was removed/);
      await expectNothingLeft(record.runId, record.workDir, join(stateDir, state!));
    }, 90_000);
  },
);
