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
import { cborStringLengthFor, decodeCborStrict, encodeCbor } from "../../src/config/cbor.js";
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
  UsageError,
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
    size: shard.length,
  };
}

/** The padding item of a shard: its decoded value (key 4), and where its encoding starts. */
function paddingOf(shard: Uint8Array): { value: unknown; start: number } {
  const map = decodeCborStrict(shard, { what: "t", maxBytes: 1e6 }).value as Map<number, unknown>;
  const value = map.get(4);
  const size = encodeCbor(value).length;
  return { value, start: shard.length - size };
}

/** A content plus a shard size at or above its smallest encoding (up to 300 bytes of padding). */
const paddedShard = fc
  .tuple(shardContent, fc.nat({ max: 300 }))
  .map(([content, extra]) => ({ content, size: encodeShard(content).length + extra }));

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

  it("decode(encode(x)) = x at any shard size, padded to exactly that size", () => {
    fc.assert(
      fc.property(paddedShard, ({ content, size }) => {
        const shard = encodeShard(content, { size });
        expect(shard.length).toBe(size);
        expect(decodeShard(shard, { size })).toEqual(normalized(content));
        expect(decodeShard(shard)).toEqual(normalized(content));
      }),
      { numRuns: 300 },
    );
  });

  it("pads with zero bytes, across every CBOR head-length boundary, to the exact size", () => {
    // The padding item is a byte string of zeros; where no byte string has the size left (25 and
    // 258 bytes: the head grows with the content), a one-element array holding one.
    const content = generatePlan(3);
    const smallest = encodeShard(content);
    expect(smallest.subarray(-2)).toEqual(new Uint8Array([0x04, 0x40])); // key 4, empty padding
    for (let size = smallest.length; size <= smallest.length + 600; size++) {
      const shard = encodeShard(content, { size });
      expect(shard.length).toBe(size);
      expect(shard.subarray(0, smallest.length - 1)).toEqual(smallest.subarray(0, -1));
      const { value, start } = paddingOf(shard);
      const itemSize = size - start;
      expect(itemSize).toBe(size - smallest.length + 1);
      if (cborStringLengthFor(itemSize) === undefined) {
        expect(value).toEqual([new Uint8Array(cborStringLengthFor(itemSize - 1)!)]);
      } else {
        expect(value).toEqual(new Uint8Array(cborStringLengthFor(itemSize)!));
      }
      expect(decodeShard(shard, { size }).hsms).toHaveLength(3);
    }
    expect(() => encodeShard(content, { size: smallest.length - 1 })).toThrow(CardFullError);
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
      fc.property(
        paddedShard,
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        ({ content, size }, position, delta) => {
          const shard = encodeShard(content, { size });
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
        },
      ),
      { numRuns: 200 },
    );
  });

  it("notices a changed byte in the padding even without the manifest's hash (every position)", () => {
    const plan = generatePlan(20);
    const shard = planShards(plan.subnets, plan.hsms, 3063)[0]!.bytes;
    expect(shard.length).toBe(3063);
    const { start } = paddingOf(shard);
    expect(3063 - start).toBeGreaterThan(2000);
    const deltas = fc.sample(fc.integer({ min: 1, max: 255 }), { numRuns: shard.length, seed: 7 });
    for (let at = start; at < shard.length; at++) {
      const changed = new Uint8Array(shard);
      changed[at] = (changed[at]! + deltas[at]!) & 0xff;
      expect(() => decodeShard(changed), `byte ${at}`).toThrow(MalformedError);
    }
  });

  it("refuses a shard of another length than the manifest declares, before hashing it", () => {
    const plan = generatePlan(5);
    const shard = encodeShard(plan, { size: 400 });
    const ref = refFor(shard, plan);
    expect(decodeShardEntry(shard, ref, plan.hsms[0]!.serial).hsm).toEqual(plan.hsms[0]);
    const shorter = encodeShard(plan, { size: 399 });
    expect(() => decodeShardEntry(shorter, { ...ref, sha256: shardDigest(shorter) }, "1")).toThrow(
      /399 bytes; the signed manifest declares 400-byte shards/,
    );
    expect(() => decodeShardEntry(shorter, { ...ref, sha256: shardDigest(shorter) }, "1")).toThrow(
      IntegrityError,
    );
    expect(() => decodeShard(shorter, { size: 400 })).toThrow(/399 bytes, expected exactly 400/);
    for (const truncated of [shard.subarray(0, 399), new Uint8Array([...shard, 0])]) {
      expect(() => decodeShard(truncated)).toThrow(MalformedError);
    }
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
    // whatever the size the shard was padded to on the card
    for (const size of [shard.length + 1, 1000, 3063]) {
      const padded = encodeShard(plan, { size });
      expect(networkStateDigest(decodeShardEntry(padded, refFor(padded, plan), hsm.serial))).toEqual(
        networkStateDigest(fromCard),
      );
    }
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
  it("fills shards greedily in serial order, each padded to exactly the shard size, ranges disjoint", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 400 }),
        fc.integer({ min: 120, max: 3063 }),
        (count, maxBytes) => {
          const plan = generatePlan(count);
          const shards = planShards(plan.subnets, plan.hsms, maxBytes);
          const all = shards.flatMap((s) => {
            expect(s.bytes.length).toBe(maxBytes);
            const { hsms } = decodeShard(s.bytes, { size: maxBytes });
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

  it("refuses an entry too big for any object, and a shard size that is not one", () => {
    const plan = generatePlan(3);
    expect(() => planShards(plan.subnets, plan.hsms, 60)).toThrow(CardFullError);
    for (const bad of [0, 1.5, Number.POSITIVE_INFINITY, 60_000]) {
      expect(() => planShards(plan.subnets, plan.hsms, bad)).toThrow(UsageError);
    }
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
      padding?: unknown;
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
    if (change.padding !== null) map.set(4, change.padding ?? new Uint8Array(0));
    if (change.extra) map.set(5, 0);
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
    ["an unknown shard key", raw({ extra: true }), /unexpected key 5/],
    ["no padding", raw({ padding: null }), /missing key 4/],
    ["padding that is not zero", raw({ padding: new Uint8Array([0, 0, 1]) }), /padding bytes must be zero/],
    ["padding of another type", raw({ padding: 0 }), /padding: expected a byte string/],
    ["padding as text", raw({ padding: "\0" }), /padding: expected a byte string/],
    ["padding in an array of two", raw({ padding: [new Uint8Array(1), new Uint8Array(1)] }), /padding/],
    [
      "padding wrapped in an array where a byte string fits",
      raw({ padding: [new Uint8Array(3)] }),
      /canonical/,
    ],
    ["padding that is not zero, wrapped", raw({ padding: [new Uint8Array([1])] }), /must be zero/],
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

  it("reads the padding in either form, as long as it is the canonical one", () => {
    const base = raw().length - 1; // without the padding item
    // an array-wrapped padding where the padding item must take 25 bytes: [h'00' × 23]
    const wrapped = raw({ padding: [new Uint8Array(23)] });
    expect(wrapped.length).toBe(base + 25);
    expect(decodeShard(wrapped, { size: base + 25 }).hsms).toHaveLength(2);
    expect(() => decodeShard(raw({ padding: new Uint8Array(24) }))).not.toThrow(); // 26 bytes
    expect(() => decodeShard(raw({ padding: new Uint8Array(23) }))).not.toThrow(); // 24 bytes
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
    const valid = encodeShard(generatePlan(20), { size: 500 });
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

// The bounded own-entry decoder against the full decoder ----------------------------------------------

/** What decodeShardEntry must do: decodeShard the whole object, then pick the entry (the reference). */
function fullDecodeEntry(shard: Uint8Array, ref: ReturnType<typeof refFor>, serial: string) {
  const { hsms, subnets } = decodeShard(shard, { what: "shard 0x5FFF20" });
  if (hsms[0]!.serial !== ref.firstSerial || hsms[hsms.length - 1]!.serial !== ref.lastSerial)
    throw new MalformedError("serial range differs from the signed manifest");
  const hsm = hsms.find((h) => h.serial === serial);
  if (hsm === undefined) throw new NotForThisHsmError(`serial ${serial} is not in this configuration`);
  const used = new Set(hsm.interfaces.map((i) => i.subnet));
  return { hsm, subnets: subnets.filter((s) => used.has(s.name)) };
}

/** The outcome of a decode: its value, or the class of the typed error it threw. */
function outcome(decode: () => unknown): unknown {
  try {
    return { ok: decode() };
  } catch (e) {
    if (!isOnboardError(e)) throw e;
    return { error: (e as Error).constructor.name };
  }
}

/** Bytes decoders often trip on: heads of each major type, null, digits, small integers. */
const interestingByte = fc.oneof(
  fc.integer({ min: 0, max: 255 }),
  fc.constantFrom(0x00, 0x01, 0x02, 0x03, 0x04, 0x17, 0x18, 0x19, 0x20, 0x30, 0x39, 0x40, 0x41, 0x44),
  fc.constantFrom(0x50, 0x60, 0x61, 0x80, 0x81, 0x83, 0x84, 0x85, 0xa0, 0xa5, 0xf4, 0xf6, 0xf7),
);

describe("bounded own-entry decoding (decodeShardEntry) agrees with the full decoder", () => {
  it("returns what decodeShard holds for every entry of any valid padded shard, and the same refusal for absent serials", () => {
    fc.assert(
      fc.property(paddedShard, serial, ({ content, size }, other) => {
        const shard = encodeShard(content, { size });
        const ref = refFor(shard, content);
        for (const s of [...content.hsms.map((h) => h.serial), other]) {
          expect(outcome(() => decodeShardEntry(shard, ref, s))).toEqual(
            outcome(() => fullDecodeEntry(shard, ref, s)),
          );
        }
      }),
      { numRuns: 300 },
    );
  });

  it("accepts exactly what decodeShard accepts: changed, inserted and removed bytes (hash recomputed)", () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant("set" as const), at: fc.nat(), byte: interestingByte }),
      fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), byte: interestingByte }),
      fc.record({ kind: fc.constant("remove" as const), at: fc.nat(), byte: fc.constant(0) }),
    );
    let accepted = 0;
    let refused = 0;
    fc.assert(
      fc.property(
        paddedShard,
        fc.array(mutation, { minLength: 1, maxLength: 3 }),
        fc.nat(),
        ({ content, size }, mutations, pick) => {
          const valid = encodeShard(content, { size });
          const paddingStart = paddingOf(valid).start;
          const bytes = [...valid];
          for (const m of mutations) {
            // Mostly inside the content: the padding is checked byte for byte by both.
            const at = m.at % (m.at % 8 === 0 ? bytes.length : paddingStart + 2);
            if (m.kind === "set") bytes[at] = m.byte;
            else if (m.kind === "insert") bytes.splice(at, 0, m.byte);
            else if (bytes.length > 1) bytes.splice(at, 1);
          }
          const shard = new Uint8Array(bytes);
          const ref = { ...refFor(valid, content), sha256: shardDigest(shard), size: shard.length };
          const hsms = normalized(content).hsms;
          const serial = hsms[pick % hsms.length]!.serial;
          const bounded = outcome(() => decodeShardEntry(shard, ref, serial));
          expect(bounded).toEqual(outcome(() => fullDecodeEntry(shard, ref, serial)));
          if ((bounded as { ok?: unknown }).ok !== undefined) accepted++;
          else refused++;
        },
      ),
      { numRuns: 3000 },
    );
    // Both sides of the agreement were exercised.
    expect(refused).toBeGreaterThan(100);
    expect(accepted).toBeGreaterThan(0);
  });

  it("refuses a shard whose tables are out of first-use order, unused or repeated, as decodeShard does", () => {
    const content = generatePlan(3);
    const shard = encodeShard(content, { size: 600 });
    const ref = refFor(shard, content);
    const map = decodeCborStrict(shard, { what: "t", maxBytes: 1e6 }).value as Map<number, unknown>;
    const variants: Map<number, unknown>[] = [];
    // An unused hostname prefix, a repeated interface name, an entry pointing at the unused item.
    variants.push(new Map([...map, [1, [...(map.get(1) as string[]), "spare-"]]]));
    variants.push(new Map([...map, [2, [...(map.get(2) as string[]), ...(map.get(2) as string[])]]]));
    const entries = map.get(3) as unknown[][];
    const withSecondPrefix = entries.map((e, i) => (i === 0 ? [e[0], 1, ...e.slice(2)] : e));
    variants.push(new Map([...map, [1, [...(map.get(1) as string[]), "spare-"]], [3, withSecondPrefix]]));
    // A digit moved from the suffixes into the prefix: same hostnames, not the encoder's split.
    const prefix = (map.get(1) as string[])[0]!;
    expect(entries.every((e) => (e[2] as string)[0] === "0")).toBe(true);
    variants.push(
      new Map([
        ...map,
        [1, [`${prefix}0`]],
        [3, entries.map((e) => [e[0], e[1], (e[2] as string).slice(1), ...e.slice(3)])],
      ]),
    );
    for (const variant of variants) {
      variant.set(4, new Uint8Array(0));
      const bytes = encodeCbor(variant);
      const changed = { ...ref, sha256: shardDigest(bytes), size: bytes.length };
      expect(() => decodeShard(bytes)).toThrow(MalformedError);
      expect(() => decodeShardEntry(bytes, changed, content.hsms[0]!.serial)).toThrow(MalformedError);
    }
  });
});
