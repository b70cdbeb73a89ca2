/**
 * The embedded engine: SQLite through better-sqlite3, one file in the station directory
 * (`inventory.sqlite`, mode 0600), WAL journal, full fsync on commit. Several station processes on
 * one directory are ordered by SQLite's write lock (BEGIN IMMEDIATE, busy timeout); calls within one
 * process are queued (see `queue`).
 */
import { chmod } from "node:fs/promises";
import { createRequire } from "node:module";
import type BetterSqlite3 from "better-sqlite3";
import { isOnboardError, UsageError } from "../../errors.js";
import type { Inventory } from "./inventory.js";
import {
  migrate,
  type Param,
  type Row,
  type SqlDriver,
  SqlInventory,
  type SqlQueries,
} from "./sql-inventory.js";

export const SQLITE_FILE = "inventory.sqlite";
const BUSY_TIMEOUT_MS = 10_000;

/**
 * One queue for every SQLite connection of this process. better-sqlite3 is synchronous: a second
 * connection waiting on the write lock would block the event loop while the first one's transaction
 * (which awaits between statements) could never finish. Other processes are waited for (busy timeout).
 */
let queue: Promise<unknown> = Promise.resolve();

class SqliteDriver implements SqlDriver {
  readonly engine = "sqlite" as const;
  private readonly statements = new Map<string, BetterSqlite3.Statement>();

  constructor(
    private readonly db: BetterSqlite3.Database,
    readonly location: string,
  ) {}

  private prepare(sql: string): BetterSqlite3.Statement {
    let statement = this.statements.get(sql);
    if (!statement) {
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }

  private readonly direct: SqlQueries = {
    all: async (sql, params = []) => {
      const statement = this.prepare(sql);
      if (statement.reader) return statement.all(...(params as Param[])) as Row[];
      statement.run(...(params as Param[]));
      return [];
    },
    run: async (sql, params = []) => this.prepare(sql).run(...(params as Param[])).changes,
  };

  /** One at a time in this process. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const result = queue.then(fn, fn);
    queue = result.catch(() => undefined);
    return result;
  }

  all(sql: string, params?: readonly Param[]): Promise<Row[]> {
    return this.serial(() => this.direct.all(sql, params));
  }

  run(sql: string, params?: readonly Param[]): Promise<number> {
    return this.serial(() => this.direct.run(sql, params));
  }

  transaction<T>(fn: (q: SqlQueries) => Promise<T>): Promise<T> {
    return this.serial(async () => {
      this.db.exec("BEGIN IMMEDIATE");
      try {
        const result = await fn(this.direct);
        this.db.exec("COMMIT");
        return result;
      } catch (error) {
        if (this.db.inTransaction) this.db.exec("ROLLBACK");
        throw error;
      }
    });
  }

  async exec(_q: SqlQueries, script: string): Promise<void> {
    this.db.exec(script);
  }

  greatest(a: string, b: string): string {
    return `MAX(${a}, ${b})`;
  }

  migrationLock<T>(fn: (q: SqlQueries) => Promise<T>): Promise<T> {
    return this.transaction(fn);
  }

  close(): Promise<void> {
    return this.serial(async () => {
      this.db.close();
    });
  }
}

/** Opens (creating if needed) and migrates the SQLite inventory at `path`. */
export async function openSqliteInventory(path: string): Promise<Inventory> {
  let Database: typeof BetterSqlite3;
  try {
    // Loaded only here: the agent and the card paths never pull in the native module.
    Database = createRequire(import.meta.url)("better-sqlite3") as typeof BetterSqlite3;
  } catch (error) {
    throw new UsageError(`the SQLite inventory needs better-sqlite3, which does not load: ${oneLine(error)}`);
  }
  let db: BetterSqlite3.Database;
  try {
    db = new Database(path, { timeout: BUSY_TIMEOUT_MS });
  } catch (error) {
    throw new UsageError(`cannot open the inventory ${path}: ${oneLine(error)}`);
  }
  const driver = new SqliteDriver(db, path);
  try {
    await chmod(path, 0o600);
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    db.pragma("foreign_keys = ON");
    await migrate(driver);
  } catch (error) {
    db.close();
    if (isOnboardError(error)) throw error;
    throw new UsageError(`cannot use the inventory ${path}: ${oneLine(error)}`);
  }
  return new SqlInventory(driver);
}

function oneLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).replace(/\s+/g, " ");
}
