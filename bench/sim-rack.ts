/**
 * Wall time of `hsm-onboard sim rack --hsms N` (real pcscd, virtual cards, network namespaces) for
 * 4 and 16 HSMs, when it can run: as root, and once src/sim/rack.ts exists. Otherwise one line says
 * why it was skipped.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fixed, print, section, table } from "./report.js";

export interface SimRackRun {
  readonly hsms: number;
  readonly wallMs: number;
  readonly exitCode: number | null;
  /** sim rack's own closing line (its phase times), or why it failed. */
  readonly note?: string;
}

export interface SimRackResult {
  readonly skipped?: string;
  readonly runs: readonly SimRackRun[];
}

function timeCli(
  args: readonly string[],
  timeoutMs: number,
): Promise<{ wallMs: number; exitCode: number | null; note?: string }> {
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(import.meta.dirname, "cli-child.js"), ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    // SIGTERM lets sim rack remove what it created; SIGKILL only if it does not exit after that.
    let killTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      child.kill("SIGTERM");
      killTimer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    }, timeoutMs);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      const wallMs = performance.now() - started;
      const note = signal
        ? `stopped after ${timeoutMs / 1000} s (${signal})${signal === "SIGKILL" ? "; run hsm-onboard sim rack --cleanup" : ""}`
        : code === 0
          ? stdout
              .trim()
              .split("\n")
              .at(-1)
              ?.replace(/^\S+\s+/, "")
          : (stderr || stdout).trim().split("\n").at(-1);
      resolve({ wallMs, exitCode: code, ...(note ? { note } : {}) });
    });
  });
}

export async function benchSimRack(sourceRoot: string, enabled: boolean): Promise<SimRackResult> {
  section("6. sim rack: wall time for 4 and 16 HSMs");
  let skipped: string | undefined;
  if (!enabled) skipped = "--no-sim given";
  else if (process.platform !== "linux") skipped = "not Linux (network namespaces and pcscd needed)";
  else if (process.getuid?.() !== 0) skipped = "not running as root (sim rack needs network namespaces)";
  else if (
    !existsSync(join(sourceRoot, "src/sim/rack.ts")) ||
    !existsSync(join(import.meta.dirname, "../src/sim/rack.js"))
  )
    skipped = "src/sim/rack.ts does not exist yet (hsm-onboard sim rack is not implemented)";
  if (skipped) {
    print(`  skipped: ${skipped}`);
    return { skipped, runs: [] };
  }
  print("  the real stack: pcscd + vpcd, one virtual card moved HSM to HSM, an agent per network namespace");
  const runs: SimRackRun[] = [];
  for (const [hsms, bound] of [
    [4, 90_000],
    [16, 240_000],
  ] as const) {
    const run = { hsms, ...(await timeCli(["sim", "rack", "--hsms", String(hsms)], bound)) };
    runs.push(run);
    if (run.exitCode !== 0) break; // a failing rack would fail bigger, and slower
  }
  table(
    ["HSMs", "wall s", "exit", "note"],
    runs.map((r) => [r.hsms, fixed(r.wallMs / 1000, 2), String(r.exitCode ?? "-"), r.note ?? ""]),
    ["r", "r", "r", "l"],
  );
  return { runs };
}
