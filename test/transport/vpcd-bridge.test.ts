/**
 * The vpcd bridge against an in-process stand-in for vpcd (a TCP server speaking the same
 * frames). The real vpcd inside pcscd is exercised by test/e2e/pcsc.test.ts.
 */
import { once } from "node:events";
import { createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import {
  parseVpcdAddress,
  VpcdBridge,
  type VpcdBridgeEvent,
  VpcdConnectError,
} from "../../src/card-emulator/vpcd-bridge.js";
import type { ApduResponder } from "../../src/transport/apdu-responder.js";

const ATR = Uint8Array.from([0x3b, 0x81, 0x80, 0x01, 0x80, 0x80]);

class EchoCard implements ApduResponder {
  readonly calls: string[] = [];
  fail = false;
  powerOn(): Uint8Array {
    this.calls.push("on");
    return ATR;
  }
  powerOff(): void {
    this.calls.push("off");
  }
  transmit(command: Uint8Array): Uint8Array {
    this.calls.push("apdu");
    if (this.fail) throw new Error("card exploded");
    return Uint8Array.from([...command.subarray(0, 4), 0x90, 0x00]);
  }
}

/** Minimal vpcd: accepts connections, lets the test send frames and read the answers. */
class FakeVpcd {
  private server: Server;
  readonly sockets: Socket[] = [];
  private buffered = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  port = 0;

  constructor() {
    this.server = createServer((socket) => {
      this.sockets.push(socket);
      this.buffered = Buffer.alloc(0);
      socket.on("data", (d: Buffer) => {
        this.buffered = Buffer.concat([this.buffered, d]);
        for (const w of this.waiters.splice(0)) w();
      });
      socket.on("error", () => {});
    });
  }

  async listen(port = 0): Promise<void> {
    this.server.listen(port, "127.0.0.1");
    await once(this.server, "listening");
    const address = this.server.address();
    this.port = typeof address === "object" && address ? address.port : 0;
  }

  get current(): Socket {
    const s = this.sockets.at(-1);
    if (!s) throw new Error("no connection");
    return s;
  }

  async connection(count = 1): Promise<Socket> {
    for (let i = 0; i < 200 && this.sockets.length < count; i++) await new Promise((r) => setTimeout(r, 10));
    return this.current;
  }

  send(...bodies: Uint8Array[]): void {
    for (const body of bodies) {
      const header = Buffer.alloc(2);
      header.writeUInt16BE(body.length);
      this.current.write(Buffer.concat([header, body]));
    }
  }

  /** Reads one answer frame (bounded wait). */
  async receive(timeoutMs = 2000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 1000; i++) {
      if (this.buffered.length >= 2) {
        const length = this.buffered.readUInt16BE(0);
        if (this.buffered.length >= 2 + length) {
          const body = this.buffered.subarray(2, 2 + length);
          this.buffered = this.buffered.subarray(2 + length);
          return Buffer.from(body);
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) break;
      await Promise.race([
        new Promise<void>((r) => this.waiters.push(r)),
        new Promise((r) => setTimeout(r, Math.min(left, 50))),
      ]);
    }
    throw new Error("no answer frame");
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(options: Partial<ConstructorParameters<typeof VpcdBridge>[0]> = {}) {
  const vpcd = new FakeVpcd();
  await vpcd.listen();
  cleanups.push(() => vpcd.close());
  const card = new EchoCard();
  const bridge = new VpcdBridge({ responder: card, port: vpcd.port, retryDelayMs: 20, ...options });
  cleanups.push(() => bridge.stop(200));
  const events: VpcdBridgeEvent[] = [];
  bridge.on("event", (e) => events.push(e));
  await bridge.start();
  await vpcd.connection();
  return { vpcd, card, bridge, events };
}

describe("VpcdBridge", () => {
  it("answers ATR requests, power controls and APDUs", async () => {
    const { vpcd, card, events } = await setup();
    vpcd.send(Uint8Array.of(4));
    expect(Uint8Array.from(await vpcd.receive())).toEqual(ATR);
    vpcd.send(Uint8Array.of(1));
    vpcd.send(Uint8Array.of(0x00, 0xa4, 0x04, 0x00, 0x01, 0xaa));
    expect([...(await vpcd.receive())]).toEqual([0x00, 0xa4, 0x04, 0x00, 0x90, 0x00]);
    vpcd.send(Uint8Array.of(2));
    vpcd.send(Uint8Array.of(0));
    vpcd.send(Uint8Array.of(4));
    expect(Uint8Array.from(await vpcd.receive())).toEqual(ATR);
    // First ATR request learns the ATR from a power-on; later ones use the cache.
    expect(card.calls).toEqual(["on", "on", "apdu", "off", "on", "off"]);
    expect(events.map((e) => e.type)).toEqual([
      "connecting",
      "connected",
      "power-on",
      "apdu",
      "reset",
      "power-off",
    ]);
  });

  it("reassembles frames split across TCP segments and several frames in one segment", async () => {
    const { vpcd } = await setup();
    const socket = vpcd.current;
    // length and body separately, as vpcd writes them
    socket.write(Buffer.from([0x00, 0x05]));
    await new Promise((r) => setTimeout(r, 20));
    socket.write(Buffer.from([0x00, 0xb0, 0x00]));
    await new Promise((r) => setTimeout(r, 20));
    socket.write(Buffer.from([0x00, 0x10, 0x00, 0x04, 0x00, 0xca, 0x01, 0x02]));
    expect([...(await vpcd.receive())]).toEqual([0x00, 0xb0, 0x00, 0x00, 0x90, 0x00]);
    expect([...(await vpcd.receive())]).toEqual([0x00, 0xca, 0x01, 0x02, 0x90, 0x00]);
  });

  it("answers 6F00 when the card throws, and keeps going", async () => {
    const { vpcd, card, events } = await setup();
    card.fail = true;
    vpcd.send(Uint8Array.of(0x00, 0x20, 0x00, 0x80));
    expect([...(await vpcd.receive())]).toEqual([0x6f, 0x00]);
    card.fail = false;
    vpcd.send(Uint8Array.of(0x00, 0x20, 0x00, 0x80));
    expect([...(await vpcd.receive())]).toEqual([0x00, 0x20, 0x00, 0x80, 0x90, 0x00]);
    expect(events.some((e) => e.type === "responder-error")).toBe(true);
  });

  it("announces a fixed ATR without powering the card on", async () => {
    const fixed = Uint8Array.of(0x3b, 0x02, 0x14, 0x50);
    const { vpcd, card } = await setup({ atr: fixed });
    vpcd.send(Uint8Array.of(4));
    expect(Uint8Array.from(await vpcd.receive())).toEqual(fixed);
    expect(card.calls).toEqual([]);
  });

  it("removes the card on stop: vpcd sees the connection end, `ended` says stopped", async () => {
    const { vpcd, bridge, events } = await setup();
    const closed = once(vpcd.current, "end");
    await bridge.stop(200);
    await closed;
    expect(await bridge.ended).toEqual({ reason: "stopped" });
    expect(bridge.connected).toBe(false);
    expect(events.at(-1)).toEqual({ type: "stopped", reason: "stopped" });
  });

  it("reconnects (re-inserts) after vpcd drops the connection, boundedly", async () => {
    const { vpcd, events } = await setup({ reconnectAttempts: 3 });
    vpcd.current.destroy();
    await vpcd.connection(2);
    expect(events.filter((e) => e.type === "connected")).toHaveLength(2);
    expect(events.some((e) => e.type === "disconnected" && e.reason === "closed-by-peer")).toBe(true);
  });

  it("stops as lost when vpcd goes away for good", async () => {
    const { vpcd, bridge } = await setup({ reconnectAttempts: 2 });
    await vpcd.close();
    const end = await bridge.ended;
    expect(end.reason).toBe("lost");
    expect(end.reason === "lost" && end.error).toBeInstanceOf(VpcdConnectError);
  });

  it("does not reconnect when told not to", async () => {
    const { vpcd, bridge } = await setup({ reconnectAttempts: 0 });
    vpcd.current.destroy();
    const end = await bridge.ended;
    expect(end.reason).toBe("lost");
  });

  it("fails with a clear VpcdConnectError (exit 10) when nothing listens", async () => {
    const probe = new FakeVpcd();
    await probe.listen();
    const port = probe.port;
    await probe.close();
    const bridge = new VpcdBridge({ responder: new EchoCard(), port, connectAttempts: 2, retryDelayMs: 10 });
    const started = Date.now();
    const error = await bridge.start().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VpcdConnectError);
    expect((error as VpcdConnectError).exitCode).toBe(10);
    expect((error as Error).message).toMatch(
      new RegExp(`cannot reach vpcd at 127\\.0\\.0\\.1:${port} \\(connection refused\\) after 2 attempts`),
    );
    expect(Date.now() - started).toBeLessThan(2000);
    expect((await bridge.ended).reason).toBe("lost");
  });
});

describe("parseVpcdAddress", () => {
  it.each([
    ["127.0.0.1:35963", { host: "127.0.0.1", port: 35963 }],
    ["localhost", { host: "localhost", port: 35963 }],
    [":40000", { host: "127.0.0.1", port: 40000 }],
    ["[::1]:35964", { host: "::1", port: 35964 }],
  ])("%s", (text, expected) => {
    expect(parseVpcdAddress(text)).toEqual(expected);
  });

  it.each(["host:0", "host:70000", "a:b:c", "host:port"])("rejects %s", (text) => {
    expect(() => parseVpcdAddress(text)).toThrow(RangeError);
  });
});
