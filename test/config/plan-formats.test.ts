/** YAML, JSON and CSV in, one model out: the examples, format detection, files, and CSV's own rules. */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  checkPlan,
  loadPlanFile,
  parsePlan,
  planFormatFromPath,
  planToJson,
  planToYaml,
  sniffPlanFormat,
  summarizePlan,
} from "../../src/config/plan.js";
import { csvSubnetName, planToCsv } from "../../src/config/plan-csv.js";
import { PlanInvalidError, type PlanProblem, UsageError } from "../../src/errors.js";

const EXAMPLES = fileURLToPath(new URL("../../examples/", import.meta.url));
const OWNER = { owner: "ACME Bank" };

describe("examples", () => {
  it("rack-4 is the same plan in YAML, JSON and CSV", async () => {
    const yaml = await loadPlanFile(join(EXAMPLES, "rack-4.yaml"));
    const json = await loadPlanFile(join(EXAMPLES, "rack-4.json"));
    const csv = await loadPlanFile(join(EXAMPLES, "rack-4.csv"), OWNER);
    expect(json).toEqual(yaml);
    expect(csv).toEqual(yaml);
    expect(summarizePlan(yaml)).toEqual({
      owner: "ACME Bank",
      hsms: 4,
      subnets: 1,
      interfaces: 4,
      ipv4Addresses: 4,
      ipv6Addresses: 0,
    });
    expect(yaml.hsms.map((h) => h.hostname)).toEqual([
      "hsm-fra1-a01",
      "hsm-fra1-a02",
      "hsm-fra1-a03",
      "hsm-fra1-a04",
    ]);
    expect(yaml.subnets[0]).toEqual({
      name: csvSubnetName("198.51.100.0/24"),
      cidr: "198.51.100.0/24",
      gateway: "198.51.100.1",
      dns: ["198.51.100.53"],
      ntp: ["198.51.100.123"],
      vlan: 120,
      mtu: 1500,
    });
  });

  it("room-40 has 40 dual-stack HSMs with two interfaces on two subnets", async () => {
    const plan = await loadPlanFile(join(EXAMPLES, "room-40.yaml"));
    expect(summarizePlan(plan)).toEqual({
      owner: "ACME Bank",
      hsms: 40,
      subnets: 2,
      interfaces: 80,
      ipv4Addresses: 80,
      ipv6Addresses: 80,
    });
    expect(plan.subnets.map((s) => [s.name, s.cidr, s.ipv6Cidr, s.vlan, s.mtu])).toEqual([
      ["hsm-mgmt", "198.51.100.0/24", "2001:db8:120::/64", 120, 1500],
      ["hsm-ntls", "203.0.113.0/24", "2001:db8:130::/64", 130, 9000],
    ]);
    expect(plan.hsms[0]).toEqual({
      serial: "1500001",
      hostname: "hsm-fra1-a01",
      interfaces: [
        { name: "eth0", subnet: "hsm-mgmt", ipv4: "198.51.100.101", ipv6: "2001:db8:120::101" },
        { name: "eth1", subnet: "hsm-ntls", ipv4: "203.0.113.101", ipv6: "2001:db8:130::101" },
      ],
    });
  });

  it("room-40 survives writing as YAML and JSON", async () => {
    const plan = await loadPlanFile(join(EXAMPLES, "room-40.yaml"));
    expect(parsePlan(planToYaml(plan), "yaml")).toEqual(plan);
    expect(parsePlan(planToJson(plan), "json")).toEqual(plan);
  });

  it("rack-4 survives writing as CSV", async () => {
    const plan = await loadPlanFile(join(EXAMPLES, "rack-4.yaml"));
    expect(parsePlan(planToCsv(plan), "csv", OWNER)).toEqual(plan);
  });
});

describe("format", () => {
  it("comes from the file extension", () => {
    expect(planFormatFromPath("a/b.yaml")).toBe("yaml");
    expect(planFormatFromPath("b.YML")).toBe("yaml");
    expect(planFormatFromPath("b.json")).toBe("json");
    expect(planFormatFromPath("b.csv")).toBe("csv");
    expect(planFormatFromPath("plan")).toBeUndefined();
  });

  it("is sniffed from the content", () => {
    expect(sniffPlanFormat('  {"owner": "x"}')).toBe("json");
    expect(sniffPlanFormat("serial,hostname,ipv4_cidr\n1,a,198.51.100.11/24\n")).toBe("csv");
    expect(sniffPlanFormat('"Serial","Hostname","ipv4_cidr"\n')).toBe("csv");
    expect(sniffPlanFormat("owner: x\nsubnets: []\n")).toBe("yaml");
    expect(sniffPlanFormat("# serial, hostname, ipv4_cidr: a comment\nowner: x\n")).toBe("yaml");
  });

  it("auto-detected content reads like the named format", async () => {
    const { readFile } = await import("node:fs/promises");
    for (const name of ["rack-4.yaml", "rack-4.json", "rack-4.csv"]) {
      const text = await readFile(join(EXAMPLES, name), "utf8");
      expect(checkPlan(text, "auto", OWNER).problems).toEqual([]);
    }
  });

  it("refuses an unknown format name as a usage error", () => {
    expect(() => parsePlan("", "xml" as never)).toThrow(UsageError);
  });

  it("reads bytes as UTF-8 and ignores a byte order mark", () => {
    const text =
      "\ufeffowner: Bänk\nsubnets: [{ name: m, cidr: 198.51.100.0/24 }]\nhsms: [{ serial: '1', hostname: a, subnet: m, ipv4: 198.51.100.9 }]\n";
    expect(parsePlan(new TextEncoder().encode(text), "yaml").owner).toBe("Bänk");
    expect(parsePlan(text, "yaml").owner).toBe("Bänk");
  });

  it("gives a JSON syntax error its line and column", () => {
    expect(checkPlan('{"owner": "x",\n "subnets": [] "hsms": []}', "json").problems).toEqual([
      {
        entry: "plan",
        field: "",
        message: "not valid JSON (line 2, column 16): Expected ',' or '}' after property value",
      },
    ]);
  });

  it("refuses YAML alias bombs", () => {
    const lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"];
    for (let i = 0; i < 12; i++)
      lines.push(
        `${"bcdefghijklmn"[i]}: &${"bcdefghijklmn"[i]} [*${i === 0 ? "a" : "bcdefghijklmn"[i - 1]}, *${i === 0 ? "a" : "bcdefghijklmn"[i - 1]}, *${i === 0 ? "a" : "bcdefghijklmn"[i - 1]}, *${i === 0 ? "a" : "bcdefghijklmn"[i - 1]}, *${i === 0 ? "a" : "bcdefghijklmn"[i - 1]}, *${i === 0 ? "a" : "bcdefghijklmn"[i - 1]}, *${i === 0 ? "a" : "bcdefghijklmn"[i - 1]}, *${i === 0 ? "a" : "bcdefghijklmn"[i - 1]}, *${i === 0 ? "a" : "bcdefghijklmn"[i - 1]}]`,
      );
    const problems = checkPlan(lines.join("\n"), "yaml").problems;
    expect(problems).toHaveLength(1);
    expect(problems[0]!.message).toMatch(/^not valid YAML: /);
  });
});

describe("loadPlanFile", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "hsm-onboard-plan-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("is a usage error for a missing file, naming it", async () => {
    const path = join(dir, "missing.yaml");
    await expect(loadPlanFile(path)).rejects.toThrow(
      new UsageError(`cannot read plan ${path}: no such file`),
    );
  });

  it("is a usage error for a directory", async () => {
    await expect(loadPlanFile(dir)).rejects.toThrow(
      new UsageError(`cannot read plan ${dir}: it is a directory`),
    );
  });

  it("sniffs a file without a known extension", async () => {
    const path = join(dir, "plan.txt");
    await writeFile(path, "serial,hostname,ipv4_cidr\n1,a,198.51.100.11/24\n");
    expect((await loadPlanFile(path, OWNER)).hsms).toHaveLength(1);
  });

  it("throws PlanInvalidError with every problem", async () => {
    const path = join(dir, "bad.json");
    await writeFile(path, JSON.stringify({ owner: "", subnets: [], hsms: [] }));
    const error = await loadPlanFile(path).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PlanInvalidError);
    expect((error as PlanInvalidError).problems).toEqual([
      { entry: "plan", field: "owner", message: "must not be empty" },
      { entry: "plan", field: "hsms", message: "must list at least one HSM" },
    ]);
  });
});

const HEADER = "serial,hostname,interface,ipv4_cidr,gateway,dns,ntp,vlan,mtu,ipv6_cidr,ipv6_gateway";

function csv(...rows: string[]): string {
  return `${[HEADER, ...rows].join("\n")}\n`;
}

function csvProblems(text: string, options: { owner?: string } = OWNER): readonly PlanProblem[] {
  return checkPlan(text, "csv", options).problems;
}

const MGMT_CELLS = "198.51.100.1,198.51.100.53,198.51.100.123,120,1500";
const MGMT6 = "2001:db8:120::1";

describe("CSV", () => {
  it("derives subnets and joins rows of one serial into one HSM", () => {
    const plan = parsePlan(
      csv(
        `1,hsm-a01,eth0,198.51.100.11/24,${MGMT_CELLS},2001:db8:120::11/64,${MGMT6}`,
        "1,hsm-a01,eth1,203.0.113.11/24,203.0.113.1,,,130,9000,,",
        `2,hsm-a02,,198.51.100.12/24,${MGMT_CELLS},2001:db8:120::12/64,${MGMT6}`,
        `3,hsm-a03,eth0,,${MGMT_CELLS},2001:db8:120::13/64,${MGMT6}`,
      ),
      "csv",
      OWNER,
    );
    expect(plan).toEqual({
      owner: "ACME Bank",
      subnets: [
        {
          name: "net-198.51.100.0-24",
          cidr: "198.51.100.0/24",
          gateway: "198.51.100.1",
          dns: ["198.51.100.53"],
          ntp: ["198.51.100.123"],
          vlan: 120,
          mtu: 1500,
          ipv6Cidr: "2001:db8:120::/64",
          ipv6Gateway: "2001:db8:120::1",
        },
        {
          name: "net-203.0.113.0-24",
          cidr: "203.0.113.0/24",
          gateway: "203.0.113.1",
          dns: [],
          ntp: [],
          vlan: 130,
          mtu: 9000,
        },
      ],
      hsms: [
        {
          serial: "1",
          hostname: "hsm-a01",
          interfaces: [
            { name: "eth0", subnet: "net-198.51.100.0-24", ipv4: "198.51.100.11", ipv6: "2001:db8:120::11" },
            { name: "eth1", subnet: "net-203.0.113.0-24", ipv4: "203.0.113.11" },
          ],
        },
        {
          serial: "2",
          hostname: "hsm-a02",
          interfaces: [
            { name: "eth0", subnet: "net-198.51.100.0-24", ipv4: "198.51.100.12", ipv6: "2001:db8:120::12" },
          ],
        },
        // An IPv6-only row joins the subnet that carries its IPv6 network.
        {
          serial: "3",
          hostname: "hsm-a03",
          interfaces: [{ name: "eth0", subnet: "net-198.51.100.0-24", ipv6: "2001:db8:120::13" }],
        },
      ],
    });
  });

  it("forms an IPv6-only subnet from IPv6-only rows", () => {
    const plan = parsePlan("serial,hostname,ipv6_cidr\n1,a,2001:db8:140::5/64\n", "csv", OWNER);
    expect(plan.subnets).toEqual([
      { name: "net-2001:db8:140::-64", ipv6Cidr: "2001:db8:140::/64", dns: [], ntp: [] },
    ]);
  });

  it("takes columns in any order, in any case, quoted, with CRLF and a BOM", () => {
    const text = '\ufeffIPv4_CIDR,Hostname,"Serial"\r\n"198.51.100.11/24", hsm-a01 ,"0012"\r\n';
    expect(parsePlan(text, "csv", OWNER).hsms).toEqual([
      {
        serial: "0012",
        hostname: "hsm-a01",
        interfaces: [{ name: "eth0", subnet: "net-198.51.100.0-24", ipv4: "198.51.100.11" }],
      },
    ]);
  });

  it("rule: a CSV plan needs --owner", () => {
    expect(csvProblems(csv(`1,a,eth0,198.51.100.11/24,${MGMT_CELLS},,`), {})).toEqual([
      { entry: "plan", field: "owner", message: "is required: pass --owner NAME with a CSV plan" },
    ]);
  });

  it.each([
    [
      "gateway",
      `2,b,eth0,198.51.100.12/24,198.51.100.254,198.51.100.53,198.51.100.123,120,1500,,`,
      '"198.51.100.1"',
      '"198.51.100.254"',
    ],
    [
      "dns",
      `2,b,eth0,198.51.100.12/24,198.51.100.1,198.51.100.54,198.51.100.123,120,1500,,`,
      '"198.51.100.53"',
      '"198.51.100.54"',
    ],
    [
      "ntp",
      `2,b,eth0,198.51.100.12/24,198.51.100.1,198.51.100.53,,120,1500,,`,
      '"198.51.100.123"',
      "an empty cell",
    ],
    [
      "vlan",
      `2,b,eth0,198.51.100.12/24,198.51.100.1,198.51.100.53,198.51.100.123,121,1500,,`,
      '"120"',
      '"121"',
    ],
    [
      "mtu",
      `2,b,eth0,198.51.100.12/24,198.51.100.1,198.51.100.53,198.51.100.123,120,9000,,`,
      '"1500"',
      '"9000"',
    ],
    ["ipv6_gateway", `2,b,eth0,198.51.100.12/24,${MGMT_CELLS},,fe80::1`, "an empty cell", '"fe80::1"'],
  ])("rule: rows of one subnet disagree on %s", (column, row, first, here) => {
    expect(csvProblems(csv(`1,a,eth0,198.51.100.11/24,${MGMT_CELLS},,`, row))).toEqual([
      {
        entry: "row 3",
        field: column,
        message: `rows of subnet 198.51.100.0/24 must agree on ${column}: row 2 has ${first}, this row has ${here}`,
      },
    ]);
  });

  it("treats equal values written differently as agreeing", () => {
    const a = `1,a,eth0,198.51.100.11/24,198.51.100.1,2001:db8::53 198.51.100.53,,0120,1500,,`;
    const b = `2,b,eth0,198.51.100.12/24,198.51.100.1,2001:DB8:0::53  198.51.100.53,,120,1500,,`;
    expect(csvProblems(csv(a, b))).toEqual([]);
  });

  it("rule: rows of one subnet disagree on the IPv6 network", () => {
    expect(
      csvProblems(
        csv(
          `1,a,eth0,198.51.100.11/24,${MGMT_CELLS},2001:db8:120::11/64,${MGMT6}`,
          `2,b,eth0,198.51.100.12/24,${MGMT_CELLS},2001:db8:120::12/56,${MGMT6}`,
        ),
      ),
    ).toEqual([
      {
        entry: "row 3",
        field: "ipv6_cidr",
        message:
          "rows of subnet 198.51.100.0/24 must agree on the IPv6 network of ipv6_cidr: " +
          'row 2 has "2001:db8:120::/64", this row has "2001:db8:120::/56"',
      },
    ]);
  });

  it("rule: a repeated serial with another hostname", () => {
    expect(
      csvProblems(
        csv(`1,a,eth0,198.51.100.11/24,${MGMT_CELLS},,`, `1,b,eth1,198.51.100.12/24,${MGMT_CELLS},,`),
      ),
    ).toEqual([
      {
        entry: "row 3",
        field: "hostname",
        message:
          'serial "1" is also in row 2 with hostname "a"; rows that repeat a serial add interfaces to one HSM and ' +
          "must repeat its hostname (a duplicate serial?)",
      },
    ]);
  });

  it("rule: a repeated serial with the same interface", () => {
    expect(
      csvProblems(csv(`1,a,eth0,198.51.100.11/24,${MGMT_CELLS},,`, `1,a,,198.51.100.12/24,${MGMT_CELLS},,`)),
    ).toEqual([
      {
        entry: "row 3",
        field: "interface",
        message: 'duplicate interface name "eth0" on this HSM: also row 2.interface',
      },
    ]);
  });

  it("names rows and columns in the general rules", () => {
    const problems = csvProblems(
      csv(
        `1,hsm-a01,eth0,198.51.100.11/24,${MGMT_CELLS},,`,
        `2,hsm_a02,eth0,198.51.100.11/24,${MGMT_CELLS},,`,
        `3 x,hsm-a03,eth0,198.51.100.255/24,${MGMT_CELLS},,`,
        `4,hsm-a04,eth0,198.51.100.14/33,${MGMT_CELLS},,`,
        `5,hsm-a05,eth0,198.51.100.15/24,198.51.100.1,198.51.100.53,198.51.100.123,abc,1500,,`,
      ),
    );
    expect(problems).toEqual([
      {
        entry: "row 3",
        field: "hostname",
        message:
          'invalid hostname "hsm_a02" (RFC 1123): label "hsm_a02" has a character other than a letter, digit or hyphen',
      },
      { entry: "row 3", field: "ipv4_cidr", message: "198.51.100.11 is already used by row 2.ipv4_cidr" },
      {
        entry: "row 4",
        field: "serial",
        message: 'invalid serial "3 x": use 1-32 printable ASCII characters without spaces',
      },
      {
        entry: "row 4",
        field: "ipv4_cidr",
        message: "198.51.100.255 is the broadcast address of 198.51.100.0/24 and cannot be a host address",
      },
      { entry: "row 5", field: "ipv4_cidr", message: "bad prefix: /33 is out of range for IPv4 (1-32)" },
      {
        entry: "row 6",
        field: "vlan",
        message: 'rows of subnet 198.51.100.0/24 must agree on vlan: row 2 has "120", this row has "abc"',
      },
    ]);
  });

  it("rule: a subnet value that is not a number", () => {
    expect(csvProblems(csv(`1,a,eth0,198.51.100.11/24,198.51.100.1,,,abc,,,`))).toEqual([
      { entry: "row 2", field: "vlan", message: 'VLAN "abc" is invalid: use a whole number from 1 to 4094' },
    ]);
  });

  it("rule: a prefix typo makes overlapping subnets", () => {
    expect(csvProblems(csv("1,a,eth0,198.51.100.11/24,,,,,,,", "2,b,eth0,198.51.100.12/25,,,,,,,"))).toEqual([
      {
        entry: "row 3",
        field: "ipv4_cidr",
        message: "198.51.100.0/25 overlaps subnet net-198.51.100.0-24 (198.51.100.0/24)",
      },
    ]);
  });

  it("rule: a row with no address", () => {
    expect(csvProblems(csv("1,a,eth0,,,,,,,,"))).toEqual([
      { entry: "row 2", field: "", message: "has neither an IPv4 nor an IPv6 address" },
    ]);
  });

  it("rule: a row with the wrong number of fields", () => {
    expect(csvProblems(csv("1,a,eth0,198.51.100.11/24"))).toEqual([
      { entry: "plan", field: "hsms", message: "must list at least one HSM" },
      { entry: "row 2", field: "", message: "has 4 fields but the header has 11" },
    ]);
  });

  it("rule: header problems", () => {
    expect(csvProblems("serial,host,ipv4_cidr,serial\n1,a,198.51.100.11/24,1\n")).toEqual([
      {
        entry: "row 1",
        field: "",
        message:
          'unknown column "host" (expected: serial, hostname, interface, ipv4_cidr, gateway, dns, ntp, vlan, mtu, ipv6_cidr, ipv6_gateway)',
      },
      { entry: "row 1", field: "", message: 'column "serial" appears more than once' },
      { entry: "row 1", field: "", message: "missing column hostname" },
    ]);
    expect(csvProblems("serial,hostname\n1,a\n")).toEqual([
      { entry: "row 1", field: "", message: "needs an ipv4_cidr or an ipv6_cidr column" },
    ]);
  });

  it("rule: an empty CSV plan", () => {
    expect(csvProblems("")).toEqual([
      {
        entry: "plan",
        field: "",
        message: "is empty: a CSV plan needs a header row and one row per HSM interface",
      },
    ]);
    expect(csvProblems(`${HEADER}\n`)).toEqual([
      { entry: "plan", field: "hsms", message: "must list at least one HSM" },
    ]);
  });
});
