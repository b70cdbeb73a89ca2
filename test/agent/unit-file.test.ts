/**
 * The appliance unit file (packaging/hsm-onboard-agent.service, issue 12), checked by systemd's own
 * `systemd-analyze verify` (no warning at all: an unknown key or a bad value is a warning there) and
 * scored by `systemd-analyze security --offline=true`. ExecStart= points at this checkout's
 * bin/hsm-onboard.js for the check (verify refuses a program that does not exist).
 */
import { execFile, execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { PROJECT_ROOT, requireOrSkip, toolAvailable } from "../helpers/pcsc-env.js";

const run = promisify(execFile);
const cap = requireOrSkip(
  toolAvailable("systemd-analyze")
    ? { ok: true, reason: "" }
    : { ok: false, reason: "systemd-analyze not installed (package systemd)" },
);
const UNIT = join(PROJECT_ROOT, "packaging", "hsm-onboard-agent.service");

async function analyze(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run("systemd-analyze", args, { timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : 1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

describe.skipIf(!cap.ok)("the unit file", () => {
  let dir: string;
  let text: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "hsm-unit-"));
    text = (await readFile(UNIT, "utf8")).replaceAll(
      "/usr/bin/hsm-onboard",
      join(PROJECT_ROOT, "bin", "hsm-onboard.js"),
    );
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("systemd-analyze verify accepts it without a single warning", async () => {
    const file = join(dir, "hsm-onboard-agent.service");
    await writeFile(file, text);
    const result = await analyze(["verify", file]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr.trim()).toBe("");
  });

  test("the check is real: a misspelt key or a missing program is reported", async () => {
    const typo = join(dir, "typo.service");
    await writeFile(typo, text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"));
    expect((await analyze(["verify", typo])).stderr).toMatch(/Unknown key 'NoNewPrivilege'/);
    const missing = join(dir, "missing.service");
    await writeFile(
      missing,
      text.replaceAll(join(PROJECT_ROOT, "bin", "hsm-onboard.js"), "/nonexistent/hsm-onboard"),
    );
    const refused = await analyze(["verify", missing]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/nonexistent\/hsm-onboard/);
  });

  test("caps V8's young generation for the agent (SPEC.md §9 memory): the flag Node really applies", async () => {
    const unit = await readFile(UNIT, "utf8");
    const options = /^Environment=NODE_OPTIONS=(.+)$/m.exec(unit)?.[1];
    expect(options).toBe("--max-semi-space-size=1");
    // Young objects that survive a scavenge grow the young generation (both semi-spaces) to 32 MiB
    // without the flag; with it, it stays at 2 × 1 MiB.
    const probe =
      "const keep=[];for(let i=0;i<300000;i++){keep[i%30000]=new Array(16).fill(i)}" +
      "const s=require('v8').getHeapSpaceStatistics().find(x=>x.space_name==='new_space');" +
      "process.stdout.write(String(s.space_size+keep.length*0))";
    const newSpace = (env: NodeJS.ProcessEnv) =>
      Number(execFileSync(process.execPath, ["-e", probe], { env, encoding: "utf8", timeout: 20_000 }));
    const { NODE_OPTIONS: _none, ...bare } = process.env;
    expect(newSpace({ ...bare, NODE_OPTIONS: options })).toBeLessThanOrEqual(2 * 1024 * 1024);
    expect(newSpace(bare)).toBeGreaterThan(4 * 1024 * 1024);
  });

  test("what the issue asks of it, and systemd's own exposure score", async () => {
    const unit = await readFile(UNIT, "utf8");
    for (const line of [
      "Type=notify",
      "StateDirectory=hsm-onboard",
      "CapabilityBoundingSet=CAP_NET_ADMIN",
      "AmbientCapabilities=CAP_NET_ADMIN",
      "After=pcscd.socket network-pre.target systemd-networkd.service",
      "Restart=on-failure",
      "WatchdogSec=60s",
      "NoNewPrivileges=yes",
      "ProtectSystem=strict",
      "PrivateDevices=yes",
      "KillMode=mixed",
      "ConfigurationDirectory=hsm-onboard",
      "ReadWritePaths=-/etc/systemd/network /etc/hsm-onboard",
    ]) {
      expect(unit.split("\n"), line).toContain(line);
    }
    // The hostname goes through hostnamed: no CAP_SYS_ADMIN, and the host's UTS namespace.
    expect(unit).not.toMatch(/CAP_SYS_ADMIN\s*$/m);
    expect(unit).not.toMatch(/^ProtectHostname=/m);
    const file = join(dir, "hsm-onboard-agent.service");
    await writeFile(file, text);
    const security = await analyze(["security", "--offline=true", file]);
    const score = /Overall exposure level for hsm-onboard-agent\.service: ([\d.]+)/.exec(security.stdout);
    expect(score, security.stdout + security.stderr).not.toBeNull();
    console.info(`systemd-analyze security --offline: exposure ${score![1]} (0 best, 10 worst)`);
    expect(Number(score![1])).toBeLessThan(4);
  });
});
