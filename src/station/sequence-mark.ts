/**
 * The station's sequence high-water mark kept OUTSIDE the station directory (issue 14: a station
 * directory restored from an older backup must never hand out a number again).
 *
 * The journal (station-journal.ts) finds an inventory.sqlite put back under a newer journal, but a
 * whole station directory restored — inventory and journal of the same age — remembers nothing
 * newer. So every number the station hands out is also recorded here, in the user's state directory:
 *
 *   <state>/sequence-marks/<station id>/<owner key>.json     mode 0600, directories 0700
 *     {"format":"hsm-onboard/sequence-mark","version":1,"station":ID,"owner":OWNER,"last":N,
 *      "stationDir":PATH,"updatedAt":ISO}
 *
 * `<state>` is $HSM_ONBOARD_STATE_HOME, else $XDG_STATE_HOME/hsm-onboard (absolute only, as the XDG
 * Base Directory spec says), else ~/.local/state/hsm-onboard. `<station id>` is the random id in the
 * station directory's `station-id` file (made by `station init`, or on first use of an older
 * directory); a restored directory brings its id back, so its mark is found. `<owner key>` is the
 * first 32 hex digits of SHA-256(owner, UTF-8).
 *
 * Before allocating, a mark above the inventory's last number raises the inventory to it
 * (resynchronisation, recorded in both journals, one line on stderr); after allocating, the number is
 * written to the mark (atomically, fsync'd) before it is returned. A mark that is absent is normal (a
 * first allocation, another machine); one that cannot be read or is not a mark of this station and
 * owner is refused with ReplayError (17): the station can no longer tell which numbers it gave out.
 */
import { createHash, randomBytes } from "node:crypto";
import { constants as fsConstants } from "node:fs";
import { link, mkdir, open, readdir, readFile, rm } from "node:fs/promises";
import { homedir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { IntegrityError, ReplayError, UsageError } from "../errors.js";
import { atomicWriteFile, syncDirectory } from "../util/fs.js";

export const STATE_HOME_ENV = "HSM_ONBOARD_STATE_HOME";
export const STATION_ID_FILE = "station-id";
export const MARK_FORMAT = "hsm-onboard/sequence-mark";
const MARKS_DIR = "sequence-marks";
const STATION_ID = /^[0-9a-f]{32}$/;
/** A mark is a few hundred bytes; anything much larger is not one. */
const MAX_MARK_BYTES = 64 * 1024;

/** Where marks live: $HSM_ONBOARD_STATE_HOME, else $XDG_STATE_HOME/hsm-onboard, else ~/.local/state/hsm-onboard. */
export function defaultStateHome(env: Readonly<Record<string, string | undefined>>): string {
  const own = env[STATE_HOME_ENV];
  if (own !== undefined && own !== "") return resolve(own);
  const xdg = env.XDG_STATE_HOME;
  if (xdg !== undefined && isAbsolute(xdg)) return join(xdg, "hsm-onboard");
  const home = env.HOME && env.HOME.length > 0 ? env.HOME : homedir();
  return join(home, ".local/state/hsm-onboard");
}

/**
 * The station directory's random id (32 hex digits), created once — by `station init`, or here on the
 * first use of a directory made before ids existed. Two first users at once agree (the file is linked
 * into place, never replaced). A damaged id file: IntegrityError (15).
 */
export async function ensureStationId(
  stationDir: string,
  stateHome: string = defaultStateHome(process.env),
): Promise<string> {
  const path = join(stationDir, STATION_ID_FILE);
  const existing = await readStationId(stationDir);
  if (existing !== undefined) return existing;
  await mkdir(stationDir, { recursive: true, mode: 0o700 });
  const id = (await idOfMarksAt(stateHome, resolve(stationDir))) ?? randomBytes(16).toString("hex");
  const tmp = join(stationDir, `.${STATION_ID_FILE}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  const handle = await open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
  try {
    await handle.writeFile(`${id}\n`);
    await handle.chmod(0o600);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await link(tmp, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  } finally {
    await rm(tmp, { force: true });
  }
  await syncDirectory(stationDir);
  const id2 = await readStationId(stationDir);
  if (id2 === undefined) throw new IntegrityError(`${path} vanished while it was being created`);
  return id2;
}

/**
 * The id whose marks were recorded for a station directory at `stationDir`: a directory without an id
 * that has marks was restored from a copy taken before its id was made (an older release), and takes
 * its id back. Bounded: the first readable mark of each station id under the state directory.
 */
async function idOfMarksAt(stateHome: string, stationDir: string): Promise<string | undefined> {
  const marks = join(stateHome, MARKS_DIR);
  let ids: string[];
  try {
    ids = (await readdir(marks)).filter((n) => STATION_ID.test(n)).sort();
  } catch {
    return undefined;
  }
  for (const id of ids) {
    let files: string[];
    try {
      files = (await readdir(join(marks, id))).filter((n) => /^[0-9a-f]{32}\.json$/.test(n));
    } catch {
      continue;
    }
    for (const file of files) {
      try {
        const mark = JSON.parse(await readFile(join(marks, id, file), "utf8")) as { stationDir?: unknown };
        if (mark.stationDir === stationDir) return id;
        break; // every mark of one id names the same directory
      } catch {
        // unreadable: the allocation that needs it refuses it
      }
    }
  }
  return undefined;
}

/** The station id, or undefined when the directory has none yet. */
export async function readStationId(stationDir: string): Promise<string | undefined> {
  const path = join(stationDir, STATION_ID_FILE);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    if (e.code === "ENOENT") return undefined;
    throw new UsageError(`cannot read ${path}: ${e.code ?? String(e)}`);
  }
  const id = text.trim();
  if (!STATION_ID.test(id)) {
    throw new IntegrityError(`${path} is damaged: not a station id (32 hex digits)`);
  }
  return id;
}

/** The mark file of (station, owner). */
export function markPath(stateHome: string, station: string, owner: string): string {
  const key = createHash("sha256").update(owner, "utf8").digest("hex").slice(0, 32);
  return join(stateHome, MARKS_DIR, station, `${key}.json`);
}

/** The highest number this station handed out for `owner` as its mark says; undefined when there is no mark. */
export async function readSequenceMark(
  stateHome: string,
  station: string,
  owner: string,
): Promise<number | undefined> {
  const path = markPath(stateHome, station, owner);
  const refuse = (why: string) =>
    new ReplayError(
      `sequence mark ${path} ${why}: the station cannot tell which numbers it handed out for "${owner}" — refusing to allocate (repair the file, or remove it to trust the station directory alone)`,
    );
  let text: string;
  try {
    const handle = await open(path, fsConstants.O_RDONLY);
    try {
      const { size } = await handle.stat();
      if (size > MAX_MARK_BYTES) throw refuse("is too large to be a mark");
      text = await handle.readFile("utf8");
    } finally {
      await handle.close();
    }
  } catch (error) {
    if (error instanceof ReplayError) throw error;
    const e = error as NodeJS.ErrnoException;
    // Absent (ENOTDIR: a file stands where a directory of the path should be — no mark can be there;
    // recording one will fail loudly).
    if (e.code === "ENOENT" || e.code === "ENOTDIR") return undefined;
    throw refuse(`cannot be read (${e.code ?? "error"})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw refuse("is not valid JSON");
  }
  const m = json as Record<string, unknown> | null;
  if (typeof m !== "object" || m === null || Array.isArray(m)) throw refuse("is not a mark");
  if (m.format !== MARK_FORMAT || m.version !== 1) throw refuse("is not a version-1 sequence mark");
  if (m.station !== station || m.owner !== owner) throw refuse("belongs to another station or owner");
  const last = m.last;
  if (typeof last !== "number" || !Number.isSafeInteger(last) || last < 0) {
    throw refuse("holds no valid sequence number");
  }
  return last;
}

/** Records `last` as (station, owner)'s mark: atomically and durably (temporary file, fsync, rename, fsync of the directory). */
export async function writeSequenceMark(
  stateHome: string,
  station: string,
  owner: string,
  last: number,
  stationDir: string,
  now: Date = new Date(),
): Promise<void> {
  const path = markPath(stateHome, station, owner);
  const dir = join(path, "..");
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await atomicWriteFile(
      path,
      `${JSON.stringify({ format: MARK_FORMAT, version: 1, station, owner, last, stationDir: resolve(stationDir), updatedAt: now.toISOString() })}\n`,
      0o600,
    );
    // A new station directory under sequence-marks/ must survive a crash too.
    await syncDirectory(join(dir, ".."));
  } catch (error) {
    throw new UsageError(
      `cannot record the sequence mark ${path} (${(error as NodeJS.ErrnoException).code ?? String(error)}); set ${STATE_HOME_ENV} to a writable directory`,
    );
  }
}
