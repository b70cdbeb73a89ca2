import { describe, expect, it } from "vitest";
import { SmartCardProtocol } from "../../src/apdu/chaining.js";
import { encodeCommandApdu } from "../../src/apdu/command.js";
import { encodeResponseApdu } from "../../src/apdu/response.js";
import { ApduTraceFormatter, TracingTransport } from "../../src/apdu/trace.js";
import type { CardTransport } from "../../src/transport/card-transport.js";

const hexSpaced = (b: Uint8Array) =>
  Array.from(b, (v) => v.toString(16).toUpperCase().padStart(2, "0")).join(" ");

const PIN = Uint8Array.from([0x39, 0x31, 0x38, 0x32, 0x37, 0x33, 0xff, 0xff]); // "918273"

describe("APDU trace redaction", () => {
  it("redacts VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER data", () => {
    const f = new ApduTraceFormatter();
    for (const ins of [0x20, 0x24, 0x2c]) {
      const apdu = encodeCommandApdu({
        cla: 0,
        ins,
        p1: 0,
        p2: 0x80,
        data: ins === 0x20 ? PIN : new Uint8Array([...PIN, ...PIN]),
      });
      const line = f.command(apdu);
      expect(line).not.toContain(hexSpaced(PIN.subarray(0, 3)));
      expect(line).toMatch(/redacted/);
      expect(line.startsWith(`>> 00 ${ins.toString(16).toUpperCase()} 00 80`)).toBe(true);
      f.response(Uint8Array.of(0x90, 0x00));
    }
    // an empty VERIFY shows as is
    expect(f.command(Uint8Array.of(0, 0x20, 0, 0x80))).toBe(">> 00 20 00 80");
  });

  it("redacts the management key witness, challenge and response both ways", () => {
    const f = new ApduTraceFormatter();
    const step = encodeCommandApdu({
      cla: 0,
      ins: 0x87,
      p1: 0x03,
      p2: 0x9b,
      data: Uint8Array.of(0x7c, 0x02, 0x80, 0x00),
    });
    expect(f.command(step)).toBe(">> 00 87 03 9B [5 bytes redacted]");
    expect(f.response(encodeResponseApdu(new Uint8Array(12).fill(0x42), 0x9000))).toBe(
      "<< [12 bytes redacted] 90 00",
    );
  });

  it("redacts the PRINTED object in chained PUT DATA and in GET DATA answers, GET RESPONSE included", () => {
    const f = new ApduTraceFormatter();
    const secretKey = new Uint8Array(24).fill(0x5a);
    const first = Uint8Array.of(0x10, 0xdb, 0x3f, 0xff, 0x05, 0x5c, 0x03, 0x5f, 0xc1, 0x09);
    const second = encodeCommandApdu({ cla: 0, ins: 0xdb, p1: 0x3f, p2: 0xff, data: secretKey });
    expect(f.command(first)).toMatch(/redacted/);
    f.response(Uint8Array.of(0x90, 0x00));
    expect(f.command(second)).not.toContain("5A 5A");
    f.response(Uint8Array.of(0x90, 0x00));

    const get = encodeCommandApdu({
      cla: 0,
      ins: 0xcb,
      p1: 0x3f,
      p2: 0xff,
      data: Uint8Array.of(0x5c, 0x03, 0x5f, 0xc1, 0x09),
      le: 256,
    });
    expect(f.command(get)).toContain("5F C1 09"); // the request itself is not secret
    expect(f.response(encodeResponseApdu(secretKey, 0x6110))).not.toContain("5A");
    expect(f.command(Uint8Array.of(0, 0xc0, 0, 0, 0x10))).toBe(">> 00 C0 00 00 10");
    expect(f.response(encodeResponseApdu(secretKey.subarray(0, 16), 0x9000))).not.toContain("5A");
    // … and the next exchange is shown again
    f.command(encodeCommandApdu({ cla: 0, ins: 0xfd, p1: 0, p2: 0, le: 256 }));
    expect(f.response(Uint8Array.of(5, 4, 3, 0x90, 0))).toBe("<< 05 04 03 90 00");
  });

  it("redacts the ECDH shared secret but not signatures", () => {
    const f = new ApduTraceFormatter();
    const point = new Uint8Array(65).fill(4);
    const ecdh = encodeCommandApdu({
      cla: 0,
      ins: 0x87,
      p1: 0x11,
      p2: 0x9d,
      data: Uint8Array.of(0x7c, 0x45, 0x82, 0x00, 0x85, 0x41, ...point),
    });
    f.command(ecdh);
    expect(f.response(encodeResponseApdu(new Uint8Array(36).fill(0x77), 0x9000))).toMatch(/redacted/);
    const sign = encodeCommandApdu({
      cla: 0,
      ins: 0x87,
      p1: 0x11,
      p2: 0x9e,
      data: Uint8Array.of(0x7c, 0x06, 0x82, 0x00, 0x81, 0x02, 1, 2),
    });
    f.command(sign);
    expect(f.response(encodeResponseApdu(Uint8Array.of(0x7c, 0x01), 0x9000))).toBe("<< 7C 01 90 00");
  });

  it("TracingTransport writes one line per APDU through the protocol, PIN never shown", async () => {
    const lines: string[] = [];
    const inner: CardTransport = {
      atr: Uint8Array.of(0x3b),
      contactless: false,
      readerName: "fake",
      async transmit() {
        return Uint8Array.of(0x63, 0xc2);
      },
      async close() {},
    };
    const traced = new TracingTransport(inner, { debug: (m) => lines.push(m) });
    expect(traced.readerName).toBe("fake");
    const p = new SmartCardProtocol(traced);
    await p.transmit({ cla: 0, ins: 0x20, p1: 0, p2: 0x80, data: PIN });
    expect(lines).toEqual(["apdu >> 00 20 00 80 [9 bytes redacted]", "apdu << 63 C2"]);
    expect(lines.join("\n")).not.toContain("39 31 38");
  });
});
