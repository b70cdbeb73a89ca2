/**
 * Issue 14: `demo` fills the station's inventory, and `station inventory` / `station history` show
 * it (table and JSON), on the SQLite file in the station directory and on PostgreSQL (--db).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runDemo } from "../../src/sim/demo.js";
import { openInventory } from "../../src/station/inventory/open.js";
import { outputLines, runCliInProcess } from "../helpers/cli.js";
import { requireOrSkipReason } from "../helpers/pcsc-env.js";
import { type PostgresServer, postgresUnavailable, startPostgres } from "../helpers/postgres.js";

const pgMissing = requireOrSkipReason(postgresUnavailable());
let scratch: string;
let stationDir: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "hsm-inventory-cli-"));
  const keepDir = join(scratch, "demo");
  const report = await runDemo({ hsms: 6, keepDir });
  expect(report.ok).toBe(true);
  stationDir = join(keepDir, "station");
}, 120_000);
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe("the demo fills the inventory", () => {
  it("has the plan, the write and a verified receipt for every HSM (dry run: nothing applied)", async () => {
    const inventory = await openInventory({ stationDir });
    const states = await inventory.inventory();
    await inventory.close();
    expect(states).toHaveLength(6);
    for (const s of states) {
      expect(s.written?.sequence).toBe(1);
      expect(s.receipt?.verified).toBe(true);
      expect(s.receipt?.outcome).toBe(0);
      expect(s.receipt?.dryRun).toBe(true); // the demo's agents use the dry-run applier
    }
  });

  it("keeps each HSM's full verified receipt: device certificate, who verified, channel, network digest = plan state digest", async () => {
    const json = await runCliInProcess(["station", "inventory", "--station-dir", stationDir, "--json"]);
    expect(json.exitCode, json.stderr).toBe(0);
    const rows = JSON.parse(json.stdout) as {
      serial: string;
      plannedStateDigest: string | null;
      receipt: {
        networkDigest: string;
        planDigest: string;
        digestMatchesPlan: boolean | null;
        deviceSubject: string;
        verifiedBy: string;
        channel: string;
        dryRun: boolean;
        time: string | null;
      };
    }[];
    expect(rows).toHaveLength(6);
    for (const r of rows) {
      // The digest the inventory computed from the plan is the one a real agent reported after applying
      // its entry, and the one the station computed from the card.
      expect(r.plannedStateDigest).toMatch(/^[0-9a-f]{64}$/);
      expect(r.receipt.networkDigest).toBe(r.plannedStateDigest);
      expect(r.receipt.planDigest).toBe(r.plannedStateDigest);
      expect(r.receipt.digestMatchesPlan).toBe(true);
      expect(r.receipt.deviceSubject).toContain(r.serial);
      expect(r.receipt.verifiedBy).toMatch(
        /^station .*: COSE signature .*device chain via ".+" to trust anchor ".+"$/,
      );
      expect(r.receipt.channel).toBe("SCP11b");
      expect(r.receipt.dryRun).toBe(true);
      expect(Number.isNaN(Date.parse(r.receipt.time ?? ""))).toBe(false);
    }
  });

  it("station inventory prints one row per HSM and a summary; --json the same as data", async () => {
    const table = await runCliInProcess(["station", "inventory", "--station-dir", stationDir]);
    expect(table.exitCode, table.stderr).toBe(0);
    const lines = outputLines(table.stdout);
    expect(lines[0]).toMatch(/^OWNER\s+SERIAL\s+HOSTNAME\s+STATE\s+SEQ\s+WHEN\s+DETAIL$/);
    expect(lines.slice(1, -1).filter((l) => /\bdry run\b/.test(l))).toHaveLength(6);
    expect(lines[lines.length - 1]).toBe("6 HSMs: 6 dry run");
    const json = await runCliInProcess(["station", "inventory", "--station-dir", stationDir, "--json"]);
    const rows = JSON.parse(json.stdout) as {
      serial: string;
      state: string;
      written: { sequence: number };
    }[];
    expect(rows.map((r) => r.state)).toEqual(Array(6).fill("dry run"));
    expect(rows.every((r) => r.written.sequence === 1)).toBe(true);
    const none = await runCliInProcess([
      "station",
      "inventory",
      "--station-dir",
      stationDir,
      "--owner",
      "Nobody",
    ]);
    expect(outputLines(none.stdout).at(-1)).toBe("0 HSMs");
  });

  it("station history lists the write, the receipts and the sequence, newest first", async () => {
    const result = await runCliInProcess([
      "station",
      "history",
      "--station-dir",
      stationDir,
      "--limit",
      "50",
    ]);
    expect(result.exitCode, result.stderr).toBe(0);
    const text = result.stdout;
    expect(text).toMatch(/ write +written: configuration [0-9a-f]{32} sequence 1 \(6 HSMs\)/);
    expect(text.match(/ receipt +receipt of /g)?.length).toBe(6);
    expect(text).toMatch(/ journal +journal: sequence .* 1 \(station /);
    expect(text).toMatch(/ crl +token CA CRL number 1 taken in: ".*Token CA.*" revokes nothing \(station /);
    const times = outputLines(text).map((l) => l.slice(0, 20));
    expect([...times].sort().reverse()).toEqual(times);
  });

  it("a --db that is not PostgreSQL is a usage error (exit 2) on every station command", async () => {
    for (const command of ["inventory", "history"]) {
      const result = await runCliInProcess([
        "station",
        command,
        "--station-dir",
        stationDir,
        "--db",
        "mysql://x",
      ]);
      expect(result.exitCode).toBe(2);
      expect(result.stderr).toMatch(/--db must be a postgresql:\/\/ URL/);
    }
  });
});

describe.skipIf(pgMissing !== undefined)(
  `station inventory on PostgreSQL${pgMissing ? ` — skipped: ${pgMissing}` : ""}`,
  () => {
    let server: PostgresServer;
    beforeAll(async () => {
      server = await startPostgres();
    }, 120_000);
    afterAll(async () => server?.stop());

    it("reads the database named by HSM_ONBOARD_DB (and --db wins over it)", async () => {
      const url = server.createDatabase("cli");
      const inventory = await openInventory({ stationDir, db: url });
      await inventory.recordPlan({
        digest: "ab".repeat(32),
        owner: "Globex",
        hsms: [{ serial: "G-1", hostname: "g-1", addresses: [] }],
      });
      await inventory.close();
      const viaEnv = await runCliInProcess(["station", "inventory", "--station-dir", stationDir, "--json"], {
        env: { HSM_ONBOARD_DB: url },
      });
      expect(
        (JSON.parse(viaEnv.stdout) as { serial: string; state: string }[]).map((r) => [r.serial, r.state]),
      ).toEqual([["G-1", "planned"]]);
      const viaOption = await runCliInProcess(
        [
          "station",
          "inventory",
          "--station-dir",
          stationDir,
          "--json",
          "--db",
          server.createDatabase("other"),
        ],
        { env: { HSM_ONBOARD_DB: url } },
      );
      expect(JSON.parse(viaOption.stdout)).toEqual([]);
    });
  },
);
