/**
 * Issue 10 finding 4: a plan under the old 64 MiB cap killed the station (63 MiB of YAML: V8 out of
 * memory, exit 134, after a minute). `hsm-onboard plan check` as a child process, its V8 heap capped
 * (NODE_OPTIONS=--max-old-space-size): a plan past a limit (16 MiB, 20,000 HSMs, 1.2 M YAML tokens,
 * 1.2 M JSON values) is refused with exit 23 and the limit in the message, early and within the heap
 * cap; a real plan at the HSM limit still passes within a bounded heap.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { PLAN_LIMITS } from "../../src/config/plan-limits.js";
import { ExitCode } from "../../src/errors.js";
import { tempDir } from "../agent/fixtures.js";
import { buildForChildren, type PrivateBuild } from "../helpers/pcsc-env.js";
import { runCliChild, stopChildren } from "./children.js";

/** A real-shaped YAML plan: `n` HSMs, two interfaces each (IPv4 + IPv6 on eth0, IPv4 on eth1). */
function realYaml(n: number): string {
  const parts = [
    "owner: ACME Bank\nsubnets:\n  - name: a\n    cidr: 10.0.0.0/8\n    gateway: 10.0.0.1\n    dns: [10.0.0.53]\n    ntp: []\n    ipv6_cidr: 2001:db8::/32\n  - name: b\n    cidr: 172.16.0.0/12\n    dns: []\n    ntp: []\nhsms:\n",
  ];
  for (let i = 0; i < n; i++) {
    const j = i + 2;
    parts.push(
      `  - serial: "${1_000_000 + i}"\n    hostname: hsm-fra1-${String(i).padStart(6, "0")}\n    interfaces:\n` +
        `      - name: eth0\n        subnet: a\n        ipv4: 10.${(j >> 16) & 255}.${(j >> 8) & 255}.${j & 255}\n        ipv6: 2001:db8::${(i + 1).toString(16)}\n` +
        `      - name: eth1\n        subnet: b\n        ipv4: 172.16.${(j >> 8) & 255}.${j & 255}\n`,
    );
  }
  return parts.join("");
}

describe("plan size limits (CLI child process, bounded V8 heap)", () => {
  let base: { dir: string; cleanup: () => Promise<void> };
  let build: PrivateBuild;
  const figures: string[] = [];
  const heap = (mb: number) => ({ NODE_OPTIONS: `--max-old-space-size=${mb}` });

  beforeAll(async () => {
    base = await tempDir("hsm-security-plan-limits-");
    build = await buildForChildren(["cli/main.js"]);
  }, 120_000);
  afterAll(async () => {
    await stopChildren();
    console.info(`plan limits:\n  ${figures.join("\n  ")}`);
    await build?.cleanup();
    await base?.cleanup();
  });

  test("a 63 MiB YAML plan (file and standard input): exit 23 at once, the 16 MiB limit named, heap ≤ 256 MB", async () => {
    const one = realYaml(1);
    const text = one + realYaml(300_000).slice(one.length - 1); // ≈ 64.6 MB of real-shaped entries
    expect(text.length).toBeGreaterThan(63 * 1024 * 1024);
    const file = join(base.dir, "huge.yaml");
    await writeFile(file, text);
    const run = await runCliChild(build, ["plan", "check", file], { env: heap(256), timeoutMs: 60_000 });
    expect(run.code, run.stderr).toBe(ExitCode.planInvalid);
    expect(run.stderr).toMatch(/larger than the plan size limit of 16 MiB \([\d,]+ bytes\)/);
    figures.push(`63 MiB YAML file: exit ${run.code} in ${Math.round(run.ms)} ms`);
    const piped = await runCliChild(build, ["plan", "check", "-"], {
      env: heap(256),
      stdin: text,
      timeoutMs: 60_000,
    });
    expect(piped.code, piped.stderr).toBe(ExitCode.planInvalid);
    expect(piped.stderr).toMatch(/larger than the plan size limit of 16 MiB/);
    figures.push(`63 MiB YAML on stdin: exit ${piped.code} in ${Math.round(piped.ms)} ms`);
  }, 120_000);

  test("16 MiB of tiny YAML scalars (the worst case per byte): exit 23 on the token limit, heap ≤ 256 MB", async () => {
    const file = join(base.dir, "tiny.yaml");
    const head = "owner: x\nsubnets: []\nhsms: []\njunk:\n";
    await writeFile(file, head + "- 1\n".repeat(Math.floor((PLAN_LIMITS.bytes - head.length) / 4)));
    const run = await runCliChild(build, ["plan", "check", file], { env: heap(256), timeoutMs: 60_000 });
    expect(run.code, run.stderr).toBe(ExitCode.planInvalid);
    expect(run.stdout).toMatch(/more than 1,200,000 YAML tokens, the limit for a plan/);
    figures.push(`16 MiB tiny-scalar YAML: exit ${run.code} in ${Math.round(run.ms)} ms`);
  }, 120_000);

  test("16 MiB of empty JSON objects: exit 23 on the value limit before parsing, heap ≤ 256 MB", async () => {
    const file = join(base.dir, "objects.json");
    const head = '{"owner":"x","subnets":[],"hsms":[],"junk":[';
    await writeFile(
      file,
      `${head}${"{},".repeat(Math.floor((PLAN_LIMITS.bytes - head.length) / 3) - 2)}{}]}`,
    );
    const run = await runCliChild(build, ["plan", "check", file], { env: heap(256), timeoutMs: 60_000 });
    expect(run.code, run.stderr).toBe(ExitCode.planInvalid);
    expect(run.stdout).toMatch(/more than 1,200,000 JSON values/);
    figures.push(`16 MiB of {} in JSON: exit ${run.code} in ${Math.round(run.ms)} ms`);
  }, 120_000);

  test("20,001 HSMs (JSON, CSV): exit 23, the 20,000 limit named", async () => {
    const hsms = Array.from({ length: PLAN_LIMITS.hsms + 1 }, (_, i) => ({
      serial: String(1_000_000 + i),
      hostname: `h${i}`,
      subnet: "a",
      ipv4: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    }));
    const json = join(base.dir, "many.json");
    await writeFile(json, JSON.stringify({ owner: "x", subnets: [{ name: "a", cidr: "10.0.0.0/8" }], hsms }));
    const j = await runCliChild(build, ["plan", "check", json], { env: heap(256), timeoutMs: 60_000 });
    expect(j.code, j.stderr).toBe(ExitCode.planInvalid);
    expect(j.stdout).toMatch(/holds 20,001 HSM entries, more than the limit of 20,000 per plan/);
    const csv = join(base.dir, "many.csv");
    const rows = hsms.map((h) => `${h.serial},${h.hostname},eth0,${h.ipv4}/8,,,,,,,`);
    await writeFile(
      csv,
      `serial,hostname,interface,ipv4,gateway,dns,ntp,vlan,mtu,ipv6,ipv6_gateway\n${rows.join("\n")}\n`,
    );
    const c = await runCliChild(build, ["plan", "check", csv, "--owner", "x"], {
      env: heap(256),
      timeoutMs: 60_000,
    });
    expect(c.code, c.stderr).toBe(ExitCode.planInvalid);
    expect(c.stdout).toMatch(/holds more HSM rows than the limit of 20,000 per plan/);
  }, 120_000);

  test("a real 20,000-HSM YAML plan (the limit) is valid within a 512 MB heap", async () => {
    const file = join(base.dir, "real-20k.yaml");
    await writeFile(file, realYaml(PLAN_LIMITS.hsms));
    const run = await runCliChild(build, ["plan", "check", file], { env: heap(512), timeoutMs: 120_000 });
    expect(run.code, run.stderr).toBe(ExitCode.ok);
    expect(run.stdout).toMatch(/valid YAML plan for "ACME Bank": 20000 HSMs/);
    figures.push(`20,000-HSM YAML (4.5 MB): valid in ${Math.round(run.ms)} ms`);
  }, 180_000);
});
