/**
 * Plans larger than one card (issue 13): the split (planCardSet), the format 3 manifest that
 * carries a card's place in its set (strict decoding, property-tested), and the agent's hint.
 */
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import {
  NOMINAL_CARD_BUDGET_BYTES,
  NOMINAL_MANIFEST_ENVELOPE_BYTES,
  planCardSet,
} from "../../src/config/card-set.js";
import { decodeCborStrict, encodeCbor, MAX_UNTRUSTED_INPUT_BYTES } from "../../src/config/cbor.js";
import { encodeCardPart, encodeConfig } from "../../src/config/encode-config.js";
import {
  cardOfSerial,
  decodeManifestPayload,
  encodeManifestPayload,
  findShardFor,
  MANIFEST_CARD_SET_VERSION,
  MANIFEST_FORMAT_VERSION,
  MAX_SET_CARDS,
  type Manifest,
  prepareManifest,
  verifyManifest,
} from "../../src/config/manifest.js";
import { compareSerials, decodeShardEntry, planShards } from "../../src/config/shard.js";
import { CardFullError, isOnboardError, MalformedError, NotForThisHsmError } from "../../src/errors.js";
import { MAX_ITEM_BYTES, SHARD_OBJECT_FIRST, shardItemName } from "../../src/secure-element/card-layout.js";
import { createTestIdentity, generatePlan, METADATA, type TestIdentity } from "./signing-fixtures.js";

let alice: TestIdentity;
beforeAll(async () => {
  alice = await createTestIdentity({ curve: "P-256" });
});

const serialArb = fc.oneof(fc.maxSafeNat().map(String), fc.stringMatching(/^[A-Z][A-Z0-9-]{0,12}$/));

/** Format 3 manifests: 2..12 cards with disjoint sorted ranges, this card's shards spanning its range. */
const setManifestArb: fc.Arbitrary<Manifest> = fc
  .record({
    serials: fc.uniqueArray(serialArb, { minLength: 8, maxLength: 48 }),
    cards: fc.integer({ min: 2, max: 12 }),
    pick: fc.nat(),
    sequence: fc.maxSafeNat(),
    issuedAt: fc.maxSafeNat(),
    configurationId: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    digest: fc.uint8Array({ minLength: 32, maxLength: 32 }),
    shardSize: fc.integer({ min: 1, max: MAX_UNTRUSTED_INPUT_BYTES }),
  })
  .map((r) => {
    const serials = [...r.serials].sort(compareSerials);
    // Pairs of serials: each card takes consecutive pairs (its shards).
    const pairs: [string, string][] = [];
    for (let i = 0; i + 1 < serials.length; i += 2) pairs.push([serials[i]!, serials[i + 1]!]);
    const n = Math.min(r.cards, pairs.length);
    const per = Math.ceil(pairs.length / n);
    const groups: [string, string][][] = [];
    for (let i = 0; i < pairs.length; i += per) groups.push(pairs.slice(i, i + per));
    const index = (r.pick % groups.length) + 1;
    const own = groups[index - 1]!;
    return {
      version: groups.length > 1 ? MANIFEST_CARD_SET_VERSION : MANIFEST_FORMAT_VERSION,
      owner: "ACME Bank",
      configurationId: r.configurationId,
      sequence: r.sequence,
      issuedAt: r.issuedAt,
      notBefore: r.issuedAt,
      notAfter: r.issuedAt,
      shards: own.map(([first, last], i) => ({
        objectId: SHARD_OBJECT_FIRST + i,
        firstSerial: first,
        lastSerial: last,
        sha256: r.digest,
        size: r.shardSize,
      })),
      shardSize: r.shardSize,
      ...(groups.length > 1
        ? {
            cardSet: {
              index,
              cards: groups.map((g) => ({ firstSerial: g[0]![0], lastSerial: g.at(-1)![1] })),
            },
          }
        : {}),
    };
  });

describe("manifest format 3 (a card of a set)", () => {
  it("decode(encode(m)) = m, padded or not; format 2 stays format 2", () => {
    fc.assert(
      fc.property(setManifestArb, fc.nat({ max: 300 }), (manifest, extra) => {
        const smallest = encodeManifestPayload(manifest);
        expect(decodeManifestPayload(smallest)).toEqual(manifest);
        const padded = encodeManifestPayload(manifest, smallest.length + extra);
        expect(padded.length).toBe(smallest.length + extra);
        expect(decodeManifestPayload(padded)).toEqual(manifest);
      }),
      { numRuns: 300 },
    );
  });

  it("names the card that holds a serial, by binary search over the signed ranges", () => {
    fc.assert(
      fc.property(setManifestArb, serialArb, (manifest, probe) => {
        const set = manifest.cardSet;
        if (!set) return;
        const holder = set.cards.findIndex(
          (c) => compareSerials(c.firstSerial, probe) <= 0 && compareSerials(probe, c.lastSerial) <= 0,
        );
        expect(cardOfSerial(set, probe)?.index).toBe(holder < 0 ? undefined : holder + 1);
        for (const [i, card] of set.cards.entries())
          expect(cardOfSerial(set, card.lastSerial)?.index).toBe(i + 1);
      }),
    );
  });

  it("throws only MalformedError on any change of a format 3 payload's bytes, and on random bytes", () => {
    fc.assert(
      fc.property(setManifestArb, fc.nat(), fc.integer({ min: 1, max: 255 }), (manifest, at, xor) => {
        const bytes = encodeManifestPayload(manifest, encodeManifestPayload(manifest).length + 20);
        const changed = bytes.slice();
        changed[at % changed.length]! ^= xor;
        try {
          const decoded = decodeManifestPayload(changed);
          // A change that still decodes must re-encode to exactly the changed bytes (canonical).
          expect(encodeManifestPayload(decoded, changed.length)).toEqual(changed);
        } catch (error) {
          expect(error).toBeInstanceOf(MalformedError);
        }
      }),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
        try {
          decodeManifestPayload(bytes);
        } catch (error) {
          expect(isOnboardError(error)).toBe(true);
        }
      }),
    );
  });

  it.each([
    ["card 0", (s: unknown[]) => [0, s[1]], /index: 0 is outside/],
    ["card n+1", (s: unknown[]) => [3, s[1]], /card 3 of 2/],
    ["one card only", (s: unknown[]) => [1, [(s[1] as unknown[])[0]]], /expected 2\.\.32 items/],
    [
      "overlapping card ranges",
      (s: unknown[]) => [1, [(s[1] as unknown[])[0], (s[1] as unknown[])[0]]],
      /overlap or are out of order/,
    ],
    [
      "a range its shards do not span",
      (s: unknown[]) => [1, [[1_000_000, 9_000_000], (s[1] as unknown[])[1]]],
      /(do not span|overlap)/,
    ],
    ["a card set that is not a pair", (s: unknown[]) => [s[0]], /expected 2\.\.2 items/],
  ])("refuses a format 3 payload with %s", async (_name, change, reason) => {
    const plan = generatePlan(400);
    const set = planCardSet(plan, {
      budgetBytes: 3 * 1000,
      shardBytes: 1000,
      manifestBytes: 1000,
      manifestLength: () => 0,
    });
    const ranges = set.cards.map((c) => c.range).slice(0, 2);
    const encoded = await encodeCardPart(plan.owner, set.cards[0]!, ranges, METADATA, alice.signer, {
      shardBytes: 1000,
    });
    const map = decodeCborStrict(encodeManifestPayload(encoded.manifestContent), {
      what: "t",
      maxBytes: 1e5,
    }).value as Map<number, unknown>;
    map.set(9, change(map.get(9) as unknown[]));
    const bytes = encodeCbor(map);
    expect(() => decodeManifestPayload(bytes)).toThrow(MalformedError);
    expect(() => decodeManifestPayload(bytes)).toThrow(reason);
  });

  it("refuses a format 2 payload that carries a card set, and a set that is not format 3", async () => {
    const manifest = (await encodeConfig(generatePlan(3), METADATA, alice.signer)).manifestContent;
    const map = decodeCborStrict(encodeManifestPayload(manifest), { what: "t", maxBytes: 1e5 }).value as Map<
      number,
      unknown
    >;
    map.delete(9);
    map.set(9, [
      1,
      [
        [1, 2],
        [3, 4],
      ],
    ]);
    map.set(10, new Uint8Array(0));
    expect(() => decodeManifestPayload(encodeCbor(map))).toThrow(/unexpected key 10/);
    expect(() =>
      encodeManifestPayload({
        ...manifest,
        cardSet: {
          index: 1,
          cards: [
            { firstSerial: "1", lastSerial: "2" },
            { firstSerial: "3", lastSerial: "4" },
          ],
        },
      }),
    ).toThrow(/format version must be 3 for a card of a set/);
    expect(MAX_SET_CARDS).toBeGreaterThanOrEqual(10);
  });
});

describe("planCardSet", () => {
  it("the nominal manifest envelope of plan check covers a real officer's (x5chain 9C + token CA)", async () => {
    const plan = generatePlan(500);
    const set = planCardSet(plan, { budgetBytes: NOMINAL_CARD_BUDGET_BYTES, manifestLength: () => 0 });
    const content = (await encodeConfig(plan, METADATA, alice.signer)).manifestContent;
    const envelope = prepareManifest(content, [alice.signer]).length - encodeManifestPayload(content).length;
    expect(set.cards).toHaveLength(1);
    expect(envelope).toBeGreaterThan(1000);
    expect(envelope).toBeLessThanOrEqual(NOMINAL_MANIFEST_ENVELOPE_BYTES);
  });

  const nominal = (m: Manifest) => encodeManifestPayload(m).length + NOMINAL_MANIFEST_ENVELOPE_BYTES;

  it("keeps a plan that fits one card on one card (format 2), and splits 5,000 HSMs across 3 by serial ranges", () => {
    const small = planCardSet(generatePlan(1000), {
      budgetBytes: NOMINAL_CARD_BUDGET_BYTES,
      manifestLength: nominal,
    });
    expect(small.cards).toHaveLength(1);

    const plan = generatePlan(5000);
    const set = planCardSet(plan, { budgetBytes: NOMINAL_CARD_BUDGET_BYTES, manifestLength: nominal });
    expect(set.cards).toHaveLength(3);
    const all = planShards(plan.subnets, plan.hsms, MAX_ITEM_BYTES);
    // The cards take the whole plan's shards in order, as evenly as possible, each within the limit.
    expect(set.cards.flatMap((c) => c.shards)).toEqual(all);
    const sizes = set.cards.map((c) => c.shards.length);
    expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(set.maxShardsPerCard);
    expect(set.cards.reduce((sum, c) => sum + c.hsms, 0)).toBe(5000);
    for (const [i, card] of set.cards.entries()) {
      expect(card.index).toBe(i + 1);
      expect(compareSerials(card.range.firstSerial, card.range.lastSerial)).toBeLessThan(0);
      const next = set.cards[i + 1];
      if (next) expect(compareSerials(card.range.lastSerial, next.range.firstSerial)).toBeLessThan(0);
      // A part planned on its own gives the same shards, byte for byte.
      const own = plan.hsms.filter(
        (h) =>
          compareSerials(card.range.firstSerial, h.serial) <= 0 &&
          compareSerials(h.serial, card.range.lastSerial) <= 0,
      );
      expect(own).toHaveLength(card.hsms);
      expect(planShards(plan.subnets, own, MAX_ITEM_BYTES)).toEqual(card.shards);
    }
    // Deterministic: the same plan in another order splits the same way.
    const shuffled = { ...plan, hsms: [...plan.hsms].reverse() };
    expect(
      planCardSet(shuffled, { budgetBytes: NOMINAL_CARD_BUDGET_BYTES, manifestLength: nominal }),
    ).toEqual(set);
  });

  it("takes fewer shards per card when the manifests would not hold the shard list and the card ranges", () => {
    const plan = generatePlan(400);
    const unbounded = planCardSet(plan, { budgetBytes: 20 * 500, shardBytes: 500, manifestLength: () => 0 });
    // A manifest that holds only 3 shard references: more cards.
    const tight = planCardSet(plan, {
      budgetBytes: 20 * 500,
      shardBytes: 500,
      manifestLength: (m) => (m.shards.length <= 3 ? 0 : MAX_ITEM_BYTES + 1),
    });
    expect(tight.cards.length).toBeGreaterThan(unbounded.cards.length);
    expect(Math.max(...tight.cards.map((c) => c.shards.length))).toBeLessThanOrEqual(3);
  });

  it("refuses a card too small for a manifest and a shard, and a set of more than 32 cards", () => {
    expect(() =>
      planCardSet(generatePlan(10), { budgetBytes: MAX_ITEM_BYTES, manifestLength: () => 0 }),
    ).toThrow(CardFullError);
    expect(() =>
      planCardSet(generatePlan(5000), {
        budgetBytes: 2 * 500,
        shardBytes: 500,
        manifestBytes: 500,
        manifestLength: () => 0,
      }),
    ).toThrow(/do not fit a set of at most 32 cards/);
  });
});

describe("a card set, encoded and read as an agent reads it", () => {
  it("each HSM finds its entry on its card; on every other card, 16 naming the card that holds it", async () => {
    const plan = generatePlan(5000);
    const signer = alice.signer;
    const set = planCardSet(plan, {
      budgetBytes: NOMINAL_CARD_BUDGET_BYTES,
      manifestLength: (m) => prepareManifest(m, [signer]).length,
    });
    expect(set.cards).toHaveLength(3);
    const ranges = set.cards.map((c) => c.range);
    const cards: { manifest: Manifest; shards: readonly { objectId: number; bytes: Uint8Array }[] }[] = [];
    for (const part of set.cards) {
      const encoded = await encodeCardPart(plan.owner, part, ranges, METADATA, signer, {
        cardCapacityBytes: NOMINAL_CARD_BUDGET_BYTES,
      });
      expect(encoded.manifest.length).toBe(MAX_ITEM_BYTES);
      const { manifest } = await verifyManifest(encoded.manifest, { validateChain: () => {} });
      expect(manifest.version).toBe(MANIFEST_CARD_SET_VERSION);
      expect(manifest.cardSet?.index).toBe(part.index);
      expect(manifest.sequence).toBe(METADATA.sequence);
      cards.push({ manifest, shards: encoded.shards });
    }
    // Every 97th HSM: its card gives its entry; the others refuse with the hint.
    for (const hsm of plan.hsms.filter((_, i) => i % 97 === 0)) {
      const home = set.cards.find(
        (c) =>
          compareSerials(c.range.firstSerial, hsm.serial) <= 0 &&
          compareSerials(hsm.serial, c.range.lastSerial) <= 0,
      )!;
      for (const [i, card] of cards.entries()) {
        if (i + 1 === home.index) {
          const ref = findShardFor(card.manifest, hsm.serial);
          const bytes = card.shards.find(
            (s) => shardItemName(s.objectId) === shardItemName(ref.objectId),
          )!.bytes;
          expect(decodeShardEntry(bytes, ref, hsm.serial).hsm).toEqual(hsm);
        } else {
          let error: unknown;
          try {
            findShardFor(card.manifest, hsm.serial);
          } catch (e) {
            error = e;
          }
          expect(error).toBeInstanceOf(NotForThisHsmError);
          expect((error as Error).message).toBe(
            `serial ${hsm.serial} is not on this card, card ${i + 1} of 3 of configuration ` +
              `${Buffer.from(METADATA.configurationId).toString("hex").slice(0, 8)} ` +
              `(serials ${ranges[i]!.firstSerial}..${ranges[i]!.lastSerial}): use card ${home.index} of 3 ` +
              `(serials ${home.range.firstSerial}..${home.range.lastSerial})`,
          );
        }
      }
    }
    expect(() => findShardFor(cards[0]!.manifest, "999")).toThrow(/nor on any other card|not on this card/);
  });
});
