import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  ApduLengthError,
  type CommandApdu,
  decodeCommandApdu,
  encodeCommandApdu,
} from "../../src/apdu/command.js";
import {
  BadResponseError,
  decodeResponseApdu,
  encodeResponseApdu,
  formatSw,
} from "../../src/apdu/response.js";
import { MalformedError } from "../../src/errors.js";

const h = (s: string) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "hex"));
const x = (b: Uint8Array) => Buffer.from(b).toString("hex").toUpperCase();

describe("command APDU encoding", () => {
  const base = { cla: 0x00, ins: 0xcb, p1: 0x3f, p2: 0xff };

  it("encodes the four short cases", () => {
    expect(x(encodeCommandApdu({ ...base }))).toBe("00CB3FFF");
    expect(x(encodeCommandApdu({ ...base, le: 256 }))).toBe("00CB3FFF00");
    expect(x(encodeCommandApdu({ ...base, le: 8 }))).toBe("00CB3FFF08");
    expect(x(encodeCommandApdu({ ...base, data: h("5C017E") }))).toBe("00CB3FFF035C017E");
    expect(x(encodeCommandApdu({ ...base, data: h("5C017E"), le: 256 }))).toBe("00CB3FFF035C017E00");
  });

  it("encodes the extended cases", () => {
    expect(x(encodeCommandApdu({ ...base }, "extended"))).toBe("00CB3FFF");
    expect(x(encodeCommandApdu({ ...base, le: 65536 }, "extended"))).toBe("00CB3FFF000000");
    expect(x(encodeCommandApdu({ ...base, le: 300 }, "extended"))).toBe("00CB3FFF00012C");
    const data = new Uint8Array(300).fill(0xab);
    const e = encodeCommandApdu({ ...base, data }, "extended");
    expect(x(e.subarray(0, 7))).toBe("00CB3FFF00012C");
    expect(e.length).toBe(7 + 300);
    const e4 = encodeCommandApdu({ ...base, data, le: 65536 }, "extended");
    expect(x(e4.subarray(-2))).toBe("0000");
    expect(e4.length).toBe(7 + 300 + 2);
  });

  it("rejects data or Le that do not fit, with a typed error", () => {
    expect(() => encodeCommandApdu({ ...base, data: new Uint8Array(256) })).toThrow(ApduLengthError);
    expect(() => encodeCommandApdu({ ...base, le: 257 })).toThrow(ApduLengthError);
    expect(() => encodeCommandApdu({ ...base, le: 0 })).toThrow(ApduLengthError);
    expect(() => encodeCommandApdu({ ...base, data: new Uint8Array(65536) }, "extended")).toThrow(
      ApduLengthError,
    );
    expect(() => encodeCommandApdu({ ...base, le: 65537 }, "extended")).toThrow(ApduLengthError);
    expect(() => encodeCommandApdu({ ...base, cla: 256 })).toThrow(RangeError);
  });

  it("decodes every ISO 7816-3 case", () => {
    expect(decodeCommandApdu(h("00A40400"))).toMatchObject({
      le: undefined,
      extended: false,
      data: new Uint8Array(0),
    });
    // yubico-piv-tool's empty VERIFY: 5 bytes, case 2S with Le 00 (= 256)
    expect(decodeCommandApdu(h("0020008000"))).toMatchObject({ ins: 0x20, le: 256, data: new Uint8Array(0) });
    expect(decodeCommandApdu(h("00A4040005A000000308"))).toMatchObject({
      data: h("A000000308"),
      le: undefined,
    });
    expect(decodeCommandApdu(h("00A4040005A00000030800"))).toMatchObject({ data: h("A000000308"), le: 256 });
    expect(decodeCommandApdu(h("00CB3FFF000000"))).toMatchObject({ le: 65536, extended: true });
    expect(decodeCommandApdu(h("00CB3FFF000003 5C017E"))).toMatchObject({
      data: h("5C017E"),
      le: undefined,
      extended: true,
    });
    expect(decodeCommandApdu(h("00CB3FFF000003 5C017E 0100"))).toMatchObject({
      data: h("5C017E"),
      le: 256,
      extended: true,
    });
  });

  it("refuses inconsistent lengths with ApduLengthError (a MalformedError)", () => {
    for (const bad of [
      "00",
      "00A404",
      "00A4040005A0",
      "00A4040005A00000030800FF",
      "00CB3FFF0000",
      "00CB3FFF000005 5C017E",
      "00CB3FFF000000 00",
    ]) {
      expect(() => decodeCommandApdu(h(bad)), bad).toThrow(ApduLengthError);
    }
    expect(new ApduLengthError("x")).toBeInstanceOf(MalformedError);
  });

  it("round-trips arbitrary commands in both formats", () => {
    const cmd = fc.record({
      cla: fc.integer({ min: 0, max: 255 }),
      ins: fc.integer({ min: 0, max: 255 }),
      p1: fc.integer({ min: 0, max: 255 }),
      p2: fc.integer({ min: 0, max: 255 }),
      data: fc.uint8Array({ maxLength: 600 }),
      le: fc.option(fc.integer({ min: 1, max: 65536 }), { nil: undefined }),
    });
    fc.assert(
      fc.property(cmd, (c: CommandApdu & { data: Uint8Array }) => {
        const fitsShort = c.data.length <= 255 && (c.le === undefined || c.le <= 256);
        if (fitsShort) {
          const d = decodeCommandApdu(encodeCommandApdu(c, "short"));
          expect(d.data).toEqual(c.data);
          expect(d.le).toBe(c.le);
          expect(d.extended).toBe(false);
        }
        const d = decodeCommandApdu(encodeCommandApdu(c, "extended"));
        expect(d.data).toEqual(c.data);
        expect(d.le).toBe(c.le);
        expect([d.cla, d.ins, d.p1, d.p2]).toEqual([c.cla, c.ins, c.p1, c.p2]);
      }),
    );
  });

  it("decodes random bytes to a command or an ApduLengthError, nothing else", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        try {
          decodeCommandApdu(bytes);
        } catch (e) {
          expect(e).toBeInstanceOf(ApduLengthError);
        }
      }),
    );
  });
});

describe("response APDU", () => {
  it("splits data and status word", () => {
    expect(decodeResponseApdu(h("0102 9000"))).toEqual({ data: h("0102"), sw: 0x9000 });
    expect(decodeResponseApdu(h("6A82"))).toEqual({ data: new Uint8Array(0), sw: 0x6a82 });
    expect(encodeResponseApdu(h("AA"), 0x61_10)).toEqual(h("AA6110"));
    expect(formatSw(0x6a82)).toBe("6A82");
  });

  it("refuses a response without a status word", () => {
    expect(() => decodeResponseApdu(h("90"))).toThrow(BadResponseError);
    expect(() => decodeResponseApdu(new Uint8Array(0))).toThrow(BadResponseError);
  });
});
