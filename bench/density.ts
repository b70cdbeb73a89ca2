/**
 * Density (SPEC.md §9, second bullet): bytes per HSM entry on the card as `station write` lays it
 * out, and how many HSMs one 50,225-byte card holds with the manifest and the certificate chain.
 */
import { KeyObject } from "node:crypto";
import { encodeConfig } from "../src/config/encode-config.js";
import { createSoftwareSigner, type Signer } from "../src/crypto/signer.js";
import { issueCardCertificate } from "../src/pki/issue.js";
import { generateEcKeyPair } from "../src/pki/keys.js";
import { CARD_CAPACITY_BYTES } from "../src/secure-element/card-layout.js";
import { DEFAULT_RECEIPT_RESERVE_BYTES, type WriteResult } from "../src/station/write-card.js";
import { type DualControlRow, dualControlFigures } from "./dual-control.js";
import type { BenchFixture } from "./fixture.js";
import { BENCH_OWNER, benchPlan } from "./plans.js";
import { fixed, int, print, section, table } from "./report.js";

export interface DensityResult {
  readonly hsms: number;
  readonly shardBytesPerHsm: number;
  /** Shards + manifest (x5chain: 9C leaf + token CA), per HSM. */
  readonly configBytesPerHsm: number;
  /** Everything on the card after the write (identity certificates, CHUID, CCC, certificates, CRL…), per HSM. */
  readonly cardBytesPerHsm: number;
  /** Most HSMs whose manifest + shards fit 50,225 bytes. */
  readonly maxHsmsConfigOnly: number;
  /** Most HSMs `station write` puts on one card (its budget: identity objects, certificates, CRL, receipt reserve). */
  readonly maxHsmsStationBudget: number;
  readonly stationBudgetBytes: number;
  /** One, two and three officers (issue 13): HSMs per card and the co-signed manifest's size. */
  readonly dualControl: readonly DualControlRow[];
}

const METADATA = {
  configurationId: new Uint8Array(16).fill(0x5a),
  sequence: 1,
  issuedAt: 1_800_000_000,
  notBefore: 1_800_000_000,
  notAfter: 1_800_000_000 + 14 * 86_400,
};

/** A software signer with a 9C certificate like the officer card's (same profile, names and chain). */
export async function officerLikeSigner(fixture: BenchFixture): Promise<Signer> {
  const keys = await generateEcKeyPair("P-256");
  const leaf = await issueCardCertificate({
    tokenCa: fixture.pki.tokenCa,
    publicKey: keys.publicKey,
    owner: BENCH_OWNER,
    officer: "Alice Example",
    slot: "9C",
    serial: "12345678",
  });
  return createSoftwareSigner({
    privateKey: KeyObject.from(keys.privateKey),
    certificateChain: [
      new Uint8Array(leaf.rawData),
      new Uint8Array(fixture.pki.tokenCa.certificate.rawData),
      new Uint8Array(fixture.pki.root.certificate.rawData),
    ],
  });
}

/** Largest N in [low, high] for which `fits(N)` (monotone), by bisection. */
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

export async function benchDensity(fixture: BenchFixture, write1000: WriteResult): Promise<DensityResult> {
  section("4. Density: bytes per HSM entry, HSMs per 50,225-byte card");
  const hsms = write1000.hsms;
  const shardBytes = write1000.shards.reduce((sum, s) => sum + s.bytes, 0);
  const used = write1000.capacity.usedBytes;
  const kept = used - write1000.configurationBytes;
  const budget = CARD_CAPACITY_BYTES - kept - DEFAULT_RECEIPT_RESERVE_BYTES;
  const signer = await officerLikeSigner(fixture);
  const fitsWithin = (capacity: number) => async (n: number) => {
    try {
      await encodeConfig(benchPlan(n), METADATA, signer, { cardCapacityBytes: capacity });
      return true;
    } catch {
      return false;
    }
  };
  const maxHsmsConfigOnly = await largestFitting(1000, 5000, fitsWithin(CARD_CAPACITY_BYTES));
  const maxHsmsStationBudget = await largestFitting(500, 5000, fitsWithin(budget));
  const dualControl = await dualControlFigures(
    signer,
    [await officerLikeSigner(fixture), await officerLikeSigner(fixture)],
    budget,
  );
  const result: DensityResult = {
    hsms,
    shardBytesPerHsm: shardBytes / hsms,
    configBytesPerHsm: write1000.configurationBytes / hsms,
    cardBytesPerHsm: used / hsms,
    maxHsmsConfigOnly,
    maxHsmsStationBudget,
    stationBudgetBytes: budget,
    dualControl,
  };
  print(
    `  ${int(hsms)}-HSM plan (7-digit serials, hostnames, one IPv4 each, one shared subnet) as written by station write:`,
  );
  table(
    ["what", "bytes", "per HSM"],
    [
      [`shards (${write1000.shards.length})`, int(shardBytes), fixed(result.shardBytesPerHsm)],
      ["manifest (COSE_Sign, x5chain 9C + token CA)", int(write1000.manifestBytes), ""],
      ["manifest + shards", int(write1000.configurationBytes), fixed(result.configBytesPerHsm)],
      ["certificates item (token CA) + crl item", int(write1000.certificatesBytes + write1000.crlBytes), ""],
      [
        "identity objects (9E, 9C certificates, CHUID, CCC, Yubico admin)",
        int(kept - write1000.certificatesBytes - write1000.crlBytes),
        "",
      ],
      ["whole card after the write", int(used), fixed(result.cardBytesPerHsm)],
    ],
  );
  print();
  table(
    ["HSMs per 50,225-byte card", "HSMs"],
    [
      ["manifest + shards only (as docs/FORMATS.md counts)", int(maxHsmsConfigOnly)],
      [
        `station write budget: ${int(budget)} bytes (card − identity objects − certificates − CRL − ${int(DEFAULT_RECEIPT_RESERVE_BYTES)} receipt reserve)`,
        int(maxHsmsStationBudget),
      ],
    ],
  );
  print();
  table(
    [
      "officers (station write --cosigners N, station cosign)",
      "room kept",
      "HSMs per card",
      `signed manifest, ${dualControl[0]?.sampleHsms ?? 0} HSMs`,
    ],
    dualControl.map((r) => [
      `${r.officers}${r.officers > 1 ? " (x5chain: leaf only)" : ""}`,
      int(r.reservedBytes),
      int(r.maxHsms),
      int(r.signedManifestBytes),
    ]),
  );
  return result;
}
