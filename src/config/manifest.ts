/**
 * The manifest: the signed table of contents of a configuration card (SPEC.md §5). A COSE_Sign
 * (one signature per officer card, for dual control) over a small CBOR map: who the configuration
 * is for, which one it is, when it is valid, and for each shard its PIV object (one of the card
 * layout's shard ids, src/secure-element/card-layout.ts), serial range and
 * SHA-256. The manifest is written last, so it is the commit point of a card write. CDDL in
 * docs/FORMATS.md.
 *
 * Signature profile: tag 98 required; body protected header exactly {3: MANIFEST_CONTENT_TYPE}; each
 * signature's protected header exactly {1: alg, 33: x5chain}; every unprotected header empty. So
 * every byte of a manifest is either covered by a signature or structural, and a flipped byte
 * anywhere is rejected.
 *
 * Fixed sizes (SPEC.md §9: an agent reads the same bytes whatever the plan): the payload declares
 * one size for every shard object (key 8), and ends in a padding item of zero bytes (key 9) that
 * brings the signed manifest to a fixed size, by default the whole 3,063-byte object. The padding
 * is inside the signed payload; unprotected headers stay empty.
 */

import type { EcdsaAlgorithm } from "../crypto/ecdsa.js";
import type { Signer } from "../crypto/signer.js";
import { CardFullError, MalformedError, NotForThisHsmError, UsageError, ValidityError } from "../errors.js";
import {
  isShardObjectId,
  MAX_SHARDS,
  SHARD_OBJECT_FIRST,
  SHARD_OBJECT_LAST,
} from "../secure-element/card-layout.js";
import { bytesEqual } from "../util/bytes.js";
import {
  cborHeadSize,
  cborStringLengthFor,
  cborUint,
  decodeCborStrict,
  encodeCbor,
  expectArray,
  expectBytes,
  expectIntKeyedMap,
  expectText,
  expectUint,
  expectZeroPadding,
  MAX_UNTRUSTED_INPUT_BYTES,
  malformedUnlessTyped,
  padEncoding,
} from "./cbor.js";
import {
  CoseHeader,
  type CoseSignerInfo,
  coseSignLength,
  leafPublicKey,
  type PreparedCoseCosignature,
  prepareCoseCosignature,
  signCoseSign,
  verifyCoseSign,
  withoutSelfSignedRoot,
} from "./cose.js";
import { compareSerials, type ShardRef, serialFromCbor, serialToCbor } from "./shard.js";

/**
 * 2: one card holds the whole configuration, with fixed-size shards and manifest (shard size, key
 * 8; padding, key 9). 1 had neither. 3: one card of a card set (a plan larger than one card): the
 * same keys 0–8, the card set at key 9, the padding at key 10 (the padding is always the last key).
 * Single-card configurations stay format 2, byte for byte, so every deployed agent reads them; an
 * agent that knows only format 2 refuses a card of a set as "unsupported format version 3".
 */
export const MANIFEST_FORMAT_VERSION = 2;
export const MANIFEST_CARD_SET_VERSION = 3;
/**
 * Most cards in one set: the plan limit (20,000 HSMs, src/config/plan-limits.ts) at ~2,000 HSMs per
 * card is 10; 32 leaves room for smaller shards, longer entries and dual control.
 */
export const MAX_SET_CARDS = 32;
export const MANIFEST_CONTENT_TYPE = "application/vnd.hsm-onboard.manifest+cbor";
export const CONFIGURATION_ID_BYTES = 16;
const MAX_OWNER_BYTES = 256;

/** A card's serial range within its set. */
export interface CardRange {
  readonly firstSerial: string;
  readonly lastSerial: string;
}

/**
 * Where a card stands in its set (format 3): every card of the set carries every card's range, so
 * an agent whose serial is on another card can say which one — from signed bytes only.
 */
export interface CardSetPosition {
  /** This card's number in the set, 1..cards.length ("card k of n"). */
  readonly index: number;
  /** Every card's serial range, card 1 first: 2..MAX_SET_CARDS, disjoint, in serial order. */
  readonly cards: readonly CardRange[];
}

export interface Manifest {
  /** MANIFEST_FORMAT_VERSION (2) for one card, MANIFEST_CARD_SET_VERSION (3) for a card of a set. */
  readonly version: number;
  readonly owner: string;
  /** 16 random bytes chosen by the station. */
  readonly configurationId: Uint8Array;
  /** Monotonic per owner; an HSM accepts only a higher one than it last applied. */
  readonly sequence: number;
  /** Epoch seconds. */
  readonly issuedAt: number;
  readonly notBefore: number;
  readonly notAfter: number;
  /**
   * In serial order, with disjoint ranges and increasing object ids. Decoded refs carry `size` =
   * `shardSize`; refs given to the encoder may leave it out, or must agree.
   */
  readonly shards: readonly ShardRef[];
  /** Every shard object is exactly this many bytes, padding included. */
  readonly shardSize: number;
  /** Format 3 only: this card's place in its set; its shards span exactly its range. */
  readonly cardSet?: CardSetPosition;
}

// The padding comes last, so that padding the payload only replaces its final item (padEncoding).
const Key = {
  version: 0,
  owner: 1,
  configurationId: 2,
  sequence: 3,
  issuedAt: 4,
  notBefore: 5,
  notAfter: 6,
  shards: 7,
  shardSize: 8,
  padding: 9,
} as const;
/** Format 3: the card set, then the padding (always last). */
const SetKey = { ...Key, cardSet: 9, padding: 10 } as const;

function checkCardSet(
  cardSet: CardSetPosition,
  shards: readonly ShardRef[],
  fail: (message: string) => never,
): void {
  const n = cardSet.cards.length;
  if (n < 2 || n > MAX_SET_CARDS) fail(`a card set has 2..${MAX_SET_CARDS} cards, not ${n}`);
  if (!Number.isSafeInteger(cardSet.index) || cardSet.index < 1 || cardSet.index > n)
    fail(`card ${cardSet.index} of ${n}`);
  for (const [i, range] of cardSet.cards.entries()) {
    if (compareSerials(range.firstSerial, range.lastSerial) > 0)
      fail(`card ${i + 1}: first serial after last`);
    const previous = cardSet.cards[i - 1];
    if (previous !== undefined && compareSerials(previous.lastSerial, range.firstSerial) >= 0)
      fail(`card ${i + 1}: serial ranges overlap or are out of order`);
  }
  const own = cardSet.cards[cardSet.index - 1]!;
  if (shards[0]?.firstSerial !== own.firstSerial || shards.at(-1)?.lastSerial !== own.lastSerial)
    fail(`the shards do not span card ${cardSet.index}'s range exactly`);
}

function checkShardOrder(shards: readonly ShardRef[], fail: (message: string) => never): void {
  for (const [i, shard] of shards.entries()) {
    if (!isShardObjectId(shard.objectId)) {
      fail(`shard ${i}: object id 0x${shard.objectId.toString(16)} is not a shard object of the card layout`);
    }
    if (compareSerials(shard.firstSerial, shard.lastSerial) > 0) fail(`shard ${i}: first serial after last`);
    const previous = shards[i - 1];
    if (previous !== undefined) {
      if (shard.objectId <= previous.objectId) fail(`shard ${i}: object ids not increasing`);
      if (compareSerials(previous.lastSerial, shard.firstSerial) >= 0)
        fail(`shard ${i}: serial ranges overlap or are out of order`);
    }
  }
}

/**
 * The manifest payload in its one canonical encoding for its content and size: padded to exactly
 * `size` bytes, or by default with the empty padding only (the smallest encoding). Throws
 * UsageError for values it cannot hold and for a size below the smallest encoding.
 */
export function encodeManifestPayload(manifest: Manifest, size?: number): Uint8Array {
  const fail = (message: string): never => {
    throw new UsageError(`manifest: ${message}`);
  };
  const wanted = manifest.cardSet ? MANIFEST_CARD_SET_VERSION : MANIFEST_FORMAT_VERSION;
  if (manifest.version !== wanted)
    fail(
      `format version must be ${wanted} ${manifest.cardSet ? "for a card of a set" : "for a single card"}`,
    );
  if (manifest.configurationId.length !== CONFIGURATION_ID_BYTES)
    fail(`configuration id must be ${CONFIGURATION_ID_BYTES} bytes`);
  for (const [name, value] of Object.entries({
    version: manifest.version,
    sequence: manifest.sequence,
    issuedAt: manifest.issuedAt,
    notBefore: manifest.notBefore,
    notAfter: manifest.notAfter,
  })) {
    if (!Number.isSafeInteger(value) || value < 0) fail(`${name} must be a non-negative integer`);
  }
  if (manifest.notBefore > manifest.notAfter) fail("notBefore is after notAfter");
  const ownerBytes = Buffer.byteLength(manifest.owner, "utf8");
  if (ownerBytes < 1 || ownerBytes > MAX_OWNER_BYTES) fail(`owner must be 1..${MAX_OWNER_BYTES} bytes`);
  if (manifest.shards.length < 1 || manifest.shards.length > MAX_SHARDS) fail(`1..${MAX_SHARDS} shards`);
  checkShardOrder(manifest.shards, fail);
  if (manifest.cardSet) checkCardSet(manifest.cardSet, manifest.shards, fail);
  if (
    !Number.isSafeInteger(manifest.shardSize) ||
    manifest.shardSize < 1 ||
    manifest.shardSize > MAX_UNTRUSTED_INPUT_BYTES
  ) {
    fail(`shard size must be 1..${MAX_UNTRUSTED_INPUT_BYTES} bytes`);
  }
  const smallest = encodeCbor(
    new Map<number, unknown>([
      [Key.version, manifest.version],
      [Key.owner, manifest.owner],
      [Key.configurationId, manifest.configurationId],
      [Key.sequence, cborUint(manifest.sequence)],
      [Key.issuedAt, cborUint(manifest.issuedAt)],
      [Key.notBefore, cborUint(manifest.notBefore)],
      [Key.notAfter, cborUint(manifest.notAfter)],
      [
        Key.shards,
        manifest.shards.map((s) => {
          if (s.sha256.length !== 32) fail("a shard digest is 32 bytes");
          if (s.size !== undefined && s.size !== manifest.shardSize)
            fail(`a shard of ${s.size} bytes in a manifest of ${manifest.shardSize}-byte shards`);
          return [s.objectId, serialToCbor(s.firstSerial), serialToCbor(s.lastSerial), s.sha256];
        }),
      ],
      [Key.shardSize, manifest.shardSize],
      ...(manifest.cardSet
        ? ([
            [
              SetKey.cardSet,
              [
                manifest.cardSet.index,
                manifest.cardSet.cards.map((c) => [serialToCbor(c.firstSerial), serialToCbor(c.lastSerial)]),
              ],
            ],
            [SetKey.padding, new Uint8Array(0)],
          ] as const)
        : ([[Key.padding, new Uint8Array(0)]] as const)),
    ]),
  );
  return size === undefined ? smallest : padEncoding(smallest, size, "manifest payload");
}

/** Decodes a manifest payload strictly (shape, ranges, order, canonical encoding). */
export function decodeManifestPayload(bytes: Uint8Array): Manifest {
  const what = "manifest payload";
  const { value } = decodeCborStrict(bytes, { what, maxBytes: MAX_UNTRUSTED_INPUT_BYTES });
  return malformedUnlessTyped(what, () => {
    // The version first, so that a manifest of another format version is refused as such.
    const version = expectUint(
      expectIntKeyedMap(value, what, Object.values(SetKey), [Key.version]).get(Key.version),
      `${what} version`,
    );
    if (version !== MANIFEST_FORMAT_VERSION && version !== MANIFEST_CARD_SET_VERSION)
      throw new MalformedError(`${what}: unsupported format version ${version}`);
    const ofSet = version === MANIFEST_CARD_SET_VERSION;
    const map = expectIntKeyedMap(value, what, Object.values(ofSet ? SetKey : Key));
    const shardSize = expectUint(map.get(Key.shardSize), `${what} shard size`, 1, MAX_UNTRUSTED_INPUT_BYTES);
    expectZeroPadding(map.get(ofSet ? SetKey.padding : Key.padding), `${what} padding`);
    const shards = expectArray(map.get(Key.shards), `${what} shards`, 1, MAX_SHARDS).map((v, i): ShardRef => {
      const where = `${what} shards[${i}]`;
      const [objectId, first, last, digest] = expectArray(v, where, 4, 4);
      return {
        objectId: expectUint(objectId, `${where} object id`, SHARD_OBJECT_FIRST, SHARD_OBJECT_LAST),
        firstSerial: serialFromCbor(first, `${where} first serial`),
        lastSerial: serialFromCbor(last, `${where} last serial`),
        sha256: expectBytes(digest, `${where} SHA-256`, 32),
        size: shardSize,
      };
    });
    const manifest: Manifest = {
      version,
      owner: expectText(map.get(Key.owner), `${what} owner`, 1, MAX_OWNER_BYTES),
      configurationId: expectBytes(
        map.get(Key.configurationId),
        `${what} configuration id`,
        CONFIGURATION_ID_BYTES,
      ),
      sequence: expectUint(map.get(Key.sequence), `${what} sequence`),
      issuedAt: expectUint(map.get(Key.issuedAt), `${what} issued-at`),
      notBefore: expectUint(map.get(Key.notBefore), `${what} not-before`),
      notAfter: expectUint(map.get(Key.notAfter), `${what} not-after`),
      shards,
      shardSize,
      ...(ofSet ? { cardSet: decodeCardSet(map.get(SetKey.cardSet), `${what} card set`) } : {}),
    };
    if (manifest.notBefore > manifest.notAfter)
      throw new MalformedError(`${what}: not-before is after not-after`);
    const malformed = (message: string): never => {
      throw new MalformedError(`${what}: ${message}`);
    };
    checkShardOrder(shards, malformed);
    if (manifest.cardSet) checkCardSet(manifest.cardSet, shards, malformed);
    if (!bytesEqual(encodeManifestPayload(manifest, bytes.length), bytes))
      throw new MalformedError(`${what}: not in canonical form`);
    return manifest;
  });
}

function decodeCardSet(value: unknown, what: string): CardSetPosition {
  const [index, cards] = expectArray(value, what, 2, 2);
  return {
    index: expectUint(index, `${what} index`, 1, MAX_SET_CARDS),
    cards: expectArray(cards, `${what} cards`, 2, MAX_SET_CARDS).map((v, i): CardRange => {
      const [first, last] = expectArray(v, `${what} card ${i + 1}`, 2, 2);
      return {
        firstSerial: serialFromCbor(first, `${what} card ${i + 1} first serial`),
        lastSerial: serialFromCbor(last, `${what} card ${i + 1} last serial`),
      };
    }),
  };
}

export interface SignManifestOptions {
  /**
   * `without-root` (default): x5chain leaves out a trailing self-signed root, which every HSM pins
   * anyway; `full`: the signer's chain as it is; `leaf`: the signer's certificate alone (dual
   * control: every relying party holds the token CA, see CosignatureChain).
   */
  readonly chain?: "without-root" | "full" | "leaf";
  /**
   * Pad the signed manifest to this size (normally its object size, MAX_ITEM_BYTES of the card layout), so
   * that it has the same size whatever the plan; CardFullError if it needs more. Exactly this
   * size, except for the rare signer sets for which CBOR cannot express it (see
   * signedManifestLength): then one byte less, for every plan. Not given or not finite: only the
   * empty padding.
   */
  readonly size?: number;
}

/** A manifest laid out for its signers: its exact length is known before anyone signs. */
export interface PreparedManifest {
  /** The length of the signed manifest (signedManifestLength). */
  readonly length: number;
  /** Has every signer sign; gives exactly `length` bytes. */
  sign(): Promise<Uint8Array>;
}

/**
 * Lays the manifest out for these signers and options (x5chain choice, padding) without signing,
 * so that a caller can check sizes before a card is asked to sign. CardFullError if the manifest
 * does not fit `options.size`.
 */
export function prepareManifest(
  manifest: Manifest,
  signers: readonly Signer[],
  options: SignManifestOptions = {},
): PreparedManifest {
  const chosen =
    options.chain === "full"
      ? signers
      : signers.map((s) => cosignatureSigner(s, options.chain === "leaf" ? "leaf" : "without-root"));
  const smallest = encodeManifestPayload(manifest);
  const cose = { contentType: MANIFEST_CONTENT_TYPE };
  const prepared = (payload: Uint8Array): PreparedManifest => {
    const length = coseSignLength(payload.length, chosen, cose);
    return {
      length,
      sign: async () => {
        const signed = await signCoseSign(payload, chosen, cose);
        if (signed.length !== length) {
          throw new Error(`internal: the signed manifest is ${signed.length} bytes, laid out ${length}`);
        }
        return signed;
      },
    };
  };
  const unpadded = prepared(smallest);
  const size = options.size;
  if (size === undefined || !Number.isFinite(size)) return unpadded;
  if (unpadded.length > size) {
    throw new CardFullError(
      `the signed manifest is ${unpadded.length} bytes before padding; its object holds at most ${size}`,
    );
  }
  // Everything but the payload's byte string has a fixed length (raw signatures, headers that do
  // not depend on the payload). The payload, head included, must fill what remains; where no byte
  // string has that length (cborStringLengthFor), one byte less. That is still enough: the smallest
  // payload, head included, fits what remains and cannot take exactly the missing length, so it
  // takes at most one byte less.
  const envelope = unpadded.length - cborHeadSize(smallest.length) - smallest.length;
  const payloadLength = cborStringLengthFor(size - envelope) ?? cborStringLengthFor(size - envelope - 1)!;
  return prepared(padEncoding(smallest, payloadLength, "manifest payload"));
}

/**
 * The length of the manifest signManifest makes with these signers and options, without signing.
 * With `size`: `size` itself, or `size − 1` when the signers' headers leave a gap that no CBOR
 * byte string fills (the payload's head grows by a byte exactly where the payload does — e.g. a
 * payload of 255 bytes takes 257 with its head, one of 256 takes 259). The gap depends on the
 * signers and `size` only, so every plan signed by the same cards still gives one size.
 * CardFullError if the manifest does not fit `size`.
 */
export function signedManifestLength(
  manifest: Manifest,
  signers: readonly Signer[],
  options: SignManifestOptions = {},
): number {
  return prepareManifest(manifest, signers, options).length;
}

/** Signs the manifest with every signer (one COSE_Sign signature each, x5chain protected). */
export async function signManifest(
  manifest: Manifest,
  signers: readonly Signer[],
  options: SignManifestOptions = {},
): Promise<Uint8Array> {
  return prepareManifest(manifest, signers, options).sign();
}

/**
 * x5chain of a co-signature: `leaf` (default) carries the co-signer's 9C certificate only. Every
 * relying party already holds the token CA (the agent from the carrier card, which must be the
 * co-signer's token CA too; the station from its directory), and RFC 9360 §2 lets x5chain leave
 * out what the relying party has: ~650 bytes per co-signer, which is what lets three officers share
 * one 3,063-byte object.
 */
export type CosignatureChain = "leaf" | "without-root" | "full";

function cosignatureSigner(signer: Signer, chain: CosignatureChain): Signer {
  const certificateChain =
    chain === "full"
      ? signer.certificateChain
      : chain === "leaf"
        ? signer.certificateChain.slice(0, 1)
        : withoutSelfSignedRoot(signer.certificateChain);
  return { algorithm: signer.algorithm, certificateChain, sign: (toBeSigned) => signer.sign(toBeSigned) };
}

/**
 * One more officer's signature on a signed manifest (dual control): the payload, its padding and
 * every signature already there stay byte for byte. The length is known before the card is asked to
 * sign, so that a manifest that would outgrow its object is refused first. The caller verifies the
 * manifest (verifyManifest) before and after.
 */
export function prepareManifestCosignature(
  bytes: Uint8Array,
  signer: Signer,
  options: { readonly chain?: CosignatureChain } = {},
): PreparedCoseCosignature {
  return prepareCoseCosignature(bytes, cosignatureSigner(signer, options.chain ?? "leaf"), {
    maxBytes: MAX_UNTRUSTED_INPUT_BYTES,
  });
}

/**
 * The bytes one co-signature adds to a manifest, for a co-signer like `signer` (same algorithm and
 * certificate size): a station writing for dual control keeps this much room per co-signer, plus a
 * margin for longer names in the co-signers' certificates.
 */
export function cosignatureBytes(
  signer: Signer,
  options: { readonly chain?: CosignatureChain } = {},
): number {
  const one = cosignatureSigner(signer, options.chain ?? "leaf");
  return coseSignLength(0, [one, one]) - coseSignLength(0, [one]);
}

export interface ManifestSigner {
  readonly algorithm: EcdsaAlgorithm;
  /** x5chain as carried, leaf first; validated by the caller's `validateChain`. */
  readonly certificateChain: readonly Uint8Array[];
}

export interface VerifiedManifest {
  readonly manifest: Manifest;
  /** Every signer, each with a verified signature and a chain `validateChain` accepted. */
  readonly signers: readonly ManifestSigner[];
}

export interface VerifyManifestOptions {
  /**
   * Validates one signer's chain (leaf first) up to the trust anchor, with revocation, key usage
   * and EKU (src/pki). Must throw a typed error to refuse; returning means the chain is trusted.
   * Called only for signatures that verified.
   */
  readonly validateChain: (chain: readonly Uint8Array[], signerIndex: number) => void | Promise<void>;
  readonly maxBytes?: number;
  /**
   * A second signature by a key that already signed: `refuse` (default) throws MalformedError;
   * `count-once` verifies it like any other and leaves counting to the caller (an agent counts
   * distinct keys towards its quorum, so one card signing twice is one vote: 19, not 15).
   */
  readonly duplicateKeys?: "refuse" | "count-once";
}

function sameLabels(header: ReadonlyMap<unknown, unknown>, labels: readonly number[]): boolean {
  return header.size === labels.length && labels.every((l) => header.has(l));
}

function checkSignerProfile(signer: CoseSignerInfo): void {
  const where = `manifest signature ${signer.index}`;
  if (!sameLabels(signer.protectedHeader, [CoseHeader.alg, CoseHeader.x5chain])) {
    throw new MalformedError(`${where}: protected header must hold exactly alg and x5chain`);
  }
  if (signer.unprotectedHeader.size !== 0)
    throw new MalformedError(`${where}: unprotected header must be empty`);
}

/**
 * Agent side: verifies every signature of a manifest with the leaf key of its protected x5chain,
 * has `validateChain` accept each chain, and only then decodes and returns the payload. The caller
 * still checks owner, sequence, validity window (checkManifestValidity) and quorum.
 */
export async function verifyManifest(
  bytes: Uint8Array,
  options: VerifyManifestOptions,
): Promise<VerifiedManifest> {
  const signerKeys = new Set<string>();
  const verified = await verifyCoseSign(bytes, {
    maxBytes: options.maxBytes ?? MAX_UNTRUSTED_INPUT_BYTES,
    keyFor: (signer) => {
      checkSignerProfile(signer);
      const key = leafPublicKey(signer.x5chain);
      // A quorum counts keys, not certificates: one card must not sign twice, under any certificate.
      const spki = key.export({ format: "der", type: "spki" }).toString("base64");
      if (signerKeys.has(spki) && options.duplicateKeys !== "count-once") {
        throw new MalformedError(`manifest signature ${signer.index}: the same key signs twice`);
      }
      signerKeys.add(spki);
      return key;
    },
  });
  if (
    !sameLabels(verified.protectedHeader, [CoseHeader.contentType]) ||
    verified.protectedHeader.get(CoseHeader.contentType) !== MANIFEST_CONTENT_TYPE
  ) {
    throw new MalformedError(
      `manifest: protected header must hold exactly content type ${MANIFEST_CONTENT_TYPE}`,
    );
  }
  if (verified.unprotectedHeader.size !== 0)
    throw new MalformedError("manifest: unprotected header must be empty");
  for (const signer of verified.signers) await options.validateChain(signer.x5chain, signer.index);
  return {
    manifest: decodeManifestPayload(verified.payload),
    signers: verified.signers.map((s) => ({ algorithm: s.algorithm, certificateChain: s.x5chain })),
  };
}

/**
 * The shard whose range holds `serial` (binary search), or NotForThisHsmError. On a card of a set,
 * the error names the card that holds the serial (cardSetHint); call this only on a manifest whose
 * signatures verified, so that the hint comes from signed bytes.
 */
export function findShardFor(manifest: Manifest, serial: string): ShardRef {
  let low = 0;
  let high = manifest.shards.length - 1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    const shard = manifest.shards[middle]!;
    if (compareSerials(serial, shard.firstSerial) < 0) high = middle - 1;
    else if (compareSerials(serial, shard.lastSerial) > 0) low = middle + 1;
    else return shard;
  }
  throw new NotForThisHsmError(
    manifest.cardSet ? cardSetHint(manifest, serial) : `serial ${serial} is not in this configuration`,
  );
}

/** Which card of this card's set holds `serial`, or undefined (1-based, with its range). */
export function cardOfSerial(
  cardSet: CardSetPosition,
  serial: string,
): { readonly index: number; readonly range: CardRange } | undefined {
  let low = 0;
  let high = cardSet.cards.length - 1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    const range = cardSet.cards[middle]!;
    if (compareSerials(serial, range.firstSerial) < 0) high = middle - 1;
    else if (compareSerials(serial, range.lastSerial) > 0) low = middle + 1;
    else return { index: middle + 1, range };
  }
  return undefined;
}

/**
 * The one line an agent shows when its serial is not on this card of a set: this card's place and
 * range, and the card whose range holds the serial, or that none does. From the verified manifest.
 */
export function cardSetHint(manifest: Manifest, serial: string): string {
  const set = manifest.cardSet;
  if (!set) return `serial ${serial} is not in this configuration`;
  const n = set.cards.length;
  const own = set.cards[set.index - 1]!;
  const id = Buffer.from(manifest.configurationId).toString("hex").slice(0, 8);
  const here = `card ${set.index} of ${n} of configuration ${id} (serials ${own.firstSerial}..${own.lastSerial})`;
  const holder = cardOfSerial(set, serial);
  if (holder === undefined || holder.index === set.index) {
    // Within this card's own range but not in any shard: a gap in the plan, not another card.
    return `serial ${serial} is not on ${here} nor on any other card of the set`;
  }
  return (
    `serial ${serial} is not on this card, ${here}: use card ${holder.index} of ${n} ` +
    `(serials ${holder.range.firstSerial}..${holder.range.lastSerial})`
  );
}

function formatEpoch(seconds: number): string {
  const date = new Date(seconds * 1000);
  return Number.isNaN(date.getTime()) ? `${seconds} s after the epoch` : date.toISOString();
}

/** ValidityError unless notBefore ≤ now ≤ notAfter (epoch seconds). */
export function checkManifestValidity(manifest: Manifest, nowSeconds: number): void {
  if (nowSeconds < manifest.notBefore) {
    throw new ValidityError(`configuration not valid before ${formatEpoch(manifest.notBefore)}`);
  }
  if (nowSeconds > manifest.notAfter) {
    throw new ValidityError(`configuration expired at ${formatEpoch(manifest.notAfter)}`);
  }
}
