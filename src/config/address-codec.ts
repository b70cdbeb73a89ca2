/**
 * IP addresses and networks ↔ bytes for the card formats. Text is accepted only in the canonical
 * form the plan model promises (IPv4 dotted quad without leading zeros; IPv6 RFC 5952: lower case,
 * longest zero run compressed), so bytes → text gives back exactly the text that was encoded.
 * Parsers return undefined instead of throwing: the caller knows which plan field it was reading.
 */
import ipaddr from "ipaddr.js";

const IPV4_OCTET = /^(0|[1-9][0-9]{0,2})$/;

export function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const bytes = new Uint8Array(4);
  for (const [i, part] of parts.entries()) {
    if (!IPV4_OCTET.test(part)) return undefined;
    const value = Number(part);
    if (value > 255) return undefined;
    bytes[i] = value;
  }
  return bytes;
}

export function formatIpv4(bytes: Uint8Array): string {
  return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
}

/** Canonical (RFC 5952) IPv6 text → 16 bytes; zone ids and other spellings are refused. */
export function parseIpv6(text: string): Uint8Array | undefined {
  if (!ipaddr.IPv6.isValid(text)) return undefined;
  const address = ipaddr.IPv6.parse(text);
  if (address.zoneId !== undefined || address.toRFC5952String() !== text) return undefined;
  return new Uint8Array(address.toByteArray());
}

export function formatIpv6(bytes: Uint8Array): string {
  return new ipaddr.IPv6([...bytes]).toRFC5952String();
}

/** An IPv4 or IPv6 address as 4 or 16 bytes (DNS and NTP servers may be either). */
export function parseIpAddress(text: string): Uint8Array | undefined {
  return parseIpv4(text) ?? parseIpv6(text);
}

export function formatIpAddress(bytes: Uint8Array): string {
  return bytes.length === 4 ? formatIpv4(bytes) : formatIpv6(bytes);
}

export interface Network {
  /** Network address: 4 or 16 bytes, host bits zero. */
  readonly address: Uint8Array;
  readonly prefixLength: number;
}

const PREFIX = /^(0|[1-9][0-9]{0,2})$/;

/** `198.51.100.0/24` or `2001:db8::/64` → network; host bits must be zero. */
export function parseCidr(text: string, family: 4 | 6): Network | undefined {
  const slash = text.indexOf("/");
  if (slash < 0) return undefined;
  const prefixText = text.slice(slash + 1);
  if (!PREFIX.test(prefixText)) return undefined;
  const prefixLength = Number(prefixText);
  const address = family === 4 ? parseIpv4(text.slice(0, slash)) : parseIpv6(text.slice(0, slash));
  if (address === undefined || prefixLength > address.length * 8) return undefined;
  const network = { address, prefixLength };
  return isNetworkAddress(network) ? network : undefined;
}

export function formatCidr(network: Network): string {
  return `${formatIpAddress(network.address)}/${network.prefixLength}`;
}

/** True when every host bit of the network address is zero. */
export function isNetworkAddress(network: Network): boolean {
  return hostBits(network.address, network.prefixLength).every((b) => b === 0);
}

/** The address with its first `prefixLength` bits cleared. */
export function hostBits(address: Uint8Array, prefixLength: number): Uint8Array {
  const out = new Uint8Array(address);
  for (let i = 0; i < out.length; i++) {
    const networkBitsHere = Math.min(8, Math.max(0, prefixLength - 8 * i));
    out[i]! &= 0xff >> networkBitsHere;
  }
  return out;
}

/** True when `address` (same family) lies in `network`. */
export function inNetwork(address: Uint8Array, network: Network): boolean {
  if (address.length !== network.address.length) return false;
  const host = hostBits(address, network.prefixLength);
  for (let i = 0; i < address.length; i++) {
    if ((address[i]! ^ host[i]!) !== network.address[i]) return false;
  }
  return true;
}

/**
 * The host part of an address in its network as the shortest big-endian bytes (no leading zero
 * byte; the network address itself is empty). Compact for IPv6 hosts like `::11` in a /64.
 */
export function hostPartBytes(address: Uint8Array, network: Network): Uint8Array {
  const host = hostBits(address, network.prefixLength);
  let start = 0;
  while (start < host.length && host[start] === 0) start++;
  return host.subarray(start);
}

/**
 * The address whose host part is `host` (as hostPartBytes gives it), or undefined when `host` is
 * not in shortest form or does not fit the network's host bits.
 */
export function addressFromHostPart(network: Network, host: Uint8Array): Uint8Array | undefined {
  const size = network.address.length;
  if (host.length > size || (host.length > 0 && host[0] === 0)) return undefined;
  const address = new Uint8Array(size);
  address.set(host, size - host.length);
  if (!hostBits(address, network.prefixLength).every((b, i) => b === address[i])) return undefined;
  for (let i = 0; i < size; i++) address[i]! |= network.address[i]!;
  return address;
}

/** IPv4 bytes → unsigned 32-bit integer. */
export function ipv4ToUint32(bytes: Uint8Array): number {
  return ((bytes[0]! << 24) | (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0;
}

export function uint32ToIpv4(value: number): Uint8Array {
  return new Uint8Array([value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff]);
}
