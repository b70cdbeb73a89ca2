/**
 * Properties: no input crashes the plan reader (it returns a plan or throws PlanInvalidError /
 * UsageError, nothing else), and every valid plan survives writing and reading back.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import YAML from "yaml";
import { type PlanFormat, parsePlan, planToJson, planToYaml } from "../../src/config/plan.js";
import { CSV_COLUMNS, csvSubnetName, planToCsv } from "../../src/config/plan-csv.js";
import type { HsmEntry, HsmInterface, NetworkPlan, Subnet } from "../../src/config/plan-model.js";
import { PlanInvalidError, UsageError } from "../../src/errors.js";

const FORMATS: readonly PlanFormat[] = ["yaml", "json", "csv"];
const RUNS = 300;

/** Parses, and fails the property on anything but a plan or a typed plan/usage error. */
function parseOrTypedError(input: string | Uint8Array, format: PlanFormat | "auto"): void {
  try {
    parsePlan(input, format, { owner: "ACME Bank" });
  } catch (error) {
    if (error instanceof PlanInvalidError) {
      expect(error.problems.length).toBeGreaterThan(0);
      for (const p of error.problems) {
        expect(typeof p.entry).toBe("string");
        expect(typeof p.field).toBe("string");
        expect(p.message.length).toBeGreaterThan(0);
        expect(p.message).not.toContain("\n");
      }
      return;
    }
    if (error instanceof UsageError) return;
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Hostile input

describe("parsePlan never crashes", () => {
  for (const format of [...FORMATS, "auto"] as const) {
    it(`on random text (${format})`, () => {
      fc.assert(
        fc.property(fc.string({ unit: "binary", maxLength: 300 }), (text) => parseOrTypedError(text, format)),
        { numRuns: RUNS },
      );
    });

    it(`on random bytes (${format})`, () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => parseOrTypedError(bytes, format)),
        { numRuns: RUNS },
      );
    });
  }

  it("on random JSON values (json, yaml)", () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (value) => {
        parseOrTypedError(JSON.stringify(value), "json");
        parseOrTypedError(YAML.stringify(value), "yaml");
      }),
      { numRuns: RUNS },
    );
  });

  it("on plans with random values in random places", () => {
    const base = {
      owner: "ACME Bank",
      subnets: [{ name: "m", cidr: "198.51.100.0/24", gateway: "198.51.100.1", dns: [], ntp: [] }],
      hsms: [
        { serial: "1", hostname: "a", interfaces: [{ name: "eth0", subnet: "m", ipv4: "198.51.100.11" }] },
      ],
    };
    const paths: (string | number)[][] = [
      ["owner"],
      ["subnets"],
      ["subnets", 0],
      ["subnets", 0, "name"],
      ["subnets", 0, "cidr"],
      ["subnets", 0, "gateway"],
      ["subnets", 0, "dns"],
      ["subnets", 0, "vlan"],
      ["subnets", 0, "mtu"],
      ["subnets", 0, "ipv6_cidr"],
      ["hsms"],
      ["hsms", 0],
      ["hsms", 0, "serial"],
      ["hsms", 0, "hostname"],
      ["hsms", 0, "interfaces"],
      ["hsms", 0, "interfaces", 0],
      ["hsms", 0, "interfaces", 0, "ipv4"],
      ["hsms", 0, "interfaces", 0, "ipv6"],
      ["hsms", 0, "subnet"],
    ];
    const value = fc.oneof(
      fc.jsonValue({ maxDepth: 2 }),
      fc.string({ unit: "binary", maxLength: 40 }),
      fc.constantFrom("198.51.100.0", "::", "fe80::1%eth0", "1.2.3.4/0", "2001:db8::/64", "-", "m", ""),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom(...paths), value), { maxLength: 4 }), (edits) => {
        const doc = structuredClone(base) as Record<string, unknown>;
        for (const [path, v] of edits) setPath(doc, path, v);
        parseOrTypedError(JSON.stringify(doc), "json");
        parseOrTypedError(YAML.stringify(doc), "yaml");
      }),
      { numRuns: RUNS },
    );
  });

  it("on CSV rows of random cells", () => {
    const cell = fc.oneof(
      fc.string({ unit: "binary", maxLength: 20 }),
      fc.constantFrom("198.51.100.11/24", "2001:db8::5/64", "198.51.100.1", "eth0", "1500", "120", "1", ""),
    );
    const header = fc.subarray([...CSV_COLUMNS, "extra"], { minLength: 1 });
    fc.assert(
      fc.property(header, fc.array(fc.array(cell, { maxLength: 13 }), { maxLength: 6 }), (columns, rows) => {
        const quote = (c: string) => `"${c.replaceAll('"', '""')}"`;
        const text = [columns.join(","), ...rows.map((r) => r.map(quote).join(","))].join("\n");
        parseOrTypedError(text, "csv");
      }),
      { numRuns: RUNS },
    );
  });
});

function setPath(doc: Record<string, unknown>, path: readonly (string | number)[], value: unknown): void {
  let node: unknown = doc;
  for (const key of path.slice(0, -1)) {
    if (typeof node !== "object" || node === null) return;
    node = (node as Record<string | number, unknown>)[key];
  }
  if (typeof node === "object" && node !== null)
    (node as Record<string | number, unknown>)[path.at(-1)!] = value;
}

// ---------------------------------------------------------------------------------------------
// Round trips

/** Documentation networks a generated plan draws its subnets from. */
const NETWORKS = [
  { v4: "198.51.100", v6: "2001:db8:120" },
  { v4: "203.0.113", v6: "2001:db8:130" },
  { v4: "192.0.2", v6: "2001:db8:140" },
] as const;

interface PlanShape {
  /** true: subnet names are the ones CSV derives, every subnet is used, every v6 subnet's hosts have IPv6 */
  readonly csv: boolean;
}

/** Valid plans: unique serials, hostnames and addresses, canonical text, subnets in first-use order. */
function validPlan({ csv }: PlanShape): fc.Arbitrary<NetworkPlan> {
  const owner = fc
    .string({ unit: "grapheme", minLength: 1, maxLength: 30 })
    .filter((s) => s.trim() === s && s.length > 0 && !/[\u0000-\u001f\u007f]/.test(s));
  const subnetSpec = fc.record({
    name: fc.stringMatching(/^[a-z][a-z0-9-]{0,12}$/),
    gateway: fc.boolean(),
    dns: fc.array(
      fc.oneof(
        fc.integer({ min: 1, max: 254 }).map((n) => `192.0.2.${n}`),
        fc.constant("2001:db8::53"),
      ),
      {
        maxLength: 2,
      },
    ),
    ntp: fc.array(
      fc.integer({ min: 1, max: 254 }).map((n) => `198.51.100.${n}`),
      { maxLength: 2 },
    ),
    vlan: fc.option(fc.integer({ min: 1, max: 4094 }), { nil: undefined }),
    mtu: fc.option(fc.integer({ min: 1280, max: 9216 }), { nil: undefined }),
    ipv6: fc.boolean(),
    ipv6Gateway: fc.constantFrom("none", "global", "link-local"),
  });
  const serial = fc.string({
    unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
    minLength: 1,
    maxLength: 32,
  });
  const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$/);

  return fc
    .record({
      owner,
      subnets: fc.uniqueArray(subnetSpec, { minLength: 1, maxLength: 3, selector: (s) => s.name }),
      count: fc.integer({ min: 1, max: 25 }),
    })
    .chain(({ owner, subnets, count }) =>
      fc
        .record({
          serials: fc.uniqueArray(serial, { minLength: count, maxLength: count }),
          labels: fc.array(label, { minLength: count, maxLength: count }),
          // per subnet: host numbers 2..254 (.1 is the gateway), shuffled
          hosts: fc.tuple(
            ...subnets.map(() =>
              fc.uniqueArray(fc.integer({ min: 2, max: 254 }), { minLength: count, maxLength: count }),
            ),
          ),
          // per HSM: which subnets it is on (CSV: all), and whether each interface has IPv6 / IPv4
          membership: fc.array(
            fc.array(fc.boolean(), { minLength: subnets.length, maxLength: subnets.length }),
            {
              minLength: count,
              maxLength: count,
            },
          ),
          families: fc.array(
            fc.array(fc.constantFrom("both", "v4", "v6"), {
              minLength: subnets.length,
              maxLength: subnets.length,
            }),
            { minLength: count, maxLength: count },
          ),
        })
        .map(({ serials, labels, hosts, membership, families }): NetworkPlan => {
          const model: Subnet[] = subnets.map((s, i) => {
            const net = NETWORKS[i]!;
            const name = csv ? csvSubnetName(`${net.v4}.0/24`) : s.name;
            return {
              name,
              cidr: `${net.v4}.0/24`,
              ...(s.gateway && { gateway: `${net.v4}.1` }),
              dns: s.dns,
              ntp: s.ntp,
              ...(s.vlan !== undefined && { vlan: s.vlan }),
              ...(s.mtu !== undefined && { mtu: s.mtu }),
              ...(s.ipv6 && { ipv6Cidr: `${net.v6}::/64` }),
              ...(s.ipv6 &&
                s.ipv6Gateway !== "none" && {
                  ipv6Gateway: s.ipv6Gateway === "global" ? `${net.v6}::1` : "fe80::1",
                }),
            };
          });
          const hsms: HsmEntry[] = serials.map((serialText, h) => {
            const interfaces: HsmInterface[] = [];
            subnets.forEach((s, i) => {
              if (!csv && !membership[h]![i] && !(i === 0 && !membership[h]!.includes(true))) return;
              const net = NETWORKS[i]!;
              const host = hosts[i]![h]!;
              // CSV rows always carry IPv4 (it names the subnet), and IPv6 wherever the subnet has it.
              const family = csv ? "both" : families[h]![i]!;
              const withV4 = family !== "v6" || !s.ipv6;
              const withV6 = s.ipv6 && family !== "v4";
              interfaces.push({
                name: `eth${interfaces.length}`,
                subnet: model[i]!.name,
                ...(withV4 && { ipv4: `${net.v4}.${host}` }),
                ...(withV6 && { ipv6: `${net.v6}::${host.toString(16)}` }),
              });
            });
            return { serial: serialText, hostname: `${labels[h]}-${h}`, interfaces };
          });
          return { owner, subnets: model, hsms };
        }),
    );
}

describe("valid plans round-trip", () => {
  it("through YAML", () => {
    fc.assert(
      fc.property(validPlan({ csv: false }), (plan) => {
        expect(parsePlan(planToYaml(plan), "yaml")).toEqual(plan);
      }),
      { numRuns: 150 },
    );
  });

  it("through JSON", () => {
    fc.assert(
      fc.property(validPlan({ csv: false }), (plan) => {
        expect(parsePlan(planToJson(plan), "json")).toEqual(plan);
      }),
      { numRuns: 150 },
    );
  });

  it("through CSV (with the subnet names CSV derives)", () => {
    fc.assert(
      fc.property(validPlan({ csv: true }), (plan) => {
        expect(parsePlan(planToCsv(plan), "csv", { owner: plan.owner })).toEqual(plan);
      }),
      { numRuns: 150 },
    );
  });

  it("YAML, JSON and CSV of one plan give the same model", () => {
    fc.assert(
      fc.property(validPlan({ csv: true }), (plan) => {
        const fromYaml = parsePlan(planToYaml(plan), "yaml");
        expect(parsePlan(planToJson(plan), "json")).toEqual(fromYaml);
        expect(parsePlan(planToCsv(plan), "csv", { owner: plan.owner })).toEqual(fromYaml);
      }),
      { numRuns: 100 },
    );
  });
});
