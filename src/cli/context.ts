import type { Readable, Writable } from "node:stream";
import type { CardOpener } from "../secure-element/open-card.js";

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
  /**
   * Opens cards instead of PC/SC: injected by tests, the demo and the sim (a virtual card). When
   * absent, HSM_ONBOARD_VIRTUAL_CARD may name a virtual card state file (src/cli/card-opener.ts).
   */
  readonly openCard?: CardOpener;
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
