/**
 * The real PC/SC stack: a private pcscd with vpcd (src/sim/pcscd.ts), the vpcd bridge with a test
 * card in this process, and src/transport in a child process (libpcsclite reads
 * PCSCLITE_CSOCK_NAME once per process). pcscd's own view is checked with opensc-tool.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { VpcdBridge, type VpcdBridgeEvent } from "../../src/card-emulator/vpcd-bridge.js";
import { type PrivatePcscd, startPrivatePcscd } from "../../src/sim/pcscd.js";
import type { ApduResponder } from "../../src/transport/apdu-responder.js";
import {
  buildForChildren,
  command,
  median,
  type NodeChild,
  nowMs,
  type PrivateBuild,
  pcscClientLauncher,
  pcscE2eCapability,
  requireOrSkip,
  runTool,
  toolAvailable,
} from "../helpers/pcsc-env.js";

const cap = requireOrSkip(pcscE2eCapability());

/** PIV AID (SP 800-73-4 §2.2): SELECT 00 A4 04 00 09 A0 00 00 03 08 00 00 10 00 */
const SELECT_PIV = "00A4040009A0000003080000100000";
const CONTACT_ATR = Uint8Array.from(Buffer.from("3BF81300008131FE454A434F5076323431B7", "hex"));
const CONTACTLESS_ATR = Uint8Array.from([0x3b, 0x81, 0x80, 0x01, 0x80, 0x80]);

/** Test card: SELECT → 9000, anything else → its command data echoed ‖ 9000. */
class TestCard implements ApduResponder {
  readonly log: string[] = [];
  constructor(private readonly atr: Uint8Array = CONTACT_ATR) {}
  powerOn(): Uint8Array {
    this.log.push("power-on");
    return this.atr;
  }
  powerOff(): void {
    this.log.push("power-off");
  }
  transmit(command: Uint8Array): Uint8Array {
    if (command[1] === 0xa4) return Uint8Array.of(0x90, 0x00);
    const lc = command.length > 5 ? command[4]! : 0;
    return Uint8Array.from([...command.subarray(5, 5 + lc), 0x90, 0x00]);
  }
}

const figures: Record<string, unknown> = {};

describe.skipIf(!cap.ok)(
  `PC/SC end to end (pcscd + vpcd)${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let build: PrivateBuild;
    let launchClient: Awaited<ReturnType<typeof pcscClientLauncher>>;
    const cleanups: (() => Promise<unknown>)[] = [];

    beforeAll(async () => {
      build = await buildForChildren(["transport/reader-watcher.js", "transport/pcsc-transport.js"]);
      launchClient = await pcscClientLauncher(build);
    });

    afterEach(async () => {
      // Reverse order: clients, then bridges, then pcscd; each step runs even if one fails.
      for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
    });

    afterAll(async () => {
      await build?.cleanup();
      if (Object.keys(figures).length > 0) console.info(`PC/SC e2e figures: ${JSON.stringify(figures)}`);
    });

    async function pcscd(options: Parameters<typeof startPrivatePcscd>[0] = {}): Promise<PrivatePcscd> {
      const p = await startPrivatePcscd(options);
      cleanups.push(() => p.stop());
      return p;
    }

    function client(p: PrivatePcscd): NodeChild {
      const c = launchClient(p.env);
      cleanups.push(() => c.stop());
      return c;
    }

    function bridge(
      p: PrivatePcscd,
      card: ApduResponder,
      options: Partial<ConstructorParameters<typeof VpcdBridge>[0]> = {},
    ) {
      const b = new VpcdBridge({ responder: card, port: p.vpcdPort, retryDelayMs: 100, ...options });
      const events: (VpcdBridgeEvent & { t: number })[] = [];
      b.on("event", (e) => events.push({ ...e, t: nowMs() }));
      cleanups.push(() => b.stop(500));
      return { bridge: b, events };
    }

    it("sees the reader, the insertion, a SELECT and the removal; pcscd's own view agrees", async () => {
      const p = await pcscd();
      const c = client(p);
      const ready = await c.waitForEvent("ready", 5000);
      expect(ready.message.readers).toEqual([p.readerName, p.slots[1]?.readerName]);
      expect(ready.message.present).toEqual([]);

      if (toolAvailable("opensc-tool")) {
        const list = await runTool("opensc-tool", ["-l"], p.env);
        expect(list.stdout).toMatch(/\bNo\s+Virtual PCD 00 00/);
      }

      const card = new TestCard();
      const { bridge: b, events } = bridge(p, card);
      await b.start();
      const connectedAt = events.find((e) => e.type === "connected")!.t;
      const inserted = await c.waitForEvent("card-inserted", 3000);
      expect(inserted.message).toMatchObject({
        reader: p.readerName,
        atr: Buffer.from(CONTACT_ATR).toString("hex").toUpperCase(),
        contactless: false,
      });
      const insertionMs = (inserted.message.t as number) - connectedAt;

      c.send(command("connect", { reader: p.readerName }));
      const connected = await c.waitForEvent("connected", 3000);
      expect(connected.message.protocol).toBe("T1");
      c.send(command("transmit", { apdu: SELECT_PIV, count: 10 }));
      const selected = await c.waitForEvent("transmitted", 5000);
      expect(selected.message.responses).toEqual(["9000"]);
      c.send(command("transmit", { apdu: "00CB3FFF055C035FC10500", count: 1 }));
      const echoed = await c.waitForEvent("transmitted", 5000, selected.index + 1);
      expect(echoed.message.responses).toEqual(["5C035FC1059000"]);
      c.send(command("close"));
      await c.waitForEvent("closed", 3000);
      // Disconnecting resets the card so that a verified PIN does not outlive the session.
      expect(card.log.filter((l) => l === "power-on").length).toBeGreaterThanOrEqual(2);

      if (toolAvailable("opensc-tool")) {
        const list = await runTool("opensc-tool", ["-l"], p.env);
        expect(list.stdout).toMatch(/\bYes\s+Virtual PCD 00 00/);
        const atr = await runTool("opensc-tool", ["-r", "0", "-a"], p.env);
        expect(atr.stdout.replace(/:/g, "").toUpperCase()).toContain(
          Buffer.from(CONTACT_ATR).toString("hex").toUpperCase(),
        );
        const apdu = await runTool("opensc-tool", ["-r", "0", "-s", SELECT_PIV], p.env);
        expect(apdu.stdout).toMatch(/SW1=0x90, SW2=0x00/);
      }

      const stopAt = nowMs();
      await b.stop();
      const removed = await c.waitForEvent("card-removed", 3000);
      const removalMs = (removed.message.t as number) - stopAt;
      c.send(command("exit"));
      // The watcher releases every handle: the child ends on its own.
      expect(await c.exitCode(5000)).toBe(0);

      const times = selected.message.times as number[];
      figures.insertionDetectedMs = Math.round(insertionMs);
      figures.removalDetectedMs = Math.round(removalMs);
      figures.selectRoundTripMedianMs = Number(median(times)?.toFixed(2));
      expect(insertionMs).toBeLessThan(3000);
      expect(removalMs).toBeLessThan(3000);
    });

    it("finds a card that was inserted before the watcher started, and times out on an empty reader", async () => {
      const p = await pcscd();
      const { bridge: b } = bridge(p, new TestCard(CONTACTLESS_ATR));
      await b.start();
      // Wait (bounded) until pcscd itself reports the card, before the client starts.
      const started = Date.now();
      for (let i = 0; i < 40; i++) {
        const list = await runTool("opensc-tool", ["-l"], p.env);
        if (/\bYes\s+Virtual PCD 00 00/.test(list.stdout)) break;
        if (Date.now() - started > 4000) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const c = client(p);
      const ready = await c.waitForEvent("ready", 5000);
      expect(ready.message.present).toEqual([p.readerName]);
      c.send(command("wait", { reader: "00 00", timeoutMs: 2000 }));
      const card = await c.waitForEvent("card", 3000);
      expect(card.message.waitedMs as number).toBeLessThan(50);
      expect(card.message.contactless).toBe(true);
      figures.alreadyPresentWaitMs = Number((card.message.waitedMs as number).toFixed(2));

      c.send(command("wait", { reader: "00 01", timeoutMs: 300 }));
      const failed = await c.waitForEvent("failed", 3000);
      expect(failed.message).toMatchObject({ cmd: "wait", code: "ERR_NO_CARD", exitCode: 10 });
      expect(failed.message.message).toMatch(/no card in a reader matching "00 01"/);
    });

    it("reports a card pulled in the middle of a session as CardRemovedError", async () => {
      const p = await pcscd();
      const c = client(p);
      await c.waitForEvent("ready", 5000);
      const { bridge: b } = bridge(p, new TestCard());
      await b.start();
      c.send(command("wait", { timeoutMs: 3000 }));
      await c.waitForEvent("card", 4000);
      c.send(command("connect", {}));
      await c.waitForEvent("connected", 3000);
      c.send(command("loop", { apdu: SELECT_PIV, max: 500 }));
      await c.waitForEvent("loop-running", 3000);
      await b.stop();
      const ended = await c.waitForEvent("loop-ended", 5000);
      expect(ended.message.error).toMatchObject({ code: "ERR_CARD_REMOVED", exitCode: 10 });
      await c.waitForEvent("card-removed", 3000);
    });

    it("survives a pcscd restart: the watcher fails with exit 10, a new one sees the card again", async () => {
      const p = await pcscd();
      const c = client(p);
      await c.waitForEvent("ready", 5000);
      const { bridge: b, events } = bridge(p, new TestCard(), { reconnectAttempts: 40 });
      await b.start();
      await c.waitForEvent("card-inserted", 3000);
      await p.restart();
      const lost = await c.waitForEvent("watcher-error", 5000);
      expect(lost.message).toMatchObject({ code: "ERR_PCSC_NO_SERVICE", exitCode: 10 });
      c.send(command("reopen", { attempts: 30, delayMs: 100 }));
      const reopened = await c.waitForEvent("reopened", 5000);
      // The bridge came back on its own (bounded reconnect); the card is there or arrives shortly.
      if (!(reopened.message.present as string[]).includes(p.readerName)) {
        await c.waitForEvent("card-inserted", 3000, reopened.index);
      }
      expect(events.filter((e) => e.type === "connected").length).toBeGreaterThanOrEqual(2);
      c.send(command("connect", {}));
      await c.waitForEvent("connected", 3000);
      c.send(command("transmit", { apdu: SELECT_PIV }));
      const ok = await c.waitForEvent("transmitted", 3000);
      expect(ok.message.responses).toEqual(["9000"]);
    });
  },
);
