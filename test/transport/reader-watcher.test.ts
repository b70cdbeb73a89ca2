import { afterEach, describe, expect, it } from "vitest";
import { NoCardError } from "../../src/errors.js";
import { PcscError } from "../../src/transport/pcsc-binding.js";
import { type ReaderEvent, ReaderWatcher, WaitTimeoutError } from "../../src/transport/reader-watcher.js";
import { fakeBinding } from "./fake-pcsclite.js";

const ATR = Uint8Array.from([0x3b, 0x81, 0x80, 0x01, 0x80, 0x80]);
const CONTACT_ATR = Uint8Array.from(Buffer.from("3BF81300008131FE454A434F5076323431B7", "hex"));

const watchers: ReaderWatcher[] = [];
async function open(...args: Parameters<typeof fakeBinding>) {
  const fake = fakeBinding(...args);
  const watcher = await ReaderWatcher.open({ binding: fake.factory, readyTimeoutMs: 1000 });
  watchers.push(watcher);
  return { watcher, fake: fake.instances[0]! };
}

function collect(watcher: ReaderWatcher): ReaderEvent[] {
  const seen: ReaderEvent[] = [];
  watcher.on("event", (e) => seen.push(e));
  return seen;
}

afterEach(() => {
  for (const w of watchers.splice(0)) w.close();
});

describe("ReaderWatcher", () => {
  it("opens with no reader at all and times out waiting for a card with NoCardError", async () => {
    const { watcher } = await open([]);
    expect(watcher.readers()).toEqual([]);
    const started = Date.now();
    const error = await watcher.waitForCard({ timeoutMs: 50 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NoCardError);
    expect((error as NoCardError).exitCode).toBe(10);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it("resolves at once for a card that was already in the reader (racked with the card inserted)", async () => {
    const { watcher } = await open(["Virtual PCD 00 00"], (f) =>
      f.prepare("Virtual PCD 00 00").insert({ atr: ATR }),
    );
    expect(watcher.present()).toHaveLength(1);
    const card = await watcher.waitForCard({ timeoutMs: 10 });
    expect(card.reader).toBe("Virtual PCD 00 00");
    expect(card.atr).toEqual(ATR);
    expect(card.contactless).toBe(true);
  });

  it("reports insertion and removal, and waits for both", async () => {
    const { watcher, fake } = await open(["Virtual PCD 00 00", "Virtual PCD 00 01"]);
    const seen = collect(watcher);
    const waiting = watcher.waitForCard({ reader: "00 01", timeoutMs: 2000 });
    fake.reader("Virtual PCD 00 00").insert({ atr: CONTACT_ATR }); // not the reader we wait for
    fake.reader("Virtual PCD 00 01").insert({ atr: ATR });
    const card = await waiting;
    expect(card.reader).toBe("Virtual PCD 00 01");
    const removal = watcher.waitForRemoval({ reader: "00 01", timeoutMs: 2000 });
    fake.reader("Virtual PCD 00 01").remove();
    await removal;
    expect(seen.map((e) => `${e.type} ${e.reader}`)).toEqual([
      "card-inserted Virtual PCD 00 00",
      "card-inserted Virtual PCD 00 01",
      "card-removed Virtual PCD 00 01",
    ]);
    const contact = seen[0];
    expect(contact?.type === "card-inserted" && contact.contactless).toBe(false);
  });

  it("sees a card pulled and re-inserted between two status reads", async () => {
    const { watcher, fake } = await open(["R"], (f) => f.prepare("R").insert({ atr: ATR }));
    const seen = collect(watcher);
    fake.reader("R").swap({ atr: CONTACT_ATR });
    await watcher.waitForCard({ timeoutMs: 10 }); // present throughout
    await new Promise((r) => setTimeout(r, 20));
    expect(seen.map((e) => e.type)).toEqual(["card-removed", "card-inserted"]);
  });

  it("reports readers plugged in and pulled out, with the card that went with one", async () => {
    const { watcher, fake } = await open([]);
    const seen = collect(watcher);
    fake.setReaders(["USB Reader 00 00"]);
    const card = watcher.waitForCard({ timeoutMs: 2000 });
    await new Promise((r) => setTimeout(r, 20));
    fake.reader("USB Reader 00 00").insert({ atr: ATR });
    await card;
    fake.setReaders([]);
    await watcher.waitForRemoval({ timeoutMs: 2000 });
    await new Promise((r) => setTimeout(r, 20));
    expect(seen.map((e) => e.type)).toEqual([
      "reader-added",
      "card-inserted",
      "card-removed",
      "reader-removed",
    ]);
    expect(watcher.readers()).toEqual([]);
  });

  it("reports a mute card without calling it inserted", async () => {
    const { watcher, fake } = await open(["R"]);
    const seen = collect(watcher);
    fake.reader("R").insert({ atr: ATR, mute: true });
    await new Promise((r) => setTimeout(r, 20));
    expect(seen.map((e) => e.type)).toEqual(["card-mute"]);
    expect(watcher.present()).toEqual([]);
  });

  it("stops waiting on abort with the signal's reason", async () => {
    const { watcher } = await open(["R"]);
    const controller = new AbortController();
    const waiting = watcher.waitForCard({ timeoutMs: 10_000, signal: controller.signal });
    controller.abort(new Error("operator cancelled"));
    await expect(waiting).rejects.toThrow("operator cancelled");
    await expect(watcher.waitForCard({ timeoutMs: 10, signal: controller.signal })).rejects.toThrow(
      "operator cancelled",
    );
  });

  it("refuses an unbounded wait without a signal", async () => {
    const { watcher } = await open(["R"]);
    await expect(watcher.waitForCard({ timeoutMs: Number.POSITIVE_INFINITY })).rejects.toThrow(RangeError);
  });

  it("times out waiting for removal with WaitTimeoutError", async () => {
    const { watcher } = await open(["R"], (f) => f.prepare("R").insert({ atr: ATR }));
    await expect(watcher.waitForRemoval({ timeoutMs: 30 })).rejects.toBeInstanceOf(WaitTimeoutError);
  });

  it("iterates events until closed", async () => {
    const { watcher, fake } = await open(["R"]);
    const iterator = watcher.events();
    fake.reader("R").insert({ atr: ATR });
    const first = await iterator.next();
    expect(first.value).toMatchObject({ type: "card-inserted", reader: "R" });
    fake.reader("R").remove();
    expect((await iterator.next()).value).toMatchObject({ type: "card-removed" });
    const pending = iterator.next();
    watcher.close();
    expect(await pending).toEqual({ value: undefined, done: true });
  });

  it("ends iteration on abort and on return()", async () => {
    const { watcher } = await open(["R"]);
    const controller = new AbortController();
    const iterator = watcher.events({ signal: controller.signal });
    const pending = iterator.next();
    controller.abort();
    expect((await pending).done).toBe(true);
    const other = watcher.events();
    await other.return?.();
    expect((await other.next()).done).toBe(true);
  });

  it("fails pending waits and iterators when pcscd goes away", async () => {
    const { watcher, fake } = await open(["R"]);
    const errors: unknown[] = [];
    watcher.on("error", (e) => errors.push(e));
    const iterator = watcher.events();
    const next = iterator.next();
    const waiting = watcher.waitForCard({ timeoutMs: 5000 });
    fake.loseService();
    const error = await waiting.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PcscError);
    expect((error as PcscError).exitCode).toBe(10);
    await expect(next).rejects.toBeInstanceOf(PcscError);
    expect(errors.length).toBeGreaterThanOrEqual(1);
    expect(watcher.isClosed).toBe(true);
    await expect(watcher.waitForCard({ timeoutMs: 10 })).rejects.toBeInstanceOf(PcscError);
  });

  it("can be closed from inside an event handler (the binding holds the reader's lock there)", async () => {
    const { watcher, fake } = await open(["R"]);
    const reader = fake.reader("R");
    const closedInHandler = new Promise<void>((resolve) => {
      watcher.once("card-inserted", () => {
        watcher.close();
        resolve();
      });
    });
    reader.insert({ atr: ATR });
    await closedInHandler;
    await new Promise((r) => setTimeout(r, 20));
    expect(reader.closed).toBe(true);
    expect(fake.closed).toBe(true);
  });

  it("does not crash when pcscd goes away and nobody listens for errors", async () => {
    const { watcher, fake } = await open(["R"]);
    fake.loseService();
    await new Promise((r) => setTimeout(r, 20));
    expect(watcher.isClosed).toBe(true);
  });

  it("gives up on a binding that never delivers its reader list", async () => {
    const fake = fakeBinding(["R"], (f) => {
      f.deliverLists = false;
    });
    await expect(ReaderWatcher.open({ binding: fake.factory, readyTimeoutMs: 50 })).rejects.toBeInstanceOf(
      PcscError,
    );
    await new Promise((r) => setImmediate(r));
    expect(fake.instances[0]?.closed).toBe(true);
  });

  it("maps a missing pcscd at open to a PcscError with exit 10", async () => {
    const factory = () => {
      throw new Error("SCardEstablishContext error: Service not available.(0x8010001D)");
    };
    const error = await ReaderWatcher.open({ binding: factory }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PcscError);
    expect((error as PcscError).exitCode).toBe(10);
    expect((error as PcscError).message).toMatch(/pcscd/);
  });
});
