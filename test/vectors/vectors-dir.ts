// Where the peer vectors live: in the repository, test/vectors/<suite>/ beside this file (each suite
// with its source and licence in test/vectors/README.md), so a clone alone runs its own tests.
// Missing vectors fail the tests loudly; they are never skipped.
import { existsSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const VECTORS_DIR = dirname(fileURLToPath(import.meta.url));

export function requireVectorsDir(sub: string): string {
  const dir = `${VECTORS_DIR}/${sub}`;
  if (!existsSync(dir)) throw new Error(`test vectors missing: ${dir}`);
  return dir;
}
