/**
 * The shared engine: PostgreSQL through node-postgres, for several stations of one owner. Every
 * statement of a transaction runs on one pooled client; migrations are serialised between stations
 * by a transaction-scoped advisory lock.
 */
import pg from "pg";
import { UsageError } from "../../errors.js";
import type { Inventory } from "./inventory.js";
import {
  migrate,
  type Param,
  type Row,
  type SqlDriver,
  SqlInventory,
  type SqlQueries,
} from "./sql-inventory.js";

/** Arbitrary, fixed: the advisory lock key under which stations migrate the schema. */
const MIGRATION_LOCK = 7_140_014;

/** `?` placeholders to `$1…$n` (the inventory's SQL has no `?` in literals). */
function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

function queries(client: pg.Pool | pg.PoolClient): SqlQueries {
  return {
    all: async (sql, params = []) => (await client.query(numbered(sql), params as Param[])).rows as Row[],
    run: async (sql, params = []) => (await client.query(numbered(sql), params as Param[])).rowCount ?? 0,
  };
}

class PostgresDriver implements SqlDriver {
  readonly engine = "postgresql" as const;
  private readonly direct: SqlQueries;

  constructor(
    private readonly pool: pg.Pool,
    readonly location: string,
  ) {
    this.direct = queries(pool);
  }

  all(sql: string, params?: readonly Param[]): Promise<Row[]> {
    return this.direct.all(sql, params);
  }

  run(sql: string, params?: readonly Param[]): Promise<number> {
    return this.direct.run(sql, params);
  }

  async transaction<T>(fn: (q: SqlQueries) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      const result = await fn(queries(client));
      await client.query("COMMIT");
      return result;
    } catch (error) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  async exec(q: SqlQueries, script: string): Promise<void> {
    await q.run(script);
  }

  greatest(a: string, b: string): string {
    return `GREATEST(${a}, ${b})`;
  }

  migrationLock<T>(fn: (q: SqlQueries) => Promise<T>): Promise<T> {
    return this.transaction(async (q) => {
      await q.all(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`);
      return fn(q);
    });
  }

  close(): Promise<void> {
    return this.pool.end();
  }
}

/** The URL as it may be shown: without a password. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "postgresql://…";
  }
}

/** Connects to and migrates the PostgreSQL inventory at `url` (postgresql://… or postgres://…). */
export async function openPostgresInventory(url: string): Promise<Inventory> {
  if (!/^postgres(ql)?:\/\//.test(url)) {
    throw new UsageError(`--db must be a postgresql:// URL, not "${redactUrl(url)}"`);
  }
  const pool = new pg.Pool({ connectionString: url, max: 4, connectionTimeoutMillis: 10_000 });
  pool.on("error", () => undefined); // an idle client dropped by the server is replaced on next use
  const driver = new PostgresDriver(pool, redactUrl(url));
  try {
    await migrate(driver);
  } catch (error) {
    await pool.end().catch(() => undefined);
    if (error instanceof UsageError) throw error;
    throw new UsageError(`cannot use the inventory ${redactUrl(url)}: ${(error as Error).message}`);
  }
  return new SqlInventory(driver);
}
