import { describe, expect, it } from "vitest";
import {
  bytesToIpv6,
  canonicalIp,
  classifyAddress,
  type IpAddress,
  type IpNetwork,
  ipv4ToUint32,
  ipv6ToBytes,
  lastAddress,
  networkContains,
  networksOverlap,
  parseIp,
  parseIpv4,
  parseIpv4Cidr,
  parseIpv6,
  parseIpv6Cidr,
  subnetRole,
  uint32ToIpv4,
} from "../../src/config/ip.js";

function network(cidr: string): IpNetwork {
  const parsed = cidr.includes(":") ? parseIpv6Cidr(cidr) : parseIpv4Cidr(cidr);
  if (!parsed.ok) throw new Error(`bad test network ${cidr}`);
  return parsed.network;
}

function address(text: string): IpAddress {
  const a = parseIp(text);
  if (!a) throw new Error(`bad test address ${text}`);
  return a;
}

describe("parseIpv4", () => {
  it.each(["198.51.100.11", "0.0.0.0", "255.255.255.255"])("accepts the dotted quad %s", (text) => {
    expect(parseIpv4(text)?.text).toBe(text);
  });

  it.each([
    ["010.1.1.1", "a leading zero (octal in some parsers)"],
    ["127.1", "a short form"],
    ["0x7f.0.0.1", "a hex part"],
    ["1.2.3.256", "a part above 255"],
    [" 1.2.3.4", "white space"],
    ["1.2.3.4.5", "five parts"],
    ["2001:db8::1", "an IPv6 address"],
    ["", "nothing"],
  ])("refuses %j (%s)", (text) => {
    expect(parseIpv4(text)).toBeUndefined();
  });

  it("converts to and from uint32 for the encoder", () => {
    expect(ipv4ToUint32("198.51.100.11")).toBe(0xc6336400 + 11);
    expect(ipv4ToUint32("255.255.255.255")).toBe(0xffffffff);
    expect(uint32ToIpv4(0xc633640b)).toBe("198.51.100.11");
    expect(uint32ToIpv4(0)).toBe("0.0.0.0");
    expect(() => ipv4ToUint32("1.2.3")).toThrow(RangeError);
    expect(() => uint32ToIpv4(2 ** 32)).toThrow(RangeError);
  });
});

describe("parseIpv6", () => {
  it.each([
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
    ["2001:0db8:0120:0000:0000:0000:0000:0011", "2001:db8:120::11"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // RFC 5952 §4.2.3: the first of equal runs
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // §4.2.2: a single zero group stays
    ["0:0:0:0:0:0:0:0", "::"],
    ["::1", "::1"],
  ])("writes %s in RFC 5952 form as %s", (text, canonical) => {
    expect(parseIpv6(text)?.text).toBe(canonical);
    expect(canonicalIp(text)).toBe(canonical);
  });

  it("reads a trailing dotted quad as the last 32 bits (not as an IPv4-mapped address)", () => {
    // ipaddr.js 2.5 on its own turns `::1.2.3.4` into `::ffff:1.2.3.4`.
    expect(parseIpv6("::1.2.3.4")?.text).toBe("::102:304");
    expect(parseIpv6("2001:db8::198.51.100.11")?.text).toBe("2001:db8::c633:640b");
    expect(parseIpv6("::ffff:1.2.3.4")?.text).toBe("::ffff:102:304");
    expect(parseIpv6("::1.2.3.04")).toBeUndefined();
  });

  it.each([
    "fe80::1%eth0",
    "2001:db8::/64",
    "2001:00db8::1",
    "1::2::3",
    "1:2:3:4:5:6:7:8:9",
    "12345::",
    "198.51.100.1",
    "",
  ])("refuses %j", (text) => {
    expect(parseIpv6(text)).toBeUndefined();
  });

  it("converts to and from 16 bytes for the encoder", () => {
    const bytes = ipv6ToBytes("2001:db8:120::11");
    expect([...bytes]).toEqual([0x20, 0x01, 0x0d, 0xb8, 0x01, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11]);
    expect(bytesToIpv6(bytes)).toBe("2001:db8:120::11");
    expect(() => ipv6ToBytes("198.51.100.1")).toThrow(RangeError);
    expect(() => bytesToIpv6(new Uint8Array(4))).toThrow(RangeError);
  });
});

describe("CIDR networks", () => {
  it("parses a network and reports host bits", () => {
    const exact = parseIpv4Cidr("198.51.100.0/24");
    expect(exact).toMatchObject({
      ok: true,
      hostBitsSet: false,
      network: { text: "198.51.100.0/24", prefix: 24 },
    });
    const host = parseIpv4Cidr("198.51.100.11/24");
    expect(host).toMatchObject({ ok: true, hostBitsSet: true, host: { text: "198.51.100.11" } });
    expect(parseIpv6Cidr("2001:DB8:120::11/64")).toMatchObject({
      ok: true,
      hostBitsSet: true,
      network: { text: "2001:db8:120::/64" },
    });
  });

  it.each([
    ["198.51.100.0", { kind: "no-prefix" }],
    ["198.51.100.0/abc", { kind: "prefix-not-number", prefixText: "abc" }],
    ["198.51.100.0/", { kind: "prefix-not-number", prefixText: "" }],
    ["198.51.100.0/33", { kind: "prefix-out-of-range", prefix: 33, min: 1, max: 32 }],
    ["0.0.0.0/0", { kind: "prefix-out-of-range", prefix: 0, min: 1, max: 32 }],
    ["198.51.100.300/24", { kind: "bad-address", addressText: "198.51.100.300", otherFamily: false }],
    ["2001:db8::/64", { kind: "bad-address", addressText: "2001:db8::", otherFamily: true }],
  ])("refuses the IPv4 network %j", (text, fault) => {
    expect(parseIpv4Cidr(text)).toEqual({ ok: false, fault });
  });

  it("refuses /129 for IPv6", () => {
    expect(parseIpv6Cidr("2001:db8::/129")).toEqual({
      ok: false,
      fault: { kind: "prefix-out-of-range", prefix: 129, min: 1, max: 128 },
    });
  });

  it("tests containment at every prefix length, IPv4 and IPv6", () => {
    expect(networkContains(network("198.51.100.0/24"), address("198.51.100.255"))).toBe(true);
    expect(networkContains(network("198.51.100.0/24"), address("198.51.101.0"))).toBe(false);
    expect(networkContains(network("198.51.100.128/25"), address("198.51.100.127"))).toBe(false);
    expect(networkContains(network("128.0.0.0/1"), address("255.1.2.3"))).toBe(true);
    expect(networkContains(network("198.51.100.11/32"), address("198.51.100.11"))).toBe(true);
    expect(networkContains(network("2001:db8:120::/64"), address("2001:db8:120::ffff"))).toBe(true);
    expect(networkContains(network("2001:db8:120::/64"), address("2001:db8:121::1"))).toBe(false);
    expect(networkContains(network("2001:db8:120::/52"), address("2001:db8:120:fff::1"))).toBe(true);
    expect(networkContains(network("2001:db8:120::/52"), address("2001:db8:120:1000::1"))).toBe(false);
    expect(networkContains(network("2001:db8::/64"), address("198.51.100.1"))).toBe(false);
    expect(networkContains(network("198.51.100.0/24"), address("::ffff:c633:6401"))).toBe(false);
  });

  it("finds overlaps and last addresses", () => {
    expect(networksOverlap(network("198.51.100.0/24"), network("198.51.100.128/25"))).toBe(true);
    expect(networksOverlap(network("198.51.100.0/25"), network("198.51.100.128/25"))).toBe(false);
    expect(networksOverlap(network("2001:db8::/32"), network("2001:db8:120::/64"))).toBe(true);
    expect(lastAddress(network("198.51.100.0/24")).text).toBe("198.51.100.255");
    expect(lastAddress(network("2001:db8:120::/64")).text).toBe("2001:db8:120:0:ffff:ffff:ffff:ffff");
  });

  it("knows the network and broadcast addresses, and their absence on /31, /32, /127", () => {
    expect(subnetRole(network("198.51.100.0/24"), address("198.51.100.0"))).toBe("network");
    expect(subnetRole(network("198.51.100.0/24"), address("198.51.100.255"))).toBe("broadcast");
    expect(subnetRole(network("198.51.100.0/24"), address("198.51.100.1"))).toBeUndefined();
    expect(subnetRole(network("198.51.100.0/31"), address("198.51.100.0"))).toBeUndefined();
    expect(subnetRole(network("198.51.100.7/32"), address("198.51.100.7"))).toBeUndefined();
    expect(subnetRole(network("2001:db8:120::/64"), address("2001:db8:120::"))).toBe("subnet-router-anycast");
    expect(subnetRole(network("2001:db8:120::/127"), address("2001:db8:120::"))).toBeUndefined();
    expect(subnetRole(network("198.51.100.0/24"), address("203.0.113.0"))).toBeUndefined();
  });
});

describe("classifyAddress", () => {
  it.each([
    ["0.0.0.0", "unspecified", "0.0.0.0/8"],
    ["0.1.2.3", "unspecified", "0.0.0.0/8"],
    ["127.0.0.1", "loopback", "127.0.0.0/8"],
    ["169.254.10.1", "link-local", "169.254.0.0/16"],
    ["224.0.0.251", "multicast", "224.0.0.0/4"],
    ["239.255.255.255", "multicast", "224.0.0.0/4"],
    ["255.255.255.255", "limited-broadcast", "255.255.255.255/32"],
    ["::", "unspecified", "::/128"],
    ["::1", "loopback", "::1/128"],
    ["fe80::1", "link-local", "fe80::/10"],
    ["febf::1", "link-local", "fe80::/10"],
    ["ff02::1", "multicast", "ff00::/8"],
  ])("%s is %s (%s)", (text, cls, range) => {
    expect(classifyAddress(address(text))).toEqual({ cls, range });
  });

  it.each(["198.51.100.11", "10.0.0.1", "192.0.2.1", "2001:db8::1", "fec0::1", "::2"])(
    "%s is an ordinary unicast address",
    (text) => {
      expect(classifyAddress(address(text))).toBeUndefined();
    },
  );
});
