/**
 * The agent's warm-up at start (SPEC.md §9 "cold", docs/PERFORMANCE.md): before any card is present,
 * the agent runs its whole host-side path once over a built-in onboarding (warm-up-world.ts) — the
 * same library calls with the same options as onboarding.ts: the 9E chain with its CRL, the
 * challenge proof, the manifest's COSE signature and its signer's chain, the quorum key, the shard
 * entry, the network it becomes and its digest, a receipt signed and appended, an audit hash, and
 * one SCP11b handshake with a few wrapped APDUs between a host and a card end in memory, and the PIV
 * host stack (PivElement over an in-memory card end that serves the world's objects). The first
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
import { decodeCommandApdu } from "../apdu/command.js";
import {
  cardHandshake,
  completeHostHandshake,
  encodeAuthenticateData,
  generateP256,
  p256Point,
} from "../apdu/scp11/handshake.js";
import { CLA_SECURE_MESSAGING, ScpCardChannel, ScpHostChannel } from "../apdu/scp11/secure-messaging.js";
import { encodeTlv } from "../apdu/tlv.js";
import { leafPublicKey } from "../config/cose.js";
import { checkManifestValidity, findShardFor, verifyManifest } from "../config/manifest.js";
import { appendReceipt, decodeReceiptLog, signReceipt } from "../config/receipt.js";
import { decodeShardEntry, networkStateDigest } from "../config/shard.js";
import { ecdsaRawToDer } from "../crypto/ecdsa.js";
import { createSoftwareSigner } from "../crypto/signer.js";
import { certificateObjectId, encodeCertificateObject, PIV_AID } from "../piv/objects.js";
import { spkiSha256 } from "../pki/ca-facts.js";
import { certificateParts } from "../pki/der.js";
import { readCrl, validateChainView } from "../pki/path-validation.js";
import { VALIDATION_REQUIREMENTS } from "../pki/profiles.js";
import { itemObjectId, shardItemName } from "../secure-element/card-layout.js";
import { PivElement } from "../secure-element/piv-element.js";
import {
  encodeCertificateList,
  verifyChallengeProof,
  YUBIKEY_STORAGE,
} from "../secure-element/secure-element.js";
import type { ApduResponder } from "../transport/apdu-responder.js";
import { InProcessTransport } from "../transport/in-process.js";
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
  /** Object bytes the PIV host stack read from the in-memory card end (warmUpPivStack). */
  readonly pivBytesRead: number;
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
    pivBytesRead: await warmUpPivStack(ref.objectId),
  };
}

/** A YubiKey 5's contact ATR (T0 = FD: the host stack then uses extended APDUs, as with the real key). */
const YUBIKEY_ATR = Uint8Array.from(Buffer.from("3BFD1300008131FE158073C021C057597562694B657940", "hex"));

/**
 * The card end of the PIV warm-up: answers, from the built-in world, the commands the agent sends
 * before it writes (SELECT, version, serial, GET DATA of the world's objects, the 9E signature over
 * the world's fixed challenge, the PIN status and VERIFY). Nothing else (6D00); it holds no key.
 */
class WarmUpCard implements ApduResponder {
  constructor(
    private readonly objects: ReadonlyMap<number, Uint8Array>,
    private readonly signatureDer: Uint8Array,
  ) {}

  powerOn(): Uint8Array {
    return YUBIKEY_ATR.slice();
  }

  powerOff(): void {}

  transmit(command: Uint8Array): Uint8Array {
    const ok = (data: Uint8Array = new Uint8Array(0)) => Uint8Array.of(...data, 0x90, 0x00);
    const c = decodeCommandApdu(command);
    switch (c.ins) {
      case 0xa4:
        return ok(encodeTlv(0x61, encodeTlv(0x4f, PIV_AID.subarray(5))));
      case 0xfd:
        return ok(Uint8Array.of(5, 7, 4));
      case 0xf8:
        return ok(Uint8Array.of(0x00, 0x98, 0x96, 0x7f));
      case 0xcb: {
        const id = c.data.length === 5 ? (c.data[2]! << 16) | (c.data[3]! << 8) | c.data[4]! : -1;
        const object = this.objects.get(id);
        return object ? ok(encodeTlv(0x53, object)) : Uint8Array.of(0x6a, 0x82);
      }
      case 0x87:
        return ok(encodeTlv(0x7c, encodeTlv(0x82, this.signatureDer)));
      case 0x20:
        return c.data.length === 0 ? Uint8Array.of(0x63, 0xc3) : ok();
      default:
        return Uint8Array.of(0x6d, 0x00);
    }
  }
}

/**
 * The PIV host stack (transport, command chaining, PivSession, PivElement, TLV) once, as the agent
 * drives it before it writes: identity, CRL, the 9E challenge (its proof checked), PIN status and
 * VERIFY, manifest, shard, the receipt object. Returns the object bytes read.
 */
async function warmUpPivStack(shardObjectId: number): Promise<number> {
  const w = WARM_UP_WORLD;
  const objects = new Map<number, Uint8Array>([
    [certificateObjectId("9E"), encodeCertificateObject(der(w.cardAuthentication))],
    [certificateObjectId("9C"), encodeCertificateObject(der(w.signing))],
    [itemObjectId({ kind: "certificates" }), encodeCertificateList([der(w.tokenCa)])],
    [itemObjectId({ kind: "crl" }), der(w.crl)],
    [itemObjectId({ kind: "manifest" }), der(w.manifest)],
    [shardObjectId, der(w.shard)],
  ]);
  const card = new WarmUpCard(objects, ecdsaRawToDer(der(w.proofSignature), w.proofAlgorithm));
  const element = await PivElement.open(new InProcessTransport(card, { readerName: "warm-up" }));
  let read = 0;
  try {
    const identity = await element.identity();
    const challenge = der(w.challenge);
    verifyChallengeProof(identity.cardAuthentication, challenge, await element.proveChallenge(challenge));
    read += (await element.readItem("crl"))?.length ?? 0;
    await element.pinTriesLeft();
    await element.verifyPin("00000000");
    read += (await element.readItem("manifest"))?.length ?? 0;
    read += (await element.readItem(shardItemName(shardObjectId)))?.length ?? 0;
    read += (await element.readItem("receipt-0"))?.length ?? 0;
  } finally {
    await element.close();
  }
  return read;
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
