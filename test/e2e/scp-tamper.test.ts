/**
 * Issue 11, tampering on the wire, over the real stack: a private pcscd with vpcd, the virtual card
 * (profile yubikey-5.7, SCP11b key from a test vendor CA, a configuration written onto it as
 * `station write` writes one) behind a vpcd bridge in this process, and `agent run --net iproute2`
 * as a child process through pcscd, inside a network namespace this test created (eth0, a veth
 * whose peer holds the plan's gateway), applying with the real iproute2 applier. The fault is
 * injected where pcscd hands the card its APDUs (the card's intercept hook, in this test process
 * only): the product's processes are the real CLI.
 * - one flipped bit in a wrapped command (the PIN's VERIFY) → the card answers 6982 and drops the
 *   session, the host exits 15 (the station's side, a flipped PUT DATA, runs in-process in
 *   test/security/scp-hostile-card.test.ts: a station write scans ~290 objects, ~18 s over pcscd);
 * - one flipped bit in a wrapped answer → the host exits 15 (R-MAC);
 * - a wrapped command replayed in place of the next one → the card answers 6982, the host exits 15;
 * - a forged receipt or an invalid ePK.SD in the handshake → exit 15 before any VERIFY;
 * in every case nothing is applied (`ip -json addr` in the namespace as before, the agent's status
 * still waiting), nothing is written onto the card (its data objects byte for byte as before: no
 * receipt) and the PIN retry counter is where it was. The untampered run, last, applies (the
 * addresses appear in the namespace) and writes its receipt: the checks above can see a change.
 * Last, the channel broken while the agent writes its receipt (a flipped bit in that PUT DATA): exit
 * 15, the network applied and kept, no receipt on the card (docs/SECURITY.md §9.1).
 * One pcscd and one namespace for the file; one agent run per case (~2–3 s each).
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { AgentStateStore } from "../../src/agent/state-store.js";
import { FileCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { type HostileMode, hostileCard } from "../../src/card-emulator/hostile-card.js";
import { YUBIKEY_5_7_PROFILE } from "../../src/card-emulator/profiles.js";
import { provisionScpKey } from "../../src/card-emulator/scp-provision.js";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { VpcdBridge } from "../../src/card-emulator/vpcd-bridge.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { ExitCode } from "../../src/errors.js";
import type { IssuerCredentials } from "../../src/pki/issue.js";
import { createScpVendorCa } from "../../src/pki/scp-certificates.js";
import { installScpTrust } from "../../src/secure-element/channel-policy.js";
import { type PrivatePcscd, startPrivatePcscd } from "../../src/sim/pcscd.js";
import { initAgent, OWNER, PIN } from "../agent/fixtures.js";
import { addrJson, ip, NetnsLab, settled } from "../agent/netns.js";
import { runCliChild, stopChildren } from "../security/children.js";
import { stackCapability, useChildTestBed } from "../security/stack.js";
import { CardTemplate } from "../security/support.js";

// pcscd + vpcd and network namespaces, both needed.
const cap = stackCapability();

/** IPv4 only (no DAD to wait for): the HSM of serial 1234567 on eth0, its gateway on the veth peer. */
const PLAN: NetworkPlan = {
  owner: OWNER,
  subnets: [{ name: "lab", cidr: "198.51.100.0/24", gateway: "198.51.100.1", dns: [], ntp: [], mtu: 1400 }],
  hsms: [
    {
      serial: "1234567",
      hostname: "hsm-tamper-01",
      interfaces: [{ name: "eth0", subnet: "lab", ipv4: "198.51.100.11" }],
    },
    {
      serial: "1234568",
      hostname: "hsm-tamper-02",
      interfaces: [{ name: "eth0", subnet: "lab", ipv4: "198.51.100.12" }],
    },
  ],
};

const INS_VERIFY = 0x20;
const INS_AUTHENTICATE = 0x88;
const INS_GET_DATA = 0xcb;
const SW_SECURITY = 0x6982;

const isWrapped = (command: Uint8Array) => (command[0]! & 0x04) !== 0;
const swOf = (response: Uint8Array) => (response[response.length - 2]! << 8) | response[response.length - 1]!;

/** What the fault did: the command the card was handed and what the card itself answered. */
interface Fault {
  fired: boolean;
  cardSaw?: Buffer;
  cardAnswered?: number;
  /** INS of every command the card was handed. */
  instructions: number[];
}

type Tamper = (command: Uint8Array, answer: (c: Uint8Array) => Uint8Array, fault: Fault) => Uint8Array;

/** What a write or a PIN try changes: the card's data objects and its PIN retry counter. */
async function cardObjects(
  cardFile: string,
): Promise<{ objects: Record<string, string>; pinTriesLeft: number }> {
  const state = JSON.parse(await readFile(cardFile, "utf8")) as {
    objects: Record<string, string>;
    pin: { triesLeft: number };
  };
  return { objects: state.objects, pinTriesLeft: state.pin.triesLeft };
}

describe.skipIf(!cap.ok)(
  `SCP11 tampering on the wire (real pcscd)${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let template: CardTemplate;
    let vendor: IssuerCredentials;
    let vendorPem: string;
    let pcscd: PrivatePcscd;
    let bridge: VpcdBridge | undefined;
    const lab = new NetnsLab();
    /** The HSM's namespace: eth0 (down, no address), its veth peer holds the gateway. */
    let hsm: string;
    let pristine: unknown;

    const bed = useChildTestBed("hsm-scp-tamper-", ["cli/main.js"]);
    beforeAll(async () => {
      template = await CardTemplate.personalise(bed.testPki.pki.tokenCa, bed.dir, "officer");
      await template.write(PLAN, { crl: bed.crl1, sequence: 1 });
      vendor = await createScpVendorCa("Tamper Test Card Vendor");
      vendorPem = vendor.certificate.toString("pem");
      pcscd = await startPrivatePcscd();
      hsm = lab.namespace("hsm");
      const peer = lab.namespace("peer");
      lab.link(hsm, "eth0", peer, "lan0");
      ip(["-n", peer, "addr", "add", "198.51.100.1/24", "dev", "lan0"]);
      ip(["-n", peer, "link", "set", "lan0", "up"]);
      pristine = addrJson(hsm);
    }, 240_000);
    afterAll(async () => {
      await bridge?.stop();
      await stopChildren();
      await pcscd?.stop();
      await lab.cleanup();
    });

    /** Inserts the card; `tamper` (if any) stands between pcscd and the card. */
    async function insert(cardFile: string, tamper?: Tamper): Promise<Fault> {
      await bridge?.stop();
      const fault: Fault = { fired: false, instructions: [] };
      const card = VirtualPivCard.fromFile(cardFile, {
        profile: YUBIKEY_5_7_PROFILE,
        intercept: (command, answer) => {
          fault.instructions.push(command[1]!);
          return tamper ? tamper(command, answer, fault) : answer(command);
        },
      });
      bridge = new VpcdBridge({ responder: card, host: "127.0.0.1", port: pcscd.vpcdPort, atr: card.atr });
      await bridge.start();
      return fault;
    }

    /**
     * An agent with the vendor CA as SCP trust anchor, and a card carrying PLAN (written in this
     * process, as `station write` writes it) with its SCP11b key.
     */
    async function setUp(name: string) {
      const dir = join(bed.dir, name);
      const { stateDir } = await initAgent(dir, bed.testPki, { crl: bed.crl1, name: "hsm" });
      await installScpTrust(stateDir, vendorPem, "vendor");
      const cardFile = join(dir, "card.json");
      new FileCardStateStore(cardFile).save(template.cardState);
      await provisionScpKey(VirtualPivCard.fromFile(cardFile, { profile: YUBIKEY_5_7_PROFILE }), vendor);
      return { stateDir, cardFile };
    }

    /** `agent run --once` in the HSM's namespace with the real iproute2 applier. */
    const onboard = (stateDir: string) =>
      runCliChild(
        bed.build,
        ["agent", "run", "--state-dir", stateDir, "--once", "--net", "iproute2", "--json", "--pin-stdin"],
        { env: pcscd.env, netns: hsm, timeoutMs: 90_000, stdin: `${PIN}\n` },
      );

    /** Nothing applied at the HSM: its namespace as created, its state still waiting for a first configuration. */
    async function expectNothingApplied(stateDir: string): Promise<void> {
      expect(addrJson(hsm)).toEqual(pristine);
      const { state } = await AgentStateStore.open(stateDir);
      expect(state.stage).toBe("waiting-for-card");
      expect(state.configured).toBeUndefined();
      expect(state.applying).toBeUndefined();
    }

    describe("agent run --net iproute2 (in its namespace) on a card written with SCP11b", () => {
      let s: Awaited<ReturnType<typeof setUp>>;
      let written: Buffer;

      beforeAll(async () => {
        s = await setUp("agent");
        written = await readFile(s.cardFile);
      }, 120_000);

      /** Puts the written card back (as it left the station), inserts it with `tamper`, runs the agent. */
      async function tampered(tamper: Tamper) {
        await writeFile(s.cardFile, written);
        const before = await cardObjects(s.cardFile);
        const fault = await insert(s.cardFile, tamper);
        const run = await onboard(s.stateDir);
        await bridge?.stop();
        bridge = undefined;
        return { fault, run, before, after: await cardObjects(s.cardFile) };
      }

      /** A channel failure (exit 15) before the PIN was verified, and nothing changed at the HSM or on the card. */
      async function expectRefusedUnchanged({
        run,
        before,
        after,
      }: Omit<Awaited<ReturnType<typeof tampered>>, "fault">) {
        expect(run.code, run.stderr).toBe(ExitCode.integrity);
        expect(run.stderr).not.toMatch(/PIN verified/);
        await expectNothingApplied(s.stateDir);
        expect(after).toEqual(before);
      }

      test("one flipped bit in the wrapped VERIFY (the PIN) → card 6982, exit 15, nothing applied or written", async () => {
        const { fault, ...outcome } = await tampered((command, answer, f) => {
          if (f.fired || !isWrapped(command) || command[1] !== INS_VERIFY) return answer(command);
          f.fired = true;
          const flipped = Buffer.from(command);
          flipped[flipped.length - 10]! ^= 0x01; // the encrypted PIN block, before the C-MAC
          const r = answer(flipped);
          f.cardAnswered = swOf(r);
          return r;
        });
        expect(fault.fired).toBe(true);
        expect(fault.cardAnswered).toBe(SW_SECURITY);
        await expectRefusedUnchanged(outcome);
      }, 300_000);

      test("one flipped bit in a wrapped answer (GET DATA) → exit 15, nothing applied or written", async () => {
        const { fault, ...outcome } = await tampered((command, answer, f) => {
          const r = answer(command);
          if (f.fired || !isWrapped(command) || command[1] !== INS_GET_DATA || r.length < 40) return r;
          f.fired = true;
          f.cardAnswered = swOf(r);
          const flipped = Buffer.from(r);
          flipped[20]! ^= 0x80; // inside the encrypted answer
          return flipped;
        });
        expect(fault.fired).toBe(true);
        expect(fault.cardAnswered).toBe(0x9000); // the card was content; the host saw the change
        await expectRefusedUnchanged(outcome);
      }, 300_000);

      test("a wrapped command replayed in place of the next one → card 6982, exit 15, nothing applied or written", async () => {
        let previous: Buffer | undefined;
        const { fault, ...outcome } = await tampered((command, answer, f) => {
          if (f.fired || !isWrapped(command)) return answer(command);
          if (previous === undefined || command[1] !== INS_VERIFY) {
            previous = Buffer.from(command);
            return answer(command);
          }
          // The VERIFY is held back; the card gets the wrapped command before it once more.
          f.fired = true;
          f.cardSaw = previous;
          const r = answer(previous);
          f.cardAnswered = swOf(r);
          return r;
        });
        expect(fault.fired).toBe(true);
        expect(fault.cardAnswered).toBe(SW_SECURITY);
        await expectRefusedUnchanged(outcome);
      }, 300_000);

      /** A hostile-card mode on the handshake (src/card-emulator/hostile-card.ts), as a tamper. */
      const handshakeLie = (mode: HostileMode): Tamper => {
        const hostile = hostileCard(mode);
        return (command, answer, f) => {
          if (command[1] === INS_AUTHENTICATE) f.fired = true;
          return hostile.intercept(command, answer);
        };
      };

      for (const [mode, what] of [
        ["scp-receipt-wrong", "a forged receipt"],
        ["scp-epk-off-curve", "an ePK.SD off the curve"],
      ] as const)
        test(`${what} in the handshake → exit 15 before any VERIFY, nothing applied or written`, async () => {
          const { fault, run, before, after } = await tampered(handshakeLie(mode));
          expect(fault.fired).toBe(true);
          expect(run.code, run.stderr).toBe(ExitCode.integrity);
          expect(run.stderr).toMatch(mode === "scp-receipt-wrong" ? /receipt does not verify/ : /ePK\.SD/);
          // The handshake was the last thing the card saw: no VERIFY, nothing wrapped.
          expect(fault.instructions.at(-1)).toBe(INS_AUTHENTICATE);
          expect(fault.instructions).not.toContain(INS_VERIFY);
          await expectNothingApplied(s.stateDir);
          expect(after).toEqual(before);
        }, 300_000);

      test("the same card untampered onboards: applied in the namespace, receipt written (the faults above were the only difference)", async () => {
        const { run, before, after } = await tampered((command, answer) => answer(command));
        expect(run.code, run.stderr).toBe(ExitCode.ok);
        const result = JSON.parse(run.stdout);
        expect(result.card.channel).toBe("SCP11b");
        expect(result.receipt).toMatchObject({ written: true });
        await settled(hsm);
        expect(JSON.stringify(addrJson(hsm))).toContain("198.51.100.11");
        expect(after.pinTriesLeft).toBe(before.pinTriesLeft);
        expect(Object.keys(after.objects).length).toBeGreaterThan(Object.keys(before.objects).length);
      }, 300_000);

      test("one flipped bit in the receipt's wrapped PUT DATA → card 6982, exit 15 (a channel failure), the network applied and kept, no receipt on the card", async () => {
        // The address the run above applied taken away again, and a new HSM state (the one above
        // is configured now).
        ip(["-n", hsm, "addr", "flush", "dev", "eth0"]);
        ip(["-n", hsm, "link", "set", "eth0", "down", "mtu", "1500"]);
        expect(JSON.stringify(addrJson(hsm))).not.toContain("198.51.100.11");
        const other = await setUp("receipt-break");
        await writeFile(other.cardFile, written);
        const before = await cardObjects(other.cardFile);
        const fault = await insert(other.cardFile, (command, answer, f) => {
          // The agent's only PUT DATA is its receipt (the last piece of its chain is MAC-checked).
          if (f.fired || !isWrapped(command) || command[1] !== 0xdb || (command[0]! & 0x10) !== 0)
            return answer(command);
          f.fired = true;
          const flipped = Buffer.from(command);
          flipped[flipped.length - 12]! ^= 0x10;
          const r = answer(flipped);
          f.cardAnswered = swOf(r);
          return r;
        });
        const run = await onboard(other.stateDir);
        await bridge?.stop();
        bridge = undefined;
        expect(fault.fired).toBe(true);
        expect(fault.cardAnswered).toBe(SW_SECURITY);
        expect(run.code, run.stderr).toBe(ExitCode.integrity);
        expect(JSON.parse(run.stdout)).toMatchObject({
          ok: false,
          exitCode: ExitCode.integrity,
          stage: "configured",
          error: { code: "ERR_SCP_INTEGRITY" },
          receipt: { written: false },
        });
        // Applied and kept: the address is on eth0, the state says configured (with the failure).
        await settled(hsm);
        expect(JSON.stringify(addrJson(hsm))).toContain("198.51.100.11");
        const { state } = await AgentStateStore.open(other.stateDir);
        expect(state.stage).toBe("configured");
        expect(state.lastError).toMatchObject({ exitCode: ExitCode.integrity, stage: "configured" });
        // No receipt (nor anything else) written; the PIN counter where it was.
        expect(await cardObjects(other.cardFile)).toEqual(before);
      }, 300_000);
    });
  },
);
