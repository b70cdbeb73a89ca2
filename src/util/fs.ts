/**
 * File-system helpers shared by every layer that keeps files (PKI directory, station directory, agent
 * state, virtual card state, sim rack record): atomic replacement and schema-checked JSON reading.
 */
import { randomBytes } from "node:crypto";
import {
  closeSync,
  constants as fsConstants,
  fsyncSync,
  openSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { open, readFile, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { UsageError } from "../errors.js";

/** Writes `data` to `path` so that readers see the old or the new file, never a torn one. */
export async function atomicWriteFile(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  const handle = await open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, mode);
  try {
    await handle.writeFile(data);
    await handle.chmod(mode); // the umask may have narrowed it; a key must not be wider, a certificate not narrower
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(tmp, { force: true });
    throw error;
  }
  await handle.close();
  try {
    await rename(tmp, path);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
  await syncDirectory(dirname(path));
}

/** fsync of a directory: makes a rename, link or new entry in it durable. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, fsConstants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes `data` to `path` atomically: temporary file in the same directory, fsync, rename, fsync dir. */
export function atomicWriteFileSync(path: string, data: string | Uint8Array, mode = 0o600): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
  let fd = openSync(tmp, "wx", mode);
  try {
    try {
      const buf = typeof data === "string" ? Buffer.from(data, "utf8") : data;
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // already renamed or never created
    }
    throw e;
  }
  // Make the rename itself durable.
  try {
    fd = openSync(dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Some filesystems refuse fsync on a directory; the data file itself is already synced.
  }
}

/** How `readJsonFile` treats a file that is absent or unreadable. */
export interface ReadJsonFileOptions<M> {
  /** Named in the schema failure: `<file> is not a valid <what> (...)`; plain `is not valid` when absent. */
  readonly what?: string;
  /** What an absent file (ENOENT) means: a value to return, or a throw. */
  readonly missing: () => M;
  /** Turns any other read failure into an error; rethrown as it is when absent. */
  readonly unreadable?: (path: string, error: NodeJS.ErrnoException) => Error;
}

/** What readJsonFile checks a file against: a zod schema, or one of src/util/schema.ts. */
export interface JsonSchema<T> {
  safeParse(value: unknown):
    | { readonly success: true; readonly data: T }
    | {
        readonly success: false;
        readonly error: { readonly issues: readonly { path: PropertyKey[]; message: string }[] };
      };
}

/**
 * Reads a JSON file and checks it against `schema`. Not JSON, or not of the schema: UsageError naming
 * the file and the first issue (a hand-edited or foreign file is the user's to fix).
 */
export async function readJsonFile<T, M>(
  path: string,
  schema: JsonSchema<T>,
  options: ReadJsonFileOptions<M>,
): Promise<T | M> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    if (e.code === "ENOENT") return options.missing();
    throw options.unreadable ? options.unreadable(path, e) : error;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new UsageError(`${path} is not valid JSON`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const what = options.what === undefined ? "valid" : `a valid ${options.what}`;
    throw new UsageError(
      `${path} is not ${what} (${issue?.path.join(".") || "top level"}: ${issue?.message})`,
    );
  }
  return parsed.data;
}
