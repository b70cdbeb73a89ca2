/**
 * Fuzzing every decoder of untrusted input the same way (SPEC.md §8: "malformed CBOR/COSE/DER/TLV"):
 * whatever bytes arrive, a decoder returns or throws an OnboardError — never another exception (a
 * TypeError, a RangeError from an allocation or from recursion, a cbor-x or asn1js error leaking
 * out), and never hangs (each call is timed).
 *
 * Inputs for each decoder: random bytes; genuine encodings (written by the project for this test)
 * with 1–6 mutations each (bit flips, boundary bytes such as 81/82/83/84/FF in length positions,
 * insertions, deletions, truncations, duplicated slices); and, for CBOR decoders, random CBOR of
 * the shapes our formats use. The card's side of the APDU conversation is fuzzed as a whole: a
 * genuine transcript of an agent's session, with mutated responses, replayed to the host.
 *
 * Existing property tests (test/config/*, test/apdu/*) check round trips and canonical forms of
 * single formats; this file only checks the one property above, uniformly.
 *
 * Runs per decoder: FUZZ_RUNS (default 120; expensive decoders take a fraction of it), so CI stays
 * within ~20 s; `npm run fuzz` (scripts/fuzz.mjs) runs this file with a large FUZZ_RUNS. A failure
 * prints fast-check's seed and path; FUZZ_SEED replays it.
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { loadDeviceIdentity } from "../../src/agent/device-identity.js";
import { decodeCommandApdu } from "../../src/apdu/command.js";
import { decodeResponseApdu } from "../../src/apdu/response.js";
import {
  completeHostHandshake,
  decodeAuthenticateData,
  decodeCertificateStore,
  p256PrivateKeyFromScalar,
  ScpHostChannel,
  ScpIntegrityError,
  ScpMalformedError,
  validateScpChain,
} from "../../src/apdu/scp11/index.js";
import { decodeTlv, decodeTlvs, decodeTlvTree, encodeTlv } from "../../src/apdu/tlv.js";
import { type CardState, MemoryCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { provisionScpKey } from "../../src/card-emulator/scp-provision.js";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { decodeCborStrict, encodeCbor } from "../../src/config/cbor.js";
import {
  coseSign1ToBeSigned,
  coseSignToBeSigned,
  leafPublicKey,
  verifyCoseSign,
  verifyCoseSign1,
} from "../../src/config/cose.js";
import { decodeManifestPayload, findShardFor, verifyManifest } from "../../src/config/manifest.js";
import { parsePlan, planToJson, planToYaml } from "../../src/config/plan.js";
import { planToCsv } from "../../src/config/plan-csv.js";
import {
  appendReceipt,
  decodeReceiptLog,
  decodeReceiptPayload,
  encodeReceiptLog,
  signReceipt,
  verifyReceipt,
} from "../../src/config/receipt.js";
import { decodeShard, decodeShardEntry, shardDigest } from "../../src/config/shard.js";
import { ecdsaDerToRaw } from "../../src/crypto/ecdsa.js";
import {
  CertificateValidationError,
  ExitCode,
  MalformedError as MalformedErrorClass,
  OnboardError,
} from "../../src/errors.js";
import {
  decodeCertificateObject,
  parseChuid,
  parsePivmanData,
  parsePivmanProtectedData,
} from "../../src/piv/objects.js";
import { crlNumberOf, parseCrl } from "../../src/pki/crl.js";
import { certificateParts, crlParts, decodeCrlNumber, decodeExtendedKeyUsage } from "../../src/pki/der.js";
import { readCrl } from "../../src/pki/path-validation.js";
import { VALIDATION_REQUIREMENTS } from "../../src/pki/profiles.js";
import { createScpVendorCa } from "../../src/pki/scp-certificates.js";
import { validateChain } from "../../src/pki/validate-chain.js";
import { SHARD_OBJECT_FIRST } from "../../src/secure-element/card-layout.js";
import { PivElement } from "../../src/secure-element/piv-element.js";
import { decodeCertificateList, verifyChallengeProof } from "../../src/secure-element/secure-element.js";
import type { ApduResponder } from "../../src/transport/apdu-responder.js";
import { InProcessTransport } from "../../src/transport/in-process.js";
import { createTestPki, EXAMPLES, initAgent, LAB_PLAN, PIN, tempDir } from "../agent/fixtures.js";
import { samsungA, scp11b, h as unhex } from "../apdu/scp11/vectors.js";
import { CardTemplate, openMetered } from "./support.js";

/** Base runs per decoder; `npm run fuzz` raises it. */
const RUNS = Math.max(1, Number(process.env.FUZZ_RUNS ?? "") || 120);
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
/** One decoder call longer than this is a hang. */
const HANG_MS = 2000;

// ---------------------------------------------------------------------------------------------
// Inputs

type Mutation =
  | { kind: "flip"; at: number; bit: number }
  | { kind: "set"; at: number; value: number }
  | { kind: "insert"; at: number; bytes: Uint8Array }
  | { kind: "delete"; at: number; length: number }
  | { kind: "truncate"; at: number }
  | { kind: "duplicate"; at: number; length: number };

/** Bytes that mean something in length and tag positions of BER, DER and CBOR heads. */
const BOUNDARY = [
  0x00, 0x01, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1f, 0x3f, 0x5f, 0x7f, 0x80, 0x81, 0x82, 0x83, 0x84, 0x9f, 0xbf,
  0xdf, 0xfb, 0xff,
];

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.nat(7) }),
  fc.record({
    kind: fc.constant("set" as const),
    at: fc.nat(),
    value: fc.oneof(fc.constantFrom(...BOUNDARY), fc.integer({ min: 0, max: 255 })),
  }),
  fc.record({
    kind: fc.constant("insert" as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
  }),
  fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), length: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant("duplicate" as const),
    at: fc.nat(),
    length: fc.integer({ min: 1, max: 64 }),
  }),
);

function mutate(seed: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  let b = seed.slice();
  for (const m of mutations) {
    const at = b.length === 0 ? 0 : m.at % b.length;
    switch (m.kind) {
      case "flip":
        if (b.length > 0) b[at] = b[at]! ^ (1 << m.bit);
        break;
      case "set":
        if (b.length > 0) b[at] = m.value;
        break;
      case "insert":
        b = Uint8Array.from([...b.subarray(0, at), ...m.bytes, ...b.subarray(at)]);
        break;
      case "delete":
        b = Uint8Array.from([...b.subarray(0, at), ...b.subarray(at + m.length)]);
        break;
      case "truncate":
        b = b.slice(0, at);
        break;
      case "duplicate":
        b = Uint8Array.from([
          ...b.subarray(0, at + m.length),
          ...b.subarray(at, at + m.length),
          ...b.subarray(at + m.length),
        ]);
        break;
    }
  }
  return b;
}

/** Random values of the CBOR shapes our formats use: small-int-keyed maps, arrays, bytes, text, integers. */
const cborish: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.integer({ min: -1000, max: 1_000_000 }),
    fc.constantFrom(0x5fff20, 0x5fffff, 2 ** 32, Number.MAX_SAFE_INTEGER),
    fc.uint8Array({ maxLength: 40 }),
    fc.string({ maxLength: 20 }),
    fc.constantFrom(true, false, null),
    fc.array(tie("value"), { maxLength: 6 }),
    fc
      .array(fc.tuple(fc.integer({ min: -40, max: 10 }), tie("value")), { maxLength: 6 })
      .map((entries) => new Map(entries)),
  ),
})).value;

function inputs(
  seeds: readonly Uint8Array[],
  options: { cbor?: boolean; maxRandom?: number } = {},
): fc.Arbitrary<Uint8Array> {
  const arbitraries: fc.WeightedArbitrary<Uint8Array>[] = [
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: options.maxRandom ?? 300 }) },
  ];
  if (seeds.length > 0) {
    arbitraries.push({
      weight: 5,
      arbitrary: fc
        .tuple(fc.constantFrom(...seeds), fc.array(mutation, { minLength: 1, maxLength: 6 }))
        .map(([seed, ms]) => mutate(seed, ms)),
    });
  }
  if (options.cbor) {
    arbitraries.push({
      weight: 2,
      arbitrary: cborish.map((v) => {
        try {
          return encodeCbor(v);
        } catch {
          return new Uint8Array(0);
        }
      }),
    });
  }
  return fc.oneof(...arbitraries);
}

// ---------------------------------------------------------------------------------------------
// The property

/**
 * Calls `decode`; only an OnboardError (with a documented exit code) may come out, in bounded time.
 * Resolves to true when `decode` accepted the input, false when it refused it.
 */
async function onlyTypedErrors(
  name: string,
  bytes: Uint8Array,
  decode: (b: Uint8Array) => unknown,
  errors?: readonly ErrorClass[],
): Promise<boolean> {
  const started = performance.now();
  let escaped: unknown;
  try {
    await decode(bytes);
  } catch (error) {
    escaped = error;
  }
  const elapsed = performance.now() - started;
  if (elapsed > HANG_MS) throw new Error(`${name}: ${elapsed.toFixed(0)} ms for one input (a hang)`);
  if (escaped !== undefined) {
    const error = escaped;
    if (!(error instanceof OnboardError)) {
      const e = error as Error;
      throw new Error(
        `${name}: ${e?.constructor?.name ?? typeof error} escaped for ${Buffer.from(bytes).toString("hex").slice(0, 400)}: ${e?.message}`,
        { cause: error },
      );
    }
    expect(Object.values(ExitCode)).toContain(error.exitCode);
    if (errors && !errors.some((type) => error instanceof type)) {
      throw new Error(
        `${name}: ${error.name} (${error.message}) is not one of ${errors.map((t) => t.name).join(", ")}`,
      );
    }
  }
  return escaped === undefined;
}

type ErrorClass = abstract new (...args: never[]) => OnboardError;

interface Target {
  readonly name: string;
  readonly input: () => fc.Arbitrary<Uint8Array>;
  readonly decode: (bytes: Uint8Array) => unknown;
  /** Share of RUNS for decoders that verify signatures or run a session (default 1). */
  readonly weight?: number;
  /** Inputs always tried first: regressions, each an input that once made a decoder leak. */
  readonly examples?: readonly Uint8Array[];
  /**
   * For decoders that verify a signature over what they decode: the only inputs they may accept
   * (the genuine signed objects). Every other input — each mutation of a signed certificate or CRL
   * that changes a byte — must be refused with a typed error.
   */
  readonly onlyAccepts?: () => readonly Uint8Array[];
  /** The typed errors this decoder documents; any other OnboardError is a failure too. */
  readonly errors?: readonly ErrorClass[];
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

// Regressions found by this file in the asn1js-based src/pki/der.ts and crl.ts (plain Error,
// RangeError and AsnSchemaValidationError escaping certificateParts, crlParts,
// decodeExtendedKeyUsage, decodeCrlNumber and crlNumberOf); docs/SECURITY.md lists them.

/** SEQUENCE { SEQUENCE { GeneralizedTime "ABC" } }: asn1js threw a plain Error from its time parser. */
const BAD_TIME_IN_SEQUENCE = Uint8Array.of(0x30, 0x07, 0x30, 0x05, 0x18, 0x03, 0x41, 0x42, 0x43);
/** BMPString of 3 bytes: asn1js threw a RangeError (DataView bounds) while decoding it. */
const BMP_STRING_OF_ODD_LENGTH = Uint8Array.of(0x1e, 0x03, 0x00, 0x00, 0x00);
/** A genuine CRL whose authorityKeyIdentifier SEQUENCE became a SET (one byte, 30 → 31). */
const CRL_WITH_SET_FOR_SEQUENCE = Uint8Array.from(
  Buffer.from(
    "3082010a308191020101300a06082a8648ce3d040303303131123010060355040a0c0941434d452042616e6b311b301906035504030c1241434d452042616e6b20546f6b656e204341170d3236313132373132343231315a170d3236313232373133343231315aa02f302d300a0603551d140403020101301f0603551d2304183116801489cca426da4e135ad59922faa6b74bc819fbeb7e300a06082a8648ce3d0403030368003065023100fd9ef7666e181e9a62bedf05470eff0fa72dede20f2a0932d145eae71b47b5fda3081fcf6d7b963299cfbfc676e8b49702302e7f87542f9a24483a00955b36f944ac811e5ce309226dc4f1d82979504f7e34787ed1eb433d9b3f99fb9488fa65868b",
    "hex",
  ),
);

// ---------------------------------------------------------------------------------------------
// Genuine material to mutate

const seeds = {
  responses: [] as Uint8Array[],
  tlv: [] as Uint8Array[],
  certificateObjects: [] as Uint8Array[],
  pivman: [] as Uint8Array[],
  certificates: [] as Uint8Array[],
  crls: [] as Uint8Array[],
  certificateLists: [] as Uint8Array[],
  manifests: [] as Uint8Array[],
  manifestPayloads: [] as Uint8Array[],
  shards: [] as Uint8Array[],
  receipts: [] as Uint8Array[],
  receiptPayloads: [] as Uint8Array[],
  receiptLogs: [] as Uint8Array[],
  signatures: [] as Uint8Array[],
  commands: [] as Uint8Array[],
  plans: { yaml: [] as Uint8Array[], json: [] as Uint8Array[], csv: [] as Uint8Array[] },
};
let root: Uint8Array;
let tokenCa: Uint8Array;
let crl: Uint8Array;
let cardTemplate: CardTemplate;
/** The agent's session with a genuine card: every command and its response. */
let transcript: { command: Uint8Array; response: Uint8Array }[] = [];
let atr: Uint8Array;
let base: { dir: string; cleanup: () => Promise<void> };
/** A virtual card's SCP certificate store (bare, as GET DATA BF21 returns it) and its vendor CA. */
const scpChain = { store: new Uint8Array(0), anchor: new Uint8Array(0) };
/** The fuzz card with that SCP11b key. */
let scpCardState: CardState;

/** The payload (third element) of a COSE message. */
function payloadOf(message: Uint8Array): Uint8Array {
  const { value } = decodeCborStrict(message, { what: "seed", maxBytes: 60_000, allowTopLevelTag: true });
  return (value as unknown[])[2] as Uint8Array;
}

/** An agent-like session: open, identity, CRL, challenge, PIN, manifest, shard, receipt written. */
async function agentSession(element: PivElement): Promise<void> {
  const identity = await element.identity();
  await element.readItem("crl");
  const challenge = new Uint8Array(32).fill(3);
  verifyChallengeProof(identity.cardAuthentication, challenge, await element.proveChallenge(challenge));
  await element.pinTriesLeft();
  await element.verifyPin(PIN);
  await element.readItem("manifest");
  await element.readItem("shard-0");
  await element.writeItem("receipt-0", encodeReceiptLog([new Uint8Array(8)]));
}

beforeAll(async () => {
  base = await tempDir("hsm-security-fuzz-");
  const testPki = await createTestPki(base.dir);
  crl = await testPki.crl(1);
  root = new Uint8Array(testPki.pki.root.certificate.rawData);
  tokenCa = new Uint8Array(testPki.pki.tokenCa.certificate.rawData);
  cardTemplate = await CardTemplate.personalise(testPki.pki.tokenCa, base.dir, "fuzz");
  await cardTemplate.write(LAB_PLAN, { crl, sequence: 5 });

  // The card's side: a transcript of a genuine agent session.
  const recording: typeof transcript = [];
  const element = await PivElement.open(
    new InProcessTransport({
      ...(() => {
        const card = cardTemplate.card();
        return {
          powerOn: () => card.powerOn(),
          powerOff: () => card.powerOff(),
          transmit: (command: Uint8Array) => {
            const response = card.transmit(command);
            recording.push({ command: command.slice(), response: response.slice() });
            return response;
          },
        } satisfies ApduResponder;
      })(),
    }),
  );
  try {
    await agentSession(element);
  } finally {
    await element.close();
  }
  transcript = recording;
  atr = cardTemplate.card().atr;
  seeds.responses = recording.map((r) => r.response);
  seeds.commands = recording.map((r) => r.command);
  seeds.tlv = recording.map((r) => r.response.subarray(0, r.response.length - 2)).filter((d) => d.length > 0);

  const reader = await openMetered(cardTemplate.card());
  try {
    for (const id of [0x5fc101, 0x5fc10a]) seeds.certificateObjects.push(await reader.session.getData(id));
    seeds.pivman.push(await reader.session.getData(0x5fff00));
    seeds.tlv.push(await reader.session.getData(0x5fc102)); // CHUID
    const identity = await reader.identity();
    seeds.certificates.push(identity.cardAuthentication, identity.signing, root, tokenCa);
    seeds.certificateLists.push((await reader.readItem("certificates"))!);
    await reader.verifyPin(PIN);
    seeds.pivman.push(await reader.session.getData(0x5fc109));
    const manifest = (await reader.readItem("manifest"))!;
    seeds.manifests.push(manifest);
    seeds.shards.push((await reader.readItem("shard-0"))!);
    const { manifest: content } = await verifyManifest(manifest, { validateChain: () => {} });
    seeds.manifestPayloads.push(payloadOf(manifest));
    expect(findShardFor(content, "1234567").objectId).toBe(SHARD_OBJECT_FIRST);
  } finally {
    await reader.close();
  }
  seeds.crls.push(crl, await testPki.crl(2, [{ serialNumber: "0102030405", revokedAt: new Date() }]));

  // Receipts signed by a device key, alone and in a receipt object.
  const { deviceDir } = await initAgent(base.dir, testPki, { name: "fuzz-device" });
  const device = await loadDeviceIdentity(deviceDir);
  seeds.certificates.push(device.certificate);
  const receipt = await signReceipt(
    {
      serial: "1234567",
      configurationId: new Uint8Array(16).fill(9),
      sequence: 5,
      stateDigest: new Uint8Array(32).fill(1),
      time: 1_800_000_000,
      outcome: 0,
    },
    device.signer,
  );
  await device.close();
  seeds.receipts.push(receipt);
  seeds.receiptPayloads.push(payloadOf(receipt));
  seeds.receiptLogs.push(encodeReceiptLog([receipt]), encodeReceiptLog([receipt, receipt]));
  seeds.signatures.push(
    Uint8Array.from(
      Buffer.from(
        "3044022011aa3c2b5d7a90b4f7e3c5a01d6c3f0b8e5d2a1c0f9e8d7c6b5a49382716051402207c1b2a39485f6e7d8c9baa0b1c2d3e4f5061728394a5b6c7d8e9f0a1b2c3d4e5",
        "hex",
      ),
    ),
  );

  // SCP11: a card's certificate store from its vendor CA, as the virtual card answers GET DATA BF21.
  const vendor = await createScpVendorCa("Fuzz Card Vendor");
  const store = new MemoryCardStateStore(cardTemplate.cardState);
  const scpCard = new VirtualPivCard({ store });
  const leaf = await provisionScpKey(scpCard, vendor);
  scpChain.store = new Uint8Array(leaf.rawData);
  scpChain.anchor = new Uint8Array(vendor.certificate.rawData);
  scpCardState = store.load()!;

  // Plans: the examples and the lab plan in every format.
  for (const name of await readdir(EXAMPLES)) {
    const bytes = new Uint8Array(await readFile(join(EXAMPLES, name)));
    if (name.endsWith(".yaml")) seeds.plans.yaml.push(bytes);
    if (name.endsWith(".json")) seeds.plans.json.push(bytes);
    if (name.endsWith(".csv")) seeds.plans.csv.push(bytes);
  }
  const text = (s: string) => new TextEncoder().encode(s);
  seeds.plans.yaml.push(text(planToYaml(LAB_PLAN)));
  seeds.plans.json.push(text(planToJson(LAB_PLAN)));
  seeds.plans.csv.push(text(planToCsv(LAB_PLAN)));
});
afterAll(async () => {
  await base?.cleanup();
});

// ---------------------------------------------------------------------------------------------
// Every decoder of untrusted input

const chainOptions = () => ({
  trustAnchor: root,
  crls: [crl],
  now: new Date(),
  ...VALIDATION_REQUIREMENTS.cardAuthentication,
});

// SCP11 (issue 11): the vectors of test/vectors/scp11 are the seeds.
const scpB = scp11b();
const scpAuthCommand = decodeCommandApdu(unhex(scpB.internal_authenticate_capdu));
const scpAnswer = decodeResponseApdu(unhex(scpB.internal_authenticate_rapdu)).data;
const scpKeys = {
  eSkOce: p256PrivateKeyFromScalar(
    unhex(scpB["eSK.OCE (Samsung OpenSCP-Java Scp11TestData.ESK_OCE_ECKA_P256)"]),
  ),
  pkSd: unhex(scpB["PK.SD"]),
};
const scpStore = Buffer.concat(
  samsungA()
    .transcript.slice(0, 3)
    .map((t) => decodeResponseApdu(unhex(t.response)).data),
);
/** The store in one BF21 template (Samsung's form). */
const scpChainWrapped = () => encodeTlv(0xbf21, scpChain.store);

/** A host channel in the vector's session after its first wrapped command (VERIFY). */
function scpChannelAfterVerify(): ScpHostChannel {
  const session = completeHostHandshake({ authData: scpAuthCommand.data, answer: scpAnswer, ...scpKeys });
  const channel = new ScpHostChannel(session);
  channel.wrap({ ...decodeCommandApdu(unhex(scpB.messages[0]!.plain_command)), le: undefined });
  return channel;
}

const TARGETS: Target[] = [
  // SCP11: the certificate store, the card's authenticate answer, the host's authenticate data (as
  // the card reads it), a wrapped answer.
  {
    name: "SCP certificate store, BF21 or bare (decodeCertificateStore)",
    input: () => inputs([new Uint8Array(scpStore), new Uint8Array(scpStore.subarray(4))], { maxRandom: 600 }),
    decode: decodeCertificateStore,
    errors: [ScpMalformedError],
  },
  {
    // The store as the host uses it: split, then validated to the vendor CA (signatures, names,
    // CA flags, validity, the leaf's P-256 key). Only the genuine store, bare or in BF21, passes.
    name: "SCP certificate chain (decodeCertificateStore + validateScpChain to the vendor CA)",
    input: () =>
      fc.oneof(
        { weight: 4, arbitrary: inputs([scpChain.store, scpChainWrapped()]) },
        // The leaf followed by the anchor (not leaf-last), or twice.
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            Buffer.concat([scpChain.store, scpChain.anchor]),
            Buffer.concat([scpChain.store, scpChain.store]),
          ),
        },
      ),
    decode: async (b) => validateScpChain(decodeCertificateStore(b), { anchors: [scpChain.anchor] }),
    onlyAccepts: () => [scpChain.store, scpChainWrapped()],
    errors: [ScpMalformedError, CertificateValidationError],
    weight: 0.5,
  },
  {
    name: "SCP11 authenticate answer (completeHostHandshake: point checks, receipt)",
    input: () => inputs([scpAnswer]),
    decode: (b) => completeHostHandshake({ authData: scpAuthCommand.data, answer: b, ...scpKeys }),
    onlyAccepts: () => [scpAnswer],
    errors: [ScpMalformedError, ScpIntegrityError],
  },
  {
    name: "SCP11 authenticate data, the card's side (decodeAuthenticateData)",
    input: () => inputs([scpAuthCommand.data]),
    decode: decodeAuthenticateData,
    errors: [ScpMalformedError],
  },
  {
    name: "SCP11 wrapped answer (ScpHostChannel.unwrap: R-MAC, padding)",
    input: () => inputs([unhex(scpB.messages[0]!.wrapped_response)]),
    // A bare error status (no data) passes unauthenticated by design; a mutated protected answer
    // never does (test/apdu/scp11/properties.test.ts flips every bit).
    decode: (b) => {
      const response = decodeResponseApdu(b);
      const unwrapped = scpChannelAfterVerify().unwrap(response);
      const sw = response.sw;
      if (sw === 0x9000 || sw >> 8 === 0x62 || sw >> 8 === 0x63) {
        // Accepted with a protected status: only the genuine answer can be (its R-MAC).
        expect(
          sameBytes(b, unhex(scpB.messages[0]!.wrapped_response)),
          "a changed protected answer passed",
        ).toBe(true);
      } else {
        expect(unwrapped.data.length, "an error status passed with data").toBe(0);
      }
    },
    // decodeResponseApdu's own refusal of fewer than 2 bytes is a BadResponseError (MalformedError).
    errors: [ScpIntegrityError, MalformedErrorClass],
  },
  // APDU layer: what a card sends back.
  {
    name: "response APDU (decodeResponseApdu)",
    input: () => inputs(seeds.responses),
    decode: decodeResponseApdu,
  },
  {
    name: "command APDU (decodeCommandApdu, the card's side)",
    input: () => inputs(seeds.commands),
    decode: decodeCommandApdu,
  },
  {
    name: "BER-TLV sequence (decodeTlvs)",
    input: () => inputs(seeds.tlv, { maxRandom: 600 }),
    decode: (b) => decodeTlvs(b),
  },
  {
    name: "BER-TLV single (decodeTlv 53)",
    input: () => inputs(seeds.tlv),
    decode: (b) => decodeTlv(b, 0x53),
  },
  {
    name: "BER-TLV tree (decodeTlvTree)",
    input: () => inputs(seeds.tlv, { maxRandom: 600 }),
    decode: (b) => decodeTlvTree(b),
  },
  // PIV objects.
  {
    name: "certificate object (decodeCertificateObject)",
    input: () => inputs(seeds.certificateObjects),
    decode: decodeCertificateObject,
  },
  { name: "ADMIN DATA (parsePivmanData)", input: () => inputs(seeds.pivman), decode: parsePivmanData },
  {
    name: "PRINTED (parsePivmanProtectedData)",
    input: () => inputs(seeds.pivman),
    decode: parsePivmanProtectedData,
  },
  { name: "CHUID (parseChuid)", input: () => inputs(seeds.tlv), decode: parseChuid },
  {
    name: "certificates item (decodeCertificateList)",
    input: () => inputs(seeds.certificateLists),
    decode: decodeCertificateList,
  },
  {
    name: "card signature DER (ecdsaDerToRaw)",
    input: () => inputs(seeds.signatures),
    decode: (b) => ecdsaDerToRaw(b, "ES256"),
  },
  // CBOR and COSE.
  {
    name: "strict CBOR (decodeCborStrict)",
    input: () => inputs([...seeds.shards, ...seeds.manifestPayloads], { cbor: true }),
    decode: (b) => decodeCborStrict(b, { what: "fuzz", maxBytes: 60_000, allowTopLevelTag: true }),
  },
  {
    name: "shard (decodeShard)",
    input: () => inputs(seeds.shards, { cbor: true }),
    decode: (b) => decodeShard(b),
  },
  {
    name: "shard entry behind a matching hash (decodeShardEntry)",
    input: () => inputs(seeds.shards, { cbor: true }),
    decode: (b) =>
      decodeShardEntry(
        b,
        {
          objectId: SHARD_OBJECT_FIRST,
          firstSerial: "1234567",
          lastSerial: "1234568",
          sha256: shardDigest(b),
        },
        "1234567",
      ),
  },
  {
    name: "manifest payload (decodeManifestPayload)",
    input: () => inputs(seeds.manifestPayloads, { cbor: true }),
    decode: decodeManifestPayload,
  },
  {
    name: "manifest (verifyManifest, COSE_Sign)",
    input: () => inputs(seeds.manifests, { cbor: true, maxRandom: 200 }),
    decode: (b) => verifyManifest(b, { validateChain: () => {} }),
    weight: 0.5,
  },
  {
    name: "COSE_Sign (verifyCoseSign, coseSignToBeSigned)",
    input: () => inputs(seeds.manifests, { cbor: true }),
    decode: async (b) => {
      coseSignToBeSigned(b);
      await verifyCoseSign(b, { keyFor: (s) => leafPublicKey(s.x5chain) });
    },
    weight: 0.5,
  },
  {
    name: "COSE_Sign1 (verifyCoseSign1, coseSign1ToBeSigned)",
    input: () => inputs(seeds.receipts, { cbor: true }),
    decode: async (b) => {
      coseSign1ToBeSigned(b);
      await verifyCoseSign1(b, { keyFor: (s) => leafPublicKey(s.x5chain) });
    },
    weight: 0.5,
  },
  {
    name: "receipt payload (decodeReceiptPayload)",
    input: () => inputs(seeds.receiptPayloads, { cbor: true }),
    decode: decodeReceiptPayload,
  },
  {
    name: "receipt (verifyReceipt)",
    input: () => inputs(seeds.receipts, { cbor: true }),
    decode: (b) => verifyReceipt(b, { validateDevice: () => {} }),
    weight: 0.5,
  },
  {
    name: "receipt object (decodeReceiptLog)",
    input: () => inputs(seeds.receiptLogs, { cbor: true }),
    decode: decodeReceiptLog,
  },
  {
    name: "receipt object, appended to (appendReceipt)",
    input: () => inputs(seeds.receiptLogs, { cbor: true }),
    decode: (b) => appendReceipt(b, seeds.receipts[0]!, 3063),
  },
  // DER: certificates and CRLs.
  {
    name: "certificate (certificateParts)",
    input: () => inputs(seeds.certificates, { maxRandom: 600 }),
    decode: certificateParts,
    examples: [BAD_TIME_IN_SEQUENCE],
  },
  {
    name: "card certificate chain (validateChain, mutated leaf)",
    input: () => inputs(seeds.certificates.slice(0, 2)),
    decode: (b) => validateChain({ ...chainOptions(), leaf: b, intermediates: [tokenCa] }),
    weight: 0.5,
    onlyAccepts: () => seeds.certificates.slice(0, 2),
  },
  {
    name: "card certificate chain (validateChain, mutated intermediate)",
    input: () => inputs([tokenCa]),
    decode: (b) => validateChain({ ...chainOptions(), leaf: seeds.certificates[0]!, intermediates: [b] }),
    weight: 0.5,
    onlyAccepts: () => [tokenCa],
  },
  {
    name: "challenge proof against a mutated certificate (verifyChallengeProof)",
    input: () => inputs(seeds.certificates.slice(0, 1)),
    decode: (b) =>
      verifyChallengeProof(b, new Uint8Array(32), {
        algorithm: "ES256",
        signature: new Uint8Array(64).fill(1),
      }),
    // No certificate makes a signature of 0x01 bytes verify.
    onlyAccepts: () => [],
  },
  { name: "CRL (parseCrl)", input: () => inputs(seeds.crls, { maxRandom: 600 }), decode: (b) => parseCrl(b) },
  {
    name: "CRL, the agent's reader (readCrl, its issuer and CRL number)",
    input: () => inputs(seeds.crls, { maxRandom: 600 }),
    decode: (b) => {
      const view = readCrl(b);
      return [view.issuer, view.crlNumber, view.nextUpdate];
    },
    examples: [CRL_WITH_SET_FOR_SEQUENCE],
  },
  {
    name: "CRL number of a parsed CRL (crlNumberOf)",
    input: () => inputs(seeds.crls, { maxRandom: 600 }),
    decode: (b) => crlNumberOf(parseCrl(b)),
    examples: [CRL_WITH_SET_FOR_SEQUENCE],
  },
  {
    name: "CRL (crlParts)",
    input: () => inputs(seeds.crls),
    decode: crlParts,
    examples: [BAD_TIME_IN_SEQUENCE],
  },
  {
    name: "CRL in a chain (validateChain, mutated CRL)",
    input: () => inputs(seeds.crls),
    decode: (b) =>
      validateChain({ ...chainOptions(), crls: [b], leaf: seeds.certificates[0]!, intermediates: [tokenCa] }),
    weight: 0.5,
    onlyAccepts: () => seeds.crls,
  },
  {
    name: "extension values (decodeExtendedKeyUsage, decodeCrlNumber)",
    input: () => inputs([]),
    decode: (b) => [decodeExtendedKeyUsage(b), decodeCrlNumber(b)],
    examples: [BMP_STRING_OF_ODD_LENGTH],
  },
  // Plans (the station's input from IPAM exports or an officer).
  {
    name: "plan, YAML (parsePlan)",
    input: () => inputs(seeds.plans.yaml, { maxRandom: 400 }),
    decode: (b) => parsePlan(b, "yaml"),
  },
  {
    name: "plan, JSON (parsePlan)",
    input: () => inputs(seeds.plans.json, { maxRandom: 400 }),
    decode: (b) => parsePlan(b, "json"),
  },
  {
    name: "plan, CSV (parsePlan)",
    input: () => inputs(seeds.plans.csv, { maxRandom: 400 }),
    decode: (b) => parsePlan(b, "csv", { owner: "ACME Bank" }),
  },
  {
    name: "plan, any format (parsePlan auto)",
    input: () => inputs([...seeds.plans.yaml, ...seeds.plans.json, ...seeds.plans.csv]),
    decode: (b) => parsePlan(b),
  },
];

describe(`fuzzing every decoder of untrusted input (${RUNS} runs each${SEED === undefined ? "" : `, seed ${SEED}`})`, () => {
  const runTarget = (target: Target) =>
    fc.assert(
      fc.asyncProperty(target.input(), async (bytes) => {
        const accepted = await onlyTypedErrors(target.name, bytes, target.decode, target.errors);
        if (accepted && target.onlyAccepts) {
          const genuine = target.onlyAccepts().some((g) => sameBytes(g, bytes));
          expect(genuine, `${target.name} accepted ${Buffer.from(bytes).toString("hex").slice(0, 400)}`).toBe(
            true,
          );
        }
      }),
      {
        numRuns: Math.max(1, Math.round(RUNS * (target.weight ?? 1))),
        examples: (target.examples ?? []).map((e) => [e] as [Uint8Array]),
        ...(SEED === undefined ? {} : { seed: SEED }),
      },
    );
  for (const target of TARGETS) {
    const claim = target.onlyAccepts ? "every changed input refused, only typed errors" : "only typed errors";
    test(`${target.name}: ${claim}, no hang`, () => runTarget(target));
  }

  // The genuine signed objects pass, so "refused" above is the signature check at work, not a
  // validator that refuses everything.
  test("the genuine certificates and CRLs the signed targets mutate are accepted", async () => {
    for (const target of TARGETS.filter((t) => t.onlyAccepts && t.onlyAccepts().length > 0)) {
      const accepted: boolean[] = [];
      for (const genuine of target.onlyAccepts!())
        accepted.push(await onlyTypedErrors(target.name, genuine, target.decode));
      expect(accepted.some(Boolean), target.name).toBe(true);
    }
  });

  test("the card's answers inside SCP11 (a live card, the handshake and wrapped answers mutated): only typed errors, bounded, a changed answer passes only in clear before the handshake or as a bare error status", async () => {
    // The session's keys are fresh each time, so the card is live (not a transcript) and the
    // mutation is applied to its n-th answer: the store, the authenticate answer, or a wrapped one.
    const vendor = { anchors: [scpChain.anchor] };
    const change = fc.tuple(
      fc.nat({ max: 40 }),
      fc.oneof(fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.constant("random" as const)),
      fc.uint8Array({ maxLength: 64 }),
    );
    await fc.assert(
      fc.asyncProperty(change, async ([at, how, random]) => {
        const store = new MemoryCardStateStore(scpCardState);
        let position = 0;
        let changed: { genuine: Uint8Array; sent: Uint8Array } | undefined;
        /** Position of the authenticate command: the answers before it travel in clear. */
        let authAt: number | undefined;
        const card = new VirtualPivCard({
          store,
          intercept: (command, answer) => {
            if (command[1] === 0x88 && authAt === undefined) authAt = position;
            const r = answer(command);
            if (position++ !== at) return r;
            const sent = how === "random" ? random : mutate(r, how);
            changed = { genuine: r, sent };
            return sent;
          },
        });
        let accepted = false;
        await onlyTypedErrors("agent session in SCP11", new Uint8Array(0), async () => {
          const element = await PivElement.open(new InProcessTransport(card), {
            channel: { scp: { variant: "b", kvn: 1, trust: vendor }, allowPlaintext: false },
          });
          try {
            await agentSession(element);
            accepted = true;
          } finally {
            await element.close();
          }
        });
        // A whole session that succeeded with a changed answer: only an answer in clear before
        // the handshake (a SELECT's FCI, which the host does not use; a changed certificate store
        // fails its signatures), or a bare error status (GP gives errors no R-MAC: an optional
        // read such as GET SERIAL then counts as unsupported). Nothing else passes changed.
        if (accepted && changed && !sameBytes(changed.genuine, changed.sent)) {
          expect(authAt, "the handshake happened").toBeDefined();
          const sent = changed.sent;
          const bareError =
            sent.length === 2 && sent[0] !== 0x90 && sent[0] !== 0x61 && sent[0] !== 0x62 && sent[0] !== 0x63;
          if (!bareError)
            expect(at, `answer ${at} changed and the session still succeeded`).toBeLessThan(authAt!);
        }
        expect(position).toBeLessThanOrEqual(transcript.length + 220);
      }),
      { numRuns: Math.max(1, Math.round(RUNS / 2)), ...(SEED === undefined ? {} : { seed: SEED }) },
    );
  });

  test("the card's answers in a whole session (a genuine transcript, responses mutated): only typed errors, bounded", async () => {
    const responses = fc.array(
      fc.tuple(
        fc.nat(),
        fc.oneof(fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.constant("random" as const)),
        fc.uint8Array({ maxLength: 64 }),
      ),
      { minLength: 1, maxLength: 3 },
    );
    await fc.assert(
      fc.asyncProperty(responses, async (changes) => {
        const changed = new Map<number, Uint8Array>();
        for (const [index, how, random] of changes) {
          const at = index % transcript.length;
          const genuine = transcript[at]!.response;
          changed.set(at, how === "random" ? random : mutate(genuine, how));
        }
        // The card answers by position in the session, as the genuine card did, with the changes.
        let position = 0;
        const responder: ApduResponder = {
          powerOn: () => atr,
          powerOff: () => {},
          transmit: () => {
            const at = position++;
            return (changed.get(at) ?? transcript[at]?.response ?? Uint8Array.of(0x6a, 0x82)).slice();
          },
        };
        await onlyTypedErrors("agent session", new Uint8Array(0), async () => {
          const element = await PivElement.open(new InProcessTransport(responder));
          try {
            await agentSession(element);
          } finally {
            await element.close();
          }
        });
        expect(position).toBeLessThanOrEqual(transcript.length + 200);
      }),
      { numRuns: Math.max(1, Math.round(RUNS)), ...(SEED === undefined ? {} : { seed: SEED }) },
    );
  });
});
