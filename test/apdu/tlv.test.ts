import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  decodeTlv,
  decodeTlvs,
  decodeTlvTree,
  encodeLength,
  encodeTag,
  encodeTlv,
  encodeTlvs,
  findTlv,
  isConstructedTag,
  requireTlv,
  TlvError,
} from "../../src/apdu/tlv.js";
import { MalformedError } from "../../src/errors.js";

const h = (s: string) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "hex"));
const x = (b: Uint8Array) => Buffer.from(b).toString("hex").toUpperCase();

/** Any tag the encoder accepts: 1, 2 or 3 bytes, ISO/IEC 7816-4 §5.2.2.1. */
const validTag = fc.oneof(
  fc.integer({ min: 0x01, max: 0xfe }).filter((b) => (b & 0x1f) !== 0x1f),
  fc
    .tuple(fc.constantFrom(0x1f, 0x3f, 0x5f, 0x7f, 0x9f, 0xbf, 0xdf), fc.integer({ min: 0x1f, max: 0x7f }))
    .map(([a, b]) => (a << 8) | b),
  fc
    .tuple(
      fc.constantFrom(0x1f, 0x3f, 0x5f, 0x7f, 0x9f, 0xbf, 0xdf),
      fc.integer({ min: 0x81, max: 0xff }),
      fc.integer({ min: 0x00, max: 0x7f }),
    )
    .map(([a, b, c]) => (a << 16) | (b << 8) | c),
);

describe("BER-TLV encoding", () => {
  it("encodes tags and minimal lengths", () => {
    expect(x(encodeTag(0x53))).toBe("53");
    expect(x(encodeTag(0x7f49))).toBe("7F49");
    expect(x(encodeTag(0x5fc105))).toBe("5FC105");
    expect(x(encodeLength(0x7f))).toBe("7F");
    expect(x(encodeLength(0x80))).toBe("8180");
    expect(x(encodeLength(0xff))).toBe("81FF");
    expect(x(encodeLength(0x100))).toBe("820100");
    expect(x(encodeLength(0x10000))).toBe("83010000");
    expect(x(encodeTlv(0x53, new Uint8Array(0)))).toBe("5300");
    expect(x(encodeTlvs([[0x80, h("00")], { tag: 0x81, value: h("0102") }]))).toBe("80010081020102");
  });

  it("refuses invalid tags on encoding", () => {
    for (const t of [0, 0x1f, 0x5f, 0xff, 0x5f05, 0x5f80, 0x5f8000, 0x5fc1c1, 0x1000000]) {
      expect(() => encodeTag(t), t.toString(16)).toThrow(RangeError);
    }
    expect(() => encodeLength(0x1000000)).toThrow(RangeError);
  });

  it("knows constructed tags", () => {
    expect(isConstructedTag(0x7c)).toBe(true);
    expect(isConstructedTag(0x7f49)).toBe(true);
    expect(isConstructedTag(0x53)).toBe(false);
    expect(isConstructedTag(0x5fc105)).toBe(false);
  });
});

describe("BER-TLV strict decoding", () => {
  it("decodes multi-byte tags and 81/82/83 lengths", () => {
    const v = new Uint8Array(300).fill(7);
    expect(decodeTlv(encodeTlv(0x5fc102, v))).toEqual({ tag: 0x5fc102, value: v });
    expect(decodeTlv(h("7F49 03 860100")).tag).toBe(0x7f49);
    expect(() => decodeTlv(h("53 8180"))).toThrow(TlvError);
    expect(decodeTlv(h(`53 83000002 0102`)).value).toEqual(h("0102"));
    // BER allows non-minimal lengths; the decoder accepts them.
    expect(decodeTlv(h("53 8102 0102")).value).toEqual(h("0102"));
  });

  it.each([
    ["indefinite length", "53 80 0000"],
    ["length field of 4 bytes", "53 84 00000001 00"],
    ["reserved length form", "53 FF"],
    ["truncated value", "53 05 0102"],
    ["truncated length field", "53 82 01"],
    ["missing length", "53"],
    ["truncated two-byte tag", "5F"],
    ["second tag byte below 1F", "5F 05 00"],
    ["second tag byte 80", "5F 80 01 00"],
    ["tag longer than three bytes", "5F FF FF 01 00"],
    ["tag 00", "00 00"],
    ["tag FF", "FF 00"],
  ])("refuses %s", (_name, bytes) => {
    expect(() => decodeTlvs(h(bytes))).toThrow(TlvError);
  });

  it("needs exactly one TLV (and the right tag) for decodeTlv", () => {
    expect(() => decodeTlv(h("5300 5300"))).toThrow(TlvError);
    expect(() => decodeTlv(h("5300"), 0x7e)).toThrow(TlvError);
    expect(() => decodeTlv(new Uint8Array(0))).toThrow(TlvError);
  });

  it("finds and requires tags", () => {
    const items = decodeTlvs(h("800101 8100"));
    expect(findTlv(items, 0x81)).toEqual(new Uint8Array(0));
    expect(findTlv(items, 0x82)).toBeUndefined();
    expect(() => requireTlv(items, 0x82, "test")).toThrow(TlvError);
  });

  it("bounds nesting depth", () => {
    let nested = encodeTlv(0x80, h("01"));
    for (let i = 0; i < 8; i++) nested = encodeTlv(0x7c, nested); // 9 levels
    expect(() => decodeTlvTree(nested)).toThrow(TlvError);
    expect(decodeTlvTree(nested, { maxDepth: 9 })[0]?.children?.[0]?.tag).toBe(0x7c);
    // 2,000 levels: refused at the bound, no deep recursion.
    let deep: Uint8Array = new Uint8Array(0);
    for (let i = 0; i < 2_000; i++) deep = encodeTlv(0x7c, deep);
    expect(() => decodeTlvTree(deep)).toThrow(TlvError);
  });

  it("bounds the number of items", () => {
    expect(() =>
      decodeTlvs(
        new Uint8Array(20).fill(0).map((_, i) => (i % 2 === 0 ? 0x80 : 0)),
        { maxItems: 5 },
      ),
    ).toThrow(TlvError);
  });

  it("turns random bytes into TLVs or a TlvError, nothing else", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), fc.integer({ min: 1, max: 6 }), (bytes, maxDepth) => {
        for (const decode of [
          () => decodeTlvs(bytes),
          () => decodeTlvTree(bytes, { maxDepth }),
          () => decodeTlv(bytes),
        ]) {
          try {
            decode();
          } catch (e) {
            expect(e).toBeInstanceOf(TlvError);
            expect(e).toBeInstanceOf(MalformedError);
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("turns mutated valid TLVs into TLVs or a TlvError", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(validTag, fc.uint8Array({ maxLength: 300 })), { maxLength: 6 }),
        fc.nat(),
        fc.integer({ min: 0, max: 255 }),
        (items, pos, byte) => {
          const enc = encodeTlvs(items);
          if (enc.length === 0) return;
          enc[pos % enc.length] = byte;
          try {
            decodeTlvTree(enc);
          } catch (e) {
            expect(e).toBeInstanceOf(TlvError);
          }
        },
      ),
    );
  });

  it("round-trips encode → decode", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(validTag, fc.uint8Array({ maxLength: 400 })), { maxLength: 10 }),
        (items) => {
          const decoded = decodeTlvs(encodeTlvs(items));
          expect(decoded.map((t) => [t.tag, t.value])).toEqual(items);
        },
      ),
    );
  });

  it("round-trips nested constructed TLVs through the tree decoder", () => {
    const tree: fc.Arbitrary<Uint8Array> = fc.letrec((tie) => ({
      node: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        fc.uint8Array({ maxLength: 20 }).map((v) => encodeTlv(0x80, v)),
        fc.array(tie("node") as fc.Arbitrary<Uint8Array>, { maxLength: 3 }).map((kids) => {
          const body = new Uint8Array(kids.reduce((n, k) => n + k.length, 0));
          let o = 0;
          for (const k of kids) {
            body.set(k, o);
            o += k.length;
          }
          return encodeTlv(0x7c, body);
        }),
      ),
    })).node;
    fc.assert(
      fc.property(tree, (bytes) => {
        const [root] = decodeTlvTree(bytes, { maxDepth: 64 });
        expect(root).toBeDefined();
        const reencode = (n: { tag: number; value: Uint8Array }): Uint8Array => encodeTlv(n.tag, n.value);
        expect(reencode(root!)).toEqual(bytes);
      }),
    );
  });
});
