/**
 * Dual control (issue 13): what co-signatures cost on the card. For one, two and three officers
 * (`station write --cosigners N`, then `station cosign`), the most HSMs `station write` puts on one
 * card within its budget, and the manifest's size once every officer signed.
 */
import { encodeConfig } from "../src/config/encode-config.js";
import { cosignatureBytes, prepareManifestCosignature } from "../src/config/manifest.js";
import type { Signer } from "../src/crypto/signer.js";
import { MAX_ITEM_BYTES } from "../src/secure-element/card-layout.js";
import { COSIGNER_MARGIN_BYTES } from "../src/station/write-card.js";
import { benchPlan } from "./plans.js";

export interface DualControlRow {
  readonly officers: number;
  /** Bytes kept free in the manifest object for the co-signatures to come. */
  readonly reservedBytes: number;
  /** Most HSMs on one card within `budget` with that room kept. */
  readonly maxHsms: number;
  /** The manifest of a `sampleHsms` plan written with that room, after every officer signed. */
  readonly signedManifestBytes: number;
  readonly sampleHsms: number;
}

const METADATA = {
  configurationId: new Uint8Array(16).fill(0x5a),
  sequence: 1,
  issuedAt: 1_800_000_000,
  notBefore: 1_800_000_000,
  notAfter: 1_800_000_000 + 14 * 86_400,
};

async function largestFitting(
  low: number,
  high: number,
  fits: (n: number) => Promise<boolean>,
): Promise<number> {
  let lo = low;
  let hi = high;
  if (!(await fits(lo))) return lo - 1;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (await fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * `writer` writes (its chain as station write carries it); `cosigners` co-sign in turn. `budget` is
 * station write's card budget (card − identity objects − certificates − CRL − receipt reserve).
 */
export async function dualControlFigures(
  writer: Signer,
  cosigners: readonly Signer[],
  budget: number,
  sampleHsms = 100,
): Promise<DualControlRow[]> {
  const rows: DualControlRow[] = [];
  for (let officers = 1; officers <= cosigners.length + 1; officers++) {
    const room = (officers - 1) * (cosignatureBytes(writer) + COSIGNER_MARGIN_BYTES);
    const options = {
      cardCapacityBytes: budget - room,
      // as station write --cosigners N lays it out: x5chains of the leaf alone
      ...(officers > 1 ? { maxManifestBytes: MAX_ITEM_BYTES - room, chain: "leaf" as const } : {}),
    };
    const fits = async (n: number) => {
      try {
        await encodeConfig(benchPlan(n), METADATA, writer, options);
        return true;
      } catch {
        return false;
      }
    };
    const maxHsms = await largestFitting(1, 5000, fits);
    let manifest = (await encodeConfig(benchPlan(sampleHsms), METADATA, writer, options)).manifest;
    for (const cosigner of cosigners.slice(0, officers - 1)) {
      manifest = await prepareManifestCosignature(manifest, cosigner).sign();
    }
    rows.push({ officers, reservedBytes: room, maxHsms, signedManifestBytes: manifest.length, sampleHsms });
  }
  return rows;
}
