/**
 * The live applier in network namespaces this file creates (root only; TESTBED.md rules: all traffic
 * starts inside those namespaces, every loop and wait is bounded, namespaces and processes are
 * removed in afterEach even when a test fails).
 *
 * Topology per test:   [hsm] eth0 ──veth── lan0 [peer]   peer: 198.51.100.1/24, 2001:db8:120::1/64
 * (the gateway) and 203.0.113.5/32 on its loopback (a host beyond the gateway).
 */
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { execIpRunner, type IpRunner, Iproute2Backend } from "../../src/agent/net/iproute2.js";
import {
  applyWithRollback,
  type HostNetworkConfig,
  type IpCommand,
} from "../../src/agent/net/net-backend.js";
import { AddressConflictError, NetworkApplyError } from "../../src/errors.js";
import { requireOrSkip } from "../helpers/pcsc-env.js";
import {
  addrJson,
  exitOf,
  ip,
  NetnsLab,
  netnsCapability,
  routesJson,
  settled,
  TCP_CLIENT,
  TCP_SERVER,
  vlanCapability,
  waitUntil,
} from "./netns.js";

const netns = requireOrSkip(netnsCapability());

const CONFIG: HostNetworkConfig = {
  hostname: "hsm-lab-01",
  links: [
    {
      name: "eth0",
      device: "eth0",
      physical: "eth0",
      mtu: 1400,
      ipv4: { address: "198.51.100.11", prefixLength: 24 },
      ipv6: { address: "2001:db8:120::11", prefixLength: 64 },
      gateway4: "198.51.100.1",
      gateway6: "2001:db8:120::1",
      metric: 100,
    },
  ],
  dns: ["198.51.100.53"],
  ntp: [],
};

interface IpLink {
  ifname: string;
  mtu: number;
  flags: string[];
  linkinfo?: { info_kind?: string; info_data?: { id?: number } };
  link?: string;
  addr_info: { family: string; local: string; prefixlen: number; scope: string; tentative?: boolean }[];
}

/**
 * Everything a rollback must restore, as `ip -json` shows it — all of it but `qdisc`: a device that
 * was never up shows "noop", and once it has been up the kernel keeps its default ("noqueue" for a
 * veth) after it goes down again. That is the kernel's bookkeeping, not configuration.
 */
function networkOf(ns: string): unknown {
  const addr = (addrJson(ns) as Record<string, unknown>[]).map(({ qdisc: _kernel, ...link }) => link);
  return { addr, routes: routesJson(ns) };
}

/** A runner that records commands and fails the first one `failOn` picks. */
function recordingRunner(
  netnsName: string,
  failOn?: (args: IpCommand) => boolean,
): IpRunner & { commands: IpCommand[] } {
  const inner = execIpRunner({ netns: netnsName });
  const commands: IpCommand[] = [];
  let failed = false;
  return {
    commands,
    async run(args) {
      commands.push(args);
      if (!failed && failOn?.(args)) {
        failed = true;
        throw new NetworkApplyError(`injected failure at: ip ${args.join(" ")}`);
      }
      return inner.run(args);
    },
  };
}

const mutating = (commands: readonly IpCommand[]) =>
  commands.filter((c) => !c.includes("-json") && !(c[0] === "neigh"));

describe.skipIf(!netns.ok)("iproute2 applier in network namespaces", () => {
  let lab: NetnsLab;
  let hsm: string;
  let peer: string;

  beforeEach(() => {
    lab = new NetnsLab();
    hsm = lab.namespace("hsm");
    peer = lab.namespace("peer");
    lab.link(hsm, "eth0", peer, "lan0");
    ip(["-n", peer, "addr", "add", "198.51.100.1/24", "dev", "lan0"]);
    ip(["-n", peer, "-6", "addr", "add", "2001:db8:120::1/64", "dev", "lan0", "nodad"]);
    ip(["-n", peer, "addr", "add", "203.0.113.5/32", "dev", "lo"]);
    ip(["-n", peer, "link", "set", "lan0", "up"]);
  });
  afterEach(async () => {
    await lab.cleanup();
  });

  test("applies IPv4, IPv6, MTU and default routes; verified with ip -json; reachable over TCP from the peer", async () => {
    const net = new Iproute2Backend({ netns: hsm, probeWindowMs: 300 });
    const snapshot = await net.snapshot(CONFIG);
    await applyWithRollback(net, CONFIG, snapshot);

    const [eth0] = JSON.parse(ip(["-n", hsm, "-json", "addr", "show", "dev", "eth0"])) as IpLink[];
    expect(eth0?.mtu).toBe(1400);
    expect(eth0?.flags).toContain("UP");
    const global = eth0!.addr_info.filter((a) => a.scope === "global");
    expect(global.map((a) => `${a.local}/${a.prefixlen}`).sort()).toEqual([
      "198.51.100.11/24",
      "2001:db8:120::11/64",
    ]);
    expect(global.some((a) => a.tentative)).toBe(false);
    const routes = routesJson(hsm) as {
      v4: { dst: string; gateway?: string; metric?: number }[];
      v6: typeof routesJson;
    };
    expect(routes.v4).toContainEqual(
      expect.objectContaining({ dst: "default", gateway: "198.51.100.1", metric: 100 }),
    );
    expect(routes.v6 as unknown as { dst: string; gateway?: string }[]).toContainEqual(
      expect.objectContaining({ dst: "default", gateway: "2001:db8:120::1" }),
    );

    // A service bound to the assigned addresses, reached from the peer namespace over TCP.
    for (const host of ["198.51.100.11", "2001:db8:120::11"]) {
      const server = lab.node(hsm, TCP_SERVER, [host, "1792", "hsm-lab-01", "10000"]);
      await waitUntil(
        () => server.output().includes("listening") || server.exitCode !== null,
        5000,
        "the TCP server",
      );
      expect(server.output()).toContain("listening");
      const client = lab.node(peer, TCP_CLIENT, [host, "1792", "3000"]);
      expect(await exitOf(client, 8000)).toBe(0);
      expect(client.output()).toContain("got hsm-lab-01");
      server.kill("SIGTERM");
      await exitOf(server, 5000).catch(() => undefined);
    }
    // The default route: the HSM reaches a host beyond the gateway.
    const beyond = lab.node(peer, TCP_SERVER, ["203.0.113.5", "1793", "beyond", "10000"]);
    await waitUntil(() => beyond.output().includes("listening"), 5000, "the server beyond the gateway");
    const out = lab.node(hsm, TCP_CLIENT, ["203.0.113.5", "1793", "3000"]);
    expect(await exitOf(out, 8000)).toBe(0);
    expect(out.output()).toContain("got beyond");
  });

  test("re-applying what is in place runs no changing command and changes nothing", async () => {
    const runner = recordingRunner(hsm);
    const net = new Iproute2Backend({ runner, probeWindowMs: 300 });
    await applyWithRollback(net, CONFIG, await net.snapshot(CONFIG));
    await settled(hsm);
    const after = networkOf(hsm);
    runner.commands.length = 0;
    await applyWithRollback(net, CONFIG, await net.snapshot(CONFIG));
    expect(mutating(runner.commands)).toEqual([]);
    expect(networkOf(hsm)).toEqual(after);
  });

  test.each([
    [
      "adding the IPv6 address",
      (c: IpCommand) => c.includes("addr") && c.includes("add") && c.includes("-6"),
    ],
    [
      "adding the IPv6 default route",
      (c: IpCommand) => c.includes("route") && c.includes("add") && c.includes("-6"),
    ],
    ["bringing the link up", (c: IpCommand) => c.includes("link") && c.includes("up")],
  ])("a failure while %s is rolled back to the snapshot exactly", async (_what, failOn) => {
    const before = networkOf(hsm);
    const net = new Iproute2Backend({ runner: recordingRunner(hsm, failOn), probeWindowMs: 300 });
    const snapshot = await net.snapshot(CONFIG);
    await expect(applyWithRollback(net, CONFIG, snapshot)).rejects.toThrow(/injected failure/);
    expect(networkOf(hsm)).toEqual(before);
  });

  test("a failed reconfiguration restores the old address, its default route and a static route the kernel dropped", async () => {
    ip(["-n", hsm, "link", "set", "eth0", "up"]);
    ip(["-n", hsm, "addr", "add", "198.51.100.50/24", "dev", "eth0"]);
    ip([
      "-n",
      hsm,
      "route",
      "add",
      "default",
      "via",
      "198.51.100.1",
      "dev",
      "eth0",
      "metric",
      "100",
      "proto",
      "static",
    ]);
    ip(["-n", hsm, "route", "add", "192.0.2.0/24", "via", "198.51.100.1", "dev", "eth0"]);
    await waitUntil(
      () => !JSON.stringify(addrJson(hsm)).includes('"tentative"'),
      5000,
      "the link-local address to finish DAD",
    );
    const before = networkOf(hsm);
    const ipv4Only: HostNetworkConfig = {
      ...CONFIG,
      links: [
        { ...CONFIG.links[0]!, ipv6: undefined, gateway6: undefined, mtu: undefined },
      ] as HostNetworkConfig["links"],
    };
    const net = new Iproute2Backend({
      runner: recordingRunner(hsm, (c) => c.includes("route") && c.includes("add")),
      probeWindowMs: 300,
    });
    await expect(applyWithRollback(net, ipv4Only, await net.snapshot(ipv4Only))).rejects.toThrow(
      /injected failure/,
    );
    expect(networkOf(hsm)).toEqual(before);
  });

  test("an IPv4 address another host holds is found by the ARP probe before it is added: exit 21, rolled back", async () => {
    ip(["-n", peer, "addr", "add", "198.51.100.11/24", "dev", "lan0"]);
    const before = networkOf(hsm);
    const runner = recordingRunner(hsm);
    const net = new Iproute2Backend({ runner, probeWindowMs: 1000 });
    const failure = await applyWithRollback(net, CONFIG, await net.snapshot(CONFIG)).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(AddressConflictError);
    expect((failure as AddressConflictError).exitCode).toBe(21);
    expect((failure as Error).message).toMatch(/198\.51\.100\.11 is already in use on eth0/);
    // The address was never added.
    expect(
      runner.commands.some((c) => c.includes("addr") && c.includes("add") && c.includes("198.51.100.11/24")),
    ).toBe(false);
    expect(networkOf(hsm)).toEqual(before);
  });

  test("an IPv6 address another host holds fails duplicate address detection: exit 21, rolled back", async () => {
    ip(["-n", peer, "-6", "addr", "add", "2001:db8:120::11/64", "dev", "lan0", "nodad"]);
    const before = networkOf(hsm);
    const net = new Iproute2Backend({ netns: hsm, probeWindowMs: 300 });
    const failure = await applyWithRollback(net, CONFIG, await net.snapshot(CONFIG)).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(AddressConflictError);
    expect((failure as Error).message).toMatch(/duplicate address detection/);
    expect(networkOf(hsm)).toEqual(before);
  });

  test("a device that does not exist is refused before anything changes", async () => {
    const before = networkOf(hsm);
    const net = new Iproute2Backend({ netns: hsm });
    const missing: HostNetworkConfig = {
      ...CONFIG,
      links: [{ ...CONFIG.links[0]!, device: "eth7", physical: "eth7" }],
    };
    await expect(applyWithRollback(net, missing, await net.snapshot(missing))).rejects.toThrow(
      /eth7 does not exist/,
    );
    expect(networkOf(hsm)).toEqual(before);
  });

  // VLAN subinterfaces need the kernel's 8021q support, which some VM kernels (this project's CI
  // among them) lack. With it, the live VLAN test runs; without it, the same configuration must be
  // refused as a failed apply (exit 20) with the network rolled back exactly — never half-applied.
  const vlan = vlanCapability();
  const vlanConfigFor = (): HostNetworkConfig =>
    ({
      ...CONFIG,
      links: [
        {
          ...CONFIG.links[0]!,
          device: "eth0.120",
          vlan: 120,
          mtu: 1400,
          ipv6: undefined,
          gateway6: undefined,
        },
      ],
    }) as HostNetworkConfig;
  test(
    vlan.ok
      ? "VLAN subinterface with its MTU and addresses"
      : "a VLAN configuration on a kernel without 802.1Q is refused and rolled back (exit 20)",
    async () => {
      if (!vlan.ok) {
        const net = new Iproute2Backend({ netns: hsm, probeWindowMs: 300 });
        const before = networkOf(hsm);
        const vlanConfig = vlanConfigFor();
        const snapshot = await net.snapshot(vlanConfig);
        await expect(applyWithRollback(net, vlanConfig, snapshot)).rejects.toBeInstanceOf(NetworkApplyError);
        expect(networkOf(hsm)).toEqual(before);
        return;
      }
      ip(["-n", peer, "link", "add", "link", "lan0", "name", "lan0.120", "type", "vlan", "id", "120"]);
      ip(["-n", peer, "addr", "add", "198.51.100.1/24", "dev", "lan0.120"]);
      ip(["-n", peer, "link", "set", "lan0.120", "up"]);
      ip(["-n", peer, "addr", "del", "198.51.100.1/24", "dev", "lan0"]);
      const vlanConfig = vlanConfigFor();
      const net = new Iproute2Backend({ netns: hsm, probeWindowMs: 300 });
      const before = networkOf(hsm);
      const snapshot = await net.snapshot(vlanConfig);
      await applyWithRollback(net, vlanConfig, snapshot);
      const links = JSON.parse(ip(["-n", hsm, "-json", "-d", "addr", "show"])) as IpLink[];
      const sub = links.find((l) => l.ifname === "eth0.120");
      expect(sub?.linkinfo).toMatchObject({ info_kind: "vlan", info_data: { id: 120 } });
      expect(sub?.mtu).toBe(1400);
      expect(sub?.addr_info.some((a) => a.local === "198.51.100.11")).toBe(true);
      const client = lab.node(hsm, TCP_CLIENT, ["198.51.100.1", "9", "1000"]);
      await exitOf(client, 5000); // any answer (refused) proves the VLAN carries traffic
      expect(client.output()).toMatch(/ECONNREFUSED|got/);
      await net.rollback(snapshot);
      expect(networkOf(hsm)).toEqual(before);
    },
  );
});

if (!netns.ok) {
  test.skip(`iproute2 applier tests: ${netns.reason}`, () => {});
}
