/**
 * SPEC.md §8, "a hostile card that answers with wrong lengths, endless 61xx chaining or huge
 * objects", and the other lies a card can tell (src/card-emulator/hostile-card.ts): the station's
 * write and the agent's onboarding (library entries, the card in-process behind a hostile
 * interceptor) must end
 * - with a typed error: its class (or stable code) and exit code are asserted per case;
 * - in bounded time and memory: APDUs and bytes received are counted at the transport and must stay
 *   within the honest flow's plus the host's response bounds (DEFAULT_MAX_RESPONSE_CHUNKS round
 *   trips, DEFAULT_MAX_RESPONSE_BYTES, one reader-sized response) — a 4 GiB or 16 MiB length field
 *   is never allocated, it is refused from its header;
 * - with nothing changed: the agent's dry-run applier records nothing and the state keeps no
 *   configuration; the station leaves a card it could not trust as it found it.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { runAgentOnce } from "../../src/agent/agent.js";
import { AgentStateStore } from "../../src/agent/state-store.js";
import {
  DEFAULT_MAX_RESPONSE_BYTES,
  DEFAULT_MAX_RESPONSE_CHUNKS,
  ResponseChainingError,
} from "../../src/apdu/chaining.js";
import { BadResponseError } from "../../src/apdu/response.js";
import { ApduError, UnknownStatusError } from "../../src/apdu/status-words.js";
import { TlvError } from "../../src/apdu/tlv.js";
import {
  anyCommand,
  type CommandMatcher,
  generalAuthenticateWith,
  getDataOf,
  type HostileMode,
  type HostileOptions,
  hostileCard,
  MAX_READER_RESPONSE_BYTES,
  putDataOf,
} from "../../src/card-emulator/hostile-card.js";
import type { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import {
  CardNotTrustedError,
  ExitCode,
  IntegrityError,
  MalformedError,
  type OnboardError,
} from "../../src/errors.js";
import { ObjectId } from "../../src/piv/objects.js";
import { parseCrl } from "../../src/pki/crl.js";
import { updateStationCrl } from "../../src/station/crl-update.js";
import { initStation } from "../../src/station/init-station.js";
import { writeConfigurationToCard } from "../../src/station/write-card.js";
import { createTestPki, initAgent, LAB_PLAN, PIN, pins, type TestPki, tempDir } from "../agent/fixtures.js";
import {
  CardTemplate,
  configurationState,
  dryRunIn,
  dryRunRecord,
  expectTypedError,
  networkFacts,
  openMetered,
  TransportMeter,
} from "./support.js";

const TARGETS = {
  "the 9E certificate": getDataOf(ObjectId.certificate9E),
  "the manifest": getDataOf(0x5fff10),
  "the shard": getDataOf(0x5fff20),
  "the CRL item": getDataOf(0x5fff12),
  "the 9E challenge": generalAuthenticateWith(0x9e),
  "the 9C signature": generalAuthenticateWith(0x9c),
  "PUT DATA": putDataOf(),
  "every command but SELECT": (command: Uint8Array) => command[1] !== 0xa4,
  "every command": anyCommand,
} satisfies Record<string, CommandMatcher>;
type Target = keyof typeof TARGETS;

/** Reached before the PIN is asked for: such a card must not cost a PIN try. */
const BEFORE_PIN: ReadonlySet<Target> = new Set(["the 9E certificate", "the 9E challenge", "the CRL item"]);

interface Case {
  readonly mode: HostileMode;
  readonly target: Target;
  /** Error class the station throws (and whose stable code the agent reports). */
  readonly error: abstract new (
    ...args: never[]
  ) => OnboardError;
  readonly exit: number;
  /** A part of the message that names the reason. */
  readonly reason: RegExp;
}

let base: { dir: string; cleanup: () => Promise<void> };
let testPki: TestPki;
let crl1: Uint8Array;
/** A personalised card carrying LAB_PLAN, sequence 3. */
let configured: CardTemplate;
/** The 9E certificate object of another genuine card of the same owner (for a copied certificate). */
let otherCard9E: Uint8Array;
/** The same card's answer to one 9E challenge, recorded (for a replayed signature). */
let recordedChallengeAnswer: Uint8Array;
/** The honest flows, counted at the transport. */
const honest = { agent: new TransportMeter(), station: new TransportMeter() };
let stationDir: string;

async function readObject(card: VirtualPivCard, id: number): Promise<Uint8Array> {
  const element = await openMetered(card);
  try {
    const content = await element.session.getData(id);
    return content;
  } finally {
    await element.close();
  }
}

beforeAll(async () => {
  base = await tempDir("hsm-security-hostile-");
  testPki = await createTestPki(base.dir);
  crl1 = await testPki.crl(1);
  configured = await CardTemplate.personalise(testPki.pki.tokenCa, base.dir, "officer");
  await configured.write(LAB_PLAN, { crl: crl1, sequence: 3 });
  const other = await CardTemplate.personalise(testPki.pki.tokenCa, base.dir, "other");
  otherCard9E = await readObject(other.card(), ObjectId.certificate9E);
  // A genuine answer to an earlier challenge, as an eavesdropper on the reader would record it.
  recordedChallengeAnswer = await recordOnce();

  stationDir = join(base.dir, "station");
  await initStation(stationDir, testPki.pki.root.certificate);
  await updateStationCrl(stationDir, parseCrl(crl1), { issuers: [testPki.pki.tokenCa.certificate] });

  // Baselines: the honest agent onboarding and the honest station write, counted the same way.
  const { stateDir } = await initAgent(base.dir, testPki, { crl: crl1, name: "baseline" });
  const agentElement = await openMetered(configured.card(), honest.agent);
  const ok = await runAgentOnce({
    stateDir,
    net: await dryRunIn(stateDir),
    element: agentElement,
    pinSource: pins(PIN),
  });
  expect(ok.exitCode, ok.error?.message).toBe(0);
  const stationElement = await openMetered(configured.card(), honest.station);
  try {
    await writeConfigurationToCard({ element: stationElement, plan: LAB_PLAN, stationDir, pin: PIN });
  } finally {
    await stationElement.close();
  }
});
afterAll(async () => {
  await base?.cleanup();
});

/** Records the card's genuine answer to one 9E GENERAL AUTHENTICATE. */
async function recordOnce(): Promise<Uint8Array> {
  let answer: Uint8Array | undefined;
  const element = await openMetered(
    configured.card((command, card) => {
      const response = card(command);
      if (command[1] === 0x87 && command[3] === 0x9e) answer = response.slice();
      return response;
    }),
  );
  try {
    await element.proveChallenge(new Uint8Array(32).fill(7));
  } finally {
    await element.close();
  }
  if (!answer) throw new Error("no challenge answer recorded");
  return answer;
}

function optionsFor(c: Case): HostileOptions {
  return {
    when: TARGETS[c.target],
    ...(c.mode === "copied-certificate" ? { content: otherCard9E } : {}),
    ...(c.mode === "replayed-signature" ? { recorded: recordedChallengeAnswer } : {}),
  };
}

/** Within the honest flow's traffic plus what the host's bounds allow a hostile card on top. */
function expectBounded(meter: TransportMeter, baseline: TransportMeter, elapsedMs: number): void {
  expect(meter.commands).toBeLessThanOrEqual(baseline.commands + DEFAULT_MAX_RESPONSE_CHUNKS + 4);
  expect(meter.bytesReceived).toBeLessThanOrEqual(
    baseline.bytesReceived + DEFAULT_MAX_RESPONSE_BYTES + MAX_READER_RESPONSE_BYTES,
  );
  expect(meter.largestResponse).toBeLessThanOrEqual(MAX_READER_RESPONSE_BYTES);
  expect(elapsedMs).toBeLessThan(5000);
}

/** The stable code the agent reports for an error class (its result carries the code, not the object). */
function codeOf(type: Case["error"]): string {
  const codes: [Case["error"], string][] = [
    [MalformedError, "ERR_MALFORMED"],
    [IntegrityError, "ERR_INTEGRITY"],
    [UnknownStatusError, "ERR_UNKNOWN_STATUS"],
    [ApduError, "ERR_APDU"],
    [CardNotTrustedError, "ERR_CARD_NOT_TRUSTED"],
  ];
  const found = codes.find(([base]) => type === base || type.prototype instanceof base);
  if (!found) throw new Error(`no code known for ${type.name}`);
  return found[1];
}

const malformed = { error: MalformedError, exit: ExitCode.integrity } as const;

const AGENT_CASES: Case[] = [
  {
    mode: "no-status-word",
    target: "the 9E certificate",
    error: BadResponseError,
    exit: 15,
    reason: /no status word/,
  },
  { mode: "truncated-tlv", target: "the manifest", error: TlvError, exit: 15, reason: /truncated/ },
  { mode: "wrong-tlv-length", target: "the shard", error: TlvError, exit: 15, reason: /unexpected bytes/ },
  {
    mode: "huge-length-field",
    target: "the 9E certificate",
    error: TlvError,
    exit: 15,
    reason: /length field of 4 bytes/,
  },
  {
    mode: "huge-object-declared",
    target: "the manifest",
    error: TlvError,
    exit: 15,
    reason: /16777215 bytes announced/,
  },
  { mode: "oversized-object", target: "the shard", ...malformed, reason: /exceeds 32768 bytes/ },
  { mode: "max-size-response", target: "the manifest", ...malformed, reason: /exceeds 32768 bytes/ },
  { mode: "endless-chaining", target: "the manifest", ...malformed, reason: /exceeds 32768 bytes/ },
  {
    mode: "endless-chaining-tiny",
    target: "the 9E certificate",
    ...malformed,
    reason: /after 160 GET RESPONSE/,
  },
  { mode: "endless-chaining", target: "the 9E challenge", ...malformed, reason: /exceeds 32768 bytes/ },
  // 6Cxx again after the one retry the protocol allows: a broken card, exit 15 (see SECURITY.md).
  {
    mode: "wrong-le-forever",
    target: "the shard",
    error: ResponseChainingError,
    exit: 15,
    reason: /6C10/,
  },
  { mode: "nested-tlv", target: "the 9E certificate", error: TlvError, exit: 15, reason: /without tag 70/ },
  { mode: "nested-tlv", target: "the manifest", ...malformed, reason: /more than an item can/ },
  {
    mode: "nested-der-certificate",
    target: "the 9E certificate",
    error: CardNotTrustedError,
    exit: ExitCode.cardNotTrusted,
    reason: /cannot be read/,
  },
  {
    mode: "gzip-bomb-certificate",
    target: "the 9E certificate",
    error: TlvError,
    exit: 15,
    reason: /oversized gzip/,
  },
  { mode: "extra-bytes", target: "the 9E challenge", error: TlvError, exit: 15, reason: /unexpected bytes/ },
  {
    mode: "answer-to-other-command",
    target: "the manifest",
    error: TlvError,
    exit: 15,
    reason: /TLV 05 truncated/,
  },
  { mode: "stale-responses", target: "every command but SELECT", error: TlvError, exit: 15, reason: /TLV/ },
  {
    mode: "bad-status-word",
    target: "the manifest",
    error: UnknownStatusError,
    exit: ExitCode.integrity,
    reason: /6F00/,
  },
  {
    mode: "copied-certificate",
    target: "the 9E certificate",
    error: CardNotTrustedError,
    exit: ExitCode.cardNotTrusted,
    reason: /does not hold the private key/,
  },
  {
    mode: "replayed-signature",
    target: "the 9E challenge",
    error: CardNotTrustedError,
    exit: ExitCode.cardNotTrusted,
    reason: /challenge proof failed/,
  },
];

describe("hostile card against the agent (runAgentOnce, in-process card, dry-run applier)", () => {
  for (const c of AGENT_CASES)
    test(`${c.mode} at ${c.target}: exit ${c.exit}, bounded, nothing applied`, async () => {
      const { stateDir } = await initAgent(base.dir, testPki, {
        crl: crl1,
        name: `agent-${c.mode}-${c.target.replace(/\W+/g, "-")}`,
      });
      const hostile = hostileCard(c.mode, { ...optionsFor(c), armed: false });
      const meter = new TransportMeter();
      const element = await openMetered(configured.card(hostile.intercept), meter);
      hostile.armed = true; // the card opened honestly: what follows is the flow under attack
      const factsBefore = await networkFacts(stateDir);
      const recordBefore = await dryRunRecord(stateDir);
      const pinSource = pins(PIN);
      const started = performance.now();
      const result = await runAgentOnce({ stateDir, net: await dryRunIn(stateDir), element, pinSource });
      const elapsed = performance.now() - started;

      expect(hostile.lies, "the hostile card was never reached").toBeGreaterThan(0);
      expect(result, JSON.stringify(result.error)).toMatchObject({ ok: false, exitCode: c.exit });
      expect(result.error?.code).toBe(codeOf(c.error));
      expectBounded(meter, honest.agent, elapsed);
      expect(result.error?.message).toMatch(c.reason);
      if (BEFORE_PIN.has(c.target)) expect(pinSource.prompts).toEqual([]);
      // Nothing applied, nothing configured, no owner pinned.
      expect(await dryRunRecord(stateDir)).toBe(recordBefore);
      expect(await networkFacts(stateDir)).toEqual(factsBefore);
      const { state } = await AgentStateStore.open(stateDir);
      expect(state.stage).toBe("waiting-for-card");
      expect(state.lastError?.exitCode).toBe(c.exit);
    });
});

const STATION_CASES: Case[] = [
  {
    mode: "no-status-word",
    target: "the CRL item",
    error: BadResponseError,
    exit: 15,
    reason: /no status word/,
  },
  {
    mode: "huge-length-field",
    target: "the 9E certificate",
    error: TlvError,
    exit: 15,
    reason: /length field of 4 bytes/,
  },
  {
    mode: "huge-object-declared",
    target: "the manifest",
    error: TlvError,
    exit: 15,
    reason: /16777215 bytes announced/,
  },
  { mode: "oversized-object", target: "the CRL item", ...malformed, reason: /exceeds 32768 bytes/ },
  { mode: "endless-chaining", target: "the 9C signature", ...malformed, reason: /exceeds 32768 bytes/ },
  {
    mode: "endless-chaining-tiny",
    target: "the 9E certificate",
    ...malformed,
    reason: /after 160 GET RESPONSE/,
  },
  {
    mode: "wrong-le-forever",
    target: "the 9E challenge",
    error: ResponseChainingError,
    exit: 15,
    reason: /6C10/,
  },
  { mode: "nested-tlv", target: "the 9E certificate", error: TlvError, exit: 15, reason: /without tag 70/ },
  {
    mode: "nested-der-certificate",
    target: "the 9E certificate",
    error: MalformedError,
    exit: 15,
    reason: /not a readable X.509 certificate/,
  },
  {
    mode: "gzip-bomb-certificate",
    target: "the 9E certificate",
    error: TlvError,
    exit: 15,
    reason: /oversized gzip/,
  },
  { mode: "extra-bytes", target: "the 9C signature", error: TlvError, exit: 15, reason: /unexpected bytes/ },
  { mode: "stale-responses", target: "every command but SELECT", error: TlvError, exit: 15, reason: /TLV/ },
  {
    mode: "bad-status-word",
    target: "the 9E challenge",
    error: UnknownStatusError,
    exit: ExitCode.integrity,
    reason: /6F00/,
  },
  {
    mode: "copied-certificate",
    target: "the 9E certificate",
    error: CardNotTrustedError,
    exit: ExitCode.cardNotTrusted,
    reason: /does not hold the private key/,
  },
  {
    mode: "replayed-signature",
    target: "the 9E challenge",
    error: CardNotTrustedError,
    exit: ExitCode.cardNotTrusted,
    reason: /challenge proof failed/,
  },
  // Writes: the card claims success for a PUT DATA it never made; the read-back finds out.
  {
    mode: "swallowed-write",
    target: "PUT DATA",
    error: IntegrityError,
    exit: ExitCode.integrity,
    reason: /read-back/,
  },
  {
    mode: "bad-status-word",
    target: "PUT DATA",
    error: UnknownStatusError,
    exit: ExitCode.integrity,
    reason: /6F00/,
  },
];

/** Manifest and shards as they are on a card (read honestly). */
async function configurationOn(card: VirtualPivCard): Promise<{ manifest?: string; shard?: string }> {
  const element = await openMetered(card);
  try {
    await element.verifyPin(PIN);
    const manifest = await element.readItem("manifest");
    const shard = await element.readItem("shard-0");
    return {
      ...(manifest ? { manifest: Buffer.from(manifest).toString("hex") } : {}),
      ...(shard ? { shard: Buffer.from(shard).toString("hex") } : {}),
    };
  } finally {
    await element.close();
  }
}

describe("hostile card against the station (writeConfigurationToCard)", () => {
  for (const c of STATION_CASES)
    test(`${c.mode} at ${c.target}: exit ${c.exit}, bounded, no half-written card`, async () => {
      const hostile = hostileCard(c.mode, { ...optionsFor(c), armed: false });
      const card = configured.card(hostile.intercept);
      const before = await configurationOn(card);
      const meter = new TransportMeter();
      const element = await openMetered(card, meter);
      hostile.armed = true;
      let asked = false;
      const started = performance.now();
      const failure = await writeConfigurationToCard({
        element,
        plan: LAB_PLAN,
        stationDir,
        pin: async () => {
          asked = true;
          return PIN;
        },
      }).then(
        () => undefined,
        (error: unknown) => error,
      );
      const elapsed = performance.now() - started;
      await element.close();
      hostile.armed = false;

      expect(hostile.lies, "the hostile card was never reached").toBeGreaterThan(0);
      expectTypedError(failure, c.error, c.exit);
      expectBounded(meter, honest.station, elapsed);
      expect((failure as Error).message).toMatch(c.reason);
      if (BEFORE_PIN.has(c.target)) expect(asked).toBe(false);
      if (c.target !== "PUT DATA") {
        // Failed before writing: the configuration already on the card is intact.
        expect(before.manifest).toBeDefined();
        expect(await configurationOn(card)).toEqual(before);
      }
      // Whatever the card did with the writes: no configuration, or a whole one (here: the old one,
      // since the first write a station makes deletes the old manifest, and that one failed).
      expect(await configurationState(card, PIN)).toMatchObject({ kind: "complete", sequence: 3 });
    });
});

describe("a card that lies about writes, end to end", () => {
  test("it ignores every write to its manifest: the station's read-back says so (15); the old manifest now names other shards, and the agent refuses the card (15) with the network untouched", async () => {
    const hostile = hostileCard("swallowed-write", {
      when: putDataOf(0x5fff10),
      armed: false,
    });
    // The same plan with another address: the new shard differs from the old one.
    const plan = {
      ...LAB_PLAN,
      hsms: LAB_PLAN.hsms.map((h, i) =>
        i === 0 ? { ...h, interfaces: [{ ...h.interfaces[0]!, ipv4: "198.51.100.99" }] } : h,
      ),
    };
    const card = configured.card(hostile.intercept);
    const element = await openMetered(card);
    hostile.armed = true;
    const failure = await writeConfigurationToCard({ element, plan, stationDir, pin: PIN }).catch(
      (e: unknown) => e,
    );
    await element.close();
    hostile.armed = false;
    // The delete of the old manifest and the write of the new one (every block of its command chain).
    expect(hostile.lies).toBeGreaterThanOrEqual(2);
    expectTypedError(failure, IntegrityError, ExitCode.integrity);
    expect((failure as Error).message).toMatch(/read-back: the manifest on the card differs/);

    const { stateDir } = await initAgent(base.dir, testPki, { crl: crl1, name: "agent-after-lying-card" });
    const recordBefore = await dryRunRecord(stateDir);
    const result = await runAgentOnce({
      stateDir,
      net: await dryRunIn(stateDir),
      element: await openMetered(card),
      pinSource: pins(PIN),
    });
    expect(result).toMatchObject({
      ok: false,
      exitCode: ExitCode.integrity,
      error: { code: "ERR_INTEGRITY" },
    });
    expect(result.error?.message).toMatch(/SHA-256 does not match the signed manifest/);
    expect(await dryRunRecord(stateDir)).toBe(recordBefore);
    expect((await AgentStateStore.open(stateDir)).state.configured).toBeUndefined();
  });
});
