import { afterEach, describe, expect, it, vi } from "vitest";
import { NoCardError } from "../../src/errors.js";
import {
  CardRemovedError,
  PCSC_MAX_BUFFER_EXTENDED,
  PcscError,
  SCARD_LEAVE_CARD,
  SCARD_PROTOCOL_T0,
  SCARD_PROTOCOL_T1,
  SCARD_RESET_CARD,
  SCARD_SHARE_EXCLUSIVE,
  SCARD_SHARE_SHARED,
} from "../../src/transport/pcsc-binding.js";
import { PcscTransport } from "../../src/transport/pcsc-transport.js";
import { ReaderWatcher } from "../../src/transport/reader-watcher.js";
import { type FakeReader, fakeBinding } from "./fake-pcsclite.js";

const ATR = Uint8Array.from(Buffer.from("3BF81300008131FE454A434F5076323431B7", "hex"));
const SELECT = Uint8Array.from([0x00, 0xa4, 0x04, 0x00, 0x05, 0xa0, 0x00, 0x00, 0x03, 0x08]);

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function openWithCard(
  card: Parameters<FakeReader["insert"]>[0] = { atr: ATR },
  names = ["Virtual PCD 00 00"],
) {
  const fake = fakeBinding(names, (f) => f.prepare(names[0]!).insert(card));
  const transport = await PcscTransport.open({ binding: fake.factory, reader: "virtual pcd" });
  cleanups.push(() => transport.close());
  return { transport, fake: fake.instances[0]!, reader: fake.instances[0]!.reader(names[0]!) };
}

describe("PcscTransport", () => {
  it("connects SHARED with T=0|T=1 and reports reader, ATR, protocol, contact interface", async () => {
    const { transport, reader } = await openWithCard();
    expect(reader.lastConnect).toEqual({
      share_mode: SCARD_SHARE_SHARED,
      protocol: SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1,
    });
    expect(transport.readerName).toBe("Virtual PCD 00 00");
    expect(transport.atr).toEqual(ATR);
    expect(transport.protocol).toBe("T1");
    expect(transport.contactless).toBe(false);
  });

  it("transmits with an extended-length receive buffer and the negotiated protocol", async () => {
    const { transport, reader } = await openWithCard({
      atr: ATR,
      transmit: (c) => Buffer.concat([c.subarray(0, 4), Buffer.from([0x90, 0x00])]),
    });
    const response = await transport.transmit(SELECT);
    expect(response).toEqual(Uint8Array.from([0x00, 0xa4, 0x04, 0x00, 0x90, 0x00]));
    expect(reader.transmits[0]?.responseLength).toBe(PCSC_MAX_BUFFER_EXTENDED);
    expect(PCSC_MAX_BUFFER_EXTENDED).toBeGreaterThanOrEqual(65536 + 2);
    expect(reader.transmits[0]?.protocol).toBe(SCARD_PROTOCOL_T1);
  });

  it("keeps concurrent transmits in order", async () => {
    let n = 0;
    const { transport } = await openWithCard({ atr: ATR, transmit: () => Buffer.from([n++, 0x90, 0x00]) });
    const answers = await Promise.all([1, 2, 3, 4].map(() => transport.transmit(SELECT)));
    expect(answers.map((a) => a[0])).toEqual([0, 1, 2, 3]);
  });

  it("turns a pulled card into CardRemovedError (exit 10)", async () => {
    const { transport, reader } = await openWithCard();
    reader.remove();
    const error = await transport.transmit(SELECT).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CardRemovedError);
    expect((error as CardRemovedError).exitCode).toBe(10);
    expect((error as CardRemovedError).readerName).toBe("Virtual PCD 00 00");
  });

  it("turns other failures into PcscError with the pcsc-lite code", async () => {
    const { transport } = await openWithCard({
      atr: ATR,
      transmit: () => {
        throw new Error("SCardTransmit error: Transaction failed.(0x80100016)");
      },
    });
    const error = await transport.transmit(SELECT).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PcscError);
    expect((error as PcscError).scardCode).toBe(0x80100016);
    expect((error as PcscError).exitCode).toBe(1);
  });

  it("rejects a response without a status word and out-of-range commands", async () => {
    const { transport } = await openWithCard({ atr: ATR, transmit: () => Buffer.from([0x90]) });
    await expect(transport.transmit(SELECT)).rejects.toThrow(/status word/);
    await expect(transport.transmit(Uint8Array.of(0, 0xa4))).rejects.toThrow(/out of range/);
    await expect(transport.transmit(new Uint8Array(PCSC_MAX_BUFFER_EXTENDED + 1))).rejects.toThrow(
      /out of range/,
    );
  });

  it("resets the card on close by default, once, and refuses to transmit afterwards", async () => {
    const { transport, reader } = await openWithCard();
    await Promise.all([transport.close(), transport.close()]);
    expect(reader.disconnects).toEqual([SCARD_RESET_CARD]);
    await expect(transport.transmit(SELECT)).rejects.toThrow(/closed/);
  });

  it("honours exclusive mode, a fixed protocol and leave-card", async () => {
    const fake = fakeBinding(["R"], (f) => {
      const r = f.prepare("R");
      r.insert({ atr: ATR });
      r.protocol = SCARD_PROTOCOL_T0;
    });
    const transport = await PcscTransport.open({
      binding: fake.factory,
      exclusive: true,
      protocol: "T0",
      disposition: "leave",
    });
    const reader = fake.instances[0]!.reader("R");
    expect(transport.protocol).toBe("T0");
    expect(reader.lastConnect).toEqual({ share_mode: SCARD_SHARE_EXCLUSIVE, protocol: SCARD_PROTOCOL_T0 });
    await transport.close();
    expect(reader.disconnects).toEqual([SCARD_LEAVE_CARD]);
  });

  it("closes its own context on close", async () => {
    const { transport, fake } = await openWithCard();
    await transport.close();
    await new Promise((r) => setImmediate(r));
    expect(fake.closed).toBe(true);
  });

  it("says which readers exist when none matches, and which are empty", async () => {
    const fake = fakeBinding(["Virtual PCD 00 00", "Virtual PCD 00 01"]);
    const none = await PcscTransport.open({ binding: fake.factory, reader: "Yubico" }).catch(
      (e: unknown) => e,
    );
    expect(none).toBeInstanceOf(NoCardError);
    expect((none as Error).message).toMatch(
      /no reader matching "Yubico" \(readers: "Virtual PCD 00 00", "Virtual PCD 00 01"\)/,
    );
    const empty = await PcscTransport.open({ binding: fake.factory, reader: "00 01" }).catch(
      (e: unknown) => e,
    );
    expect(empty).toBeInstanceOf(NoCardError);
    expect((empty as Error).message).toBe('no card in "Virtual PCD 00 01"');
    await new Promise((r) => setImmediate(r));
    expect(fake.instances.every((f) => f.closed)).toBe(true);
  });

  it("maps a failed SCardConnect to CardRemovedError when the card went away meanwhile", async () => {
    const fake = fakeBinding(["R"], (f) => {
      const r = f.prepare("R");
      r.insert({ atr: ATR });
      r.connectError = new Error("SCardConnect error: Card was removed.(0x80100069)");
    });
    await expect(PcscTransport.open({ binding: fake.factory })).rejects.toBeInstanceOf(CardRemovedError);
  });

  it("connects through a watcher that keeps its context after the transport closes", async () => {
    const fake = fakeBinding(["R"], (f) => f.prepare("R").insert({ atr: ATR }));
    const watcher = await ReaderWatcher.open({ binding: fake.factory });
    cleanups.push(() => watcher.close());
    const transport = await watcher.connect();
    await transport.transmit(SELECT);
    await transport.close();
    expect(fake.instances[0]?.closed).toBe(false);
    expect(watcher.present()).toHaveLength(1);
  });
});

describe("loadPcscBinding", () => {
  it("reports a missing native module as PcscUnavailableError", async () => {
    vi.resetModules();
    vi.doMock("pcsclite", () => {
      throw new Error("Cannot find module 'pcsclite'");
    });
    try {
      const pcsc = await import("../../src/transport/pcsc-binding.js");
      const error = await pcsc.loadPcscBinding().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(pcsc.PcscUnavailableError);
      expect((error as Error).message).toMatch(/pcsclite/);
      expect((error as { code: string }).code).toBe("ERR_PCSC_UNAVAILABLE");
    } finally {
      vi.doUnmock("pcsclite");
      vi.resetModules();
    }
  });
});
