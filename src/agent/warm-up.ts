/**
 * The agent's warm-up at start (SPEC.md §9 "cold", docs/PERFORMANCE.md): before any card is present,
 * the agent runs its whole host-side path once over a built-in onboarding (warm-up-world.ts) — the
 * same library calls with the same options as onboarding.ts: the 9E chain with its CRL, the
 * challenge proof, the manifest's COSE signature and its signer's chain, the quorum key, the shard
 * entry, the network it becomes and its digest, a receipt signed and appended, an audit hash, and
 * one SCP11b handshake with a few wrapped APDUs between a host and a card end in memory. The first
 * real card then finds that code compiled and OpenSSL's curves initialised, instead of paying for
 * them inside the onboarding.
 *
 * What it does NOT do: trust anything (the world is checked against its own root, never against the
 * agent's trust anchor), touch a card, the state, the audit log or the network, or use the device
 * key (the receipt is signed by the world's own device key, so no receipt of this HSM's exists that
 * it did not mean). It changes no decision of a real onboarding: every check
 * runs again, in full, on the card's own bytes.
 */
import { createHash } from "node:crypto";
import {
  cardHandshake,
  completeHostHandshake,
  encodeAuthenticateData,
  generateP256,
  p256Point,
} from "../apdu/scp11/handshake.js";
import { CLA_SECURE_MESSAGING, ScpCardChannel, ScpHostChannel } from "../apdu/scp11/secure-messaging.js";
import { leafPublicKey } from "../config/cose.js";
import { checkManifestValidity, findShardFor, verifyManifest } from "../config/manifest.js";
import { appendReceipt, decodeReceiptLog, signReceipt } from "../config/receipt.js";
import { decodeShardEntry, networkStateDigest } from "../config/shard.js";
import { createSoftwareSigner } from "../crypto/signer.js";
import { spkiSha256 } from "../pki/ca-facts.js";
import { certificateParts } from "../pki/der.js";
import { readCrl, validateChainView } from "../pki/path-validation.js";
import { VALIDATION_REQUIREMENTS } from "../pki/profiles.js";
import { verifyChallengeProof, YUBIKEY_STORAGE } from "../secure-element/secure-element.js";
import { hex } from "../util/bytes.js";
import { canonicalJson, recordHash } from "./audit-log.js";
import { hostNetworkConfig, plannedAddresses } from "./net/net-backend.js";
import { crlIssuerKey } from "./state-store.js";
import { WARM_UP_WORLD } from "./warm-up-world.js";

/** What the warm-up went through (the test checks it really did). */
export interface WarmUpSummary {
  readonly owner: string;
  readonly hostname: string;
  readonly addresses: readonly string[];
  readonly validSigners: number;
  readonly receiptBytes: number;
  /** Bytes of the answer that came back through the SCP11b channel. */
  readonly scpAnswer: number;
}

const der = (base64: string) => new Uint8Array(Buffer.from(base64, "base64"));

/**
 * Runs the host-side onboarding path once over the built-in world (see the file comment). Throws if
 * any step fails: the world is fixed, so a failure is a defect of this build, and the caller decides
 * (Agent.open logs it and goes on: a warm-up never stops the agent).
 */
export async function warmUpOnboarding(): Promise<WarmUpSummary> {
  const w = WARM_UP_WORLD;
  const root = der(w.root);
  const tokenCa = der(w.tokenCa);
  const cardAuthentication = der(w.cardAuthentication);
  const signing = der(w.signing);
  const crl = der(w.crl);
  const now = new Date(w.time);

  // 1. The card: 9E chain with the CRL (the CRL ratchet's key and number), the challenge proof.
  crlIssuerKey(certificateParts(cardAuthentication).issuer);
  const card = await validateChainView({
    leaf: cardAuthentication,
    intermediates: [tokenCa],
    trustAnchor: root,
    crls: [crl],
    now,
    ...VALIDATION_REQUIREMENTS.cardAuthentication,
  });
  verifyChallengeProof(cardAuthentication, der(w.challenge), {
    algorithm: w.proofAlgorithm,
    signature: der(w.proofSignature),
  });
  const tokenCaView = card.path[1]!;
  spkiSha256(tokenCaView);
  createHash("sha256").update(new Uint8Array(tokenCaView.rawData)).digest("hex");
  readCrl(crl);

  // 3. The configuration: COSE signatures, each signer's chain, the quorum by key.
  const valid: Uint8Array[] = [];
  const { manifest } = await verifyManifest(der(w.manifest), {
    duplicateKeys: "count-once",
    validateChain: async (chain) => {
      const leaf = chain[0]!;
      const validated = await validateChainView({
        leaf,
        intermediates: chain.length > 1 ? chain.slice(1) : [tokenCa],
        trustAnchor: root,
        crls: [crl],
        now,
        ...VALIDATION_REQUIREMENTS.configSigning,
      });
      createHash("sha256").update(new Uint8Array(validated.path[1]!.rawData)).digest("hex");
      valid.push(leaf);
    },
  });
  if (!valid.some((leaf) => hex(leaf) === hex(signing))) throw new Error("warm-up: the 9C did not sign");
  const keys = new Set(
    valid.map((leaf) => leafPublicKey([leaf]).export({ format: "der", type: "spki" }).toString("hex")),
  );
  checkManifestValidity(manifest, Math.floor(now.getTime() / 1000));

  // 4. The HSM's own entry and the network it becomes.
  const ref = findShardFor(manifest, w.serial);
  const config = decodeShardEntry(der(w.shard), ref, w.serial);
  const network = hostNetworkConfig(config);
  const digest = networkStateDigest(config);
  structuredClone(config);

  // 6. A receipt, signed by the world's own device key (never the agent's), appended to an empty object.
  const signer = createSoftwareSigner({
    privateKey: der(w.deviceKey),
    certificateChain: [der(w.deviceCertificate), der(w.deviceCa)],
  });
  const receipt = await signReceipt(
    {
      serial: w.serial,
      configurationId: manifest.configurationId,
      sequence: manifest.sequence,
      stateDigest: digest,
      time: Math.floor(now.getTime() / 1000),
      outcome: 0,
      dryRun: true,
      channel: "SCP11b",
    },
    signer,
  );
  const object = appendReceipt(undefined, receipt, YUBIKEY_STORAGE.maxItemBytes);
  decodeReceiptLog(object);
  const addresses = plannedAddresses(network);
  const record = {
    seq: 1,
    time: now.toISOString(),
    event: "warm-up",
    data: { serial: w.serial, hostname: config.hsm.hostname, addresses, digest: hex(digest) },
    prev: "",
  };
  canonicalJson(record);
  recordHash(record);

  return {
    owner: manifest.owner,
    hostname: config.hsm.hostname,
    addresses,
    validSigners: keys.size,
    receiptBytes: receipt.length,
    scpAnswer: warmUpScp11b(),
  };
}

/**
 * One SCP11b handshake between this process's host code and an in-memory card end (a key made
 * here), then a wrapped command and its wrapped answer both ways: key agreement, KDF, receipt, AES
 * and CMAC. Returns the length of the answer that came back.
 */
function warmUpScp11b(): number {
  const skSd = generateP256();
  const eSkOce = generateP256();
  const authData = encodeAuthenticateData("b", p256Point(eSkOce));
  const cardEnd = cardHandshake({ authData, skSd });
  const session = completeHostHandshake({ authData, answer: cardEnd.answer, eSkOce, pkSd: p256Point(skSd) });
  const host = new ScpHostChannel(session);
  const card = new ScpCardChannel(cardEnd);
  let answered = 0;
  for (const data of [new Uint8Array(0), new Uint8Array(8).fill(0x31)]) {
    const wrapped = host.wrap({ cla: 0x00, ins: 0x20, p1: 0x00, p2: 0x80, data });
    const plain = card.unwrapCommand({
      cla: wrapped.cla,
      ins: wrapped.ins,
      p1: wrapped.p1,
      p2: wrapped.p2,
      data: wrapped.data ?? new Uint8Array(0),
      extended: false,
    });
    if ((wrapped.cla & CLA_SECURE_MESSAGING) === 0 || plain.length !== data.length)
      throw new Error("warm-up: the secure channel did not round-trip");
    const answer = host.unwrap({ data: card.wrapResponse(Uint8Array.of(0x53, 0x00), 0x9000), sw: 0x9000 });
    answered += answer.data.length;
  }
  return answered;
}
