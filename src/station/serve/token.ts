/**
 * The rack view's access token (`station serve` beyond loopback, issue 14): given by the operator
 * (a file descriptor or the HSM_ONBOARD_SERVE_TOKEN environment variable — never the command line,
 * where every user of the machine can read it), else generated once (32 random bytes, base64url)
 * into `serve-token` in the station directory, mode 0600, and reused. A token file that others may
 * read is refused, as ssh refuses such a key file.
 */
import { randomBytes } from "node:crypto";
import { lstat, mkdir, open, readFile } from "node:fs/promises";
import { join } from "node:path";
import { UsageError } from "../../errors.js";
import { MIN_TOKEN_LENGTH } from "./server.js";

export const TOKEN_FILE = "serve-token";
export const TOKEN_ENV = "HSM_ONBOARD_SERVE_TOKEN";

export interface StationToken {
  readonly token: string;
  readonly path: string;
  readonly created: boolean;
}

/** A token given by the operator: printable ASCII, no spaces, long enough. */
export function checkGivenToken(token: string, from: string): string {
  const t = token.trim();
  if (!/^[\x21-\x7e]+$/.test(t) || t.length < MIN_TOKEN_LENGTH || t.length > 512) {
    throw new UsageError(
      `the access token from ${from} must be ${MIN_TOKEN_LENGTH} to 512 printable characters without spaces`,
    );
  }
  return t;
}

/** The station's own token: read from `serve-token` (0600), or created there. */
export async function stationToken(stationDir: string): Promise<StationToken> {
  const path = join(stationDir, TOKEN_FILE);
  const info = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw error;
  });
  if (info) {
    if (!info.isFile()) throw new UsageError(`${path} is not a regular file`);
    if ((info.mode & 0o077) !== 0) {
      throw new UsageError(
        `${path} may be read by others (mode ${(info.mode & 0o777).toString(8)}): chmod 600 it, or remove it for a new token`,
      );
    }
    return { token: checkGivenToken(await readFile(path, "utf8"), path), path, created: false };
  }
  await mkdir(stationDir, { recursive: true, mode: 0o700 });
  const token = randomBytes(32).toString("base64url");
  const file = await open(path, "wx", 0o600).catch(async (error: NodeJS.ErrnoException) => {
    if (error.code === "EEXIST") return undefined; // another `station serve` created it just now
    throw error;
  });
  if (!file) return { ...(await stationToken(stationDir)), created: false };
  try {
    await file.writeFile(`${token}\n`);
    await file.sync();
  } finally {
    await file.close();
  }
  return { token, path, created: true };
}
