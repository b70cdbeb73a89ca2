/**
 * The agent's warm-up at start (SPEC.md §9 "cold", docs/PERFORMANCE.md): before any card is present,
 * Agent.open runs the agent's own onboarding — onboarding.ts `onboard()`, the six steps with their
 * state writes, CRL ratchet, audit records, dry-run applier and receipt, through the real PIV host
 * stack (PivElement, PivSession, command chaining, TLV) — once over a built-in onboarding
 * (warm-up-world.ts) on an in-memory card end (WarmUpCard), and then one SCP11b handshake with a few
 * wrapped APDUs between a host and a card end in memory, which that plaintext onboarding does not go
 * through. The first real card then finds that code compiled and OpenSSL's curves initialised,
 * instead of paying for them inside the onboarding. There is no second, hand-written copy of the
 * onboarding's checks: what is warmed is what runs.
 *
 * What it does NOT do: trust anything (the world is checked against its own root, never against the
 * agent's trust anchor), touch a real card, the agent's state, audit log, device key or network (the
 * onboarding runs in a private scratch directory with a dry-run applier, and its receipt is signed by
 * the world's own device key, so no receipt of this HSM's exists that it did not mean). It changes no
 * decision of a real onboarding: every check runs again, in full, on the card's own bytes.
 */
import { createPrivateKey, type KeyObject, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { decodeCommandApdu } from "../apdu/command.js";
import {
  cardHandshake,
  completeHostHandshake,
  encodeAuthenticateData,
  generateP256,
  p256Point,
} from "../apdu/scp11/handshake.js";
import { CLA_SECURE_MESSAGING, ScpCardChannel, ScpHostChannel } from "../apdu/scp11/secure-messaging.js";
import { concatBytes, decodeTlv, decodeTlvs, encodeTlv, findTlv } from "../apdu/tlv.js";
import { findShardFor, verifyManifest } from "../config/manifest.js";
import { decodeShardEntry } from "../config/shard.js";
import { ecdsaAlgorithmForKey, ecdsaRawToDer, signEcdsaDigestRaw } from "../crypto/ecdsa.js";
import { createSoftwareSigner } from "../crypto/signer.js";
import {
  MANAGEMENT_KEY_ALGORITHM,
  MANAGEMENT_KEY_REFERENCE,
  managementKeyCipher,
} from "../piv/management-key.js";
import {
  certificateObjectId,
  encodeCertificateObject,
  encodePivmanData,
  encodePivmanProtectedData,
  ObjectId,
  PIV_AID,
  PivmanFlag,
} from "../piv/objects.js";
import { warmUpValidation } from "../pki/path-validation.js";
import { itemObjectId, requireItemName } from "../secure-element/card-layout.js";
import { PivElement } from "../secure-element/piv-element.js";
import { encodeCertificateList } from "../secure-element/secure-element.js";
import type { ApduResponder } from "../transport/apdu-responder.js";
import { InProcessTransport } from "../transport/in-process.js";
import { hex } from "../util/bytes.js";
import { AuditLog } from "./audit-log.js";
import type { DeviceIdentity } from "./device-identity.js";
import { DryRunBackend } from "./net/dry-run.js";
import { onboard } from "./onboarding.js";
import { AgentStateStore } from "./state-store.js";
import { WARM_UP_WORLD } from "./warm-up-world.js";

const der = (base64: string) => new Uint8Array(Buffer.from(base64, "base64"));

/** A YubiKey 5's contact ATR (T0 = FD: the host stack then uses extended APDUs, as with the real key). */
const YUBIKEY_ATR = Uint8Array.from(Buffer.from("3BFD1300008131FE158073C021C057597562694B657940", "hex"));

/**
 * The card end of the PIV warm-up: answers, from the built-in world, the commands the agent sends
 * (SELECT, version, serial, GET DATA of the world's objects, GENERAL AUTHENTICATE on 9E — ECDSA with
 * the world card's 9E key over the digest the host sends, as a card and the virtual card do — the PIN
 * status and VERIFY, and, when given a management key (warmUpAgent always gives one), the
 * PIN-protected management key, its metadata, the management-key exchange and PUT DATA into its own
 * in-memory objects). Nothing else (6D00). It holds
 * no key of any real card: its 9E key is the world's test key (certified by nothing but the world's
 * own root), its management key is drawn at random for this one warm-up, and what is "written" stays
 * in this object.
 */
export class WarmUpCard implements ApduResponder {
  readonly #objects: Map<number, Uint8Array>;
  #managementKey: Uint8Array | undefined;
  #witness: Uint8Array | undefined;
  #chained: Uint8Array[] = [];
  /** PUT DATA commands the card took (warmUpAgent checks the receipt went through). */
  writes = 0;

  constructor(
    objects: ReadonlyMap<number, Uint8Array>,
    private readonly cardAuthenticationKey: KeyObject,
    managementKey?: Uint8Array,
  ) {
    this.#objects = new Map(objects);
    if (managementKey) {
      this.#managementKey = managementKey;
      this.#objects.set(
        ObjectId.yubicoAdminData,
        encodePivmanData({ flags: PivmanFlag.managementKeyStored }),
      );
      this.#objects.set(ObjectId.printedInformation, encodePivmanProtectedData(managementKey));
    }
  }

  /** A copy of the object `id` as this card holds it now (undefined if absent). */
  object(id: number): Uint8Array | undefined {
    return this.#objects.get(id)?.slice();
  }

  powerOn(): Uint8Array {
    return YUBIKEY_ATR.slice();
  }

  powerOff(): void {}

  transmit(command: Uint8Array): Uint8Array {
    const ok = (data: Uint8Array = new Uint8Array(0)) => Uint8Array.of(...data, 0x90, 0x00);
    const c = decodeCommandApdu(command);
    if (c.cla & 0x10) {
      this.#chained.push(c.data);
      return ok();
    }
    const data = this.#chained.length > 0 ? concatBytes(...this.#chained, c.data) : c.data;
    this.#chained = [];
    switch (c.ins) {
      case 0xa4:
        return ok(encodeTlv(0x61, encodeTlv(0x4f, PIV_AID.subarray(5))));
      case 0xfd:
        return ok(Uint8Array.of(5, 7, 4));
      case 0xf8:
        return ok(Uint8Array.of(0x00, 0x98, 0x96, 0x7f));
      case 0xcb: {
        const id = data.length === 5 ? (data[2]! << 16) | (data[3]! << 8) | data[4]! : -1;
        const object = this.#objects.get(id);
        return object ? ok(encodeTlv(0x53, object)) : Uint8Array.of(0x6a, 0x82);
      }
      case 0xdb: {
        const items = decodeTlvs(data);
        const tag = findTlv(items, 0x5c);
        const value = findTlv(items, 0x53);
        if (!this.#managementKey || tag?.length !== 3 || value === undefined)
          return Uint8Array.of(0x69, 0x82);
        this.#objects.set((tag[0]! << 16) | (tag[1]! << 8) | tag[2]!, value.slice());
        this.writes++;
        return ok();
      }
      case 0xf7:
        return c.p2 === MANAGEMENT_KEY_REFERENCE && this.#managementKey
          ? ok(encodeTlv(0x01, Uint8Array.of(MANAGEMENT_KEY_ALGORITHM.aes192)))
          : Uint8Array.of(0x6a, 0x88);
      case 0x87:
        if (c.p2 === MANAGEMENT_KEY_REFERENCE) return this.#managementStep(data);
        return this.#cardAuthenticationStep(c.p1, c.p2, data);
      case 0x20:
        return data.length === 0 ? Uint8Array.of(0x63, 0xc3) : ok();
      default:
        return Uint8Array.of(0x6d, 0x00);
    }
  }

  /**
   * GENERAL AUTHENTICATE on 9E (PIN policy never): `7C { 82 (empty), 81 digest }` → `7C { 82 DER
   * ECDSA signature }`, the digest signed as it came (the host hashed the challenge), as the virtual
   * card answers (src/card-emulator/virtual-piv-card.ts). Another slot: 6A88; another algorithm or a
   * malformed request: 6A86 / 6A80.
   */
  #cardAuthenticationStep(p1: number, p2: number, data: Uint8Array): Uint8Array {
    if (p2 !== 0x9e) return Uint8Array.of(0x6a, 0x88);
    const algorithm = keyAlgorithm(this.cardAuthenticationKey);
    if (p1 !== (algorithm === "ES256" ? 0x11 : 0x14)) return Uint8Array.of(0x6a, 0x86);
    let digest: Uint8Array | undefined;
    try {
      const items = decodeTlvs(decodeTlv(data, 0x7c).value);
      if (findTlv(items, 0x82)?.length === 0) digest = findTlv(items, 0x81);
    } catch {
      digest = undefined;
    }
    const size = algorithm === "ES256" ? 32 : 48;
    if (!digest || digest.length === 0 || digest.length > size) return Uint8Array.of(0x6a, 0x80);
    const signature = ecdsaRawToDer(
      signEcdsaDigestRaw(this.cardAuthenticationKey, algorithm, digest),
      algorithm,
    );
    return Uint8Array.of(...encodeTlv(0x7c, encodeTlv(0x82, signature)), 0x90, 0x00);
  }

  /** The card's half of the management-key mutual authentication (AES-192, the YubiKey default). */
  #managementStep(data: Uint8Array): Uint8Array {
    const key = this.#managementKey;
    if (!key) return Uint8Array.of(0x6a, 0x80);
    const items = decodeTlvs(decodeTlv(data, 0x7c).value);
    const witness = findTlv(items, 0x80);
    const challenge = findTlv(items, 0x81);
    if (witness?.length === 0) {
      this.#witness = new Uint8Array(randomBytes(16));
      const encrypted = managementKeyCipher("aes192", key, this.#witness, "encrypt");
      return Uint8Array.of(...encodeTlv(0x7c, encodeTlv(0x80, encrypted)), 0x90, 0x00);
    }
    const expected = this.#witness;
    this.#witness = undefined;
    if (!expected || !witness || !challenge || hex(witness) !== hex(expected))
      return Uint8Array.of(0x69, 0x82);
    const response = managementKeyCipher("aes192", key, challenge, "encrypt");
    return Uint8Array.of(...encodeTlv(0x7c, encodeTlv(0x82, response)), 0x90, 0x00);
  }
}

/** The world's card objects: identity, certificates, CRL, manifest and the first HSM's shard. */
function worldObjects(shardObjectId: number): Map<number, Uint8Array> {
  const w = WARM_UP_WORLD;
  return new Map<number, Uint8Array>([
    [certificateObjectId("9E"), encodeCertificateObject(der(w.cardAuthentication))],
    [certificateObjectId("9C"), encodeCertificateObject(der(w.signing))],
    [itemObjectId({ kind: "certificates" }), encodeCertificateList([der(w.tokenCa)])],
    [itemObjectId({ kind: "crl" }), der(w.crl)],
    [itemObjectId({ kind: "manifest" }), der(w.manifest)],
    [shardObjectId, der(w.shard)],
  ]);
}

/** The world card's 9E private key (a test key of the world, certified by nothing but its own root). */
export function worldCardKey(): KeyObject {
  return createPrivateKey({
    key: Buffer.from(WARM_UP_WORLD.cardAuthenticationKey, "base64"),
    format: "der",
    type: "pkcs8",
  });
}

function keyAlgorithm(key: KeyObject): "ES256" | "ES384" {
  const algorithm = ecdsaAlgorithmForKey(key);
  if (!algorithm) throw new Error("warm-up: the world card's 9E key is not a P-256 or P-384 key");
  return algorithm;
}

/** The PIN the warm-up card takes (it takes any; this one is no card's). */
const WARM_UP_PIN = "00000000";

/** What the warm-up went through (the test checks it really did). */
export interface WarmUpSummary {
  /** Where onboard() ended on the in-memory card: always "configured" (otherwise it throws). */
  readonly stage: string;
  /** The owner, hostname and addresses onboard() verified and (dry-run) applied. */
  readonly owner: string;
  readonly hostname: string;
  readonly addresses: readonly string[];
  /** The card item the receipt went into, and that object's bytes as the in-memory card holds them afterwards. */
  readonly receiptItem: string;
  readonly receiptObject: Uint8Array;
  /** PUT DATA the in-memory card took: the receipt. */
  readonly cardWrites: number;
  /** Bytes of the answers that came back through the SCP11b channel. */
  readonly scpAnswer: number;
  /** The private scratch directory it used (removed before this returns). */
  readonly scratchDir: string;
}

/**
 * The warm-up Agent.open runs (see the file comment): the agent's own onboarding once over the built-in
 * world, then one SCP11b round trip. Everything it touches is its own:
 * - the card is a WarmUpCard in memory (the world's objects; a management key drawn here; the
 *   receipt stays in that object);
 * - the state, the audit log and the dry-run applier's record live in a private directory made by
 *   mkdtemp under the system's temporary directory, removed before this returns (also on failure);
 * - the trust anchor is the world's own root and the receipt is signed by the world's device key
 *   (never the agent's root or device key, which this function is not given);
 * - the applier is a DryRunBackend over that directory (it never runs a command on the host);
 * - no fault points (the agent's fault injection is not passed) and no log lines.
 * The challenge is drawn fresh by onboard() as for any card; the WarmUpCard signs it with the world
 * card's 9E key and the proof is checked against the 9E certificate. Throws if the onboarding does
 * not end configured with a receipt: the world is fixed, so a failure is a defect of this build, and
 * the caller decides (Agent.open logs it and goes on: a warm-up never stops the agent).
 */
export async function warmUpAgent(): Promise<WarmUpSummary> {
  const w = WARM_UP_WORLD;
  const clock = () => new Date(w.time);
  const scratchDir = await mkdtemp(join(tmpdir(), "hsm-onboard-warm-up-"));
  try {
    const state = await AgentStateStore.create(
      join(scratchDir, "state"),
      {
        serial: w.serial,
        stage: "waiting-for-card",
        device: "warm-up",
        applier: "dry-run",
        hostSettings: "none",
        quorum: { required: 1, pinned: false },
        crlNumbers: {},
      },
      { clock },
    );
    const audit = await AuditLog.open(state.path("audit"), { clock });
    const net = await DryRunBackend.open({ file: state.path("dryRun"), clock });
    const device: DeviceIdentity = {
      signer: createSoftwareSigner({
        privateKey: der(w.deviceKey),
        certificateChain: [der(w.deviceCertificate), der(w.deviceCa)],
      }),
      certificate: der(w.deviceCertificate),
      description: "warm-up world device key",
      close: async () => {},
    };
    const { manifest } = await verifyManifest(der(w.manifest), { validateChain: () => {} });
    const shardRef = findShardFor(manifest, w.serial);
    const card = new WarmUpCard(
      worldObjects(shardRef.objectId),
      worldCardKey(),
      new Uint8Array(randomBytes(24)),
    );
    const element = await PivElement.open(new InProcessTransport(card, { readerName: "warm-up" }));
    let result: Awaited<ReturnType<typeof onboard>>;
    try {
      result = await onboard({
        element,
        state,
        trust: { root: der(w.root), device },
        pinSource: { read: async () => WARM_UP_PIN },
        net,
        clock,
        audit,
        log: () => {},
      });
    } finally {
      await element.close();
    }
    // The shard decoder once more (onboard() decodes the HSM's entry once per card): its loop over a
    // full 3,063-byte shard is then compiled before the first card instead of during it (measured,
    // docs/PERFORMANCE.md: the first card's shard step took twice as long without this pass).
    decodeShardEntry(der(w.shard), shardRef, w.serial);
    const item = result.receipt?.written ? result.receipt.item : undefined;
    const receiptObject = item ? card.object(itemObjectId(requireItemName(item))) : undefined;
    if (!result.ok || result.stage !== "configured" || !item || !receiptObject || !result.owner) {
      throw new Error(
        `warm-up onboarding did not complete: ${result.error?.message ?? result.receipt?.reason ?? result.stage}`,
      );
    }
    return {
      stage: result.stage,
      owner: result.owner,
      hostname: result.hostname ?? "",
      addresses: result.addresses ?? [],
      receiptItem: item,
      receiptObject,
      cardWrites: card.writes,
      scpAnswer: warmUpScp11b(),
      scratchDir,
    };
  } finally {
    await rm(scratchDir, { recursive: true, force: true });
  }
}

/**
 * What Agent.open runs before any card (and the bench measures): warmUpValidation (one validation of
 * a built-in chain, then the installed root parsed with its signature checked), warmUpAgent, and one
 * collection of its garbage. An unreadable root throws (MalformedError), as it would for the first
 * card; a failure of warmUpAgent is only logged (`log`): a warm-up never stops the agent, and every
 * check runs again in full on each card.
 */
export async function warmUpAtStart(root: Uint8Array, log: (line: string) => void): Promise<void> {
  await warmUpValidation(root);
  try {
    await warmUpAgent();
  } catch (error) {
    // A defect of this build, not of any card.
    log(`warm-up at start failed (the first card will be slower): ${(error as Error).message}`);
  }
  collectWarmUpGarbage();
}

/**
 * One full garbage collection once the warm-up is done, so its garbage is not collected during the
 * first card (measured, docs/PERFORMANCE.md: without it the first onboarding after the full warm-up
 * paid a collection and was no faster than without the full warm-up, and the heap stayed larger).
 * Node exposes no collector call by default: `--expose-gc` is set for one new context, its `gc`
 * taken, and the flag set back, so the agent's own global scope never gets a `gc`.
 */
export function collectWarmUpGarbage(): void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed) {
    exposed();
    return;
  }
  setFlagsFromString("--expose-gc");
  try {
    (runInNewContext("gc") as () => void)();
  } finally {
    setFlagsFromString("--no-expose-gc");
  }
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
