import { describe, expect, it } from "vitest";
import {
  type ApduProcessor,
  DEFAULT_MAX_RESPONSE_CHUNKS,
  ResponseChainingError,
  SmartCardProtocol,
} from "../../src/apdu/chaining.js";
import { decodeCommandApdu } from "../../src/apdu/command.js";
import { BadResponseError, encodeResponseApdu } from "../../src/apdu/response.js";
import {
  ApduError,
  ClaNotSupportedError,
  ConditionsNotSatisfiedError,
  FunctionNotSupportedError,
  IncorrectDataError,
  IncorrectParametersError,
  InsNotSupportedError,
  NotFoundError,
  ReferenceNotFoundError,
  SecurityStatusError,
  statusError,
  UnknownStatusError,
  WrongLengthError,
} from "../../src/apdu/status-words.js";
import {
  CardFullError,
  ExitCode,
  isOnboardError,
  MalformedError,
  PinBlockedError,
  WrongPinError,
} from "../../src/errors.js";
import type { CardTransport } from "../../src/transport/card-transport.js";

/** A transport whose card is a function; records every command APDU. */
class ScriptedTransport implements CardTransport {
  readonly atr = Uint8Array.of(0x3b, 0x00);
  readonly contactless = false;
  readonly readerName = "scripted";
  readonly sent: Uint8Array[] = [];
  constructor(private readonly card: (apdu: Uint8Array, index: number) => Uint8Array) {}
  async transmit(command: Uint8Array): Promise<Uint8Array> {
    this.sent.push(command.slice());
    return this.card(command, this.sent.length - 1);
  }
  async close(): Promise<void> {}
}

const r = (data: Uint8Array | number[], sw: number) => encodeResponseApdu(Uint8Array.from(data), sw);

describe("status words → typed errors", () => {
  it.each([
    [0x63c2, WrongPinError],
    [0x6983, PinBlockedError],
    [0x6a84, CardFullError],
    [0x6982, SecurityStatusError],
    [0x6a82, NotFoundError],
    [0x6a88, ReferenceNotFoundError],
    [0x6700, WrongLengthError],
    [0x6a80, IncorrectDataError],
    [0x6a81, FunctionNotSupportedError],
    [0x6a86, IncorrectParametersError],
    [0x6b00, IncorrectParametersError],
    [0x6985, ConditionsNotSatisfiedError],
    [0x6d00, InsNotSupportedError],
    [0x6e00, ClaNotSupportedError],
    [0x6f00, UnknownStatusError],
    [0x6a83, UnknownStatusError],
  ])("%s", (sw, type) => {
    const e = statusError(sw);
    expect(e).toBeInstanceOf(type);
    if (e instanceof ApduError) expect(e.sw).toBe(sw);
  });

  it("carries the tries left of 63Cx", () => {
    const e = statusError(0x63c1) as WrongPinError;
    expect(e.triesLeft).toBe(1);
    expect(e.exitCode).toBe(ExitCode.wrongPin);
    expect((statusError(0x6a84) as CardFullError).exitCode).toBe(ExitCode.cardFull);
    expect((statusError(0x6983) as PinBlockedError).exitCode).toBe(ExitCode.pinBlocked);
  });

  it("makes every status word it does not know an integrity failure (exit 15), never an internal one", () => {
    const known = new Set([
      0x6982, 0x6a82, 0x6a88, 0x6700, 0x6a80, 0x6a81, 0x6a86, 0x6b00, 0x6985, 0x6d00, 0x6e00,
    ]);
    let unknown = 0;
    for (let sw = 0x0000; sw <= 0xffff; sw++) {
      if (sw === 0x9000) continue;
      const e = statusError(sw);
      expect(isOnboardError(e)).toBe(true);
      if ((sw & 0xfff0) === 0x63c0) expect(e).toBeInstanceOf(WrongPinError);
      else if (sw === 0x6983) expect(e).toBeInstanceOf(PinBlockedError);
      else if (sw === 0x6a84) expect(e).toBeInstanceOf(CardFullError);
      else if (known.has(sw)) {
        expect(e).toBeInstanceOf(ApduError);
        expect(e).not.toBeInstanceOf(UnknownStatusError);
        expect(e.exitCode).toBe(ExitCode.internal);
      } else {
        unknown++;
        expect(e).toBeInstanceOf(UnknownStatusError);
        expect(e.code).toBe("ERR_UNKNOWN_STATUS");
        expect(e.exitCode).toBe(ExitCode.integrity);
        expect((e as UnknownStatusError).sw).toBe(sw);
      }
    }
    expect(unknown).toBe(0x10000 - 1 - 16 - 1 - 1 - known.size);
  });

  it("sendApdu is where a non-9000 becomes an error", async () => {
    const t = new ScriptedTransport(() => r([], 0x63c2));
    const p = new SmartCardProtocol(t);
    await expect(p.transmit({ cla: 0, ins: 0x20, p1: 0, p2: 0x80 })).resolves.toEqual({
      data: new Uint8Array(0),
      sw: 0x63c2,
    });
    await expect(p.sendApdu({ cla: 0, ins: 0x20, p1: 0, p2: 0x80 })).rejects.toThrow(WrongPinError);
  });
});

describe("command chaining", () => {
  it("splits short commands into 255-byte blocks with CLA|10", async () => {
    const t = new ScriptedTransport(() => r([], 0x9000));
    const p = new SmartCardProtocol(t);
    const data = Uint8Array.from({ length: 600 }, (_, i) => i & 0xff);
    await p.sendApdu({ cla: 0, ins: 0xdb, p1: 0x3f, p2: 0xff, data });
    const blocks = t.sent.map((a) => decodeCommandApdu(a));
    expect(blocks.map((b) => b.cla)).toEqual([0x10, 0x10, 0x00]);
    expect(blocks.map((b) => b.data.length)).toEqual([255, 255, 90]);
    expect(Buffer.concat(blocks.map((b) => b.data))).toEqual(Buffer.from(data));
    expect(blocks.every((b) => !b.extended)).toBe(true);
  });

  it("sends one extended APDU when the card takes them", async () => {
    const t = new ScriptedTransport(() => r([], 0x9000));
    const p = new SmartCardProtocol(t, { format: "extended", maxApduSize: 3062 });
    await p.sendApdu({ cla: 0, ins: 0xdb, p1: 0x3f, p2: 0xff, data: new Uint8Array(3000) });
    expect(t.sent).toHaveLength(1);
    expect(decodeCommandApdu(t.sent[0]!)).toMatchObject({ extended: true, cla: 0 });
    // Larger than the card's APDU size: extended blocks, chained.
    t.sent.length = 0;
    await p.sendApdu({ cla: 0, ins: 0xdb, p1: 0x3f, p2: 0xff, data: new Uint8Array(4000) });
    expect(t.sent.map((a) => decodeCommandApdu(a).cla)).toEqual([0x10, 0x00]);
    // Small commands stay short even in extended mode.
    t.sent.length = 0;
    await p.sendApdu({ cla: 0, ins: 0x20, p1: 0, p2: 0x80, data: new Uint8Array(8) });
    expect(decodeCommandApdu(t.sent[0]!).extended).toBe(false);
  });

  it("stops at the first block the card refuses", async () => {
    const t = new ScriptedTransport((_a, i) => (i === 1 ? r([], 0x6a84) : r([], 0x9000)));
    const p = new SmartCardProtocol(t);
    await expect(
      p.sendApdu({ cla: 0, ins: 0xdb, p1: 0x3f, p2: 0xff, data: new Uint8Array(1000) }),
    ).rejects.toThrow(CardFullError);
    expect(t.sent).toHaveLength(2);
  });
});

describe("response chaining (61xx / GET RESPONSE)", () => {
  it("reassembles a response and asks with the announced Le", async () => {
    const full = Uint8Array.from({ length: 700 }, (_, i) => i & 0xff);
    let offset = 0;
    const t = new ScriptedTransport((apdu) => {
      const c = decodeCommandApdu(apdu);
      if (offset > 0) expect(c.ins).toBe(0xc0);
      const n = Math.min(c.ins === 0xc0 ? (c.le ?? 256) : 256, full.length - offset);
      const chunk = full.subarray(offset, offset + n);
      offset += n;
      const left = full.length - offset;
      return r(chunk, left === 0 ? 0x9000 : 0x6100 | (Math.min(left, 256) & 0xff));
    });
    const p = new SmartCardProtocol(t);
    const data = await p.sendApdu({
      cla: 0,
      ins: 0xcb,
      p1: 0x3f,
      p2: 0xff,
      data: Uint8Array.of(0x5c, 0x01, 0x7e),
      le: 256,
    });
    expect(data).toEqual(full);
    expect(t.sent.map((a) => Buffer.from(a).toString("hex"))).toEqual([
      "00cb3fff035c017e00",
      "00c0000000",
      "00c00000bc",
    ]);
  });

  it("gives up on a card answering 61xx forever, within a bounded number of APDUs", async () => {
    const t = new ScriptedTransport(() => r([0xaa], 0x6101));
    const p = new SmartCardProtocol(t);
    await expect(p.sendApdu({ cla: 0, ins: 0xcb, p1: 0x3f, p2: 0xff, le: 256 })).rejects.toThrow(
      ResponseChainingError,
    );
    expect(t.sent.length).toBe(DEFAULT_MAX_RESPONSE_CHUNKS + 1);
  });

  it("gives up on a card answering 61xx without data", async () => {
    const t = new ScriptedTransport(() => r([], 0x6100));
    const p = new SmartCardProtocol(t, { maxResponseChunks: 10 });
    const e = await p.sendApdu({ cla: 0, ins: 0xcb, p1: 0x3f, p2: 0xff }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ResponseChainingError);
    expect(e).toBeInstanceOf(MalformedError);
    expect(t.sent.length).toBe(11);
  });

  it("bounds the total response size", async () => {
    const t = new ScriptedTransport(() => r(new Uint8Array(256), 0x6100));
    const p = new SmartCardProtocol(t, { maxResponseBytes: 4096 });
    await expect(p.sendApdu({ cla: 0, ins: 0xcb, p1: 0x3f, p2: 0xff })).rejects.toThrow(
      ResponseChainingError,
    );
    expect(t.sent.length).toBeLessThanOrEqual(4096 / 256 + 1);
    // A single oversized answer is refused too.
    const big = new ScriptedTransport(() => r(new Uint8Array(5000), 0x9000));
    await expect(
      new SmartCardProtocol(big, { maxResponseBytes: 4096 }).sendApdu({ cla: 0, ins: 0xcb, p1: 0, p2: 0 }),
    ).rejects.toThrow(ResponseChainingError);
  });

  it("retries once with the Le a 6Cxx names", async () => {
    const t = new ScriptedTransport((apdu) => {
      const c = decodeCommandApdu(apdu);
      return c.le === 5 ? r([1, 2, 3, 4, 5], 0x9000) : r([], 0x6c05);
    });
    const p = new SmartCardProtocol(t);
    await expect(p.sendApdu({ cla: 0, ins: 0xca, p1: 0, p2: 0, le: 256 })).resolves.toEqual(
      Uint8Array.of(1, 2, 3, 4, 5),
    );
    const endless = new ScriptedTransport(() => r([], 0x6c05));
    await expect(
      new SmartCardProtocol(endless).sendApdu({ cla: 0, ins: 0xca, p1: 0, p2: 0 }),
    ).rejects.toThrow(ResponseChainingError);
    expect(endless.sent).toHaveLength(2);
  });

  it("refuses a response without status word", async () => {
    const t = new ScriptedTransport(() => Uint8Array.of(0x90));
    await expect(new SmartCardProtocol(t).sendApdu({ cla: 0, ins: 0xfd, p1: 0, p2: 0 })).rejects.toThrow(
      BadResponseError,
    );
  });
});

describe("processor stack", () => {
  it("puts added processors on top (room for secure messaging)", async () => {
    const t = new ScriptedTransport((apdu) => r(apdu.subarray(1, 2), 0x9000));
    const p = new SmartCardProtocol(t);
    const seen: number[] = [];
    p.use(
      (next): ApduProcessor => ({
        async process(cmd) {
          seen.push(cmd.ins);
          // a "wrapping" layer: changes INS on the way down, unwraps on the way up
          const res = await next.process({ ...cmd, ins: cmd.ins ^ 0xff });
          return { data: res.data.map((b) => b ^ 0xff), sw: res.sw };
        },
      }),
    );
    await expect(p.sendApdu({ cla: 0, ins: 0x12, p1: 0, p2: 0, le: 256 })).resolves.toEqual(
      Uint8Array.of(0x12),
    );
    expect(seen).toEqual([0x12]);
  });

  it("serialises concurrent commands", async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const t: CardTransport = {
      atr: new Uint8Array(0),
      contactless: false,
      readerName: "slow",
      async transmit() {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await new Promise((res) => setTimeout(res, 2));
        inFlight--;
        return r([], 0x9000);
      },
      async close() {},
    };
    const p = new SmartCardProtocol(t);
    await Promise.all(
      Array.from({ length: 5 }, () =>
        p.sendApdu({ cla: 0, ins: 0xdb, p1: 0, p2: 0, data: new Uint8Array(600) }),
      ),
    );
    expect(maxInFlight).toBe(1);
  });
});
