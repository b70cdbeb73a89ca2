/**
 * One test per rule of SPEC.md §7.1 (and the rules this project adds): each breaks a valid plan in
 * exactly one way and expects exactly one problem, with its entry, field and that rule's message.
 */
import { describe, expect, it } from "vitest";
import { checkPlan, parsePlan } from "../../src/config/plan.js";
import { PlanInvalidError, type PlanProblem } from "../../src/errors.js";

type Doc = {
  owner?: unknown;
  subnets: Record<string, unknown>[];
  hsms: Record<string, unknown>[];
  [key: string]: unknown;
};

/** A valid plan: one dual-stack subnet, three HSMs (the third in the shorthand form). */
function validDoc(): Doc {
  return {
    owner: "ACME Bank",
    subnets: [
      {
        name: "hsm-mgmt",
        cidr: "198.51.100.0/24",
        gateway: "198.51.100.1",
        dns: ["198.51.100.53"],
        ntp: ["198.51.100.123"],
        vlan: 120,
        mtu: 1500,
        ipv6_cidr: "2001:db8:120::/64",
        ipv6_gateway: "2001:db8:120::1",
      },
    ],
    hsms: [
      {
        serial: "1234567",
        hostname: "hsm-fra1-a01",
        interfaces: [{ name: "eth0", subnet: "hsm-mgmt", ipv4: "198.51.100.11", ipv6: "2001:db8:120::11" }],
      },
      {
        serial: "1234568",
        hostname: "hsm-fra1-a02",
        interfaces: [{ name: "eth0", subnet: "hsm-mgmt", ipv4: "198.51.100.12" }],
      },
      { serial: "1234569", hostname: "hsm-fra1-a03", subnet: "hsm-mgmt", ipv4: "198.51.100.13" },
    ],
  };
}

function problemsOf(doc: unknown, options: { owner?: string } = {}): readonly PlanProblem[] {
  return checkPlan(JSON.stringify(doc), "json", options).problems;
}

/** The one problem a broken plan must have. */
function expectOnly(doc: unknown, problem: PlanProblem, options: { owner?: string } = {}): void {
  expect(problemsOf(doc, options)).toEqual([problem]);
}

const H0 = "hsms[0] (serial 1234567)";
const H1 = "hsms[1] (serial 1234568)";
const H2 = "hsms[2] (serial 1234569)";
const MGMT = "subnets[hsm-mgmt]";

function iface(doc: Doc, hsm: number, index = 0): Record<string, unknown> {
  return (doc.hsms[hsm]!.interfaces as Record<string, unknown>[])[index]!;
}

describe("the valid plan", () => {
  it("is accepted and normalised into the model", () => {
    const plan = parsePlan(JSON.stringify(validDoc()), "json");
    expect(plan.owner).toBe("ACME Bank");
    expect(plan.subnets).toEqual([
      {
        name: "hsm-mgmt",
        cidr: "198.51.100.0/24",
        gateway: "198.51.100.1",
        dns: ["198.51.100.53"],
        ntp: ["198.51.100.123"],
        vlan: 120,
        mtu: 1500,
        ipv6Cidr: "2001:db8:120::/64",
        ipv6Gateway: "2001:db8:120::1",
      },
    ]);
    expect(plan.hsms[2]).toEqual({
      serial: "1234569",
      hostname: "hsm-fra1-a03",
      interfaces: [{ name: "eth0", subnet: "hsm-mgmt", ipv4: "198.51.100.13" }],
    });
  });

  it("writes addresses in canonical form (IPv6 RFC 5952)", () => {
    const doc = validDoc();
    iface(doc, 0).ipv6 = "2001:0DB8:0120:0000:0000:0000:0000:0011";
    doc.subnets[0]!.ipv6_cidr = "2001:DB8:120:0::/64";
    doc.subnets[0]!.dns = ["2001:DB8:0:0:0:0:0:53"];
    const plan = parsePlan(JSON.stringify(doc), "json");
    expect(plan.hsms[0]!.interfaces[0]!.ipv6).toBe("2001:db8:120::11");
    expect(plan.subnets[0]!.ipv6Cidr).toBe("2001:db8:120::/64");
    expect(plan.subnets[0]!.dns).toEqual(["2001:db8::53"]);
  });
});

describe("serials", () => {
  it("rule: duplicate serials", () => {
    const doc = validDoc();
    doc.hsms[1]!.serial = "1234567";
    expectOnly(doc, {
      entry: "hsms[1] (serial 1234567)",
      field: "serial",
      message: `duplicate serial "1234567": also ${H0}.serial`,
    });
  });

  it.each([
    ["a b", "a space"],
    ["", "nothing"],
    ["x".repeat(33), "33 characters"],
    ["café", "a non-ASCII character"],
    ["a\tb", "a control character"],
  ])("rule: an invalid serial (%j: %s)", (serial) => {
    const doc = validDoc();
    doc.hsms[1]!.serial = serial;
    const entry = /^[\x21-\x7e]{1,64}$/.test(serial) ? `hsms[1] (serial ${serial})` : "hsms[1]";
    expectOnly(doc, {
      entry,
      field: "serial",
      message: `invalid serial ${JSON.stringify(serial)}: use 1-32 printable ASCII characters without spaces`,
    });
  });

  it("accepts 32 printable characters", () => {
    const doc = validDoc();
    doc.hsms[1]!.serial = "!~".repeat(16);
    expect(problemsOf(doc)).toEqual([]);
  });

  it("turns a YAML number into a string and keeps its leading zeros", () => {
    const yaml = `owner: ACME Bank
subnets: [{ name: m, cidr: 198.51.100.0/24 }]
hsms:
  - { serial: 1234567, hostname: a, subnet: m, ipv4: 198.51.100.11 }
  - { serial: 0012345, hostname: b, subnet: m, ipv4: 198.51.100.12 }
`;
    expect(parsePlan(yaml, "yaml").hsms.map((h) => h.serial)).toEqual(["1234567", "0012345"]);
  });

  it("rule: a serial written as a number that is not a plain whole number", () => {
    const yaml = `owner: ACME Bank
subnets: [{ name: m, cidr: 198.51.100.0/24 }]
hsms:
  - { serial: 1e3, hostname: a, subnet: m, ipv4: 198.51.100.11 }
`;
    expect(checkPlan(yaml, "yaml").problems).toEqual([
      {
        entry: "hsms[0] (serial 1e3)",
        field: "serial",
        message: "serial 1e3 is read as a number that is not a plain whole number; write it in quotes",
      },
    ]);
  });

  it("takes a JSON whole number as a serial", () => {
    const doc = validDoc();
    doc.hsms[1]!.serial = 1234568;
    expect(parsePlan(JSON.stringify(doc), "json").hsms[1]!.serial).toBe("1234568");
  });
});

describe("addresses", () => {
  it("rule: the same IPv4 address twice", () => {
    const doc = validDoc();
    iface(doc, 1).ipv4 = "198.51.100.11";
    expectOnly(doc, {
      entry: H1,
      field: "interfaces[0].ipv4",
      message: `198.51.100.11 is already used by ${H0}.interfaces[0].ipv4`,
    });
  });

  it("rule: the same IPv6 address twice, however it is written", () => {
    const doc = validDoc();
    iface(doc, 1).ipv6 = "2001:DB8:120:0:0:0:0:11";
    expectOnly(doc, {
      entry: H1,
      field: "interfaces[0].ipv6",
      message: `2001:db8:120::11 is already used by ${H0}.interfaces[0].ipv6`,
    });
  });

  it("rule: the same address twice, named in the shorthand's own field", () => {
    const doc = validDoc();
    doc.hsms[2]!.ipv4 = "198.51.100.12";
    expectOnly(doc, {
      entry: H2,
      field: "ipv4",
      message: `198.51.100.12 is already used by ${H1}.interfaces[0].ipv4`,
    });
  });

  it("rule: a host address equal to the IPv4 gateway", () => {
    const doc = validDoc();
    iface(doc, 1).ipv4 = "198.51.100.1";
    expectOnly(doc, {
      entry: H1,
      field: "interfaces[0].ipv4",
      message: "198.51.100.1 is the gateway of subnet hsm-mgmt and cannot also be a host address",
    });
  });

  it("rule: a host address equal to the IPv6 gateway", () => {
    const doc = validDoc();
    iface(doc, 0).ipv6 = "2001:db8:120::1";
    expectOnly(doc, {
      entry: H0,
      field: "interfaces[0].ipv6",
      message: "2001:db8:120::1 is the gateway of subnet hsm-mgmt and cannot also be a host address",
    });
  });

  it("rule: an IPv4 address outside its subnet", () => {
    const doc = validDoc();
    iface(doc, 1).ipv4 = "203.0.113.12";
    expectOnly(doc, {
      entry: H1,
      field: "interfaces[0].ipv4",
      message: "203.0.113.12 is outside subnet hsm-mgmt (198.51.100.0/24)",
    });
  });

  it("rule: an IPv6 address outside its subnet", () => {
    const doc = validDoc();
    iface(doc, 0).ipv6 = "2001:db8:130::11";
    expectOnly(doc, {
      entry: H0,
      field: "interfaces[0].ipv6",
      message: "2001:db8:130::11 is outside subnet hsm-mgmt (2001:db8:120::/64)",
    });
  });

  it("rule: the network address used as a host", () => {
    const doc = validDoc();
    iface(doc, 1).ipv4 = "198.51.100.0";
    expectOnly(doc, {
      entry: H1,
      field: "interfaces[0].ipv4",
      message: "198.51.100.0 is the network address of 198.51.100.0/24 and cannot be a host address",
    });
  });

  it("rule: the broadcast address used as a host", () => {
    const doc = validDoc();
    iface(doc, 1).ipv4 = "198.51.100.255";
    expectOnly(doc, {
      entry: H1,
      field: "interfaces[0].ipv4",
      message: "198.51.100.255 is the broadcast address of 198.51.100.0/24 and cannot be a host address",
    });
  });

  it("rule: the IPv6 network (subnet-router anycast) address used as a host", () => {
    const doc = validDoc();
    iface(doc, 0).ipv6 = "2001:db8:120::";
    expectOnly(doc, {
      entry: H0,
      field: "interfaces[0].ipv6",
      message:
        "2001:db8:120:: is the subnet-router anycast address (the IPv6 network address) of 2001:db8:120::/64 " +
        "and cannot be a host address",
    });
  });

  it("accepts both addresses of a /31 (RFC 3021)", () => {
    const doc = validDoc();
    doc.subnets.push({ name: "p2p", cidr: "192.0.2.0/31" });
    doc.hsms.push({ serial: "9", hostname: "p1", subnet: "p2p", ipv4: "192.0.2.0" });
    doc.hsms.push({ serial: "10", hostname: "p2", subnet: "p2p", ipv4: "192.0.2.1" });
    expect(problemsOf(doc)).toEqual([]);
  });

  it.each([
    ["127.0.0.1", "a loopback address (127.0.0.0/8)"],
    ["224.0.0.5", "a multicast address (224.0.0.0/4)"],
    ["169.254.0.7", "a link-local address (169.254.0.0/16)"],
    ["0.0.0.0", "an unspecified address (0.0.0.0/8)"],
    ["255.255.255.255", "the limited broadcast address (255.255.255.255/32)"],
  ])("rule: a special IPv4 address used as a host (%s)", (address, what) => {
    const doc = validDoc();
    iface(doc, 1).ipv4 = address;
    expectOnly(doc, {
      entry: H1,
      field: "interfaces[0].ipv4",
      message: `${address} is ${what} and cannot be a host address`,
    });
  });

  it.each([
    ["::1", "a loopback address (::1/128)"],
    ["ff02::1", "a multicast address (ff00::/8)"],
    ["fe80::11", "a link-local address (fe80::/10)"],
    ["::", "an unspecified address (::/128)"],
  ])("rule: a special IPv6 address used as a host (%s)", (address, what) => {
    const doc = validDoc();
    iface(doc, 0).ipv6 = address;
    expectOnly(doc, {
      entry: H0,
      field: "interfaces[0].ipv6",
      message: `${address} is ${what} and cannot be a host address`,
    });
  });

  it.each([
    ["198.51.100.011", 4, '"198.51.100.011" is not an IPv4 address'],
    ["hsm-a", 4, '"hsm-a" is not an IPv4 address'],
    ["2001:db8:120::12", 4, "2001:db8:120::12 is an IPv6 address, not IPv4"],
  ])("rule: an interface address that is not an address (%j)", (text, _version, message) => {
    const doc = validDoc();
    iface(doc, 1).ipv4 = text;
    expectOnly(doc, { entry: H1, field: "interfaces[0].ipv4", message });
  });

  it("rule: ipv6 on an interface whose subnet has no ipv6_cidr", () => {
    const doc = validDoc();
    delete doc.subnets[0]!.ipv6_cidr;
    delete doc.subnets[0]!.ipv6_gateway;
    expectOnly(doc, {
      entry: H0,
      field: "interfaces[0].ipv6",
      message: "subnet hsm-mgmt has no ipv6_cidr, so an interface on it cannot have an IPv6 address",
    });
  });

  it("rule: ipv4 on an interface whose subnet has no IPv4 cidr", () => {
    const doc = validDoc();
    doc.subnets.push({ name: "v6only", ipv6_cidr: "2001:db8:140::/64" });
    doc.hsms.push({ serial: "9", hostname: "v6", subnet: "v6only", ipv4: "192.0.2.9" });
    expectOnly(doc, {
      entry: "hsms[3] (serial 9)",
      field: "ipv4",
      message: "subnet v6only has no IPv4 network (cidr), so an interface on it cannot have an IPv4 address",
    });
  });

  it("rule: an interface with neither ipv4 nor ipv6", () => {
    const doc = validDoc();
    delete iface(doc, 1).ipv4;
    expectOnly(doc, {
      entry: H1,
      field: "interfaces[0]",
      message: "has neither an IPv4 nor an IPv6 address",
    });
  });

  it("rule: an interface with neither, in the shorthand", () => {
    const doc = validDoc();
    delete doc.hsms[2]!.ipv4;
    expectOnly(doc, { entry: H2, field: "", message: "has neither an IPv4 nor an IPv6 address" });
  });
});

describe("gateways", () => {
  it("rule: an IPv4 gateway outside its subnet", () => {
    const doc = validDoc();
    doc.subnets[0]!.gateway = "203.0.113.1";
    expectOnly(doc, {
      entry: MGMT,
      field: "gateway",
      message: "gateway 203.0.113.1 is outside the subnet 198.51.100.0/24",
    });
  });

  it("rule: an IPv6 gateway outside its subnet", () => {
    const doc = validDoc();
    doc.subnets[0]!.ipv6_gateway = "2001:db8:130::1";
    expectOnly(doc, {
      entry: MGMT,
      field: "ipv6_gateway",
      message: "gateway 2001:db8:130::1 is outside the subnet 2001:db8:120::/64",
    });
  });

  it("accepts a link-local IPv6 gateway (routers are reached by their link-local address)", () => {
    const doc = validDoc();
    doc.subnets[0]!.ipv6_gateway = "fe80::1";
    expect(parsePlan(JSON.stringify(doc), "json").subnets[0]!.ipv6Gateway).toBe("fe80::1");
  });

  it("rule: a gateway on the network or broadcast address", () => {
    const doc = validDoc();
    doc.subnets[0]!.gateway = "198.51.100.255";
    expectOnly(doc, {
      entry: MGMT,
      field: "gateway",
      message: "198.51.100.255 is the broadcast address of 198.51.100.0/24 and cannot be a gateway",
    });
  });

  it("rule: a gateway in a special range", () => {
    const doc = validDoc();
    doc.subnets[0]!.ipv6_gateway = "ff02::2";
    expectOnly(doc, {
      entry: MGMT,
      field: "ipv6_gateway",
      message: "ff02::2 is a multicast address (ff00::/8) and cannot be a gateway",
    });
  });

  it("rule: a gateway without its network", () => {
    const doc = validDoc();
    delete doc.subnets[0]!.ipv6_cidr;
    delete iface(doc, 0).ipv6;
    expectOnly(doc, {
      entry: MGMT,
      field: "ipv6_gateway",
      message: "ipv6_gateway needs ipv6_cidr on the same subnet",
    });
  });
});

describe("hostnames", () => {
  it.each([
    ["-hsm", 'label "-hsm" starts or ends with a hyphen'],
    ["hsm-", 'label "hsm-" starts or ends with a hyphen'],
    ["hsm_a01", 'label "hsm_a01" has a character other than a letter, digit or hyphen'],
    ["hsm a01", 'label "hsm a01" has a character other than a letter, digit or hyphen'],
    ["hsm..example", "it has an empty label (a leading, trailing or double dot)"],
    ["hsm.example.", "it has an empty label (a leading, trailing or double dot)"],
    ["", "it is empty"],
    [`${"a".repeat(64)}.example`, `label "${"a".repeat(64)}" is longer than 63 characters`],
    [Array(64).fill("abc").join("."), "it is 255 characters long, more than 253"],
  ])("rule: an invalid hostname (%j)", (hostname, reason) => {
    const doc = validDoc();
    doc.hsms[1]!.hostname = hostname;
    const shown = JSON.stringify(hostname.length > 64 ? `${hostname.slice(0, 61)}...` : hostname);
    expectOnly(doc, {
      entry: H1,
      field: "hostname",
      message: `invalid hostname ${shown} (RFC 1123): ${reason}`,
    });
  });

  it.each(["a", "1hsm", "hsm-fra1-a01.dc.example.com", `${"a".repeat(63)}.b`])(
    "accepts the hostname %j",
    (hostname) => {
      const doc = validDoc();
      doc.hsms[1]!.hostname = hostname;
      expect(problemsOf(doc)).toEqual([]);
    },
  );

  it("rule: a duplicate hostname, compared without case", () => {
    const doc = validDoc();
    doc.hsms[2]!.hostname = "HSM-fra1-A01";
    expectOnly(doc, {
      entry: H2,
      field: "hostname",
      message: `duplicate hostname "HSM-fra1-A01" (hostnames are case-insensitive): also ${H0}.hostname`,
    });
  });
});

describe("prefixes", () => {
  it.each([
    ["cidr", "198.51.100.0/33", "bad prefix: /33 is out of range for IPv4 (1-32)"],
    ["cidr", "198.51.100.0/x", 'bad prefix: "/x" is not a number'],
    ["cidr", "198.51.100.0", 'bad prefix: "198.51.100.0" has no "/length"'],
    [
      "cidr",
      "198.51.100.7/24",
      "bad prefix: 198.51.100.7/24 has host bits set (the network is 198.51.100.0/24)",
    ],
    ["ipv6_cidr", "2001:db8:120::/129", "bad prefix: /129 is out of range for IPv6 (1-128)"],
    [
      "ipv6_cidr",
      "2001:db8:120::1/64",
      "bad prefix: 2001:db8:120::1/64 has host bits set (the network is 2001:db8:120::/64)",
    ],
  ])("rule: a bad prefix (%s %s)", (field, value, message) => {
    const doc = validDoc();
    doc.subnets[0]![field] = value;
    // The subnet's network is unusable, so its hosts are not checked against it (no cascade).
    expectOnly(doc, { entry: MGMT, field, message });
  });

  it.each([
    [
      "cidr",
      "198.51.100.300/24",
      '"198.51.100.300/24" is not an IPv4 network: "198.51.100.300" is not an IPv4 address',
    ],
    ["cidr", "2001:db8::/64", '"2001:db8::/64" is an IPv6 network, not IPv4'],
    ["ipv6_cidr", "198.51.100.0/24", '"198.51.100.0/24" is an IPv4 network, not IPv6'],
  ])("rule: a subnet network that is not one (%s %s)", (field, value, message) => {
    const doc = validDoc();
    doc.subnets[0]![field] = value;
    expectOnly(doc, { entry: MGMT, field, message });
  });
});

describe("subnets", () => {
  it("rule: an unknown subnet", () => {
    const doc = validDoc();
    iface(doc, 1).subnet = "hsm-mgnt";
    expectOnly(doc, {
      entry: H1,
      field: "interfaces[0].subnet",
      message: 'unknown subnet "hsm-mgnt" (defined: hsm-mgmt)',
    });
  });

  it("rule: a duplicate subnet name", () => {
    const doc = validDoc();
    doc.subnets.push({ name: "hsm-mgmt", cidr: "203.0.113.0/24" });
    expectOnly(doc, {
      entry: "subnets[1]",
      field: "name",
      message: 'duplicate subnet name "hsm-mgmt": also subnets[0].name',
    });
  });

  it("rule: overlapping subnets", () => {
    const doc = validDoc();
    doc.subnets.push({ name: "half", cidr: "198.51.100.128/25" });
    expectOnly(doc, {
      entry: "subnets[half]",
      field: "cidr",
      message: "198.51.100.128/25 overlaps subnet hsm-mgmt (198.51.100.0/24)",
    });
  });

  it("rule: a subnet with neither cidr nor ipv6_cidr", () => {
    const doc = validDoc();
    doc.subnets.push({ name: "empty" });
    expectOnly(doc, { entry: "subnets[empty]", field: "", message: "has neither cidr nor ipv6_cidr" });
  });

  it.each([0, 4095, 1.5])("rule: a bad VLAN (%s)", (vlan) => {
    const doc = validDoc();
    doc.subnets[0]!.vlan = vlan;
    expectOnly(doc, {
      entry: MGMT,
      field: "vlan",
      message: `VLAN ${vlan} is invalid: use a whole number from 1 to 4094`,
    });
  });

  it.each([1, 4094])("accepts VLAN %s", (vlan) => {
    const doc = validDoc();
    doc.subnets[0]!.vlan = vlan;
    expect(problemsOf(doc)).toEqual([]);
  });

  it.each([
    [575, false, "MTU 575 is outside the supported range 576-9216"],
    [9217, false, "MTU 9217 is outside the supported range 576-9216"],
    [1279, true, "MTU 1279 is outside the supported range 1280-9216 (IPv6 needs at least 1280)"],
  ])("rule: a bad MTU (%s, IPv6: %s)", (mtu, ipv6, message) => {
    const doc = validDoc();
    doc.subnets[0]!.mtu = mtu;
    if (!ipv6) {
      delete doc.subnets[0]!.ipv6_cidr;
      delete doc.subnets[0]!.ipv6_gateway;
      delete iface(doc, 0).ipv6;
    }
    expectOnly(doc, { entry: MGMT, field: "mtu", message });
  });

  it("accepts MTU 576 on an IPv4-only subnet and 9216 anywhere", () => {
    const doc = validDoc();
    doc.subnets.push({ name: "small", cidr: "192.0.2.0/24", mtu: 576 });
    doc.subnets[0]!.mtu = 9216;
    expect(problemsOf(doc)).toEqual([]);
  });

  it("rule: a DNS or NTP server that is not an IP address", () => {
    const doc = validDoc();
    doc.subnets[0]!.ntp = ["198.51.100.123", "pool.ntp.example"];
    expectOnly(doc, { entry: MGMT, field: "ntp[1]", message: '"pool.ntp.example" is not an IP address' });
  });
});

describe("interfaces", () => {
  it("rule: duplicate interface names within an HSM", () => {
    const doc = validDoc();
    doc.subnets.push({ name: "ntls", cidr: "203.0.113.0/24" });
    (doc.hsms[1]!.interfaces as unknown[]).push({ name: "eth0", subnet: "ntls", ipv4: "203.0.113.12" });
    expectOnly(doc, {
      entry: H1,
      field: "interfaces[1].name",
      message: `duplicate interface name "eth0" on this HSM: also ${H1}.interfaces[0].name`,
    });
  });

  it("rule: an invalid interface name", () => {
    const doc = validDoc();
    iface(doc, 1).name = "eth0/1";
    expectOnly(doc, {
      entry: H1,
      field: "interfaces[0].name",
      message:
        "invalid interface name \"eth0/1\": use 1-15 letters, digits, '.', '-' or '_', starting with a letter or digit",
    });
  });

  it("rule: an HSM with no interfaces", () => {
    const doc = validDoc();
    doc.hsms[1]!.interfaces = [];
    expectOnly(doc, { entry: H1, field: "interfaces", message: "has no interfaces" });
  });

  it("rule: an HSM with neither interfaces nor the shorthand", () => {
    const doc = validDoc();
    delete doc.hsms[1]!.interfaces;
    expectOnly(doc, {
      entry: H1,
      field: "",
      message: "needs interfaces (or the shorthand: subnet with ipv4 and/or ipv6)",
    });
  });

  it("rule: an HSM with both interfaces and the shorthand", () => {
    const doc = validDoc();
    doc.hsms[1]!.ipv4 = "198.51.100.99";
    expectOnly(doc, {
      entry: H1,
      field: "",
      message: "give either interfaces or the shorthand subnet/ipv4/ipv6, not both",
    });
  });
});

describe("owner", () => {
  it("rule: an empty owner", () => {
    const doc = validDoc();
    doc.owner = "  ";
    expectOnly(doc, { entry: "plan", field: "owner", message: "must not be empty" });
  });

  it("rule: a missing owner", () => {
    const doc = validDoc();
    delete doc.owner;
    expectOnly(doc, { entry: "plan", field: "owner", message: "is required" });
  });

  it("takes a missing owner from --owner", () => {
    const doc = validDoc();
    delete doc.owner;
    expect(parsePlan(JSON.stringify(doc), "json", { owner: "ACME Bank" }).owner).toBe("ACME Bank");
  });

  it("rule: an owner that differs from --owner", () => {
    expectOnly(
      validDoc(),
      {
        entry: "plan",
        field: "owner",
        message: 'the plan\'s owner "ACME Bank" differs from --owner "Other Bank"',
      },
      { owner: "Other Bank" },
    );
  });

  it("rule: an owner with control characters", () => {
    const doc = validDoc();
    doc.owner = "ACME\u0007Bank";
    expectOnly(doc, { entry: "plan", field: "owner", message: "must not contain control characters" });
  });
});

describe("shape", () => {
  it("rule: an unknown field", () => {
    const doc = validDoc();
    iface(doc, 0).ipv4_gateway = "198.51.100.1";
    expectOnly(doc, {
      entry: H0,
      field: "interfaces[0].ipv4_gateway",
      message: "unknown field (expected one of: name, subnet, ipv4, ipv6)",
    });
  });

  it("rule: a value of the wrong type", () => {
    const doc = validDoc();
    doc.subnets[0]!.dns = "198.51.100.53";
    expectOnly(doc, { entry: MGMT, field: "dns", message: 'must be a list, not the string "198.51.100.53"' });
  });

  it("rule: a missing required field", () => {
    const doc = validDoc();
    delete doc.hsms[1]!.hostname;
    expectOnly(doc, { entry: H1, field: "hostname", message: "is required" });
  });

  it("rule: no HSMs", () => {
    const doc = validDoc();
    doc.hsms = [];
    expectOnly(doc, { entry: "plan", field: "hsms", message: "must list at least one HSM" });
  });

  it("rule: a document that is not a mapping", () => {
    expect(checkPlan("[1, 2]", "json").problems).toEqual([
      { entry: "plan", field: "", message: "must be a mapping with owner, subnets and hsms, not a list" },
    ]);
  });

  it("does not report the hosts of a subnet with a wrong shape again", () => {
    const doc = validDoc();
    doc.subnets[0]!.vlan = "120";
    expect(problemsOf(doc)).toEqual([
      { entry: MGMT, field: "vlan", message: 'must be a number, not the string "120"' },
    ]);
  });
});

describe("unparseable input", () => {
  it("rule: unparseable YAML, with its line", () => {
    const yaml = "owner: ACME Bank\nsubnets: [\nhsms: []\n";
    const problems = checkPlan(yaml, "yaml").problems;
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ entry: "plan", field: "" });
    expect(problems[0]!.message).toMatch(/^not valid YAML \(line \d+, column \d+\): \S/);
  });

  it("rule: unparseable YAML names the usual IPv6 trap (a plain scalar ending in ::)", () => {
    const yaml = "owner: x\nsubnets:\n  - name: m\n    ipv6_cidr: 2001:db8::\n";
    expect(checkPlan(yaml, "yaml").problems[0]!.message).toMatch(/^not valid YAML \(line 4, column \d+\)/);
  });

  it("rule: a duplicate YAML key", () => {
    const problems = checkPlan("owner: a\nowner: b\n", "yaml").problems;
    expect(problems).toEqual([
      { entry: "plan", field: "", message: "not valid YAML (line 2, column 1): Map keys must be unique" },
    ]);
  });

  it("rule: unparseable JSON, with its line", () => {
    const problems = checkPlan('{\n  "owner": "ACME Bank",\n  "subnets": [,]\n}', "json").problems;
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ entry: "plan", field: "" });
    expect(problems[0]!.message).toMatch(/^not valid JSON \(line 3, column \d+\): Unexpected token ','$/);
  });

  it("rule: unparseable CSV, with its line", () => {
    const csv = 'serial,hostname,ipv4_cidr\n1,"a,198.51.100.11/24\n';
    const problems = checkPlan(csv, "csv", { owner: "ACME Bank" }).problems;
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ entry: "plan", field: "" });
    expect(problems[0]!.message).toMatch(/^not valid CSV \(line 2\): Quote Not Closed/);
  });

  it("rule: bytes that are not UTF-8", () => {
    expect(checkPlan(new Uint8Array([0x6f, 0xff, 0xfe]), "yaml").problems).toEqual([
      { entry: "plan", field: "", message: "is not UTF-8 text" },
    ]);
  });
});

describe("every problem at once", () => {
  it("reports all problems of a plan, in input order", () => {
    const doc = validDoc();
    doc.owner = "";
    doc.subnets[0]!.vlan = 5000;
    doc.hsms[1]!.serial = "1234567";
    doc.hsms[1]!.hostname = "hsm_bad";
    iface(doc, 1).ipv4 = "198.51.100.11";
    doc.hsms[2]!.subnet = "nowhere";
    const problems = problemsOf(doc);
    expect(problems.map((p) => `${p.entry}|${p.field}`)).toEqual([
      "plan|owner",
      `${MGMT}|vlan`,
      "hsms[1] (serial 1234567)|serial",
      "hsms[1] (serial 1234567)|hostname",
      "hsms[1] (serial 1234567)|interfaces[0].ipv4",
      `${H2}|subnet`,
    ]);
    expect(() => parsePlan(JSON.stringify(doc), "json")).toThrow(PlanInvalidError);
    try {
      parsePlan(JSON.stringify(doc), "json");
    } catch (error) {
      expect((error as PlanInvalidError).problems).toEqual(problems);
      expect((error as PlanInvalidError).exitCode).toBe(23);
    }
  });

  it("keeps checking the other entries when one has a wrong shape", () => {
    const doc = validDoc();
    doc.hsms[0]!.hostname = 42;
    iface(doc, 1).ipv4 = "198.51.100.300";
    const problems = problemsOf(doc);
    expect(problems).toEqual([
      { entry: H0, field: "hostname", message: "must be a string, not the number 42" },
      { entry: H1, field: "interfaces[0].ipv4", message: '"198.51.100.300" is not an IPv4 address' },
    ]);
  });
});
