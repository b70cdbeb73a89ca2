import { createPublicKey } from "node:crypto";
import { Tag } from "cbor-x";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import {
  cborStringLengthFor,
  decodeCborStrict,
  encodeCbor,
  MAX_UNTRUSTED_INPUT_BYTES,
} from "../../src/config/cbor.js";
import { CoseHeader, coseSignLength } from "../../src/config/cose.js";
import { encodeConfig } from "../../src/config/encode-config.js";
import {
  checkManifestValidity,
  cosignatureBytes,
  decodeManifestPayload,
  encodeManifestPayload,
  findShardFor,
  MANIFEST_CONTENT_TYPE,
  MANIFEST_FORMAT_VERSION,
  type Manifest,
  prepareManifestCosignature,
  signedManifestLength,
  signManifest,
  verifyManifest,
} from "../../src/config/manifest.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { compareSerials, decodeShardEntry } from "../../src/config/shard.js";
import { signEcdsaRaw } from "../../src/crypto/ecdsa.js";
import type { Signer } from "../../src/crypto/signer.js";
import { createSoftwareSigner } from "../../src/crypto/signer.js";
import {
  CardFullError,
  CardNotTrustedError,
  IntegrityError,
  isOnboardError,
  MalformedError,
  NotForThisHsmError,
  UsageError,
  ValidityError,
} from "../../src/errors.js";
import { issueCardCertificate } from "../../src/pki/issue.js";
import { EKU } from "../../src/pki/oids.js";
import { validateChain } from "../../src/pki/validate-chain.js";
import {
  CARD_CAPACITY_BYTES,
  CARD_LAYOUT,
  itemObjectId,
  MAX_ITEM_BYTES,
  MAX_SHARDS,
  parseItemName,
  SHARD_OBJECT_FIRST,
  SHARD_OBJECT_LAST,
  shardItemName,
} from "../../src/secure-element/card-layout.js";
import { COSIGNER_MARGIN_BYTES } from "../../src/station/write-card.js";
import {
  createTestIdentity,
  generatePlan,
  ISSUED_AT,
  METADATA,
  type TestIdentity,
  testPki,
} from "./signing-fixtures.js";

const trustAll = { validateChain: () => {} };

let alice: TestIdentity;
let bob: TestIdentity;
beforeAll(async () => {
  alice = await createTestIdentity({ curve: "P-256" });
  bob = await createTestIdentity({ curve: "P-384", officer: "Bob Example" });
});

const serialArb = fc.oneof(fc.maxSafeNat().map(String), fc.stringMatching(/^[A-Z][A-Z0-9-]{0,12}$/));

/** Manifests with valid shard lists: sorted, disjoint ranges, increasing object ids. */
const manifestArb: fc.Arbitrary<Manifest> = fc
  .record({
    owner: fc.string({ minLength: 1, maxLength: 40 }).filter((s) => Buffer.byteLength(s) <= 256),
    configurationId: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    sequence: fc.maxSafeNat(),
    issuedAt: fc.maxSafeNat(),
    window: fc.tuple(fc.maxSafeNat(), fc.maxSafeNat()).map(([a, b]) => (a <= b ? [a, b] : [b, a])),
    serials: fc.uniqueArray(serialArb, { minLength: 2, maxLength: 40 }),
    digests: fc.array(fc.uint8Array({ minLength: 32, maxLength: 32 }), { minLength: 20, maxLength: 20 }),
    gaps: fc.array(fc.nat({ max: 3 }), { minLength: 20, maxLength: 20 }),
    shardSize: fc.oneof(fc.constant(MAX_ITEM_BYTES), fc.integer({ min: 1, max: MAX_UNTRUSTED_INPUT_BYTES })),
  })
  .map((r) => {
    const serials = [...r.serials].sort(compareSerials);
    const shards: Manifest["shards"][number][] = [];
    let objectId = SHARD_OBJECT_FIRST;
    for (let i = 0; i + 1 < serials.length && shards.length < 20; i += 2) {
      shards.push({
        objectId,
        firstSerial: serials[i]!,
        lastSerial: serials[i + 1]!,
        sha256: r.digests[shards.length]!,
        size: r.shardSize,
      });
      objectId += 1 + r.gaps[shards.length]!;
    }
    return {
      version: MANIFEST_FORMAT_VERSION,
      owner: r.owner,
      configurationId: r.configurationId,
      sequence: r.sequence,
      issuedAt: r.issuedAt,
      notBefore: r.window[0]!,
      notAfter: r.window[1]!,
      shards,
      shardSize: r.shardSize,
    };
  });

/** Any COSE_Sign built from parts, signed properly by `identity`, to test the manifest profile. */
function craftManifest(
  identity: TestIdentity,
  options: {
    bodyProtected?: Map<number, unknown>;
    bodyUnprotected?: Map<number, unknown>;
    signerProtected?: Map<number, unknown>;
    signerUnprotected?: Map<number, unknown>;
    payload?: Uint8Array;
  },
  manifest: Manifest,
): Uint8Array {
  const payload = options.payload ?? encodeManifestPayload(manifest);
  const bodyHeader = options.bodyProtected ?? new Map([[CoseHeader.contentType, MANIFEST_CONTENT_TYPE]]);
  const body = bodyHeader.size === 0 ? new Uint8Array(0) : encodeCbor(bodyHeader);
  const signerProtected = encodeCbor(
    options.signerProtected ??
      new Map<number, unknown>([
        [CoseHeader.alg, -7],
        [CoseHeader.x5chain, identity.chain],
      ]),
  );
  const signature = signEcdsaRaw(
    identity.privateKey,
    "ES256",
    encodeCbor(["Signature", body, signerProtected, new Uint8Array(0), payload]),
  );
  return encodeCbor(
    new Tag(
      [
        body,
        options.bodyUnprotected ?? new Map(),
        payload,
        [[signerProtected, options.signerUnprotected ?? new Map(), signature]],
      ],
      98,
    ),
  );
}

describe("manifest payload", () => {
  it("decode(encode(m)) = m", () => {
    fc.assert(
      fc.property(manifestArb, (manifest) => {
        expect(decodeManifestPayload(encodeManifestPayload(manifest))).toEqual(manifest);
      }),
      { numRuns: 300 },
    );
  });

  it("decode(encode(m, size)) = m for any size at or above the smallest encoding, padded exactly", () => {
    fc.assert(
      fc.property(manifestArb, fc.nat({ max: 400 }), (manifest, extra) => {
        const smallest = encodeManifestPayload(manifest);
        const padded = encodeManifestPayload(manifest, smallest.length + extra);
        expect(padded.length).toBe(smallest.length + extra);
        expect(padded.subarray(0, smallest.length - 1)).toEqual(smallest.subarray(0, -1));
        expect(padded.subarray(smallest.length + 2).every((b) => b === 0)).toBe(true);
        expect(decodeManifestPayload(padded)).toEqual(manifest);
      }),
      { numRuns: 300 },
    );
  });

  it("finds the shard of every serial by binary search, and no shard for others", () => {
    fc.assert(
      fc.property(manifestArb, serialArb, (manifest, probe) => {
        const holder = manifest.shards.find(
          (s) => compareSerials(s.firstSerial, probe) <= 0 && compareSerials(probe, s.lastSerial) <= 0,
        );
        if (holder) expect(findShardFor(manifest, probe)).toBe(holder);
        else expect(() => findShardFor(manifest, probe)).toThrow(NotForThisHsmError);
        for (const shard of manifest.shards) expect(findShardFor(manifest, shard.lastSerial)).toBe(shard);
      }),
    );
  });

  it("refuses what it cannot state: overlapping ranges, bad ids, an inverted window", async () => {
    const base = (
      await encodeConfig(generatePlan(40), METADATA, alice.signer, {
        maxObjectBytes: 300,
        maxManifestBytes: Number.POSITIVE_INFINITY,
      })
    ).manifestContent;
    const [a, b] = base.shards as [Manifest["shards"][number], Manifest["shards"][number]];
    for (const bad of [
      { ...base, shards: [a, { ...b, firstSerial: a.lastSerial }] },
      { ...base, shards: [b, a] },
      { ...base, shards: [{ ...a, objectId: CARD_LAYOUT.manifest }] },
      { ...base, shards: [] },
      { ...base, notBefore: base.notAfter + 1 },
      { ...base, configurationId: new Uint8Array(15) },
      { ...base, version: 1 },
      { ...base, sequence: -1 },
      { ...base, shardSize: 0 },
      { ...base, shardSize: MAX_UNTRUSTED_INPUT_BYTES + 1 },
      { ...base, shards: [a, { ...b, size: 301 }] },
    ]) {
      expect(() => encodeManifestPayload(bad)).toThrow(UsageError);
    }
    const smallest = encodeManifestPayload(base).length;
    expect(() => encodeManifestPayload(base, smallest - 1)).toThrow(UsageError);
    expect(encodeManifestPayload(base, smallest)).toEqual(encodeManifestPayload(base));
    // refs without a size take the manifest's
    const bare = { ...base, shards: base.shards.map(({ size: _, ...ref }) => ref) };
    expect(encodeManifestPayload(bare)).toEqual(encodeManifestPayload(base));
  });

  it.each([
    ["an unknown key", (m: Map<number, unknown>) => m.set(10, 0), /unexpected key 10/],
    ["a missing key", (m: Map<number, unknown>) => m.delete(3), /missing key 3/],
    ["another version", (m: Map<number, unknown>) => m.set(0, 4), /version 4/],
    [
      "version 3 (a card of a set) without its card set",
      (m: Map<number, unknown>) => m.set(0, 3),
      /missing key 10/,
    ],
    ["version 1", (m: Map<number, unknown>) => m.set(0, 1), /unsupported format version 1/],
    [
      "format version 1 (no shard size, no padding)",
      (m: Map<number, unknown>) => m.set(0, 1) && m.delete(8) && m.delete(9) && m,
      /version 1/,
    ],
    ["no shard size", (m: Map<number, unknown>) => m.delete(8), /missing key 8/],
    ["a shard size of 0", (m: Map<number, unknown>) => m.set(8, 0), /shard size: 0 is outside/],
    ["no padding", (m: Map<number, unknown>) => m.delete(9), /missing key 9/],
    [
      "padding that is not zero",
      (m: Map<number, unknown>) => m.set(9, new Uint8Array([0, 0, 7, 0])),
      /padding bytes must be zero/,
    ],
    ["padding of another type", (m: Map<number, unknown>) => m.set(9, 0), /padding: expected a byte string/],
    [
      "padding wrapped in an array where a byte string fits",
      (m: Map<number, unknown>) => m.set(9, [new Uint8Array(40)]),
      /canonical/,
    ],
    [
      "a short configuration id",
      (m: Map<number, unknown>) => m.set(2, new Uint8Array(8)),
      /expected 16 bytes/,
    ],
    [
      "keys out of order",
      (m: Map<number, unknown>) => m.set(0, m.get(0)!) && new Map([...m].reverse()),
      /canonical/,
    ],
  ])("refuses a payload with %s", async (_name, change, reason) => {
    const manifest = (await encodeConfig(generatePlan(3), METADATA, alice.signer)).manifestContent;
    const map = decodeCborStrict(encodeManifestPayload(manifest), { what: "t", maxBytes: 1e5 }).value as Map<
      number,
      unknown
    >;
    const changed = change(map);
    const bytes = encodeCbor(changed instanceof Map ? changed : map);
    expect(() => decodeManifestPayload(bytes)).toThrow(MalformedError);
    expect(() => decodeManifestPayload(bytes)).toThrow(reason);
  });

  it("accepts exactly the shard object ids of the card layout (the ids the backends can hold)", async () => {
    const manifest = (await encodeConfig(generatePlan(3), METADATA, alice.signer)).manifestContent;
    const withObjectId = (objectId: number): Uint8Array => {
      const map = decodeCborStrict(encodeManifestPayload(manifest), { what: "t", maxBytes: 1e5 })
        .value as Map<number, unknown>;
      const [ref] = map.get(7) as unknown[][];
      ref![0] = objectId;
      return encodeCbor(map);
    };
    const accepts = (objectId: number): boolean => {
      try {
        return decodeManifestPayload(withObjectId(objectId)).shards[0]!.objectId === objectId;
      } catch (error) {
        expect(error).toBeInstanceOf(MalformedError);
        return false;
      }
    };
    // The edges, the items around the shard range (crl, reserved, receipt-0) and the old "224 shards".
    expect(accepts(SHARD_OBJECT_FIRST)).toBe(true);
    expect(accepts(SHARD_OBJECT_LAST)).toBe(true);
    for (const outside of [
      CARD_LAYOUT.crl,
      CARD_LAYOUT.reserved.last,
      SHARD_OBJECT_FIRST - 1,
      SHARD_OBJECT_LAST + 1,
      CARD_LAYOUT.receipts.first,
      0x5fffff,
      0,
    ]) {
      expect(accepts(outside), `0x${outside.toString(16)}`).toBe(false);
      expect(() => decodeManifestPayload(withObjectId(outside))).toThrow(/object id/);
    }
    expect(SHARD_OBJECT_LAST - SHARD_OBJECT_FIRST + 1).toBe(MAX_SHARDS);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffff }), (objectId) => {
        const inTable = objectId >= SHARD_OBJECT_FIRST && objectId <= SHARD_OBJECT_LAST;
        expect(accepts(objectId)).toBe(inTable);
        if (inTable) {
          // what the decoder accepts, every backend can hold: a valid item name at that PIV object
          const item = parseItemName(shardItemName(objectId));
          expect(item).toBeDefined();
          expect(itemObjectId(item!)).toBe(objectId);
        } else {
          expect(() => shardItemName(objectId)).toThrow(MalformedError);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("refuses to encode more shards than a card has items for, saying how many it holds", async () => {
    const options = {
      maxObjectBytes: 300,
      maxManifestBytes: Number.POSITIVE_INFINITY,
      cardCapacityBytes: Number.POSITIVE_INFINITY,
    };
    const fits = await encodeConfig(generatePlan(200), METADATA, alice.signer, options);
    expect(fits.shards.length).toBeLessThanOrEqual(MAX_SHARDS);
    expect(fits.shards.at(-1)!.objectId).toBe(SHARD_OBJECT_FIRST + fits.shards.length - 1);
    await expect(encodeConfig(generatePlan(2000), METADATA, alice.signer, options)).rejects.toThrow(
      new RegExp(`shards needed; a card holds at most ${MAX_SHARDS} \\(shard-0..shard-${MAX_SHARDS - 1}\\)`),
    );
  });

  it("checks the validity window", () => {
    const m = { notBefore: 100, notAfter: 200 } as Manifest;
    expect(() => checkManifestValidity(m, 99)).toThrow(ValidityError);
    expect(() => checkManifestValidity(m, 201)).toThrow(/expired/);
    const far = { notBefore: 0, notAfter: Number.MAX_SAFE_INTEGER } as Manifest;
    expect(() => checkManifestValidity(far, -1)).toThrow(ValidityError);
    checkManifestValidity(m, 100);
    checkManifestValidity(m, 200);
  });
});

describe("encodeConfig → agent", () => {
  it("lets every HSM find, verify and decode its own entry, reading one shard", async () => {
    const plan = generatePlan(300);
    const encoded = await encodeConfig(plan, METADATA, alice.signer);
    const chains: (readonly Uint8Array[])[] = [];
    const { manifest, signers } = await verifyManifest(encoded.manifest, {
      validateChain: (chain) => {
        chains.push(chain);
      },
    });
    // x5chain leaves out the self-signed root the HSM pins
    expect(chains).toEqual([alice.chain.slice(0, 2)]);
    expect(signers).toEqual([{ algorithm: "ES256", certificateChain: alice.chain.slice(0, 2) }]);
    expect(manifest).toEqual(encoded.manifestContent);
    expect(manifest).toMatchObject({ owner: "ACME Bank", sequence: 7, notAfter: METADATA.notAfter });
    // fixed sizes: the whole object for the manifest and for every shard, declared in the manifest
    expect(encoded.manifest.length).toBe(MAX_ITEM_BYTES);
    expect(manifest.shardSize).toBe(MAX_ITEM_BYTES);
    for (const shard of encoded.shards) expect(shard.bytes.length).toBe(MAX_ITEM_BYTES);
    expect(encoded.totalBytes).toBe((1 + encoded.shards.length) * MAX_ITEM_BYTES);
    const byId = new Map(encoded.shards.map((s) => [s.objectId, s.bytes]));
    expect(encoded.shards.map((s) => s.objectId)).toEqual(
      encoded.shards.map((_, i) => SHARD_OBJECT_FIRST + i),
    );
    for (const hsm of plan.hsms) {
      const ref = findShardFor(manifest, hsm.serial);
      const config = decodeShardEntry(byId.get(ref.objectId)!, ref, hsm.serial);
      expect(config).toEqual({ hsm, subnets: plan.subnets });
    }
    expect(() => findShardFor(manifest, "7")).toThrow(NotForThisHsmError);
  });

  it("is deterministic: same payload and shards whatever the plan order; same manifest with a deterministic signer", async () => {
    const plan = generatePlan(500);
    const reversed: NetworkPlan = { ...plan, hsms: [...plan.hsms].reverse() };
    const fixed: Signer = { ...alice.signer, sign: async () => new Uint8Array(64).fill(7) };
    const noSelfCheck: Signer = { ...fixed, certificateChain: [] };
    const [a, b] = [
      await encodeConfig(plan, METADATA, alice.signer),
      await encodeConfig(reversed, METADATA, alice.signer),
    ];
    expect(b.shards).toEqual(a.shards);
    expect(encodeManifestPayload(b.manifestContent)).toEqual(encodeManifestPayload(a.manifestContent));
    const [c, d] = [
      await encodeConfig(plan, METADATA, noSelfCheck),
      await encodeConfig(reversed, METADATA, noSelfCheck),
    ];
    expect(d.manifest).toEqual(c.manifest);
  });

  it("gives every plan that fits the same manifest and shard sizes, for one signer or two", async () => {
    for (const signers of [[alice.signer], [alice.signer, bob.signer]]) {
      const sizes = new Set<number>();
      for (const n of [1, 40, 1000]) {
        const encoded = await encodeConfig(generatePlan(n), METADATA, signers);
        sizes.add(encoded.manifest.length);
        for (const shard of encoded.shards) sizes.add(shard.bytes.length);
        const { manifest } = await verifyManifest(encoded.manifest, trustAll);
        expect(manifest.shards.length).toBe(encoded.shards.length);
      }
      expect([...sizes]).toEqual([MAX_ITEM_BYTES]);
    }
    // a smaller shard size (e.g. for a short-APDU token): declared, and every shard has it
    const small = await encodeConfig(generatePlan(200), METADATA, alice.signer, { shardBytes: 1000 });
    expect(small.shards.map((s) => s.bytes.length)).toEqual(small.shards.map(() => 1000));
    expect(small.manifestContent.shardSize).toBe(1000);
    expect(small.manifest.length).toBe(MAX_ITEM_BYTES);
    await expect(
      encodeConfig(generatePlan(5), METADATA, alice.signer, { shardBytes: MAX_ITEM_BYTES + 1 }),
    ).rejects.toThrow(UsageError);
  });

  it("pads the signed manifest to exactly its size, or one byte less only where CBOR cannot", async () => {
    // A deterministic signer without x5chain keeps the envelope small, so that the sizes below
    // cross the payload's head boundary (255 → 256 bytes) as well as the padding item's.
    const fake: Signer = { ...alice.signer, certificateChain: [], sign: async () => new Uint8Array(64) };
    const manifest = (
      await encodeConfig(generatePlan(3), METADATA, alice.signer, {
        maxManifestBytes: Number.POSITIVE_INFINITY,
      })
    ).manifestContent;
    const smallest = encodeManifestPayload(manifest).length;
    const envelope = coseSignLength(0, [fake], { contentType: MANIFEST_CONTENT_TYPE }) - 1;
    const first = coseSignLength(smallest, [fake], { contentType: MANIFEST_CONTENT_TYPE });
    expect(first).toBeLessThan(envelope + 258);
    let short = 0;
    for (let size = first; size <= envelope + 600; size++) {
      const signed = await signManifest(manifest, [fake], { size });
      expect(signed.length).toBe(signedManifestLength(manifest, [fake], { size }));
      const exact = cborStringLengthFor(size - envelope) !== undefined;
      expect(signed.length, `size ${size}`).toBe(exact ? size : size - 1);
      if (!exact) short++;
      const payload = (
        decodeCborStrict(signed, { what: "t", maxBytes: 1e5, allowTopLevelTag: true }).value as unknown[]
      )[2] as Uint8Array;
      expect(decodeManifestPayload(payload)).toEqual(manifest);
    }
    expect(short).toBe(1); // the payload of 255 or 256 bytes: 257 or 259 with its head
    expect(() => signedManifestLength(manifest, [fake], { size: first - 1 })).toThrow(CardFullError);
    // not finite: not padded
    expect(signedManifestLength(manifest, [fake], { size: Number.POSITIVE_INFINITY })).toBe(first);
    expect((await signManifest(manifest, [fake])).length).toBe(first);
  });

  it("carries co-signatures (dual control): each verified, each chain validated, refused if one is bad", async () => {
    const encoded = await encodeConfig(generatePlan(10), METADATA, [alice.signer, bob.signer]);
    const validated: number[] = [];
    const result = await verifyManifest(encoded.manifest, {
      validateChain: (_, i) => void validated.push(i),
    });
    expect(validated).toEqual([0, 1]);
    expect(result.signers.map((s) => s.algorithm)).toEqual(["ES256", "ES384"]);
    const refusal = new CardNotTrustedError("bob's card is not from our token CA");
    await expect(
      verifyManifest(encoded.manifest, {
        validateChain: (_, i) => {
          if (i === 1) throw refusal;
        },
      }),
    ).rejects.toBe(refusal);
    const twice = await signManifest(encoded.manifestContent, [alice.signer, alice.signer]);
    await expect(verifyManifest(twice, trustAll)).rejects.toThrow(/same key signs twice/);
    // the same card key under a second certificate counts once too
    const pki = await testPki();
    const again = await issueCardCertificate({
      tokenCa: pki.tokenCa,
      publicKey: createPublicKey(alice.privateKey),
      owner: "ACME Bank",
      officer: "Alice Again",
      slot: "9C",
      now: ISSUED_AT,
    });
    const aliceAgain = createSoftwareSigner({
      privateKey: alice.privateKey,
      certificateChain: [new Uint8Array(again.rawData), ...alice.chain.slice(1)],
    });
    const sameKey = await signManifest(encoded.manifestContent, [alice.signer, aliceAgain]);
    await expect(verifyManifest(sameKey, trustAll)).rejects.toThrow(/same key signs twice/);
  });

  it("adds a co-signature later (station cosign): payload and first signature byte for byte, length known first", async () => {
    const encoded = await encodeConfig(generatePlan(10), METADATA, alice.signer, { maxManifestBytes: 2000 });
    const prepared = prepareManifestCosignature(encoded.manifest, bob.signer);
    const cosigned = await prepared.sign();
    expect(cosigned.length).toBe(prepared.length);
    expect(prepared.length - encoded.manifest.length).toBe(cosignatureBytes(bob.signer));
    const chains: (readonly Uint8Array[])[] = [];
    const verified = await verifyManifest(cosigned, { validateChain: (chain) => void chains.push(chain) });
    expect(verified.manifest).toEqual((await verifyManifest(encoded.manifest, trustAll)).manifest);
    expect(verified.signers.map((s) => s.algorithm)).toEqual(["ES256", "ES384"]);
    // the co-signer's x5chain is its leaf alone (RFC 9360: the relying parties hold the token CA)
    expect(chains[1]).toEqual([bob.chain[0]]);
    expect(chains[0]!.length).toBe(2);
    // the first signature and the payload are unchanged: the old message is a prefix up to the array
    const [body, , payload, signatures] = decodeCborStrict(cosigned, {
      what: "t",
      allowTopLevelTag: true,
      maxBytes: MAX_UNTRUSTED_INPUT_BYTES,
    }).value as unknown[];
    const [, , payload0, signatures0] = decodeCborStrict(encoded.manifest, {
      what: "t",
      allowTopLevelTag: true,
      maxBytes: MAX_UNTRUSTED_INPUT_BYTES,
    }).value as unknown[];
    expect(payload).toEqual(payload0);
    expect((signatures as unknown[])[0]).toEqual((signatures0 as unknown[])[0]);
    expect(body).toBeInstanceOf(Uint8Array);
    // the same key again: the verifier refuses it by default, an agent counts it once
    const twice = await prepareManifestCosignature(encoded.manifest, alice.signer).sign();
    await expect(verifyManifest(twice, trustAll)).rejects.toThrow(/same key signs twice/);
    expect((await verifyManifest(twice, { ...trustAll, duplicateKeys: "count-once" })).signers).toHaveLength(
      2,
    );
    // three officers
    const carol = await createTestIdentity({ officer: "Carol" });
    const three = await prepareManifestCosignature(cosigned, carol.signer).sign();
    expect((await verifyManifest(three, trustAll)).signers).toHaveLength(3);
  });

  it("co-signing throws only typed errors on altered bytes and on random bytes", async () => {
    const encoded = await encodeConfig(generatePlan(3), METADATA, alice.signer, { maxManifestBytes: 2000 });
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (bytes) => {
        try {
          prepareManifestCosignature(bytes, bob.signer);
        } catch (e) {
          expect(isOnboardError(e), String(e)).toBe(true);
        }
      }),
      { numRuns: 1000 },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: encoded.manifest.length - 1 }),
        fc.integer({ min: 1, max: 255 }),
        async (at, xor) => {
          const bytes = Uint8Array.from(encoded.manifest);
          bytes[at]! ^= xor;
          try {
            const prepared = prepareManifestCosignature(bytes, bob.signer);
            // whatever is accepted here is then refused by the verifier unless it still verifies
            await verifyManifest(await prepared.sign(), trustAll).catch((e) => {
              if (!isOnboardError(e)) throw e;
            });
          } catch (e) {
            if (!isOnboardError(e)) throw e;
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it("detects any single changed byte anywhere in the signed manifest, padding included (every position)", async () => {
    const encoded = await encodeConfig(generatePlan(100), METADATA, alice.signer);
    const bytes = encoded.manifest;
    expect(bytes.length).toBe(MAX_ITEM_BYTES);
    // most of it is padding: zero bytes at the end of the signed payload
    const payload = (
      decodeCborStrict(bytes, { what: "t", maxBytes: 1e5, allowTopLevelTag: true }).value as unknown[]
    )[2] as Uint8Array;
    expect(payload.subarray(-1000).every((b) => b === 0)).toBe(true);
    const deltas = fc.sample(fc.integer({ min: 1, max: 255 }), { numRuns: bytes.length, seed: 42 });
    const accepted: number[] = [];
    for (let at = 0; at < bytes.length; at++) {
      const changed = new Uint8Array(bytes);
      changed[at] = (changed[at]! + deltas[at]!) & 0xff;
      try {
        await verifyManifest(changed, trustAll);
        accepted.push(at);
      } catch (e) {
        if (!(e instanceof IntegrityError)) throw e;
      }
    }
    expect(accepted).toEqual([]);
  });

  it.each([
    [
      "x5chain in the unprotected header",
      () => ({ signerProtected: new Map([[1, -7]]), signerUnprotected: new Map([[33, alice.chain]]) }),
    ],
    [
      "a kid in the signer's unprotected header",
      () => ({ signerUnprotected: new Map([[4, new Uint8Array(1)]]) }),
    ],
    [
      "a kid in the signer's protected header",
      () => ({
        signerProtected: new Map<number, unknown>([
          [1, -7],
          [4, new Uint8Array(1)],
          [33, alice.chain],
        ]),
      }),
    ],
    ["a body unprotected header", () => ({ bodyUnprotected: new Map([[4, new Uint8Array(1)]]) })],
    ["another content type", () => ({ bodyProtected: new Map([[3, "application/cbor"]]) })],
    ["no content type", () => ({ bodyProtected: new Map() })],
  ])("refuses a manifest with %s", async (_name, options) => {
    const manifest = (await encodeConfig(generatePlan(3), METADATA, alice.signer)).manifestContent;
    await expect(verifyManifest(craftManifest(alice, options(), manifest), trustAll)).rejects.toBeInstanceOf(
      MalformedError,
    );
  });

  it("accepts the crafted baseline (so the refusals above are for their stated reason)", async () => {
    const manifest = (await encodeConfig(generatePlan(3), METADATA, alice.signer)).manifestContent;
    await expect(verifyManifest(craftManifest(alice, {}, manifest), trustAll)).resolves.toMatchObject({
      manifest,
    });
  });

  it("refuses a COSE_Sign1 or an oversized input", async () => {
    const encoded = await encodeConfig(generatePlan(3), METADATA, alice.signer);
    const retagged = new Uint8Array([0xd2, ...encoded.manifest.subarray(2)]); // tag 98 → 18
    await expect(verifyManifest(retagged, trustAll)).rejects.toThrow(/wrong CBOR tag 18/);
    await expect(verifyManifest(new Uint8Array(60_000), trustAll)).rejects.toThrow(/exceeds/);
  });

  it("never throws anything but typed errors on random bytes", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), async (bytes) => {
        try {
          await verifyManifest(bytes, trustAll);
        } catch (e) {
          expect(isOnboardError(e), String(e)).toBe(true);
        }
        try {
          decodeManifestPayload(bytes);
        } catch (e) {
          expect(isOnboardError(e), String(e)).toBe(true);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("says when the card is full", async () => {
    const plan = generatePlan(3000);
    await expect(encodeConfig(plan, METADATA, alice.signer)).rejects.toThrow(CardFullError);
    await expect(
      encodeConfig(generatePlan(100), METADATA, alice.signer, { cardCapacityBytes: 1000 }),
    ).rejects.toThrow(/need \d+ bytes/);
    await expect(
      encodeConfig(generatePlan(100), METADATA, alice.signer, { maxManifestBytes: 500 }),
    ).rejects.toThrow(/signed manifest is \d+ bytes/);
    // with fixed sizes: one object for the manifest, one per shard, 16 objects in 50,225 bytes
    await expect(
      encodeConfig(generatePlan(100), METADATA, alice.signer, {
        cardCapacityBytes: 2 * MAX_ITEM_BYTES - 1,
      }),
    ).rejects.toThrow(/need 6126 bytes \(manifest 3063, shards 1 × 3063\)/);
    await expect(
      encodeConfig(generatePlan(100), METADATA, alice.signer, {
        cardCapacityBytes: 2 * MAX_ITEM_BYTES,
      }),
    ).resolves.toMatchObject({ totalBytes: 2 * MAX_ITEM_BYTES });
  });
});

describe("with the project's PKI (src/pki) as validateChain", () => {
  const validateWith =
    (requiredEku: string) =>
    async (chain: readonly Uint8Array[]): Promise<void> => {
      await validateChain({
        leaf: chain[0]!,
        intermediates: chain.slice(1),
        trustAnchor: (await testPki()).root.certificate,
        requiredEku,
        requireCrl: false,
        now: new Date(ISSUED_AT.getTime() + 86_400_000),
      });
    };

  it("accepts an officer card's chain (x5chain without the root) and refuses a device key's", async () => {
    const encoded = await encodeConfig(generatePlan(5), METADATA, [alice.signer, bob.signer]);
    const { signers } = await verifyManifest(encoded.manifest, {
      validateChain: validateWith(EKU.configSigning),
    });
    expect(signers).toHaveLength(2);
    const device = await createTestIdentity({ device: "1234567" });
    const byDevice = await encodeConfig(generatePlan(5), METADATA, device.signer);
    await expect(
      verifyManifest(byDevice.manifest, { validateChain: validateWith(EKU.configSigning) }),
    ).rejects.toThrow(CardNotTrustedError);
  });
});

describe("density (SPEC.md §9)", () => {
  /** Most HSMs of generatePlan whose manifest + shards fit one 50,225-byte card (bisection). */
  async function mostOnOneCard(signers: readonly Signer[], chain: "without-root" | "full"): Promise<number> {
    const fits = async (n: number) =>
      encodeConfig(generatePlan(n), METADATA, signers, { chain }).then(
        () => true,
        (e: unknown) => {
          if (e instanceof CardFullError) return false;
          throw e;
        },
      );
    let [low, high] = [1000, 4000];
    expect(await fits(low)).toBe(true);
    expect(await fits(high)).toBe(false);
    while (high - low > 1) {
      const middle = (low + high) >> 1;
      if (await fits(middle)) low = middle;
      else high = middle;
    }
    return low;
  }

  it.each([
    ["the default x5chain (leaf + CA)", "without-root"],
    ["the full 3-certificate x5chain", "full"],
  ] as const)(
    "stores 1,000 HSMs in ≤ 46 bytes per entry and ≥ 1,000 per card, fixed-size manifest with %s included",
    async (_name, chain) => {
      const plan = generatePlan(1000);
      const encoded = await encodeConfig(plan, METADATA, alice.signer, { chain });
      const chainBytes = alice.chain.reduce((n, c) => n + c.length, 0);
      expect(chainBytes).toBeGreaterThan(1200);
      // padded: the whole object, whatever the chain; shards all full-size
      expect(encoded.manifest.length).toBe(MAX_ITEM_BYTES);
      expect(encoded.shards.length).toBe(6);
      expect(encoded.totalBytes).toBe(7 * MAX_ITEM_BYTES); // 21,441
      expect(encoded.totalBytes / plan.hsms.length).toBeLessThanOrEqual(46);
      const shardBytes = encoded.shards.reduce((n, s) => n + s.bytes.length, 0);
      expect(shardBytes / plan.hsms.length).toBeLessThanOrEqual(46);
      // one card: the manifest and 15 full shards (16 × 3,063 = 49,008 ≤ 50,225)
      const most = await mostOnOneCard([alice.signer], chain);
      expect(most).toBeGreaterThanOrEqual(1000);
      const full = await encodeConfig(generatePlan(most), METADATA, alice.signer, { chain });
      expect(full.shards.length).toBe(15);
      expect(full.totalBytes).toBeLessThanOrEqual(CARD_CAPACITY_BYTES);
      expect(full.totalBytes / most).toBeLessThanOrEqual(46);
    },
    60_000,
  );

  it("three officers signing in turn (station write --cosigners 2, station cosign twice): 1,000 HSMs, one 3,063-byte object", async () => {
    const carol = await createTestIdentity({ officer: "Carol" });
    const room = 2 * (cosignatureBytes(alice.signer) + COSIGNER_MARGIN_BYTES);
    const written = await encodeConfig(generatePlan(1000), METADATA, alice.signer, {
      chain: "leaf",
      maxManifestBytes: MAX_ITEM_BYTES - room,
    });
    expect(written.manifest.length).toBeLessThanOrEqual(MAX_ITEM_BYTES - room);
    const two = await prepareManifestCosignature(written.manifest, bob.signer).sign();
    const three = await prepareManifestCosignature(two, carol.signer).sign();
    expect(three.length).toBeLessThanOrEqual(MAX_ITEM_BYTES);
    const chains: number[] = [];
    const verified = await verifyManifest(three, {
      validateChain: (chain) => void chains.push(chain.length),
    });
    expect(chains).toEqual([1, 1, 1]);
    expect(verified.manifest.shards.length).toBe(written.shards.length);
  }, 60_000);

  it("holds ≥ 1,000 HSMs with two co-signers (dual control) in the same fixed-size manifest", async () => {
    const most = await mostOnOneCard([alice.signer, bob.signer], "without-root");
    expect(most).toBeGreaterThanOrEqual(1000);
    const full = await encodeConfig(generatePlan(most), METADATA, [alice.signer, bob.signer]);
    expect(full.manifest.length).toBe(MAX_ITEM_BYTES);
    expect(full.totalBytes / most).toBeLessThanOrEqual(46);
  }, 60_000);
});
