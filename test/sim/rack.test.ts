/**
 * The parts of `sim rack` that need no namespaces: the HSM's TCP service and the LAN probe script
 * (over loopback, never a simulated address), the refusal without root, option rules, and
 * `--cleanup` against recorded runs in a private state directory. The full rack runs in
 * test/e2e/rack.test.ts.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from "vitest";
import { processStartTime, within } from "../../src/sim/netns.js";
import { cleanupKeptRacks, reachabilityHint } from "../../src/sim/rack.js";
import {
  bannerFor,
  NTLS_PORT,
  PROBE_SCRIPT,
  type ProbeResult,
  parseBanner,
  startTcpService,
} from "../../src/sim/tcp-service.js";
import { runCliInProcess } from "../helpers/cli.js";
import { requireOrSkipReason } from "../helpers/pcsc-env.js";

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "hsm-onboard-rack-test-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});
afterEach(() => {
  vi.restoreAllMocks();
});

/** Runs the probe script (as `sim rack` does inside the LAN namespace) and returns its results. */
async function probe(targets: { address: string; port: number; serial: string }[]): Promise<ProbeResult[]> {
  const child = spawn(process.execPath, ["-e", PROBE_SCRIPT, JSON.stringify({ targets, timeoutMs: 2000 })], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d: Buffer) => {
    out += d.toString();
  });
  const code = await within(new Promise<number | null>((r) => child.once("close", r)), 10_000);
  if (typeof code !== "number") {
    child.kill("SIGKILL");
    throw new Error("probe did not finish");
  }
  expect(code).toBe(0);
  return JSON.parse(out) as ProbeResult[];
}

describe("the simulated HSM's TCP service", () => {
  test("banner names serial and hostname; parseBanner reads it back", () => {
    expect(bannerFor("1234567", "hsm-fra1-a01")).toBe(
      "HSM-ONBOARD-SIM serial=1234567 hostname=hsm-fra1-a01\r\n",
    );
    expect(parseBanner(bannerFor("1234567", "hsm-fra1-a01"))).toEqual({
      serial: "1234567",
      hostname: "hsm-fra1-a01",
    });
    expect(parseBanner("SSH-2.0-OpenSSH\r\n")).toBeUndefined();
    expect(() => bannerFor("12 34")).toThrow();
    expect(NTLS_PORT).toBe(1792);
  });

  test("the probe accepts the right serial and names what is wrong otherwise", async () => {
    const service = await startTcpService({
      serial: "1234567",
      hostname: "hsm-a",
      addresses: ["127.0.0.1"],
      port: 0,
    });
    try {
      const port = service.listening[0]!.port;
      expect(port).toBeGreaterThan(0);
      const results = await probe([
        { address: "127.0.0.1", port, serial: "1234567" },
        { address: "127.0.0.1", port, serial: "7654321" },
      ]);
      expect(results[0]).toMatchObject({ ok: true, banner: "HSM-ONBOARD-SIM serial=1234567 hostname=hsm-a" });
      expect(results[1]).toMatchObject({ ok: false, error: "banner does not name serial 7654321" });
      expect(service.connections).toBe(2);
    } finally {
      await service.close();
    }
    const port = service.listening[0]!.port;
    const [refused] = await probe([{ address: "127.0.0.1", port, serial: "1234567" }]);
    expect(refused).toMatchObject({ ok: false, error: "ECONNREFUSED" });
  });

  test("an address that cannot be bound fails the start and leaves nothing listening", async () => {
    // 203.0.113.254 (documentation range) is on no interface of this namespace: EADDRNOTAVAIL; nothing is sent.
    await expect(
      startTcpService({ serial: "1", addresses: ["127.0.0.1", "203.0.113.254"], port: 0 }),
    ).rejects.toThrow(/EADDRNOTAVAIL/);
  });
});

describe("sim rack on the command line", () => {
  test("without root: one clear line, exit 2, nothing created", async () => {
    vi.spyOn(process, "getuid").mockReturnValue(1000);
    const result = await runCliInProcess(["sim", "rack", "--hsms", "2"]);
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toMatch(/^hsm-onboard: sim rack needs root .*hsm-onboard demo/);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
    expect(result.stdout).toBe("");
    const cleanup = await runCliInProcess(["sim", "rack", "--cleanup"]);
    expect(cleanup.exitCode).toBe(2);
  });

  test("option rules: --cleanup alone; --hsms within 1..100", async () => {
    vi.spyOn(process, "getuid").mockReturnValue(0);
    const both = await runCliInProcess(["sim", "rack", "--cleanup", "--hsms", "2"]);
    expect(both.exitCode).toBe(2);
    expect(both.stderr).toMatch(/--cleanup takes no --hsms or --keep/);
    for (const value of ["0", "101", "four"]) {
      const bad = await runCliInProcess(["sim", "rack", "--hsms", value]);
      expect(bad.exitCode).toBe(2);
      expect(bad.stderr).toMatch(/--hsms/);
    }
  });

  test("the hint for checking a kept rack runs the connection inside the LAN namespace", () => {
    expect(reachabilityHint("hob-1-abcd-lan", "198.51.100.11")).toBe(
      `ip netns exec hob-1-abcd-lan node -e 'require("net").connect(1792,"198.51.100.11").pipe(process.stdout)'`,
    );
  });
});

const notRoot = requireOrSkipReason(
  process.getuid?.() === 0 ? undefined : "sim rack --cleanup needs root (network namespaces)",
);
describe.skipIf(notRoot !== undefined)("sim rack --cleanup", () => {
  test("removes what a dead run recorded, leaves a running one and foreign names alone", async () => {
    const stateRoot = await mkdtemp(join(scratch, "state-"));
    const workDir = await mkdtemp(join(scratch, "hsm-onboard-sim-"));
    await mkdir(join(workDir, "pcscd"));
    // A crashed run: its owner is gone, its namespaces no longer exist, its process id was reused.
    await writeFile(
      join(stateRoot, "hob-1-dead.json"),
      JSON.stringify({
        format: "hsm-onboard/sim-rack",
        version: 1,
        runId: "hob-1-dead",
        createdAt: new Date().toISOString(),
        owner: { pid: 1, startTime: "1", role: "sim rack" },
        kept: false,
        workDir,
        namespaces: ["hob-1-dead-lan", "hob-1-dead-hsm1"],
        processes: [{ pid: process.pid, startTime: "1", role: "tcp service" }],
      }),
    );
    // A run in progress (this very process) is not touched.
    await writeFile(
      join(stateRoot, `hob-${process.pid}-beef.json`),
      JSON.stringify({
        format: "hsm-onboard/sim-rack",
        version: 1,
        runId: `hob-${process.pid}-beef`,
        createdAt: new Date().toISOString(),
        owner: { pid: process.pid, startTime: await processStartTime(process.pid), role: "sim rack" },
        kept: false,
        workDir: "/nonexistent/hsm-onboard-sim-x",
        namespaces: [],
        processes: [],
      }),
    );
    // A kept run whose record names a namespace that is not its own: refused, record kept.
    await writeFile(
      join(stateRoot, "hob-2-cafe.json"),
      JSON.stringify({
        format: "hsm-onboard/sim-rack",
        version: 1,
        runId: "hob-2-cafe",
        createdAt: new Date().toISOString(),
        owner: { pid: 2, startTime: "1", role: "sim rack" },
        kept: true,
        workDir: "/nonexistent/elsewhere",
        namespaces: ["somebody-elses-namespace"],
        processes: [],
      }),
    );
    const result = await cleanupKeptRacks(stateRoot);
    expect(result.active).toEqual([{ runId: `hob-${process.pid}-beef`, pid: process.pid }]);
    expect(result.removed.map((r) => r.runId).sort()).toEqual(["hob-1-dead", "hob-2-cafe"]);
    expect(result.removed.find((r) => r.runId === "hob-1-dead")).toMatchObject({
      namespaces: [],
      processes: 0,
    });
    expect(result.problems).toEqual([
      "hob-2-cafe: somebody-elses-namespace is not named for run hob-2-cafe: left alone",
    ]);
    expect(existsSync(workDir)).toBe(false);
    expect((await readdir(stateRoot)).sort()).toEqual(
      ["hob-2-cafe.json", `hob-${process.pid}-beef.json`].sort(),
    );
  });
});
