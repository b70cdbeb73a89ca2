/**
 * Issue 10 finding 5 (plans): `hsm-onboard plan check` as a child process refuses, with exit 23 and a
 * located problem, what an attack test got through: duplicate keys in a JSON plan (JSON.parse keeps
 * the last; YAML already refused them), IPv4-mapped IPv6 (`::ffff:203.0.113.11`) as an address, a
 * gateway, a subnet or a server — they escaped the duplicate check against the same IPv4 address —,
 * control characters in a subnet name, and an interface named `lo` (the agent put the address on
 * loopback). The same plan without the fault passes, so each refusal is that fault's.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ExitCode } from "../../src/errors.js";
import { tempDir } from "../agent/fixtures.js";
import { buildForChildren, type PrivateBuild } from "../helpers/pcsc-env.js";
import { runCliChild, stopChildren } from "./children.js";

const BASE = {
  owner: "ACME Bank",
  subnets: [
    {
      name: "lab",
      cidr: "203.0.113.0/24",
      gateway: "203.0.113.1",
      dns: ["203.0.113.53"],
      ntp: [],
      ipv6_cidr: "2001:db8:120::/64",
      ipv6_gateway: "2001:db8:120::1",
    },
  ],
  hsms: [
    {
      serial: "1234567",
      hostname: "hsm-a",
      interfaces: [{ name: "eth0", subnet: "lab", ipv4: "203.0.113.11" }],
    },
    {
      serial: "1234568",
      hostname: "hsm-b",
      interfaces: [{ name: "eth0", subnet: "lab", ipv4: "203.0.113.12", ipv6: "2001:db8:120::12" }],
    },
  ],
};
type Plan = typeof BASE;
const variant = (change: (p: Plan) => void): Plan => {
  const p = structuredClone(BASE);
  change(p);
  return p;
};

describe("hostile plans (plan check as a child process)", () => {
  let base: { dir: string; cleanup: () => Promise<void> };
  let build: PrivateBuild;
  beforeAll(async () => {
    base = await tempDir("hsm-security-plan-hostile-");
    build = await buildForChildren(["cli/main.js"]);
  }, 120_000);
  afterAll(async () => {
    await stopChildren();
    await build?.cleanup();
    await base?.cleanup();
  });

  async function check(name: string, text: string) {
    const file = join(base.dir, name);
    await writeFile(file, text);
    return runCliChild(build, ["plan", "check", file], { timeoutMs: 30_000 });
  }

  test("the unaltered plan is valid (YAML and JSON)", async () => {
    expect((await check("ok.json", JSON.stringify(BASE))).code).toBe(ExitCode.ok);
  });

  test("JSON duplicate keys are refused at every level, as YAML refuses them", async () => {
    const json = JSON.stringify(BASE, null, 1);
    const owner = await check(
      "dup-owner.json",
      json.replace('"owner": "ACME Bank"', '"owner": "ACME Bank", "owner": "Evil"'),
    );
    expect(owner.code, owner.stdout).toBe(ExitCode.planInvalid);
    expect(owner.stdout).toMatch(/key "owner" appears twice in \(top level\)/);
    const nested = await check(
      "dup-ipv4.json",
      json.replace('"ipv4": "203.0.113.11"', '"ipv4": "203.0.113.11", "ipv\\u0034": "203.0.113.99"'),
    );
    expect(nested.code, nested.stdout).toBe(ExitCode.planInvalid);
    expect(nested.stdout).toMatch(/key "ipv4" appears twice in \.hsms\[0\]\.interfaces\[0\]/);
    const yaml = await check("dup.yaml", "owner: A\nowner: B\nsubnets: []\nhsms: []\n");
    expect(yaml.code).toBe(ExitCode.planInvalid);
  });

  test("IPv4-mapped IPv6 is refused as an address, a gateway, a subnet and a server", async () => {
    const cases: [string, Plan, RegExp][] = [
      [
        "address",
        variant((p) => {
          p.subnets[0]!.ipv6_cidr = "::ffff:0:0/96";
          p.subnets[0]!.ipv6_gateway = undefined as unknown as string;
          (p.hsms[1]!.interfaces[0] as { ipv6?: string }).ipv6 = "::ffff:203.0.113.11";
        }),
        /::ffff:0:0\/96 overlaps the IPv4-mapped IPv6 range/,
      ],
      [
        "host",
        variant((p) => {
          (p.hsms[1]!.interfaces[0] as { ipv6?: string }).ipv6 = "::ffff:203.0.113.11";
        }),
        /::ffff:cb00:710b is an IPv4-mapped IPv6 address \(::ffff:0:0\/96\) and cannot be a host address|::ffff:203\.0\.113\.11 is an IPv4-mapped IPv6 address/,
      ],
      [
        "gateway",
        variant((p) => {
          p.subnets[0]!.ipv6_gateway = "::ffff:203.0.113.1";
        }),
        /IPv4-mapped IPv6 address \(::ffff:0:0\/96\) and cannot be a gateway/,
      ],
      [
        "subnet",
        variant((p) => {
          p.subnets[0]!.ipv6_cidr = "::ffff:203.0.113.0/120";
          p.subnets[0]!.ipv6_gateway = undefined as unknown as string;
          (p.hsms[1]!.interfaces[0] as { ipv6?: string }).ipv6 = undefined;
        }),
        /overlaps the IPv4-mapped IPv6 range ::ffff:0:0\/96/,
      ],
      [
        "server",
        variant((p) => {
          p.subnets[0]!.dns = ["::ffff:203.0.113.53"];
        }),
        /IPv4-mapped IPv6 address \(::ffff:0:0\/96\) and cannot be a DNS or NTP server/,
      ],
    ];
    for (const [name, plan, message] of cases) {
      const run = await check(`mapped-${name}.json`, JSON.stringify(plan));
      expect(run.code, `${name}: ${run.stdout}`).toBe(ExitCode.planInvalid);
      expect(run.stdout, name).toMatch(message);
    }
  });

  test("control characters in a subnet name are refused", async () => {
    for (const bad of ["lab\u0007", "lab\u001b[2J", "l\u007fab"]) {
      const plan = variant((p) => {
        p.subnets[0]!.name = bad;
        for (const h of p.hsms) h.interfaces[0]!.subnet = bad;
      });
      const run = await check("control.json", JSON.stringify(plan));
      expect(run.code, run.stdout).toBe(ExitCode.planInvalid);
      expect(run.stdout).toMatch(/subnets\[0\]\.name: must not contain control characters/);
      expect(run.stdout).not.toContain("\u001b");
    }
  });

  test("an interface named lo is refused", async () => {
    const plan = variant((p) => {
      p.hsms[0]!.interfaces[0]!.name = "lo";
    });
    const run = await check("lo.json", JSON.stringify(plan));
    expect(run.code, run.stdout).toBe(ExitCode.planInvalid);
    expect(run.stdout).toMatch(/interfaces\[0\]\.name: invalid interface name "lo": the loopback device/);
  });
});
