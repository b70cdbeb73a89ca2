/**
 * Station (SPEC.md §9, third bullet): validate, encode and sign a 10,000-HSM plan in under 1 s of
 * CPU, O(N log N). Measured in a fresh child process (station-child.ts), like one CLI invocation.
 */
import { runChild } from "./child.js";
import { fixed, int, print, section, table } from "./report.js";
import type { StationChildReport, StationSizeReport } from "./station-child.js";

export interface StationResult {
  readonly tenThousand?: StationSizeReport;
  readonly oneThousand?: StationSizeReport;
  readonly error?: string;
}

export async function benchStation(): Promise<StationResult> {
  section("5. Station: parse + validate, encode + shard + sign, 10,000 HSMs (CPU, fresh process)");
  const child = await runChild<StationChildReport>("station-child.js", [], 90_000);
  if (!child.value) {
    print(`  failed: ${child.error}`);
    return { ...(child.error ? { error: child.error } : {}) };
  }
  const [tenThousand, oneThousand] = child.value.sizes;
  print("  encodeConfig with raised card limits (10,000 HSMs need ~200 KB: more than one card holds);");
  print(
    "  software P-256 signer (on a real station the card signs: + ~72 ms modeled card time, not host CPU).",
  );
  table(
    [
      "step (CPU ms, all threads)",
      ...child.value.sizes.flatMap((s) => [`${int(s.hsms)} cold`, `${int(s.hsms)} warm`]),
    ],
    [
      [
        "parse + validate JSON plan",
        ...child.value.sizes.flatMap((s) => [fixed(s.jsonParseCold), fixed(s.jsonParseWarm)]),
      ],
      [
        "encode + shard + sign",
        ...child.value.sizes.flatMap((s) => [fixed(s.encodeSignCold), fixed(s.encodeSignWarm)]),
      ],
      [
        "= JSON → signed configuration",
        ...child.value.sizes.flatMap((s) => [
          fixed(s.jsonParseCold + s.encodeSignCold),
          fixed(s.jsonParseWarm + s.encodeSignWarm),
        ]),
      ],
      [
        "parse + validate YAML plan (separately)",
        ...child.value.sizes.flatMap((s) => [fixed(s.yamlParseCold), fixed(s.yamlParseWarm)]),
      ],
    ],
  );
  for (const s of child.value.sizes) {
    print(
      `  ${int(s.hsms)} HSMs: JSON ${int(s.jsonBytes)} B, YAML ${int(s.yamlBytes)} B → ${s.shards} shards + ` +
        `${int(s.manifestBytes)}-byte manifest = ${int(s.totalBytes)} B`,
    );
  }
  if (tenThousand && oneThousand) {
    const per = (s: StationSizeReport) => (1000 * (s.jsonParseWarm + s.encodeSignWarm)) / s.hsms;
    print(
      `  scaling (warm, JSON → signed): ${fixed(per(oneThousand), 1)} µs/HSM at 1,000, ` +
        `${fixed(per(tenThousand), 1)} µs/HSM at 10,000 (O(N log N) would allow ×${fixed(Math.log(10_000) / Math.log(1_000), 2)})`,
    );
  }
  return { ...(tenThousand ? { tenThousand } : {}), ...(oneThousand ? { oneThousand } : {}) };
}
