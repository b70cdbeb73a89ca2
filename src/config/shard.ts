/**
 * Shards: the HSM entries of a plan in compact CBOR, split into PIV objects (SPEC.md §5). CDDL and
 * the reasoning behind each field: docs/FORMATS.md.
 *
 * A shard is self-contained: it carries the subnets, hostname prefixes and interface names its own
 * entries use, once each, and entries refer to them by index. Entries are sorted by serial (order
 * below) and tables are in order of first use, so a given set of entries has exactly one encoding;
 * the decoder enforces that by re-encoding what it read and comparing bytes.
 *
 * Padding: a shard ends in a padding item (key 4, zero bytes) that brings it to exactly the shard
 * object size the manifest declares, so every shard of a card has the same size and an agent reads
 * the same number of bytes whatever the plan (SPEC.md §9). The padding is inside the CBOR map, so
 * the SHA-256 in the manifest covers it, and it is part of the one canonical encoding: for a given
 * content and size there is exactly one padded shard.
 *
 * Serial order (used for sorting and for the manifest's shard ranges): serials that are canonical
 * decimals (no sign, no leading zero) up to 2^53-1 come first, by numeric value, and are stored as
 * CBOR unsigned integers; every other serial comes after them, by the bytes of its UTF-8 form
 * (i.e. by code point), and is stored as text.
 */
import { createHash } from "node:crypto";
import {
  CardFullError,
  IntegrityError,
  MalformedError,
  NotForThisHsmError,
  PlanInvalidError,
  type PlanProblem,
  UsageError,
} from "../errors.js";
import { bytesEqual } from "../util/bytes.js";
import {
  addressFromHostPart,
  formatCidr,
  formatIpAddress,
  formatIpv4,
  formatIpv6,
  hostPartBytes,
  inNetwork,
  ipv4ToUint32,
  isNetworkAddress,
  type Network,
  parseCidr,
  parseIpAddress,
  parseIpv4,
  parseIpv6,
  uint32ToIpv4,
} from "./address-codec.js";
import {
  cborHeadSize,
  cborUint,
  checkCborStrict,
  decodeCborStrict,
  encodeCbor,
  encodeZeroPadding,
  expectArray,
  expectBytes,
  expectIntKeyedMap,
  expectText,
  expectUint,
  expectZeroPadding,
  MAX_UNTRUSTED_INPUT_BYTES,
  malformedUnlessTyped,
  padEncoding,
} from "./cbor.js";
import type { HsmEntry, HsmInterface, Subnet } from "./plan-model.js";

/** What a shard holds: its entries (in serial order) and the subnets they use (in order of first use). */
export interface ShardContent {
  readonly subnets: readonly Subnet[];
  readonly hsms: readonly HsmEntry[];
}

/** What one HSM needs to configure itself: its entry and the subnets its interfaces name. */
export interface HsmConfig {
  readonly hsm: HsmEntry;
  readonly subnets: readonly Subnet[];
}

/** How the manifest describes a shard. */
export interface ShardRef {
  readonly objectId: number;
  readonly firstSerial: string;
  readonly lastSerial: string;
  /** SHA-256 of the shard's bytes. */
  readonly sha256: Uint8Array;
  /**
   * The shard object's exact length in bytes, padding included, as the manifest declares it for
   * every shard (decodeManifestPayload fills it in). When set, decodeShardEntry refuses other lengths.
   */
  readonly size?: number;
}

export interface PlannedShard {
  /** Exactly the shard size planShards was given, padding included. */
  readonly bytes: Uint8Array;
  readonly firstSerial: string;
  readonly lastSerial: string;
  readonly entries: number;
}

// Keys of the shard map and of a subnet map (docs/FORMATS.md). The padding comes last, so that
// padding a shard only replaces its final item (padEncoding).
const Shard = { subnets: 0, hostnamePrefixes: 1, interfaceNames: 2, entries: 3, padding: 4 } as const;
const SubnetKey = {
  name: 0,
  ipv4Network: 1,
  ipv4Gateway: 2,
  ipv6Network: 3,
  ipv6Gateway: 4,
  dns: 5,
  ntp: 6,
  vlan: 7,
  mtu: 8,
} as const;
const SUBNET_KEYS = Object.values(SubnetKey);

export const MAX_SERIAL_BYTES = 64;
const MAX_HOSTNAME_BYTES = 253; // RFC 1123 §2.1 / RFC 1035 §2.3.4
const MAX_NAME_BYTES = 64;
const MAX_INTERFACES = 16;
const MAX_SERVERS = 8;

// Serials ----------------------------------------------------------------------------------------

const DECIMAL = /^(0|[1-9][0-9]*)$/;

function numericSerial(serial: string): number | undefined {
  if (serial.length > 16 || !DECIMAL.test(serial)) return undefined;
  const n = Number(serial);
  return n <= Number.MAX_SAFE_INTEGER ? n : undefined;
}

/** A serial as stored: an unsigned integer when it is a canonical decimal of at most 53 bits, else text. */
export function serialToCbor(serial: string): number | bigint | string {
  const n = numericSerial(serial);
  return n === undefined ? serial : cborUint(n);
}

export function serialFromCbor(value: unknown, what: string): string {
  if (typeof value === "number") return String(expectUint(value, what));
  const text = expectText(value, what, 1, MAX_SERIAL_BYTES);
  if (numericSerial(text) !== undefined)
    throw new MalformedError(`${what}: serial ${text} must be stored as an integer`);
  return text;
}

interface SerialKey {
  readonly numeric: number | undefined;
  readonly utf8: Buffer | undefined;
}

function serialKey(serial: string): SerialKey {
  const numeric = numericSerial(serial);
  return { numeric, utf8: numeric === undefined ? Buffer.from(serial, "utf8") : undefined };
}

function compareSerialKeys(a: SerialKey, b: SerialKey): number {
  if (a.numeric !== undefined) return b.numeric === undefined ? -1 : Math.sign(a.numeric - b.numeric);
  if (b.numeric !== undefined) return 1;
  return Buffer.compare(a.utf8!, b.utf8!);
}

/** The total order on serials (module comment): negative, zero or positive like a sort comparator. */
export function compareSerials(a: string, b: string): number {
  return compareSerialKeys(serialKey(a), serialKey(b));
}

// Preparing a plan slice --------------------------------------------------------------------------

/** `hsm-fra1-a0001` → [`hsm-fra1-a`, `0001`]: the trailing digits are the per-entry part. */
function splitHostname(hostname: string): [string, string] {
  let cut = hostname.length;
  while (cut > 0 && hostname.charCodeAt(cut - 1) >= 0x30 && hostname.charCodeAt(cut - 1) <= 0x39) cut--;
  return [hostname.slice(0, cut), hostname.slice(cut)];
}

interface PreparedSubnet {
  readonly subnet: Subnet;
  readonly ipv4: Network | undefined;
  readonly ipv6: Network | undefined;
  readonly value: Map<number, unknown>;
  readonly size: number;
}

interface PreparedInterface {
  readonly name: string;
  readonly subnet: PreparedSubnet;
  readonly ipv4Offset: number | null;
  readonly ipv6Host: Uint8Array | undefined;
}

interface PreparedHsm {
  readonly hsm: HsmEntry;
  readonly key: SerialKey;
  readonly serialValue: number | bigint | string;
  readonly hostnamePrefix: string;
  readonly hostnameSuffix: string;
  readonly interfaces: readonly PreparedInterface[];
}

function textBytes(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

function checkName(value: unknown, max: number): boolean {
  return typeof value === "string" && textBytes(value) >= 1 && textBytes(value) <= max;
}

function servers(
  list: readonly string[],
  entry: string,
  field: string,
  problems: PlanProblem[],
): Uint8Array[] {
  if (list.length > MAX_SERVERS) problems.push({ entry, field, message: `at most ${MAX_SERVERS} servers` });
  return list.map((text, i) => {
    const bytes = parseIpAddress(text);
    if (bytes === undefined)
      problems.push({ entry, field: `${field}[${i}]`, message: `not a canonical IP address: ${text}` });
    return bytes ?? new Uint8Array(4);
  });
}

function isUint(value: unknown, min: number, max: number): boolean {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= max;
}

function prepareSubnet(subnet: Subnet, problems: PlanProblem[]): PreparedSubnet {
  const entry = `subnets[${subnet.name}]`;
  const problem = (field: string, message: string) => problems.push({ entry, field, message });
  if (!checkName(subnet.name, MAX_NAME_BYTES)) problem("name", `1..${MAX_NAME_BYTES} bytes`);
  const ipv4 = subnet.cidr === undefined ? undefined : parseCidr(subnet.cidr, 4);
  if (subnet.cidr !== undefined && ipv4 === undefined)
    problem("cidr", `not a canonical IPv4 network: ${subnet.cidr}`);
  const ipv6 = subnet.ipv6Cidr === undefined ? undefined : parseCidr(subnet.ipv6Cidr, 6);
  if (subnet.ipv6Cidr !== undefined && ipv6 === undefined)
    problem("ipv6_cidr", `not a canonical IPv6 network: ${subnet.ipv6Cidr}`);
  if (subnet.cidr === undefined && subnet.ipv6Cidr === undefined) problem("", "no IPv4 or IPv6 network");
  const gateway4 = subnet.gateway === undefined ? undefined : parseIpv4(subnet.gateway);
  if (subnet.gateway !== undefined && (gateway4 === undefined || subnet.cidr === undefined)) {
    problem("gateway", `not a canonical IPv4 address of an IPv4 subnet: ${subnet.gateway}`);
  }
  const gateway6 = subnet.ipv6Gateway === undefined ? undefined : parseIpv6(subnet.ipv6Gateway);
  if (subnet.ipv6Gateway !== undefined && (gateway6 === undefined || subnet.ipv6Cidr === undefined)) {
    problem("ipv6_gateway", `not a canonical IPv6 address of an IPv6 subnet: ${subnet.ipv6Gateway}`);
  }
  const dns = servers(subnet.dns, entry, "dns", problems);
  const ntp = servers(subnet.ntp, entry, "ntp", problems);
  if (subnet.vlan !== undefined && !isUint(subnet.vlan, 1, 4094)) problem("vlan", "must be 1..4094");
  if (subnet.mtu !== undefined && !isUint(subnet.mtu, 68, 65535)) problem("mtu", "must be 68..65535");

  const value = new Map<number, unknown>([[SubnetKey.name, subnet.name]]);
  if (ipv4) value.set(SubnetKey.ipv4Network, [ipv4.address, ipv4.prefixLength]);
  if (gateway4) value.set(SubnetKey.ipv4Gateway, gateway4);
  if (ipv6) value.set(SubnetKey.ipv6Network, [ipv6.address, ipv6.prefixLength]);
  if (gateway6) value.set(SubnetKey.ipv6Gateway, gateway6);
  if (dns.length > 0) value.set(SubnetKey.dns, dns);
  if (ntp.length > 0) value.set(SubnetKey.ntp, ntp);
  if (subnet.vlan !== undefined) value.set(SubnetKey.vlan, subnet.vlan);
  if (subnet.mtu !== undefined) value.set(SubnetKey.mtu, subnet.mtu);
  return { subnet, ipv4, ipv6, value, size: problems.length > 0 ? 0 : encodeCbor(value).length };
}

function prepareHsm(
  hsm: HsmEntry,
  entry: string,
  subnets: ReadonlyMap<string, PreparedSubnet>,
  problems: PlanProblem[],
): PreparedHsm {
  const problem = (field: string, message: string) => problems.push({ entry, field, message });
  if (!checkName(hsm.serial, MAX_SERIAL_BYTES)) problem("serial", `1..${MAX_SERIAL_BYTES} bytes`);
  if (!checkName(hsm.hostname, MAX_HOSTNAME_BYTES)) problem("hostname", `1..${MAX_HOSTNAME_BYTES} bytes`);
  if (hsm.interfaces.length < 1 || hsm.interfaces.length > MAX_INTERFACES) {
    problem("interfaces", `1..${MAX_INTERFACES} interfaces`);
  }
  const names = new Set<string>();
  const interfaces = hsm.interfaces.map((itf, i): PreparedInterface => {
    const field = `interfaces[${i}]`;
    if (!checkName(itf.name, MAX_NAME_BYTES)) problem(`${field}.name`, `1..${MAX_NAME_BYTES} bytes`);
    if (names.has(itf.name)) problem(`${field}.name`, `interface ${itf.name} twice`);
    names.add(itf.name);
    const subnet = subnets.get(itf.subnet);
    let ipv4Offset: number | null = null;
    let ipv6Host: Uint8Array | undefined;
    if (subnet === undefined) {
      problem(`${field}.subnet`, `unknown subnet ${itf.subnet}`);
    } else {
      if (itf.ipv4 !== undefined) {
        const address = parseIpv4(itf.ipv4);
        if (address === undefined || subnet.ipv4 === undefined || !inNetwork(address, subnet.ipv4)) {
          problem(`${field}.ipv4`, `not a canonical IPv4 address in subnet ${itf.subnet}: ${itf.ipv4}`);
        } else {
          ipv4Offset = ipv4ToUint32(address) - ipv4ToUint32(subnet.ipv4.address);
        }
      }
      if (itf.ipv6 !== undefined) {
        const address = parseIpv6(itf.ipv6);
        if (address === undefined || subnet.ipv6 === undefined || !inNetwork(address, subnet.ipv6)) {
          problem(`${field}.ipv6`, `not a canonical IPv6 address in subnet ${itf.subnet}: ${itf.ipv6}`);
        } else {
          ipv6Host = hostPartBytes(address, subnet.ipv6);
        }
      }
      if (itf.ipv4 === undefined && itf.ipv6 === undefined) problem(field, "no IPv4 or IPv6 address");
    }
    return { name: itf.name, subnet: subnet!, ipv4Offset, ipv6Host };
  });
  const [hostnamePrefix, hostnameSuffix] = splitHostname(hsm.hostname);
  return {
    hsm,
    key: serialKey(hsm.serial),
    serialValue: serialToCbor(hsm.serial),
    hostnamePrefix,
    hostnameSuffix,
    interfaces,
  };
}

/** Checks that every entry can be stored and sorts them; all problems at once in a PlanInvalidError. */
function prepare(subnets: readonly Subnet[], hsms: readonly HsmEntry[]): PreparedHsm[] {
  const problems: PlanProblem[] = [];
  const bySubnetName = new Map<string, PreparedSubnet>();
  for (const subnet of subnets) {
    if (bySubnetName.has(subnet.name))
      problems.push({ entry: `subnets[${subnet.name}]`, field: "name", message: "duplicate subnet name" });
    bySubnetName.set(subnet.name, prepareSubnet(subnet, problems));
  }
  const prepared = hsms.map((hsm, i) => prepareHsm(hsm, `hsms[${i}]`, bySubnetName, problems));
  const order = prepared
    .map((_, i) => i)
    .sort((a, b) => compareSerialKeys(prepared[a]!.key, prepared[b]!.key) || a - b);
  for (let i = 1; i < order.length; i++) {
    if (compareSerialKeys(prepared[order[i - 1]!]!.key, prepared[order[i]!]!.key) === 0) {
      problems.push({
        entry: `hsms[${order[i]}]`,
        field: "serial",
        message: `duplicate serial ${prepared[order[i]!]!.hsm.serial}`,
      });
    }
  }
  if (problems.length > 0) throw new PlanInvalidError(problems);
  return order.map((i) => prepared[i]!);
}

// Building shards -----------------------------------------------------------------------------------

/** A table of strings referred to by index, in order of first use, with its encoded size. */
class Table {
  readonly keys: string[] = [];
  private readonly index = new Map<string, number>();
  private itemBytes = 0;

  constructor(private readonly sizeOf: (key: string) => number) {}

  indexOf(key: string): number {
    let i = this.index.get(key);
    if (i === undefined) {
      i = this.keys.length;
      this.keys.push(key);
      this.index.set(key, i);
      this.itemBytes += this.sizeOf(key);
    }
    return i;
  }

  truncate(length: number): void {
    while (this.keys.length > length) {
      const key = this.keys.pop()!;
      this.index.delete(key);
      this.itemBytes -= this.sizeOf(key);
    }
  }

  get encodedSize(): number {
    return cborHeadSize(this.keys.length) + this.itemBytes;
  }
}

const textSize = (s: string) => cborHeadSize(textBytes(s)) + textBytes(s);

/** One shard being filled; knows its exact encoded size at every step. */
class ShardBuilder {
  readonly hsms: HsmEntry[] = [];
  private readonly subnets: Table;
  private readonly prefixes = new Table(textSize);
  private readonly interfaceNames = new Table(textSize);
  private readonly subnetByName = new Map<string, PreparedSubnet>();
  private readonly entries: unknown[][] = [];
  private entryBytes = 0;

  constructor() {
    this.subnets = new Table((name) => this.subnetByName.get(name)!.size);
  }

  /** Encoded size with the empty padding (`04 40`): the smallest the shard can be. */
  get size(): number {
    // map head + five one-byte keys + the four arrays + the empty padding
    return (
      1 +
      5 +
      this.subnets.encodedSize +
      this.prefixes.encodedSize +
      this.interfaceNames.encodedSize +
      cborHeadSize(this.entries.length) +
      this.entryBytes +
      1
    );
  }

  /** Adds the entry if the shard stays within `maxBytes`; returns whether it did. */
  tryAdd(hsm: PreparedHsm, maxBytes: number): boolean {
    const marks = [
      this.subnets.keys.length,
      this.prefixes.keys.length,
      this.interfaceNames.keys.length,
    ] as const;
    const value: unknown[] = [hsm.serialValue, this.prefixes.indexOf(hsm.hostnamePrefix), hsm.hostnameSuffix];
    for (const itf of hsm.interfaces) {
      this.subnetByName.set(itf.subnet.subnet.name, itf.subnet);
      const v: unknown[] = [
        this.interfaceNames.indexOf(itf.name),
        this.subnets.indexOf(itf.subnet.subnet.name),
        itf.ipv4Offset,
      ];
      if (itf.ipv6Host !== undefined) v.push(itf.ipv6Host);
      value.push(v);
    }
    const entrySize = encodeCbor(value).length;
    this.entries.push(value);
    this.entryBytes += entrySize;
    if (this.size <= maxBytes) {
      this.hsms.push(hsm.hsm);
      return true;
    }
    this.entries.pop();
    this.entryBytes -= entrySize;
    this.subnets.truncate(marks[0]);
    this.prefixes.truncate(marks[1]);
    this.interfaceNames.truncate(marks[2]);
    return false;
  }

  /** The shard, padded to exactly `size` bytes (default: the empty padding only). */
  encode(size?: number): Uint8Array {
    const bytes = encodeCbor(
      new Map<number, unknown>([
        [Shard.subnets, this.subnets.keys.map((name) => this.subnetByName.get(name)!.value)],
        [Shard.hostnamePrefixes, this.prefixes.keys],
        [Shard.interfaceNames, this.interfaceNames.keys],
        [Shard.entries, this.entries],
        [Shard.padding, new Uint8Array(0)],
      ]),
    );
    // The greedy split relies on `size` being exact.
    if (bytes.length !== this.size)
      throw new Error(`internal: shard is ${bytes.length} bytes, computed ${this.size}`);
    return size === undefined ? bytes : padEncoding(bytes, size, "shard");
  }
}

function checkShardSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 1 || size > MAX_UNTRUSTED_INPUT_BYTES) {
    throw new UsageError(`a shard size is 1..${MAX_UNTRUSTED_INPUT_BYTES} bytes, not ${size}`);
  }
}

export interface EncodeShardOptions {
  /**
   * Pad the shard to exactly this many bytes (CardFullError if the entries need more). Default:
   * only the empty padding, the smallest encoding (as networkStateDigest uses it).
   */
  readonly size?: number;
}

/** Encodes entries as one shard. Throws PlanInvalidError for what cannot be stored. */
export function encodeShard(content: ShardContent, options: EncodeShardOptions = {}): Uint8Array {
  const builder = new ShardBuilder();
  for (const hsm of prepare(content.subnets, content.hsms)) builder.tryAdd(hsm, Number.POSITIVE_INFINITY);
  if (options.size !== undefined) {
    checkShardSize(options.size);
    if (builder.size > options.size) {
      throw new CardFullError(`the shard needs ${builder.size} bytes; its size is ${options.size}`);
    }
  }
  return builder.encode(options.size);
}

/**
 * Sorts the entries and fills shards greedily, in serial order, each padded to exactly
 * `shardBytes` (the shard object size the manifest declares). O(N log N): one sort, then constant
 * work per entry.
 */
export function planShards(
  subnets: readonly Subnet[],
  hsms: readonly HsmEntry[],
  shardBytes: number,
): PlannedShard[] {
  checkShardSize(shardBytes);
  const shards: PlannedShard[] = [];
  let builder = new ShardBuilder();
  const flush = () => {
    shards.push({
      bytes: builder.encode(shardBytes),
      firstSerial: builder.hsms[0]!.serial,
      lastSerial: builder.hsms[builder.hsms.length - 1]!.serial,
      entries: builder.hsms.length,
    });
    builder = new ShardBuilder();
  };
  for (const hsm of prepare(subnets, hsms)) {
    if (builder.tryAdd(hsm, shardBytes)) continue;
    if (builder.hsms.length > 0) flush();
    if (!builder.tryAdd(hsm, shardBytes)) {
      throw new CardFullError(
        `the entry for serial ${hsm.hsm.serial} alone exceeds the ${shardBytes}-byte shard size`,
      );
    }
  }
  if (builder.hsms.length > 0) flush();
  return shards;
}

// Decoding -------------------------------------------------------------------------------------------

interface DecodedSubnet {
  readonly subnet: Subnet;
  readonly ipv4: Network | undefined;
  readonly ipv6: Network | undefined;
}

function decodeNetwork(value: unknown, what: string, size: 4 | 16): Network {
  const [address, prefix] = expectArray(value, what, 2, 2);
  const network = {
    address: expectBytes(address, what, size),
    prefixLength: expectUint(prefix, what, 0, size * 8),
  };
  if (!isNetworkAddress(network)) throw new MalformedError(`${what}: host bits set`);
  return network;
}

function decodeServers(value: unknown, what: string): string[] {
  if (value === undefined) return [];
  return expectArray(value, what, 1, MAX_SERVERS).map((v) => {
    const bytes = expectBytes(v, what);
    if (bytes.length !== 4 && bytes.length !== 16)
      throw new MalformedError(`${what}: an address is 4 or 16 bytes`);
    return formatIpAddress(bytes);
  });
}

function decodeSubnet(value: unknown, what: string): DecodedSubnet {
  const map = expectIntKeyedMap(value, what, SUBNET_KEYS, [SubnetKey.name]);
  const get = (key: number) => map.get(key);
  const ipv4 = map.has(SubnetKey.ipv4Network)
    ? decodeNetwork(get(SubnetKey.ipv4Network), `${what} IPv4 network`, 4)
    : undefined;
  const ipv6 = map.has(SubnetKey.ipv6Network)
    ? decodeNetwork(get(SubnetKey.ipv6Network), `${what} IPv6 network`, 16)
    : undefined;
  if (!ipv4 && !ipv6) throw new MalformedError(`${what}: no network`);
  if (map.has(SubnetKey.ipv4Gateway) && !ipv4)
    throw new MalformedError(`${what}: IPv4 gateway without IPv4 network`);
  if (map.has(SubnetKey.ipv6Gateway) && !ipv6)
    throw new MalformedError(`${what}: IPv6 gateway without IPv6 network`);
  const subnet: { -readonly [K in keyof Subnet]: Subnet[K] } = {
    name: expectText(get(SubnetKey.name), `${what} name`, 1, MAX_NAME_BYTES),
    dns: decodeServers(get(SubnetKey.dns), `${what} dns`),
    ntp: decodeServers(get(SubnetKey.ntp), `${what} ntp`),
  };
  if (ipv4) subnet.cidr = formatCidr(ipv4);
  if (map.has(SubnetKey.ipv4Gateway))
    subnet.gateway = formatIpv4(expectBytes(get(SubnetKey.ipv4Gateway), `${what} gateway`, 4));
  if (ipv6) subnet.ipv6Cidr = formatCidr(ipv6);
  if (map.has(SubnetKey.ipv6Gateway)) {
    subnet.ipv6Gateway = formatIpv6(expectBytes(get(SubnetKey.ipv6Gateway), `${what} IPv6 gateway`, 16));
  }
  if (map.has(SubnetKey.vlan)) subnet.vlan = expectUint(get(SubnetKey.vlan), `${what} vlan`, 1, 4094);
  if (map.has(SubnetKey.mtu)) subnet.mtu = expectUint(get(SubnetKey.mtu), `${what} mtu`, 68, 65535);
  return { subnet, ipv4, ipv6 };
}

function decodeInterface(
  value: unknown,
  what: string,
  names: readonly string[],
  subnets: readonly DecodedSubnet[],
): HsmInterface {
  const items = expectArray(value, what, 3, 4);
  const name = names[expectUint(items[0], `${what} name index`, 0, names.length - 1)]!;
  const subnet = subnets[expectUint(items[1], `${what} subnet index`, 0, subnets.length - 1)]!;
  const itf: { -readonly [K in keyof HsmInterface]: HsmInterface[K] } = { name, subnet: subnet.subnet.name };
  if (items[2] !== null) {
    if (!subnet.ipv4) throw new MalformedError(`${what}: IPv4 address in a subnet without IPv4`);
    const offset = expectUint(items[2], `${what} IPv4 host`, 0, 2 ** (32 - subnet.ipv4.prefixLength) - 1);
    itf.ipv4 = formatIpv4(uint32ToIpv4(ipv4ToUint32(subnet.ipv4.address) + offset));
  }
  if (items.length === 4) {
    if (!subnet.ipv6) throw new MalformedError(`${what}: IPv6 address in a subnet without IPv6`);
    const address = addressFromHostPart(subnet.ipv6, expectBytes(items[3], `${what} IPv6 host`));
    if (address === undefined) throw new MalformedError(`${what}: IPv6 host part not shortest or too large`);
    itf.ipv6 = formatIpv6(address);
  }
  if (itf.ipv4 === undefined && itf.ipv6 === undefined) throw new MalformedError(`${what}: no address`);
  return itf;
}

const DIGITS = /^[0-9]*$/;

export interface DecodeShardOptions {
  /** Names the shard in errors, e.g. `shard 0x5FFF20`. */
  readonly what?: string;
  readonly maxBytes?: number;
  /** The shard's expected length, padding included (the manifest's shard size): refuse any other. */
  readonly size?: number;
}

/**
 * Decodes a shard strictly: shape, ranges, order, zero padding, and the one canonical encoding
 * (the content padded to the shard's own length, or to `size` when given).
 */
export function decodeShard(bytes: Uint8Array, options: DecodeShardOptions = {}): ShardContent {
  const what = options.what ?? "shard";
  if (options.size !== undefined && bytes instanceof Uint8Array && bytes.length !== options.size) {
    throw new MalformedError(`${what}: ${bytes.length} bytes, expected exactly ${options.size}`);
  }
  const { value } = decodeCborStrict(bytes, {
    what,
    maxBytes: options.maxBytes ?? MAX_UNTRUSTED_INPUT_BYTES,
  });
  return malformedUnlessTyped(what, () => {
    const top = expectIntKeyedMap(value, what, Object.values(Shard));
    expectZeroPadding(top.get(Shard.padding), `${what} padding`);
    const subnets = expectArray(top.get(Shard.subnets), `${what} subnets`, 1).map((v, i) =>
      decodeSubnet(v, `${what} subnets[${i}]`),
    );
    const prefixes = expectArray(top.get(Shard.hostnamePrefixes), `${what} hostname prefixes`, 1).map((v) =>
      expectText(v, `${what} hostname prefix`, 0, MAX_HOSTNAME_BYTES),
    );
    const names = expectArray(top.get(Shard.interfaceNames), `${what} interface names`, 1).map((v) =>
      expectText(v, `${what} interface name`, 1, MAX_NAME_BYTES),
    );
    const hsms = expectArray(top.get(Shard.entries), `${what} entries`, 1).map((v, i): HsmEntry => {
      const where = `${what} entries[${i}]`;
      const items = expectArray(v, where, 4, 3 + MAX_INTERFACES);
      const serial = serialFromCbor(items[0], `${where} serial`);
      const prefix =
        prefixes[expectUint(items[1], `${where} hostname prefix index`, 0, prefixes.length - 1)]!;
      const suffix = expectText(items[2], `${where} hostname suffix`, 0, MAX_HOSTNAME_BYTES);
      if (!DIGITS.test(suffix)) throw new MalformedError(`${where}: hostname suffix must be digits`);
      const hostname = expectText(prefix + suffix, `${where} hostname`, 1, MAX_HOSTNAME_BYTES);
      const interfaces = items
        .slice(3)
        .map((itf, j) => decodeInterface(itf, `${where} interfaces[${j}]`, names, subnets));
      return { serial, hostname, interfaces };
    });
    for (let i = 1; i < hsms.length; i++) {
      if (compareSerials(hsms[i - 1]!.serial, hsms[i]!.serial) >= 0) {
        throw new MalformedError(`${what}: entries not in strictly increasing serial order at ${i}`);
      }
    }
    const content = { subnets: subnets.map((s) => s.subnet), hsms };
    if (!bytesEqual(encodeShard(content, { size: bytes.length }), bytes))
      throw new MalformedError(`${what}: not in canonical form`);
    return content;
  });
}

function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(bytes).digest());
}

/** SHA-256 of a shard's bytes, as the manifest records it. */
export function shardDigest(bytes: Uint8Array): Uint8Array {
  return sha256(bytes);
}

/**
 * Agent side: checks a shard read from the card against its manifest entry (length and SHA-256
 * first, over the whole object, before any parsing), and returns this HSM's configuration.
 * IntegrityError when the bytes do not match the manifest, MalformedError when they are not a
 * shard, NotForThisHsmError when the serial is not in it.
 *
 * Bounded: it accepts exactly the shards decodeShard accepts (the same canonical-form guarantee, so
 * the same typed errors), but only the HSM's own entry and the tables are decoded into values. The
 * whole object goes through the strict CBOR check (checkCborStrict, no values built), then one
 * pass over the entries checks, on the raw bytes, every rule that decodeShard's re-encoding
 * enforces: shapes and ranges, strictly increasing serials, tables in order of first use with every
 * item used and none twice, the hostname split, the IPv4/IPv6 host parts, and the exact padding.
 * The subnets (few per shard) are decoded and re-encoded one by one. test/config/shard-bounded.test.ts
 * checks the agreement with decodeShard on valid shards and on mutated ones.
 */
export function decodeShardEntry(shardBytes: Uint8Array, ref: ShardRef, serial: string): HsmConfig {
  const what = `shard 0x${ref.objectId.toString(16).toUpperCase()}`;
  if (!(shardBytes instanceof Uint8Array) || shardBytes.length > MAX_UNTRUSTED_INPUT_BYTES) {
    throw new MalformedError(`${what}: not bytes, or larger than a card can hold`);
  }
  if (ref.size !== undefined && shardBytes.length !== ref.size) {
    throw new IntegrityError(
      `${what}: ${shardBytes.length} bytes; the signed manifest declares ${ref.size}-byte shards`,
    );
  }
  if (!bytesEqual(sha256(shardBytes), ref.sha256)) {
    throw new IntegrityError(`${what}: SHA-256 does not match the signed manifest`);
  }
  checkCborStrict(shardBytes, { what, maxBytes: MAX_UNTRUSTED_INPUT_BYTES });
  const scan = malformedUnlessTyped(what, () => scanShard(shardBytes, what, serialKey(serial)));
  if (scan.firstSerial !== ref.firstSerial || scan.lastSerial !== ref.lastSerial) {
    throw new MalformedError(`${what}: serial range differs from the signed manifest`);
  }
  if (scan.config === undefined)
    throw new NotForThisHsmError(`serial ${serial} is not in this configuration`);
  return scan.config;
}

/**
 * A cursor over bytes checkCborStrict has accepted: every head is well formed, in shortest form and
 * within the bytes, so the cursor only checks types and values. Written for cold code (the agent
 * runs it once per process, interpreted): no destructured pairs, no message built before a failure.
 */
class ShardCursor {
  pos = 0;
  private lastMajor = 0;
  /** The entry being read, for messages. */
  entry = -1;

  constructor(
    readonly bytes: Uint8Array,
    readonly what: string,
  ) {}

  fail(message: string): never {
    const where = this.entry < 0 ? "" : ` entries[${this.entry}]`;
    throw new MalformedError(`${this.what}${where}: ${message} (at byte ${this.pos})`);
  }

  /** Reads one head; returns its argument (its major type in `major`). */
  head(): number {
    const b = this.bytes;
    const initial = b[this.pos]!;
    const info = initial & 0x1f;
    this.lastMajor = initial >> 5;
    const p = this.pos + 1;
    if (info < 24) {
      this.pos = p;
      return info;
    }
    if (info === 24) {
      this.pos = p + 1;
      return b[p]!;
    }
    if (info === 25) {
      this.pos = p + 2;
      return (b[p]! << 8) | b[p + 1]!;
    }
    if (info === 26) {
      this.pos = p + 4;
      return b[p]! * 0x1000000 + ((b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!);
    }
    this.pos = p + 8;
    const high = b[p]! * 0x1000000 + ((b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!);
    return high * 0x100000000 + b[p + 4]! * 0x1000000 + ((b[p + 5]! << 16) | (b[p + 6]! << 8) | b[p + 7]!);
  }

  /** The major type of the last head read (a method: a field would be narrowed by the checker). */
  major(): number {
    return this.lastMajor;
  }

  /** Skips one item (nesting is bounded by the strict check). */
  skip(): void {
    const arg = this.head();
    const major = this.lastMajor;
    if (major === 2 || major === 3) this.pos += arg;
    else if (major === 4) for (let i = 0; i < arg; i++) this.skip();
    else if (major === 5) for (let i = 0; i < arg * 2; i++) this.skip();
  }

  /** An array head with min..max items; returns the count. */
  array(what: string, min: number, max: number): number {
    const n = this.head();
    if (this.lastMajor !== 4) this.fail(`${what}: expected an array`);
    if (n < min || n > max) this.fail(`${what}: expected ${min}..${max} items, got ${n}`);
    return n;
  }

  uint(what: string, min: number, max: number): number {
    const n = this.head();
    if (this.lastMajor !== 0) this.fail(`${what}: expected an integer`);
    if (n < min || n > max) this.fail(`${what}: ${n} is outside ${min}..${max}`);
    return n;
  }

  /** A text item of minBytes..maxBytes; returns where its content starts (it ends at pos). */
  text(what: string, minBytes: number, maxBytes: number): number {
    const n = this.head();
    if (this.lastMajor !== 3) this.fail(`${what}: expected text`);
    if (n < minBytes || n > maxBytes) this.fail(`${what}: expected ${minBytes}..${maxBytes} bytes of text`);
    const start = this.pos;
    this.pos += n;
    return start;
  }

  string(start: number, end: number): string {
    return Buffer.from(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength).toString(
      "utf8",
      start,
      end,
    );
  }

  key(expected: number): void {
    if (this.bytes[this.pos] !== expected) this.fail("not in canonical form (shard map keys)");
    this.pos += 1;
  }
}

interface ShardScan {
  readonly firstSerial: string;
  readonly lastSerial: string;
  readonly config: HsmConfig | undefined;
}

function isDigit(byte: number): boolean {
  return byte >= 0x30 && byte <= 0x39;
}

/** Distinct items of a table, compared by their bytes; returns [start, end] of each content. */
function textTable(c: ShardCursor, what: string, minBytes: number, maxBytes: number): [number, number][] {
  const count = c.array(what, 1, Number.MAX_SAFE_INTEGER);
  const items: [number, number][] = [];
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) {
    const start = c.text(what, minBytes, maxBytes);
    const key = c.string(start, c.pos);
    if (seen.has(key)) c.fail(`not in canonical form (${what}: an item twice)`);
    seen.add(key);
    items.push([start, c.pos]);
  }
  return items;
}

/** Compares a serial read from the shard (numeric, or UTF-8 bytes at start..end) with a key. */
function compareStoredSerial(
  bytes: Uint8Array,
  numeric: number,
  start: number,
  end: number,
  key: SerialKey,
): number {
  if (start < 0) return key.numeric === undefined ? -1 : Math.sign(numeric - key.numeric);
  if (key.numeric !== undefined) return 1;
  return Buffer.compare(bytes.subarray(start, end), key.utf8!);
}

/** The one pass of decodeShardEntry (see there); throws MalformedError for what decodeShard refuses. */
function scanShard(bytes: Uint8Array, what: string, own: SerialKey): ShardScan {
  const c: ShardCursor = new ShardCursor(bytes, what);
  const topCount = c.head();
  const topMajor = c.major();
  if (topCount !== 5 || topMajor !== 5) c.fail("expected a map of the five shard keys");

  // Subnets: decoded one by one and re-encoded, the same checks decodeShard's re-encoding makes.
  c.key(Shard.subnets);
  const subnetCount = c.array("subnets", 1, Number.MAX_SAFE_INTEGER);
  const subnets: DecodedSubnet[] = [];
  const subnetNames = new Set<string>();
  for (let i = 0; i < subnetCount; i++) {
    const start = c.pos;
    c.skip();
    const raw = bytes.subarray(start, c.pos);
    const where = `${what} subnets[${i}]`;
    const decoded = decodeSubnet(decodeCborStrict(raw, { what: where, maxBytes: raw.length }).value, where);
    const problems: PlanProblem[] = [];
    const prepared = prepareSubnet(decoded.subnet, problems);
    if (problems.length > 0 || subnetNames.has(decoded.subnet.name))
      c.fail(`subnets[${i}]: not a valid subnet`);
    if (!bytesEqual(encodeCbor(prepared.value), raw)) c.fail(`subnets[${i}]: not in canonical form`);
    subnetNames.add(decoded.subnet.name);
    subnets.push(decoded);
  }
  // Host ranges of the subnets, looked up per interface.
  const ipv4Max = subnets.map((s) => (s.ipv4 === undefined ? -1 : 2 ** (32 - s.ipv4.prefixLength) - 1));

  c.key(Shard.hostnamePrefixes);
  const prefixes = textTable(c, "hostname prefixes", 0, MAX_HOSTNAME_BYTES);
  for (const [start, end] of prefixes) {
    // The encoder puts every trailing digit of a hostname in the suffix.
    if (end > start && isDigit(bytes[end - 1]!)) c.fail("not in canonical form (hostname prefix)");
  }
  c.key(Shard.interfaceNames);
  const names = textTable(c, "interface names", 1, MAX_NAME_BYTES);

  c.key(Shard.entries);
  const entryCount = c.array("entries", 1, Number.MAX_SAFE_INTEGER);
  // Tables are in order of first use: an index is either one already used or the next one.
  let prefixesUsed = 0;
  let namesUsed = 0;
  let subnetsUsed = 0;
  // The previous serial: numeric, or UTF-8 bytes at previousStart..previousEnd (start ≥ 0).
  let previousNumeric = -1;
  let previousStart = -2;
  let previousEnd = -1;
  let ownStart = -1;
  let ownEnd = -1;
  let firstSerial = "";
  let lastSerial = "";
  for (let i = 0; i < entryCount; i++) {
    c.entry = i;
    const entryStart = c.pos;
    const itemCount = c.array("entry", 4, 3 + MAX_INTERFACES);
    const serialArg = c.head();
    let numeric = -1;
    let textStart = -1;
    if (c.major() === 0) {
      numeric = serialArg;
    } else if (c.major() === 3) {
      if (serialArg < 1 || serialArg > MAX_SERIAL_BYTES) c.fail(`serial: 1..${MAX_SERIAL_BYTES} bytes`);
      textStart = c.pos;
      c.pos += serialArg;
      if (serialArg <= 16 && numericSerial(c.string(textStart, c.pos)) !== undefined)
        c.fail("serial must be stored as an integer");
    } else {
      c.fail("serial: expected an integer or text");
    }
    const textEnd = c.pos;
    if (previousStart !== -2) {
      // previous < this: the same comparison as compareSerialKeys.
      const order =
        previousStart < 0
          ? textStart >= 0
            ? -1
            : Math.sign(previousNumeric - numeric)
          : textStart < 0
            ? 1
            : Buffer.compare(bytes.subarray(previousStart, previousEnd), bytes.subarray(textStart, textEnd));
      if (order >= 0) c.fail(`entries not in strictly increasing serial order at ${i}`);
    }
    previousNumeric = numeric;
    previousStart = textStart;
    previousEnd = textEnd;
    if (i === 0 || i === entryCount - 1) {
      const text = textStart < 0 ? String(numeric) : c.string(textStart, textEnd);
      if (i === 0) firstSerial = text;
      if (i === entryCount - 1) lastSerial = text;
    }
    const isOwn = compareStoredSerial(bytes, numeric, textStart, textEnd, own) === 0;

    const prefix = c.uint("hostname prefix index", 0, Math.min(prefixes.length - 1, prefixesUsed));
    if (prefix === prefixesUsed) prefixesUsed++;
    const suffixStart = c.text("hostname suffix", 0, MAX_HOSTNAME_BYTES);
    for (let p = suffixStart; p < c.pos; p++)
      if (!isDigit(bytes[p]!)) c.fail("hostname suffix must be digits");
    const hostnameBytes = prefixes[prefix]![1] - prefixes[prefix]![0] + (c.pos - suffixStart);
    if (hostnameBytes < 1 || hostnameBytes > MAX_HOSTNAME_BYTES) c.fail(`hostname of ${hostnameBytes} bytes`);

    let namesHere = 0; // bit set of the name indices of this entry (at most 16 interfaces)
    const seenNames: number[] = [];
    for (let j = 0; j < itemCount - 3; j++) {
      const length = c.array("interface", 3, 4);
      const name = c.uint("interface name index", 0, Math.min(names.length - 1, namesUsed));
      if (name === namesUsed) namesUsed++;
      if (name < 31) {
        if (namesHere & (1 << name)) c.fail("interface twice");
        namesHere |= 1 << name;
      } else {
        if (seenNames.includes(name)) c.fail("interface twice");
        seenNames.push(name);
      }
      const index = c.uint("interface subnet index", 0, Math.min(subnets.length - 1, subnetsUsed));
      if (index === subnetsUsed) subnetsUsed++;
      let addresses = 0;
      if (bytes[c.pos] === 0xf6) {
        c.pos += 1;
      } else {
        if (ipv4Max[index]! < 0) c.fail("IPv4 address in a subnet without IPv4");
        c.uint("interface IPv4 host", 0, ipv4Max[index]!);
        addresses++;
      }
      if (length === 4) {
        const ipv6 = subnets[index]!.ipv6;
        if (ipv6 === undefined) c.fail("IPv6 address in a subnet without IPv6");
        const n = c.head();
        if (c.major() !== 2) c.fail("interface IPv6 host: expected a byte string");
        if (addressFromHostPart(ipv6, bytes.subarray(c.pos, c.pos + n)) === undefined)
          c.fail("IPv6 host part not shortest or too large");
        c.pos += n;
        addresses++;
      }
      if (addresses === 0) c.fail("interface with no address");
    }
    if (isOwn) {
      ownStart = entryStart;
      ownEnd = c.pos;
    }
  }
  c.entry = -1;
  if (prefixesUsed !== prefixes.length || namesUsed !== names.length || subnetsUsed !== subnets.length)
    c.fail("not in canonical form (a table item no entry uses)");

  c.key(Shard.padding);
  if (!bytesEqual(bytes.subarray(c.pos), encodeZeroPadding(bytes.length - c.pos)))
    c.fail("not in canonical form (padding)");

  if (ownStart < 0) return { firstSerial, lastSerial, config: undefined };
  // The own entry, decoded as decodeShard decodes every entry.
  const where = `${what} own entry`;
  const items = decodeCborStrict(bytes.subarray(ownStart, ownEnd), {
    what: where,
    maxBytes: ownEnd - ownStart,
  }).value as unknown[];
  const [prefixStart, prefixEnd] = prefixes[items[1] as number]!;
  const nameStrings = names.map(([start, end]) => c.string(start, end));
  const interfaces = items
    .slice(3)
    .map((itf, j) => decodeInterface(itf, `${where} interfaces[${j}]`, nameStrings, subnets));
  const hsm: HsmEntry = {
    serial: serialFromCbor(items[0], `${where} serial`),
    hostname: c.string(prefixStart, prefixEnd) + (items[2] as string),
    interfaces,
  };
  const used = new Set(interfaces.map((i) => i.subnet));
  return {
    firstSerial,
    lastSerial,
    config: { hsm, subnets: subnets.filter((s) => used.has(s.subnet.name)).map((s) => s.subnet) },
  };
}

/**
 * SHA-256 over the canonical encoding of one HSM's configuration (a one-entry shard with the empty
 * padding, whatever the shard size on the card). The agent puts it in its receipt; the station
 * computes it from the plan and compares, which shows that the HSM applied exactly what was
 * planned for it.
 */
export function networkStateDigest(config: HsmConfig): Uint8Array {
  return sha256(encodeShard({ subnets: config.subnets, hsms: [config.hsm] }));
}
