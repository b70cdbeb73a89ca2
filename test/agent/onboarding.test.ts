/**
 * The onboarding flow end to end, in-process: a personalised virtual card carrying a configuration,
 * an initialised agent state directory, and a network applier. Every refusal of SPEC.md §8 is a row of
 * the table below, run with the dry-run applier (which must record nothing) and, as root, with the
 * iproute2 applier in a fresh network namespace (`ip -json addr` and the routes identical before and
 * after). The happy path checks the receipt the agent leaves on the card with the device certificate.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { KeyUsageFlags } from "@peculiar/x509";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { readAuditLog } from "../../src/agent/audit-log.js";
import { DryRunBackend } from "../../src/agent/net/dry-run.js";
import { Iproute2Backend } from "../../src/agent/net/iproute2.js";
import type { NetBackend } from "../../src/agent/net/net-backend.js";
import type { OnboardingResult } from "../../src/agent/onboarding.js";
import { AgentStateStore } from "../../src/agent/state-store.js";
import type { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { decodeReceiptLog, verifyReceipt } from "../../src/config/receipt.js";
import { ExitCode } from "../../src/errors.js";
import { createPki } from "../../src/pki/issue.js";
import { VALIDATION_REQUIREMENTS } from "../../src/pki/profiles.js";
import { validateChain } from "../../src/pki/validate-chain.js";
import { requireOrSkip } from "../helpers/pcsc-env.js";
import {
  ApduCounter,
  cardSigner,
  crlOf,
  flipByte,
  initAgent,
  LAB_PLAN,
  OWNER,
  openElement,
  otherOwnerTokenCa,
  PIN,
  personalizeCard,
  pins,
  readItem,
  startAgent,
  tempDir,
  useTestPki,
  WRONG_PIN,
  writeConfig,
} from "./fixtures.js";
import { addrJson, ip, NetnsLab, netnsCapability, routesJson, settled } from "./netns.js";

function withAddress(plan: NetworkPlan, ipv4: string): NetworkPlan {
  return {
    ...plan,
    hsms: plan.hsms.map((h) =>
      h.serial === "1234567" ? { ...h, interfaces: [{ ...h.interfaces[0]!, ipv4 }] } : h,
    ),
  };
}

const bed = useTestPki();

/** One network applier under test, with what "untouched" means for it. */
interface NetUnderTest {
  readonly net: NetBackend;
  /** Remembers the network as it is now (once the kernel's DAD of link-local addresses settled). */
  mark(): Promise<void>;
  /** Asserts the network is as it was at mark(). */
  assertUntouched(): void;
  /** The addresses the HSM holds now (for the happy path). */
  addresses(): string[];
  cleanup(): Promise<void>;
}

const dryRun = async (): Promise<NetUnderTest> => {
  const net = await DryRunBackend.open({});
  let operations = 0;
  let applied: unknown;
  return {
    net,
    async mark() {
      operations = net.record.operations.length;
      applied = net.record.applied;
    },
    assertUntouched() {
      expect(net.record.operations.length).toBe(operations);
      expect(net.record.applied).toEqual(applied);
    },
    addresses: () =>
      net.record.state.links.flatMap((l) => l.addresses.map((a) => `${a.address}/${a.prefixLength}`)),
    cleanup: async () => {},
  };
};

const iproute2 = async (): Promise<NetUnderTest> => {
  const lab = new NetnsLab();
  const hsm = lab.namespace("hsm");
  const peer = lab.namespace("peer");
  lab.link(hsm, "eth0", peer, "lan0");
  for (const args of [
    ["addr", "add", "198.51.100.1/24", "dev", "lan0"],
    ["-6", "addr", "add", "2001:db8:120::1/64", "dev", "lan0", "nodad"],
    ["link", "set", "lan0", "up"],
  ]) {
    ip(["-n", peer, ...args]);
  }
  const net = new Iproute2Backend({ netns: hsm, probeWindowMs: 300 });
  let before: unknown;
  const now = () => ({ addr: addrJson(hsm), routes: routesJson(hsm) });
  return {
    net,
    async mark() {
      await settled(hsm);
      before = now();
    },
    assertUntouched() {
      expect(now()).toEqual(before);
    },
    addresses: () =>
      (
        addrJson(hsm) as {
          ifname: string;
          addr_info: { local: string; prefixlen: number; scope: string }[];
        }[]
      )
        .filter((l) => l.ifname === "eth0")
        .flatMap((l) =>
          l.addr_info.filter((a) => a.scope === "global").map((a) => `${a.local}/${a.prefixlen}`),
        ),
    cleanup: () => lab.cleanup(),
  };
};

const netns = requireOrSkip(netnsCapability());
const appliers: { name: string; make: () => Promise<NetUnderTest>; skip: boolean }[] = [
  { name: "dry-run", make: dryRun, skip: false },
  { name: "iproute2 (network namespace)", make: iproute2, skip: !netns.ok },
];
if (!netns.ok) console.warn(`iproute2 onboarding tests skipped: ${netns.reason}`);

/** Opens the agent (a restart: reconcile + re-apply), onboards `card` once, closes everything. */
async function attempt(
  stateDir: string,
  net: NetBackend,
  card: VirtualPivCard,
  pinList: string[] = [PIN],
  pullAfterApdus?: number,
): Promise<OnboardingResult & { prompts: string[]; log: string[] }> {
  const log: string[] = [];
  const agent = await startAgent(stateDir, net, log);
  const counter = new ApduCounter();
  const element = await openElement(card, counter);
  counter.pullAfter = pullAfterApdus === undefined ? undefined : counter.commands + pullAfterApdus;
  const pinSource = pins(...pinList);
  try {
    return { ...(await agent.onboard(element, pinSource)), prompts: pinSource.prompts, log };
  } finally {
    await element.close();
    await agent.close();
  }
}

for (const applier of appliers) {
  describe.skipIf(applier.skip)(`onboarding with the ${applier.name} applier`, () => {
    let env: NetUnderTest;
    let dir: { dir: string; cleanup: () => Promise<void> };
    beforeEach(async () => {
      dir = await tempDir();
      env = await applier.make();
    });
    afterEach(async () => {
      await env.cleanup();
      await dir.cleanup();
    });

    test("the same card again: recognised before the PIN, exit 0, still configured, no second receipt", async () => {
      const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 });
      const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
      await writeConfig(card, LAB_PLAN, { sequence: 7, crl: bed.crl1 });
      const first = await attempt(stateDir, env.net, card);
      expect(first.exitCode).toBe(0);
      const again = await attempt(stateDir, env.net, card, []);
      expect(again).toMatchObject({
        ok: true,
        exitCode: 0,
        stage: "configured",
        alreadyConfigured: true,
        sequence: 7,
        configurationId: first.configurationId,
      });
      expect(again.receipt).toBeUndefined();
      expect(again.prompts).toEqual([]);
      expect(again.log).toContainEqual(
        `already configured with configuration ${first.configurationId!.slice(0, 8)}, sequence 7${env.net.name === "dry-run" ? " (dry run — nothing applied)" : ""}: nothing to do, no PIN needed`,
      );
      const { state } = await AgentStateStore.open(stateDir);
      expect(state.stage).toBe("configured");
      expect(state.lastError).toBeUndefined();
      const audit = await readAuditLog(join(stateDir, "audit.log"), { expectedHead: state.auditHead! });
      expect(audit.records.at(-1)).toMatchObject({ event: "already-configured", data: { sequence: 7 } });
      const element = await openElement(card);
      try {
        const log = await element.readItem("receipt-0");
        expect(decodeReceiptLog(log!)).toHaveLength(1);
      } finally {
        await element.close();
      }
    });

    test("happy path: configured, state persisted, receipt on the card verifies with the device certificate", async () => {
      const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 });
      const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
      await writeConfig(card, LAB_PLAN, { sequence: 7, crl: bed.crl1 });
      const result = await attempt(stateDir, env.net, card);
      expect(result).toMatchObject({
        ok: true,
        exitCode: 0,
        stage: "configured",
        serial: "1234567",
        owner: OWNER,
        sequence: 7,
        hostname: "hsm-lab-01",
        addresses: ["198.51.100.11/24", "2001:db8:120::11/64"],
        receipt: { written: true, item: "receipt-0" },
      });
      expect(result.prompts).toEqual(["PIN"]);
      expect(env.addresses().sort()).toEqual(["198.51.100.11/24", "2001:db8:120::11/64"]);

      const { state } = await AgentStateStore.open(stateDir);
      expect(state.stage).toBe("configured");
      expect(state.configured).toMatchObject({ owner: OWNER, sequence: 7, backend: env.net.name });
      expect(state.owner).toMatchObject({ name: OWNER, boundBy: "first-onboarding" });
      expect(state.owner?.tokenCaSha256).toMatch(/^[0-9a-f]{64}$/);
      expect(state.quorum).toEqual({ required: 1, pinned: true });
      expect(state.applying).toBeUndefined();

      // The station's view: the receipt verifies with the device certificate, chained to the root.
      const [signed, ...more] = decodeReceiptLog((await readItem(card, "receipt-0"))!);
      expect(more).toEqual([]);
      const verified = await verifyReceipt(signed!, {
        validateDevice: async (chain, serial) => {
          const device = await validateChain({
            leaf: chain[0]!,
            intermediates: chain.slice(1),
            trustAnchor: Buffer.from(bed.testPki.rootPem).toString("utf8"),
            requireCrl: false,
            requiredEku: VALIDATION_REQUIREMENTS.deviceReceipt.requiredEku,
            requiredKeyUsage: KeyUsageFlags.digitalSignature,
          });
          expect(device.subjectSerialNumber).toBe(serial);
        },
      });
      expect(verified.receipt).toMatchObject({ serial: "1234567", sequence: 7, outcome: 0 });
      expect(Buffer.from(verified.receipt.stateDigest).toString("hex")).toBe(state.configured?.digest);

      // The audit log is intact and names the configuration; no PIN in any file the agent wrote.
      const audit = await readAuditLog(join(stateDir, "audit.log"), { expectedHead: state.auditHead! });
      expect(audit.ok).toBe(true);
      expect(audit.records.map((r) => r.event)).toEqual(["factory-init", "configured"]);
      for (const file of ["audit.log", "state.json"]) {
        expect(await readFile(join(stateDir, file), "utf8")).not.toContain(PIN);
      }
      expect(result.log.join("\n")).not.toContain(PIN);
    });

    test("a card pulled out while the receipt is written: configured all the same, no receipt", async () => {
      const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 });
      const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
      await writeConfig(card, LAB_PLAN, { sequence: 7, crl: bed.crl1 });
      // 10 APDUs before the receipt: identity (3), CRL, challenge (2), PIN (2), manifest, shard.
      const result = await attempt(stateDir, env.net, card, [PIN], 10);
      expect(result).toMatchObject({
        ok: true,
        exitCode: 0,
        stage: "configured",
        receipt: { written: false },
      });
      expect(result.receipt?.reason).toMatch(/removed/);
      expect(env.addresses().sort()).toEqual(["198.51.100.11/24", "2001:db8:120::11/64"]);
      expect((await AgentStateStore.open(stateDir)).state.stage).toBe("configured");
    });

    test("reconfiguration: the same owner with a higher sequence is accepted", async () => {
      const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 });
      const first = await personalizeCard(bed.testPki.pki.tokenCa);
      await writeConfig(first.card, LAB_PLAN, { sequence: 7, crl: bed.crl1 });
      expect((await attempt(stateDir, env.net, first.card)).exitCode).toBe(0);

      const second = await personalizeCard(bed.testPki.pki.tokenCa, { officer: "Bob Officer" });
      await writeConfig(second.card, withAddress(LAB_PLAN, "198.51.100.21"), { sequence: 8, crl: bed.crl1 });
      const result = await attempt(stateDir, env.net, second.card);
      expect(result).toMatchObject({
        ok: true,
        sequence: 8,
        addresses: ["198.51.100.21/24", "2001:db8:120::11/64"],
      });
      expect(env.addresses().sort()).toEqual(["198.51.100.21/24", "2001:db8:120::11/64"]);
      expect((await AgentStateStore.open(stateDir)).state.configured?.sequence).toBe(8);
    });

    test("dual control: a co-signature from a second card of the owner meets a quorum of 2", async () => {
      const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1, quorum: 2 });
      const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
      const other = await personalizeCard(bed.testPki.pki.tokenCa, { officer: "Bob Officer" });
      const co = await cardSigner(other.card);
      try {
        await writeConfig(card, LAB_PLAN, { sequence: 1, crl: bed.crl1, coSigners: [co.signer] });
      } finally {
        await co.close();
      }
      expect(await attempt(stateDir, env.net, card)).toMatchObject({ ok: true, exitCode: 0 });
    });

    interface Arranged {
      readonly stateDir: string;
      readonly card: VirtualPivCard;
      readonly pins?: string[];
      /** The card is pulled out after this many APDUs of the flow. */
      readonly pullAfterApdus?: number;
    }
    const refusals: {
      name: string;
      exit: number;
      /** Why: the message must name this refusal, not merely carry its exit code. */
      reason: RegExp;
      arrange: () => Promise<Arranged>;
      /** The flow must stop before asking for the PIN. */
      noPin?: boolean;
      afterwards?: (result: OnboardingResult, arranged: Arranged) => Promise<void>;
    }[] = [
      {
        name: "an untrusted card (another manufacturer's PKI)",
        exit: ExitCode.cardNotTrusted,
        reason: /certificate not trusted \(untrusted-anchor\).*not signed by its key/,
        noPin: true,
        arrange: async () => {
          const foreign = await createPki({ owner: OWNER });
          const { card } = await personalizeCard(foreign.tokenCa);
          await writeConfig(card, LAB_PLAN, { crl: bed.crl1 });
          return { stateDir: (await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 })).stateDir, card };
        },
      },
      {
        name: "a copied certificate on another card (live challenge)",
        exit: ExitCode.cardNotTrusted,
        reason:
          /does not hold the private key of its card-authentication certificate \(challenge proof failed\)/,
        noPin: true,
        arrange: async () => {
          const genuine = await personalizeCard(bed.testPki.pki.tokenCa);
          const copy = await personalizeCard(bed.testPki.pki.tokenCa);
          await writeConfig(copy.card, LAB_PLAN, { crl: bed.crl1 });
          const original = await openElement(genuine.card);
          const nineE = (await original.identity()).cardAuthentication;
          await original.close();
          const forger = await openElement(copy.card);
          try {
            await forger.verifyPin(PIN);
            await forger.session.authenticateWithPinProtectedManagementKey();
            await forger.session.putCertificate("9E", nineE);
          } finally {
            await forger.close();
          }
          return {
            stateDir: (await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 })).stateDir,
            card: copy.card,
          };
        },
      },
      {
        name: "a revoked card",
        exit: ExitCode.cardRevoked,
        reason: /certificate revoked: "O=ACME Bank, CN=Alice Officer"/,
        noPin: true,
        arrange: async () => {
          const { card, cardAuthenticationSerial } = await personalizeCard(bed.testPki.pki.tokenCa);
          const crl = await bed.testPki.crl(2, [
            { serialNumber: cardAuthenticationSerial, revokedAt: new Date(Date.now() - 60_000) },
          ]);
          await writeConfig(card, LAB_PLAN, { crl });
          return { stateDir: (await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 })).stateDir, card };
        },
      },
      {
        name: "a wrong PIN (the card's counter drops)",
        exit: ExitCode.wrongPin,
        reason: /^wrong PIN, 2 tries left$/,
        arrange: async () => {
          const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
          await writeConfig(card, LAB_PLAN, { crl: bed.crl1 });
          return {
            stateDir: (await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 })).stateDir,
            card,
            pins: [WRONG_PIN],
          };
        },
        afterwards: async (result, { card }) => {
          expect(result.error?.message).toMatch(/2 tries left/);
          const element = await openElement(card);
          expect(await element.pinTriesLeft()).toBe(2);
          await element.close();
        },
      },
      {
        name: "a blocked PIN (not even asked for)",
        exit: ExitCode.pinBlocked,
        reason: /PIN is blocked; unblock it with the PUK/,
        noPin: true,
        arrange: async () => {
          const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
          await writeConfig(card, LAB_PLAN, { crl: bed.crl1 });
          const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 });
          // Each of the three wrong PINs is exit 13, the third too: the card answers it 63C0 (wrong,
          // counter now 0), as it counts. 14 is the card that is blocked before the PIN is asked for:
          // the attempt below, refused without a prompt.
          const wrong: { exitCode: number; message: string | undefined }[] = [];
          for (let i = 0; i < 3; i++) {
            const r = await attempt(stateDir, env.net, card, [WRONG_PIN]);
            wrong.push({ exitCode: r.exitCode, message: r.error?.message });
          }
          expect(wrong).toEqual([
            { exitCode: ExitCode.wrongPin, message: expect.stringMatching(/2 tries left/) },
            { exitCode: ExitCode.wrongPin, message: expect.stringMatching(/1 try left/) },
            { exitCode: ExitCode.wrongPin, message: expect.stringMatching(/0 tries left/) },
          ]);
          const element = await openElement(card);
          expect(await element.pinTriesLeft()).toBe(0);
          await element.close();
          return { stateDir, card };
        },
      },
      {
        name: "a card pulled out while the configuration is read",
        exit: ExitCode.noCard,
        reason: /the card was removed/,
        arrange: async () => {
          const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
          await writeConfig(card, LAB_PLAN, { crl: bed.crl1 });
          // After 9E, 9C, certificates, CRL, the challenge (9E again, sign) and the PIN (2): the manifest read.
          return {
            stateDir: (await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 })).stateDir,
            card,
            pullAfterApdus: 8,
          };
        },
      },
      {
        name: "a flipped byte in the manifest",
        exit: ExitCode.integrity,
        reason: /signature does not verify/,
        arrange: async () => {
          const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
          const encoded = await writeConfig(card, LAB_PLAN, { crl: bed.crl1 });
          await flipByte(card, "manifest", Math.floor(encoded.manifest.length / 3));
          return { stateDir: (await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 })).stateDir, card };
        },
      },
      {
        name: "a flipped byte in the shard",
        exit: ExitCode.integrity,
        reason: /shard 0x5FFF[0-9A-F]{2}: SHA-256 does not match the signed manifest/,
        arrange: async () => {
          const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
          await writeConfig(card, LAB_PLAN, { crl: bed.crl1 });
          await flipByte(card, "shard-0", -3);
          return { stateDir: (await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 })).stateDir, card };
        },
      },
      {
        name: "a configuration not signed by this card (only by another card of the owner)",
        exit: ExitCode.integrity,
        reason: /not signed by this card's signing key/,
        arrange: async () => {
          const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
          const other = await personalizeCard(bed.testPki.pki.tokenCa);
          const co = await cardSigner(other.card);
          try {
            await writeConfig(card, LAB_PLAN, {
              crl: bed.crl1,
              coSigners: [co.signer],
              withoutOwnSignature: true,
            });
          } finally {
            await co.close();
          }
          return { stateDir: (await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 })).stateDir, card };
        },
      },
      {
        name: "a plan without this HSM's serial",
        exit: ExitCode.notForThisHsm,
        reason: /serial 7654321 is not in this configuration/,
        arrange: async () => {
          const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
          await writeConfig(card, LAB_PLAN, { crl: bed.crl1 });
          return {
            stateDir: (await initAgent(dir.dir, bed.testPki, { crl: bed.crl1, serial: "7654321" })).stateDir,
            card,
          };
        },
      },
      {
        name: "another owner's card (owner bound at the factory)",
        exit: ExitCode.notForThisHsm,
        reason:
          /the card of "Globex" comes from a token CA whose key this HSM is not bound to \(it belongs to "ACME Bank"\)/,
        noPin: true,
        arrange: async () => {
          const globex = await otherOwnerTokenCa(bed.testPki.pki, "Globex");
          const { card } = await personalizeCard(globex, { owner: "Globex" });
          await writeConfig(card, { ...LAB_PLAN, owner: "Globex" }, { crl: await crlOf(globex, 1) });
          return {
            stateDir: (await initAgent(dir.dir, bed.testPki, { crl: bed.crl1, owner: OWNER })).stateDir,
            card,
          };
        },
      },
      {
        name: "another owner's card (owner pinned by the first onboarding)",
        exit: ExitCode.notForThisHsm,
        reason:
          /the card of "Globex" comes from a token CA whose key this HSM is not bound to \(it belongs to "ACME Bank"\)/,
        noPin: true,
        arrange: async () => {
          const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 });
          const acme = await personalizeCard(bed.testPki.pki.tokenCa);
          await writeConfig(acme.card, LAB_PLAN, { sequence: 7, crl: bed.crl1 });
          expect((await attempt(stateDir, env.net, acme.card)).exitCode).toBe(0);
          const globex = await otherOwnerTokenCa(bed.testPki.pki, "Globex");
          const { card } = await personalizeCard(globex, { owner: "Globex" });
          await writeConfig(
            card,
            { ...LAB_PLAN, owner: "Globex" },
            { sequence: 99, crl: await crlOf(globex, 1) },
          );
          return { stateDir, card };
        },
      },
      {
        name: "an older sequence number on a configured HSM",
        exit: ExitCode.replay,
        reason: /sequence 6 is not newer than the applied 7/,
        arrange: async () => {
          const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 });
          const first = await personalizeCard(bed.testPki.pki.tokenCa);
          await writeConfig(first.card, LAB_PLAN, { sequence: 7, crl: bed.crl1 });
          expect((await attempt(stateDir, env.net, first.card)).exitCode).toBe(0);
          const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
          await writeConfig(card, withAddress(LAB_PLAN, "198.51.100.31"), { sequence: 6, crl: bed.crl1 });
          return { stateDir, card };
        },
      },
      {
        name: "the same sequence number with another configuration (not the one applied)",
        exit: ExitCode.replay,
        reason: /sequence 7 is not newer than the applied 7/,
        arrange: async () => {
          const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 });
          const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
          await writeConfig(card, LAB_PLAN, { sequence: 7, crl: bed.crl1 });
          expect((await attempt(stateDir, env.net, card)).exitCode).toBe(0);
          await writeConfig(card, withAddress(LAB_PLAN, "198.51.100.32"), { sequence: 7, crl: bed.crl1 });
          return { stateDir, card };
        },
      },
      {
        name: "a CRL older than the one the HSM has seen (CRL number rollback)",
        exit: ExitCode.replay,
        reason: /CRL number 3, older than the 5 already seen/,
        noPin: true,
        arrange: async () => {
          const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
          await writeConfig(card, LAB_PLAN, { crl: await bed.testPki.crl(3) });
          const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: await bed.testPki.crl(5) });
          return { stateDir, card };
        },
      },
      {
        name: "an expired configuration",
        exit: ExitCode.validity,
        reason: /configuration expired at/,
        arrange: async () => {
          const now = Math.floor(Date.now() / 1000);
          const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
          await writeConfig(card, LAB_PLAN, { crl: bed.crl1, notBefore: now - 7200, notAfter: now - 60 });
          return { stateDir: (await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 })).stateDir, card };
        },
      },
      {
        name: "a configuration not valid yet",
        exit: ExitCode.validity,
        reason: /configuration not valid before/,
        arrange: async () => {
          const now = Math.floor(Date.now() / 1000);
          const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
          await writeConfig(card, LAB_PLAN, { crl: bed.crl1, notBefore: now + 3600, notAfter: now + 7200 });
          return { stateDir: (await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 })).stateDir, card };
        },
      },
      {
        name: "a missing co-signature (quorum 2, one signer)",
        exit: ExitCode.quorum,
        reason: /1 valid signature\(s\) on the configuration; this HSM requires 2/,
        arrange: async () => {
          const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
          await writeConfig(card, LAB_PLAN, { crl: bed.crl1 });
          return {
            stateDir: (await initAgent(dir.dir, bed.testPki, { crl: bed.crl1, quorum: 2 })).stateDir,
            card,
          };
        },
        afterwards: async (result, { card }) => {
          // The officer sees why at the station: a failure receipt with the outcome.
          expect(result.receipt).toMatchObject({ written: true, item: "receipt-0" });
          const [signed] = decodeReceiptLog((await readItem(card, "receipt-0"))!);
          const { receipt } = await verifyReceipt(signed!, { validateDevice: () => {} });
          expect(receipt.outcome).toBe(ExitCode.quorum);
        },
      },
    ];

    test.each(refusals)("refuses $name (exit $exit), network untouched", async (row) => {
      const arranged = await row.arrange();
      await env.mark();
      const result = await attempt(
        arranged.stateDir,
        env.net,
        arranged.card,
        arranged.pins ?? [PIN],
        arranged.pullAfterApdus,
      );
      expect(result, result.error?.message).toMatchObject({ ok: false, exitCode: row.exit });
      expect(result.error?.message).toMatch(row.reason);
      env.assertUntouched();
      if (row.noPin) expect(result.prompts).toEqual([]);
      const { state } = await AgentStateStore.open(arranged.stateDir);
      expect(state.stage).toBe("waiting-for-card");
      expect(state.applying).toBeUndefined();
      expect(state.lastError).toMatchObject({ exitCode: row.exit });
      const audit = await readAuditLog(join(arranged.stateDir, "audit.log"), {
        expectedHead: state.auditHead!,
      });
      expect(audit.ok).toBe(true);
      expect(audit.records.at(-1)).toMatchObject({
        event: "onboarding-failed",
        data: { exitCode: row.exit },
      });
      await row.afterwards?.(result, arranged);
    });
  });
}
