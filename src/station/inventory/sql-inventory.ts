/**
 * The inventory over SQL, written once for both engines: the engine supplies a `SqlDriver`
 * (sqlite.ts, postgres.ts) that runs statements with `?` placeholders, transactions and the one
 * statement whose spelling differs (the greater of two numbers).
 */
import { compareSerials } from "../../config/shard.js";
import { IntegrityError, UsageError } from "../../errors.js";
import type {
  AllocateOptions,
  HistoryEntry,
  HsmState,
  Inventory,
  InventoryEngine,
  JournalRecord,
  PlanRecord,
  ReceiptRecord,
  WriteRecord,
} from "./inventory.js";
import { receiptKey } from "./inventory.js";
import { MIGRATIONS, SCHEMA_VERSION } from "./migrations.js";

export type Row = Record<string, unknown>;
export type Param = string | number | null;

export interface SqlQueries {
  all(sql: string, params?: readonly Param[]): Promise<Row[]>;
  run(sql: string, params?: readonly Param[]): Promise<number>;
}

export interface SqlDriver extends SqlQueries {
  readonly engine: InventoryEngine;
  readonly location: string;
  /** Runs `fn` in one transaction that excludes other writers (SQLite: BEGIN IMMEDIATE). */
  transaction<T>(fn: (q: SqlQueries) => Promise<T>): Promise<T>;
  /** Runs a script of several statements (migrations). */
  exec(q: SqlQueries, script: string): Promise<void>;
  /** SQL for the greater of two expressions. */
  greatest(a: string, b: string): string;
  /** Serialises migrations between processes (PostgreSQL advisory lock; SQLite's write lock). */
  migrationLock<T>(fn: (q: SqlQueries) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

const iso = (d: Date) => d.toISOString();
const bool = (b: boolean | undefined): number | null => (b === undefined ? null : b ? 1 : 0);
const unbool = (v: unknown): boolean | undefined =>
  v === null || v === undefined ? undefined : Number(v) === 1;
const str = (v: unknown): string | undefined => (v === null || v === undefined ? undefined : String(v));

export async function migrate(driver: SqlDriver): Promise<number> {
  return driver.migrationLock(async (q) => {
    await driver.exec(
      q,
      "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    );
    const rows = await q.all("SELECT MAX(version) AS v FROM schema_migrations");
    const current = Number(rows[0]?.v ?? 0);
    if (current > SCHEMA_VERSION) {
      throw new UsageError(
        `the inventory ${driver.location} has schema version ${current}, newer than this station knows (${SCHEMA_VERSION}): upgrade hsm-onboard`,
      );
    }
    for (const m of MIGRATIONS) {
      if (m.version <= current) continue;
      await driver.exec(q, m.sql(driver.engine));
      await q.run("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)", [
        m.version,
        m.name,
        iso(new Date()),
      ]);
    }
    return SCHEMA_VERSION;
  });
}

export class SqlInventory implements Inventory {
  readonly engine: InventoryEngine;
  readonly location: string;

  constructor(private readonly db: SqlDriver) {
    this.engine = db.engine;
    this.location = db.location;
  }

  async schemaVersion(): Promise<number> {
    const rows = await this.db.all("SELECT MAX(version) AS v FROM schema_migrations");
    return Number(rows[0]?.v ?? 0);
  }

  async allocateSequence(owner: string, options: AllocateOptions): Promise<number> {
    const atLeast = options.atLeast ?? 0;
    if (!Number.isSafeInteger(atLeast) || atLeast < 0) throw new UsageError("atLeast must be a whole number");
    const now = iso(options.now ?? new Date());
    return this.db.transaction(async (q) => {
      // One statement: the row lock (PostgreSQL) or the write lock (SQLite) orders concurrent stations.
      const rows = await q.all(
        `INSERT INTO sequences (owner, last, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (owner) DO UPDATE SET last = ${this.db.greatest("sequences.last + 1", "excluded.last")}, updated_at = excluded.updated_at
         RETURNING last`,
        [owner, Math.max(1, atLeast), now],
      );
      const next = Number(rows[0]?.last);
      if (!Number.isSafeInteger(next) || next < 1) {
        throw new IntegrityError(`the inventory returned no sequence number for "${owner}"`);
      }
      // The primary key (owner, sequence) is the last guard: a number handed out twice cannot be recorded.
      await q.run(
        "INSERT INTO sequence_allocations (owner, sequence, station, allocated_at) VALUES (?, ?, ?, ?)",
        [owner, next, options.station, now],
      );
      return next;
    });
  }

  async lastSequence(owner: string): Promise<number> {
    const rows = await this.db.all("SELECT last FROM sequences WHERE owner = ?", [owner]);
    return rows.length === 0 ? 0 : Number(rows[0]?.last);
  }

  async raiseSequence(owner: string, last: number, station: string, now = new Date()): Promise<void> {
    if (!Number.isSafeInteger(last) || last < 0) throw new UsageError("a sequence is a whole number");
    await this.db.transaction(async (q) => {
      const before = await q.all("SELECT last FROM sequences WHERE owner = ?", [owner]);
      const was = before.length === 0 ? 0 : Number(before[0]?.last);
      if (last <= was) return;
      await q.run(
        `INSERT INTO sequences (owner, last, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (owner) DO UPDATE SET last = ${this.db.greatest("sequences.last", "excluded.last")}, updated_at = excluded.updated_at`,
        [owner, last, iso(now)],
      );
      await q.run("INSERT INTO journal (event, key, number, station, time) VALUES (?, ?, ?, ?, ?)", [
        "sequence-raised",
        owner,
        String(last),
        station,
        iso(now),
      ]);
    });
  }

  async recordPlan(plan: PlanRecord): Promise<void> {
    const at = iso(plan.recordedAt ?? new Date());
    await this.db.transaction(async (q) => {
      const inserted = await q.run(
        "INSERT INTO plans (digest, owner, hsms, recorded_at) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
        [plan.digest, plan.owner, plan.hsms.length, at],
      );
      if (inserted === 0) return; // the same plan again: its rows are there
      const columns = 5;
      const batch = Math.floor(900 / columns);
      for (let i = 0; i < plan.hsms.length; i += batch) {
        const slice = plan.hsms.slice(i, i + batch);
        const params: Param[] = [];
        for (const h of slice) {
          params.push(plan.digest, h.serial, h.hostname, JSON.stringify(h.addresses), h.stateDigest ?? null);
        }
        await q.run(
          `INSERT INTO plan_hsms (plan_digest, serial, hostname, addresses, state_digest) VALUES ${slice
            .map(() => "(?, ?, ?, ?, ?)")
            .join(", ")}`,
          params,
        );
      }
    });
  }

  async recordWrite(w: WriteRecord): Promise<void> {
    await this.db.run(
      `INSERT INTO writes (kind, configuration_id, owner, sequence, plan_digest, card_serial, card_name, officer,
         card_index, card_count, hsms, written_at, first_serial, last_serial, channel) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        w.kind ?? "write",
        w.configurationId,
        w.owner,
        w.sequence,
        w.planDigest ?? null,
        w.cardSerial ?? null,
        w.cardName ?? null,
        w.officer ?? null,
        w.cardIndex ?? null,
        w.cardCount ?? null,
        w.hsms,
        iso(w.writtenAt),
        w.firstSerial ?? null,
        w.lastSerial ?? null,
        w.channel ?? null,
      ],
    );
  }

  async recordReceipts(receipts: readonly ReceiptRecord[]): Promise<number> {
    if (receipts.length === 0) return 0;
    const columns = 21;
    // Multi-row inserts (as the plan rows): a few statements instead of one round trip per receipt.
    const batch = Math.floor(900 / columns);
    return this.db.transaction(async (q) => {
      let added = 0;
      for (let i = 0; i < receipts.length; i += batch) {
        const slice = receipts.slice(i, i + batch);
        const params: Param[] = [];
        for (const r of slice) {
          params.push(
            receiptKey(r),
            r.serial ?? null,
            r.hostname ?? null,
            r.configurationId ?? null,
            r.sequence ?? null,
            r.outcome ?? null,
            r.outcomeName ?? null,
            r.verified ? 1 : 0,
            r.authentic ? 1 : 0,
            r.reason ?? null,
            JSON.stringify(r.addresses),
            r.networkDigest ?? null,
            r.planDigest ?? null,
            bool(r.dryRun),
            bool(r.scp),
            r.time ? iso(r.time) : null,
            r.cardSerial ?? null,
            iso(r.collectedAt),
            r.deviceSubject ?? null,
            r.verifiedBy ?? null,
            r.channel ?? null,
          );
        }
        const row = `(${Array(columns).fill("?").join(", ")})`;
        // ON CONFLICT DO NOTHING also skips a receipt given twice in one batch; the count is of rows inserted.
        added += await q.run(
          `INSERT INTO receipts (receipt_key, serial, hostname, configuration_id, sequence, outcome, outcome_name,
             verified, authentic, reason, addresses, network_digest, plan_digest, dry_run, scp, receipt_time,
             card_serial, collected_at, device_subject, verified_by, channel)
           VALUES ${slice.map(() => row).join(", ")}
           ON CONFLICT (receipt_key) DO NOTHING`,
          params,
        );
      }
      return added;
    });
  }

  async appendJournal(e: JournalRecord): Promise<void> {
    await this.db.run(
      "INSERT INTO journal (event, key, number, station, time, detail) VALUES (?, ?, ?, ?, ?, ?)",
      [e.event, e.key, e.number, e.station, iso(e.time), e.detail ?? null],
    );
  }

  async journal(limit = 1000): Promise<JournalRecord[]> {
    const rows = await this.db.all(
      "SELECT event, key, number, station, time, detail FROM journal ORDER BY id DESC LIMIT ?",
      [limit],
    );
    return rows.reverse().map((r) => ({
      event: String(r.event),
      key: String(r.key),
      number: String(r.number),
      station: String(r.station),
      time: new Date(String(r.time)),
      ...(r.detail === null || r.detail === undefined ? {} : { detail: String(r.detail) }),
    }));
  }

  async inventory(options: { readonly owner?: string; readonly serial?: string } = {}): Promise<HsmState[]> {
    const { owner, serial: only } = options;
    const params: Param[] = owner === undefined ? [] : [owner];
    const conditions = [
      ...(owner === undefined ? [] : ["p.owner = ?"]),
      ...(only === undefined ? [] : ["h.serial = ?"]),
    ];
    // The latest plan that names each serial wins; then its latest write and the serial's latest receipt.
    const planned = await this.db.all(
      `SELECT p.owner, p.digest, p.recorded_at, h.serial, h.hostname, h.addresses, h.state_digest FROM plan_hsms h
       JOIN plans p ON p.digest = h.plan_digest ${conditions.length === 0 ? "" : `WHERE ${conditions.join(" AND ")}`}
       ORDER BY p.recorded_at, p.digest`,
      only === undefined ? params : [...params, only],
    );
    const writes = await this.db.all(
      `SELECT w.plan_digest, w.configuration_id, w.sequence, w.card_serial, w.officer, w.written_at, w.first_serial,
         w.last_serial FROM writes w ${owner === undefined ? "" : "WHERE w.owner = ?"} ORDER BY w.written_at, w.id`,
      params,
    );
    const receipts = await this.db.all(
      `SELECT serial, outcome, outcome_name, verified, authentic, reason, addresses, dry_run, scp, channel, sequence,
         configuration_id, network_digest, plan_digest, device_subject, verified_by, card_serial, collected_at, receipt_time
       FROM receipts WHERE ${only === undefined ? "serial IS NOT NULL" : "serial = ?"} ORDER BY collected_at, id`,
      only === undefined ? [] : [only],
    );
    const latestReceipt = new Map<string, Row>();
    for (const r of receipts) latestReceipt.set(String(r.serial), r);
    // Per plan its writes, oldest first, each `written` object built once (shared by its HSMs). A
    // card of a set (issue 13) covers its serial range only; a write without a range, the whole plan.
    const writesOf = new Map<string, PlanWrite[]>();
    for (const w of writes) {
      if (w.plan_digest === null || w.plan_digest === undefined) continue;
      const written: Writable<NonNullable<HsmState["written"]>> = {
        configurationId: String(w.configuration_id),
        sequence: Number(w.sequence),
        at: new Date(String(w.written_at)),
      };
      if (w.card_serial !== null && w.card_serial !== undefined) written.cardSerial = String(w.card_serial);
      if (w.officer !== null && w.officer !== undefined) written.officer = String(w.officer);
      const digest = String(w.plan_digest);
      const list = writesOf.get(digest) ?? [];
      list.push({ written, first: str(w.first_serial), last: str(w.last_serial) });
      writesOf.set(digest, list);
    }
    const plannedAt = new Map<string, Date>();
    const bySerial = new Map<string, HsmState>();
    for (const p of planned) {
      const serial = String(p.serial);
      const digest = String(p.digest);
      let at = plannedAt.get(digest);
      if (at === undefined) {
        at = new Date(String(p.recorded_at));
        plannedAt.set(digest, at);
      }
      const state: Writable<HsmState> = {
        owner: String(p.owner),
        serial,
        hostname: String(p.hostname),
        planDigest: digest,
        plannedAt: at,
        addresses: JSON.parse(String(p.addresses)) as string[],
      };
      if (p.state_digest !== null && p.state_digest !== undefined) state.stateDigest = String(p.state_digest);
      const w = latestWriteFor(writesOf.get(digest), serial);
      if (w) state.written = w;
      const r = latestReceipt.get(serial);
      if (r) state.receipt = receiptState(r);
      bySerial.set(`${state.owner}\u0000${serial}`, state);
    }
    return [...bySerial.values()].sort((a, b) =>
      a.owner === b.owner ? compareSerial(a.serial, b.serial) : a.owner < b.owner ? -1 : 1,
    );
  }

  async history(options: { readonly owner?: string; readonly limit?: number } = {}): Promise<HistoryEntry[]> {
    const limit = options.limit ?? 100;
    const owner = options.owner;
    const ownerParams: Param[] = owner === undefined ? [] : [owner];
    const plans = await this.db.all(
      `SELECT owner, digest, hsms, recorded_at FROM plans ${owner === undefined ? "" : "WHERE owner = ?"} ORDER BY recorded_at DESC LIMIT ?`,
      [...ownerParams, limit],
    );
    const writes = await this.db.all(
      `SELECT kind, owner, configuration_id, sequence, card_serial, officer, card_index, card_count, hsms, written_at, channel FROM writes
       ${owner === undefined ? "" : "WHERE owner = ?"} ORDER BY written_at DESC, id DESC LIMIT ?`,
      [...ownerParams, limit],
    );
    const receipts = await this.db.all(
      `SELECT serial, hostname, outcome_name, verified, reason, sequence, collected_at FROM receipts
       ORDER BY collected_at DESC, id DESC LIMIT ?`,
      [limit],
    );
    // CRL events are the station's, not an owner's: shown with every owner's history.
    const journal = await this.db.all(
      `SELECT event, key, number, station, time, detail FROM journal
       ${owner === undefined ? "" : "WHERE key = ? OR event IN ('crl', 'crl-device')"} ORDER BY time DESC, id DESC LIMIT ?`,
      [...ownerParams, limit],
    );
    const entries: HistoryEntry[] = [
      ...plans.map((p) => ({
        time: new Date(String(p.recorded_at)),
        kind: "plan" as const,
        owner: String(p.owner),
        text: `plan ${String(p.digest).slice(0, 16)}… of "${String(p.owner)}": ${Number(p.hsms)} HSMs`,
      })),
      ...writes.map((w) => ({
        time: new Date(String(w.written_at)),
        kind: w.kind === "cosign" ? ("cosign" as const) : ("write" as const),
        owner: String(w.owner),
        text: `${w.kind === "cosign" ? "co-signed" : "written"}: configuration ${String(w.configuration_id)} sequence ${Number(
          w.sequence,
        )} (${Number(w.hsms)} HSMs) on card ${str(w.card_serial) ?? "?"}${
          w.officer === null ? "" : ` by "${String(w.officer)}"`
        }${
          w.card_index === null
            ? ""
            : w.card_count === null
              ? ` (signature ${Number(w.card_index)})`
              : ` (card ${Number(w.card_index)} of ${Number(w.card_count)})`
        }${str(w.channel) === undefined ? "" : ` over ${String(w.channel)}`}`,
      })),
      ...receipts.map((r) => ({
        time: new Date(String(r.collected_at)),
        kind: "receipt" as const,
        text: `receipt of ${str(r.serial) ?? "?"} (${str(r.hostname) ?? "?"}): ${str(r.outcome_name) ?? "?"} ${
          Number(r.verified) === 1
            ? "✓ verified"
            : `✗ not verified${r.reason === null ? "" : `: ${String(r.reason)}`}`
        }${r.sequence === null ? "" : `, sequence ${Number(r.sequence)}`}`,
      })),
      ...journal.map((j) =>
        j.event === "crl" || j.event === "crl-device"
          ? {
              time: new Date(String(j.time)),
              kind: "crl" as const,
              text: `${j.event === "crl" ? "token CA" : "device CA"} CRL number ${String(j.number)} taken in${
                j.detail === null || j.detail === undefined ? "" : `: ${String(j.detail)}`
              } (station ${String(j.station)})`,
            }
          : {
              time: new Date(String(j.time)),
              kind: "journal" as const,
              text: `journal: ${String(j.event)} ${String(j.key)} ${String(j.number)} (station ${String(j.station)})`,
            },
      ),
    ];
    return entries.sort((a, b) => b.time.getTime() - a.time.getTime()).slice(0, limit);
  }

  async changeMark(): Promise<string> {
    const rows = await this.db.all(
      `SELECT (SELECT COUNT(*) FROM plans) AS p, (SELECT COUNT(*) FROM writes) AS w,
              (SELECT COUNT(*) FROM receipts) AS r, (SELECT COUNT(*) FROM journal) AS j`,
    );
    const r = rows[0] ?? {};
    return [r.p, r.w, r.r, r.j].map((v) => String(v ?? 0)).join(".");
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

type Writable<T> = { -readonly [K in keyof T]: T[K] };

interface PlanWrite {
  readonly written: NonNullable<HsmState["written"]>;
  /** The card's serial range within the plan (a card of a set); absent: the whole plan. */
  readonly first: string | undefined;
  readonly last: string | undefined;
}

/** The newest write of the HSM's plan that carries its entry (card order: compareSerials). */
function latestWriteFor(
  writes: readonly PlanWrite[] | undefined,
  serial: string,
): NonNullable<HsmState["written"]> | undefined {
  if (!writes) return undefined;
  for (let i = writes.length - 1; i >= 0; i--) {
    const w = writes[i] as PlanWrite;
    if (w.first !== undefined && compareSerials(serial, w.first) < 0) continue;
    if (w.last !== undefined && compareSerials(serial, w.last) > 0) continue;
    return w.written;
  }
  return undefined;
}

/** Columns kept as text when not NULL: row column → receipt field. */
const RECEIPT_TEXT = [
  ["outcome_name", "outcomeName"],
  ["reason", "reason"],
  ["channel", "channel"],
  ["configuration_id", "configurationId"],
  ["network_digest", "networkDigest"],
  ["plan_digest", "planDigest"],
  ["device_subject", "deviceSubject"],
  ["verified_by", "verifiedBy"],
  ["card_serial", "cardSerial"],
] as const;

function receiptState(r: Row): NonNullable<HsmState["receipt"]> {
  const receipt: Writable<NonNullable<HsmState["receipt"]>> = {
    verified: Number(r.verified) === 1,
    authentic: Number(r.authentic) === 1,
    addresses: JSON.parse(String(r.addresses)) as string[],
    at: new Date(String(r.collected_at)),
  };
  if (r.outcome !== null && r.outcome !== undefined) receipt.outcome = Number(r.outcome);
  if (r.sequence !== null && r.sequence !== undefined) receipt.sequence = Number(r.sequence);
  const dryRun = unbool(r.dry_run);
  if (dryRun !== undefined) receipt.dryRun = dryRun;
  const scp = unbool(r.scp);
  if (scp !== undefined) receipt.scp = scp;
  for (const [column, field] of RECEIPT_TEXT) {
    const v = r[column];
    if (v !== null && v !== undefined) receipt[field] = String(v);
  }
  if (r.receipt_time !== null && r.receipt_time !== undefined)
    receipt.time = new Date(String(r.receipt_time));
  return receipt;
}

const SERIAL_ORDER = new Intl.Collator("en", { numeric: true });

/** Serials in natural order: HSM-2 before HSM-10. */
export function compareSerial(a: string, b: string): number {
  return SERIAL_ORDER.compare(a, b);
}
