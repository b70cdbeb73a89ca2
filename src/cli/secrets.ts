import { createReadStream } from "node:fs";
import type { Readable } from "node:stream";
import { InvalidArgumentError } from "commander";
import { UsageError } from "../errors.js";
import type { CliContext } from "./context.js";

/**
 * Where a command reads secrets (PIN, PUK, new PIN, TOTP code) from, in the order it asks for them
 * (SPEC.md §7): the terminal with echo off, or one per line from standard input (`--pin-stdin`) or
 * from an inherited file descriptor (`--pin-fd N`). A secret is never echoed, logged or put in an
 * error message; prompts go to stderr so `--json` output on stdout stays clean.
 */
export interface SecretSource {
  /** Reads the next secret; `prompt` names it ("PIN", "new PUK"). */
  read(prompt: string): Promise<string>;
  close(): void;
}

export interface SecretOptions {
  readonly pinStdin?: boolean;
  readonly pinFd?: number;
}

/** The longest line accepted as a secret: bounds memory for a hostile or mistaken input. */
const MAX_SECRET_BYTES = 256;

export function secretSource(ctx: CliContext, options: SecretOptions): SecretSource {
  if (options.pinStdin && options.pinFd !== undefined) {
    throw new UsageError("use either --pin-stdin or --pin-fd, not both");
  }
  if (options.pinStdin) return new LineSecretSource(ctx.stdin, "standard input", false);
  if (options.pinFd !== undefined) {
    if (!Number.isInteger(options.pinFd) || options.pinFd < 0)
      throw new UsageError("--pin-fd needs a file descriptor number");
    return new LineSecretSource(
      createReadStream("", { fd: options.pinFd, autoClose: true }),
      `file descriptor ${options.pinFd}`,
      true,
    );
  }
  const stdin = ctx.stdin as Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => void };
  if (!stdin.isTTY || typeof stdin.setRawMode !== "function") {
    return {
      read: async (prompt) => {
        throw new UsageError(`no terminal to read the ${prompt} from: use --pin-stdin or --pin-fd N`);
      },
      close: () => {},
    };
  }
  return new TerminalSecretSource(stdin as Readable & { setRawMode: (raw: boolean) => void }, ctx);
}

/**
 * Parses a file descriptor number given to an option (`--pin-fd`, `--management-key-fd`, …): commander
 * names the option in its message ("option '--management-key-fd <n>' argument 'x' is invalid"), exit 2.
 */
export function parseFd(value: string): number {
  const fd = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(fd))
    throw new InvalidArgumentError("expected a file descriptor number.");
  return fd;
}

class LineSecretSource implements SecretSource {
  private buffer = "";
  private ended = false;
  private waiting: (() => void) | undefined;
  private readonly onData = (chunk: Buffer | string) => {
    this.buffer += chunk.toString();
    if (this.buffer.length > MAX_SECRET_BYTES * 8) this.stream.pause();
    this.wake();
  };
  private readonly onEnd = () => {
    this.ended = true;
    this.wake();
  };

  constructor(
    private readonly stream: Readable,
    private readonly what: string,
    private readonly owned: boolean,
  ) {
    stream.on("data", this.onData);
    stream.on("end", this.onEnd);
    stream.on("error", this.onEnd);
  }

  async read(prompt: string): Promise<string> {
    for (;;) {
      const newline = this.buffer.indexOf("\n");
      if (newline >= 0) {
        const line = this.buffer.slice(0, newline).replace(/\r$/, "");
        this.buffer = this.buffer.slice(newline + 1);
        this.stream.resume();
        return checkLength(line, prompt);
      }
      if (this.buffer.length > MAX_SECRET_BYTES)
        throw new UsageError(`${prompt} from ${this.what} is too long`);
      if (this.ended) {
        if (this.buffer.length > 0) {
          const line = this.buffer;
          this.buffer = "";
          return checkLength(line, prompt);
        }
        throw new UsageError(`${this.what} ended before the ${prompt} was given`);
      }
      await new Promise<void>((resolve) => {
        this.waiting = resolve;
      });
    }
  }

  close(): void {
    this.stream.off("data", this.onData);
    this.stream.off("end", this.onEnd);
    this.stream.off("error", this.onEnd);
    if (this.owned) this.stream.destroy();
    else this.stream.pause();
  }

  private wake(): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.();
  }
}

class TerminalSecretSource implements SecretSource {
  constructor(
    private readonly stdin: Readable & { setRawMode: (raw: boolean) => void },
    private readonly ctx: CliContext,
  ) {}

  read(prompt: string): Promise<string> {
    const { stdin, ctx } = this;
    ctx.stderr.write(`${prompt}: `);
    stdin.setRawMode(true);
    stdin.resume();
    return new Promise<string>((resolve, reject) => {
      let secret = "";
      const finish = (error?: Error) => {
        stdin.off("data", onData);
        stdin.setRawMode(false);
        stdin.pause();
        ctx.stderr.write("\n");
        if (error) reject(error);
        else resolve(secret);
      };
      const onData = (chunk: Buffer | string) => {
        for (const ch of chunk.toString()) {
          if (ch === "\r" || ch === "\n") return finish();
          if (ch === "\u0003") return finish(new UsageError("cancelled"));
          if (ch === "\u007f" || ch === "\b") secret = secret.slice(0, -1);
          else if (secret.length < MAX_SECRET_BYTES) secret += ch;
        }
      };
      stdin.on("data", onData);
    });
  }

  close(): void {}
}

function checkLength(line: string, prompt: string): string {
  if (Buffer.byteLength(line) > MAX_SECRET_BYTES) throw new UsageError(`${prompt} is too long`);
  return line;
}
