/**
 * Issue 11, the downgrade rule (docs/DECISIONS.md "No downgrade once the card shows SCP";
 * src/apdu/scp11/host.ts): with `--allow-plaintext` a card is used in clear only when it shows it has
 * no SCP11 at all — SELECT of the issuer security domain answered 6A82, or GET DATA BF21 answered
 * 6A88/6A82 (no SCP11 key of that reference). Any other answer to those two commands, and every
 * failure once the card has shown its SCP certificate store (FF33 odd, PSO, the authenticate command
 * refused or answered wrongly), is a channel failure (exit 15; an untrusted chain 11) even with
 * `--allow-plaintext`: the card is not used in clear, nothing at all is sent after the failing
 * command, so no VERIFY (PIN) and no plaintext GET DATA.
 *
 * The policies are the ones station and agent build (`secureChannelPolicy`: SCP11b for the agent and
 * a station without OCE key, SCP11a for a station after `pki issue-oce`), with plaintext allowed,
 * through PivElement.open (the path `openCard` takes for both). Every APDU on the wire is recorded.
 */
import { beforeAll, describe, expect, test } from "vitest";
import type { MemoryCardStateStore } from "../../src/card-emulator/card-state-store.js";
import {
  type CommandMatcher,
  type HostileMode,
  type HostileOptions,
  scpAuthenticate,
  scpCertificateStoreRequest,
  scpMutualAuthenticate,
  scpOceCaIdentifiersRequest,
  scpPerformSecurityOperation,
} from "../../src/card-emulator/hostile-card.js";
import type { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import {
  CertificateValidationError,
  ExitCode,
  type OnboardError,
  ScpAbsentError,
  ScpIntegrityError,
  ScpOceRefusedError,
  ScpUnavailableError,
} from "../../src/errors.js";
import { createScpVendorCa } from "../../src/pki/scp-certificates.js";
import { secureChannelPolicy } from "../../src/secure-element/channel-policy.js";
import { PivElement, type SecureChannelPolicy } from "../../src/secure-element/piv-element.js";
import type { CardTransport } from "../../src/transport/card-transport.js";
import { InProcessTransport } from "../../src/transport/in-process.js";
import { PIN } from "../agent/fixtures.js";
import { cardOf, scp11aCardBed, useScpCardBed } from "./scp-support.js";
import { type CardTemplate, expectTypedError } from "./support.js";

const INS_SELECT = 0xa4;
const INS_VERIFY = 0x20;
const INS_GET_DATA_PIV = 0xcb;
const INS_GET_DATA_GP = 0xca;
const INS_PSO = 0x2a;
const INS_GET_RESPONSE = 0xc0;
const INS_INTERNAL_AUTHENTICATE = 0x88;
const INS_MUTUAL_AUTHENTICATE = 0x82;
const ISD_AID = "a000000151000000";

/** SELECT of the issuer security domain (`00 A4 04 00 08 A000000151000000`). */
const selectIsd: CommandMatcher = (command) =>
  command[1] === INS_SELECT &&
  Buffer.from(command.subarray(5, 5 + (command[4] ?? 0))).toString("hex") === ISD_AID;

/**
 * The cards: `bed.older`, a personalised card without any security domain (a YubiKey before 5.7:
 * the "older card"); `bed.scp11b`, the same card with an SCP11b key only (KID 13): a security domain,
 * no SCP11a key; `bed.scp11a`, the same card with SCP11b and SCP11a keys and the owner's token CA as
 * its OCE CA.
 */
const bed = useScpCardBed(() => scp11aCardBed("scp-downgrade", "Downgrade Test Card Vendor"));
let otherVendorDer: Uint8Array;

beforeAll(async () => {
  otherVendorDer = new Uint8Array((await createScpVendorCa("Some Other Card Vendor")).certificate.rawData);
});

/** One APDU as it crossed the wire: the command bytes and the card's status word. */
interface WireRecord {
  readonly command: Uint8Array;
  readonly sw: number;
}

/** Records every command and status word between the host stack and the card. */
function recorded(inner: CardTransport, wire: WireRecord[]): CardTransport {
  return {
    atr: inner.atr,
    contactless: inner.contactless,
    readerName: inner.readerName,
    transmit: async (command) => {
      const response = await inner.transmit(command);
      wire.push({ command: command.slice(), sw: (response.at(-2)! << 8) | response.at(-1)! });
      return response;
    },
    close: () => inner.close(),
  };
}

type Policy = "agent (SCP11b)" | "station (SCP11a)";

function policy(which: Policy, allowPlaintext: boolean, anchors = [bed.vendorDer]): SecureChannelPolicy {
  return which === "agent (SCP11b)"
    ? secureChannelPolicy(anchors, allowPlaintext)
    : secureChannelPolicy(anchors, allowPlaintext, bed.oce);
}

/** Opens a card of `template` (hostile when asked) under `channel`; the wire is recorded. */
async function open(
  template: CardTemplate,
  channel: SecureChannelPolicy,
  mode?: HostileMode,
  options: HostileOptions = {},
): Promise<{
  wire: WireRecord[];
  element?: PivElement;
  failure?: unknown;
  lies: number;
  card: VirtualPivCard;
  store: MemoryCardStateStore;
}> {
  const { card, store, hostile } = cardOf(template, mode, options);
  const wire: WireRecord[] = [];
  const transport = recorded(new InProcessTransport(card, { readerName: "Virtual PIV card" }), wire);
  try {
    const element = await PivElement.open(transport, { channel });
    return { wire, element, lies: hostile?.lies ?? 0, card, store };
  } catch (failure) {
    return { wire, failure, lies: hostile?.lies ?? 0, card, store };
  }
}

interface Case {
  readonly name: string;
  readonly policy: Policy;
  readonly template: () => CardTemplate;
  /** Undefined: an honest card. */
  readonly mode?: HostileMode;
  readonly options?: HostileOptions;
  readonly anchors?: () => Uint8Array[];
  readonly error: abstract new (...args: never[]) => OnboardError;
  readonly exit: number;
  readonly reason: RegExp;
  /** The instruction of the command that failed: the last one on the wire (or one of these). */
  readonly last: number | readonly number[];
}

const bad = (when: CommandMatcher, statusWord: number): HostileOptions => ({ when, statusWord });

const CASES: Case[] = [
  // The two answers a colleague found softened to plaintext: after a valid SCP chain.
  {
    name: "FF33 (OCE CA identifiers) answered 6F00 after the chain validated",
    policy: "station (SCP11a)",
    template: () => bed.scp11a,
    mode: "bad-status-word",
    options: bad(scpOceCaIdentifiersRequest, 0x6f00),
    error: ScpIntegrityError,
    exit: ExitCode.integrity,
    reason: /OCE CA identifiers: card answered 6F00.*channel failure, not an older card/,
    last: INS_GET_DATA_GP,
  },
  {
    name: "PSO said 9000 without seeing the certificate, MUTUAL AUTHENTICATE then refused (6985)",
    policy: "station (SCP11a)",
    template: () => bed.scp11a,
    mode: "scp-pso-swallowed",
    error: ScpIntegrityError,
    exit: ExitCode.integrity,
    reason: /refused to open SCP11a \(authenticate answered 6985\).*not an older card/,
    last: INS_MUTUAL_AUTHENTICATE,
  },
  // The same rule at every other step once the store was shown.
  ...[0x6985, 0x6a88, 0x6d00].map(
    (sw): Case => ({
      name: `MUTUAL AUTHENTICATE answered ${sw.toString(16).toUpperCase()}`,
      policy: "station (SCP11a)",
      template: () => bed.scp11a,
      mode: "bad-status-word",
      options: bad(scpMutualAuthenticate, sw),
      error: ScpIntegrityError,
      exit: ExitCode.integrity,
      reason: new RegExp(`authenticate answered ${sw.toString(16).toUpperCase()}`),
      last: INS_MUTUAL_AUTHENTICATE,
    }),
  ),
  {
    name: "PSO refused (6A88)",
    policy: "station (SCP11a)",
    template: () => bed.scp11a,
    mode: "bad-status-word",
    options: bad(scpPerformSecurityOperation, 0x6a88),
    error: ScpOceRefusedError,
    exit: ExitCode.integrity,
    reason: /refused the station's OCE certificate \(6A88\)/,
    last: INS_PSO,
  },
  ...[0x6985, 0x6a88, 0x6a82, 0x6d00].map(
    (sw): Case => ({
      name: `INTERNAL AUTHENTICATE answered ${sw.toString(16).toUpperCase()}`,
      policy: "agent (SCP11b)",
      template: () => bed.scp11b,
      mode: "bad-status-word",
      options: bad(scpAuthenticate, sw),
      error: ScpIntegrityError,
      exit: ExitCode.integrity,
      reason: new RegExp(
        `refused to open SCP11b \\(authenticate answered ${sw.toString(16).toUpperCase()}\\)`,
      ),
      last: INS_INTERNAL_AUTHENTICATE,
    }),
  ),
  {
    name: "a forged receipt",
    policy: "agent (SCP11b)",
    template: () => bed.scp11b,
    mode: "scp-receipt-wrong",
    error: ScpIntegrityError,
    exit: ExitCode.integrity,
    reason: /receipt does not verify/,
    last: INS_INTERNAL_AUTHENTICATE,
  },
  {
    name: "an SCP chain from an untrusted vendor",
    policy: "agent (SCP11b)",
    template: () => bed.scp11b,
    // An honest card; the host trusts another vendor.
    anchors: () => [otherVendorDer],
    error: CertificateValidationError,
    exit: ExitCode.cardNotTrusted,
    reason: /SCP/,
    // The store arrives over GET RESPONSE chaining (61xx).
    last: [INS_GET_DATA_GP, INS_GET_RESPONSE],
  },
  // Before the store: an answer that is not one of the documented "no SCP" answers.
  ...(["agent (SCP11b)", "station (SCP11a)"] as const).flatMap((p): Case[] => [
    {
      name: `SELECT of the security domain answered 6F00`,
      policy: p,
      template: () => bed.scp11a,
      mode: "bad-status-word",
      options: bad(selectIsd, 0x6f00),
      error: ScpIntegrityError,
      exit: ExitCode.integrity,
      reason: /security domain answered 6F00, not a "no SCP" answer/,
      last: INS_SELECT,
    },
    {
      name: `GET DATA BF21 answered 6982`,
      policy: p,
      template: () => bed.scp11a,
      mode: "bad-status-word",
      options: bad(scpCertificateStoreRequest, 0x6982),
      error: ScpIntegrityError,
      exit: ExitCode.integrity,
      reason: /certificate store for key 1[13]\/1: card answered 6982, not a "no SCP" answer/,
      last: INS_GET_DATA_GP,
    },
  ]),
];

describe("with --allow-plaintext, a card that has shown SCP is never used in clear (exit 15, nothing sent after)", () => {
  for (const c of CASES)
    test(`${c.policy}: ${c.name} → ${c.error.name}, exit ${c.exit}`, async () => {
      const card = await open(c.template(), policy(c.policy, true, c.anchors?.()), c.mode, c.options ?? {});
      await card.element?.close();
      if (c.mode) expect(card.lies, "the hostile card was never reached").toBeGreaterThan(0);
      expectTypedError(card.failure, c.error, c.exit);
      expect(card.failure).not.toBeInstanceOf(ScpUnavailableError);
      expect((card.failure as Error).message).toMatch(c.reason);
      // The failing command is the last one on the wire: no plaintext SELECT PIV, GET DATA or
      // VERIFY after it, and no PIN anywhere.
      expect([c.last].flat()).toContain(card.wire.at(-1)!.command[1]);
      expect(card.wire.map((r) => r.command[1])).not.toContain(INS_VERIFY);
      expect(card.wire.map((r) => r.command[1])).not.toContain(INS_GET_DATA_PIV);
      // Nothing was ever wrapped either: the channel never opened on the host's side.
      expect(card.wire.every((r) => (r.command[0]! & 0x04) === 0)).toBe(true);
    });
});

describe("a card that shows it has no SCP", () => {
  const NO_SCP: {
    name: string;
    policy: Policy;
    template: () => CardTemplate;
    /** The answer that said "no SCP": the instruction and its status word. */
    said: { ins: number; sw: number };
  }[] = [
    {
      name: "an older card: no security domain (SELECT ISD 6A82)",
      policy: "agent (SCP11b)",
      template: () => bed.older,
      said: { ins: INS_SELECT, sw: 0x6a82 },
    },
    {
      name: "an older card: no security domain (SELECT ISD 6A82)",
      policy: "station (SCP11a)",
      template: () => bed.older,
      said: { ins: INS_SELECT, sw: 0x6a82 },
    },
    {
      name: "no SCP11a key (GET DATA BF21 for key 11/01: 6A88)",
      policy: "station (SCP11a)",
      template: () => bed.scp11b,
      said: { ins: INS_GET_DATA_GP, sw: 0x6a88 },
    },
  ];

  for (const c of NO_SCP) {
    test(`${c.policy}, ${c.name}, --allow-plaintext: used in clear, recorded as plaintext; the wire shows it`, async () => {
      const card = await open(c.template(), policy(c.policy, true));
      expect(card.failure, String(card.failure)).toBeUndefined();
      const element = card.element!;
      try {
        expect(element.info.channel).toEqual({ kind: "plaintext" });
        await element.verifyPin(PIN);
        expect(await element.readItem("manifest")).toBeDefined();
      } finally {
        await element.close();
      }
      const said = card.wire.findIndex((r) => r.command[1] === c.said.ins && r.sw === c.said.sw);
      expect(said, "the card said it has no SCP").toBeGreaterThanOrEqual(0);
      const after = card.wire.slice(said + 1);
      // Nothing wrapped (CLA bit 3 clear), no handshake command: plaintext PIV, PIN in clear.
      expect(after.every((r) => (r.command[0]! & 0x04) === 0)).toBe(true);
      expect(after.map((r) => r.command[1])).not.toContain(INS_INTERNAL_AUTHENTICATE);
      expect(after.map((r) => r.command[1])).not.toContain(INS_MUTUAL_AUTHENTICATE);
      const verify = after.find((r) => r.command[1] === INS_VERIFY && r.command[4] === 8);
      expect(Buffer.from(verify!.command.subarray(5, 5 + PIN.length)).toString("latin1")).toBe(PIN);
      expect(after.some((r) => r.command[0] === 0x00 && r.command[1] === INS_GET_DATA_PIV)).toBe(true);
    });

    test(`${c.policy}, ${c.name}, no --allow-plaintext: refused, exit 11, nothing after that answer`, async () => {
      const card = await open(c.template(), policy(c.policy, false));
      await card.element?.close();
      expectTypedError(card.failure, ScpUnavailableError, ExitCode.cardNotTrusted);
      expect((card.failure as Error).cause).toBeInstanceOf(ScpAbsentError);
      expect((card.failure as Error).message).toMatch(
        /cannot open a secure channel \(older card\?\): refused; --allow-plaintext would accept it/,
      );
      expect(card.wire.at(-1)).toMatchObject({ sw: c.said.sw });
      expect(card.wire.at(-1)!.command[1]).toBe(c.said.ins);
    });
  }
});
