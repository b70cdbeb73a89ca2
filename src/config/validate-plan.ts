/**
 * Semantic validation of a network plan (SPEC.md §7.1): every rule, every problem at once.
 *
 * The readers (src/config/plan.ts for YAML/JSON, src/config/plan-csv.ts for CSV) check the shape and
 * turn their input into a `PlanDraft`, whose items carry their `Location` in the input, so that a
 * problem names the entry and field the user wrote (`hsms[3] (serial 1234567)`,
 * `interfaces[0].ipv4`, `row 7`, `ipv4_cidr`), whatever the format. This module then applies the
 * rules in O(N) for N HSMs (maps keyed by canonical address, serial and hostname; each address
 * parsed once here) and O(S log S) for S subnets, and builds the `NetworkPlan` when nothing is wrong.
 *
 * Ranges enforced here (and why):
 * - VLAN 1-4094 (IEEE 802.1Q: 0 means "no VLAN", 4095 is reserved).
 * - MTU 576-9216, or 1280-9216 on a subnet with IPv6: 576 is the smallest datagram every IPv4 host
 *   must accept (RFC 791), 1280 the IPv6 minimum link MTU (RFC 8200 §5), 9216 the largest jumbo
 *   frame common data-centre switches carry.
 * - An IPv6 gateway may be a link-local address outside the subnet: routers usually advertise and
 *   are reached by their link-local address (RFC 4861 §4.2).
 */
import type { PlanProblem } from "../errors.js";
import {
  type CidrFault,
  type CidrParse,
  classifyAddress,
  compareIp,
  type IpAddress,
  type IpNetwork,
  type Ipv4Address,
  type Ipv6Address,
  networkContains,
  networksOverlap,
  parseIp,
  parseIpv4,
  parseIpv4Cidr,
  parseIpv6,
  parseIpv6Cidr,
  type SubnetRole,
  specialRangeOverlapping,
  subnetRole,
} from "./ip.js";
import type { HsmEntry, HsmInterface, NetworkPlan, Subnet } from "./plan-model.js";

// ---------------------------------------------------------------------------------------------
// Drafts: what a reader hands over

/** The entry label of problems about the plan as a whole (its owner, its syntax). */
export const PLAN_ENTRY = "plan";
/** Sort key of a problem with the plan's list of HSMs: after its owner (0), before any entry. */
export const PLAN_LIST_ORDER = 1;

/** Where an item sits in the input, and how the input spells each of its fields. */
export interface Location<K extends string = string> {
  /** e.g. `hsms[3] (serial 1234567)`, `subnets[hsm-mgmt]`, `row 7`, `plan` */
  readonly entry: string;
  /** Sort key: problems are listed in input order. */
  readonly order: number;
  /** The input's name of a draft field (`""`: the entry itself), e.g. `ipv6Cidr` → `ipv6_cidr`. */
  field(key: K | "", index?: number): string;
}

export type SubnetKey =
  | "name"
  | "cidr"
  | "gateway"
  | "dns"
  | "ntp"
  | "vlan"
  | "mtu"
  | "ipv6Cidr"
  | "ipv6Gateway";
export type HsmKey = "serial" | "hostname" | "interfaces";
export type InterfaceKey = "name" | "subnet" | "ipv4" | "ipv6";

export interface DraftSubnet {
  readonly at: Location<SubnetKey>;
  readonly name: string;
  readonly cidr?: string;
  readonly gateway?: string;
  readonly dns: readonly string[];
  readonly ntp: readonly string[];
  /** A string is a cell that was not a number (CSV), reported as written. */
  readonly vlan?: number | string;
  readonly mtu?: number | string;
  readonly ipv6Cidr?: string;
  readonly ipv6Gateway?: string;
}

export interface DraftInterface {
  readonly at: Location<InterfaceKey>;
  readonly name: string;
  readonly subnet: string;
  readonly ipv4?: string;
  readonly ipv6?: string;
  /** The reader already reported a problem with an address of this interface. */
  readonly incomplete?: boolean;
}

export interface DraftHsm {
  readonly at: Location<HsmKey>;
  readonly serial: string;
  readonly hostname: string;
  readonly interfaces: readonly DraftInterface[];
  /** The reader left out an interface it already reported: an empty list is not a new problem. */
  readonly incomplete?: boolean;
}

export interface PlanDraft {
  /** Undefined when the reader already reported the owner as missing or malformed. */
  readonly owner: string | undefined;
  /** The plan as a whole: its `owner` and its list of `hsms`. */
  readonly planAt: Location<"owner" | "hsms">;
  readonly subnets: readonly DraftSubnet[];
  readonly hsms: readonly DraftHsm[];
  /** Names of subnets the reader rejected: references to them are not reported again. */
  readonly rejectedSubnets: ReadonlySet<string>;
}

/** Problems in input order, whichever stage found them. */
/** Options of every plan reader (YAML, JSON, CSV). */
export interface PlanOptions {
  /** Owner for a CSV plan; for YAML/JSON it fills a missing `owner` and must match a present one. */
  readonly owner?: string;
}

export class ProblemList {
  readonly #found: { order: number; problem: PlanProblem }[] = [];

  add<K extends string>(at: Location<K>, key: K | "", message: string, index?: number): void {
    this.#found.push({ order: at.order, problem: { entry: at.entry, field: at.field(key, index), message } });
  }

  addRaw(entry: string, field: string, order: number, message: string): void {
    this.#found.push({ order, problem: { entry, field, message } });
  }

  get size(): number {
    return this.#found.length;
  }

  /** Stable: problems of one entry keep the order in which they were found. */
  sorted(): PlanProblem[] {
    return [...this.#found].sort((a, b) => a.order - b.order).map((f) => f.problem);
  }
}

/** `entry.field` of a location, as the problem list prints it (used to point at a first use). */
export function describeLocation<K extends string>(at: Location<K>, key: K | "", index?: number): string {
  const field = at.field(key, index);
  return field ? `${at.entry}.${field}` : at.entry;
}

// ---------------------------------------------------------------------------------------------
// Messages: one per rule, shared by every reader so the same mistake reads the same in every format

/** Quotes text from the input for a message: JSON escapes, cut short if long. */
export function quote(text: string): string {
  return JSON.stringify(text.length > 64 ? `${text.slice(0, 61)}...` : text);
}

const CLASS_TEXT = {
  unspecified: "an unspecified",
  loopback: "a loopback",
  "link-local": "a link-local",
  multicast: "a multicast",
  "limited-broadcast": "the limited broadcast",
  "ipv4-mapped": "an IPv4-mapped IPv6",
} as const;

const ROLE_TEXT: Record<SubnetRole, string> = {
  network: "the network address",
  broadcast: "the broadcast address",
  "subnet-router-anycast": "the subnet-router anycast address (the IPv6 network address)",
};

export type AddressUse = "host" | "gateway" | "server";
const USE_TEXT: Record<AddressUse, string> = {
  host: "a host address",
  gateway: "a gateway",
  server: "a DNS or NTP server",
};

export const planMessages = {
  required: () => "is required",
  empty: () => "must not be empty",
  controlCharacters: () => "must not contain control characters",
  ownerMismatch: (plan: string, option: string) =>
    `the plan's owner ${quote(plan)} differs from --owner ${quote(option)}`,
  noHsms: () => "must list at least one HSM",
  duplicateSubnetName: (name: string, first: string) => `duplicate subnet name ${quote(name)}: also ${first}`,
  subnetWithoutNetwork: (cidrField: string, ipv6CidrField: string) =>
    `has neither ${cidrField} nor ${ipv6CidrField}`,
  overlappingSubnet: (network: string, other: string, otherNetwork: string) =>
    `${network} overlaps subnet ${other} (${otherNetwork})`,
  gatewayWithoutNetwork: (gatewayField: string, cidrField: string) =>
    `${gatewayField} needs ${cidrField} on the same subnet`,
  gatewayOutsideSubnet: (gateway: string, network: string) =>
    `gateway ${gateway} is outside the subnet ${network}`,
  badVlan: (vlan: number | string) => `VLAN ${vlan} is invalid: use a whole number from 1 to 4094`,
  badMtu: (mtu: number | string, min: number, max: number) =>
    `MTU ${mtu} is outside the supported range ${min}-${max}` +
    (min === MTU_MIN_IPV6 ? " (IPv6 needs at least 1280)" : ""),
  invalidSerial: (serial: string) =>
    `invalid serial ${quote(serial)}: use 1-32 printable ASCII characters without spaces`,
  numericSerial: (source: string) =>
    `serial ${source} is read as a number that is not a plain whole number; write it in quotes`,
  duplicateSerial: (serial: string, first: string) => `duplicate serial ${quote(serial)}: also ${first}`,
  invalidHostname: (hostname: string, reason: string) =>
    `invalid hostname ${quote(hostname)} (RFC 1123): ${reason}`,
  duplicateHostname: (hostname: string, first: string) =>
    `duplicate hostname ${quote(hostname)} (hostnames are case-insensitive): also ${first}`,
  noInterfaces: () => "has no interfaces",
  noInterfaceForm: () => "needs interfaces (or the shorthand: subnet with ipv4 and/or ipv6)",
  interfacesAndShorthand: () => "give either interfaces or the shorthand subnet/ipv4/ipv6, not both",
  invalidInterfaceName: (name: string) =>
    name === LOOPBACK_INTERFACE
      ? `invalid interface name ${quote(name)}: the loopback device never carries the HSM's network addresses`
      : `invalid interface name ${quote(name)}: use 1-15 letters, digits, '.', '-' or '_', starting with a letter or digit`,
  duplicateInterfaceName: (name: string, first: string) =>
    `duplicate interface name ${quote(name)} on this HSM: also ${first}`,
  noAddress: () => "has neither an IPv4 nor an IPv6 address",
  unknownSubnet: (name: string, known: readonly string[]) =>
    `unknown subnet ${quote(name)}` +
    (known.length === 0
      ? " (the plan defines no subnets)"
      : ` (defined: ${known.slice(0, 5).join(", ")}${known.length > 5 ? ", ..." : ""})`),
  notAnAddress: (text: string, version: 4 | 6) => {
    const other = version === 4 ? parseIpv6(text) : parseIpv4(text);
    return other
      ? `${other.text} is an IPv${other.version} address, not IPv${version}`
      : `${quote(text)} is not an IPv${version} address`;
  },
  notAnIpAddress: (text: string) => `${quote(text)} is not an IP address`,
  mappedNetwork: (network: string, range: string) =>
    `${network} overlaps the IPv4-mapped IPv6 range ${range}: give the IPv4 network in cidr instead`,
  specialAddress: (address: string, cls: keyof typeof CLASS_TEXT, range: string, use: AddressUse) =>
    `${address} is ${CLASS_TEXT[cls]} address (${range}) and cannot be ${USE_TEXT[use]}`,
  reservedInSubnet: (address: string, role: SubnetRole, network: string, use: AddressUse) =>
    `${address} is ${ROLE_TEXT[role]} of ${network} and cannot be ${USE_TEXT[use]}`,
  outsideSubnet: (address: string, subnet: string, network: string) =>
    `${address} is outside subnet ${subnet} (${network})`,
  gatewayAsHost: (address: string, subnet: string) =>
    `${address} is the gateway of subnet ${subnet} and cannot also be a host address`,
  duplicateAddress: (address: string, first: string) => `${address} is already used by ${first}`,
  noIpv4Network: (subnet: string) =>
    `subnet ${subnet} has no IPv4 network (cidr), so an interface on it cannot have an IPv4 address`,
  noIpv6Network: (subnet: string) =>
    `subnet ${subnet} has no ipv6_cidr, so an interface on it cannot have an IPv6 address`,
  badCidr: (text: string, version: 4 | 6, fault: CidrFault) => {
    switch (fault.kind) {
      case "no-prefix":
        return `bad prefix: ${quote(text)} has no "/length"`;
      case "prefix-not-number":
        return `bad prefix: ${quote(`/${fault.prefixText}`)} is not a number`;
      case "prefix-out-of-range":
        return `bad prefix: /${fault.prefix} is out of range for IPv${version} (${fault.min}-${fault.max})`;
      case "bad-address":
        return fault.otherFamily
          ? `${quote(text)} is an IPv${version === 4 ? 6 : 4} network, not IPv${version}`
          : `${quote(text)} is not an IPv${version} network: ${quote(fault.addressText)} is not an IPv${version} address`;
    }
  },
  hostBitsSet: (text: string, network: string) =>
    `bad prefix: ${text} has host bits set (the network is ${network})`,
} as const;

export const VLAN_MIN = 1;
export const VLAN_MAX = 4094;
export const MTU_MIN_IPV4 = 576;
export const MTU_MIN_IPV6 = 1280;
export const MTU_MAX = 9216;

const SERIAL = /^[\x21-\x7e]{1,32}$/;
const HOSTNAME_LABEL_CHARS = /^[A-Za-z0-9-]+$/;
const INTERFACE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$/;
/** The loopback device: an address planned on it would never reach the network. */
export const LOOPBACK_INTERFACE = "lo";
const CONTROL = /[\u0000-\u001f\u007f]/;

export function isValidSerial(serial: string): boolean {
  return SERIAL.test(serial);
}

/** Why `hostname` is not an RFC 1123 host name (§2.1 over RFC 952), or undefined when it is one. */
export function hostnameFault(hostname: string): string | undefined {
  if (hostname.length === 0) return "it is empty";
  if (hostname.length > 253) return `it is ${hostname.length} characters long, more than 253`;
  for (const label of hostname.split(".")) {
    if (label.length === 0) return "it has an empty label (a leading, trailing or double dot)";
    if (label.length > 63) return `label ${quote(label)} is longer than 63 characters`;
    if (!HOSTNAME_LABEL_CHARS.test(label)) {
      return `label ${quote(label)} has a character other than a letter, digit or hyphen`;
    }
    if (label.startsWith("-") || label.endsWith("-"))
      return `label ${quote(label)} starts or ends with a hyphen`;
  }
  return undefined;
}

export function isValidInterfaceName(name: string): boolean {
  return INTERFACE_NAME.test(name) && name !== LOOPBACK_INTERFACE;
}

// ---------------------------------------------------------------------------------------------
// Validation

interface CheckedSubnet {
  readonly draft: DraftSubnet;
  readonly index: number;
  /** The IPv4 network when `cidr` is valid; undefined when absent or broken. */
  readonly v4?: IpNetwork<Ipv4Address>;
  readonly v6?: IpNetwork<Ipv6Address>;
  readonly gateway?: Ipv4Address;
  readonly ipv6Gateway?: Ipv6Address;
  readonly model: Subnet;
}

/**
 * Applies every §7.1 rule to `draft`, adding what is wrong to `problems`. Returns the plan only
 * when `problems` is empty afterwards (including what the reader found before).
 */
export function validatePlanDraft(draft: PlanDraft, problems: ProblemList): NetworkPlan | undefined {
  const owner = checkOwner(draft, problems);
  const subnets = checkSubnets(draft.subnets, problems);
  const hsms = checkHsms(draft, subnets, problems);
  if (problems.size > 0 || owner === undefined) return undefined;
  return { owner, subnets: [...subnets.values()].map((s) => s.model), hsms };
}

function checkOwner(draft: PlanDraft, problems: ProblemList): string | undefined {
  if (draft.owner === undefined) return undefined;
  const owner = draft.owner.trim();
  if (owner.length === 0) problems.add(draft.planAt, "owner", planMessages.empty());
  else if (CONTROL.test(owner)) problems.add(draft.planAt, "owner", planMessages.controlCharacters());
  return owner;
}

function checkSubnets(drafts: readonly DraftSubnet[], problems: ProblemList): Map<string, CheckedSubnet> {
  const byName = new Map<string, CheckedSubnet>();
  drafts.forEach((d, index) => {
    const at = d.at;
    const checked = checkSubnet(d, index, problems);
    if (d.name.trim().length === 0) {
      problems.add(at, "name", planMessages.empty());
      return;
    }
    if (CONTROL.test(d.name)) {
      problems.add(at, "name", planMessages.controlCharacters());
      return;
    }
    const first = byName.get(d.name);
    if (first) {
      problems.add(
        at,
        "name",
        planMessages.duplicateSubnetName(d.name, describeLocation(first.draft.at, "name")),
      );
      return;
    }
    byName.set(d.name, checked);
  });
  reportOverlaps([...byName.values()], (s) => s.v4, "cidr", problems);
  reportOverlaps([...byName.values()], (s) => s.v6, "ipv6Cidr", problems);
  return byName;
}

function checkSubnet(d: DraftSubnet, index: number, problems: ProblemList): CheckedSubnet {
  const at = d.at;
  const v4 =
    d.cidr === undefined ? undefined : checkNetwork(d.cidr, parseIpv4Cidr(d.cidr), 4, at, "cidr", problems);
  const v6 =
    d.ipv6Cidr === undefined
      ? undefined
      : checkNetwork(d.ipv6Cidr, parseIpv6Cidr(d.ipv6Cidr), 6, at, "ipv6Cidr", problems);
  if (d.cidr === undefined && d.ipv6Cidr === undefined) {
    problems.add(at, "", planMessages.subnetWithoutNetwork(at.field("cidr"), at.field("ipv6Cidr")));
  }

  let gateway: Ipv4Address | undefined;
  if (d.gateway !== undefined) {
    gateway = parseIpv4(d.gateway);
    if (!gateway) problems.add(at, "gateway", planMessages.notAnAddress(d.gateway, 4));
    else if (d.cidr === undefined) {
      problems.add(at, "gateway", planMessages.gatewayWithoutNetwork(at.field("gateway"), at.field("cidr")));
    } else if (v4) checkGateway(gateway, v4, at, "gateway", problems);
  }

  let ipv6Gateway: Ipv6Address | undefined;
  if (d.ipv6Gateway !== undefined) {
    ipv6Gateway = parseIpv6(d.ipv6Gateway);
    if (!ipv6Gateway) problems.add(at, "ipv6Gateway", planMessages.notAnAddress(d.ipv6Gateway, 6));
    else if (d.ipv6Cidr === undefined) {
      problems.add(
        at,
        "ipv6Gateway",
        planMessages.gatewayWithoutNetwork(at.field("ipv6Gateway"), at.field("ipv6Cidr")),
      );
    } else if (v6) checkGateway(ipv6Gateway, v6, at, "ipv6Gateway", problems);
  }

  const dns = checkServerList(d.dns, at, "dns", problems);
  const ntp = checkServerList(d.ntp, at, "ntp", problems);

  const vlan = d.vlan === undefined ? undefined : wholeNumberIn(d.vlan, VLAN_MIN, VLAN_MAX);
  if (d.vlan !== undefined && vlan === undefined)
    problems.add(at, "vlan", planMessages.badVlan(shownNumber(d.vlan)));
  const mtuMin = d.ipv6Cidr === undefined ? MTU_MIN_IPV4 : MTU_MIN_IPV6;
  const mtu = d.mtu === undefined ? undefined : wholeNumberIn(d.mtu, mtuMin, MTU_MAX);
  if (d.mtu !== undefined && mtu === undefined) {
    problems.add(at, "mtu", planMessages.badMtu(shownNumber(d.mtu), mtuMin, MTU_MAX));
  }

  const model: Subnet = {
    name: d.name,
    ...(v4 && { cidr: v4.text }),
    ...(gateway && { gateway: gateway.text }),
    dns,
    ntp,
    ...(vlan !== undefined && { vlan }),
    ...(mtu !== undefined && { mtu }),
    ...(v6 && { ipv6Cidr: v6.text }),
    ...(ipv6Gateway && { ipv6Gateway: ipv6Gateway.text }),
  };
  return { draft: d, index, v4, v6, gateway, ipv6Gateway, model };
}

function wholeNumberIn(value: number | string, min: number, max: number): number | undefined {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= max
    ? value
    : undefined;
}

function shownNumber(value: number | string): string {
  return typeof value === "number" ? String(value) : quote(value);
}

function checkNetwork<A extends IpAddress>(
  text: string,
  parsed: CidrParse<A>,
  version: 4 | 6,
  at: Location<SubnetKey>,
  key: "cidr" | "ipv6Cidr",
  problems: ProblemList,
): IpNetwork<A> | undefined {
  if (!parsed.ok) {
    problems.add(at, key, planMessages.badCidr(text, version, parsed.fault));
    return undefined;
  }
  if (parsed.hostBitsSet) {
    problems.add(at, key, planMessages.hostBitsSet(text, parsed.network.text));
    return undefined;
  }
  if (version === 6) {
    const special = specialRangeOverlapping(parsed.network);
    if (special?.cls === "ipv4-mapped") {
      problems.add(at, key, planMessages.mappedNetwork(parsed.network.text, special.range));
      return undefined;
    }
  }
  return parsed.network;
}

function checkGateway(
  gateway: IpAddress,
  network: IpNetwork,
  at: Location<SubnetKey>,
  key: "gateway" | "ipv6Gateway",
  problems: ProblemList,
): void {
  const special = classifyAddress(gateway);
  // Routers are reached by their link-local address in IPv6 (RFC 4861 §4.2).
  const linkLocalRouter = gateway.version === 6 && special?.cls === "link-local";
  if (special && !linkLocalRouter) {
    problems.add(at, key, planMessages.specialAddress(gateway.text, special.cls, special.range, "gateway"));
  } else if (!linkLocalRouter && !networkContains(network, gateway)) {
    problems.add(at, key, planMessages.gatewayOutsideSubnet(gateway.text, network.text));
  } else {
    const role = subnetRole(network, gateway);
    if (role)
      problems.add(at, key, planMessages.reservedInSubnet(gateway.text, role, network.text, "gateway"));
  }
}

function checkServerList(
  list: readonly string[],
  at: Location<SubnetKey>,
  key: "dns" | "ntp",
  problems: ProblemList,
): string[] {
  const out: string[] = [];
  list.forEach((text, i) => {
    const a = parseIp(text);
    const special = a && classifyAddress(a);
    if (!a) problems.add(at, key, planMessages.notAnIpAddress(text), i);
    else if (special?.cls === "ipv4-mapped")
      problems.add(at, key, planMessages.specialAddress(a.text, special.cls, special.range, "server"), i);
    else out.push(a.text);
  });
  return out;
}

/** Sorts by start address and sweeps once: O(S log S) for S subnets. */
function reportOverlaps(
  subnets: readonly CheckedSubnet[],
  networkOf: (s: CheckedSubnet) => IpNetwork | undefined,
  key: "cidr" | "ipv6Cidr",
  problems: ProblemList,
): void {
  const withNet = subnets
    .map((s) => ({ s, net: networkOf(s) }))
    .filter((x): x is { s: CheckedSubnet; net: IpNetwork } => x.net !== undefined)
    .sort((a, b) => compareNetworks(a.net, b.net));
  let widest: { s: CheckedSubnet; net: IpNetwork } | undefined;
  for (const x of withNet) {
    // Two CIDR networks are nested or disjoint. Sorted by start (the larger first on a tie), a
    // network either lies inside the last one that did not overlap anything, or starts past it.
    if (widest && networksOverlap(widest.net, x.net)) {
      const [later, earlier] = x.s.index > widest.s.index ? [x, widest] : [widest, x];
      problems.add(
        later.s.draft.at,
        key,
        planMessages.overlappingSubnet(later.net.text, earlier.s.draft.name, earlier.net.text),
      );
    } else widest = x;
  }
}

function compareNetworks(a: IpNetwork, b: IpNetwork): number {
  const d = compareIp(a.address, b.address);
  return d !== 0 ? d : a.prefix - b.prefix;
}

/** The first use of a serial, hostname, interface name or address; described only if reused. */
interface FirstUse<K extends string> {
  readonly at: Location<K>;
  readonly key: K;
}

const describeFirst = <K extends string>(first: FirstUse<K>): string => describeLocation(first.at, first.key);

function checkHsms(draft: PlanDraft, subnets: Map<string, CheckedSubnet>, problems: ProblemList): HsmEntry[] {
  const serials = new Map<string, FirstUse<HsmKey>>();
  const hostnames = new Map<string, FirstUse<HsmKey>>();
  // Every gateway, so that a host address equal to one gets the gateway message, not "duplicate".
  const gateways = new Map<string, string>();
  for (const s of subnets.values()) {
    if (s.gateway) gateways.set(s.gateway.text, s.draft.name);
    if (s.ipv6Gateway && classifyAddress(s.ipv6Gateway) === undefined) {
      gateways.set(s.ipv6Gateway.text, s.draft.name);
    }
  }
  const addresses = new Map<string, FirstUse<InterfaceKey>>();
  const knownSubnets = [...subnets.keys()];
  const shared: HostCheckContext = { gateways, addresses, problems };
  const out: HsmEntry[] = [];

  for (const hsm of draft.hsms) {
    const at = hsm.at;
    if (!isValidSerial(hsm.serial)) problems.add(at, "serial", planMessages.invalidSerial(hsm.serial));
    else {
      const first = serials.get(hsm.serial);
      if (first !== undefined) {
        problems.add(at, "serial", planMessages.duplicateSerial(hsm.serial, describeFirst(first)));
      } else serials.set(hsm.serial, { at, key: "serial" });
    }

    const fault = hostnameFault(hsm.hostname);
    if (fault) problems.add(at, "hostname", planMessages.invalidHostname(hsm.hostname, fault));
    else {
      const key = hsm.hostname.toLowerCase();
      const first = hostnames.get(key);
      if (first !== undefined) {
        problems.add(at, "hostname", planMessages.duplicateHostname(hsm.hostname, describeFirst(first)));
      } else hostnames.set(key, { at, key: "hostname" });
    }

    if (hsm.interfaces.length === 0 && !hsm.incomplete)
      problems.add(at, "interfaces", planMessages.noInterfaces());
    const interfaces: HsmInterface[] = [];
    hsm.interfaces.forEach((iface, k) => {
      const ia = iface.at;
      if (!isValidInterfaceName(iface.name)) {
        problems.add(ia, "name", planMessages.invalidInterfaceName(iface.name));
      } else {
        // An HSM has a handful of interfaces: a scan is cheaper than a Map per HSM.
        const first = hsm.interfaces.findIndex((other) => other.name === iface.name);
        if (first < k) {
          const where = describeLocation(hsm.interfaces[first]!.at, "name");
          problems.add(ia, "name", planMessages.duplicateInterfaceName(iface.name, where));
        }
      }

      const subnet = subnets.get(iface.subnet);
      if (!subnet && !draft.rejectedSubnets.has(iface.subnet)) {
        problems.add(ia, "subnet", planMessages.unknownSubnet(iface.subnet, knownSubnets));
      }
      if (iface.ipv4 === undefined && iface.ipv6 === undefined && !iface.incomplete) {
        problems.add(ia, "", planMessages.noAddress());
      }
      const ipv4 =
        iface.ipv4 === undefined ? undefined : checkHostAddress(iface.ipv4, 4, ia, "ipv4", subnet, shared);
      const ipv6 =
        iface.ipv6 === undefined ? undefined : checkHostAddress(iface.ipv6, 6, ia, "ipv6", subnet, shared);
      const model: { -readonly [K in keyof HsmInterface]: HsmInterface[K] } = {
        name: iface.name,
        subnet: iface.subnet,
      };
      if (ipv4 !== undefined) model.ipv4 = ipv4;
      if (ipv6 !== undefined) model.ipv6 = ipv6;
      interfaces.push(model);
    });
    out.push({ serial: hsm.serial, hostname: hsm.hostname, interfaces });
  }
  return out;
}

interface HostCheckContext {
  readonly gateways: ReadonlyMap<string, string>;
  readonly addresses: Map<string, FirstUse<InterfaceKey>>;
  readonly problems: ProblemList;
}

/**
 * One host address, one problem at most: the most specific rule that fails (special range, then
 * the subnet, then a gateway, then an earlier use). Returns the canonical text when it parses.
 */
function checkHostAddress(
  text: string,
  version: 4 | 6,
  at: Location<InterfaceKey>,
  key: "ipv4" | "ipv6",
  /** Undefined when the subnet is unknown or was rejected: only subnet-free rules apply. */
  subnet: CheckedSubnet | undefined,
  { gateways, addresses, problems }: HostCheckContext,
): string | undefined {
  const address = version === 4 ? parseIpv4(text) : parseIpv6(text);
  if (!address) {
    problems.add(at, key, planMessages.notAnAddress(text, version));
    return undefined;
  }
  const first = addresses.get(address.text);
  if (!first) addresses.set(address.text, { at, key });

  const special = classifyAddress(address);
  if (special) {
    problems.add(at, key, planMessages.specialAddress(address.text, special.cls, special.range, "host"));
    return address.text;
  }
  if (subnet) {
    const network = version === 4 ? subnet.v4 : subnet.v6;
    const declared = version === 4 ? subnet.draft.cidr : subnet.draft.ipv6Cidr;
    if (declared === undefined) {
      const name = subnet.draft.name;
      problems.add(
        at,
        key,
        version === 4 ? planMessages.noIpv4Network(name) : planMessages.noIpv6Network(name),
      );
      return address.text;
    }
    if (network) {
      if (!networkContains(network, address)) {
        problems.add(at, key, planMessages.outsideSubnet(address.text, subnet.draft.name, network.text));
        return address.text;
      }
      const role = subnetRole(network, address);
      if (role) {
        problems.add(at, key, planMessages.reservedInSubnet(address.text, role, network.text, "host"));
        return address.text;
      }
    }
  }
  const gatewayOf = gateways.get(address.text);
  if (gatewayOf !== undefined) {
    problems.add(at, key, planMessages.gatewayAsHost(address.text, gatewayOf));
    return address.text;
  }
  if (first) problems.add(at, key, planMessages.duplicateAddress(address.text, describeFirst(first)));
  return address.text;
}
