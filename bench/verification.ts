/**
 * The agent's host-side verification, step by step, with the same library calls and options
 * src/agent/onboarding.ts makes (SPEC.md §9: "host-side verification ≤ 5 ms CPU per onboarding").
 * The card's bytes are read once beforehand (not timed), and the 9E challenge is answered once by
 * the card; what is timed is what the HSM's CPU does with them.
 */

import { warmUpAtStart } from "../src/agent/warm-up.js";
import { type CardState, MemoryCardStateStore } from "../src/card-emulator/card-state-store.js";
import { VirtualPivCard } from "../src/card-emulator/virtual-piv-card.js";
import {
  checkManifestValidity,
  findShardFor,
  type Manifest,
  verifyManifest,
} from "../src/config/manifest.js";
import { signReceipt } from "../src/config/receipt.js";
import { decodeShardEntry, networkStateDigest } from "../src/config/shard.js";
import type { Signer } from "../src/crypto/signer.js";
import { primeTrustAnchor, validateChainView } from "../src/pki/path-validation.js";
import { VALIDATION_REQUIREMENTS } from "../src/pki/profiles.js";
import { shardItemName } from "../src/secure-element/card-layout.js";
import { PivElement } from "../src/secure-element/piv-element.js";
import { newChallenge, verifyChallengeProof } from "../src/secure-element/secure-element.js";
import { InProcessTransport } from "../src/transport/in-process.js";
import { median } from "./report.js";

export interface StepTime {
  readonly step: string;
  /** First call in this process. */
  readonly coldCpuMs: number;
  /** Median over the repetitions that follow. */
  readonly warmCpuMs: number;
}

export interface VerificationTimes {
  readonly steps: readonly StepTime[];
  /** Agent.open's warm-up (warmUpAtStart: warmUpValidation, warmUpAgent, the collection), before any card; not verification. */
  readonly warmUpCpuMs: number;
  /** Sum of the verification steps (the receipt signature is not verification). */
  readonly verifyColdCpuMs: number;
  readonly verifyWarmCpuMs: number;
  readonly receipt: StepTime;
}

async function cpuOf(run: () => unknown): Promise<number> {
  const before = process.cpuUsage();
  await run();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000;
}

/** Times each verification step once cold, then `repetitions` times warm (median). */
export async function measureVerification(
  cardState: CardState,
  rootDer: Uint8Array,
  serial: string,
  deviceSigner: Signer,
  repetitions = 15,
  /** As Agent.open: warmUpAtStart before any card (default); false: only the anchor parsed. */
  warmUp = true,
): Promise<VerificationTimes> {
  // The card's bytes, read as the agent reads them (untimed).
  const element = await PivElement.open(
    new InProcessTransport(new VirtualPivCard({ store: new MemoryCardStateStore(cardState) })),
  );
  let inputs: {
    identity: Awaited<ReturnType<PivElement["identity"]>>;
    crl: Uint8Array;
    manifest: Uint8Array;
    content: Manifest;
    shard: Uint8Array;
    challenge: Uint8Array;
    proof: Awaited<ReturnType<PivElement["proveChallenge"]>>;
  };
  try {
    const identity = await element.identity();
    const crl = await element.readItem("crl");
    const manifest = await element.readItem("manifest");
    if (!crl || !manifest) throw new Error("the card carries no CRL or manifest");
    // The shard, found the way the agent finds it (the manifest is verified again in the timed steps).
    const { manifest: content } = await verifyManifest(manifest, { validateChain: () => {} });
    const ref = findShardFor(content, serial);
    const shard = await element.readItem(shardItemName(ref.objectId));
    if (!shard) throw new Error("the shard named by the manifest is missing");
    const challenge = newChallenge();
    const proof = await element.proveChallenge(challenge);
    inputs = { identity, crl, manifest, content, shard, challenge, proof };
  } finally {
    await element.close();
  }
  const { identity, crl, challenge, proof } = inputs;
  // What Agent.open does once per process, before any card is present (src/agent/agent.ts), unless
  // told not to: then only the anchor is parsed (primeTrustAnchor) and every first use is counted.
  const warmUpCpuMs = await cpuOf(async () => {
    if (!warmUp) return primeTrustAnchor(rootDer);
    await warmUpAtStart(rootDer, (line) => {
      throw new Error(line);
    });
  });
  const now = new Date();
  const chainOptions = { trustAnchor: rootDer, crls: [crl], now };

  const steps: { step: string; run: () => Promise<unknown> | unknown }[] = [
    {
      step: "card chain: validateChainView(9E → token CA → root, CRL)",
      run: () =>
        validateChainView({
          leaf: identity.cardAuthentication,
          intermediates: identity.intermediates,
          ...chainOptions,
          ...VALIDATION_REQUIREMENTS.cardAuthentication,
        }),
    },
    {
      step: "challenge proof: verifyChallengeProof (ECDSA P-256)",
      run: () => verifyChallengeProof(identity.cardAuthentication, challenge, proof),
    },
    {
      step: "manifest: COSE_Sign verify + signer validateChainView",
      run: () =>
        verifyManifest(inputs.manifest, {
          validateChain: async (chain) => {
            await validateChainView({
              leaf: chain[0]!,
              intermediates: chain.slice(1),
              ...chainOptions,
              ...VALIDATION_REQUIREMENTS.configSigning,
            });
          },
        }),
    },
    {
      step: "shard: validity, findShardFor, SHA-256 + decodeShardEntry, state digest",
      run: () => {
        checkManifestValidity(inputs.content, Math.floor(now.getTime() / 1000));
        const ref = findShardFor(inputs.content, serial);
        networkStateDigest(decodeShardEntry(inputs.shard, ref, serial));
      },
    },
  ];
  const timed: StepTime[] = [];
  for (const { step, run } of steps) {
    const coldCpuMs = await cpuOf(run);
    const warm: number[] = [];
    for (let i = 0; i < repetitions; i++) warm.push(await cpuOf(run));
    timed.push({ step, coldCpuMs, warmCpuMs: median(warm) });
  }
  const receiptRun = () =>
    signReceipt(
      {
        serial,
        configurationId: new Uint8Array(16),
        sequence: 1,
        stateDigest: new Uint8Array(32),
        time: Math.floor(now.getTime() / 1000),
        outcome: 0,
      },
      deviceSigner,
    );
  const receiptCold = await cpuOf(receiptRun);
  const receiptWarm: number[] = [];
  for (let i = 0; i < repetitions; i++) receiptWarm.push(await cpuOf(receiptRun));
  return {
    warmUpCpuMs,
    steps: timed,
    verifyColdCpuMs: timed.reduce((sum, s) => sum + s.coldCpuMs, 0),
    verifyWarmCpuMs: timed.reduce((sum, s) => sum + s.warmCpuMs, 0),
    receipt: {
      step: "receipt: signReceipt (device key, ES256)",
      coldCpuMs: receiptCold,
      warmCpuMs: median(receiptWarm),
    },
  };
}
