import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  addressFromHostPart,
  formatCidr,
  formatIpAddress,
  formatIpv4,
  formatIpv6,
  hostBits,
  hostPartBytes,
  type Network,
  parseCidr,
  parseIpv4,
  parseIpv6,
} from "../../src/config/address-codec.js";
import { encodeCbor } from "../../src/config/cose.js";
import type { HsmEntry, HsmInterface, Subnet } from "../../src/config/plan-model.js";
import {
  compareSerials,
  decodeShard,
  decodeShardEntry,
  encodeShard,
  networkStateDigest,
  planShards,
  type ShardContent,
  serialToCbor,
  shardDigest,
} from "../../src/config/shard.js";
import {
  CardFullError,
  IntegrityError,
  isOnboardError,
  MalformedError,
  NotForThisHsmError,
  PlanInvalidError,
} from "../../src/errors.js";
import { generatePlan, TEST_SUBNET } from "./signing-fixtures.js";

// Arbitrary plan slices ------------------------------------------------------------------------------

function networkOf(address: Uint8Array, prefixLength: number): Network {
  const host = hostBits(address, prefixLength);
  return { address: address.map((b, i) => b ^ host[i]!), prefixLength };
}

function hostIn(network: Network, random: Uint8Array): Uint8Array {
  const host = hostBits(random, network.prefixLength);
  return network.address.map((b, i) => b | host[i]!);
}

const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
const address = fc.oneof(bytes(4), bytes(16)).map(formatIpAddress);

interface SubnetSeed {
  readonly subnet: Subnet;
  readonly v4: Network | undefined;
  readonly v6: Network | undefined;
}

const subnetSeed = (name: string) =>
  fc
    .record({
      v4: fc.option(fc.record({ a: bytes(4), p: fc.integer({ min: 0, max: 32 }) }), { nil: undefined }),
      v6: fc.option(fc.record({ a: bytes(16), p: fc.integer({ min: 0, max: 128 }) }), { nil: undefined }),
      gw4: bytes(4),
      gw6: bytes(16),
      withGateways: fc.boolean(),
      dns: fc.array(address, { maxLength: 3 }),
      ntp: fc.array(address, { maxLength: 2 }),
      vlan: fc.option(fc.integer({ min: 1, max: 4094 }), { nil: undefined }),
      mtu: fc.option(fc.integer({ min: 68, max: 65535 }), { nil: undefined }),
    })
    .filter((r) => r.v4 !== undefined || r.v6 !== undefined)
    .map((r): SubnetSeed => {
      const v4 = r.v4 && networkOf(r.v4.a, r.v4.p);
      const v6 = r.v6 && networkOf(r.v6.a, r.v6.p);
      const subnet: { -readonly [K in keyof Subnet]: Subnet[K] } = { name, dns: r.dns, ntp: r.ntp };
      if (v4) subnet.cidr = formatCidr(v4);
      if (v4 && r.withGateways) subnet.gateway = formatIpv4(hostIn(v4, r.gw4));
      if (v6) subnet.ipv6Cidr = formatCidr(v6);
      if (v6 && r.withGateways) subnet.ipv6Gateway = formatIpv6(hostIn(v6, r.gw6));
      if (r.vlan !== undefined) subnet.vlan = r.vlan;
      if (r.mtu !== undefined) subnet.mtu = r.mtu;
      return { subnet, v4, v6 };
    });

const serial = fc.oneof(
  fc.integer({ min: 0, max: 99_999_999 }).map(String),
  fc.maxSafeNat().map(String),
  fc.constantFrom("0123", "9007199254740992", "12345678901234567890", "-1"),
  fc.stringMatching(/^[A-Za-z0-9-]{1,24}$/),
  fc.string({ minLength: 1, maxLength: 10 }),
);

const hostname = fc.oneof(
  fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/),
  fc.integer({ min: 0, max: 9999 }).map((n) => `hsm-fra1-a${String(n).padStart(4, "0")}`),
  fc.stringMatching(/^[0-9]{1,6}$/),
);

/** A shard's worth of subnets and HSMs, every address in its subnet. */
const shardContent: fc.Arbitrary<ShardContent> = fc
  .uniqueArray(fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/), { minLength: 1, maxLength: 4 })
  .chain((names) => fc.tuple(...names.map(subnetSeed)))
  .chain((seeds) =>
    fc
      .uniqueArray(
        fc.record({
          serial,
          hostname,
          interfaces: fc.uniqueArray(
            fc.record({
              name: fc.constantFrom("eth0", "eth1", "bond0", "mgmt"),
              subnet: fc.nat({ max: seeds.length - 1 }),
              r4: bytes(4),
              r6: bytes(16),
              which: fc.constantFrom("4", "6", "46"),
            }),
            { minLength: 1, maxLength: 3, selector: (i) => i.name },
          ),
        }),
        { minLength: 1, maxLength: 25, selector: (h) => h.serial },
      )
      .map((raw) => ({
        subnets: seeds.map((s) => s.subnet),
        hsms: raw.map(
          (h): HsmEntry => ({
            serial: h.serial,
            hostname: h.hostname,
            interfaces: h.interfaces.map((i): HsmInterface => {
              const seed = seeds[i.subnet]!;
              const itf: { -readonly [K in keyof HsmInterface]: HsmInterface[K] } = {
                name: i.name,
                subnet: seed.subnet.name,
              };
              const want4 = seed.v4 !== undefined && (i.which !== "6" || seed.v6 === undefined);
              const want6 = seed.v6 !== undefined && (i.which !== "4" || !want4);
              if (want4) itf.ipv4 = formatIpv4(hostIn(seed.v4!, i.r4));
              if (want6) itf.ipv6 = formatIpv6(hostIn(seed.v6!, i.r6));
              return itf;
            }),
          }),
        ),
      })),
  );

/** What decodeShard must return: entries in serial order, the subnets they use in first-use order. */
function normalized(content: ShardContent): ShardContent {
  const hsms = [...content.hsms].sort((a, b) => compareSerials(a.serial, b.serial));
  const used = [...new Set(hsms.flatMap((h) => h.interfaces.map((i) => i.subnet)))];
  return { subnets: used.map((name) => content.subnets.find((s) => s.name === name)!), hsms };
}

function refFor(shard: Uint8Array, content: ShardContent) {
  const { hsms } = normalized(content);
  return {
    objectId: 0x5fff20,
    firstSerial: hsms[0]!.serial,
    lastSerial: hsms[hsms.length - 1]!.serial,
    sha256: shardDigest(shard),
  };
}

// Tests -------------------------------------------------------------------------------------------

describe("shard encoding", () => {
  it("decode(encode(x)) = x, sorted, for any representable plan slice", () => {
    fc.assert(
      fc.property(shardContent, (content) => {
        expect(decodeShard(encodeShard(content))).toEqual(normalized(content));
      }),
      { numRuns: 300 },
    );
  });

  it("gives the same bytes whatever the order of HSMs and subnets", () => {
    fc.assert(
      fc.property(shardContent, fc.infiniteStream(fc.nat()), (content, random) => {
        const shuffle = <T>(xs: readonly T[]) =>
          xs
            .map((x) => [random.next().value, x] as const)
            .sort((a, b) => a[0] - b[0])
            .map(([, x]) => x);
        const again = encodeShard({ subnets: shuffle(content.subnets), hsms: shuffle(content.hsms) });
        expect(again).toEqual(encodeShard(content));
      }),
      { numRuns: 100 },
    );
  });

  it("has the agent find every entry, and notice any single changed byte", () => {
    fc.assert(
      fc.property(shardContent, fc.nat(), fc.integer({ min: 1, max: 255 }), (content, position, delta) => {
        const shard = encodeShard(content);
        const ref = refFor(shard, content);
        for (const hsm of content.hsms) {
          const config = decodeShardEntry(shard, ref, hsm.serial);
          expect(config.hsm).toEqual(hsm);
          expect(new Set(config.subnets.map((s) => s.name))).toEqual(
            new Set(hsm.interfaces.map((i) => i.subnet)),
          );
        }
        const changed = new Uint8Array(shard);
        changed[position % shard.length] = (changed[position % shard.length]! + delta) & 0xff;
        expect(() => decodeShardEntry(changed, ref, content.hsms[0]!.serial)).toThrow(IntegrityError);
      }),
      { numRuns: 200 },
    );
  });

  it("stores serials as integers when canonical decimals of ≤ 53 bits, else as text, in one total order", () => {
    expect(serialToCbor("1234567")).toBe(1234567);
    expect(serialToCbor("0")).toBe(0);
    expect(serialToCbor("4294967296")).toBe(4294967296n);
    expect(serialToCbor("9007199254740991")).toBe(9007199254740991n);
    for (const text of ["0123", "9007199254740992", "+1", "1e3", "12a", " 1"])
      expect(serialToCbor(text)).toBe(text);
    const sorted = ["10", "9", "A-1", "0123", "9007199254740992", "a", "B", "1"].sort(compareSerials);
    expect(sorted).toEqual(["1", "9", "10", "0123", "9007199254740992", "A-1", "B", "a"]);
  });

  it("densely encodes the shared values: one subnet, prefix and interface name per shard", () => {
    const plan = generatePlan(100);
    const shard = encodeShard(plan);
    expect(shard.length / 100).toBeLessThan(20);
    const text = Buffer.from(shard).toString("latin1");
    expect(text.split("hsm-fra1-a").length - 1).toBe(1);
    expect(text.split("eth0").length - 1).toBe(1);
    expect(text.split("hsm-mgmt").length - 1).toBe(1);
  });

  it("digests one HSM's configuration the same from the plan and from the card", () => {
    const plan = generatePlan(10);
    const shard = encodeShard(plan);
    const hsm = plan.hsms[3]!;
    const fromCard = decodeShardEntry(shard, refFor(shard, plan), hsm.serial);
    expect(networkStateDigest(fromCard)).toEqual(networkStateDigest({ hsm, subnets: plan.subnets }));
    const other = { hsm: { ...hsm, hostname: "other" }, subnets: plan.subnets };
    expect(networkStateDigest(other)).not.toEqual(networkStateDigest(fromCard));
  });
});

describe("addresses in shards", () => {
  it("accepts only canonical address and network text, so decoding gives back the same text", () => {
    expect(parseIpv4("198.51.100.7")).toEqual(new Uint8Array([198, 51, 100, 7]));
    for (const bad of [
      "198.51.100",
      "198.51.100.07",
      "256.1.1.1",
      "1.2.3.4 ",
      "0x7f.0.0.1",
      "1.2.3.4.5",
      "",
    ]) {
      expect(parseIpv4(bad)).toBeUndefined();
    }
    expect(formatIpv6(parseIpv6("2001:db8:120::11")!)).toBe("2001:db8:120::11");
    for (const bad of [
      "2001:DB8::1",
      "2001:0db8::1",
      "2001:db8:0:0:1:0:0:1",
      "fe80::1%eth0",
      "1.2.3.4",
      "::ffff:1.2.3.4",
    ]) {
      expect(parseIpv6(bad)).toBeUndefined();
    }
    expect(parseCidr("198.51.100.0/24", 4)).toBeDefined();
    for (const bad of [
      "198.51.100.1/24",
      "198.51.100.0/33",
      "198.51.100.0/024",
      "198.51.100.0",
      "2001:db8::/64",
    ]) {
      expect(parseCidr(bad, 4)).toBeUndefined();
    }
    expect(parseCidr("2001:db8::1/64", 6)).toBeUndefined();
  });

  it("stores an IPv6 host as its shortest host bytes and reads it back", () => {
    fc.assert(
      fc.property(bytes(16), fc.integer({ min: 0, max: 128 }), bytes(16), (a, prefix, r) => {
        const network = networkOf(a, prefix);
        const address = hostIn(network, r);
        const host = hostPartBytes(address, network);
        expect(host.length === 0 || host[0] !== 0).toBe(true);
        expect(addressFromHostPart(network, host)).toEqual(address);
      }),
    );
  });
});

describe("shard planning", () => {
  it("fills shards greedily in serial order, each within the object size, ranges disjoint", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 400 }),
        fc.integer({ min: 120, max: 3063 }),
        (count, maxBytes) => {
          const plan = generatePlan(count);
          const shards = planShards(plan.subnets, plan.hsms, maxBytes);
          const all = shards.flatMap((s) => {
            expect(s.bytes.length).toBeLessThanOrEqual(maxBytes);
            const { hsms } = decodeShard(s.bytes);
            expect([hsms[0]!.serial, hsms[hsms.length - 1]!.serial, hsms.length]).toEqual([
              s.firstSerial,
              s.lastSerial,
              s.entries,
            ]);
            return hsms;
          });
          expect(all).toEqual([...plan.hsms].sort((a, b) => compareSerials(a.serial, b.serial)));
          for (let i = 1; i < shards.length; i++) {
            expect(compareSerials(shards[i - 1]!.lastSerial, shards[i]!.firstSerial)).toBeLessThan(0);
            // greedy: the next entry would not have fitted
            const next = planShards(
              plan.subnets,
              [...decodeShard(shards[i - 1]!.bytes).hsms, decodeShard(shards[i]!.bytes).hsms[0]!],
              maxBytes,
            );
            expect(next.length).toBe(2);
          }
        },
      ),
      { numRuns: 30 },
    );
  });

  it("refuses an entry too big for any object", () => {
    const plan = generatePlan(3);
    expect(() => planShards(plan.subnets, plan.hsms, 60)).toThrow(CardFullError);
  });

  it("names every problem that keeps a plan from being encoded", () => {
    const hsms: HsmEntry[] = [
      { serial: "1", hostname: "a", interfaces: [{ name: "eth0", subnet: "nope", ipv4: "198.51.100.10" }] },
      {
        serial: "2",
        hostname: "b",
        interfaces: [{ name: "eth0", subnet: "hsm-mgmt", ipv4: "203.0.113.10" }],
      },
      {
        serial: "3",
        hostname: "c",
        interfaces: [{ name: "eth0", subnet: "hsm-mgmt", ipv4: "198.51.100.010" }],
      },
      { serial: "1", hostname: "d", interfaces: [{ name: "eth0", subnet: "hsm-mgmt" }] },
      { serial: "5", hostname: "e", interfaces: [{ name: "eth0", subnet: "hsm-mgmt", ipv6: "2001:db8::1" }] },
      { serial: "", hostname: "", interfaces: [] },
    ];
    try {
      encodeShard({
        subnets: [TEST_SUBNET, { ...TEST_SUBNET, name: "v6", cidr: undefined, ipv6Cidr: "2001:DB8::/64" }],
        hsms,
      });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(PlanInvalidError);
      const problems = (e as PlanInvalidError).problems.map((p) => `${p.entry}.${p.field}`);
      expect(problems).toEqual(
        expect.arrayContaining([
          "subnets[v6].ipv6_cidr",
          "hsms[0].interfaces[0].subnet",
          "hsms[1].interfaces[0].ipv4",
          "hsms[2].interfaces[0].ipv4",
          "hsms[3].interfaces[0]",
          "hsms[3].serial",
          "hsms[4].interfaces[0].ipv6",
          "hsms[5].serial",
          "hsms[5].hostname",
          "hsms[5].interfaces",
        ]),
      );
    }
  });
});

describe("shard decoding", () => {
  const net = new Uint8Array([198, 51, 100, 0]);
  const net6 = new Uint8Array(Buffer.from("20010db8000000000000000000000000", "hex"));
  function raw(
    change: {
      subnets?: unknown[];
      prefixes?: unknown[];
      names?: unknown[];
      entries?: unknown[];
      extra?: boolean;
    } = {},
  ) {
    const map = new Map<number, unknown>([
      [
        0,
        change.subnets ?? [
          new Map<number, unknown>([
            [0, "s"],
            [1, [net, 24]],
            [3, [net6, 64]],
          ]),
        ],
      ],
      [1, change.prefixes ?? ["hsm-"]],
      [2, change.names ?? ["eth0"]],
      [
        3,
        change.entries ?? [
          [1, 0, "1", [0, 0, 5]],
          [2, 0, "2", [0, 0, 6, new Uint8Array([0x11])]],
        ],
      ],
    ]);
    if (change.extra) map.set(4, 0);
    return encodeCbor(map);
  }

  it("reads a well-formed shard", () => {
    expect(decodeShard(raw()).hsms[1]).toEqual({
      serial: "2",
      hostname: "hsm-2",
      interfaces: [{ name: "eth0", subnet: "s", ipv4: "198.51.100.6", ipv6: "2001:db8::11" }],
    });
  });

  const sub = (...entries: [number, unknown][]) => [new Map<number, unknown>([[0, "s"], ...entries])];
  it.each([
    [
      "entries out of order",
      raw({
        entries: [
          [2, 0, "2", [0, 0, 6]],
          [1, 0, "1", [0, 0, 5]],
        ],
      }),
      /increasing serial order/,
    ],
    [
      "a duplicate serial",
      raw({
        entries: [
          [1, 0, "1", [0, 0, 5]],
          [1, 0, "2", [0, 0, 6]],
        ],
      }),
      /increasing serial order/,
    ],
    [
      "a decimal serial stored as text",
      raw({ entries: [["1", 0, "1", [0, 0, 5]]] }),
      /must be stored as an integer/,
    ],
    ["an unused table entry", raw({ prefixes: ["hsm-", "x"] }), /canonical form/],
    [
      "a hostname split off canonical",
      raw({ prefixes: ["hsm-1"], entries: [[1, 0, "", [0, 0, 5]]] }),
      /canonical form/,
    ],
    ["a non-digit hostname suffix", raw({ entries: [[1, 0, "a", [0, 0, 5]]] }), /must be digits/],
    ["an IPv4 host beyond the prefix", raw({ entries: [[1, 0, "1", [0, 0, 256]]] }), /IPv4 host/],
    [
      "an IPv6 host part with a leading zero byte",
      raw({ entries: [[1, 0, "1", [0, 0, null, new Uint8Array([0, 0x11])]]] }),
      /not shortest/,
    ],
    [
      "an IPv6 host part beyond the prefix",
      raw({ entries: [[1, 0, "1", [0, 0, null, new Uint8Array(9).fill(1)]]] }),
      /too large/,
    ],
    ["an interface without an address", raw({ entries: [[1, 0, "1", [0, 0, null]]] }), /no address/],
    ["a subnet index out of range", raw({ entries: [[1, 0, "1", [0, 1, 5]]] }), /subnet index/],
    ["an IPv4 address in an IPv6-only subnet", raw({ subnets: sub([3, [net6, 64]]) }), /without IPv4/],
    [
      "a network with host bits set",
      raw({ subnets: sub([1, [new Uint8Array([198, 51, 100, 1]), 24]]) }),
      /host bits set/,
    ],
    ["a subnet without a network", raw({ subnets: sub() }), /no network/],
    ["a VLAN out of range", raw({ subnets: sub([1, [net, 24]], [7, 4095]) }), /vlan/],
    ["an unknown subnet key", raw({ subnets: sub([1, [net, 24]], [9, 1]) }), /unexpected key 9/],
    ["an unknown shard key", raw({ extra: true }), /unexpected key 4/],
    [
      "subnets out of first-use order",
      raw({
        subnets: [
          new Map<number, unknown>([
            [0, "unused"],
            [1, [new Uint8Array(4), 8]],
          ]),
          ...sub([1, [net, 24]]),
        ],
        entries: [[1, 0, "1", [0, 1, 5]]],
      }),
      /canonical form/,
    ],
    ["an empty entry list", raw({ entries: [] }), /entries/],
  ])("refuses %s", (_name, bytes, reason) => {
    expect(() => decodeShard(bytes)).toThrow(MalformedError);
    expect(() => decodeShard(bytes)).toThrow(reason);
  });

  it("tells a serial outside the shard, and a shard that does not match its manifest entry", () => {
    const shard = raw();
    const ref = { objectId: 0x5fff21, firstSerial: "1", lastSerial: "2", sha256: shardDigest(shard) };
    expect(() => decodeShardEntry(shard, ref, "3")).toThrow(NotForThisHsmError);
    expect(() => decodeShardEntry(shard, { ...ref, lastSerial: "3" }, "1")).toThrow(/serial range differs/);
    expect(() => decodeShardEntry(shard, { ...ref, sha256: new Uint8Array(32) }, "1")).toThrow(
      /0x5FFF21: SHA-256 does not match/,
    );
  });

  it("never throws anything but typed errors on random or mutated bytes", () => {
    const valid = encodeShard(generatePlan(20));
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 400 }),
          fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { minLength: 1, maxLength: 4 }).map((edits) => {
            const b = new Uint8Array(valid);
            for (const [at, value] of edits) b[at % b.length] = value;
            return b;
          }),
        ),
        (input) => {
          try {
            decodeShard(input);
          } catch (e) {
            expect(isOnboardError(e), String(e)).toBe(true);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });
});
