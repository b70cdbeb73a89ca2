/**
 * Plans larger than one card (issue 13): how a plan is split across a card set. Deterministic and
 * by sorted serial ranges: the plan's shards are laid out once for the whole plan (planShards, in
 * serial order), and consecutive shards go to consecutive cards, as evenly as the per-card limit
 * allows. Card k's serial range is the first serial of its first shard to the last serial of its
 * last shard; every card's manifest carries every card's range (manifest format 3), so an agent
 * shown the wrong card can name the right one from signed bytes.
 *
 * Because planShards fills shards greedily from the first entry it is given, the shards of a card
 * are exactly the shards the whole plan was cut into: a part re-planned on its own gives the same
 * bytes (test/config/card-set.test.ts checks it).
 *
 * The per-card limit: manifest object + shards within the card's budget (what `station write`
 * finds free on the card), at most MAX_SHARDS shard objects, and a manifest whose shard list and
 * card ranges fit its object (the caller measures that with the real signer's envelope, or
 * NOMINAL_MANIFEST_ENVELOPE_BYTES without a card).
 */
import { CardFullError, PlanInvalidError, UsageError } from "../errors.js";
import { MAX_ITEM_BYTES, MAX_SHARDS, shardObjectId } from "../secure-element/card-layout.js";
import {
  type CardRange,
  type CardSetPosition,
  MANIFEST_CARD_SET_VERSION,
  MANIFEST_FORMAT_VERSION,
  MAX_SET_CARDS,
  type Manifest,
} from "./manifest.js";
import type { NetworkPlan } from "./plan-model.js";
import { type PlannedShard, planShards, shardDigest } from "./shard.js";

/**
 * What `plan check` assumes without a card: the configuration budget `station write` finds on the
 * station's virtual card and on a YubiKey 5 personalised by `card personalize` (50,225 bytes less
 * the identity objects, the certificates item, a small CRL and the 3,063-byte receipt reserve),
 * 45,110 bytes measured by `npm run bench` (docs/PERFORMANCE.md §4): a manifest and 13 shards of
 * 3,063 bytes. `station write` decides with the real card's budget.
 */
export const NOMINAL_CARD_BUDGET_BYTES = 45_110;
/**
 * A signed manifest's bytes besides its payload, for `plan check`: COSE_Sign with one ES256
 * signature and an x5chain of the 9C certificate and the token CA (1,308 bytes for the test
 * fixtures' officer, test/config/card-set.test.ts), with room for longer names.
 */
export const NOMINAL_MANIFEST_ENVELOPE_BYTES = 1_600;
/** Metadata of the widest encoding a real write uses (5-byte integers), to size manifests before the sequence is known. */
const WIDEST_METADATA = {
  configurationId: new Uint8Array(16),
  sequence: 0xffff_ffff,
  issuedAt: 0xffff_ffff,
  notBefore: 0xffff_ffff,
  notAfter: 0xffff_ffff,
};

export interface CardSetLimits {
  /** Bytes for manifest + shards on each card. */
  readonly budgetBytes: number;
  /** Shard object size (default 3,063). */
  readonly shardBytes?: number;
  /** Manifest object size (default 3,063). */
  readonly manifestBytes?: number;
  /**
   * The signed manifest's length before padding for this content (prepareManifest with the
   * card's signer and chain choice, no size), or the payload plus NOMINAL_MANIFEST_ENVELOPE_BYTES.
   */
  readonly manifestLength: (manifest: Manifest) => number;
}

export interface CardPart {
  /** 1-based: card `index` of `cards.length`. */
  readonly index: number;
  readonly range: CardRange;
  readonly hsms: number;
  /** This card's shards, as planned for the whole plan (object ids from shard-0 on each card). */
  readonly shards: readonly PlannedShard[];
}

export interface CardSetPlan {
  readonly cards: readonly CardPart[];
  /** The most shards the limits allow on one card. */
  readonly maxShardsPerCard: number;
  readonly shardBytes: number;
  readonly hsms: number;
}

/** The manifest content of one card's part, with given metadata (or the widest, to size it). */
export function partManifest(
  owner: string,
  part: CardPart,
  ranges: readonly CardRange[],
  shardBytes: number,
  metadata: Omit<Manifest, "version" | "owner" | "shards" | "shardSize" | "cardSet"> = WIDEST_METADATA,
): Manifest {
  const cardSet: CardSetPosition | undefined =
    ranges.length > 1 ? { index: part.index, cards: ranges } : undefined;
  return {
    version: cardSet ? MANIFEST_CARD_SET_VERSION : MANIFEST_FORMAT_VERSION,
    owner,
    configurationId: metadata.configurationId,
    sequence: metadata.sequence,
    issuedAt: metadata.issuedAt,
    notBefore: metadata.notBefore,
    notAfter: metadata.notAfter,
    shards: part.shards.map((s, i) => ({
      objectId: shardObjectId(i),
      firstSerial: s.firstSerial,
      lastSerial: s.lastSerial,
      sha256: shardDigest(s.bytes),
      size: shardBytes,
    })),
    shardSize: shardBytes,
    ...(cardSet ? { cardSet } : {}),
  };
}

function partsOf(all: readonly PlannedShard[], perCard: number): CardPart[] {
  const count = Math.ceil(all.length / perCard);
  // As even as possible: the first (all mod count) cards take one shard more.
  const base = Math.floor(all.length / count);
  const extra = all.length % count;
  const parts: CardPart[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    const shards = all.slice(at, at + base + (i < extra ? 1 : 0));
    at += shards.length;
    parts.push({
      index: i + 1,
      range: { firstSerial: shards[0]!.firstSerial, lastSerial: shards.at(-1)!.lastSerial },
      hsms: shards.reduce((sum, s) => sum + s.entries, 0),
      shards,
    });
  }
  return parts;
}

/**
 * Splits a plan across as few cards as the limits allow (one when it fits one). CardFullError when
 * not even one shard fits a card, or the plan needs more than MAX_SET_CARDS cards;
 * PlanInvalidError for an empty plan.
 */
export function planCardSet(plan: NetworkPlan, limits: CardSetLimits): CardSetPlan {
  if (plan.hsms.length === 0) throw new PlanInvalidError([{ entry: "hsms", field: "", message: "no HSMs" }]);
  const shardBytes = limits.shardBytes ?? MAX_ITEM_BYTES;
  const manifestBytes = limits.manifestBytes ?? MAX_ITEM_BYTES;
  if (!Number.isSafeInteger(limits.budgetBytes) || limits.budgetBytes < 0)
    throw new UsageError(`a card budget is a byte count, not ${limits.budgetBytes}`);
  const all = planShards(plan.subnets, plan.hsms, shardBytes);
  const byBudget = Math.floor((limits.budgetBytes - manifestBytes) / shardBytes);
  const maxShardsPerCard = Math.min(MAX_SHARDS, byBudget);
  if (maxShardsPerCard < 1) {
    throw new CardFullError(
      `a card with ${limits.budgetBytes} bytes for the configuration cannot hold a ${manifestBytes}-byte manifest and one ${shardBytes}-byte shard`,
    );
  }
  const fits = (parts: readonly CardPart[]) => {
    const ranges = parts.map((p) => p.range);
    return parts.every(
      (p) => limits.manifestLength(partManifest(plan.owner, p, ranges, shardBytes)) <= manifestBytes,
    );
  };
  // Fewer shards per card shorten each manifest's shard list but lengthen its list of cards:
  // try from the most shards per card down, and take the first split whose manifests all fit.
  for (let perCard = maxShardsPerCard; perCard >= 1; perCard--) {
    const count = Math.ceil(all.length / perCard);
    if (count > MAX_SET_CARDS) break;
    const parts = partsOf(all, perCard);
    if (fits(parts)) return { cards: parts, maxShardsPerCard: perCard, shardBytes, hsms: plan.hsms.length };
  }
  throw new CardFullError(
    `${plan.hsms.length} HSMs in ${all.length} shards do not fit a set of at most ${MAX_SET_CARDS} cards ` +
      `(${limits.budgetBytes} bytes for the configuration per card, at most ${maxShardsPerCard} shards each)`,
  );
}
