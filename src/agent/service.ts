/**
 * The agent as a service (issue 12): what `agent run` needs to live under systemd.
 *
 * - sd_notify (`Type=notify`): READY=1, STATUS=… and WATCHDOG=1 datagrams to the unix socket named
 *   by NOTIFY_SOCKET. Node cannot send on a unix datagram socket (node:net is stream-only, node:dgram
 *   is UDP-only), and the project takes no native dependency for it; so each message is handed to
 *   systemd's own `systemd-notify` program (execFile, never a shell), with `--pid` naming this
 *   process so that systemd attributes it to the main PID. The unit sets NotifyAccess=all as well:
 *   when `--pid` cannot be honoured (no CAP_SYS_ADMIN to send another PID's credentials), systemd
 *   still accepts the message from a process of the unit's cgroup. Messages are sent in order, one
 *   at a time, and a failure to notify is logged once, never fatal. Without NOTIFY_SOCKET nothing
 *   is sent.
 * - Watchdog: with WATCHDOG_USEC set (and WATCHDOG_PID, when set, naming this process), WATCHDOG=1
 *   every half period.
 * - Journal priorities: when stderr is the journal (JOURNAL_STREAM names stderr's device:inode),
 *   every log line starts with an sd-daemon priority prefix `<N>` (3 error, 4 warning, 6 info).
 * - Bounded backoff for the PC/SC service coming back (pcscd is socket-activated with --auto-exit
 *   on Debian: it going away is normal).
 */
import { execFile } from "node:child_process";
import { fstatSync } from "node:fs";

export interface NotifierOptions {
  /** Default: process.env. */
  readonly env?: NodeJS.ProcessEnv;
  /** The program that sends one notification (default `systemd-notify` on PATH). */
  readonly program?: string;
  /** Default: process.pid. */
  readonly pid?: number;
  /** Reports a failure to notify (once). */
  readonly onError?: (message: string) => void;
}

/** sd_notify through `systemd-notify`; a no-op without NOTIFY_SOCKET. */
export class SdNotifier {
  readonly socket: string | undefined;
  readonly #program: string;
  readonly #pid: number;
  readonly #env: NodeJS.ProcessEnv;
  readonly #onError: (message: string) => void;
  #queue: Promise<void> = Promise.resolve();
  #failed = false;
  #watchdog: NodeJS.Timeout | undefined;
  /** Notifications handed to systemd-notify successfully (for tests and figures). */
  sent = 0;

  constructor(options: NotifierOptions = {}) {
    this.#env = options.env ?? process.env;
    const socket = this.#env.NOTIFY_SOCKET;
    this.socket = socket !== undefined && socket !== "" ? socket : undefined;
    this.#program = options.program ?? "systemd-notify";
    this.#pid = options.pid ?? process.pid;
    this.#onError = options.onError ?? (() => {});
  }

  get enabled(): boolean {
    return this.socket !== undefined;
  }

  /** Sends `KEY=VALUE` assignments in one datagram (after every earlier one). */
  notify(fields: Readonly<Record<string, string>>): Promise<void> {
    if (!this.socket) return Promise.resolve();
    const assignments = Object.entries(fields).map(([k, v]) => `${k}=${v.replace(/\n/g, " ")}`);
    const send = () =>
      new Promise<void>((resolve) => {
        execFile(
          this.#program,
          [`--pid=${this.#pid}`, ...assignments],
          { env: { ...this.#env, NOTIFY_SOCKET: this.socket }, timeout: 5000, killSignal: "SIGKILL" },
          (error, _stdout, stderr) => {
            if (error) {
              if (!this.#failed) {
                this.#failed = true;
                this.#onError(
                  `cannot notify the service manager through ${this.#program}: ${String(stderr).trim() || error.message}`,
                );
              }
            } else {
              this.sent++;
            }
            resolve();
          },
        );
      });
    this.#queue = this.#queue.then(send);
    return this.#queue;
  }

  ready(status: string): Promise<void> {
    return this.notify({ READY: "1", STATUS: status });
  }

  status(status: string): Promise<void> {
    return this.notify({ STATUS: status });
  }

  stopping(status: string): Promise<void> {
    return this.notify({ STOPPING: "1", STATUS: status });
  }

  /** The watchdog period in ms the service manager asked for, or undefined. */
  watchdogMs(): number | undefined {
    const usec = Number(this.#env.WATCHDOG_USEC);
    if (!this.socket || !Number.isFinite(usec) || usec <= 0) return undefined;
    const pid = this.#env.WATCHDOG_PID;
    if (pid !== undefined && pid !== "" && Number(pid) !== this.#pid) return undefined;
    return usec / 1000;
  }

  /** WATCHDOG=1 every half period, until stop(); the timer does not keep the process alive. */
  startWatchdog(): void {
    const period = this.watchdogMs();
    if (period === undefined || this.#watchdog) return;
    const every = Math.max(50, Math.floor(period / 2));
    this.#watchdog = setInterval(() => void this.notify({ WATCHDOG: "1" }), every);
    this.#watchdog.unref();
    void this.notify({ WATCHDOG: "1" });
  }

  /** Stops the watchdog and waits for every notification queued. */
  async stop(): Promise<void> {
    if (this.#watchdog) clearInterval(this.#watchdog);
    this.#watchdog = undefined;
    await this.#queue;
  }
}

/** sd-daemon priorities used in the agent's log. */
export const SD_PRIORITY = { err: 3, warning: 4, notice: 5, info: 6 } as const;

/**
 * True when file descriptor `fd` is the journal stream systemd connected (JOURNAL_STREAM is
 * `device:inode` of it): only then do log lines carry `<N>` prefixes.
 */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env, fd = 2): boolean {
  const stream = env.JOURNAL_STREAM;
  if (!stream) return false;
  const match = /^(\d+):(\d+)$/.exec(stream);
  if (!match) return false;
  try {
    const stat = fstatSync(fd);
    return String(stat.dev) === match[1] && String(stat.ino) === match[2];
  } catch {
    return false;
  }
}

/** The priority of one agent log line: failures are errors, things it could not do warnings. */
export function priorityOf(line: string): number {
  if (/^(failed|HSM \S+ not configured|an interrupted apply could not)/.test(line)) return SD_PRIORITY.err;
  if (
    /^(cannot|could not|re-applying .* failed|rolling the network back failed|receipt not written|PC\/SC service)/.test(
      line,
    )
  )
    return SD_PRIORITY.warning;
  return SD_PRIORITY.info;
}

/** `line` with its sd-daemon prefix when `journal`, else as it is. */
export function withPriority(line: string, journal: boolean, priority = priorityOf(line)): string {
  return journal ? `<${priority}>${line}` : line;
}

/** Backoff delays for the PC/SC service coming back: 1 s, 2 s, 4 s … capped at `maxMs`. */
export function backoffMs(attempt: number, maxMs = 30_000, firstMs = 1000): number {
  return Math.min(maxMs, firstMs * 2 ** Math.min(attempt, 20));
}
