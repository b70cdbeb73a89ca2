/**
 * Station side, top level: a validated plan + metadata + officer card(s) → the signed manifest and
 * the shards to write (SPEC.md §5). Deterministic apart from the ECDSA signatures: the same plan and
 * metadata give the same payload and shard bytes whatever the order of hsms and subnets in the plan.
 * Cost: one sort of the entries and constant work per entry (O(N log N)), then one signature per
 * signer.
 *
 * Fixed sizes (SPEC.md §9): every shard is padded to the shard size (default: the object size) and
 * the manifest to the manifest size (default: the object size too), so an agent reads the same
 * bytes whatever the plan. A plan's configuration therefore takes (1 + shards) × object size.
 *
 * Agent side, the same configuration is read with verifyManifest → checkManifestValidity →
 * findShardFor → (read that one object) → decodeShardEntry (src/config/manifest.ts, shard.ts).
 */

import type { Signer } from "../crypto/signer.js";
import { CardFullError, PlanInvalidError, UsageError } from "../errors.js";
import {
  assertShardCount,
  CARD_CAPACITY_BYTES,
  MAX_ITEM_BYTES,
  shardObjectId,
} from "../secure-element/card-layout.js";
import { type CardPart, partManifest } from "./card-set.js";
import { type CardRange, type Manifest, prepareManifest, type SignManifestOptions } from "./manifest.js";
import type { NetworkPlan } from "./plan-model.js";
import { planShards } from "./shard.js";

export interface ConfigMetadata {
  /** 16 random bytes (given, so encoding stays deterministic). */
  readonly configurationId: Uint8Array;
  /** Next sequence number for this owner (the station's counter). */
  readonly sequence: number;
  /** Epoch seconds. */
  readonly issuedAt: number;
  readonly notBefore: number;
  readonly notAfter: number;
}

export interface EncodeConfigOptions {
  /** Largest PIV data object, in bytes (default 3,063, the YubiKey's). */
  readonly maxObjectBytes?: number;
  /**
   * Size of every shard object, padding included (default: maxObjectBytes; at most that). Smaller
   * shards make an agent read less (a short-APDU token) at the cost of more shards.
   */
  readonly shardBytes?: number;
  /**
   * Size of the signed manifest, padding included (default: maxObjectBytes; the agent reads it from
   * one object): exactly this for every plan that fits, one byte less for the rare signer sets
   * CBOR cannot pad to it exactly (signedManifestLength). CardFullError when the manifest needs
   * more. Not finite: not padded (benchmarks and tests with raised limits).
   */
  readonly maxManifestBytes?: number;
  /** Room on the card for manifest + shards (default 50,225; subtract what CRL and receipts need). */
  readonly cardCapacityBytes?: number;
  /** Which part of each signer's chain goes into x5chain (signManifest; default without the root). */
  readonly chain?: SignManifestOptions["chain"];
}

export interface EncodedShard {
  readonly objectId: number;
  /** Exactly `shardBytes` long. */
  readonly bytes: Uint8Array;
  readonly firstSerial: string;
  readonly lastSerial: string;
  readonly entries: number;
}

export interface EncodedConfig {
  /** The signed manifest, for the `manifest` item; write it after every shard. */
  readonly manifest: Uint8Array;
  /** What the manifest says, as signed. */
  readonly manifestContent: Manifest;
  readonly shards: readonly EncodedShard[];
  /** Manifest plus shards. */
  readonly totalBytes: number;
}

/**
 * Encodes and signs a plan. Throws PlanInvalidError for an entry the format cannot hold,
 * CardFullError when the result does not fit the limits, UsageError for bad metadata.
 */
export async function encodeConfig(
  plan: NetworkPlan,
  metadata: ConfigMetadata,
  signers: Signer | readonly Signer[],
  options: EncodeConfigOptions = {},
): Promise<EncodedConfig> {
  const limits = sizeLimits(options);
  const { shardBytes } = limits;
  if (plan.hsms.length === 0) throw new PlanInvalidError([{ entry: "hsms", field: "", message: "no HSMs" }]);

  const planned = planShards(plan.subnets, plan.hsms, shardBytes);
  assertShardCount(planned.length);
  const part: CardPart = {
    index: 1,
    range: { firstSerial: planned[0]!.firstSerial, lastSerial: planned.at(-1)!.lastSerial },
    hsms: plan.hsms.length,
    shards: planned,
  };
  return signPart(plan.owner, part, [part.range], metadata, signers, { ...options, ...limits });
}

/**
 * Encodes and signs card `part.index` of a card set planned by planCardSet (the same shards, a
 * format 3 manifest carrying every card's range), or the whole configuration when `ranges` has one
 * card (format 2, as encodeConfig). Same errors as encodeConfig.
 */
export async function encodeCardPart(
  owner: string,
  part: CardPart,
  ranges: readonly CardRange[],
  metadata: ConfigMetadata,
  signers: Signer | readonly Signer[],
  options: EncodeConfigOptions = {},
): Promise<EncodedConfig> {
  const limits = sizeLimits(options);
  const { shardBytes } = limits;
  for (const shard of part.shards) {
    if (shard.bytes.length !== shardBytes)
      throw new UsageError(
        `a ${shard.bytes.length}-byte shard in a configuration of ${shardBytes}-byte shards`,
      );
  }
  assertShardCount(part.shards.length);
  return signPart(owner, part, ranges, metadata, signers, { ...options, ...limits });
}

/** The object, shard and card sizes of `options` with their defaults; shards must fit objects. */
function sizeLimits(options: EncodeConfigOptions): {
  readonly maxObjectBytes: number;
  readonly shardBytes: number;
  readonly cardCapacityBytes: number;
} {
  const maxObjectBytes = options.maxObjectBytes ?? MAX_ITEM_BYTES;
  const shardBytes = options.shardBytes ?? maxObjectBytes;
  if (shardBytes > maxObjectBytes) {
    throw new UsageError(`shards of ${shardBytes} bytes do not fit ${maxObjectBytes}-byte objects`);
  }
  return { maxObjectBytes, shardBytes, cardCapacityBytes: options.cardCapacityBytes ?? CARD_CAPACITY_BYTES };
}

async function signPart(
  owner: string,
  part: CardPart,
  ranges: readonly CardRange[],
  metadata: ConfigMetadata,
  signers: Signer | readonly Signer[],
  options: EncodeConfigOptions & {
    readonly maxObjectBytes: number;
    readonly shardBytes: number;
    readonly cardCapacityBytes: number;
  },
): Promise<EncodedConfig> {
  const { maxObjectBytes, shardBytes, cardCapacityBytes } = options;
  const shards = part.shards.map((s, i) => ({ objectId: shardObjectId(i), ...s }));
  const manifestContent = partManifest(owner, part, ranges, shardBytes, metadata);
  const signerList: readonly Signer[] = Array.isArray(signers) ? signers : [signers as Signer];
  const signOptions: SignManifestOptions = {
    chain: options.chain,
    size: options.maxManifestBytes ?? maxObjectBytes,
  };
  // Sizes are known before signing: a plan that does not fit costs no signature (a card's PIN
  // and touch), and CardFullError names the part that does not fit.
  const prepared = prepareManifest(manifestContent, signerList, signOptions);
  const manifestBytes = prepared.length;
  const totalBytes = manifestBytes + shards.reduce((sum, s) => sum + s.bytes.length, 0);
  if (totalBytes > cardCapacityBytes) {
    throw new CardFullError(
      `${part.hsms} HSMs need ${totalBytes} bytes (manifest ${manifestBytes}, shards ${shards.length} × ${shardBytes}); the card has room for ${cardCapacityBytes}`,
    );
  }
  const manifest = await prepared.sign();
  return { manifest, manifestContent, shards, totalBytes };
}
