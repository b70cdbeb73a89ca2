/**
 * Network plans for the benchmarks, generated in code (no files to keep in step).
 *
 * Addresses are never routable: up to 250 HSMs sit in TEST-NET-2 (198.51.100.0/24, RFC 5737), with
 * DNS and NTP in TEST-NET-1 (192.0.2.0/24). The IPv4 documentation blocks are /24s, too small for
 * 1,000 or 10,000 hosts in ONE shared subnet (SPEC.md §9 density plan), so larger plans use the
 * benchmarking block 198.18.0.0/15 (RFC 2544 §C.2.2, RFC 6890), which exists for exactly this.
 *
 * Serials are 7-digit (1000001, 1000008, …); hostnames `hsm-fra1-a0001`…; one interface (eth0) with
 * one IPv4 address each. Every plan holds BENCH_SERIAL (the first HSM), whose agent the card-I/O
 * benchmark runs, so the same HSM is measured against plans of every size.
 */
import { formatIpv4, ipv4ToUint32, parseCidr, uint32ToIpv4 } from "../src/config/address-codec.js";
import type { HsmEntry, NetworkPlan, Subnet } from "../src/config/plan-model.js";

export const BENCH_OWNER = "ACME Bank";
/** The HSM whose onboarding is measured: first in serial order in every plan. */
export const BENCH_SERIAL = "1000001";

const DOCUMENTATION_SUBNET: Subnet = {
  name: "hsm-mgmt",
  cidr: "198.51.100.0/24",
  gateway: "198.51.100.1",
  dns: ["192.0.2.53"],
  ntp: ["192.0.2.123"],
};

/** The smallest benchmarking-block subnet with room for `count` hosts after the first ten. */
function benchmarkingSubnet(count: number): Subnet {
  let prefix = 24;
  while (2 ** (32 - prefix) - 2 < count + 10) prefix--;
  if (prefix < 15) throw new RangeError(`${count} HSMs do not fit 198.18.0.0/15`);
  return {
    name: "hsm-fleet",
    cidr: `198.18.0.0/${prefix}`,
    gateway: "198.18.0.1",
    dns: ["192.0.2.53"],
    ntp: ["192.0.2.123"],
  };
}

/** A plan of `count` HSMs in one shared subnet (see the file comment). */
export function benchPlan(count: number): NetworkPlan {
  if (!Number.isInteger(count) || count < 1) throw new RangeError("a plan has at least one HSM");
  const subnet = count <= 250 ? DOCUMENTATION_SUBNET : benchmarkingSubnet(count);
  const network = parseCidr(subnet.cidr!, 4)!;
  const first = ipv4ToUint32(network.address) + 11; // past the gateway and service addresses
  const width = Math.max(4, String(count).length);
  const hsms: HsmEntry[] = [];
  for (let i = 0; i < count; i++) {
    hsms.push({
      serial: String(1_000_001 + i * 7),
      hostname: `hsm-fra1-a${String(i + 1).padStart(width, "0")}`,
      interfaces: [{ name: "eth0", subnet: subnet.name, ipv4: formatIpv4(uint32ToIpv4(first + i)) }],
    });
  }
  return { owner: BENCH_OWNER, subnets: [subnet], hsms };
}
