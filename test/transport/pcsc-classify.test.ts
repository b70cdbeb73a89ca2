import { describe, expect, it } from "vitest";
import { CardRemovedError, ExitCode, PcscError } from "../../src/errors.js";
import { classifyAtr, isContactless, isContactlessReaderName } from "../../src/transport/pcsc-atr.js";
import {
  isServiceGone,
  ReaderState,
  ScardCode,
  scardCodeOf,
  toPcscError,
} from "../../src/transport/pcsc-binding.js";
import { cardEventCount, cardPresent, readerMatches } from "../../src/transport/pcsc-context.js";

const bytes = (h: string) => Uint8Array.from(Buffer.from(h.replace(/\s+/g, ""), "hex"));

/** XOR of T0..last byte; a valid ATR with TCK gives 0. */
function withTck(h: string): Uint8Array {
  const b = bytes(h);
  let x = 0;
  for (let i = 1; i < b.length; i++) x ^= b[i]!;
  return Uint8Array.from([...b, x]);
}

describe("classifyAtr", () => {
  it.each([
    // PC/SC Part 3 ISO 14443-4 type A: ATS historical bytes (YubiKey 5 NFC on a contactless reader)
    [
      "YubiKey 5 NFC, contactless",
      "3B 8D 80 01 80 73 C0 21 C0 57 59 75 62 69 4B 65 79 F9",
      "contactless-iso14443-4",
    ],
    // MIFARE DESFire: a single historical byte
    ["DESFire", "3B 81 80 01 80 80", "contactless-iso14443-4"],
    // PC/SC Part 3 storage card: 80 4F 0C A0 00 00 03 06 SS NN NN 00 00 00 00
    [
      "MIFARE Classic 1K",
      "3B 8F 80 01 80 4F 0C A0 00 00 03 06 03 00 01 00 00 00 00 6A",
      "contactless-storage",
    ],
    // Contact cards
    ["YubiKey 5, contact", "3B FD 13 00 00 81 31 FE 15 80 73 C0 21 C0 57 59 75 62 69 4B 65 79 40", "contact"],
    ["JCOP 2.4.1, contact", "3B F8 13 00 00 81 31 FE 45 4A 43 4F 50 76 32 34 31 B7", "contact"],
    ["T=0 only, no TCK", "3B 02 14 50", "contact"],
  ] as const)("%s → %s", (_name, atr, kind) => {
    const c = classifyAtr(bytes(atr));
    expect(c.kind).toBe(kind);
    expect(c.contactless).toBe(kind !== "contact");
  });

  it("reports the protocols, historical bytes and TCK", () => {
    const c = classifyAtr(bytes("3B FD 13 00 00 81 31 FE 15 80 73 C0 21 C0 57 59 75 62 69 4B 65 79 40"));
    expect(c.protocols).toEqual([1]);
    expect(Buffer.from(c.historicalBytes).toString("latin1")).toContain("YubiKey");
    expect(c.tckValid).toBe(true);
    const t0 = classifyAtr(bytes("3B 02 14 50"));
    expect(t0.protocols).toEqual([0]);
    expect(t0.tckValid).toBeUndefined();
  });

  it("classifies a type B ATR (ATQB application data + protocol info + MBLI)", () => {
    const c = classifyAtr(withTck("3B 88 80 01 11 22 33 44 81 91 81 71"));
    expect(c.kind).toBe("contactless-iso14443-4");
    expect(c.tckValid).toBe(true);
  });

  it("finds the PC/SC RID even when the ATR shape differs", () => {
    // FeliCa storage card: SS = 11, NN = 003B
    const c = classifyAtr(withTck("3B 8F 80 01 80 4F 0C A0 00 00 03 06 11 00 3B 00 00 00 00"));
    expect(c.kind).toBe("contactless-storage");
  });

  it("still calls a contactless-shaped ATR with a bad TCK contactless, and says the TCK is bad", () => {
    const c = classifyAtr(bytes("3B 81 80 01 80 81"));
    expect(c.contactless).toBe(true);
    expect(c.tckValid).toBe(false);
  });

  it.each([
    ["empty", ""],
    ["bad TS", "3C 00"],
    ["truncated interface bytes", "3B 80"],
    ["truncated historical bytes", "3B 8D 80 01 80 73"],
    ["trailing garbage", "3B 00 00"],
    ["too long", `3B 0F ${"00 ".repeat(40)}`],
  ])("rejects %s as invalid", (_name, atr) => {
    const c = classifyAtr(bytes(atr));
    expect(c.kind).toBe("invalid");
    expect(c.contactless).toBe(false);
  });

  it("does not take a contact ATR with T=0 and T=1 plus parameters for a contactless one", () => {
    // TD1 = 81 (TD2 follows, T=1), TD2 = 31 (TA3, TB3 follow, T=1): not the bare 80 01 shape.
    expect(classifyAtr(bytes("3B F8 13 00 00 81 31 FE 45 4A 43 4F 50 76 32 34 31 B7")).contactless).toBe(
      false,
    );
  });
});

describe("isContactlessReaderName", () => {
  it.each([
    ["ACS ACR122U PICC Interface 00 00", true],
    ["OMNIKEY CardMan 5x21-CL 0", true],
    ["Identiv uTrust 3700 F CL Reader [uTrust 3700 F CL Reader] 00 00", true],
    ["HID Global OMNIKEY 5422 Smartcard Reader [OMNIKEY 5422CL Smartcard Reader] 01 00", true],
    ["HID Global OMNIKEY 5422 Smartcard Reader [OMNIKEY 5422 Smartcard Reader] 00 00", false],
    ["SCM Microsystems SCL011 Contactless Reader 00 00", true],
    ["Generic NFC reader", true],
    ["Virtual PCD Contactless 00 00", true],
    ["Yubico YubiKey OTP+FIDO+CCID 00 00", false],
    ["Virtual PCD 00 00", false],
    ["Gemalto PC Twin Reader (CLASSIC) 00 00", false],
    ["Alcor Micro AU9540 00 00", false],
  ])("%s → %s", (name, expected) => {
    expect(isContactlessReaderName(name)).toBe(expected);
  });

  it("combines the reader name and the ATR", () => {
    const contact = bytes("3B F8 13 00 00 81 31 FE 45 4A 43 4F 50 76 32 34 31 B7");
    expect(isContactless("Virtual PCD 00 00", contact)).toBe(false);
    expect(isContactless("ACS ACR122U PICC Interface", contact)).toBe(true);
    expect(isContactless("Virtual PCD 00 00", bytes("3B 81 80 01 80 80"))).toBe(true);
  });
});

describe("status words and error codes", () => {
  it("reads presence and the event counter from a reader state", () => {
    expect(cardPresent(undefined)).toBe(false);
    expect(cardPresent(ReaderState.empty)).toBe(false);
    expect(cardPresent(ReaderState.present | ReaderState.changed)).toBe(true);
    expect(cardPresent(ReaderState.present | ReaderState.mute)).toBe(false);
    expect(cardEventCount((3 << 16) | ReaderState.present)).toBe(3);
  });

  it("parses pcsclite's error messages", () => {
    expect(scardCodeOf(new Error("SCardTransmit error: Card was removed.(0x80100069)"))).toBe(
      ScardCode.removedCard,
    );
    // 64-bit LONG on Linux
    expect(scardCodeOf(new Error("SCardConnect error: No smart card inserted.(0x000000008010000c)"))).toBe(
      ScardCode.noSmartcard,
    );
    expect(scardCodeOf(new Error("no code here"))).toBeUndefined();
  });

  it("matches reader names by case-insensitive substring", () => {
    expect(readerMatches("Virtual PCD 00 01", "pcd 00 01")).toBe(true);
    expect(readerMatches("Virtual PCD 00 01", "Yubico")).toBe(false);
    expect(readerMatches("anything", undefined)).toBe(true);
  });
});

describe("toPcscError", () => {
  it("classes 'Access denied' (0x8010006A, a pcscd restarted under the session) as the service gone: exit 10, not 1", () => {
    const raw = new Error("SCardTransmit error: Access denied.(0x8010006a)");
    const typed = toPcscError(raw, "SCardTransmit", "Virtual PCD 00 00");
    expect(typed).toBeInstanceOf(PcscError);
    expect((typed as PcscError).code).toBe("ERR_PCSC_NO_SERVICE");
    expect(typed.exitCode).toBe(ExitCode.noCard);
    expect(typed.message).toMatch(/access denied during SCardTransmit .*pcscd restarted/);
    expect(isServiceGone(ScardCode.securityViolation)).toBe(true);
  });

  it("keeps an unknown PC/SC failure an internal error (exit 1) and a removal a removal", () => {
    const other = toPcscError(
      new Error("SCardTransmit error: Insufficient buffer.(0x80100008)"),
      "SCardTransmit",
    );
    expect(other.exitCode).toBe(ExitCode.internal);
    const removed = toPcscError(
      new Error("SCardTransmit error: Card was removed.(0x80100069)"),
      "SCardTransmit",
      "R",
    );
    expect(removed).toBeInstanceOf(CardRemovedError);
  });
});
