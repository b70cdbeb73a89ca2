/**
 * The station's co-signing flow (dual control, SPEC.md "Dual control (M of N)"): a configuration one
 * officer wrote onto the carrier card gets a second officer's signature. Independent of the CLI:
 * `station cosign` calls it with card openers that prompt for the cards (one reader: swap when told;
 * two readers: carrier in one, signer in the other).
 *
 *   1. the carrier: authenticated (chain + CRL, live 9E challenge), its manifest read and verified
 *      (every signature, every chain), the carrier's own 9C among the signers, not expired; its
 *      shards read and checked against the manifest (to say how many HSMs are being signed for)
 *   2. the co-signer's card: authenticated the same way; same owner as the manifest (16); its 9C
 *      key and its officer not already among the signers (one card, one key, one vote: 19); the
 *      co-signed manifest must fit its object (3,063 bytes) and the carrier — all before the PIN
 *   3. what is being signed is shown (owner, sequence, HSM count, validity, configuration digest);
 *      the co-signer's PIN, then TOTP when enrolled; card 2 signs; the result verified
 *   4. the carrier again (the same card: same 9C certificate; the same manifest still on it), its
 *      officer's PIN (writing needs it), the manifest written, read back byte for byte and verified
 */
import { createHash, X509Certificate } from "node:crypto";
import { leafPublicKey } from "../config/cose.js";
import {
  checkManifestValidity,
  type Manifest,
  prepareManifestCosignature,
  verifyManifest,
} from "../config/manifest.js";
import { decodeShard, shardDigest } from "../config/shard.js";
import {
  CardFullError,
  CardNotTrustedError,
  IntegrityError,
  NotForThisHsmError,
  PinBlockedError,
  QuorumError,
} from "../errors.js";
import type { AuthenticatedCard } from "../pki/card-authentication.js";
import { authenticateCard } from "../pki/card-authentication-x509.js";
import { shardItemName } from "../secure-element/card-layout.js";
import type { SecureElement } from "../secure-element/secure-element.js";
import { bytesEqual, hex } from "../util/bytes.js";
import { stationCardPolicy } from "./authenticate-card.js";
import { loadStationTrust } from "./station-dir.js";
import { isTotpEnrolled, TotpRejectedError, verifyOfficerTotp } from "./totp.js";
import {
  configSigningValidator,
  type PinRequest,
  type SecretInput,
  type TotpRequest,
  validatedSigner,
} from "./write-card.js";

/**
 * A card the flow holds while it works with it. `release(next)` ends the session; `next` is true when
 * the flow goes on to another card (one reader: time to ask for this one's removal), false when it
 * stops here (done or failed).
 */
export interface HeldCard {
  readonly element: SecureElement;
  release(next: boolean): Promise<void>;
}

export type CosignStep = "carrier" | "signer" | "sign" | "write" | "verify";

export interface CosignProgress {
  readonly step: CosignStep;
  readonly message: string;
}

/** What the co-signer is asked to sign, shown before the PIN. */
export interface CosignSummary {
  readonly owner: string;
  readonly configurationId: string;
  readonly sequence: number;
  readonly hsms: number;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /**
   * SHA-256 of the configuration as signed (owner, id, sequence, validity, every shard's object,
   * serial range and SHA-256): it covers the whole plan.
   */
  readonly digest: string;
  /** Subjects of the 9C certificates that signed already. */
  readonly signedBy: readonly string[];
  readonly signer: string;
  /** The co-signing officer (CN of the card's certificates), when the card names one. */
  readonly signerOfficer?: string;
  /** The co-signer's card (reader name and serial). */
  readonly signerCard: { readonly name: string; readonly serial?: string };
  /** The manifest's size before and after the co-signature. */
  readonly bytesBefore: number;
  readonly bytesAfter: number;
}

export interface CosignOptions {
  readonly stationDir: string;
  readonly now?: Date;
  /** The carrier card: `read` first, `write` to write the manifest back (the same card again). */
  readonly openCarrier: (phase: "read" | "write") => Promise<HeldCard>;
  /** The co-signer's card. */
  readonly openSigner: () => Promise<HeldCard>;
  readonly signerPin: SecretInput<PinRequest>;
  readonly signerTotp?: SecretInput<TotpRequest>;
  readonly carrierPin: SecretInput<PinRequest>;
  /** Shown before the co-signer's PIN is asked; throw to stop (nothing signed). */
  readonly onSummary?: (summary: CosignSummary) => void | Promise<void>;
  readonly onProgress?: (progress: CosignProgress) => void;
}

export interface CosignResult extends CosignSummary {
  /** Signatures on the manifest now. */
  readonly signatures: number;
  readonly durationMs: number;
}

function who(card: AuthenticatedCard): string {
  return card.officer !== undefined ? `officer "${card.officer}"` : `card ${card.certificate.subject}`;
}

function spkiOf(leaf: Uint8Array): string {
  return leafPublicKey([leaf]).export({ format: "der", type: "spki" }).toString("hex");
}

async function askSecret<R>(input: SecretInput<R>, request: R): Promise<string> {
  return typeof input === "string" ? input : input(request);
}

async function verifyPinOf(element: SecureElement, card: AuthenticatedCard, input: SecretInput<PinRequest>) {
  const triesLeft = await element.pinTriesLeft();
  if (triesLeft === 0)
    throw new PinBlockedError(`the PIN of ${who(card)} is blocked: unblock it with the PUK first`);
  const pin = await askSecret(input, {
    owner: card.owner,
    ...(card.officer ? { officer: card.officer } : {}),
    triesLeft,
  });
  await element.verifyPin(pin);
}

/** The subject of a leaf certificate (node's rendering), to tell officers apart. */
function subjectOf(leaf: Uint8Array): string {
  return new X509Certificate(Buffer.from(leaf)).subject.split("\n").join(", ");
}

export async function cosignConfiguration(options: CosignOptions): Promise<CosignResult> {
  const started = performance.now();
  const now = options.now ?? new Date();
  const progress = (p: CosignProgress) => options.onProgress?.(p);
  const trust = await loadStationTrust(options.stationDir);
  const policy = stationCardPolicy(trust, now);
  const validator = configSigningValidator(trust, now);

  // 1. The carrier and its configuration.
  let manifestBytes: Uint8Array;
  let manifest: Manifest;
  let signerLeaves: Uint8Array[];
  let carrierLeaf: Uint8Array;
  let tokenCaSha256: string;
  let hsms = 0;
  let room: number;
  let maxItemBytes: number;
  {
    const held = await options.openCarrier("read");
    let ok = false;
    try {
      const carrier = await authenticateCard(held.element, policy);
      carrierLeaf = new Uint8Array(carrier.signing.leaf.rawData);
      tokenCaSha256 = carrier.tokenCaSha256;
      const bytes = await held.element.readItem("manifest");
      if (!bytes)
        throw new NotForThisHsmError(
          "the carrier card holds no configuration: write one first (station write)",
        );
      manifestBytes = bytes;
      const verified = await verifyManifest(bytes, { validateChain: validator });
      manifest = verified.manifest;
      signerLeaves = verified.signers.map((s) => s.certificateChain[0]!);
      if (manifest.owner !== carrier.owner) {
        throw new NotForThisHsmError(
          `the configuration is for "${manifest.owner}" but the carrier card belongs to "${carrier.owner}"`,
        );
      }
      if (!signerLeaves.some((leaf) => bytesEqual(leaf, carrierLeaf))) {
        // An agent takes a configuration only with its carrier's own signature among the signers.
        throw new CardNotTrustedError(
          "the configuration on the carrier is not signed by the carrier's own 9C key",
        );
      }
      checkManifestValidity(manifest, Math.floor(now.getTime() / 1000));
      for (const shard of manifest.shards) {
        const name = shardItemName(shard.objectId);
        const shardBytes = await held.element.readItem(name);
        if (!shardBytes || !bytesEqual(shardDigest(shardBytes), shard.sha256)) {
          throw new IntegrityError(`${name} on the carrier does not match the manifest`);
        }
        hsms += decodeShard(shardBytes).hsms.length;
      }
      const capacity = await held.element.capacity();
      maxItemBytes = capacity.maxItemBytes;
      room = capacity.freeBytes + bytes.length;
      progress({
        step: "carrier",
        message:
          `carrier authenticated: owner "${carrier.owner}", ${who(carrier)}; configuration sequence ${manifest.sequence}, ` +
          `${verified.signers.length} signature${verified.signers.length === 1 ? "" : "s"} verified`,
      });
      ok = true;
    } finally {
      await held.release(ok);
    }
  }

  // 2. The co-signer's card, checked before its PIN.
  const held = await options.openSigner();
  let cosigned: Uint8Array;
  let summary: CosignSummary;
  let signed = false;
  try {
    const card = await authenticateCard(held.element, policy);
    const signer = validatedSigner(await held.element.signer(), card);
    const leaf = signer.certificateChain[0]!;
    if (card.owner !== manifest.owner) {
      throw new NotForThisHsmError(
        `this card belongs to "${card.owner}", the configuration is for "${manifest.owner}": use a card of "${manifest.owner}"`,
      );
    }
    if (card.tokenCaSha256 !== tokenCaSha256) {
      // The agent takes co-signers under the carrier's token CA only (their x5chain is the leaf alone).
      throw new NotForThisHsmError(
        "this card comes from another token CA than the carrier's: a co-signer's card must be issued by the same token CA",
      );
    }
    const key = spkiOf(leaf);
    if (bytesEqual(leaf, carrierLeaf) || signerLeaves.some((l) => spkiOf(l) === key)) {
      throw new QuorumError(
        `${who(card)}'s card (its 9C key) already signed this configuration: one card, one vote — a co-signature needs another officer's card`,
      );
    }
    const subjects = signerLeaves.map(subjectOf);
    if (subjects.includes(subjectOf(leaf))) {
      throw new QuorumError(
        `${who(card)} already signed this configuration (same 9C subject): another officer must co-sign`,
      );
    }
    progress({
      step: "signer",
      message: `co-signer authenticated: owner "${card.owner}", ${who(card)} (chain, CRL, live challenge)`,
    });
    const prepared = prepareManifestCosignature(manifestBytes, signer);
    if (prepared.length > maxItemBytes) {
      throw new CardFullError(
        `the co-signed manifest would be ${prepared.length} bytes; its object holds ${maxItemBytes}: ` +
          `write the configuration with room for co-signers (station write --cosigners N); nothing was signed`,
      );
    }
    if (prepared.length > room) {
      throw new CardFullError(
        `the co-signed manifest would be ${prepared.length} bytes; the carrier has room for ${room}; nothing was signed`,
      );
    }
    const payloadDigest = createHash("sha256").update(payloadOf(manifest)).digest("hex");
    summary = {
      owner: manifest.owner,
      configurationId: hex(manifest.configurationId),
      sequence: manifest.sequence,
      hsms,
      notBefore: new Date(manifest.notBefore * 1000),
      notAfter: new Date(manifest.notAfter * 1000),
      digest: payloadDigest,
      signedBy: subjects,
      signer: who(card),
      ...(card.officer !== undefined ? { signerOfficer: card.officer } : {}),
      signerCard: {
        name: held.element.info.name,
        ...(held.element.info.serial !== undefined ? { serial: held.element.info.serial } : {}),
      },
      bytesBefore: manifestBytes.length,
      bytesAfter: prepared.length,
    };
    await options.onSummary?.(summary);

    // 3. The co-signer's PIN (and TOTP), the signature.
    await verifyPinOf(held.element, card, options.signerPin);
    if (card.officer !== undefined && (await isTotpEnrolled(options.stationDir, card.officer))) {
      if (options.signerTotp === undefined) {
        throw new TotpRejectedError(
          `officer "${card.officer}" is enrolled for TOTP at this station: a code is required`,
        );
      }
      const code = await askSecret(options.signerTotp, { officer: card.officer });
      await verifyOfficerTotp(options.stationDir, card.officer, code, now);
      progress({ step: "sign", message: `TOTP code of "${card.officer}" verified` });
    }
    cosigned = await prepared.sign();
    const check = await verifyManifest(cosigned, { validateChain: validator });
    if (!bytesEqual(payloadOf(check.manifest), payloadOf(manifest))) {
      throw new IntegrityError("internal: the co-signed manifest does not carry the same configuration");
    }
    progress({
      step: "sign",
      message: `signed by ${who(card)}: ${check.signers.length} signatures, ${cosigned.length} bytes`,
    });
    signed = true;
  } finally {
    await held.release(signed);
  }

  // 4. The carrier again: the same card, the same manifest; written, read back, verified.
  const back = await options.openCarrier("write");
  let signatures: number;
  try {
    const carrier = await authenticateCard(back.element, policy);
    if (!bytesEqual(new Uint8Array(carrier.signing.leaf.rawData), carrierLeaf)) {
      throw new NotForThisHsmError(
        "this is not the carrier card the configuration was read from: insert that card",
      );
    }
    const current = await back.element.readItem("manifest");
    if (!current || !bytesEqual(current, manifestBytes)) {
      throw new IntegrityError("the manifest on the carrier changed since it was read; nothing was written");
    }
    await verifyPinOf(back.element, carrier, options.carrierPin);
    await back.element.writeItem("manifest", cosigned);
    progress({ step: "write", message: `wrote manifest (${cosigned.length} bytes) onto the carrier` });
    const read = await back.element.readItem("manifest");
    if (!read || !bytesEqual(read, cosigned))
      throw new IntegrityError("the manifest read back differs from the one written");
    const verified = await verifyManifest(read, { validateChain: validator });
    signatures = verified.signers.length;
    progress({ step: "verify", message: `read back: ${signatures} signatures and their chains verified` });
  } finally {
    await back.release(false);
  }
  return { ...summary, signatures, durationMs: Math.round(performance.now() - started) };
}

/** A canonical rendering of the configuration a manifest describes, for its digest and comparison. */
function payloadOf(manifest: Manifest): Uint8Array {
  return new TextEncoder().encode(
    JSON.stringify({
      owner: manifest.owner,
      id: hex(manifest.configurationId),
      sequence: manifest.sequence,
      issuedAt: manifest.issuedAt,
      notBefore: manifest.notBefore,
      notAfter: manifest.notAfter,
      shardSize: manifest.shardSize,
      shards: manifest.shards.map((s) => [s.objectId, s.firstSerial, s.lastSerial, hex(s.sha256)]),
    }),
  );
}
