/**
 * The PIN from a front-panel program (issue 12: an appliance has no terminal). `agent run
 * --pin-command CMD` runs CMD — named by the unit file, run with /bin/sh -c so that it may carry its
 * own arguments — once per card, only after the card was authenticated, and reads the PIN from the
 * first line of its standard output. The program learns which card it is for from its environment:
 *
 *   HSM_ONBOARD_PIN_FOR      "PIN"
 *   HSM_ONBOARD_HSM_SERIAL   this HSM's serial
 *   HSM_ONBOARD_CARD_OWNER   the owner (subject O) of the authenticated card
 *   HSM_ONBOARD_CARD_OFFICER the officer the card was issued to (when it names one)
 *   HSM_ONBOARD_CARD_SUBJECT the card-authentication certificate's subject
 *   HSM_ONBOARD_CARD_SERIAL  the card's own serial (when it reports one)
 *   HSM_ONBOARD_PIN_TRIES    PIN tries left (when the card says)
 *
 * Its output is never logged: standard output is read into memory (at most 4 KiB) and only the first
 * line is used; its standard error is discarded. A program that fails, times out (default 120 s:
 * the officer types on a front panel) or prints nothing gives a UsageError naming the program, never
 * the output. No secret goes through argv. The program runs in its own process group: a timeout, or
 * the agent being stopped (SIGTERM) while it waits, kills the group.
 */
import { spawn } from "node:child_process";
import { UsageError } from "../errors.js";
import type { PinRequest, PinSource } from "./onboarding.js";

export interface PinCommandOptions {
  readonly command: string;
  /** Bound on one run (default 120,000 ms). */
  readonly timeoutMs?: number;
  /** Base environment (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
}

const MAX_OUTPUT = 4096;
const MAX_PIN = 256;

/** The environment the front panel program is given for `request`. */
export function pinCommandEnv(prompt: string, request: PinRequest | undefined): Record<string, string> {
  const env: Record<string, string> = { HSM_ONBOARD_PIN_FOR: prompt };
  if (!request) return env;
  env.HSM_ONBOARD_HSM_SERIAL = request.hsmSerial;
  if (request.owner !== undefined) env.HSM_ONBOARD_CARD_OWNER = request.owner;
  if (request.officer !== undefined) env.HSM_ONBOARD_CARD_OFFICER = request.officer;
  if (request.subject !== undefined) env.HSM_ONBOARD_CARD_SUBJECT = request.subject;
  if (request.cardSerial !== undefined) env.HSM_ONBOARD_CARD_SERIAL = request.cardSerial;
  if (request.triesLeft >= 0) env.HSM_ONBOARD_PIN_TRIES = String(request.triesLeft);
  return env;
}

/**
 * The same facts as one JSON line, for a front panel that hands the PIN in through a descriptor
 * (`agent run --pin-fd N --pin-prompt-fd M`): written to M before the PIN is read from N.
 */
export function pinPromptLine(prompt: string, request: PinRequest | undefined): string {
  return `${JSON.stringify({
    for: prompt,
    ...(request
      ? {
          hsmSerial: request.hsmSerial,
          ...(request.owner !== undefined ? { owner: request.owner } : {}),
          ...(request.officer !== undefined ? { officer: request.officer } : {}),
          ...(request.subject !== undefined ? { subject: request.subject } : {}),
          ...(request.cardSerial !== undefined ? { cardSerial: request.cardSerial } : {}),
          ...(request.triesLeft >= 0 ? { triesLeft: request.triesLeft } : {}),
        }
      : {}),
  })}\n`;
}

/** One log line naming the card a PIN is asked for (never a secret). */
export function describePinRequest(prompt: string, request: PinRequest | undefined): string {
  if (!request) return `asking for the ${prompt}`;
  const who = request.officer ?? request.subject ?? "the card";
  const facts = [
    request.owner,
    request.cardSerial !== undefined ? `card serial ${request.cardSerial}` : undefined,
    request.triesLeft >= 0 ? `${request.triesLeft} tries left` : undefined,
  ].filter((f) => f !== undefined);
  return `asking for the ${prompt} of ${who}${facts.length > 0 ? ` (${facts.join(", ")})` : ""}`;
}

export function pinCommandSource(options: PinCommandOptions): PinSource {
  if (options.command.trim() === "") throw new UsageError("--pin-command needs a command");
  const timeoutMs = options.timeoutMs ?? 120_000;
  return {
    read: (prompt, request, signal) =>
      new Promise<string>((resolve, reject) => {
        // Its own process group: a timeout or a stop kills the program and whatever it started.
        const child = spawn("/bin/sh", ["-c", options.command], {
          env: { ...(options.env ?? process.env), ...pinCommandEnv(prompt, request) },
          stdio: ["ignore", "pipe", "ignore"],
          detached: true,
        });
        const kill = () => {
          try {
            if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
          } catch {
            child.kill("SIGKILL");
          }
        };
        const onAbort = () => {
          kill();
          finish(
            new UsageError(`stopped while waiting for the ${prompt} from the PIN program (--pin-command)`),
          );
        };
        const chunks: Buffer[] = [];
        let size = 0;
        let settled = false;
        const finish = (error: Error | undefined, pin?: string) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          chunks.fill(Buffer.alloc(0));
          if (error) reject(error);
          else resolve(pin!);
        };
        const timer = setTimeout(() => {
          kill();
          finish(
            new UsageError(`the PIN program (--pin-command) gave no ${prompt} within ${timeoutMs / 1000} s`),
          );
        }, timeoutMs);
        child.stdout.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_OUTPUT) {
            kill();
            finish(new UsageError(`the PIN program (--pin-command) printed more than ${MAX_OUTPUT} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        if (signal?.aborted) onAbort();
        else signal?.addEventListener("abort", onAbort, { once: true });
        child.on("error", (error) =>
          finish(new UsageError(`the PIN program (--pin-command) could not be started: ${error.message}`)),
        );
        child.on("close", (code, signal) => {
          if (settled) return;
          const text = Buffer.concat(chunks).toString("utf8");
          const newline = text.indexOf("\n");
          const line = (newline >= 0 ? text.slice(0, newline) : text).replace(/\r$/, "");
          if (code !== 0) {
            finish(
              new UsageError(
                `the PIN program (--pin-command) failed (${signal ? `signal ${signal}` : `exit ${code}`}); no ${prompt} given`,
              ),
            );
          } else if (line === "") {
            finish(new UsageError(`the PIN program (--pin-command) printed no ${prompt}`));
          } else if (line.length > MAX_PIN) {
            finish(new UsageError(`the ${prompt} from the PIN program (--pin-command) is too long`));
          } else {
            finish(undefined, line);
          }
        });
      }),
  };
}
