/**
 * The one lock file of the project (agent state directory, PKI directory, station directory).
 *
 * - Born complete: "PID NONCE" is written to a private file first, which is then hard-linked to the
 *   lock name — link(2) fails when the name exists, so exactly one process wins, and no reader ever
 *   sees an empty lock.
 * - Live or stale: a lock is live while its PID runs (for this process's own PID: while this process
 *   holds that very lock, so concurrent holders inside one process exclude each other too). Breaking
 *   a stale lock is claimed first: a hard link to `<lock>.break-<SHA-256 of its content>`, which
 *   only one process can create for that lock. The winner checks that the lock still holds the same
 *   content and only then removes it; a loser waits and starts over. So a live lock is never
 *   removed, and a stale one by one process only.
 * - A claim left by a breaker that died in those few system calls is not broken in turn: the caller
 *   gets a message naming both files (removing them by hand is then safe).
 * - Bounded: a live holder is waited for up to `waitMs` (0: refused at once) with capped back-off;
 *   races with other takers are retried at most MAX_RACES times.
 */
import { createHash, randomBytes } from "node:crypto";
import { link, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { UsageError } from "../errors.js";

const MAX_RACES = 50;

/** Contents of the locks this process holds right now. */
const heldHere = new Set<string>();

export interface LockFileOptions {
  /** How long to wait for a live holder, in ms (default 0: refuse at once). */
  readonly waitMs?: number;
  /** The error for a lock a live process holds (its PID when the lock names one). */
  readonly busy: (pid: number | undefined) => Error;
}

/** Takes the lock file `file`; returns the release function (which removes it only if still ours). */
export async function acquireLockFile(file: string, options: LockFileOptions): Promise<() => Promise<void>> {
  const content = `${process.pid} ${randomBytes(8).toString("hex")}\n`;
  const temp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}`;
  await writeFile(temp, content, { mode: 0o600, flag: "wx" });
  const deadline = Date.now() + Math.max(0, options.waitMs ?? 0);
  try {
    for (let races = 0, waits = 0; races < MAX_RACES; ) {
      try {
        await link(temp, file);
        heldHere.add(content);
        return async () => {
          // Removed before it stops counting as live here, so no other taker in this process breaks it meanwhile.
          try {
            if ((await readLock(file)) === content) await unlink(file).catch(() => undefined);
          } finally {
            heldHere.delete(content);
          }
        };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      }
      const held = await readLock(file);
      if (held === undefined) {
        races++; // released in between: try again
        continue;
      }
      const pid = lockPid(held);
      if (isLive(held, pid)) {
        if (Date.now() >= deadline) throw options.busy(pid);
        await sleep(Math.min(10 * 2 ** Math.min(waits++, 5), 200, Math.max(1, deadline - Date.now())));
        continue;
      }
      const claim = `${file}.break-${createHash("sha256").update(held).digest("hex").slice(0, 32)}`;
      try {
        await link(temp, claim);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
        const claimer = lockPid((await readLock(claim)) ?? "");
        if (claimer !== undefined && claimer !== process.pid && !processRuns(claimer)) {
          throw new UsageError(
            `a stale lock ${file} could not be broken (its breaker died): if nothing holds it, remove ${file} and ${claim}`,
          );
        }
        races++;
        await sleep(5 + Math.floor(Math.random() * 20)); // another process is breaking it
        continue;
      }
      try {
        if ((await readLock(file)) === held) await unlink(file).catch(ignoreMissing);
      } finally {
        await unlink(claim).catch(() => undefined);
      }
      races++;
    }
    throw new UsageError(`cannot take the lock ${file}`);
  } finally {
    await rm(temp, { force: true });
  }
}

/** Runs `fn` holding the lock file `file`. */
export async function withLockFile<T>(
  file: string,
  options: LockFileOptions,
  fn: () => Promise<T>,
): Promise<T> {
  const release = await acquireLockFile(file, options);
  try {
    return await fn();
  } finally {
    await release();
  }
}

function ignoreMissing(error: unknown): void {
  if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
}

function isLive(content: string, pid: number | undefined): boolean {
  if (pid === undefined) return false;
  return pid === process.pid ? heldHere.has(content) : processRuns(pid);
}

/** The content of a lock file, or undefined when there is none. */
async function readLock(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/** The PID a lock names ("PID NONCE", or "PID" from older versions), or undefined. */
function lockPid(content: string): number | undefined {
  const pid = Number(content.trim().split(/\s+/, 1)[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
