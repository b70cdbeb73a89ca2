import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import {
  appendReceipt,
  decodeReceiptLog,
  decodeReceiptPayload,
  encodeReceiptLog,
  encodeReceiptPayload,
  type Receipt,
  signReceipt,
  verifyReceipt,
} from "../../src/config/receipt.js";
import { networkStateDigest } from "../../src/config/shard.js";
import {
  CardFullError,
  CardNotTrustedError,
  ExitCode,
  IntegrityError,
  isOnboardError,
  MalformedError,
  UsageError,
} from "../../src/errors.js";
import { EKU } from "../../src/pki/oids.js";
import { validateChain } from "../../src/pki/validate-chain.js";
import {
  createTestIdentity,
  generatePlan,
  ISSUED_AT,
  METADATA,
  type TestIdentity,
  testPki,
} from "./signing-fixtures.js";

const receiptArb: fc.Arbitrary<Receipt> = fc.record(
  {
    serial: fc.oneof(fc.maxSafeNat().map(String), fc.stringMatching(/^[A-Z0-9-]{1,40}$/)),
    configurationId: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    sequence: fc.maxSafeNat(),
    stateDigest: fc.uint8Array({ minLength: 32, maxLength: 32 }),
    time: fc.maxSafeNat(),
    outcome: fc.constantFrom(...Object.values(ExitCode)),
    dryRun: fc.constant(true),
  },
  { requiredKeys: ["serial", "configurationId", "sequence", "stateDigest", "time", "outcome"] },
);

const trustAll = { validateDevice: () => {} };

let device: TestIdentity;
let deviceP384: TestIdentity;
let example: Receipt;
beforeAll(async () => {
  device = await createTestIdentity({ device: "1234567" });
  deviceP384 = await createTestIdentity({ curve: "P-384", device: "1234567" });
  const plan = generatePlan(1);
  example = {
    serial: plan.hsms[0]!.serial,
    configurationId: METADATA.configurationId,
    sequence: METADATA.sequence,
    stateDigest: networkStateDigest({ hsm: plan.hsms[0]!, subnets: plan.subnets }),
    time: 1_750_000_123,
    outcome: ExitCode.ok,
  };
});

describe("receipt payload", () => {
  it("decode(encode(r)) = r, and stays compact", () => {
    fc.assert(
      fc.property(receiptArb, (receipt) => {
        const bytes = encodeReceiptPayload(receipt);
        expect(decodeReceiptPayload(bytes)).toEqual(receipt);
        expect(bytes.length).toBeLessThanOrEqual(1 + 1 + 65 + 17 + 9 + 34 + 9 + 1);
      }),
    );
    expect(encodeReceiptPayload(example).length).toBeLessThanOrEqual(70);
  });

  it("refuses what it cannot state", () => {
    for (const bad of [
      { ...example, configurationId: new Uint8Array(8) },
      { ...example, stateDigest: new Uint8Array(31) },
      { ...example, outcome: 99 as ExitCode },
      { ...example, sequence: 1.5 },
      { ...example, serial: "" },
    ]) {
      expect(() => encodeReceiptPayload(bad)).toThrow(UsageError);
    }
  });

  it("refuses payloads that are not canonical receipts", () => {
    const good = encodeReceiptPayload(example);
    for (const bytes of [
      good.subarray(0, good.length - 1),
      new Uint8Array([...good.subarray(0, good.length - 1), 99]), // unknown outcome
      new Uint8Array([0x87, 0x02, ...good.subarray(2)]), // format version 2
      new Uint8Array([0x86, ...good.subarray(1, good.length - 1)]), // six elements
    ]) {
      expect(() => decodeReceiptPayload(bytes)).toThrow(MalformedError);
    }
  });
});

describe("dry-run receipts (issue 12)", () => {
  it("a receipt without the flag keeps the seven-element encoding written before (old receipts decode)", () => {
    const bytes = encodeReceiptPayload(example);
    expect(bytes[0]).toBe(0x87);
    const decoded = decodeReceiptPayload(bytes);
    expect(decoded.dryRun).toBeUndefined();
    expect(decoded).toEqual(example);
  });

  it("a dry-run receipt carries flags word 1 as its eighth element, and decodes as dry run", () => {
    const bytes = encodeReceiptPayload({ ...example, dryRun: true });
    expect(bytes[0]).toBe(0x88);
    expect(bytes[bytes.length - 1]).toBe(0x01);
    expect(decodeReceiptPayload(bytes)).toEqual({ ...example, dryRun: true });
  });

  it("refuses a flags word of 0 (not canonical) and unknown flag bits", () => {
    const good = encodeReceiptPayload(example);
    for (const flag of [0x00, 0x02, 0x03, 0x17]) {
      const bytes = new Uint8Array([0x88, ...good.subarray(1), flag]);
      expect(() => decodeReceiptPayload(bytes)).toThrow(MalformedError);
    }
  });

  it("any flags word: decodes to exactly what encodes back, or a MalformedError", () => {
    const good = encodeReceiptPayload(example);
    fc.assert(
      fc.property(fc.nat({ max: 0xffff }), (flag) => {
        const tail = flag < 24 ? [flag] : flag < 256 ? [0x18, flag] : [0x19, flag >> 8, flag & 0xff];
        const bytes = new Uint8Array([0x88, ...good.subarray(1), ...tail]);
        try {
          const r = decodeReceiptPayload(bytes);
          expect(flag).toBe(1);
          expect(r.dryRun).toBe(true);
          expect(encodeReceiptPayload(r)).toEqual(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(MalformedError);
          expect(flag).not.toBe(1);
        }
      }),
    );
  });
});

describe("signed receipts", () => {
  it("sign → verify gives the receipt back, with the device chain checked for its serial", async () => {
    for (const identity of [device, deviceP384]) {
      const bytes = await signReceipt(example, identity.signer);
      const calls: [number, string][] = [];
      const verified = await verifyReceipt(bytes, {
        validateDevice: (chain, serial) => void calls.push([chain.length, serial]),
      });
      expect(verified.receipt).toEqual(example);
      expect(verified.certificateChain).toEqual(identity.chain.slice(0, 2));
      expect(calls).toEqual([[2, example.serial]]);
      const full = await verifyReceipt(
        await signReceipt(example, identity.signer, { chain: "full" }),
        trustAll,
      );
      expect(full.certificateChain).toEqual(identity.chain);
    }
  });

  it("is compact with the device certificate alone", async () => {
    const bytes = await signReceipt(example, device.signer, { chain: "leaf" });
    const verified = await verifyReceipt(bytes, trustAll);
    expect(verified.certificateChain).toEqual([device.chain[0]]);
    expect(bytes.length).toBeLessThan(device.chain[0]!.length + 160);
  });

  it("passes the device check's refusal through", async () => {
    const bytes = await signReceipt(example, device.signer);
    const refusal = new CardNotTrustedError("device certificate names another serial");
    await expect(
      verifyReceipt(bytes, {
        validateDevice: () => {
          throw refusal;
        },
      }),
    ).rejects.toBe(refusal);
  });

  it("round-trips any receipt through signing", async () => {
    await fc.assert(
      fc.asyncProperty(receiptArb, async (receipt) => {
        const verified = await verifyReceipt(
          await signReceipt(receipt, device.signer, { chain: "leaf" }),
          trustAll,
        );
        expect(verified.receipt).toEqual(receipt);
      }),
      { numRuns: 50 },
    );
  });

  it("detects any single changed byte (every position)", async () => {
    const bytes = await signReceipt(example, device.signer, { chain: "leaf" });
    const accepted: number[] = [];
    for (let at = 0; at < bytes.length; at++) {
      for (const delta of [1, 0x80]) {
        const changed = new Uint8Array(bytes);
        changed[at] = (changed[at]! + delta) & 0xff;
        try {
          await verifyReceipt(changed, trustAll);
          accepted.push(at);
        } catch (e) {
          if (!(e instanceof IntegrityError)) throw e;
        }
      }
    }
    expect(accepted).toEqual([]);
  });

  it("never throws anything but typed errors on random bytes", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), async (bytes) => {
        for (const attempt of [
          () => verifyReceipt(bytes, trustAll),
          () => decodeReceiptPayload(bytes),
          () => decodeReceiptLog(bytes),
        ]) {
          try {
            await attempt();
          } catch (e) {
            expect(isOnboardError(e), String(e)).toBe(true);
          }
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe("with the project's PKI (src/pki) as validateDevice", () => {
  /** The station's check: the device chain validates to the root and its leaf names the serial. */
  async function validateDevice(chain: readonly Uint8Array[], serial: string): Promise<void> {
    const validated = await validateChain({
      leaf: chain[0]!,
      intermediates: chain.slice(1),
      trustAnchor: (await testPki()).root.certificate,
      requiredEku: EKU.deviceReceipt,
      requireCrl: false,
      now: new Date(ISSUED_AT.getTime() + 86_400_000),
    });
    if (validated.subjectSerialNumber !== serial) {
      throw new CardNotTrustedError(
        `device certificate is for ${validated.subjectSerialNumber}, receipt for ${serial}`,
      );
    }
  }

  it("accepts the device's own receipt, refuses one for another serial and one by an officer card", async () => {
    const receipt = { ...example, serial: "1234567" };
    await expect(
      verifyReceipt(await signReceipt(receipt, device.signer), { validateDevice }),
    ).resolves.toMatchObject({
      receipt,
    });
    const forOther = await signReceipt({ ...receipt, serial: "7654321" }, device.signer);
    await expect(verifyReceipt(forOther, { validateDevice })).rejects.toThrow(
      /device certificate is for 1234567/,
    );
    const officer = await createTestIdentity();
    await expect(
      verifyReceipt(await signReceipt(receipt, officer.signer), { validateDevice }),
    ).rejects.toThrow(CardNotTrustedError);
  });
});

describe("receipt objects", () => {
  it("append receipts until the object is full, then say so", async () => {
    const receipt = await signReceipt(example, device.signer, { chain: "leaf" });
    let log: Uint8Array | undefined;
    let count = 0;
    for (;;) {
      try {
        log = appendReceipt(log, receipt, 3063);
        count++;
      } catch (e) {
        expect(e).toBeInstanceOf(CardFullError);
        break;
      }
    }
    expect(count).toBeGreaterThanOrEqual(3);
    expect(log!.length).toBeLessThanOrEqual(3063);
    const receipts = decodeReceiptLog(log!);
    expect(receipts).toHaveLength(count);
    await expect(verifyReceipt(receipts[count - 1]!, trustAll)).resolves.toMatchObject({ receipt: example });
    expect(encodeReceiptLog(receipts)).toEqual(log);
  });

  it("starts a log on an empty object and refuses a malformed one", () => {
    expect(decodeReceiptLog(appendReceipt(new Uint8Array(0), new Uint8Array([1]), 3063))).toEqual([
      new Uint8Array([1]),
    ]);
    expect(() => appendReceipt(new Uint8Array([0xa0]), new Uint8Array([1]), 3063)).toThrow(MalformedError);
  });
});
