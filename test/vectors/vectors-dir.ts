// Where the peer vectors live: $HSM_ONBOARD_VECTORS_DIR, else `shared/vectors` next to the
// project's root (where the team's shared folder sits, on developer machines and in CI).
// Missing vectors fail the tests loudly; they are never skipped.
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

export const VECTORS_DIR =
  process.env.HSM_ONBOARD_VECTORS_DIR ?? resolve(projectRoot, "..", "shared", "vectors");

export function requireVectorsDir(sub: string): string {
  const dir = `${VECTORS_DIR}/${sub}`;
  if (!existsSync(dir)) throw new Error(`test vectors missing: ${dir} (set HSM_ONBOARD_VECTORS_DIR)`);
  return dir;
}
