/**
 * Child process of the station benchmark (station.ts): a fresh Node process, like one
 * `hsm-onboard station write` invocation, so the first figures are cold (no JIT warm-up from other
 * benchmarks). Prints one JSON line.
 *
 *   node bench/station-child.js    → StationChildReport
 */
import { KeyObject } from "node:crypto";
import { encodeConfig } from "../src/config/encode-config.js";
import { parsePlan, planToJson, planToYaml } from "../src/config/plan.js";
import { createSoftwareSigner } from "../src/crypto/signer.js";
import { createPki, issueCardCertificate } from "../src/pki/issue.js";
import { generateEcKeyPair } from "../src/pki/keys.js";
import { BENCH_OWNER, benchPlan } from "./plans.js";

export interface StationSizeReport {
  readonly hsms: number;
  readonly jsonBytes: number;
  readonly yamlBytes: number;
  readonly shards: number;
  readonly manifestBytes: number;
  readonly totalBytes: number;
  /** CPU (all threads) in ms: first call in the process, then the best of the repetitions. */
  readonly jsonParseCold: number;
  readonly encodeSignCold: number;
  readonly yamlParseCold: number;
  readonly jsonParseWarm: number;
  readonly encodeSignWarm: number;
  readonly yamlParseWarm: number;
}

export interface StationChildReport {
  readonly sizes: readonly StationSizeReport[];
}

function cpuOf<T>(run: () => T): [T, number] {
  const before = process.cpuUsage();
  const value = run();
  const used = process.cpuUsage(before);
  return [value, (used.user + used.system) / 1000];
}

async function cpuOfAsync<T>(run: () => Promise<T>): Promise<[T, number]> {
  const before = process.cpuUsage();
  const value = await run();
  const used = process.cpuUsage(before);
  return [value, (used.user + used.system) / 1000];
}

const pki = await createPki({ owner: BENCH_OWNER });
const keys = await generateEcKeyPair("P-256");
const leaf = await issueCardCertificate({
  tokenCa: pki.tokenCa,
  publicKey: keys.publicKey,
  owner: BENCH_OWNER,
  officer: "Alice Example",
  slot: "9C",
});
const signer = createSoftwareSigner({
  privateKey: KeyObject.from(keys.privateKey),
  certificateChain: [leaf, pki.tokenCa.certificate, pki.root.certificate].map(
    (c) => new Uint8Array(c.rawData),
  ),
});
const metadata = {
  configurationId: new Uint8Array(16).fill(0x5a),
  sequence: 1,
  issuedAt: 1_800_000_000,
  notBefore: 1_800_000_000,
  notAfter: 1_800_000_000 + 14 * 86_400,
};
// 10,000 HSMs do not fit one card (docs/FORMATS.md): the limits are raised, the work is the same.
const raised = {
  cardCapacityBytes: Number.POSITIVE_INFINITY,
  maxManifestBytes: Number.POSITIVE_INFINITY,
};

const sizes: StationSizeReport[] = [];
for (const hsms of [10_000, 1_000]) {
  // Best of several: the small plan's figures are a few milliseconds, easily hit by other load.
  const repetitions = hsms > 1_000 ? 3 : 10;
  const plan = benchPlan(hsms);
  const json = planToJson(plan);
  const yaml = planToYaml(plan);
  // As `station write --plan FILE.json` does it: parse + validate, then encode, shard and sign.
  const [parsed, jsonParseCold] = cpuOf(() => parsePlan(json, "json"));
  const [encoded, encodeSignCold] = await cpuOfAsync(() => encodeConfig(parsed, metadata, signer, raised));
  const [, yamlParseCold] = cpuOf(() => parsePlan(yaml, "yaml"));
  const jsonWarm: number[] = [];
  const encodeWarm: number[] = [];
  const yamlWarm: number[] = [];
  for (let i = 0; i < repetitions; i++) {
    jsonWarm.push(cpuOf(() => parsePlan(json, "json"))[1]);
    encodeWarm.push((await cpuOfAsync(() => encodeConfig(parsed, metadata, signer, raised)))[1]);
    yamlWarm.push(cpuOf(() => parsePlan(yaml, "yaml"))[1]);
  }
  sizes.push({
    hsms,
    jsonBytes: Buffer.byteLength(json),
    yamlBytes: Buffer.byteLength(yaml),
    shards: encoded.shards.length,
    manifestBytes: encoded.manifest.length,
    totalBytes: encoded.totalBytes,
    jsonParseCold,
    encodeSignCold,
    yamlParseCold,
    jsonParseWarm: Math.min(...jsonWarm),
    encodeSignWarm: Math.min(...encodeWarm),
    yamlParseWarm: Math.min(...yamlWarm),
  });
}
process.stdout.write(`${JSON.stringify({ sizes } satisfies StationChildReport)}\n`);
