import { resolve } from "node:path";
import { UsageError } from "../../../errors.js";
import type { CliContext } from "../../context.js";

/** Where an HSM's agent keeps its state when run as root without --state-dir (the unit's StateDirectory=). */
export const DEFAULT_STATE_DIR = "/var/lib/hsm-onboard";

export const STATE_DIR_HELP = `the agent's state directory (default ${DEFAULT_STATE_DIR} when run as root)`;

/** --state-dir, or the default as root; anyone else must name one. */
export function resolveStateDir(ctx: CliContext, value: string | undefined): string {
  if (value !== undefined) return resolve(ctx.cwd, value);
  if (process.getuid?.() === 0) return DEFAULT_STATE_DIR;
  throw new UsageError(
    `--state-dir is required when not running as root (root's default: ${DEFAULT_STATE_DIR})`,
  );
}
