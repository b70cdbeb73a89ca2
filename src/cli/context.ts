import type { Readable, Writable } from "node:stream";

/**
 * Everything a command touches of the outside world. Tests build one with in-memory streams and
 * run the CLI in-process; `bin/hsm-onboard.js` passes the real process streams.
 */
export interface CliContext {
  readonly stdin: Readable;
  readonly stdout: Writable;
  readonly stderr: Writable;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  /** Set by a command's action; `runCli` returns it. */
  exitCode: number;
}

export function processContext(): CliContext {
  return {
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
    exitCode: 0,
  };
}

export function writeLine(stream: Writable, line = ""): void {
  stream.write(`${line}\n`);
}

export function writeJson(stream: Writable, value: unknown): void {
  stream.write(`${JSON.stringify(value, null, 2)}\n`);
}
