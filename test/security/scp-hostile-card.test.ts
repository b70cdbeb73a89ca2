/**
 * Issue 11: a hostile card against the SCP11 decoders of the host (src/apdu/scp11), through the
 * whole PIV stack in this process (PivElement with the station's and agent's channel policy,
 * SCP11b to the test vendor CA). The hostile modes (src/card-emulator/hostile-card.ts) lie about
 * - the certificate store (GET DATA BF21): wrong lengths, a huge or endless store, wrong tags, the
 *   leaf first, the BF21 wrapper doubled or repeated (one wrapper, or none, is valid);
 * - the handshake answer: ePK.SD off the curve, the point at infinity, the zero point, a wrong
 *   length; the receipt missing, twice, or wrong;
 * - wrapped answers: a flipped R-MAC, an answer cut short, a bare 9000 without R-MAC, an error
 *   status with data, a card-MACed block without its padding, a card-MACed answer too long.
 * Each one must end in its typed error with its documented exit code (15 for a channel failure; 11
 * for an SCP certificate chain that does not validate), before any PIN reaches the card: no VERIFY
 * is sent, the card's PIN retry counter is untouched, nothing is written onto the card and — where
 * the agent got as far as its flow — nothing is applied (dry-run record and network state as before).
 *
 * It also pins the two rules of the host's response handling (docs/SECURITY.md §9.1):
 * - R-MAC: exactly 9000, 62xx and 63xx carry one (even without data); every other status is bare;
 * - 6982: a bare 6982 after which the session is still alive (a wrapped probe answers with a valid
 *   R-MAC) is the application's "security status not satisfied" (SecurityStatusError, the session
 *   goes on); if the session is gone (the card rejected the C-MAC) it is a channel failure (15).
 */
import { describe, expect, test } from "vitest";
import { runAgentOnce } from "../../src/agent/agent.js";
import { AgentStateStore } from "../../src/agent/state-store.js";
import { DEFAULT_MAX_RESPONSE_BYTES } from "../../src/apdu/chaining.js";
import { SecurityStatusError } from "../../src/apdu/status-words.js";
import {
  type HostileMode,
  type HostileOptions,
  MAX_READER_RESPONSE_BYTES,
  scpCertificateStoreRequest,
} from "../../src/card-emulator/hostile-card.js";
import type { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import {
  CertificateValidationError,
  ExitCode,
  MalformedError,
  type OnboardError,
  ScpIntegrityError,
  ScpMalformedError,
} from "../../src/errors.js";
import type { PivElement } from "../../src/secure-element/piv-element.js";
import { writeConfigurationToCard } from "../../src/station/write-card.js";
import { initAgent, LAB_PLAN, PIN, pins } from "../agent/fixtures.js";
import { cardOf, expectRefusedWhileOpening, scpCardBed, useScpCardBed } from "./scp-support.js";
import {
  dryRunIn,
  dryRunRecord,
  expectTypedError,
  networkFacts,
  openMetered,
  persistentState as persistent,
  TransportMeter,
} from "./support.js";

const INS_VERIFY = 0x20;

/** The cards used here are `bed.scp11b`: LAB_PLAN (sequence 3) and an SCP11b key from `bed.vendor`. */
const bed = useScpCardBed(() => scpCardBed("scp-hostile", "Hostile Test Card Vendor"));

/** A fresh card of the template, its state store (to compare before/after), hostile (not yet armed) when asked. */
function cardWith(mode?: HostileMode, options: HostileOptions = {}) {
  return cardOf(bed.scp11b, mode, { ...options, armed: false });
}

/** Opens the card as station and agent do: SCP11b to the vendor CA required, no plaintext. */
function openScp(card: VirtualPivCard, meter: TransportMeter): Promise<PivElement> {
  return openMetered(card, meter, {
    scp: { variant: "b", kvn: 1, trust: { anchors: [bed.vendorDer] } },
    allowPlaintext: false,
  });
}

/**
 * A card of the template whose first wrapped PUT DATA gets one bit flipped, in its last (or only)
 * piece — the card checks the C-MAC once the chain is whole — inside the encrypted data, before the
 * C-MAC. `flip.sw` is the card's answer to it.
 */
function cardFlippingFirstWrappedPutData() {
  const flip: { fired: boolean; sw?: number } = { fired: false };
  const { card, store } = bed.scp11b.clone((command, answer) => {
    if (flip.fired || (command[0]! & 0x04) === 0 || command[1] !== 0xdb || (command[0]! & 0x10) !== 0)
      return answer(command);
    flip.fired = true;
    const flipped = command.slice();
    flipped[flipped.length - 12]! ^= 0x10;
    const r = answer(flipped);
    flip.sw = (r[r.length - 2]! << 8) | r[r.length - 1]!;
    return r;
  });
  return { card, store, flip };
}

interface Case {
  readonly mode: HostileMode;
  readonly error: abstract new (...args: never[]) => OnboardError;
  readonly exit: number;
  readonly reason: RegExp;
  readonly options?: () => HostileOptions;
}

// ---------------------------------------------------------------------------------------------
// The handshake: refused while the channel opens (before the flow, before any PIN)

const HANDSHAKE_CASES: Case[] = [
  { mode: "scp-store-wrong-length", error: ScpMalformedError, exit: 15, reason: /certificate store/ },
  { mode: "scp-store-length-overrun", error: ScpMalformedError, exit: 15, reason: /certificate store/ },
  { mode: "scp-store-huge-length", error: ScpMalformedError, exit: 15, reason: /certificate store/ },
  { mode: "scp-store-oversized", error: ScpMalformedError, exit: 15, reason: /\(max 16384\)/ },
  {
    mode: "scp-store-wrong-tag",
    error: ScpMalformedError,
    exit: 15,
    reason: /something else than a certificate/,
  },
  {
    mode: "scp-store-leaf-first",
    error: CertificateValidationError,
    exit: ExitCode.cardNotTrusted,
    reason: /SCP certificate/,
    options: () => ({ content: bed.vendorDer }),
  },
  { mode: "scp-store-wrapper-duplicated", error: ScpMalformedError, exit: 15, reason: /certificate/ },
  { mode: "scp-store-wrapper-repeated", error: ScpMalformedError, exit: 15, reason: /bytes after the BF21/ },
  { mode: "scp-epk-off-curve", error: ScpIntegrityError, exit: 15, reason: /ePK\.SD: not a point on P-256/ },
  { mode: "scp-epk-identity", error: ScpMalformedError, exit: 15, reason: /ePK\.SD is not a 65-byte point/ },
  { mode: "scp-epk-zero", error: ScpIntegrityError, exit: 15, reason: /ePK\.SD: not a point on P-256/ },
  {
    mode: "scp-epk-wrong-length",
    error: ScpMalformedError,
    exit: 15,
    reason: /ePK\.SD is not a 65-byte point/,
  },
  { mode: "scp-receipt-missing", error: ScpMalformedError, exit: 15, reason: /must be 5F49 then 86/ },
  { mode: "scp-receipt-duplicated", error: ScpMalformedError, exit: 15, reason: /not BER-TLV|5F49 then 86/ },
  { mode: "scp-receipt-wrong", error: ScpIntegrityError, exit: 15, reason: /receipt does not verify/ },
];

describe("hostile card during the SCP11 handshake: refused before any PIN, the card untouched", () => {
  for (const c of HANDSHAKE_CASES)
    test(`${c.mode}: ${c.error.name}, exit ${c.exit}`, async () => {
      const { card, store, hostile } = cardWith(c.mode, c.options?.() ?? {});
      hostile!.armed = true;
      const before = persistent(store);
      const meter = new TransportMeter();
      await expectRefusedWhileOpening(() => openScp(card, meter), hostile, meter, c);
      // Nothing after the handshake: no wrapped command was sent.
      expect(meter.instructions.at(-1)).toBe(c.mode.startsWith("scp-store") ? 0xca : 0x88);
      expect(persistent(store)).toEqual(before);
    });

  test("endless 61xx chaining of the certificate store: bounded, exit 15, before any PIN", async () => {
    const { card, store, hostile } = cardWith("endless-chaining", { when: scpCertificateStoreRequest });
    hostile!.armed = true;
    const before = persistent(store);
    const meter = new TransportMeter();
    const failure = await openScp(card, meter).catch((e: unknown) => e);
    expectTypedError(failure, MalformedError, ExitCode.integrity);
    expect(meter.bytesReceived).toBeLessThanOrEqual(DEFAULT_MAX_RESPONSE_BYTES + MAX_READER_RESPONSE_BYTES);
    expect(meter.instructions).not.toContain(INS_VERIFY);
    expect(persistent(store)).toEqual(before);
  });

  test("the store inside one BF21 template (Samsung's form) is accepted: the channel opens", async () => {
    const { card, hostile } = cardWith("scp-store-wrapped");
    hostile!.armed = true;
    const element = await openScp(card, new TransportMeter());
    try {
      expect(hostile!.lies).toBe(1);
      expect(element.info.channel).toMatchObject({ kind: "scp11", protocol: "SCP11b" });
      expect(card.scpSessionOpen).toBe(true);
    } finally {
      await element.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Wrapped answers: the first wrapped command of the agent's and the station's flow (before the PIN)

const RESPONSE_CASES: Case[] = [
  { mode: "scp-rmac-flipped", error: ScpIntegrityError, exit: 15, reason: /R-MAC of the card's answer/ },
  { mode: "scp-response-truncated", error: ScpIntegrityError, exit: 15, reason: /R-MAC|whole blocks/ },
  { mode: "scp-response-no-rmac", error: ScpIntegrityError, exit: 15, reason: /without R-MAC/ },
  { mode: "scp-error-with-data", error: ScpIntegrityError, exit: 15, reason: /6a82 with unprotected data/ },
  { mode: "scp-response-bad-padding", error: ScpIntegrityError, exit: 15, reason: /padding/ },
  { mode: "scp-response-oversized", error: MalformedError, exit: 15, reason: /exceeds 32768 bytes/ },
];

/** The stable code the agent reports. */
function codeOf(type: Case["error"]): string {
  if (type === ScpIntegrityError) return "ERR_SCP_INTEGRITY";
  if (type === ScpMalformedError) return "ERR_SCP_MALFORMED";
  return "ERR_MALFORMED";
}

describe("hostile card inside the channel, against the agent (runAgentOnce, dry-run applier)", () => {
  for (const c of RESPONSE_CASES)
    test(`${c.mode}: exit ${c.exit} before the PIN, nothing applied, nothing written`, async () => {
      const { stateDir } = await initAgent(bed.dir, bed.testPki, { crl: bed.crl1, name: `agent-${c.mode}` });
      const { card, store, hostile } = cardWith(c.mode);
      const before = persistent(store);
      const meter = new TransportMeter();
      const element = await openScp(card, meter);
      hostile!.armed = true; // the channel opened honestly; the flow's first wrapped answer lies
      const factsBefore = await networkFacts(stateDir);
      const recordBefore = await dryRunRecord(stateDir);
      const pinSource = pins(PIN);
      const result = await runAgentOnce({ stateDir, net: await dryRunIn(stateDir), element, pinSource });

      expect(hostile!.lies).toBe(1);
      expect(result, JSON.stringify(result.error)).toMatchObject({ ok: false, exitCode: c.exit });
      expect(result.error?.code).toBe(codeOf(c.error));
      expect(result.error?.message).toMatch(c.reason);
      expect(pinSource.prompts).toEqual([]);
      expect(meter.instructions).not.toContain(INS_VERIFY);
      expect(await dryRunRecord(stateDir)).toBe(recordBefore);
      expect(await networkFacts(stateDir)).toEqual(factsBefore);
      const { state } = await AgentStateStore.open(stateDir);
      expect(state.stage).toBe("waiting-for-card");
      expect(state.lastError?.exitCode).toBe(c.exit);
      expect(persistent(store)).toEqual(before);
    });
});

describe("hostile card inside the channel, against the station (writeConfigurationToCard)", () => {
  for (const c of RESPONSE_CASES)
    test(`${c.mode}: ${c.error.name}, exit ${c.exit} before the PIN, nothing written`, async () => {
      const { card, store, hostile } = cardWith(c.mode);
      const before = persistent(store);
      const meter = new TransportMeter();
      const element = await openScp(card, meter);
      hostile!.armed = true;
      let asked = false;
      const failure = await writeConfigurationToCard({
        element,
        plan: LAB_PLAN,
        stationDir: await stationDir(),
        pin: async () => {
          asked = true;
          return PIN;
        },
      }).then(
        () => undefined,
        (error: unknown) => error,
      );
      await element.close();
      expect(hostile!.lies).toBe(1);
      expectTypedError(failure, c.error, c.exit);
      expect((failure as Error).message).toMatch(c.reason);
      expect(asked).toBe(false);
      expect(meter.instructions).not.toContain(INS_VERIFY);
      expect(persistent(store)).toEqual(before);
    });
});

describe("a flipped bit in the station's first wrapped PUT DATA", () => {
  test("the card answers 6982 and drops the session; the station fails with exit 15; nothing written, the PIN counter as before", async () => {
    const { card, store, flip } = cardFlippingFirstWrappedPutData();
    const before = persistent(store);
    const element = await openScp(card, new TransportMeter());
    const failure = await writeConfigurationToCard({
      element,
      plan: LAB_PLAN,
      stationDir: await stationDir(),
      pin: PIN,
    }).then(
      () => undefined,
      (error: unknown) => error,
    );
    await element.close();
    expect(flip.fired).toBe(true);
    expect(flip.sw).toBe(0x6982);
    expectTypedError(failure, ScpIntegrityError, ExitCode.integrity);
    expect((failure as Error).message).toMatch(/the card refused a wrapped command \(6982/);
    expect(card.scpSessionOpen).toBe(false);
    expect(persistent(store)).toEqual(before);
  });
});

describe("the secure channel breaks while the agent writes its receipt", () => {
  test("exit 15 (a channel failure, not 'receipt not written'), the network stays applied, no receipt on the card, the audit log and state say so", async () => {
    const { stateDir } = await initAgent(bed.dir, bed.testPki, {
      crl: bed.crl1,
      name: "agent-receipt-break",
    });
    // The agent's only PUT DATA is its receipt: its last piece gets one bit flipped.
    const { card, store, flip } = cardFlippingFirstWrappedPutData();
    const before = persistent(store);
    const element = await openScp(card, new TransportMeter());
    const lines: string[] = [];
    const result = await runAgentOnce({
      stateDir,
      net: await dryRunIn(stateDir),
      element,
      pinSource: pins(PIN),
      log: (line: string) => lines.push(line),
    });
    expect(flip.fired).toBe(true);
    expect(flip.sw).toBe(0x6982);
    expect(result).toMatchObject({
      ok: false,
      exitCode: ExitCode.integrity,
      stage: "configured",
      error: { code: "ERR_SCP_INTEGRITY" },
      receipt: { written: false },
    });
    expect(result.error?.message).toMatch(/6982/);
    // Applied and kept: the dry-run applier's record, the configuration in the state.
    expect(await dryRunRecord(stateDir)).toBeDefined();
    const { state } = await AgentStateStore.open(stateDir);
    expect(state.stage).toBe("configured");
    expect(state.configured?.sequence).toBe(3);
    expect(state.lastError).toMatchObject({ code: "ERR_SCP_INTEGRITY", exitCode: 15, stage: "configured" });
    // Nothing written onto the card: the receipt is missing, the PIN counter as before.
    expect(persistent(store)).toEqual(before);
    const { readFile } = await import("node:fs/promises");
    const { join } = await import("node:path");
    const audit = (await readFile(join(stateDir, "audit.log"), "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { event: string; data: Record<string, unknown> });
    const configured = audit.filter((r) => r.event === "configured");
    expect(configured).toHaveLength(1);
    expect(configured[0]!.data).toMatchObject({
      receipt: { written: false },
      channelFailure: { code: "ERR_SCP_INTEGRITY", exitCode: 15 },
    });
    expect(lines.join("\n")).toMatch(/the network stays applied/);
  });
});

let station: string | undefined;
async function stationDir(): Promise<string> {
  if (station) return station;
  const { join } = await import("node:path");
  const { initStation } = await import("../../src/station/init-station.js");
  const { updateStationCrl } = await import("../../src/station/crl-update.js");
  const { parseCrl } = await import("../../src/pki/crl.js");
  const dir = join(bed.dir, "station");
  await initStation(dir, bed.testPki.pki.root.certificate);
  await updateStationCrl(dir, parseCrl(bed.crl1), { issuers: [bed.testPki.pki.tokenCa.certificate] });
  station = dir;
  return dir;
}

// ---------------------------------------------------------------------------------------------
// The host's rules for status words inside the channel

describe("status words inside the channel (GP Amendment D's R-MAC rules, as the host applies them)", () => {
  test("a PIN-protected object read before VERIFY: the card's 6982 with the session alive is SecurityStatusError (not a channel failure), and the session goes on", async () => {
    const { card } = cardWith();
    const meter = new TransportMeter();
    const element = await openScp(card, meter);
    try {
      // Printed information (5FC109) is PIN-protected on a PIV card.
      const failure = await element.session.getData(0x5fc109).catch((e: unknown) => e);
      expect(failure).toBeInstanceOf(SecurityStatusError);
      expect((failure as OnboardError).exitCode).not.toBe(ExitCode.integrity);
      expect(card.scpSessionOpen).toBe(true);
      // One wrapped probe followed the 6982 (GET DATA of the discovery object), then the session
      // carries on: the PIN is verified inside it and the object reads.
      await element.verifyPin(PIN);
      expect(meter.instructions).toContain(INS_VERIFY);
      await expect(element.session.getData(0x5fc109)).resolves.toBeInstanceOf(Uint8Array);
    } finally {
      await element.close();
    }
  });

  test("a 6982 after which the session is gone (the card rejected a C-MAC) is a channel failure: exit 15, channel closed", async () => {
    let flip = false;
    const card = bed.scp11b.card((command, answer) => {
      if (!flip || (command[0]! & 0x04) === 0) return answer(command);
      flip = false;
      const bad = command.slice();
      bad[bad.length - 9]! ^= 0x01; // inside the encrypted data
      return answer(bad);
    });
    const element = await openScp(card, new TransportMeter());
    try {
      flip = true;
      const failure = await element.session.getData(0x5fc102).catch((e: unknown) => e);
      expectTypedError(failure, ScpIntegrityError, ExitCode.integrity);
      expect((failure as Error).message).toMatch(/6982/);
      expect(card.scpSessionOpen).toBe(false);
      // Closed for good: nothing more is sent, in clear or wrapped.
      const again = await element.session.getData(0x5fc102).catch((e: unknown) => e);
      expectTypedError(again, ScpIntegrityError, ExitCode.integrity);
    } finally {
      await element.close();
    }
  });

  test("a forged bare 6982 in place of a genuine answer, the session alive: reported as the card's refusal, never as success", async () => {
    // An attacker on the reader can turn any answer into a bare error status (GP gives error
    // statuses no R-MAC); what it cannot do is turn an error into a success or change data.
    let forge = false;
    const card = bed.scp11b.card((command, answer) => {
      const r = answer(command);
      if (!forge || (command[0]! & 0x04) === 0) return r;
      forge = false;
      return Uint8Array.of(0x69, 0x82);
    });
    const element = await openScp(card, new TransportMeter());
    try {
      forge = true;
      const failure = await element.session.getData(0x5fc102).catch((e: unknown) => e);
      expect(failure).toBeInstanceOf(SecurityStatusError);
      expect(card.scpSessionOpen).toBe(true);
    } finally {
      await element.close();
    }
  });

  test("warnings carry an R-MAC: a bare 63C2 to the wrapped VERIFY is a channel failure (15), the counter as the card left it", async () => {
    let strip = false;
    const card = bed.scp11b.card((command, answer) => {
      const r = answer(command);
      if (!strip || command[1] !== INS_VERIFY) return r;
      strip = false;
      return r.subarray(r.length - 2); // the status word alone
    });
    const element = await openScp(card, new TransportMeter());
    try {
      strip = true;
      const failure = await element.verifyPin("999999").catch((e: unknown) => e);
      expectTypedError(failure, ScpIntegrityError, ExitCode.integrity);
      expect((failure as Error).message).toMatch(/without R-MAC/);
    } finally {
      await element.close();
    }
  });
});
