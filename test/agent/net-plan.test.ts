/**
 * The planning both appliers share (net-backend.ts) and the dry-run applier: the host configuration
 * of a shard entry, the `ip` commands from one state to another, idempotence, simulated conflicts,
 * rollback, and the record file.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { DryRunBackend } from "../../src/agent/net/dry-run.js";
import {
  applyWithRollback,
  compareState,
  desiredState,
  hostNetworkConfig,
  type NetSnapshot,
} from "../../src/agent/net/net-backend.js";
import { AddressConflictError, NetworkApplyError } from "../../src/errors.js";
import { examplePlan, tempDir } from "./fixtures.js";

async function roomConfig(serial = "1500001", map = {}) {
  const plan = await examplePlan("room-40.yaml");
  const hsm = plan.hsms.find((h) => h.serial === serial)!;
  const used = new Set(hsm.interfaces.map((i) => i.subnet));
  return hostNetworkConfig({ hsm, subnets: plan.subnets.filter((s) => used.has(s.name)) }, map);
}

describe("host network configuration of a shard entry", () => {
  test("room-40: two interfaces on VLAN subinterfaces, dual stack, MTUs, metrics 100 and 200", async () => {
    const config = await roomConfig();
    expect(config.hostname).toBe("hsm-fra1-a01");
    expect(config.links).toEqual([
      expect.objectContaining({
        name: "eth0",
        device: "eth0.120",
        physical: "eth0",
        vlan: 120,
        mtu: 1500,
        metric: 100,
        gateway4: "198.51.100.1",
        gateway6: "2001:db8:120::1",
      }),
      expect.objectContaining({
        name: "eth1",
        device: "eth1.130",
        physical: "eth1",
        vlan: 130,
        mtu: 9000,
        metric: 200,
        gateway4: "203.0.113.1",
      }),
    ]);
    expect(config.dns).toEqual(["198.51.100.53", "2001:db8:120::53"]);
  });

  test("--iface maps plan interfaces to host devices", async () => {
    const config = await roomConfig("1500001", { eth0: "ens3", eth1: "ens4" });
    expect(config.links.map((l) => l.device)).toEqual(["ens3.120", "ens4.130"]);
  });

  test("never the loopback device: a plan interface lo, or --iface mapping one onto lo, is refused (issue 10)", async () => {
    await expect(roomConfig("1500001", { eth0: "lo" })).rejects.toThrow(
      new NetworkApplyError("interface eth0: refusing the loopback device lo"),
    );
    const plan = await examplePlan("rack-4.yaml");
    const hsm = { ...plan.hsms[0]!, interfaces: [{ ...plan.hsms[0]!.interfaces[0]!, name: "lo" }] };
    expect(() => hostNetworkConfig({ hsm, subnets: plan.subnets }, {})).toThrow(
      /refusing the loopback device lo/,
    );
  });

  test("never an IPv4-mapped IPv6 address or gateway from a card (issue 10)", async () => {
    const plan = await examplePlan("room-40.yaml");
    const hsm = plan.hsms.find((h) => h.serial === "1500001")!;
    const used = new Set(hsm.interfaces.map((i) => i.subnet));
    const subnets = plan.subnets.filter((s) => used.has(s.name));
    const mapped = {
      ...hsm,
      interfaces: hsm.interfaces.map((i, k) => (k === 0 ? { ...i, ipv6: "::ffff:198.51.100.11" } : i)),
    };
    expect(() => hostNetworkConfig({ hsm: mapped, subnets }, {})).toThrow(
      /refusing the IPv4-mapped IPv6 address ::ffff:198\.51\.100\.11/,
    );
    const withIpv6 = hsm.interfaces.find((i) => i.ipv6 !== undefined)!;
    const gatewaySubnets = subnets.map((s) =>
      s.name === withIpv6.subnet ? { ...s, ipv6Gateway: "::ffff:198.51.100.1" } : s,
    );
    expect(() => hostNetworkConfig({ hsm, subnets: gatewaySubnets }, {})).toThrow(
      /refusing the IPv4-mapped IPv6 gateway/,
    );
  });

  test("the desired state raises a parent's MTU for a jumbo VLAN and removes VLANs the plan lacks", async () => {
    const config = await roomConfig();
    const current: NetSnapshot = {
      backend: "test",
      takenAt: "",
      links: [
        { device: "eth0", exists: true, physical: true, mtu: 1500, up: true, addresses: [] },
        { device: "eth1", exists: true, physical: true, mtu: 1500, up: false, addresses: [] },
        {
          device: "eth1.999",
          exists: true,
          physical: false,
          mtu: 1500,
          up: true,
          vlan: { parent: "eth1", id: 999 },
          addresses: [],
        },
      ],
      routes: [],
    };
    const desired = desiredState(current, config);
    expect(desired.links.find((l) => l.device === "eth1")?.mtu).toBe(9000);
    expect(desired.links.find((l) => l.device === "eth1.999")?.exists).toBe(false);
    expect(compareState(current, desired, "default").length).toBeGreaterThan(0);
    expect(compareState(desired, desired, "default")).toEqual([]);
    expect(() => desiredState({ ...current, links: current.links.slice(0, 1) }, config)).toThrow(
      NetworkApplyError,
    );
  });
});

describe("dry-run applier", () => {
  let dir: { dir: string; cleanup: () => Promise<void> };
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await dir.cleanup();
  });

  test("records the ip commands; a second apply records nothing; the record survives a restart", async () => {
    const file = join(dir.dir, "net.json");
    const config = await roomConfig();
    const net = await DryRunBackend.open({ file });
    await applyWithRollback(net, config, await net.snapshot(config));
    expect(net.commands).toEqual([
      ["ip", "link", "set", "dev", "eth1", "mtu", "9000"],
      ["ip", "link", "add", "link", "eth0", "name", "eth0.120", "type", "vlan", "id", "120"],
      ["ip", "link", "add", "link", "eth1", "name", "eth1.130", "type", "vlan", "id", "130"],
      ["ip", "link", "set", "dev", "eth0.120", "mtu", "1500"],
      ["ip", "link", "set", "dev", "eth1.130", "mtu", "9000"],
      ["ip", "link", "set", "dev", "eth0", "up"],
      ["ip", "link", "set", "dev", "eth0.120", "up"],
      ["ip", "link", "set", "dev", "eth1", "up"],
      ["ip", "link", "set", "dev", "eth1.130", "up"],
      ["ip", "addr", "add", "198.51.100.101/24", "dev", "eth0.120"],
      ["ip", "-6", "addr", "add", "2001:db8:120::101/64", "dev", "eth0.120"],
      ["ip", "addr", "add", "203.0.113.101/24", "dev", "eth1.130"],
      ["ip", "-6", "addr", "add", "2001:db8:130::101/64", "dev", "eth1.130"],
      [
        "ip",
        "route",
        "add",
        "default",
        "via",
        "198.51.100.1",
        "dev",
        "eth0.120",
        "metric",
        "100",
        "proto",
        "static",
      ],
      [
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:120::1",
        "dev",
        "eth0.120",
        "metric",
        "100",
        "proto",
        "static",
      ],
      [
        "ip",
        "route",
        "add",
        "default",
        "via",
        "203.0.113.1",
        "dev",
        "eth1.130",
        "metric",
        "200",
        "proto",
        "static",
      ],
      [
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:130::1",
        "dev",
        "eth1.130",
        "metric",
        "200",
        "proto",
        "static",
      ],
    ]);
    const reopened = await DryRunBackend.open({ file });
    await applyWithRollback(reopened, config, await reopened.snapshot(config));
    expect(reopened.record.operations).toHaveLength(1);
    expect(JSON.parse(await readFile(file, "utf8")).applied.hostname).toBe("hsm-fra1-a01");
  });

  test("an occupied address is a conflict (21) and nothing is recorded", async () => {
    const config = await roomConfig();
    const net = await DryRunBackend.open({ occupied: ["203.0.113.101"] });
    await expect(applyWithRollback(net, config, await net.snapshot(config))).rejects.toBeInstanceOf(
      AddressConflictError,
    );
    expect(net.record.operations).toEqual([]);
    expect(net.record.applied).toBeUndefined();
  });

  test("rollback restores the previous configuration, VLANs and routes included", async () => {
    const first = await roomConfig("1500001");
    const second = await roomConfig("1500002");
    const net = await DryRunBackend.open({});
    await applyWithRollback(net, first, await net.snapshot(first));
    const snapshot = await net.snapshot(second);
    await net.apply(second);
    expect(net.record.applied?.hostname).toBe("hsm-fra1-a02");
    await net.rollback(snapshot);
    expect(net.record.applied?.hostname).toBe("hsm-fra1-a01");
    expect(compareState(await net.snapshot(first), snapshot, "all")).toEqual([]);
    expect(net.record.operations.at(-1)?.commands).toContainEqual([
      "ip",
      "addr",
      "add",
      "198.51.100.101/24",
      "dev",
      "eth0.120",
    ]);
  });
});
