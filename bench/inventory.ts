/**
 * Station inventory (issue 14): recording a 10,000-HSM write and its receipts, `station inventory`
 * and `station history` on 10,000 HSMs — SQLite (the station's file) and PostgreSQL (a real server
 * started here on a private socket, as the tests do) — and sequence allocations per second with 4
 * station processes at once on PostgreSQL (and one station on SQLite), through the whole station
 * path (lock, journal, inventory).
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Writable } from "node:stream";
import type { CliContext } from "../src/cli/context.js";
import { runCli } from "../src/cli/main.js";
import type { Inventory, ReceiptRecord } from "../src/station/inventory/inventory.js";
import { openInventory } from "../src/station/inventory/open.js";
import { planRecordOf } from "../src/station/inventory/record.js";
import { hsmStateJson } from "../src/station/inventory/state.js";
import { startRackServer } from "../src/station/serve/server.js";
import { type PostgresServer, postgresUnavailable, startPostgres } from "../test/helpers/postgres.js";
import { BENCH_OWNER, benchPlan } from "./plans.js";
import { fixed, int, median, print, section, table } from "./report.js";

const HSMS = 10_000;
const STATIONS = 4;
const ALLOCATIONS_PER_STATION = 50;

export interface InventoryBenchRow {
  readonly engine: string;
  /** planRecordOf alone: the rows and each entry's state digest (networkStateDigest). */
  readonly planRecordMs: number;
  readonly recordWriteMs: number;
  readonly recordReceiptsMs: number;
  readonly inventoryQueryMs: number;
  readonly inventoryCommandMs: number;
  readonly inventoryCommandBytes: number;
  readonly inventoryJsonMs: number;
  readonly historyCommandMs: number;
}

function nullContext(env: Record<string, string>): { ctx: CliContext; bytes: () => number } {
  let bytes = 0;
  const sink = () =>
    new Writable({
      write(chunk: Buffer | string, _encoding, done) {
        bytes += typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.length;
        done();
      },
    });
  const stdin = new PassThrough();
  stdin.end();
  return {
    ctx: { stdin, stdout: sink(), stderr: sink(), env, cwd: process.cwd(), exitCode: 0 },
    bytes: () => bytes,
  };
}

async function timeMs(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

async function medianOf(runs: number, fn: () => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push(await timeMs(fn));
  return median(times);
}

async function benchEngine(
  engine: string,
  stationDir: string,
  open: () => Promise<Inventory>,
  db: string | undefined,
): Promise<InventoryBenchRow> {
  const plan = benchPlan(HSMS);
  const inventory = await open();
  // As station write records it: the plan's rows (with each entry's state digest) and the write.
  let record = planRecordOf(plan);
  const planRecordMs = await medianOf(3, async () => {
    record = planRecordOf(plan);
  });
  const recordWriteMs = await timeMs(async () => {
    record = planRecordOf(plan);
    await inventory.recordPlan(record);
    await inventory.recordWrite({
      configurationId: "5a".repeat(16),
      owner: BENCH_OWNER,
      sequence: 1,
      planDigest: record.digest,
      cardSerial: "12345678",
      officer: "Alice Example",
      writtenAt: new Date(),
      hsms: HSMS,
    });
  });
  const receipts: ReceiptRecord[] = plan.hsms.map((h, i) => ({
    serial: h.serial,
    hostname: h.hostname,
    configurationId: "5a".repeat(16),
    sequence: 1,
    outcome: i % 50 === 0 ? 21 : 0,
    outcomeName: i % 50 === 0 ? "address-conflict" : "configured",
    verified: true,
    authentic: true,
    addresses: record.hsms[i]!.addresses,
    networkDigest: record.hsms[i]!.stateDigest as string,
    planDigest: record.hsms[i]!.stateDigest as string,
    dryRun: false,
    channel: "SCP11b",
    scp: true,
    deviceSubject: `CN=HSM ${h.serial}, serialNumber=${h.serial}, O=Example HSM Maker`,
    verifiedBy: `station bench:${stationDir}: COSE signature with the device certificate's key, device chain via "CN=Example Device CA" to trust anchor "CN=Example Root"`,
    time: new Date(),
    collectedAt: new Date(),
  }));
  const recordReceiptsMs = await timeMs(() => inventory.recordReceipts(receipts));
  const inventoryQueryMs = await medianOf(3, () => inventory.inventory());
  await inventory.close();
  const env: Record<string, string> = db === undefined ? {} : { HSM_ONBOARD_DB: db };
  let inventoryCommandBytes = 0;
  const command = async (args: string[]) => {
    const { ctx, bytes } = nullContext(env);
    const code = await runCli(["station", ...args, "--station-dir", stationDir], ctx);
    if (code !== 0) throw new Error(`station ${args.join(" ")}: exit ${code}`);
    return bytes();
  };
  const inventoryCommandMs = await medianOf(3, async () => {
    inventoryCommandBytes = await command(["inventory"]);
  });
  const inventoryJsonMs = await medianOf(3, () => command(["inventory", "--json"]));
  const historyCommandMs = await medianOf(3, () => command(["history", "--limit", "100"]));
  return {
    engine,
    planRecordMs,
    recordWriteMs,
    recordReceiptsMs,
    inventoryQueryMs,
    inventoryCommandMs,
    inventoryCommandBytes,
    inventoryJsonMs,
    historyCommandMs,
  };
}

/** `stations` processes, each its own station directory, allocating at once; allocations per second. */
async function allocationRate(scratch: string, stations: number, db: string | undefined): Promise<number> {
  const script = join(scratch, `allocate-${Date.now()}.mjs`);
  const url = (m: string) => new URL(`../src/${m}`, import.meta.url).href;
  await writeFile(
    script,
    `import { allocateSequence } from ${JSON.stringify(url("station/sequence-store.js"))};
import { openInventory } from ${JSON.stringify(url("station/inventory/open.js"))};
const [dir, count] = process.argv.slice(2);
const db = process.env.HSM_ONBOARD_DB || undefined;
const inventory = await openInventory({ stationDir: dir, ...(db ? { db } : {}) });
process.stdout.write("ready\\n");
await new Promise((go) => process.stdin.once("data", go));
process.stdin.destroy();
const t = performance.now();
for (let i = 0; i < Number(count); i++) await allocateSequence(dir, "ACME Bank", { inventory });
process.stdout.write(JSON.stringify({ ms: performance.now() - t }) + "\\n");
await inventory.close();
`,
  );
  const dirs = await Promise.all(Array.from({ length: stations }, () => mkdtemp(join(scratch, "station-"))));
  const children = dirs.map((dir) =>
    spawn(process.execPath, [script, dir, String(ALLOCATIONS_PER_STATION)], {
      env: { ...process.env, ...(db === undefined ? {} : { HSM_ONBOARD_DB: db }) },
      stdio: ["pipe", "pipe", "inherit"],
    }),
  );
  const outputs = children.map((c) => {
    let text = "";
    c.stdout.setEncoding("utf8");
    c.stdout.on("data", (d: string) => {
      text += d;
    });
    return { text: () => text, done: new Promise<number | null>((r) => c.on("close", r)) };
  });
  // Everyone connected and migrated first; then all start at once.
  for (let i = 0; i < 600 && !outputs.every((o) => o.text().includes("ready")); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const t = performance.now();
  for (const c of children) c.stdin.end("go\n");
  // Bounded: a child that hangs is ended (by its PID) after two minutes.
  const guard = setTimeout(() => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  }, 120_000);
  const codes = await Promise.all(outputs.map((o) => o.done));
  const wall = performance.now() - t;
  clearTimeout(guard);
  if (codes.some((c) => c !== 0)) throw new Error(`allocation children exited ${codes.join(", ")}`);
  return (stations * ALLOCATIONS_PER_STATION) / (wall / 1000);
}

const CHROMIUM = "/usr/bin/chromium";

export interface RackViewLoad {
  /** Navigation to every tile drawn (and one more frame): the first visit after the server started. */
  readonly ms: number;
  /** The same in a second page: the server already holds the encoded list. */
  readonly warmMs: number;
  /** In the page: render() of every tile, then layout and paint. */
  readonly renderMs: number;
  /** Bytes on the wire: response bodies as sent (compressed) and their headers, every request. */
  readonly bytes: number;
  /** The inventory list alone: as sent, and its JSON uncompressed. */
  readonly listBytes: number;
  readonly listJsonBytes: number;
  /** What the first load was before issue 14's rework: every HSM's full record as JSON, uncompressed. */
  readonly fullRecordsBytes: number;
  readonly tiles: number;
  /** A click on a tile to its detail shown (one HSM's record fetched). */
  readonly detailMs: number;
}

/** First load of the rack view on `stationDir`'s inventory in headless chromium. */
async function rackViewLoad(stationDir: string): Promise<RackViewLoad | string> {
  if (!existsSync(CHROMIUM)) return "needs Debian's chromium";
  const { chromium } = await import("playwright-core");
  const inventory = await openInventory({ stationDir });
  const states = await inventory.inventory();
  const fullRecordsBytes = Buffer.byteLength(JSON.stringify({ hsms: states.map(hsmStateJson) }));
  const server = await startRackServer({ inventory, host: "127.0.0.1", port: 0 });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const sizes: Promise<{ url: string; body: number; headers: number }>[] = [];
    page.on("requestfinished", (r) => {
      sizes.push(
        r.sizes().then((s) => ({ url: r.url(), body: s.responseBodySize, headers: s.responseHeadersSize })),
      );
    });
    const t = performance.now();
    await page.goto(server.url);
    await page.waitForSelector(`body[data-loaded='${HSMS}']`, { timeout: 120_000 });
    // One more frame: the tiles are laid out and painted.
    await page.evaluate("new Promise((r) => requestAnimationFrame(() => r(undefined)))");
    const ms = performance.now() - t;
    const tiles = await page.locator(".tile").count();
    const done = await Promise.all(sizes);
    const bytes = done.reduce((sum, s) => sum + s.body + s.headers, 0);
    const listBytes = done
      .filter((s) => s.url.endsWith("/api/inventory"))
      .reduce((sum, s) => sum + s.body, 0);
    const listJsonBytes = Number(
      await page.evaluate(
        "fetch('/api/inventory', { cache: 'no-store' }).then((r) => r.text()).then((t) => new TextEncoder().encode(t).length)",
      ),
    );
    // Again in a new page: the server holds the encoded list (same inventory), the browser is warm.
    const again = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const w = performance.now();
    await again.goto(server.url);
    await again.waitForSelector(`body[data-loaded='${HSMS}']`, { timeout: 120_000 });
    await again.evaluate("new Promise((r) => requestAnimationFrame(() => r(undefined)))");
    const warmMs = performance.now() - w;
    // In the page: rebuilding the 10,000 tiles (the script's render()), then layout and paint.
    const renderMs = Number(
      await again.evaluate(
        "(async () => { const t = performance.now(); render(); await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0))); return performance.now() - t; })()",
      ),
    );
    await again.close();
    const tile = page.locator(".tile").nth(HSMS - 1);
    const serial = await tile.getAttribute("data-serial");
    const d = performance.now();
    await tile.click();
    await page.waitForSelector(`body[data-detail='${serial}']`, { timeout: 30_000 });
    const detailMs = performance.now() - d;
    return { ms, warmMs, renderMs, bytes, listBytes, listJsonBytes, fullRecordsBytes, tiles, detailMs };
  } finally {
    await browser.close();
    await server.close();
    await inventory.close();
  }
}

export interface InventoryBench {
  readonly rows: InventoryBenchRow[];
  readonly allocationsPerSecondPg?: number;
  readonly allocationsPerSecondSqlite: number;
  readonly skipped?: string;
}

export async function benchInventory(): Promise<InventoryBench> {
  section(`9. Station inventory (issue 14): ${int(HSMS)} HSMs, SQLite and PostgreSQL`);
  const scratch = await mkdtemp(join(tmpdir(), "hsm-onboard-bench-inventory-"));
  let server: PostgresServer | undefined;
  try {
    const rows: InventoryBenchRow[] = [];
    const sqliteDir = await mkdtemp(join(scratch, "station-"));
    rows.push(
      await benchEngine("SQLite", sqliteDir, () => openInventory({ stationDir: sqliteDir }), undefined),
    );
    const view = await rackViewLoad(sqliteDir);
    const missing = postgresUnavailable();
    let allocationsPerSecondPg: number | undefined;
    if (!missing) {
      server = await startPostgres();
      const url = server.createDatabase("bench");
      const pgDir = await mkdtemp(join(scratch, "station-"));
      rows.push(
        await benchEngine("PostgreSQL", pgDir, () => openInventory({ stationDir: pgDir, db: url }), url),
      );
      allocationsPerSecondPg = await allocationRate(scratch, STATIONS, server.createDatabase("alloc"));
    }
    const allocationsPerSecondSqlite = await allocationRate(scratch, 1, undefined);
    table(
      ["engine", ...rows.map((r) => r.engine)],
      [
        [
          "record a 10,000-HSM write: plan rows (with state digests) + write (ms)",
          ...rows.map((r) => fixed(r.recordWriteMs)),
        ],
        [
          "  of which the plan's rows and state digests, in memory (ms)",
          ...rows.map((r) => fixed(r.planRecordMs)),
        ],
        ["record 10,000 receipts (ms)", ...rows.map((r) => fixed(r.recordReceiptsMs))],
        ["inventory query, 10,000 HSMs (ms, median of 3)", ...rows.map((r) => fixed(r.inventoryQueryMs))],
        [
          "`station inventory` in-process: open, query, table (ms)",
          ...rows.map((r) => fixed(r.inventoryCommandMs)),
        ],
        ["  its output (bytes)", ...rows.map((r) => int(r.inventoryCommandBytes))],
        ["`station inventory --json` (ms)", ...rows.map((r) => fixed(r.inventoryJsonMs))],
        ["`station history --limit 100` (ms)", ...rows.map((r) => fixed(r.historyCommandMs))],
      ],
    );
    print();
    print(
      `sequence allocations through the station path (lock, journal, inventory), ${ALLOCATIONS_PER_STATION} per station:`,
    );
    if (allocationsPerSecondPg !== undefined) {
      print(
        `  PostgreSQL, ${STATIONS} station processes at once: ${fixed(allocationsPerSecondPg)} allocations/s`,
      );
    } else {
      print(`  PostgreSQL: skipped (${missing})`);
    }
    print(`  SQLite, 1 station: ${fixed(allocationsPerSecondSqlite)} allocations/s`);
    print();
    if (typeof view === "string") print(`rack view, first page load of ${int(HSMS)} HSMs: skipped (${view})`);
    else {
      print(
        `rack view (station serve), first page load in headless chromium, ${int(HSMS)} HSMs: ` +
          `${fixed(view.ms)} ms to ${int(view.tiles)} tiles drawn, ${int(view.bytes)} bytes transferred ` +
          "(page, script, style, inventory list; bodies as sent, with headers)",
      );
      print(
        `  the inventory list: ${int(view.listBytes)} bytes sent (brotli), ${int(view.listJsonBytes)} bytes of compact JSON; ` +
          `every HSM's full record would be ${int(view.fullRecordsBytes)} bytes`,
      );
      print(
        `  a second visit (the server holds the encoded list): ${fixed(view.warmMs)} ms; in the page, drawing the ${int(HSMS)} tiles again (render, layout, paint): ${fixed(view.renderMs)} ms`,
      );
      print(`  one HSM's detail (click to its verified receipt shown): ${fixed(view.detailMs)} ms`);
    }
    return {
      rows,
      ...(allocationsPerSecondPg === undefined ? { skipped: missing } : { allocationsPerSecondPg }),
      allocationsPerSecondSqlite,
    };
  } finally {
    await server?.stop();
    await rm(scratch, { recursive: true, force: true });
  }
}
