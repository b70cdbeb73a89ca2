/**
 * Small IPv4/IPv6 helpers on top of ipaddr.js: strict parsing into canonical text, CIDR networks,
 * containment, special-purpose classification, and the binary forms the CBOR encoder stores
 * (IPv4 as a uint32, IPv6 as 16 bytes).
 *
 * Parsing is deliberately strict: IPv4 only as four decimal parts without leading zeros (so
 * `010.1.1.1` is not silently octal), IPv6 without a zone id (`%eth0` names a link on one host and
 * has no meaning in a plan). Canonical text is the dotted quad for IPv4 and RFC 5952 for IPv6.
 */
import ipaddr from "ipaddr.js";

export interface Ipv4Address {
  readonly version: 4;
  /** Canonical dotted quad. */
  readonly text: string;
  /** The address as an unsigned 32-bit integer (network byte order read as a number). */
  readonly value: number;
}

export interface Ipv6Address {
  readonly version: 6;
  /** Canonical RFC 5952 text (lower case, longest zero run compressed). */
  readonly text: string;
  /** The eight 16-bit groups, most significant first (`ipv6ToBytes` gives the 16 bytes). */
  readonly parts: readonly number[];
}

export type IpAddress = Ipv4Address | Ipv6Address;

/** A CIDR network: its (canonical, host bits clear) network address and prefix length. */
export interface IpNetwork<A extends IpAddress = IpAddress> {
  readonly address: A;
  readonly prefix: number;
  /** Canonical CIDR text, e.g. `198.51.100.0/24` or `2001:db8:120::/64`. */
  readonly text: string;
}

// ---------------------------------------------------------------------------------------------
// Addresses

const DOTTED_QUAD = /^(?:0|[1-9]\d{0,2})(?:\.(?:0|[1-9]\d{0,2})){3}$/;

export function parseIpv4(text: string): Ipv4Address | undefined {
  // The strict shape first: ipaddr.js alone also takes `127.1`, `0x7f.0.0.1` and octal `010.0.0.1`.
  if (!DOTTED_QUAD.test(text)) return undefined;
  let octets: number[];
  try {
    octets = ipaddr.IPv4.parse(text).octets; // refuses a part above 255
  } catch {
    return undefined;
  }
  const [a = 0, b = 0, c = 0, d = 0] = octets;
  return { version: 4, value: ((a << 24) | (b << 16) | (c << 8) | d) >>> 0, text };
}

// ipaddr.js 2.5 reads `::1.2.3.4` as `::ffff:1.2.3.4`, so a trailing dotted quad is rewritten into
// two hex groups here before the library sees it (RFC 4291 §2.2, form 3).
const EMBEDDED_IPV4 = /^(.*:)(\d{1,3}(?:\.\d{1,3}){3})$/;

export function parseIpv6(text: string): Ipv6Address | undefined {
  if (text.includes("%")) return undefined;
  let hexText = text;
  if (text.includes(".")) {
    const embedded = EMBEDDED_IPV4.exec(text);
    const v4 = embedded && parseIpv4(embedded[2]!);
    if (!v4) return undefined;
    hexText = `${embedded[1]}${(v4.value >>> 16).toString(16)}:${(v4.value & 0xffff).toString(16)}`;
  }
  let parsed: ipaddr.IPv6;
  try {
    parsed = ipaddr.IPv6.parse(hexText);
  } catch {
    return undefined;
  }
  return { version: 6, text: parsed.toRFC5952String(), parts: parsed.parts };
}

/** Parses either version: text with a colon is IPv6, anything else IPv4. */
export function parseIp(text: string): IpAddress | undefined {
  return text.includes(":") ? parseIpv6(text) : parseIpv4(text);
}

/** Canonical text of an address, or undefined when `text` is not one. */
export function canonicalIp(text: string): string | undefined {
  return parseIp(text)?.text;
}

export function ipv4FromUint32(value: number): Ipv4Address {
  const v = value >>> 0;
  return { version: 4, value: v, text: `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}` };
}

export function ipv6FromParts(parts: readonly number[]): Ipv6Address {
  const copy = [...parts];
  return { version: 6, parts: copy, text: new ipaddr.IPv6(copy).toRFC5952String() };
}

export function ipv6FromBytes(bytes: Uint8Array): Ipv6Address {
  if (bytes.length !== 16) throw new RangeError(`an IPv6 address has 16 bytes, not ${bytes.length}`);
  const parts: number[] = [];
  for (let i = 0; i < 16; i += 2) parts.push((bytes[i]! << 8) | bytes[i + 1]!);
  return ipv6FromParts(parts);
}

/** IPv4 text → uint32, for the encoder. Throws RangeError on anything but a strict dotted quad. */
export function ipv4ToUint32(text: string): number {
  const a = parseIpv4(text);
  if (!a) throw new RangeError(`not an IPv4 address: ${JSON.stringify(text)}`);
  return a.value;
}

export function uint32ToIpv4(value: number): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`not a uint32: ${value}`);
  }
  return ipv4FromUint32(value).text;
}

/** IPv6 text → 16 bytes, for the encoder. Throws RangeError on anything but an IPv6 address. */
export function ipv6ToBytes(text: string): Uint8Array {
  const a = parseIpv6(text);
  if (!a) throw new RangeError(`not an IPv6 address: ${JSON.stringify(text)}`);
  const bytes = new Uint8Array(16);
  a.parts.forEach((part, i) => {
    bytes[2 * i] = part >>> 8;
    bytes[2 * i + 1] = part & 0xff;
  });
  return bytes;
}

export function bytesToIpv6(bytes: Uint8Array): string {
  return ipv6FromBytes(bytes).text;
}

export function ipEquals(a: IpAddress, b: IpAddress): boolean {
  if (a.version === 4) return b.version === 4 && a.value === b.value;
  return b.version === 6 && compareParts(a.parts, b.parts) === 0;
}

/** Total order: all IPv4 before all IPv6, then numerically. */
export function compareIp(a: IpAddress, b: IpAddress): number {
  if (a.version === 4) return b.version === 4 ? a.value - b.value : -1;
  return b.version === 6 ? compareParts(a.parts, b.parts) : 1;
}

function compareParts(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < 8; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Networks

/** Why a CIDR text was refused. */
export type CidrFault =
  /** no `/length` at all */
  | { readonly kind: "no-prefix" }
  /** the part after `/` is not a decimal number */
  | { readonly kind: "prefix-not-number"; readonly prefixText: string }
  /** a number, but outside `min..max` for the address family */
  | {
      readonly kind: "prefix-out-of-range";
      readonly prefix: number;
      readonly min: number;
      readonly max: number;
    }
  /** the part before `/` is not an address of the wanted family (`otherFamily`: it is one of the other) */
  | { readonly kind: "bad-address"; readonly addressText: string; readonly otherFamily: boolean };

export type CidrParse<A extends IpAddress> =
  | {
      readonly ok: true;
      /** The address as written, host bits included (e.g. `198.51.100.11` in `198.51.100.11/24`). */
      readonly host: A;
      readonly network: IpNetwork<A>;
      /** True when `host` is not the network address, i.e. the text was not a network's CIDR. */
      readonly hostBitsSet: boolean;
    }
  | { readonly ok: false; readonly fault: CidrFault };

/** Smallest prefix accepted for a host subnet; `/0` (the whole address space) is never one. */
export const MIN_SUBNET_PREFIX = 1;

export function parseIpv4Cidr(text: string): CidrParse<Ipv4Address> {
  return parseCidr(text, 4) as CidrParse<Ipv4Address>;
}

export function parseIpv6Cidr(text: string): CidrParse<Ipv6Address> {
  return parseCidr(text, 6) as CidrParse<Ipv6Address>;
}

function parseCidr(text: string, version: 4 | 6): CidrParse<IpAddress> {
  const slash = text.lastIndexOf("/");
  if (slash < 0) return { ok: false, fault: { kind: "no-prefix" } };
  const addressText = text.slice(0, slash);
  const prefixText = text.slice(slash + 1);
  const host = version === 4 ? parseIpv4(addressText) : parseIpv6(addressText);
  if (!host) {
    const other = version === 4 ? parseIpv6(addressText) : parseIpv4(addressText);
    return { ok: false, fault: { kind: "bad-address", addressText, otherFamily: other !== undefined } };
  }
  if (!/^\d{1,3}$/.test(prefixText)) return { ok: false, fault: { kind: "prefix-not-number", prefixText } };
  const prefix = Number(prefixText);
  const max = version === 4 ? 32 : 128;
  if (prefix < MIN_SUBNET_PREFIX || prefix > max) {
    return { ok: false, fault: { kind: "prefix-out-of-range", prefix, min: MIN_SUBNET_PREFIX, max } };
  }
  const network = makeNetwork(host, prefix);
  return { ok: true, host, network, hostBitsSet: !ipEquals(host, network.address) };
}

/** The network of `prefix` bits that contains `address`. */
export function makeNetwork<A extends IpAddress>(address: A, prefix: number): IpNetwork<A> {
  let base: IpAddress;
  if (address.version === 4) {
    base = ipv4FromUint32((address.value & ipv4Mask(prefix)) >>> 0);
  } else {
    base = ipv6FromParts(address.parts.map((part, i) => part & ipv6MaskPart(prefix, i)));
  }
  return { address: base as A, prefix, text: `${base.text}/${prefix}` };
}

function ipv4Mask(prefix: number): number {
  // `<< 32` is `<< 0` in JavaScript, so /0 needs its own case.
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** The mask of 16-bit group `index` under a prefix of `prefix` bits. */
function ipv6MaskPart(prefix: number, index: number): number {
  const bits = prefix - index * 16;
  if (bits >= 16) return 0xffff;
  if (bits <= 0) return 0;
  return (0xffff << (16 - bits)) & 0xffff;
}

export function networkContains(network: IpNetwork, address: IpAddress): boolean {
  const base = network.address;
  if (base.version === 4) {
    return address.version === 4 && ((address.value ^ base.value) & ipv4Mask(network.prefix)) === 0;
  }
  if (address.version !== 6) return false;
  for (let i = 0; i < 8; i++) {
    const mask = ipv6MaskPart(network.prefix, i);
    if (mask === 0) return true;
    if (((address.parts[i]! ^ base.parts[i]!) & mask) !== 0) return false;
  }
  return true;
}

/** Two networks overlap exactly when one contains the other's base address. */
export function networksOverlap(a: IpNetwork, b: IpNetwork): boolean {
  return networkContains(a, b.address) || networkContains(b, a.address);
}

/** The last address of a network (the IPv4 broadcast address for prefixes up to /30). */
export function lastAddress<A extends IpAddress>(network: IpNetwork<A>): A {
  const base = network.address;
  if (base.version === 4) return ipv4FromUint32((base.value | ~ipv4Mask(network.prefix)) >>> 0) as A;
  return ipv6FromParts(base.parts.map((part, i) => part | (~ipv6MaskPart(network.prefix, i) & 0xffff))) as A;
}

/**
 * The role an address has in its own subnet that keeps it from being a host address:
 * - IPv4 `network` and `broadcast` (first and last address) for prefixes up to /30; a /31 or /32
 *   has neither (RFC 3021).
 * - IPv6 `subnet-router-anycast` (all host bits zero, RFC 4291 §2.6.1), the IPv6 analogue of the
 *   network address, for prefixes up to /126; a /127 or /128 has none (RFC 6164). IPv6 has no
 *   broadcast; its analogue, all-nodes multicast `ff02::1`, is refused as multicast.
 */
export type SubnetRole = "network" | "broadcast" | "subnet-router-anycast";

export function subnetRole(network: IpNetwork, address: IpAddress): SubnetRole | undefined {
  if (!networkContains(network, address)) return undefined;
  const base = network.address;
  if (base.version === 4) {
    if (network.prefix > 30 || address.version !== 4) return undefined;
    if (address.value === base.value) return "network";
    if (address.value === (base.value | ~ipv4Mask(network.prefix)) >>> 0) return "broadcast";
    return undefined;
  }
  if (network.prefix > 126) return undefined;
  return ipEquals(address, network.address) ? "subnet-router-anycast" : undefined;
}

// ---------------------------------------------------------------------------------------------
// Classification

/** Special-purpose ranges (RFC 6890 registry) that can never be a host's own address. */
export type AddressClass =
  | "unspecified"
  | "loopback"
  | "link-local"
  | "multicast"
  | "limited-broadcast"
  | "ipv4-mapped";

interface SpecialRange {
  readonly cls: AddressClass;
  readonly network: IpNetwork;
}

function special(cls: AddressClass, cidr: string): SpecialRange {
  const parsed = cidr.includes(":") ? parseIpv6Cidr(cidr) : parseIpv4Cidr(cidr);
  if (!parsed.ok) throw new Error(`bad built-in range ${cidr}`);
  return { cls, network: parsed.network };
}

const SPECIAL_RANGES: readonly SpecialRange[] = [
  special("unspecified", "0.0.0.0/8"), // "this network", RFC 1122 §3.2.1.3
  special("loopback", "127.0.0.0/8"), // RFC 1122 §3.2.1.3
  special("link-local", "169.254.0.0/16"), // RFC 3927
  special("multicast", "224.0.0.0/4"), // RFC 5771
  special("limited-broadcast", "255.255.255.255/32"), // RFC 919
  special("unspecified", "::/128"), // RFC 4291 §2.5.2
  special("loopback", "::1/128"), // RFC 4291 §2.5.3
  special("link-local", "fe80::/10"), // RFC 4291 §2.5.6
  special("multicast", "ff00::/8"), // RFC 4291 §2.7
  // An IPv4 address written as IPv6 (RFC 4291 §2.5.5.2): never configured on an interface, and it
  // would escape the duplicate check against the same address written as IPv4 (issue 10 finding 5).
  special("ipv4-mapped", "::ffff:0:0/96"),
];

/** The special range an IPv6 network overlaps (e.g. an IPv4-mapped ipv6_cidr), or undefined. */
export function specialRangeOverlapping(network: IpNetwork): SpecialAddress | undefined {
  for (const r of network.address.version === 4 ? SPECIAL_V4 : SPECIAL_V6) {
    if (networksOverlap(r.network, network)) return { cls: r.cls, range: r.network.text };
  }
  return undefined;
}

const SPECIAL_V4 = SPECIAL_RANGES.filter((r) => r.network.address.version === 4);
const SPECIAL_V6 = SPECIAL_RANGES.filter((r) => r.network.address.version === 6);

export interface SpecialAddress {
  readonly cls: AddressClass;
  /** The range it falls in, e.g. `127.0.0.0/8`. */
  readonly range: string;
}

/** The special-purpose class of an address, or undefined for an ordinary unicast address. */
export function classifyAddress(address: IpAddress): SpecialAddress | undefined {
  for (const r of address.version === 4 ? SPECIAL_V4 : SPECIAL_V6) {
    if (networkContains(r.network, address)) return { cls: r.cls, range: r.network.text };
  }
  return undefined;
}

export function isLinkLocal(address: IpAddress): boolean {
  return classifyAddress(address)?.cls === "link-local";
}
