/**
 * Issue 11: a hostile card against the SCP11a steps of the station (src/apdu/scp11/host.ts,
 * oce-ca.ts), through the whole PIV stack in this process with the station's channel policy
 * (SCP11a: the station's OCE certificate from `pki issue-oce`, the owner's token CA installed on the
 * card as its OCE CA). The hostile modes (src/card-emulator/hostile-card.ts) lie about
 * - the OCE CA identifiers (GET DATA FF33): wrong tag, wrong length, unpaired, a length that
 *   overruns, a key identifier too long, thousands of pairs, a 4 GiB length, odd status words;
 * - PERFORM SECURITY OPERATION: odd status words; 9000 without the card having seen the OCE
 *   certificate (then the genuine card refuses MUTUAL AUTHENTICATE, or a made-up receipt fails);
 * - the MUTUAL AUTHENTICATE answer: ePK.SD off the curve, the point at infinity, the zero point, a
 *   wrong length; the receipt missing, twice, or wrong.
 * Each one ends in its typed error with its documented exit code (15: once the card has shown its
 * SCP certificate store nothing means "no SCP" any more), while the channel opens — before any PIN: no VERIFY is sent, nothing
 * after the step that lied reaches the card, and the PIN and PUK (values and retry counters) and
 * every data object are as before.
 */
import { describe, expect, test } from "vitest";
import {
  type HostileMode,
  type HostileOptions,
  MAX_READER_RESPONSE_BYTES,
  scpOceCaIdentifiersRequest,
  scpPerformSecurityOperation,
} from "../../src/card-emulator/hostile-card.js";
import type { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import {
  MalformedError,
  type OnboardError,
  ScpIntegrityError,
  ScpMalformedError,
  ScpOceRefusedError,
} from "../../src/errors.js";
import type { PivElement } from "../../src/secure-element/piv-element.js";
import { cardOf, expectRefusedWhileOpening, scp11aCardBed, useScpCardBed } from "./scp-support.js";
import { openMetered, persistentState as persistent, TransportMeter } from "./support.js";

const INS_GET_DATA = 0xca;
const INS_PSO = 0x2a;
const INS_MUTUAL_AUTHENTICATE = 0x82;

/** The cards used here are `bed.scp11a`: LAB_PLAN, SCP11b and SCP11a keys from `bed.vendor`, the token CA as OCE CA. */
const bed = useScpCardBed(() => scp11aCardBed("scp11a-hostile", "Hostile SCP11a Test Card Vendor"));

/** A fresh card of the template and its state store, hostile when asked (armed from the start). */
function cardWith(mode?: HostileMode, options: HostileOptions = {}) {
  return cardOf(bed.scp11a, mode, options);
}

/** Opens the card as the station does with an OCE key: SCP11a to the vendor CA required, no plaintext. */
function openScp11a(card: VirtualPivCard, meter: TransportMeter): Promise<PivElement> {
  return openMetered(card, meter, {
    scp: { variant: "a", kvn: 1, trust: { anchors: [bed.vendorDer] }, oce: bed.oce },
    allowPlaintext: false,
  });
}

interface Case {
  readonly name: string;
  readonly mode: HostileMode;
  readonly options?: HostileOptions;
  readonly error: abstract new (...args: never[]) => OnboardError;
  readonly exit: number;
  readonly reason: RegExp;
  /** The instruction of the last command that reached the wire. */
  readonly last: number;
}

const FF33 = { last: INS_GET_DATA } as const;
const CASES: Case[] = [
  // GET DATA FF33: the OCE CA identifiers
  {
    name: "scp-oce-ids-wrong-tag",
    mode: "scp-oce-ids-wrong-tag",
    error: ScpMalformedError,
    exit: 15,
    reason: /FF33\): expected 42/,
    ...FF33,
  },
  {
    name: "scp-oce-ids-wrong-length",
    mode: "scp-oce-ids-wrong-length",
    error: ScpMalformedError,
    exit: 15,
    reason: /FF33\): expected 83 with KID and KVN/,
    ...FF33,
  },
  {
    name: "scp-oce-ids-unpaired",
    mode: "scp-oce-ids-unpaired",
    error: ScpMalformedError,
    exit: 15,
    reason: /FF33\): unpaired item/,
    ...FF33,
  },
  {
    name: "scp-oce-ids-length-overrun",
    mode: "scp-oce-ids-length-overrun",
    error: ScpMalformedError,
    exit: 15,
    reason: /FF33\) are not BER-TLV/,
    ...FF33,
  },
  {
    name: "scp-oce-ids-long-ski",
    mode: "scp-oce-ids-long-ski",
    error: ScpMalformedError,
    exit: 15,
    reason: /1-32 byte key identifier/,
    ...FF33,
  },
  {
    name: "scp-oce-ids-huge (17 pairs: one more than the decoder takes)",
    mode: "scp-oce-ids-huge",
    options: { bytes: 17 },
    error: ScpMalformedError,
    exit: 15,
    reason: /FF33\) are not BER-TLV/,
    ...FF33,
  },
  {
    name: "scp-oce-ids-huge (2,000 pairs, 56 KB in one answer: the response bound stops it)",
    mode: "scp-oce-ids-huge",
    error: MalformedError,
    exit: 15,
    reason: /exceeds 32768 bytes/,
    ...FF33,
  },

  {
    name: "scp-oce-ids-huge-length",
    mode: "scp-oce-ids-huge-length",
    error: ScpMalformedError,
    exit: 15,
    reason: /FF33\) are not BER-TLV/,
    ...FF33,
  },
  {
    name: "FF33 answered 6F00",
    mode: "bad-status-word",
    options: { when: scpOceCaIdentifiersRequest, statusWord: 0x6f00 },
    // After the card's SCP chain was read: a channel failure, not an older card (scp-downgrade.test.ts).
    error: ScpIntegrityError,
    exit: 15,
    reason: /OCE CA identifiers: card answered 6F00.*channel failure, not an older card/,
    ...FF33,
  },
  // PERFORM SECURITY OPERATION
  ...[0x6f00, 0x6982, 0x6a88, 0x6400].map(
    (statusWord): Case => ({
      name: `PSO answered ${statusWord.toString(16).toUpperCase()}`,
      mode: "bad-status-word",
      options: { when: scpPerformSecurityOperation, statusWord },
      error: ScpOceRefusedError,
      exit: 15,
      reason: new RegExp(
        `refused the station's OCE certificate \\(${statusWord.toString(16).toUpperCase()}\\)`,
      ),
      last: INS_PSO,
    }),
  ),
  {
    name: "scp-pso-swallowed (9000, the card never saw the certificate; it refuses MUTUAL AUTHENTICATE)",
    mode: "scp-pso-swallowed",
    error: ScpIntegrityError,
    exit: 15,
    reason: /refused to open SCP11a \(authenticate answered 6985\).*not an older card/,
    last: INS_MUTUAL_AUTHENTICATE,
  },
  {
    name: "scp-oce-accepted-blindly (9000 to the certificate, then a made-up receipt)",
    mode: "scp-oce-accepted-blindly",
    error: ScpIntegrityError,
    exit: 15,
    reason: /receipt does not verify/,
    last: INS_MUTUAL_AUTHENTICATE,
  },
  // The MUTUAL AUTHENTICATE answer (the scpAuthenticate modes, here against 80 82)
  ...(
    [
      ["scp-epk-off-curve", ScpIntegrityError, /ePK\.SD: not a point on P-256/],
      ["scp-epk-identity", ScpMalformedError, /ePK\.SD is not a 65-byte point/],
      ["scp-epk-zero", ScpIntegrityError, /ePK\.SD: not a point on P-256/],
      ["scp-epk-wrong-length", ScpMalformedError, /ePK\.SD is not a 65-byte point/],
      ["scp-receipt-missing", ScpMalformedError, /must be 5F49 then 86/],
      ["scp-receipt-duplicated", ScpMalformedError, /not BER-TLV|5F49 then 86/],
      ["scp-receipt-wrong", ScpIntegrityError, /receipt does not verify/],
    ] as const
  ).map(
    ([mode, error, reason]): Case => ({
      name: `${mode} (MUTUAL AUTHENTICATE)`,
      mode,
      error,
      exit: 15,
      reason,
      last: INS_MUTUAL_AUTHENTICATE,
    }),
  ),
];

describe("the honest card opens SCP11a (the baseline every lie below departs from)", () => {
  test("FF33, PSO, MUTUAL AUTHENTICATE, then PIV wrapped", async () => {
    const { card } = cardWith();
    const meter = new TransportMeter();
    const element = await openScp11a(card, meter);
    try {
      expect(element.info.channel).toMatchObject({ kind: "scp11", protocol: "SCP11a" });
      expect(meter.instructions).toContain(INS_PSO);
      expect(meter.instructions).toContain(INS_MUTUAL_AUTHENTICATE);
      expect(card.scpSessionOpen).toBe(true);
    } finally {
      await element.close();
    }
  });
});

describe("hostile card during SCP11a: refused while the channel opens, before any PIN, the card untouched", () => {
  for (const c of CASES)
    test(`${c.name}: ${c.error.name}, exit ${c.exit}`, async () => {
      const { card, store, hostile } = cardWith(c.mode, c.options ?? {});
      const before = persistent(store);
      const meter = new TransportMeter();
      await expectRefusedWhileOpening(() => openScp11a(card, meter), hostile, meter, c);
      expect(meter.instructions.at(-1)).toBe(c.last);
      expect(meter.bytesReceived).toBeLessThanOrEqual(2 * MAX_READER_RESPONSE_BYTES + 8_192);
      expect(persistent(store)).toEqual(before);
    });
});
