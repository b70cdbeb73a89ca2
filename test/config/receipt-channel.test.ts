// The receipt's channel field (issue 11): optional ninth element after the flags word; receipts
// without it keep their exact encoding; unknown codes are refused.
import { describe, expect, it } from "vitest";
import { decodeReceiptPayload, encodeReceiptPayload, type Receipt } from "../../src/config/receipt.js";
import { ExitCode, MalformedError } from "../../src/errors.js";

const base: Receipt = {
  serial: "1234567",
  configurationId: new Uint8Array(16).fill(7),
  sequence: 3,
  stateDigest: new Uint8Array(32).fill(9),
  time: 1_900_000_000,
  outcome: ExitCode.ok,
};

describe("receipt channel", () => {
  it("round-trips every channel, with and without the dry-run flag", () => {
    for (const channel of ["plaintext", "SCP11b", "SCP11a", "SCP11c"] as const) {
      for (const dryRun of [false, true]) {
        const r: Receipt = { ...base, channel, ...(dryRun ? { dryRun } : {}) };
        const bytes = encodeReceiptPayload(r);
        expect(decodeReceiptPayload(bytes)).toEqual(r);
      }
    }
  });

  it("leaves a receipt without a channel exactly as before (7 elements)", () => {
    const bytes = encodeReceiptPayload(base);
    expect(bytes[0]).toBe(0x87); // CBOR array of 7
    expect(encodeReceiptPayload({ ...base, channel: "SCP11b" })[0]).toBe(0x89);
  });

  it("refuses an unknown channel code", () => {
    const bytes = encodeReceiptPayload({ ...base, channel: "SCP11b" });
    const tampered = bytes.slice();
    tampered[tampered.length - 1] = 0x09;
    expect(() => decodeReceiptPayload(tampered)).toThrow(MalformedError);
  });
});
