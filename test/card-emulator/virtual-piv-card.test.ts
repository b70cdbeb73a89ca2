/**
 * The virtual card at the APDU level: the exact bytes yubico-piv-tool 2.2.0 and OpenSC 0.23 send
 * and expect (PIV-NOTES.md), status words, limits, chaining and GET RESPONSE.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPublicKey,
  randomBytes,
  verify,
} from "node:crypto";
import { describe, expect, it } from "vitest";
import { decodeTlv, decodeTlvs, encodeTlv, findTlv } from "../../src/apdu/tlv.js";
import { MemoryCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { atrChecksumValid, YUBIKEY_5_7_PROFILE } from "../../src/card-emulator/profiles.js";
import { VirtualPivCard, type VirtualPivCardOptions } from "../../src/card-emulator/virtual-piv-card.js";
import { NoCardError } from "../../src/errors.js";
import { ecPointToSpki } from "../../src/piv/piv-session.js";
import { InProcessTransport } from "../../src/transport/in-process.js";

const h = (s: string) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "hex"));
const X = (b: Uint8Array) => Buffer.from(b).toString("hex").toUpperCase();
const MGM = h("010203040506070801020304050607080102030405060708");

/** A powered card and a `send(hex)` that returns { data, sw } as hex. */
function open(options: VirtualPivCardOptions = {}) {
  const card = new VirtualPivCard({ serial: 13572468, ...options });
  const atr = card.powerOn();
  const raw = (apdu: Uint8Array) => {
    const r = card.transmit(apdu);
    return { data: r.subarray(0, r.length - 2), sw: X(r.subarray(r.length - 2)) };
  };
  const send = (hex: string) => raw(h(hex));
  return { card, atr, raw, send };
}

function ecb(name: string, key: Uint8Array, block: Uint8Array, dir: "enc" | "dec"): Uint8Array {
  const c = dir === "enc" ? createCipheriv(name, key, null) : createDecipheriv(name, key, null);
  c.setAutoPadding(false);
  return new Uint8Array(Buffer.concat([c.update(block), c.final()]));
}

/** yubico-piv-tool's 3DES mutual authentication, byte for byte. */
function authenticate3des(send: (hex: string) => { data: Uint8Array; sw: string }) {
  const first = send("00 87 03 9B 04 7C 02 80 00");
  expect(first.sw).toBe("9000");
  expect(X(first.data.subarray(0, 4))).toBe("7C0A8008");
  const witness = ecb("des-ede3", MGM, first.data.subarray(4), "dec");
  const challenge = new Uint8Array(randomBytes(8));
  const second = send(`00 87 03 9B 16 7C 14 80 08 ${X(witness)} 81 08 ${X(challenge)}`);
  expect(second.sw).toBe("9000");
  expect(X(second.data)).toBe(`7C0A8208${X(ecb("des-ede3", MGM, challenge, "enc"))}`);
}

describe("ATR and power", () => {
  it("answers with a YubiKey 5 ATR, contact or contactless, with a valid TCK", () => {
    const contact = open();
    expect(X(contact.atr)).toBe("3BFD1300008131FE158073C021C057597562694B657940");
    expect(atrChecksumValid(contact.atr)).toBe(true);
    const nfc = open({ contactless: true });
    expect(X(nfc.atr)).toBe("3B8D80018073C021C057597562694B6579F9");
    expect(atrChecksumValid(nfc.atr)).toBe(true);
    expect(new InProcessTransport(new VirtualPivCard({ contactless: true })).contactless).toBe(true);
    expect(new InProcessTransport(new VirtualPivCard()).contactless).toBe(false);
  });

  it("answers nothing useful while powered off and forgets the PIN at power-off", () => {
    const { card, send } = open();
    expect(send("00 20 00 80 08 313233343536FFFF").sw).toBe("9000");
    card.powerOff();
    expect(send("00 20 00 80").sw).toBe("6F00");
    card.powerOn();
    expect(send("00 20 00 80").sw).toBe("63C3");
  });
});

describe("SELECT", () => {
  it("answers the RID (ypt) and the 9-byte AID with Le (OSC) like a YubiKey", () => {
    const { send } = open();
    const yk = "61114F0600001000010079074F05A000000308";
    expect(send("00 A4 04 00 05 A0 00 00 03 08")).toEqual({ data: h(yk), sw: "9000" });
    expect(send("00 A4 04 00 09 A0 00 00 03 08 00 00 10 00 00")).toEqual({ data: h(yk), sw: "9000" });
    expect(send("00 A4 04 00 0B A0 00 00 03 08 00 00 10 00 01 00 00").sw).toBe("9000");
  });

  it("answers 6A82 to an unknown AID and keeps PIV selected with its security state", () => {
    const { send } = open();
    expect(send("00 20 00 80 08 313233343536FFFF").sw).toBe("9000");
    // coolkey, muscle, sc-hsm… probe their AIDs first (§8)
    expect(send("00 A4 04 00 07 A0 00 00 01 16 DB 00").sw).toBe("6A82");
    expect(send("00 A4 04 00 06 D2 76 00 01 24 01").sw).toBe("6A82");
    expect(send("00 20 00 80").sw).toBe("9000");
    // reselecting PIV keeps the PIN verified too
    expect(send("00 A4 04 00 05 A0 00 00 03 08").sw).toBe("9000");
    expect(send("00 20 00 80").sw).toBe("9000");
  });

  it("clears the security state when another application is selected (Yubico management AID)", () => {
    const { send } = open();
    expect(send("00 20 00 80 08 313233343536FFFF").sw).toBe("9000");
    const mgmt = send("00 A4 04 00 08 A0 00 00 05 27 47 11 17");
    expect(mgmt.sw).toBe("9000");
    expect(Buffer.from(mgmt.data).toString()).toMatch(/5\.4\.3/);
    expect(send("00 CB 3F FF 03 5C 01 7E").sw).toBe("6D00");
    expect(send("00 A4 04 00 05 A0 00 00 03 08").sw).toBe("9000");
    expect(send("00 20 00 80").sw).toBe("63C3");
  });

  it("serves the serial through the OTP application as ypt does for old firmware", () => {
    const { send } = open();
    expect(send("00 A4 04 00 08 A0 00 00 05 27 20 01 01").sw).toBe("9000");
    expect(send("00 01 10 00 00")).toEqual({ data: h("00CF1974"), sw: "9000" }); // 13572468
    expect(send("00 A4 04 00 05 A0 00 00 03 08").sw).toBe("9000");
  });
});

describe("Yubico extensions", () => {
  it("answers version, serial and metadata", () => {
    const { send } = open();
    expect(send("00 FD 00 00 00")).toEqual({ data: h("050403"), sw: "9000" });
    expect(send("00 F8 00 00 00")).toEqual({ data: h("00CF1974"), sw: "9000" });
    expect(send("00 F7 00 80 00")).toEqual({ data: h("0101FF 050101 06020303"), sw: "9000" });
    expect(send("00 F7 00 81 00")).toEqual({ data: h("0101FF 050101 06020303"), sw: "9000" });
    expect(send("00 F7 00 9B 00")).toEqual({ data: h("010103 02020001 050101"), sw: "9000" });
    expect(send("00 F7 00 9A 00").sw).toBe("6A88");
    const aes = open({ profile: YUBIKEY_5_7_PROFILE });
    expect(aes.send("00 FD 00 00 00").data).toEqual(h("050701"));
    expect(X(aes.send("00 F7 00 9B 00").data.subarray(0, 3))).toBe("01010A");
  });
});

describe("PIN, PUK (VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER)", () => {
  it("counts tries, blocks after three, and accepts both empty VERIFY forms", () => {
    const { send } = open();
    expect(send("00 20 00 80").sw).toBe("63C3"); // OpenSC
    expect(send("00 20 00 80 00").sw).toBe("63C3"); // yubico-piv-tool
    expect(send("00 20 00 80 08 313131313131FFFF").sw).toBe("63C2");
    expect(send("00 20 00 80").sw).toBe("63C2");
    expect(send("00 20 00 80 08 313131313131FFFF").sw).toBe("63C1");
    expect(send("00 20 00 80 08 313131313131FFFF").sw).toBe("63C0");
    expect(send("00 20 00 80").sw).toBe("6983");
    expect(send("00 20 00 80 08 313233343536FFFF").sw).toBe("6983");
  });

  it("refuses malformed PINs without touching the counter", () => {
    const { send } = open();
    expect(send("00 20 00 80 08 3132333435FFFFFF").sw).toBe("6A80"); // 5 digits
    expect(send("00 20 00 80 08 313233FF34353637").sw).toBe("6A80"); // FF inside
    expect(send("00 20 00 80 06 313233343536").sw).toBe("6A80"); // not padded to 8
    expect(send("00 20 00 80").sw).toBe("63C3");
    expect(send("00 20 00 81 08 3132333435363738").sw).toBe("6A88"); // VERIFY of the PUK
    expect(send("00 20 01 80 08 313233343536FFFF").sw).toBe("6A86");
  });

  it("logs out with P1 = FF", () => {
    const { send } = open();
    expect(send("00 20 00 80 08 313233343536FFFF").sw).toBe("9000");
    expect(send("00 20 00 80").sw).toBe("9000");
    expect(send("00 20 FF 80").sw).toBe("9000");
    expect(send("00 20 00 80").sw).toBe("63C3");
  });

  it("changes PIN and PUK and unblocks the PIN with the PUK", () => {
    const { send } = open();
    expect(send("00 24 00 80 10 313233343536FFFF 3635343332FFFFFF").sw).toBe("6A80"); // new PIN too short
    expect(send("00 24 00 80 10 393939393939FFFF 363534333231FFFF").sw).toBe("63C2");
    expect(send("00 24 00 80 10 313233343536FFFF 363534333231FFFF").sw).toBe("9000");
    expect(send("00 20 00 80").sw).toBe("63C3"); // counter reset by the right PIN
    expect(send("00 24 00 81 10 3132333435363738 3837363534333231").sw).toBe("9000");
    expect(send("00 24 00 82 10 3132333435363738 3837363534333231").sw).toBe("6A88");
    for (let i = 0; i < 3; i++)
      send("00 20 00 80 08 000000000000FFFF".replace("000000000000", "303030303030"));
    expect(send("00 20 00 80").sw).toBe("6983");
    expect(send("00 2C 00 80 10 3132333435363738 373737373737FFFF").sw).toBe("63C2"); // old PUK
    expect(send("00 2C 00 80 10 3837363534333231 373737373737FFFF").sw).toBe("9000");
    expect(send("00 20 00 80 08 373737373737FFFF").sw).toBe("9000");
    expect(send("00 F7 00 81 00").data).toEqual(h("0101FF 050100 06020303"));
  });

  it("blocks the PUK and only then allows the Yubico reset", () => {
    const { send } = open();
    expect(send("00 FB 00 00").sw).toBe("6985");
    for (let i = 0; i < 3; i++) send("00 20 00 80 08 303030303030FFFF");
    for (let i = 0; i < 3; i++) send("00 2C 00 80 10 3030303030303030 303030303030FFFF");
    expect(send("00 2C 00 80 10 3132333435363738 303030303030FFFF").sw).toBe("6983");
    expect(send("00 FB 00 00").sw).toBe("9000");
    expect(send("00 20 00 80 08 313233343536FFFF").sw).toBe("9000");
  });
});

describe("management key (GENERAL AUTHENTICATE 9B)", () => {
  it("runs yubico-piv-tool's 3DES witness-first exchange", () => {
    const { send } = open();
    expect(send("00 DB 3F FF 09 5C 03 5F FF 10 53 02 01 02").sw).toBe("6982");
    authenticate3des(send);
    expect(send("00 DB 3F FF 09 5C 03 5F FF 10 53 02 01 02").sw).toBe("9000");
  });

  it("refuses a wrong witness with 6982", () => {
    const { send } = open();
    expect(send("00 87 03 9B 04 7C 02 80 00").sw).toBe("9000");
    expect(send("00 87 03 9B 16 7C 14 80 08 0000000000000000 81 08 0102030405060708").sw).toBe("6982");
    expect(send("00 DB 3F FF 09 5C 03 5F FF 10 53 02 01 02").sw).toBe("6982");
  });

  it("runs the one-way challenge form", () => {
    const { send } = open();
    const c = send("00 87 03 9B 04 7C 02 81 00");
    expect(X(c.data.subarray(0, 4))).toBe("7C0A8108");
    const good = ecb("des-ede3", MGM, c.data.subarray(4), "enc");
    expect(send(`00 87 03 9B 0C 7C 0A 82 08 ${X(good)}`)).toEqual({ data: new Uint8Array(0), sw: "9000" });
    const again = send("00 87 03 9B 04 7C 02 81 00");
    expect(again.sw).toBe("9000");
    expect(send("00 87 03 9B 0C 7C 0A 82 08 0000000000000000").sw).toBe("6982");
  });

  it("answers 6A80 to the wrong algorithm and to OpenSC's random probe", () => {
    const { send } = open();
    expect(send("00 87 00 9B 04 7C 02 81 00").sw).toBe("6A80");
    expect(send("00 87 0A 9B 04 7C 02 80 00").sw).toBe("6A80");
  });

  it("does AES-192 with 16-byte blocks (P1 0A)", () => {
    const { send } = open({ managementKeyType: "aes192" });
    expect(send("00 87 03 9B 04 7C 02 80 00").sw).toBe("6A80");
    const first = send("00 87 0A 9B 04 7C 02 80 00");
    expect(X(first.data.subarray(0, 4))).toBe("7C128010");
    const witness = ecb("aes-192-ecb", MGM, first.data.subarray(4), "dec");
    const challenge = new Uint8Array(randomBytes(16));
    const second = send(`00 87 0A 9B 26 7C 24 80 10 ${X(witness)} 81 10 ${X(challenge)}`);
    expect(X(second.data)).toBe(`7C128210${X(ecb("aes-192-ecb", MGM, challenge, "enc"))}`);
  });

  it("a pending witness does not survive another command", () => {
    const { send } = open();
    const first = send("00 87 03 9B 04 7C 02 80 00");
    const witness = ecb("des-ede3", MGM, first.data.subarray(4), "dec");
    send("00 FD 00 00 00");
    expect(send(`00 87 03 9B 16 7C 14 80 08 ${X(witness)} 81 08 0102030405060708`).sw).toBe("6985");
  });
});

describe("keys: GENERATE, GENERAL AUTHENTICATE, PIN policies", () => {
  it("generates P-256 and P-384 keys with 86 at offset 3, only with the management key", () => {
    const { send } = open();
    expect(send("00 47 00 9A 05 AC 03 80 01 11").sw).toBe("6982");
    authenticate3des(send);
    const p256 = send("00 47 00 9A 05 AC 03 80 01 11");
    expect(X(p256.data.subarray(0, 5))).toBe("7F49438641");
    const p384 = send("00 47 00 9D 05 AC 03 80 01 14");
    expect(X(p384.data.subarray(0, 5))).toBe("7F49638661");
    expect(send("00 47 00 9B 05 AC 03 80 01 11").sw).toBe("6B00");
    expect(send("00 47 00 9A 05 AC 03 80 01 07").sw).toBe("6A80"); // RSA not here
    expect(send("00 47 00 9A 08 AC 06 80 01 11 AA 01 07").sw).toBe("6A80");
    expect(send("00 47 01 9A 05 AC 03 80 01 11").sw).toBe("6A86");
  });

  it("signs on 9E without PIN, on 9C only right after VERIFY, on 9A once per session", () => {
    const { send } = open();
    authenticate3des(send);
    const keys: Record<string, Uint8Array> = {};
    for (const slot of ["9A", "9C", "9E"]) {
      const r = send(`00 47 00 ${slot} 05 AC 03 80 01 11`);
      keys[slot] = ecPointToSpki("P-256", findTlv(decodeTlvs(decodeTlv(r.data, 0x7f49).value), 0x86)!);
    }
    const msg = Buffer.from("challenge");
    const digest = createHash("sha256").update(msg).digest();
    const sign = (slot: string) => send(`00 87 11 ${slot} 26 7C 24 82 00 81 20 ${X(digest)} 00`);
    const check = (slot: string, r: { data: Uint8Array; sw: string }) => {
      expect(r.sw).toBe("9000");
      const der = decodeTlvs(decodeTlv(r.data, 0x7c).value)[0]!;
      expect(der.tag).toBe(0x82);
      const key = createPublicKey({ key: Buffer.from(keys[slot]!), format: "der", type: "spki" });
      expect(verify("sha256", msg, key, der.value)).toBe(true);
    };
    check("9E", sign("9E"));
    expect(sign("9C").sw).toBe("6982");
    expect(sign("9A").sw).toBe("6982");
    expect(send("00 20 00 80 08 313233343536FFFF").sw).toBe("9000");
    check("9C", sign("9C"));
    expect(sign("9C").sw).toBe("6982"); // PIN always: again before each use
    check("9A", sign("9A"));
    check("9A", sign("9A"));
    expect(send("00 20 00 80 08 313233343536FFFF").sw).toBe("9000");
    check("9C", sign("9C"));
    check("9E", sign("9E"));
  });

  it("left-pads short digests and refuses long ones, an empty slot and a wrong algorithm", () => {
    const { send } = open();
    authenticate3des(send);
    send("00 47 00 9E 05 AC 03 80 01 11");
    expect(send("00 87 11 9E 0A 7C 08 82 00 81 04 01020304 00").sw).toBe("9000");
    expect(send(`00 87 11 9E 27 7C 25 82 00 81 21 ${"AB".repeat(33)} 00`).sw).toBe("6A80");
    expect(send("00 87 11 9D 0A 7C 08 82 00 81 04 01020304 00").sw).toBe("6A88");
    expect(send("00 87 14 9E 0A 7C 08 82 00 81 04 01020304 00").sw).toBe("6A86");
    expect(send("00 87 11 9E 06 7C 04 82 00 81 00").sw).toBe("6A80");
    expect(send("00 87 11 9E 03 7C 01 82").sw).toBe("6A80");
  });

  it("reports slot metadata with the public key", () => {
    const { send } = open();
    authenticate3des(send);
    const gen = send("00 47 00 9C 0B AC 09 80 01 14 AA 01 02 AB 01 01");
    const point = findTlv(decodeTlvs(decodeTlv(gen.data, 0x7f49).value), 0x86)!;
    const md = send("00 F7 00 9C 00");
    const items = decodeTlvs(md.data);
    expect(findTlv(items, 0x01)).toEqual(h("14"));
    expect(findTlv(items, 0x02)).toEqual(h("0201"));
    expect(findTlv(items, 0x03)).toEqual(h("01"));
    expect(findTlv(decodeTlvs(findTlv(items, 0x04)!), 0x86)).toEqual(point);
  });
});

describe("data objects, GET DATA / PUT DATA", () => {
  it("answers Discovery as its own TLV, and has CHUID and CCC from initialisation", () => {
    const { send } = open();
    expect(send("00 CB 3F FF 03 5C 01 7E 00")).toEqual({
      data: h("7E12 4F0B A0000003080000100001 00 5F2F02 4000"),
      sw: "9000",
    });
    const chuid = send("00 CB 3F FF 05 5C 03 5F C1 02 00");
    expect(chuid.sw).toBe("9000");
    const inner = decodeTlvs(decodeTlv(chuid.data, 0x53).value);
    expect(X(findTlv(inner, 0x30)!.subarray(0, 3))).toBe("D4E739");
    expect(findTlv(inner, 0x34)).toHaveLength(16);
    expect(send("00 CB 3F FF 05 5C 03 5F C1 07 00").sw).toBe("9000");
    expect(send("00 CB 3F FF 05 5C 03 5F C1 05 00").sw).toBe("6A82");
    expect(new VirtualPivCard({ initialObjects: false }).usedObjectBytes).toBe(0);
  });

  it("protects PRINTED with the PIN, and answers 6982 even when it is absent", () => {
    const { send } = open();
    expect(send("00 CB 3F FF 05 5C 03 5F C1 09 00").sw).toBe("6982");
    expect(send("00 20 00 80 08 313233343536FFFF").sw).toBe("9000");
    expect(send("00 CB 3F FF 05 5C 03 5F C1 09 00").sw).toBe("6A82");
  });

  it("checks P1-P2, lengths and the tag list", () => {
    const { send } = open();
    expect(send("00 CB 3F FE 03 5C 01 7E").sw).toBe("6A86");
    expect(send("00 CB 3F FF").sw).toBe("6700");
    expect(send("00 CB 3F FF 03 5D 01 7E").sw).toBe("6A80");
    expect(send("00 CB 3F FF 05 5C 03 5F C1 02 00 00").sw).toBe("6700"); // Lc does not match
    expect(send("00 CB 3F FF 05 5C 03 01 02 03").sw).toBe("6A82");
    authenticate3des(send);
    expect(send("00 DB 3F FF 09 5C 03 01 02 03 53 02 01 02").sw).toBe("6A80"); // not a PIV/vendor id
    expect(send("00 DB 3F FF 05 53 03 01 02 03").sw).toBe("6A80");
    expect(send("00 DB 3F FF 03 5C 03 5F").sw).toBe("6A80"); // truncated TLV
  });

  it("takes vendor objects 5FFF00–5FFFFF and deletes with 53 00", () => {
    const { send } = open();
    authenticate3des(send);
    expect(send("00 DB 3F FF 09 5C 03 5F FF FF 53 02 AB CD").sw).toBe("9000");
    expect(send("00 CB 3F FF 05 5C 03 5F FF FF 00")).toEqual({ data: h("5302ABCD"), sw: "9000" });
    expect(send("00 DB 3F FF 07 5C 03 5F FF FF 53 00").sw).toBe("9000");
    expect(send("00 CB 3F FF 05 5C 03 5F FF FF 00").sw).toBe("6A82");
  });

  it("enforces the YubiKey limits with 6A84: 3,063 bytes per object, ~50,225 in all", () => {
    const { card, raw, send } = open({ initialObjects: false });
    authenticate3des(send);
    // as yubico-piv-tool writes: chained short APDUs, 255-byte blocks
    const put = (id: number, size: number) => {
      const data = Uint8Array.from([
        0x5c,
        0x03,
        id >> 16,
        (id >> 8) & 0xff,
        id & 0xff,
        ...encodeTlv(0x53, new Uint8Array(size).fill(1)),
      ]);
      let last = "";
      for (let o = 0; o < data.length; o += 255) {
        const block = data.subarray(o, o + 255);
        last = raw(
          Uint8Array.from([o + 255 < data.length ? 0x10 : 0x00, 0xdb, 0x3f, 0xff, block.length, ...block]),
        ).sw;
      }
      return last;
    };
    expect(put(0x5fff10, 3063)).toBe("9000");
    expect(put(0x5fff11, 3064)).toBe("6A84");
    let id = 0x5fff12;
    while (put(id, 3063) === "9000") id++;
    expect(card.usedObjectBytes).toBe(16 * 3063);
    // what is left still fits, one byte more does not
    const left = 50225 - card.usedObjectBytes;
    expect(put(id, left + 1)).toBe("6A84");
    expect(put(id, left)).toBe("9000");
    expect(card.usedObjectBytes).toBe(50225);
    // replacing an object counts its old size out
    expect(put(0x5fff10, 3063)).toBe("9000");
  });
});

function u16(n: number): number[] {
  return [n >> 8, n & 0xff];
}

describe("chaining, extended APDUs and GET RESPONSE", () => {
  it("assembles a chained PUT DATA (CLA 10) and answers long objects in 256-byte pieces", () => {
    const { send, raw } = open();
    authenticate3des(send);
    const content = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff);
    const data = Uint8Array.from([0x5c, 0x03, 0x5f, 0xff, 0x20, ...encodeTlv(0x53, content)]);
    for (let o = 0; o < data.length; o += 255) {
      const block = data.subarray(o, o + 255);
      const last = o + 255 >= data.length;
      expect(raw(Uint8Array.from([last ? 0x00 : 0x10, 0xdb, 0x3f, 0xff, block.length, ...block])).sw).toBe(
        "9000",
      );
    }
    let r = send("00 CB 3F FF 05 5C 03 5F FF 20 00");
    const parts = [r.data];
    const sws = [r.sw];
    while (r.sw.startsWith("61")) {
      expect(r.data.length).toBe(256);
      r = send(`00 C0 00 00 ${r.sw.slice(2)}`);
      parts.push(r.data);
      sws.push(r.sw);
    }
    expect(sws).toEqual(["6100", "6100", "61EC", "9000"]); // 1004 bytes: 256 + 256 + 256 + 236
    expect(Buffer.concat(parts)).toEqual(Buffer.from(encodeTlv(0x53, content)));
    // An extended command with Le 0000 gets it in one piece.
    const ext = send("00 CB 3F FF 00 00 05 5C 03 5F FF 20 00 00");
    expect(ext.sw).toBe("9000");
    expect(ext.data).toEqual(encodeTlv(0x53, content));
  });

  it("aborts a chain interrupted by another command and answers GET RESPONSE only when pending", () => {
    const { send } = open();
    authenticate3des(send);
    expect(send("10 DB 3F FF 05 5C 03 5F FF 30").sw).toBe("9000");
    expect(send("00 FD 00 00 00").sw).toBe("9000");
    expect(send("00 DB 3F FF 03 53 01 AA").sw).toBe("6A80"); // the first block was dropped
    expect(send("00 C0 00 00 00").sw).toBe("6985");
    expect(send("10 FD 00 00 00").sw).toBe("6884"); // not a chainable command
  });

  it("accepts extended APDUs up to ~3 KB and refuses bigger ones with 6700", () => {
    const { send, raw } = open();
    authenticate3des(send);
    const content = new Uint8Array(3000).fill(9);
    const data = Uint8Array.from([0x5c, 0x03, 0x5f, 0xff, 0x40, ...encodeTlv(0x53, content)]);
    expect(raw(Uint8Array.from([0x00, 0xdb, 0x3f, 0xff, 0x00, ...u16(data.length), ...data])).sw).toBe(
      "9000",
    );
    const tooBig = new Uint8Array(3073);
    expect(raw(Uint8Array.from([0x00, 0xdb, 0x3f, 0xff, 0x00, ...u16(tooBig.length), ...tooBig])).sw).toBe(
      "6700",
    );
  });

  it("answers wrong CLA with 6E00, unknown INS with 6D00, bad P1-P2 with 6A86", () => {
    const { send } = open();
    expect(send("80 CB 3F FF 03 5C 01 7E").sw).toBe("6E00");
    expect(send("0C CB 3F FF 03 5C 01 7E").sw).toBe("6E00");
    expect(send("00 12 00 00").sw).toBe("6D00");
    expect(send("00 A4 00 00 02 3F 00").sw).toBe("6A86");
    expect(send("00 C0 01 00 00").sw).toBe("6A86");
  });
});

describe("persistence before answering", () => {
  it("saves the decremented PIN counter before replying", () => {
    const store = new MemoryCardStateStore();
    const { send } = open({ store });
    const before = store.saves;
    expect(send("00 20 00 80 08 303030303030FFFF").sw).toBe("63C2");
    expect(store.saves).toBeGreaterThan(before);
    expect(store.load()?.pin.triesLeft).toBe(2);
  });

  it("lets a test rewrite answers through the interceptor (hostile-card hook)", () => {
    const { send } = open({
      intercept: (cmd, card) => (cmd[1] === 0xfd ? Uint8Array.of(0x61, 0x00) : card(cmd)),
    });
    expect(send("00 FD 00 00 00").sw).toBe("6100");
    expect(send("00 F8 00 00 00").sw).toBe("9000");
  });
});

describe("in-process transport", () => {
  it("powers the card on, forwards APDUs and powers it off on close", async () => {
    const card = new VirtualPivCard();
    const t = new InProcessTransport(card, { readerName: "Virtual PCD 00 00" });
    expect(t.readerName).toBe("Virtual PCD 00 00");
    expect(X(await t.transmit(h("00 FD 00 00 00")))).toBe("0504039000");
    await t.close();
    await expect(t.transmit(h("00 FD 00 00 00"))).rejects.toThrow(NoCardError);
    await t.close();
  });
});
