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
  quietWhenReaderLeaves(process.stdout);
  quietWhenReaderLeaves(process.stderr);
  return {
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
    exitCode: 0,
  };
}

/**
 * `hsm-onboard demo | head -1`: once the reader of a pipe has gone, writes fail with EPIPE, which
 * Node raises as an 'error' event (a stack trace, when nobody listens). Output nobody reads is
 * dropped instead; the command runs to its end (and cleans up what it made) and exits with its
 * own status, 0 when it succeeded. Any other write error is still raised.
 */
function quietWhenReaderLeaves(stream: NodeJS.WriteStream): void {
  if (stream.listeners("error").includes(onOutputError)) return;
  stream.on("error", onOutputError);
}

function onOutputError(error: NodeJS.ErrnoException): void {
  if (error.code === "EPIPE" || error.code === "ERR_STREAM_DESTROYED") return;
  throw error;
}

/**
 * Whether to write ANSI colours to standard output: only to a terminal, and never when NO_COLOR is
 * set to a non-empty value (https://no-color.org). Redirected to a file or a pipe: plain text.
 */
export function colourEnabled(ctx: CliContext): boolean {
  const noColour = ctx.env.NO_COLOR;
  return (ctx.stdout as { isTTY?: boolean }).isTTY === true && (noColour === undefined || noColour === "");
}

export function writeLine(stream: Writable, line = ""): void {
  stream.write(`${line}\n`);
}

export function writeJson(stream: Writable, value: unknown): void {
  stream.write(`${JSON.stringify(value, null, 2)}\n`);
}
