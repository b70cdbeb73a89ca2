/**
 * A real PostgreSQL server for tests and benchmarks: Debian's postgresql package (initdb, pg_ctl),
 * a cluster in a fresh temporary directory, listening only on a Unix socket in that directory (no
 * TCP port at all). PostgreSQL refuses to run as root, so as root the cluster belongs to the
 * `postgres` system user and is started through runuser. Stopped by the postmaster's PID, and the
 * directory removed, by `stop()`.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { chown, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface PostgresServer {
  /** postgresql:// URL of a fresh database on the socket. */
  readonly url: string;
  readonly dir: string;
  readonly pid: number;
  /** Another empty database on the same server. */
  createDatabase(name: string): string;
  stop(): Promise<void>;
}

/** The directory of Debian's PostgreSQL binaries (the newest installed), if any. */
export function postgresBinDir(): string | undefined {
  const base = "/usr/lib/postgresql";
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base)
    .filter((v) => /^\d+$/.test(v) && existsSync(join(base, v, "bin", "pg_ctl")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : join(base, versions[0], "bin");
}

const isRoot = process.getuid?.() === 0;

/** Why no server can be started here; undefined when one can. */
export function postgresUnavailable(): string | undefined {
  if (postgresBinDir() === undefined) return "needs PostgreSQL (Debian package postgresql)";
  if (isRoot && spawnSync("id", ["-u", "postgres"]).status !== 0) return "needs the postgres system user";
  return undefined;
}

function asServerUser(command: string, args: readonly string[]): string[] {
  return isRoot ? ["runuser", "-u", "postgres", "--", command, ...args] : [command, ...args];
}

function runAs(command: string, args: readonly string[]): string {
  const [cmd, ...rest] = asServerUser(command, args);
  return execFileSync(cmd as string, rest, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

export async function startPostgres(): Promise<PostgresServer> {
  const bin = postgresBinDir();
  if (!bin) throw new Error("PostgreSQL binaries not found");
  const dir = await mkdtemp(join(tmpdir(), "hsm-onboard-pg-"));
  if (isRoot) {
    const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
    await chown(dir, uid, gid);
  }
  const data = join(dir, "data");
  runAs(join(bin, "initdb"), ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "-N"]);
  runAs(join(bin, "pg_ctl"), [
    "-D",
    data,
    "-l",
    join(dir, "server.log"),
    "-w",
    "-t",
    "60",
    "-o",
    `-k ${dir} -c listen_addresses= -c fsync=off -c max_connections=60`,
    "start",
  ]);
  const pid = Number((await readFile(join(data, "postmaster.pid"), "utf8")).split("\n")[0]);
  const psql = join(bin, "psql");
  const createDatabase = (name: string): string => {
    if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`);
    runAs(psql, ["-h", dir, "-U", "postgres", "-d", "postgres", "-qc", `CREATE DATABASE ${name}`]);
    return `postgresql://postgres@localhost/${name}?host=${encodeURIComponent(dir)}`;
  };
  let stopped = false;
  return {
    url: createDatabase("inventory"),
    dir,
    pid,
    createDatabase,
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        process.kill(pid, "SIGINT"); // fast shutdown
        for (let i = 0; i < 200; i++) {
          try {
            process.kill(pid, 0);
          } catch {
            break;
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      } catch {
        // already gone
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
