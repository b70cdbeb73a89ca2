/**
 * Bridge between a virtual card (ApduResponder) and vpcd, the virtual reader driver of
 * vsmartcard that runs inside pcscd. vpcd is the TCP server, the card the client:
 *
 *   frame   = length (2 bytes, big-endian) ‖ body
 *   body    = 1 byte: control — 0 power off, 1 power on, 2 reset, 4 "send your ATR" (answered
 *             with one frame holding the ATR)
 *           | ≥ 2 bytes: a command APDU, answered with one frame holding data ‖ SW1 SW2
 *
 * Connecting is inserting the card, closing the connection is removing it. pcscd asks for the ATR
 * on every presence poll (~400 ms), so the ATR is cached rather than re-read with a power-on.
 */
import { EventEmitter } from "node:events";
import { connect, type Socket } from "node:net";
import { VpcdConnectError } from "../errors.js";
import type { ApduResponder } from "../transport/apdu-responder.js";

export { VpcdConnectError } from "../errors.js";

export const VPCD_DEFAULT_HOST = "127.0.0.1";
/** First slot of the packaged /etc/reader.conf.d/vpcd entry (0x8C7B); the second is +1. */
export const VPCD_DEFAULT_PORT = 35963;

const CONTROL_POWER_OFF = 0x00;
const CONTROL_POWER_ON = 0x01;
const CONTROL_RESET = 0x02;
const CONTROL_GET_ATR = 0x04;
/** Two-byte length prefix: a body is at most 65535 bytes. */
const MAX_BODY = 0xffff;
/** SW 6F00 "no precise diagnosis": the answer when the responder throws. */
const SW_INTERNAL_ERROR = Uint8Array.of(0x6f, 0x00);

export type VpcdBridgeEvent =
  | { type: "connecting"; host: string; port: number; attempt: number }
  | { type: "connected"; host: string; port: number }
  | { type: "power-on" }
  | { type: "power-off" }
  | { type: "reset" }
  | { type: "apdu"; command: Uint8Array; response: Uint8Array; elapsedMs: number }
  | { type: "responder-error"; error: unknown }
  | { type: "disconnected"; reason: "stopped" | "closed-by-peer" | "error"; error?: Error }
  | { type: "stopped"; reason: "stopped" | "lost"; error?: Error };

export interface VpcdBridgeEvents {
  event: [VpcdBridgeEvent];
}

export interface VpcdBridgeOptions {
  responder: ApduResponder;
  host?: string;
  port?: number;
  /** The ATR to announce; by default the one the responder returns from its first power-on. */
  atr?: Uint8Array;
  /** Attempts for the first connection (default 3). */
  connectAttempts?: number;
  /**
   * Attempts to connect again after an established connection was dropped by vpcd (pcscd
   * restarting; default 10). 0: the bridge stops when the connection drops.
   */
  reconnectAttempts?: number;
  /** Pause between attempts (default 300 ms). */
  retryDelayMs?: number;
  /** Bound on one TCP connect (default 2000 ms). */
  connectTimeoutMs?: number;
}

export type VpcdBridgeEnd = { reason: "stopped" } | { reason: "lost"; error: VpcdConnectError };

export class VpcdBridge extends EventEmitter<VpcdBridgeEvents> {
  readonly host: string;
  readonly port: number;
  private readonly responder: ApduResponder;
  private atr: Uint8Array | undefined;
  private socket: Socket | undefined;
  private stopping = false;
  private started = false;
  private inbox: Buffer = Buffer.alloc(0);
  private retryTimer: NodeJS.Timeout | undefined;
  private retryWake: (() => void) | undefined;
  private finished = false;
  private resolveEnded!: (end: VpcdBridgeEnd) => void;
  /** Settles once, when the bridge stops for good (stop() or vpcd lost beyond the retries). */
  readonly ended: Promise<VpcdBridgeEnd>;

  constructor(private readonly options: VpcdBridgeOptions) {
    super();
    this.responder = options.responder;
    this.host = options.host ?? VPCD_DEFAULT_HOST;
    this.port = options.port ?? VPCD_DEFAULT_PORT;
    this.atr = options.atr;
    this.ended = new Promise((resolve) => {
      this.resolveEnded = resolve;
    });
  }

  /** True while a TCP connection to vpcd is up (the card is "inserted"). */
  get connected(): boolean {
    return this.socket !== undefined && !this.socket.destroyed;
  }

  /** Connects (inserts the card). Rejects with VpcdConnectError after the bounded attempts. */
  async start(): Promise<void> {
    if (this.started) throw new Error("VpcdBridge.start() called twice");
    this.started = true;
    const attempts = Math.max(1, this.options.connectAttempts ?? 3);
    try {
      await this.connectWithRetries(attempts);
    } catch (error) {
      this.finish({ reason: "lost", error: error as VpcdConnectError });
      throw error;
    }
  }

  /**
   * Removes the card: half-closes the connection (vpcd sees EOF at once), waits for the peer's
   * close for at most `timeoutMs`, then destroys the socket. Idempotent.
   */
  async stop(timeoutMs = 1000): Promise<void> {
    if (this.stopping) {
      await this.ended;
      return;
    }
    this.stopping = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryWake?.();
    const socket = this.socket;
    if (socket && !socket.destroyed) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => socket.destroy(), timeoutMs);
        socket.once("close", () => {
          clearTimeout(timer);
          resolve();
        });
        socket.end();
      });
    }
    this.finish({ reason: "stopped" });
    await this.ended;
  }

  // -------------------------------------------------------------------------------------------

  private finish(end: VpcdBridgeEnd): void {
    if (this.finished) return;
    this.finished = true;
    if (end.reason === "stopped") this.emitEvent({ type: "stopped", reason: "stopped" });
    else this.emitEvent({ type: "stopped", reason: "lost", error: end.error });
    this.resolveEnded(end);
  }

  private emitEvent(event: VpcdBridgeEvent): void {
    this.emit("event", event);
  }

  private async connectWithRetries(attempts: number): Promise<void> {
    const delay = this.options.retryDelayMs ?? 300;
    let lastError: Error | undefined;
    for (let attempt = 1; attempt <= attempts && !this.stopping; attempt++) {
      if (attempt > 1) await this.pause(delay);
      if (this.stopping) break;
      this.emitEvent({ type: "connecting", host: this.host, port: this.port, attempt });
      try {
        await this.connectOnce();
        return;
      } catch (error) {
        lastError = error as Error;
      }
    }
    if (this.stopping) return;
    throw new VpcdConnectError(
      `cannot reach vpcd at ${this.host}:${this.port} (${describeSocketError(lastError)}) after ${attempts} attempt${attempts === 1 ? "" : "s"}: is pcscd running with the vpcd driver?`,
      { cause: lastError },
    );
  }

  private pause(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      this.retryWake = resolve;
      this.retryTimer = setTimeout(resolve, ms);
    }).then(() => {
      this.retryTimer = undefined;
      this.retryWake = undefined;
    });
  }

  private connectOnce(): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: this.host, port: this.port, noDelay: true });
      const timeout = setTimeout(
        () => socket.destroy(new Error(`timed out after ${this.options.connectTimeoutMs ?? 2000} ms`)),
        this.options.connectTimeoutMs ?? 2000,
      );
      const onError = (error: Error) => {
        clearTimeout(timeout);
        reject(error);
      };
      socket.once("error", onError);
      socket.once("connect", () => {
        clearTimeout(timeout);
        socket.off("error", onError);
        if (this.stopping) {
          // stop() came while connecting: do not insert the card after all.
          socket.destroy();
          resolve();
          return;
        }
        this.adopt(socket);
        this.emitEvent({ type: "connected", host: this.host, port: this.port });
        resolve();
      });
    });
  }

  private adopt(socket: Socket): void {
    this.socket = socket;
    this.inbox = Buffer.alloc(0);
    let socketError: Error | undefined;
    socket.on("data", (chunk: Buffer) => this.onData(socket, chunk));
    socket.on("error", (error) => {
      socketError = error;
    });
    socket.on("close", () => {
      if (this.socket === socket) this.socket = undefined;
      if (this.stopping) {
        this.emitEvent({ type: "disconnected", reason: "stopped" });
        return;
      }
      this.emitEvent(
        socketError
          ? { type: "disconnected", reason: "error", error: socketError }
          : { type: "disconnected", reason: "closed-by-peer" },
      );
      void this.reconnect();
    });
  }

  /** vpcd dropped us (pcscd stopped or restarting): try to come back, boundedly. */
  private async reconnect(): Promise<void> {
    const attempts = this.options.reconnectAttempts ?? 10;
    if (attempts <= 0) {
      this.finish({
        reason: "lost",
        error: new VpcdConnectError(`vpcd at ${this.host}:${this.port} closed the connection`),
      });
      return;
    }
    try {
      await this.pause(this.options.retryDelayMs ?? 300);
      await this.connectWithRetries(attempts);
      if (this.stopping && !this.connected) this.finish({ reason: "stopped" });
    } catch (error) {
      this.finish({ reason: "lost", error: error as VpcdConnectError });
    }
  }

  private onData(socket: Socket, chunk: Buffer): void {
    // vpcd writes the length and the body separately: reassemble whole frames first.
    this.inbox = this.inbox.length === 0 ? chunk : Buffer.concat([this.inbox, chunk]);
    let offset = 0;
    while (this.inbox.length - offset >= 2) {
      const length = this.inbox.readUInt16BE(offset);
      if (this.inbox.length - offset - 2 < length) break;
      const body = this.inbox.subarray(offset + 2, offset + 2 + length);
      offset += 2 + length;
      const reply = this.handle(body);
      // After stop() has half-closed the socket, vpcd may still ask for the ATR: no answer then,
      // which is how vpcd learns the card is gone.
      if (reply && socket.writable) socket.write(frame(reply));
    }
    this.inbox = offset === this.inbox.length ? Buffer.alloc(0) : Buffer.from(this.inbox.subarray(offset));
  }

  /** Answers one frame body; undefined for controls that have no answer. */
  private handle(body: Buffer): Uint8Array | undefined {
    if (body.length === 0) return undefined;
    if (body.length === 1) {
      switch (body[0]) {
        case CONTROL_POWER_OFF:
          this.safely(() => this.responder.powerOff());
          this.emitEvent({ type: "power-off" });
          return undefined;
        case CONTROL_POWER_ON:
          this.powerOn();
          this.emitEvent({ type: "power-on" });
          return undefined;
        case CONTROL_RESET:
          this.safely(() => this.responder.powerOff());
          this.powerOn();
          this.emitEvent({ type: "reset" });
          return undefined;
        case CONTROL_GET_ATR:
          return this.currentAtr();
        default:
          // Unknown control codes are ignored, as vicc does.
          return undefined;
      }
    }
    const started = performance.now();
    const command = new Uint8Array(body);
    let response: Uint8Array;
    try {
      response = this.responder.transmit(command);
      if (response.length < 2 || response.length > MAX_BODY) {
        throw new RangeError(`response of ${response.length} bytes cannot be framed`);
      }
    } catch (error) {
      this.emitEvent({ type: "responder-error", error });
      response = SW_INTERNAL_ERROR;
    }
    this.emitEvent({ type: "apdu", command, response, elapsedMs: performance.now() - started });
    return response;
  }

  private powerOn(): void {
    const atr = this.safely(() => this.responder.powerOn());
    if (atr && !this.options.atr) this.atr = atr;
  }

  private currentAtr(): Uint8Array {
    // The first ATR request comes before any power-on (presence poll): learn it from a power-on.
    if (!this.atr) this.powerOn();
    return this.atr ?? Uint8Array.of(0x3b, 0x00);
  }

  private safely<T>(fn: () => T): T | undefined {
    try {
      return fn();
    } catch (error) {
      this.emitEvent({ type: "responder-error", error });
      return undefined;
    }
  }
}

function frame(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(2 + body.length);
  out.writeUInt16BE(body.length, 0);
  out.set(body, 2);
  return out;
}

function describeSocketError(error: Error | undefined): string {
  if (!error) return "no attempt made";
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ECONNREFUSED") return "connection refused";
  if (code === "EHOSTUNREACH" || code === "ENETUNREACH") return "host unreachable";
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return "unknown host";
  return code ? `${code}: ${error.message}` : error.message;
}

/** Parses `HOST:PORT`, `[V6]:PORT`, `HOST` or `:PORT` (defaults: 127.0.0.1, 35963). */
export function parseVpcdAddress(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*))(?::(\d{1,5}))?$/.exec(value.trim());
  if (!m) throw new RangeError(`not HOST:PORT: "${value}"`);
  const host = m[1] ?? (m[2] || VPCD_DEFAULT_HOST);
  const port = m[3] === undefined ? VPCD_DEFAULT_PORT : Number(m[3]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`bad port in "${value}"`);
  return { host, port };
}
