/**
 * `hsm-onboard demo`: the whole flow in-process (PKI, personalised virtual card, station write, N
 * agents with the dry-run applier taking the card in turn, receipts verified at the station), its
 * table and JSON, the generated rack plans, and the failure a tampered card must produce.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { demoTable } from "../../src/cli/commands/demo.js";
import { loadPlanFile } from "../../src/config/plan.js";
import { ExitCode } from "../../src/errors.js";
import { FIRST_SERIAL, maxRackHsms, rackPlan, runDemo } from "../../src/sim/demo.js";
import { outputLines, runCliInProcess } from "../helpers/cli.js";

const EXAMPLES = join(import.meta.dirname, "../../examples");
const serials = (n: number) => Array.from({ length: n }, (_, i) => String(FIRST_SERIAL + i));

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "hsm-onboard-demo-test-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** Demo work directories under `parent` (the demo must leave none behind). */
async function leftovers(parent: string): Promise<string[]> {
  return (await readdir(parent)).filter((name) => name.startsWith("hsm-onboard-demo-"));
}

describe("hsm-onboard demo", () => {
  test("4 HSMs: one ✓ line per step, a table with every serial, every receipt verified, exit 0", async () => {
    const started = performance.now();
    const result = await runCliInProcess(["demo"], { cwd: scratch });
    const wallMs = performance.now() - started;
    expect(result.stderr).toBe("");
    expect(result.exitCode).toBe(0);
    const lines = outputLines(result.stdout);
    const steps = lines.filter((l) => /^[✓✗] /.test(l));
    expect(steps.every((l) => l.startsWith("✓ "))).toBe(true);
    for (const step of [
      /PKI/,
      /personalised for "ACME Bank", officer "Alice"/,
      /station trusts/,
      /plan: 4 HSMs/,
    ]) {
      expect(steps.some((l) => step.test(l))).toBe(true);
    }
    expect(
      steps.filter((l) => /^✓ HSM \d+ hsm-fra1-a0\d configured 198\.51\.100\.\d+\/24/.test(l)),
    ).toHaveLength(4);
    expect(lines.find((l) => l.startsWith("SERIAL"))).toMatch(
      /SERIAL\s+HOSTNAME\s+ADDRESSES\s+RECEIPT\s+TIME/,
    );
    for (const [i, serial] of serials(4).entries()) {
      const row = lines.find((l) => l.startsWith(`${serial} `));
      expect(row).toMatch(
        new RegExp(`hsm-fra1-a0${i + 1}\\s+198\\.51\\.100\\.${11 + i}/24\\s+✓ verified\\s+\\d`),
      );
    }
    expect(result.stdout).toMatch(/✓ 4 of 4 HSMs configured, 4 of 4 receipts verified at the station/);
    expect(result.stdout).toMatch(/card I\/O per onboarding: \d+( to \d+)? APDUs, [\d,]+( to [\d,]+)? bytes/);
    expect(result.stdout).toMatch(/the work directory has been removed/);
    // "a few seconds" on an idle machine; generous here, the suite shares the CPU with other runs.
    expect(wallMs).toBeLessThan(30_000);
  });

  test("40 HSMs with --json: every serial configured and its receipt verified at the station", async () => {
    const result = await runCliInProcess(["demo", "--hsms", "40", "--json", "--keep", "kept-40"], {
      cwd: scratch,
    });
    expect(result.exitCode).toBe(0);
    const report = JSON.parse(result.stdout) as {
      ok: boolean;
      exitCode: number;
      problems: string[];
      hsms: {
        serial: string;
        hostname: string;
        addresses: string[];
        configured: boolean;
        receipt: { verified: boolean; location: string | null };
        card: { apdus: number; bytesIn: number; bytesOut: number };
      }[];
      receiptCollections: number;
      dir: string | null;
    };
    expect(report).toMatchObject({ ok: true, exitCode: 0, problems: [], dir: join(scratch, "kept-40") });
    expect(report.hsms.map((h) => h.serial)).toEqual(serials(40));
    expect(new Set(report.hsms.map((h) => h.hostname)).size).toBe(40);
    expect(new Set(report.hsms.flatMap((h) => h.addresses)).size).toBe(40);
    for (const h of report.hsms) {
      expect(h.configured).toBe(true);
      expect(h.receipt.verified).toBe(true);
      expect(h.receipt.location).toMatch(/^receipt-\d+\[\d+\]/);
    }
    // A card holds the receipts of about thirty HSMs: the officer handed them in on the way, through
    // the station's collect path: archived in the station directory before they left the card.
    expect(report.receiptCollections).toBeGreaterThanOrEqual(1);
    const archiveDir = join(scratch, "kept-40", "station", "receipts-archive");
    const archives = await readdir(archiveDir);
    expect(archives).toHaveLength(report.receiptCollections);
    const archived = await Promise.all(
      archives.map(
        async (f) =>
          JSON.parse(await readFile(join(archiveDir, f), "utf8")) as {
            format: string;
            reason: string;
            receipts: { serial: string; verified: boolean }[];
          },
      ),
    );
    const collectedSerials = report.hsms
      .filter((h) => /\(collection \d+\)$/.test(h.receipt.location ?? ""))
      .map((h) => h.serial);
    expect(collectedSerials.length).toBeGreaterThan(0);
    expect(archived.flatMap((a) => a.receipts.map((r) => r.serial)).sort()).toEqual(
      [...collectedSerials].sort(),
    );
    for (const a of archived) {
      expect(a).toMatchObject({ format: "hsm-onboard/receipts-archive", reason: "collected" });
      expect(a.receipts.every((r) => r.verified)).toBe(true);
    }
    // Card I/O per onboarding does not depend on the size of the plan (SPEC.md §9): the first HSM
    // after the receipts were handed in meets the card as the very first HSM did, and exchanges
    // as many APDUs and bytes with it (give or take the length of the card's DER-encoded ECDSA signature).
    const fresh = report.hsms.findIndex((h) => h.receipt.location === "receipt-0[0] (final read)");
    expect(fresh).toBeGreaterThan(0);
    const [first, again] = [report.hsms[0]!.card, report.hsms[fresh]!.card];
    expect(again.apdus).toBe(first.apdus);
    expect(Math.abs(again.bytesIn - first.bytesIn)).toBeLessThanOrEqual(4);
    // Progress went to stderr, one ✓ line per step.
    expect(outputLines(result.stderr).filter((l) => l.startsWith("✓ HSM "))).toHaveLength(40);
  }, 120_000);

  test("a tampered card: no HSM configures, exit 15, every HSM named with the reason", async () => {
    const parent = await mkdtemp(join(scratch, "tamper-"));
    const report = await runDemo({
      hsms: 4,
      tempParent: parent,
      // A flipped byte in the shard after the station wrote and signed it.
      afterStationWrite: async (element) => {
        const shard = (await element.readItem("shard-0"))!;
        shard[shard.length - 1] = shard[shard.length - 1]! ^ 0x01;
        await element.writeItem("shard-0", shard);
      },
    });
    expect(report.ok).toBe(false);
    expect(report.exitCode).toBe(ExitCode.integrity);
    expect(report.hsms.every((h) => !h.configured && h.exitCode === ExitCode.integrity)).toBe(true);
    expect(report.problems).toHaveLength(4);
    for (const [i, problem] of report.problems.entries()) {
      expect(problem).toMatch(new RegExp(`^HSM ${serials(4)[i]}: not configured \\(exit 15\\): .*SHA-256`));
    }
    const table = demoTable(report).join("\n");
    expect(table).toMatch(/✗ 0 of 4 HSMs configured, 0 of 4 receipts verified/);
    expect(table.match(/✗ not configured \(exit 15\)/g)).toHaveLength(4);
    expect(await leftovers(parent)).toEqual([]);
  });

  test("--keep DIR keeps the run; a non-empty DIR is refused with exit 2", async () => {
    const keep = join(scratch, "kept");
    const result = await runCliInProcess(["demo", "--hsms", "1", "--keep", "kept"], { cwd: scratch });
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toContain(`everything is kept in ${keep}`);
    const entries = await readdir(keep);
    for (const name of ["plan.yaml", "card.json", "pki", "station", "hsms"]) expect(entries).toContain(name);
    // The demo station's sequence mark is kept with it (src/station/sequence-mark.ts), not in a home.
    const stationId = (await readFile(join(keep, "station", "station-id"), "utf8")).trim();
    expect(await readdir(join(keep, "state", "sequence-marks"))).toEqual([stationId]);

    const again = await runCliInProcess(["demo", "--keep", "kept"], { cwd: scratch });
    expect(again.exitCode).toBe(2);
    expect(again.stderr).toMatch(/--keep: .*kept is not empty/);
  });

  test("usage errors: --hsms out of range, exit 2, one line", async () => {
    for (const value of ["0", "x", String(maxRackHsms() + 1)]) {
      const result = await runCliInProcess(["demo", "--hsms", value], { cwd: scratch });
      expect(result.exitCode).toBe(2);
      expect(result.stderr).toMatch(/--hsms/);
      expect(result.stdout).toBe("");
    }
  });

  test("the temporary directory is gone after a run, whatever happened", async () => {
    const parent = await mkdtemp(join(scratch, "temp-"));
    const failing = runDemo({
      hsms: 1,
      tempParent: parent,
      afterStationWrite: async () => {
        throw new Error("boom");
      },
    });
    await expect(failing).rejects.toThrow("boom");
    expect(await leftovers(parent)).toEqual([]);
    const report = await runDemo({ hsms: 1, tempParent: parent });
    expect(report.ok).toBe(true);
    expect(existsSync(report.dir)).toBe(false);
  });

  test("an aborted run stops between steps and removes its directory", async () => {
    const parent = await mkdtemp(join(scratch, "abort-"));
    const controller = new AbortController();
    const run = runDemo({
      hsms: 2,
      tempParent: parent,
      signal: controller.signal,
      onProgress: (p) => {
        if (p.step === "card") controller.abort();
      },
    });
    await expect(run).rejects.toThrow(/interrupted/);
    expect(await leftovers(parent)).toEqual([]);
  });
});

describe("generated rack plans", () => {
  test("4 HSMs with VLANs is examples/rack-4.yaml", async () => {
    expect(rackPlan({ hsms: 4 })).toEqual(await loadPlanFile(join(EXAMPLES, "rack-4.yaml")));
  });

  test("every size up to the maximum is a valid plan with unique addresses, none on .1/.53/.123/.250", () => {
    const max = maxRackHsms();
    for (const n of [1, 40, 237, 238, max]) {
      const plan = rackPlan({ hsms: n, vlan: false, ipv6: true });
      expect(plan.hsms).toHaveLength(n);
      const v4 = plan.hsms.flatMap((h) => h.interfaces.map((i) => i.ipv4!));
      const v6 = plan.hsms.flatMap((h) => h.interfaces.map((i) => i.ipv6!));
      expect(new Set(v4).size).toBe(n);
      expect(new Set(v6).size).toBe(n);
      expect(v4.filter((a) => /\.(1|53|123|250)$/.test(a))).toEqual([]);
      expect(plan.subnets.every((s) => s.vlan === undefined)).toBe(true);
    }
    expect(() => rackPlan({ hsms: max + 1 })).toThrow(/from 1 to/);
    expect(() => rackPlan({ hsms: 0 })).toThrow(/from 1 to/);
  });

  test("the plan the demo writes is readable by plan check", async () => {
    const dir = await mkdtemp(join(scratch, "plan-"));
    const { planToYaml } = await import("../../src/config/plan.js");
    await writeFile(join(dir, "plan.yaml"), planToYaml(rackPlan({ hsms: 300 })));
    const result = await runCliInProcess(["plan", "check", "plan.yaml"], { cwd: dir });
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toMatch(/300 HSMs, 2 subnets/);
  });
});
