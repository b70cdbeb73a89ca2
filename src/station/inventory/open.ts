/**
 * Which inventory a station command uses: `--db postgresql://…`, else the HSM_ONBOARD_DB environment
 * variable, else the embedded SQLite file in the station directory.
 */
import { hostname } from "node:os";
import { join } from "node:path";
import type { Inventory } from "./inventory.js";

export const DB_ENV = "HSM_ONBOARD_DB";

export interface OpenInventoryOptions {
  readonly stationDir: string;
  /** A postgresql:// URL; absent: SQLite in the station directory. */
  readonly db?: string;
}

export async function openInventory(options: OpenInventoryOptions): Promise<Inventory> {
  if (options.db !== undefined && options.db !== "") {
    const { openPostgresInventory } = await import("./postgres.js");
    return openPostgresInventory(options.db);
  }
  const { openSqliteInventory, SQLITE_FILE } = await import("./sqlite.js");
  return openSqliteInventory(join(options.stationDir, SQLITE_FILE));
}

/** The database a CLI command uses: its --db option, else the environment. */
export function dbOf(
  option: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
): string | undefined {
  return option ?? env[DB_ENV];
}

/** How this station names itself in the inventory: host and station directory. */
export function stationName(stationDir: string): string {
  return `${hostname()}:${stationDir}`;
}
