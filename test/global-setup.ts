// Runs once in vitest's main process, before any worker starts (workers inherit its environment).
// Builds test/helpers/vpcd-nodelay.c so that every private pcscd the tests start moves an APDU over
// vpcd in ~1 ms instead of ~40–115 ms (see that file). Only speed depends on it: without a C
// compiler the tests run as before, slower, and say so.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, renameSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export default function setup(): void {
  const source = join(import.meta.dirname, "helpers", "vpcd-nodelay.c");
  const digest = createHash("sha256").update(readFileSync(source)).digest("hex").slice(0, 16);
  const library = join(tmpdir(), `hsm-onboard-vpcd-nodelay-${digest}.so`);
  if (!existsSync(library)) {
    const building = `${library}.${process.pid}.tmp`;
    try {
      execFileSync("cc", ["-shared", "-fPIC", "-O2", "-o", building, source, "-ldl"], { stdio: "pipe" });
      renameSync(building, library);
    } catch (error) {
      process.stderr.write(
        `[test] vpcd TCP_NODELAY shim not built (${String(error).split("\n")[0]}); PC/SC tests run slower\n`,
      );
      return;
    }
  }
  process.env.HSM_ONBOARD_PCSCD_PRELOAD = library;
}
