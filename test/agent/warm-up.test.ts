/**
 * The agent's warm-up at start (src/agent/warm-up.ts): it runs the agent's own onboard() over its
 * built-in world on an in-memory card, in a private scratch state, then one SCP11b round trip, and
 * trusts nothing by it. Its effect on CPU is a benchmark (`npm run bench`, docs/PERFORMANCE.md), not
 * a timed test.
 */
import { createPublicKey, X509Certificate } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Agent } from "../../src/agent/agent.js";
import { WarmUpCard, warmUpAgent, worldCardKey } from "../../src/agent/warm-up.js";
import { WARM_UP_WORLD } from "../../src/agent/warm-up-world.js";
import { decodeTlv } from "../../src/apdu/tlv.js";
import { findShardFor, verifyManifest } from "../../src/config/manifest.js";
import { decodeReceiptLog, verifyReceipt } from "../../src/config/receipt.js";
import { decodeShardEntry, networkStateDigest } from "../../src/config/shard.js";
import { certificateObjectId, encodeCertificateObject } from "../../src/piv/objects.js";
import { validateChainView } from "../../src/pki/path-validation.js";
import { VALIDATION_REQUIREMENTS } from "../../src/pki/profiles.js";
import { PivElement } from "../../src/secure-element/piv-element.js";
import { newChallenge, verifyChallengeProof } from "../../src/secure-element/secure-element.js";
import { InProcessTransport } from "../../src/transport/in-process.js";
import { createTestPki, initAgent, type TestPki, tempDir } from "./fixtures.js";

const der = (b64: string) => new Uint8Array(Buffer.from(b64, "base64"));

describe("agent warm-up at start", () => {
  it("carries a full shard, so the first card's decoder runs warmed over as many entries", () => {
    expect(der(WARM_UP_WORLD.shard).length).toBe(3063);
    expect(der(WARM_UP_WORLD.manifest).length).toBe(3063);
  });

  it("its card signs each fresh challenge with the world's 9E key: two random challenges, two proofs that verify against the 9E certificate and not crosswise", async () => {
    const certificate = der(WARM_UP_WORLD.cardAuthentication);
    // The key in the world is the key of the world card's 9E certificate.
    expect(createPublicKey(worldCardKey()).equals(new X509Certificate(certificate).publicKey)).toBe(true);
    const card = new WarmUpCard(
      new Map([[certificateObjectId("9E"), encodeCertificateObject(certificate)]]),
      worldCardKey(),
    );
    const element = await PivElement.open(new InProcessTransport(card, { readerName: "warm-up test" }));
    try {
      const first = newChallenge();
      const second = newChallenge();
      expect(Buffer.from(first).equals(Buffer.from(second))).toBe(false);
      const proofFirst = await element.proveChallenge(first);
      const proofSecond = await element.proveChallenge(second);
      expect(proofFirst.algorithm).toBe("ES256");
      verifyChallengeProof(certificate, first, proofFirst);
      verifyChallengeProof(certificate, second, proofSecond);
      expect(() => verifyChallengeProof(certificate, second, proofFirst)).toThrow(/challenge proof failed/);
      expect(() => verifyChallengeProof(certificate, first, proofSecond)).toThrow(/challenge proof failed/);
    } finally {
      await element.close();
    }
    // Another slot, or a request without the empty response tag, is refused as a card would.
    const request = (p2: number, body: number[]) =>
      Uint8Array.of(0x00, 0x87, 0x11, p2, body.length + 2, 0x7c, body.length, ...body);
    const digest = Array.from({ length: 32 }, (_, i) => i);
    expect([...card.transmit(request(0x9a, [0x82, 0x00, 0x81, 32, ...digest])).slice(-2)]).toEqual([
      0x6a, 0x88,
    ]);
    expect([...card.transmit(request(0x9e, [0x81, 32, ...digest])).slice(-2)]).toEqual([0x6a, 0x80]);
    const answer = card.transmit(request(0x9e, [0x82, 0x00, 0x81, 32, ...digest]));
    expect([...answer.slice(-2)]).toEqual([0x90, 0x00]);
    expect(decodeTlv(answer.subarray(0, -2), 0x7c).value[0]).toBe(0x82);
  });

  it("is trusted for nothing: its card chain does not validate to any other root", async () => {
    // The warm-up's own root is the only anchor its chain reaches; the world's root is not a valid
    // anchor for a chain of another PKI either (a real agent's anchor comes from factory-init).
    const other = await import("../../src/pki/warm-up-chain.js");
    await expect(
      validateChainView({
        leaf: der(WARM_UP_WORLD.cardAuthentication),
        intermediates: [der(WARM_UP_WORLD.tokenCa)],
        trustAnchor: der(other.WARM_UP_CHAIN.root),
        crls: [der(WARM_UP_WORLD.crl)],
        now: new Date(WARM_UP_WORLD.time),
        ...VALIDATION_REQUIREMENTS.cardAuthentication,
      }),
    ).rejects.toThrow();
  });
});

/** Every file under `dir` (relative path → bytes and mode), to compare a directory before and after. */
async function snapshotDir(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (sub: string): Promise<void> => {
    for (const entry of await readdir(join(dir, sub), { withFileTypes: true })) {
      const rel = join(sub, entry.name);
      const mode = (await stat(join(dir, rel))).mode.toString(8);
      if (entry.isDirectory()) {
        out.set(`${rel}/`, mode);
        await walk(rel);
      } else out.set(rel, `${mode} ${(await readFile(join(dir, rel))).toString("base64")}`);
    }
  };
  await walk("");
  return out;
}

describe("agent warm-up at start: the real onboarding over the built-in world", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let testPki: TestPki;
  const savedTmp = process.env.TMPDIR;

  beforeAll(async () => {
    dir = await tempDir();
    testPki = await createTestPki(dir.dir);
  });
  afterAll(async () => {
    if (savedTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = savedTmp;
    await dir.cleanup();
  });

  it("runs onboard() to configured on its in-memory card — a receipt that verifies for the world's HSM — then an SCP11b round trip, and removes its scratch directory", async () => {
    const summary = await warmUpAgent();
    expect(summary).toMatchObject({
      stage: "configured",
      owner: "hsm-onboard warm-up",
      hostname: "hsm-fra1-a0001",
      addresses: ["198.51.100.11/24"],
      receiptItem: "receipt-0",
      cardWrites: 1,
      // Two wrapped answers `53 00` came back through the SCP11b channel.
      scpAnswer: 4,
    });
    // The receipt the real onboarding wrote on the in-memory card: the station's verification accepts
    // it under the world's root, for the world's HSM, dry-run, over the world's shard entry.
    const w = WARM_UP_WORLD;
    const receipts = decodeReceiptLog(summary.receiptObject);
    expect(receipts).toHaveLength(1);
    const verified = await verifyReceipt(receipts[0]!, {
      validateDevice: async (chain, serial) => {
        const device = await validateChainView({
          leaf: chain[0]!,
          intermediates: chain.slice(1),
          trustAnchor: der(w.root),
          now: new Date(w.time),
          requireCrl: false,
          ...VALIDATION_REQUIREMENTS.deviceReceipt,
        });
        expect(device.subjectSerialNumber).toBe(serial);
      },
    });
    const { manifest } = await verifyManifest(der(w.manifest), { validateChain: () => {} });
    const entry = decodeShardEntry(der(w.shard), findShardFor(manifest, w.serial), w.serial);
    expect(verified.certificateChain[0]).toEqual(der(w.deviceCertificate));
    expect(verified.receipt).toMatchObject({
      serial: w.serial,
      sequence: manifest.sequence,
      outcome: 0,
      dryRun: true,
      channel: "plaintext",
      time: Math.floor(new Date(w.time).getTime() / 1000),
    });
    expect(Buffer.from(verified.receipt.configurationId)).toEqual(Buffer.from(manifest.configurationId));
    expect(Buffer.from(verified.receipt.stateDigest)).toEqual(Buffer.from(networkStateDigest(entry)));
    expect(summary.scratchDir.startsWith(join(tmpdir(), "hsm-onboard-warm-up-"))).toBe(true);
    expect(existsSync(summary.scratchDir)).toBe(false);
    // Again: a fresh scratch state each time (a second run on the same state would be "already configured").
    const again = await warmUpAgent();
    expect(again).toMatchObject({
      stage: "configured",
      receiptItem: "receipt-0",
      cardWrites: 1,
      scpAnswer: 4,
    });
    expect(again.scratchDir).not.toBe(summary.scratchDir);
    expect(existsSync(again.scratchDir)).toBe(false);
  });

  it("Agent.open leaves the real state directory (state, audit log, CRLs, device key, dry-run record) byte-identical and no scratch behind", async () => {
    const { stateDir, deviceDir } = await initAgent(dir.dir, testPki, { applier: "dry-run" });
    const scratchParent = await mkdtemp(join(dir.dir, "tmp-"));
    process.env.TMPDIR = scratchParent; // os.tmpdir() reads it: the warm-up's mkdtemp lands here
    const before = await snapshotDir(stateDir);
    const deviceBefore = await snapshotDir(deviceDir);
    expect([...before.keys()]).toEqual(expect.arrayContaining(["state.json", "audit.log", "root.pem"]));
    const log: string[] = [];
    const agent = await Agent.open({ stateDir, log: (line) => log.push(line) });
    try {
      // The warm-up ran (no "warm-up at start failed" line) and its scratch is gone already.
      expect(log.filter((l) => l.includes("warm-up"))).toEqual([]);
      expect(await readdir(scratchParent)).toEqual([]);
      expect(agent.store.state.stage).toBe("factory");
      // The collection after the warm-up leaves no `gc` in the agent's global scope.
      expect((globalThis as { gc?: unknown }).gc).toBeUndefined();
    } finally {
      await agent.close();
      if (savedTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = savedTmp;
    }
    expect(await snapshotDir(stateDir)).toEqual(before);
    expect(await snapshotDir(deviceDir)).toEqual(deviceBefore);
    await rm(scratchParent, { recursive: true, force: true });
  });

  it("a warm-up that fails only logs: Agent.open goes on, the real state directory untouched", async () => {
    const { stateDir } = await initAgent(dir.dir, testPki, {
      applier: "dry-run",
      name: "hsm-failing-warm-up",
    });
    const before = await snapshotDir(stateDir);
    // The warm-up's scratch directory cannot be made: its onboarding fails before it starts.
    process.env.TMPDIR = join(dir.dir, "no-such-directory");
    const log: string[] = [];
    let agent: Agent | undefined;
    try {
      agent = await Agent.open({ stateDir, log: (line) => log.push(line) });
    } finally {
      if (savedTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = savedTmp;
    }
    try {
      expect(log).toEqual([
        expect.stringMatching(/^warm-up at start failed \(the first card will be slower\): .*ENOENT/),
      ]);
      expect(agent.store.state.stage).toBe("factory");
    } finally {
      await agent.close();
    }
    expect(await snapshotDir(stateDir)).toEqual(before);
  });
});
