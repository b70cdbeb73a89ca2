/**
 * Issue 11, tampering on the wire, over the real stack: a private pcscd with vpcd, the virtual card
 * (profile yubikey-5.7, SCP11b key from a test vendor CA) behind a vpcd bridge in this process, and
 * `station write` / `agent run` as child processes through pcscd. The fault is injected where pcscd
 * hands the card its APDUs (the card's intercept hook, in this test process only): the product's
 * processes are the real CLI, untouched.
 * - one flipped bit in a wrapped command (the PIN's VERIFY at the agent, the first PUT DATA at the
 *   station) → the card answers 6982 and drops the session, the host exits 15;
 * - one flipped bit in a wrapped answer → the host exits 15 (R-MAC);
 * - a wrapped command replayed in place of the next one → the card answers 6982, the host exits 15;
 * in every case nothing is applied (the agent's dry-run record absent, its status unchanged) and
 * nothing is written onto the card (its data objects byte for byte as before).
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { FileCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { YUBIKEY_5_7_PROFILE } from "../../src/card-emulator/profiles.js";
import { provisionScpKey } from "../../src/card-emulator/scp-provision.js";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { VpcdBridge } from "../../src/card-emulator/vpcd-bridge.js";
import { planToYaml } from "../../src/config/plan.js";
import { ExitCode } from "../../src/errors.js";
import type { IssuerCredentials } from "../../src/pki/issue.js";
import { createScpVendorCa } from "../../src/pki/scp-certificates.js";
import { installScpTrust } from "../../src/secure-element/channel-policy.js";
import { type PrivatePcscd, startPrivatePcscd } from "../../src/sim/pcscd.js";
import { createTestPki, initAgent, LAB_PLAN, PIN, type TestPki, tempDir } from "../agent/fixtures.js";
import {
  buildForChildren,
  type PrivateBuild,
  pcscE2eCapability,
  requireOrSkip,
} from "../helpers/pcsc-env.js";
import { runCliChild, stopChildren } from "../security/children.js";
import { put } from "../security/stack.js";
import { CardTemplate } from "../security/support.js";

const cap = requireOrSkip(pcscE2eCapability());

const INS_VERIFY = 0x20;
const INS_GET_DATA = 0xcb;
const INS_PUT_DATA = 0xdb;
const SW_SECURITY = 0x6982;

const isWrapped = (command: Uint8Array) => (command[0]! & 0x04) !== 0;
const swOf = (response: Uint8Array) => (response[response.length - 2]! << 8) | response[response.length - 1]!;

/** What the fault did: the command the card was handed and what the card itself answered. */
interface Fault {
  fired: boolean;
  cardSaw?: Buffer;
  cardAnswered?: number;
}

type Tamper = (command: Uint8Array, answer: (c: Uint8Array) => Uint8Array, fault: Fault) => Uint8Array;

/** The card's data objects (what a write would change), as stored in its state file. */
async function cardObjects(cardFile: string): Promise<Record<string, string>> {
  return (JSON.parse(await readFile(cardFile, "utf8")) as { objects: Record<string, string> }).objects;
}

describe.skipIf(!cap.ok)(
  `SCP11 tampering on the wire (real pcscd)${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let base: { dir: string; cleanup: () => Promise<void> };
    let build: PrivateBuild;
    let testPki: TestPki;
    let crl: Uint8Array;
    let template: CardTemplate;
    let vendor: IssuerCredentials;
    let vendorPem: string;
    let pcscd: PrivatePcscd;
    let bridge: VpcdBridge | undefined;

    beforeAll(async () => {
      base = await tempDir("hsm-scp-tamper-");
      build = await buildForChildren(["cli/main.js"]);
      testPki = await createTestPki(base.dir);
      crl = await testPki.crl(1);
      template = await CardTemplate.personalise(testPki.pki.tokenCa, base.dir, "officer");
      vendor = await createScpVendorCa("Tamper Test Card Vendor");
      vendorPem = vendor.certificate.toString("pem");
      pcscd = await startPrivatePcscd();
    }, 240_000);
    afterAll(async () => {
      await bridge?.stop();
      await stopChildren();
      await pcscd?.stop();
      await build?.cleanup();
      await base?.cleanup();
    });

    /** Inserts the card; `tamper` (if any) stands between pcscd and the card. */
    async function insert(cardFile: string, tamper?: Tamper): Promise<Fault> {
      await bridge?.stop();
      const fault: Fault = { fired: false };
      const card = VirtualPivCard.fromFile(cardFile, {
        profile: YUBIKEY_5_7_PROFILE,
        ...(tamper ? { intercept: (command, answer) => tamper(command, answer, fault) } : {}),
      });
      bridge = new VpcdBridge({ responder: card, host: "127.0.0.1", port: pcscd.vpcdPort, atr: card.atr });
      await bridge.start();
      return fault;
    }

    const cli = (args: string[], stdin?: string) =>
      runCliChild(build, args, { env: pcscd.env, timeoutMs: 90_000, ...(stdin ? { stdin } : {}) });

    /** Station and agent with the vendor CA as SCP trust anchor, a card with its SCP11b key. */
    async function setUp(name: string) {
      const dir = join(base.dir, name);
      const { stateDir } = await initAgent(dir, testPki, { crl, name: "hsm" });
      const stationDir = join(dir, "station");
      const init = await cli([
        "station",
        "init",
        "--trust",
        await put(join(dir, "root.pem"), testPki.rootPem),
        "--crl",
        await put(join(dir, "token-ca.crl"), crl),
        "--issuer",
        join(testPki.dir, "token-ca.pem"),
        "--station-dir",
        stationDir,
        "--scp-trust",
        await put(join(dir, "vendor.pem"), vendorPem),
      ]);
      expect(init.code, init.stderr).toBe(ExitCode.ok);
      await installScpTrust(stateDir, vendorPem, "vendor");
      const cardFile = join(dir, "card.json");
      new FileCardStateStore(cardFile).save(template.cardState);
      await provisionScpKey(VirtualPivCard.fromFile(cardFile, { profile: YUBIKEY_5_7_PROFILE }), vendor);
      const plan = await put(join(dir, "lab.yaml"), planToYaml(LAB_PLAN));
      return { stateDir, stationDir, cardFile, plan };
    }

    const write = (s: { plan: string; stationDir: string }) =>
      cli(["station", "write", "--plan", s.plan, "--station-dir", s.stationDir, "--pin-stdin"], `${PIN}\n`);
    const onboard = (stateDir: string) =>
      cli(
        ["agent", "run", "--state-dir", stateDir, "--once", "--net", "dry-run", "--json", "--pin-stdin"],
        `${PIN}\n`,
      );

    /** Nothing applied at the HSM: no dry-run record, and its status still waits for a first configuration. */
    async function expectNothingApplied(stateDir: string): Promise<void> {
      await expect(readFile(join(stateDir, "network.dry-run.json"), "utf8")).rejects.toThrow();
      const status = await cli(["agent", "status", "--state-dir", stateDir, "--json"]);
      expect(status.code, status.stderr).toBe(ExitCode.ok);
      // Still waiting for its first configuration: no address, no configuration recorded.
      expect(JSON.parse(status.stdout)).toMatchObject({ stage: "waiting-for-card", addresses: [] });
    }

    test("station write: one flipped bit in the first wrapped PUT DATA → card 6982, exit 15, nothing on the card", async () => {
      const s = await setUp("station-flip");
      const before = await cardObjects(s.cardFile);
      const fault = await insert(s.cardFile, (command, answer, f) => {
        // The first wrapped PUT DATA that is not an inner piece of a chain (the card checks the C-MAC
        // once the chain is whole, so a flip in the last piece is what it answers).
        if (f.fired || !isWrapped(command) || command[1] !== INS_PUT_DATA || (command[0]! & 0x10) !== 0)
          return answer(command);
        f.fired = true;
        const flipped = Buffer.from(command);
        flipped[flipped.length - 12]! ^= 0x10; // inside the encrypted data, before the C-MAC
        f.cardSaw = flipped;
        const r = answer(flipped);
        f.cardAnswered = swOf(r);
        return r;
      });
      const result = await write(s);
      expect(fault.fired).toBe(true);
      expect(fault.cardAnswered).toBe(SW_SECURITY);
      expect(result.code, result.stderr).toBe(ExitCode.integrity);
      expect(result.stderr).toMatch(/secure channel: the card refused a wrapped command \(6982/);
      await bridge?.stop();
      bridge = undefined;
      expect(await cardObjects(s.cardFile)).toEqual(before);
    }, 300_000);

    describe("agent run on a card the station wrote over SCP11b", () => {
      let s: Awaited<ReturnType<typeof setUp>>;
      let written: Buffer;

      beforeAll(async () => {
        s = await setUp("agent");
        await insert(s.cardFile);
        const w = await write(s);
        expect(w.code, w.stderr).toBe(ExitCode.ok);
        await bridge?.stop();
        bridge = undefined;
        written = await readFile(s.cardFile);
      }, 300_000);

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

      test("one flipped bit in the wrapped VERIFY (the PIN) → card 6982, exit 15, nothing applied or written", async () => {
        const { fault, run, before, after } = await tampered((command, answer, f) => {
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
        expect(run.code, run.stderr).toBe(ExitCode.integrity);
        expect(run.stderr).not.toMatch(/PIN verified/);
        await expectNothingApplied(s.stateDir);
        expect(after).toEqual(before);
      }, 300_000);

      test("one flipped bit in a wrapped answer (GET DATA) → exit 15, nothing applied or written", async () => {
        const { fault, run, before, after } = await tampered((command, answer, f) => {
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
        expect(run.code, run.stderr).toBe(ExitCode.integrity);
        expect(run.stderr).not.toMatch(/PIN verified/);
        await expectNothingApplied(s.stateDir);
        expect(after).toEqual(before);
      }, 300_000);

      test("a wrapped command replayed in place of the next one → card 6982, exit 15, nothing applied or written", async () => {
        let previous: Buffer | undefined;
        const { fault, run, before, after } = await tampered((command, answer, f) => {
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
        expect(run.code, run.stderr).toBe(ExitCode.integrity);
        expect(run.stderr).not.toMatch(/PIN verified/);
        await expectNothingApplied(s.stateDir);
        expect(after).toEqual(before);
      }, 300_000);

      test("the same card untampered onboards (the faults above were the only difference)", async () => {
        const { run } = await tampered((command, answer) => answer(command));
        expect(run.code, run.stderr).toBe(ExitCode.ok);
        expect(JSON.parse(run.stdout).card.channel).toBe("SCP11b");
      }, 300_000);
    });
  },
);
