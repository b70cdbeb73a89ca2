import { createPublicKey } from "node:crypto";
import { Tag } from "cbor-x";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { CoseHeader, decodeCborStrict, encodeCbor } from "../../src/config/cose.js";
import { encodeConfig } from "../../src/config/encode-config.js";
import {
  CARD_CAPACITY_BYTES,
  checkManifestValidity,
  decodeManifestPayload,
  encodeManifestPayload,
  findShardFor,
  MANIFEST_CONTENT_TYPE,
  MAX_PIV_OBJECT_BYTES,
  type Manifest,
  PivObject,
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
  })
  .map((r) => {
    const serials = [...r.serials].sort(compareSerials);
    const shards: Manifest["shards"][number][] = [];
    let objectId = PivObject.shardsFirst;
    for (let i = 0; i + 1 < serials.length && shards.length < 20; i += 2) {
      shards.push({
        objectId,
        firstSerial: serials[i]!,
        lastSerial: serials[i + 1]!,
        sha256: r.digests[shards.length]!,
      });
      objectId += 1 + r.gaps[shards.length]!;
    }
    return {
      version: 1,
      owner: r.owner,
      configurationId: r.configurationId,
      sequence: r.sequence,
      issuedAt: r.issuedAt,
      notBefore: r.window[0]!,
      notAfter: r.window[1]!,
      shards,
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
        maxManifestBytes: 1e5,
      })
    ).manifestContent;
    const [a, b] = base.shards as [Manifest["shards"][number], Manifest["shards"][number]];
    for (const bad of [
      { ...base, shards: [a, { ...b, firstSerial: a.lastSerial }] },
      { ...base, shards: [b, a] },
      { ...base, shards: [{ ...a, objectId: PivObject.manifest }] },
      { ...base, shards: [] },
      { ...base, notBefore: base.notAfter + 1 },
      { ...base, configurationId: new Uint8Array(15) },
      { ...base, version: 2 },
      { ...base, sequence: -1 },
    ]) {
      expect(() => encodeManifestPayload(bad)).toThrow(UsageError);
    }
  });

  it.each([
    ["an unknown key", (m: Map<number, unknown>) => m.set(8, 0), /unexpected key 8/],
    ["a missing key", (m: Map<number, unknown>) => m.delete(3), /missing key 3/],
    ["another version", (m: Map<number, unknown>) => m.set(0, 2), /version 2/],
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
    const byId = new Map(encoded.shards.map((s) => [s.objectId, s.bytes]));
    expect(encoded.shards.map((s) => s.objectId)).toEqual(
      encoded.shards.map((_, i) => PivObject.shardsFirst + i),
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

  it("detects any single changed byte anywhere in the signed manifest (every position)", async () => {
    const encoded = await encodeConfig(generatePlan(100), METADATA, alice.signer);
    const bytes = encoded.manifest;
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
  it.each([
    ["the default x5chain (leaf + CA)", "without-root"],
    ["the full 3-certificate x5chain", "full"],
  ] as const)(
    "stores 1,000 HSMs in ≤ 46 bytes per entry, manifest with %s included",
    async (_name, chain) => {
      const plan = generatePlan(1000);
      const encoded = await encodeConfig(plan, METADATA, alice.signer, { chain });
      const chainBytes = alice.chain.reduce((n, c) => n + c.length, 0);
      expect(chainBytes).toBeGreaterThan(1200);
      if (chain === "full") expect(encoded.manifest.length).toBeGreaterThan(chainBytes);
      expect(encoded.manifest.length).toBeLessThanOrEqual(MAX_PIV_OBJECT_BYTES);
      expect(encoded.totalBytes).toBeLessThanOrEqual(CARD_CAPACITY_BYTES);
      expect(encoded.totalBytes / plan.hsms.length).toBeLessThanOrEqual(46);
      const shardBytes = encoded.shards.reduce((n, s) => n + s.bytes.length, 0);
      expect(shardBytes / plan.hsms.length).toBeLessThanOrEqual(46);
    },
  );
});
