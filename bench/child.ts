/** Runs a benchmark child script (a compiled bench/*.js next to this file) and parses its JSON line. */
import { spawn } from "node:child_process";
import { join } from "node:path";

export interface ChildResult<T> {
  readonly value?: T;
  readonly error?: string;
  readonly wallMs: number;
}

/**
 * Spawns `node [nodeOptions] <script> ...args`, bounded by `timeoutMs` (then SIGKILL of that child
 * only).
 */
export function runChild<T>(
  script: string,
  args: readonly string[],
  timeoutMs: number,
  nodeOptions: readonly string[] = [],
): Promise<ChildResult<T>> {
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...nodeOptions, join(import.meta.dirname, script), ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const wallMs = performance.now() - started;
      if (code !== 0) {
        const why = signal
          ? `killed by ${signal}${signal === "SIGKILL" ? ` after ${timeoutMs} ms` : ""}`
          : `exit ${code}`;
        resolve({ error: `${script}: ${why}: ${stderr.trim().split("\n").slice(-3).join(" / ")}`, wallMs });
        return;
      }
      try {
        resolve({ value: JSON.parse(stdout.trim().split("\n").at(-1) ?? "") as T, wallMs });
      } catch {
        resolve({ error: `${script}: no JSON result (${stdout.slice(0, 200)})`, wallMs });
      }
    });
  });
}
