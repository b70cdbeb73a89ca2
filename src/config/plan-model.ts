/**
 * The validated network plan (SPEC.md §7.1) as every later stage sees it, whatever the input format
 * (YAML, JSON or CSV). Produced only by `parsePlan`/`validatePlan` (src/config/plan.ts): holding a
 * `NetworkPlan` means every rule of §7.1 held. Addresses are in canonical text form
 * (IPv4 dotted quad; IPv6 RFC 5952 lower case, compressed).
 */

export interface Subnet {
  readonly name: string;
  /** IPv4 network in CIDR form, e.g. `198.51.100.0/24`; absent for an IPv6-only subnet. */
  readonly cidr?: string;
  readonly gateway?: string;
  readonly dns: readonly string[];
  readonly ntp: readonly string[];
  readonly vlan?: number;
  readonly mtu?: number;
  /** IPv6 network in CIDR form, e.g. `2001:db8:120::/64`. */
  readonly ipv6Cidr?: string;
  readonly ipv6Gateway?: string;
}

export interface HsmInterface {
  /** Interface name on the HSM, e.g. `eth0`. */
  readonly name: string;
  /** Name of a subnet in `NetworkPlan.subnets`. */
  readonly subnet: string;
  readonly ipv4?: string;
  readonly ipv6?: string;
}

export interface HsmEntry {
  readonly serial: string;
  readonly hostname: string;
  readonly interfaces: readonly HsmInterface[];
}

export interface NetworkPlan {
  readonly owner: string;
  readonly subnets: readonly Subnet[];
  readonly hsms: readonly HsmEntry[];
}
