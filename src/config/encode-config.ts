/**
 * Station side, top level: a validated plan + metadata + officer card(s) → the signed manifest and
 * the shards to write (SPEC.md §5). Deterministic apart from the ECDSA signatures: the same plan and
 * metadata give the same payload and shard bytes whatever the order of hsms and subnets in the plan.
 * Cost: one sort of the entries and constant work per entry (O(N log N)), then one signature per
 * signer.
 *
 * Agent side, the same configuration is read with verifyManifest → checkManifestValidity →
 * findShardFor → (read that one object) → decodeShardEntry (src/config/manifest.ts, shard.ts).
 */

import type { Signer } from "../crypto/signer.js";
import { CardFullError, PlanInvalidError } from "../errors.js";
import {
  CARD_CAPACITY_BYTES,
  MANIFEST_FORMAT_VERSION,
  MAX_PIV_OBJECT_BYTES,
  MAX_SHARDS,
  type Manifest,
  PivObject,
  type SignManifestOptions,
  signManifest,
} from "./manifest.js";
import type { NetworkPlan } from "./plan-model.js";
import { planShards, shardDigest } from "./shard.js";

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
  /** Largest signed manifest (default: maxObjectBytes; the agent reads it from one object). */
  readonly maxManifestBytes?: number;
  /** Room on the card for manifest + shards (default 50,225; subtract what CRL and receipts need). */
  readonly cardCapacityBytes?: number;
  /** Which part of each signer's chain goes into x5chain (signManifest; default without the root). */
  readonly chain?: SignManifestOptions["chain"];
}

export interface EncodedShard {
  readonly objectId: number;
  readonly bytes: Uint8Array;
  readonly firstSerial: string;
  readonly lastSerial: string;
  readonly entries: number;
}

export interface EncodedConfig {
  /** The signed manifest, for object PivObject.manifest; write it after every shard. */
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
  const maxObjectBytes = options.maxObjectBytes ?? MAX_PIV_OBJECT_BYTES;
  const cardCapacityBytes = options.cardCapacityBytes ?? CARD_CAPACITY_BYTES;
  if (plan.hsms.length === 0) throw new PlanInvalidError([{ entry: "hsms", field: "", message: "no HSMs" }]);

  const planned = planShards(plan.subnets, plan.hsms, maxObjectBytes);
  if (planned.length > MAX_SHARDS) {
    throw new CardFullError(`${planned.length} shards needed; the card has object ids for ${MAX_SHARDS}`);
  }
  const shards = planned.map((s, i) => ({ objectId: PivObject.shardsFirst + i, ...s }));
  const manifestContent: Manifest = {
    version: MANIFEST_FORMAT_VERSION,
    owner: plan.owner,
    configurationId: metadata.configurationId,
    sequence: metadata.sequence,
    issuedAt: metadata.issuedAt,
    notBefore: metadata.notBefore,
    notAfter: metadata.notAfter,
    shards: shards.map((s) => ({
      objectId: s.objectId,
      firstSerial: s.firstSerial,
      lastSerial: s.lastSerial,
      sha256: shardDigest(s.bytes),
    })),
  };
  const signerList: readonly Signer[] = Array.isArray(signers) ? signers : [signers as Signer];
  const manifest = await signManifest(manifestContent, signerList, { chain: options.chain });
  const maxManifestBytes = options.maxManifestBytes ?? maxObjectBytes;
  if (manifest.length > maxManifestBytes) {
    throw new CardFullError(
      `the signed manifest is ${manifest.length} bytes; its object holds at most ${maxManifestBytes}`,
    );
  }
  const totalBytes = manifest.length + shards.reduce((sum, s) => sum + s.bytes.length, 0);
  if (totalBytes > cardCapacityBytes) {
    throw new CardFullError(
      `${plan.hsms.length} HSMs need ${totalBytes} bytes (manifest ${manifest.length}); the card has room for ${cardCapacityBytes}`,
    );
  }
  return { manifest, manifestContent, shards, totalBytes };
}
