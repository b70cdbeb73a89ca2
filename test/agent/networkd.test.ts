/**
 * The systemd-networkd applier (issue 12) against the real systemd-networkd, run inside a network
 * namespace this test created with a private mount namespace (TESTBED.md, last section): a tmpfs on
 * /run/systemd, the applier's directory bind-mounted over /etc/systemd/network, /sys read-only.
 * "networkd applies the files" is a restart of that networkd process (by its PID) in most tests; one
 * test gives networkd a private D-Bus system bus (dbus-daemon on a socket in the test's directory)
 * and lets the applier run the real `networkctl reload` + `networkctl reconfigure` over it.
 *
 * Checked with `ip -json` (the applier's own verification and the test's comparison) and with the
 * state networkd itself writes (/run/systemd/netif/links/IFINDEX: DNS=, NTP=, ADMIN_STATE).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { applyWithRollback, type HostNetworkConfig } from "../../src/agent/net/net-backend.js";
import { NetworkdBackend, networkdFiles } from "../../src/agent/net/networkd.js";
import { AgentStateStore } from "../../src/agent/state-store.js";
import { NetworkApplyError } from "../../src/errors.js";
import { requireOrSkip, toolAvailable } from "../helpers/pcsc-env.js";
import {
  createTestPki,
  initAgent,
  LAB_PLAN,
  openElement,
  PIN,
  personalizeCard,
  pins,
  startAgent,
  tempDir,
  writeConfig,
} from "./fixtures.js";
import { addrJson, ip, NetnsLab, netnsCapability, routesJson, settled, waitUntil } from "./netns.js";

const NETWORKD = "/lib/systemd/systemd-networkd";
const netns = requireOrSkip(netnsCapability());
const networkdCap = requireOrSkip(
  !netns.ok
    ? netns
    : toolAvailable("unshare") &&
        (await readFile(NETWORKD).then(
          () => true,
          () => false,
        ))
      ? { ok: true, reason: "" }
      : { ok: false, reason: `${NETWORKD} not installed (package systemd)` },
);

const dbusCap = requireOrSkip(
  toolAvailable("dbus-daemon") && toolAvailable("networkctl")
    ? { ok: true, reason: "" }
    : { ok: false, reason: "dbus-daemon or networkctl not installed" },
);

const A: HostNetworkConfig = {
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
  dns: ["198.51.100.53", "2001:db8:120::53"],
  ntp: ["198.51.100.123"],
};
const B: HostNetworkConfig = {
  ...A,
  links: [{ ...A.links[0]!, mtu: 1500, ipv4: { address: "198.51.100.12", prefixLength: 24 } }],
  dns: ["198.51.100.54"],
  ntp: ["198.51.100.124"],
};

/** systemd-networkd inside `ns`, reading `dir`; restart() is "networkd applies the files". */
class Networkd {
  #child: ChildProcess | undefined;
  constructor(
    readonly ns: string,
    readonly dir: string,
    /** Its environment: DBUS_SYSTEM_BUS_ADDRESS puts it on a private system bus. */
    readonly env: NodeJS.ProcessEnv = process.env,
  ) {}

  get pid(): number {
    return this.#child!.pid!;
  }

  async start(): Promise<void> {
    const script =
      'mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && mount --bind "$1" /etc/systemd/network && mount -o remount,bind,ro /sys && exec "$2"';
    const child = spawn(
      "ip",
      [
        "netns",
        "exec",
        this.ns,
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        this.dir,
        NETWORKD,
      ],
      { stdio: ["ignore", "ignore", "pipe"], env: this.env },
    );
    this.#child = child;
    // Its state files appear once it has enumerated the links.
    const root = () => `/proc/${child.pid}/root/run/systemd/netif/links`;
    for (let turn = 0; turn < 100; turn++) {
      if (child.exitCode !== null) throw new Error(`systemd-networkd exited (${child.exitCode})`);
      if ((await readdir(root()).catch(() => [])).length > 0) return;
      await sleep(50);
    }
    throw new Error("systemd-networkd did not start within 5 s");
  }

  async stop(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await Promise.race([exited, sleep(3000)]);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await Promise.race([exited, sleep(2000)]);
    }
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** What networkd says about a link (its own state file). */
  /**
   * networkd's state of `device` once it has finished with it (ADMIN_STATE no longer "configuring"
   * or "pending", bounded): the addresses and routes it asked for can all be in the kernel a moment
   * before networkd has taken every answer and written "configured" (seen once in a loaded CI run).
   */
  async settledLinkState(device: string, timeoutMs = 10_000): Promise<Record<string, string>> {
    const deadline = Date.now() + timeoutMs;
    let state = await this.linkState(device);
    for (let turn = 0; turn < 1000 && Date.now() < deadline; turn++) {
      if (!["configuring", "pending", "initialized"].includes(state.ADMIN_STATE ?? "")) break;
      await sleep(20);
      state = await this.linkState(device);
    }
    return state;
  }

  async linkState(device: string): Promise<Record<string, string>> {
    const index = (
      JSON.parse(ip(["-n", this.ns, "-json", "link", "show", device])) as { ifindex: number }[]
    )[0]!.ifindex;
    const text = await readFile(`/proc/${this.pid}/root/run/systemd/netif/links/${index}`, "utf8");
    return Object.fromEntries(
      text
        .split("\n")
        .filter((l) => l.includes("="))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
  }
}

function networkOf(ns: string): unknown {
  const addr = (addrJson(ns) as Record<string, unknown>[]).map(({ qdisc: _kernel, ...link }) => link);
  return { addr, routes: routesJson(ns) };
}

/** The files (not directories) in `dir`, by name. */
async function filesIn(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.isFile()) out[entry.name] = await readFile(join(dir, entry.name), "utf8");
  }
  return out;
}

describe.skipIf(!networkdCap.ok)(
  "systemd-networkd applier with the real systemd-networkd in a namespace",
  () => {
    let lab: NetnsLab;
    let dir: { dir: string; cleanup: () => Promise<void> };
    let hsm: string;
    let networkd: Networkd;
    let net: NetworkdBackend;

    beforeEach(async () => {
      dir = await tempDir("hsm-networkd-");
      // networkd reads its directory as the systemd-network user (as /etc/systemd/network is, 0755).
      await chmod(dir.dir, 0o755);
      lab = new NetnsLab();
      hsm = lab.namespace("hsm");
      const lan = lab.namespace("lan");
      lab.link(hsm, "eth0", lan, "lan0");
      ip(["-n", lan, "link", "set", "lan0", "up"]);
      networkd = new Networkd(hsm, dir.dir);
      await networkd.start();
      net = new NetworkdBackend({
        dir: dir.dir,
        netns: hsm,
        reload: () => networkd.restart(),
        settleTimeoutMs: 10_000,
      });
    });
    afterEach(async () => {
      await networkd?.stop();
      await lab?.cleanup();
      await dir?.cleanup();
    });

    test("writes the .network file, networkd applies it (addresses, routes, MTU, DNS=, NTP=), verified with ip -json; it survives networkd starting again on a bare link", async () => {
      const snapshot = await net.snapshot(A);
      expect(snapshot.files).toEqual({});
      await applyWithRollback(net, A, snapshot);
      await net.verify(A);
      expect(await filesIn(dir.dir)).toEqual(Object.fromEntries(networkdFiles(A)));
      const link = (
        JSON.parse(ip(["-n", hsm, "-json", "addr", "show", "eth0"])) as {
          mtu: number;
          addr_info: { local: string; prefixlen: number }[];
        }[]
      )[0]!;
      expect(link.mtu).toBe(1400);
      expect(link.addr_info.map((a) => `${a.local}/${a.prefixlen}`)).toEqual(
        expect.arrayContaining(["198.51.100.11/24", "2001:db8:120::11/64"]),
      );
      expect(JSON.stringify(routesJson(hsm))).toMatch(
        /"dst":"default","gateway":"198\.51\.100\.1","dev":"eth0","protocol":"static","metric":100/,
      );
      const state = await networkd.settledLinkState("eth0");
      expect(state).toMatchObject({
        ADMIN_STATE: "configured",
        DNS: "198.51.100.53 2001:db8:120::53",
        NTP: "198.51.100.123",
      });

      // "A reboot": the kernel state gone, networkd starts again from the files: the network is back.
      await networkd.stop();
      ip(["-n", hsm, "addr", "flush", "dev", "eth0"]);
      ip(["-n", hsm, "link", "set", "eth0", "down"]);
      await networkd.start();
      await waitUntil(
        () => JSON.stringify(addrJson(hsm)).includes("198.51.100.11"),
        10_000,
        "networkd to re-apply",
      );
      await waitUntil(
        () => JSON.stringify(routesJson(hsm)).includes("198.51.100.1"),
        10_000,
        "the default route",
      );
      await settled(hsm); // IPv6 duplicate address detection
      await net.verify(A);
    });

    test("a failure after the files were written rolls back to the previous files and the previous live state", async () => {
      await applyWithRollback(net, A, await net.snapshot(A));
      await settled(hsm);
      const filesA = await filesIn(dir.dir);
      const liveA = networkOf(hsm);
      let reloads = 0;
      const failing = new NetworkdBackend({
        dir: dir.dir,
        netns: hsm,
        settleTimeoutMs: 10_000,
        reload: async () => {
          reloads++;
          await networkd.restart();
          if (reloads === 1) throw new NetworkApplyError("injected: networkd refused the new files");
        },
      });
      const error = await applyWithRollback(failing, B, await failing.snapshot(B)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(NetworkApplyError);
      expect((error as Error).message).toMatch(/injected/);
      expect(reloads).toBe(2); // the apply, then the rollback
      expect(await filesIn(dir.dir)).toEqual(filesA);
      await settled(hsm);
      expect(networkOf(hsm)).toEqual(liveA);
      await net.verify(A);
      expect(await networkd.linkState("eth0")).toMatchObject({ DNS: "198.51.100.53 2001:db8:120::53" });
    });

    test("a crash after the first file (mid-apply:1): the next start's rollback restores the files and the live state; a file of someone else is never touched", async () => {
      await writeFile(join(dir.dir, "10-admin.network"), "[Match]\nName=lo\n");
      await applyWithRollback(net, A, await net.snapshot(A));
      await settled(hsm);
      const before = await filesIn(dir.dir);
      const liveBefore = networkOf(hsm);
      const snapshot = await net.snapshot(B); // persisted with `applying` by the agent
      class Crash extends Error {}
      const crashing = new NetworkdBackend({
        dir: dir.dir,
        netns: hsm,
        reload: () => networkd.restart(),
        faults: {
          reached: (point) => {
            if (point === "mid-apply:1") throw new Crash("power cut");
          },
        },
      });
      await expect(crashing.apply(B)).rejects.toBeInstanceOf(Crash);
      expect(await filesIn(dir.dir)).not.toEqual(before); // B's file is on disk, networkd not told
      // The next start (Agent.start) rolls back to the snapshot persisted before the apply.
      const boot = new NetworkdBackend({ dir: dir.dir, netns: hsm, reload: () => networkd.restart() });
      await boot.rollback(snapshot);
      expect(await filesIn(dir.dir)).toEqual(before);
      expect((await filesIn(dir.dir))["10-admin.network"]).toBe("[Match]\nName=lo\n");
      await settled(hsm);
      expect(networkOf(hsm)).toEqual(liveBefore);
    });

    test.skipIf(!dbusCap.ok)(
      "the default reload: the real `networkctl reload` + `reconfigure` over a private D-Bus system bus; networkd is not restarted",
      async () => {
        const bus = join(dir.dir, "system_bus.sock");
        const conf = join(dir.dir, "bus.conf");
        await writeFile(
          conf,
          `<busconfig><type>system</type><listen>unix:path=${bus}</listen><auth>EXTERNAL</auth><policy context="default"><allow user="*"/><allow own="*"/><allow send_type="method_call"/><allow send_type="signal"/><allow send_type="method_return"/><allow send_type="error"/><allow receive_type="method_call"/><allow receive_type="signal"/><allow receive_type="method_return"/><allow receive_type="error"/></policy></busconfig>\n`,
        );
        const daemon = spawn(
          "setpriv",
          ["--pdeathsig", "KILL", "dbus-daemon", "--config-file", conf, "--nofork", "--nopidfile"],
          {
            stdio: "ignore",
          },
        );
        const address = `unix:path=${bus}`;
        const saved = process.env.DBUS_SYSTEM_BUS_ADDRESS;
        try {
          await waitUntil(() => existsSync(bus), 5000, "the private system bus");
          await networkd.stop();
          networkd = new Networkd(hsm, dir.dir, { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: address });
          await networkd.start();
          const pid = networkd.pid;
          process.env.DBUS_SYSTEM_BUS_ADDRESS = address; // for the networkctl the applier runs
          const viaDbus = new NetworkdBackend({ dir: dir.dir, netns: hsm, settleTimeoutMs: 10_000 });
          await applyWithRollback(viaDbus, A, await viaDbus.snapshot(A));
          await settled(hsm);
          await applyWithRollback(viaDbus, B, await viaDbus.snapshot(B));
          // The applier returned once networkd itself was done with the link, not merely once the
          // kernel showed the plan (a CI run saw networkd take the addresses away again after that).
          expect((await networkd.linkState("eth0")).ADMIN_STATE).toBe("configured");
          await viaDbus.verify(B);
          expect(networkd.pid).toBe(pid);
          expect(() => process.kill(pid, 0)).not.toThrow(); // the same networkd, told over D-Bus
          expect(JSON.stringify(addrJson(hsm))).toContain("198.51.100.12");
          expect(JSON.stringify(addrJson(hsm))).not.toContain("198.51.100.11");
          expect(await networkd.linkState("eth0")).toMatchObject({
            DNS: "198.51.100.54",
            NTP: "198.51.100.124",
          });
        } finally {
          if (saved === undefined) delete process.env.DBUS_SYSTEM_BUS_ADDRESS;
          else process.env.DBUS_SYSTEM_BUS_ADDRESS = saved;
          await networkd.stop();
          daemon.kill("SIGTERM");
        }
      },
    );

    test("the agent with the networkd applier: a card configures the HSM through files, the state says networkd, a restart re-applies without change", async () => {
      const testPki = await createTestPki(join(dir.dir, "pki"));
      const crl = await testPki.crl(1);
      const { stateDir } = await initAgent(dir.dir, testPki, { crl, applier: "networkd" });
      const { card } = await personalizeCard(testPki.pki.tokenCa);
      await writeConfig(card, LAB_PLAN, { sequence: 1, crl });
      const agent = await startAgent(stateDir, net);
      const element = await openElement(card);
      let result: Awaited<ReturnType<typeof agent.onboard>>;
      try {
        result = await agent.onboard(element, pins(PIN));
      } finally {
        await element.close();
        await agent.close();
      }
      expect(result, result.error?.message).toMatchObject({ ok: true, exitCode: 0, stage: "configured" });
      expect(result.dryRun).toBeUndefined();
      expect(Object.keys(await filesIn(dir.dir))).toContain("50-hsm-onboard-eth0.network");
      expect(await networkd.linkState("eth0")).toMatchObject({ DNS: "198.51.100.53", NTP: "198.51.100.123" });
      const { state } = await AgentStateStore.open(stateDir);
      expect(state).toMatchObject({
        applier: "networkd",
        stage: "configured",
        configured: { backend: "networkd" },
      });
      const files = await filesIn(dir.dir);
      await settled(hsm);
      const live = networkOf(hsm);
      const boot = await startAgent(stateDir, net);
      await boot.close();
      expect(await filesIn(dir.dir)).toEqual(files);
      expect(networkOf(hsm)).toEqual(live);
    });

    test("a device that does not exist is refused before any file is written", async () => {
      const missing: HostNetworkConfig = {
        ...A,
        links: [{ ...A.links[0]!, device: "eth9", physical: "eth9" }],
      };
      await expect(net.apply(missing)).rejects.toThrow(/interface eth9 does not exist/);
      expect(await filesIn(dir.dir)).toEqual({});
    });
  },
);

describe("networkd files", () => {
  test("VLAN subinterfaces get a .netdev and a .network; the parent names them and carries the larger MTU", () => {
    const files = networkdFiles({
      hostname: "h",
      links: [
        {
          name: "eth0",
          device: "eth0",
          physical: "eth0",
          ipv4: { address: "198.51.100.11", prefixLength: 24 },
          metric: 100,
        },
        {
          name: "eth1",
          device: "eth0.120",
          physical: "eth0",
          vlan: 120,
          mtu: 9000,
          ipv6: { address: "2001:db8:120::11", prefixLength: 64 },
          gateway6: "2001:db8:120::1",
          metric: 200,
        },
      ],
      dns: ["198.51.100.53"],
      ntp: [],
    });
    expect([...files.keys()]).toEqual([
      "50-hsm-onboard-eth0.network",
      "50-hsm-onboard-eth0.120.netdev",
      "50-hsm-onboard-eth0.120.network",
    ]);
    expect(files.get("50-hsm-onboard-eth0.network")).toMatch(
      /\[Link\]\nMTUBytes=9000\n[\s\S]*VLAN=eth0\.120/,
    );
    expect(files.get("50-hsm-onboard-eth0.120.netdev")).toBe(
      "[NetDev]\nName=eth0.120\nKind=vlan\nMTUBytes=9000\n\n[VLAN]\nId=120\n",
    );
    expect(files.get("50-hsm-onboard-eth0.120.network")).toMatch(
      /Address=2001:db8:120::11\/64\nDNS=198\.51\.100\.53\n\n\[Route\]\nGateway=2001:db8:120::1\nMetric=200\n$/,
    );
  });
});
