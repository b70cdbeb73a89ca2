/**
 * Issue 12: the hostname, DNS and NTP of the signed configuration really applied by default, with
 * the unit's capabilities (CAP_NET_ADMIN only). A UTS + mount + network namespace stands for the
 * appliance: /etc is an overlay (what hostnamed and the agent write lands in the test's upper
 * directory), /run/systemd says "booted with systemd", and a private D-Bus system bus carries the
 * real systemd-hostnamed.
 *
 * - `agent factory-init --net iproute2` chooses host settings `hostnamed` by default; `agent run`
 *   (its capability bounding set CAP_NET_ADMIN only, as the unit gives it) then sets the hostname
 *   through hostnamed (kernel name and /etc/hostname), writes /etc/hsm-onboard/resolv.conf and
 *   timesyncd.conf, hands the NTP servers to the running systemd-timesyncd (D-Bus), and configures
 *   eth0 — exit 0. (timesyncd's clock file is on a tmpfs; nothing in the namespace answers NTP.) With the same capabilities sethostname(2) is
 *   refused: that path would need CAP_SYS_ADMIN.
 * - Through hostnamed, a rollback restores the old static and kernel hostnames.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmod, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { HostSettings } from "../../src/agent/host-settings.js";
import { AgentStateStore } from "../../src/agent/state-store.js";
import { FileCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { VIRTUAL_CARD_ENV } from "../../src/cli/card-opener.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { issueDeviceToDirectory } from "../../src/pki/pki-store.js";
import { createTestPki, OWNER, PIN, type TestPki, tempDir } from "../agent/fixtures.js";
import { ip, NetnsLab, netnsCapability, waitUntil } from "../agent/netns.js";
import { buildForChildren, type PrivateBuild, requireOrSkip, toolAvailable } from "../helpers/pcsc-env.js";
import { runCliChild, stopChildren } from "./children.js";
import { CardTemplate } from "./support.js";

const HOSTNAMED = "/lib/systemd/systemd-hostnamed";
const TIMESYNCD = "/lib/systemd/systemd-timesyncd";
const netns = requireOrSkip(netnsCapability());
const tools = requireOrSkip(
  ["dbus-daemon", "hostnamectl", "setpriv", "nsenter", "unshare"].every((t) => toolAvailable(t)) &&
    (() => {
      try {
        execFileSync("test", ["-x", HOSTNAMED]);
        execFileSync("test", ["-x", TIMESYNCD]);
        return true;
      } catch {
        return false;
      }
    })()
    ? { ok: true, reason: "" }
    : {
        ok: false,
        reason:
          "needs dbus-daemon, systemd-hostnamed, systemd-timesyncd, hostnamectl, setpriv, nsenter, unshare",
      },
);
const cap = [netns, tools].find((c) => !c.ok) ?? netns;

const PLAN: NetworkPlan = {
  owner: OWNER,
  subnets: [
    {
      name: "lab",
      cidr: "198.51.100.0/24",
      gateway: "198.51.100.1",
      dns: ["198.51.100.53", "198.51.100.54"],
      ntp: ["198.51.100.123"],
      mtu: 1400,
    },
  ],
  hsms: [
    {
      serial: "1234567",
      hostname: "hsm-lab-07",
      interfaces: [{ name: "eth0", subnet: "lab", ipv4: "198.51.100.17" }],
    },
  ],
};

/** CAP_NET_ADMIN only, as the unit's CapabilityBoundingSet= (root's permitted set = the bounding set). */
const UNIT_CAPS = ["setpriv", "--bounding-set", "-all,+net_admin"];

describe.skipIf(!cap.ok)(
  `host settings through systemd-hostnamed${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let base: { dir: string; cleanup: () => Promise<void> };
    let build: PrivateBuild;
    let testPki: TestPki;
    const lab = new NetnsLab();
    let hsm: string;
    let holder: ChildProcess;
    let upper: string;
    let bus: string;
    /** Runs `argv` in the appliance's namespaces (UTS, mount, net) with the private system bus. */
    const inside = (argv: string[]) => [
      "nsenter",
      "-t",
      String(holder.pid),
      "-u",
      "-m",
      "-n",
      "env",
      `DBUS_SYSTEM_BUS_ADDRESS=unix:path=${bus}`,
      ...argv,
    ];
    const run = (argv: string[]) => {
      const [cmd, ...rest] = inside(argv) as [string, ...string[]];
      return execFileSync(cmd, rest, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
    };

    beforeAll(async () => {
      base = await tempDir("hsm-hostnamed-");
      await chmod(base.dir, 0o755); // timesyncd reaches the bus socket as its own user
      upper = join(base.dir, "etc-upper");
      bus = join(base.dir, "system_bus.sock");
      hsm = lab.namespace("hsm");
      const peer = lab.namespace("peer");
      lab.link(hsm, "eth0", peer, "lan0");
      ip(["-n", peer, "addr", "add", "198.51.100.1/24", "dev", "lan0"]);
      ip(["-n", peer, "link", "set", "lan0", "up"]);
      await writeFile(
        join(base.dir, "bus.conf"),
        `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path=${bus}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_type="method_call"/><allow send_type="signal"/>
<allow send_type="method_return"/><allow send_type="error"/><allow receive_type="method_call"/><allow receive_type="signal"/>
<allow receive_type="method_return"/><allow receive_type="error"/></policy></busconfig>
`,
      );
      // The appliance: its own /etc (overlay), "booted with systemd", a system bus, hostnamed (which
      // exits when idle: started again, a bounded number of times). Each dies with its parent
      // (--pdeathsig), so killing the holder ends them all.
      const script = `set -e
mkdir -p ${upper} ${base.dir}/etc-work
mount -t overlay overlay -o lowerdir=/etc,upperdir=${upper},workdir=${base.dir}/etc-work /etc
mount -t tmpfs tmpfs /run/systemd && mkdir -p /run/systemd/system
echo factory-name > /etc/hostname && hostname factory-name
setpriv --pdeathsig KILL dbus-daemon --config-file=${base.dir}/bus.conf --nofork --nopidfile 2>/dev/null &
for i in $(seq 100); do [ -S ${bus} ] && break; sleep 0.05; done
chmod 666 ${bus}
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=${bus}
mount -t tmpfs tmpfs /var/lib/systemd
${TIMESYNCD} 2>/dev/null &
echo $! > ${base.dir}/timesyncd.pid
setpriv --pdeathsig KILL sh -c 'for i in $(seq 30); do setpriv --pdeathsig KILL ${HOSTNAMED}; done' &
for i in $(seq 100); do busctl status org.freedesktop.hostname1 >/dev/null 2>&1 && busctl status org.freedesktop.timesync1 >/dev/null 2>&1 && break; sleep 0.05; done
echo ready
wait`;
      holder = spawn(
        "ip",
        [
          "netns",
          "exec",
          hsm,
          "unshare",
          "-u",
          "-m",
          "--propagation",
          "private",
          "--kill-child",
          "sh",
          "-c",
          script,
        ],
        {
          stdio: ["ignore", "pipe", "inherit"],
        },
      );
      await new Promise<void>((resolve, reject) => {
        holder.once("exit", (code) => reject(new Error(`appliance namespace ended (${code})`)));
        holder.stdout!.once("data", () => resolve());
      });
      build = await buildForChildren(["cli/main.js"]);
      testPki = await createTestPki(base.dir);
    }, 180_000);
    afterAll(async () => {
      await stopChildren();
      if (holder?.exitCode === null) holder.kill("SIGKILL");
      // timesyncd drops to its own user, which clears --pdeathsig: stopped by its PID.
      const timesyncd = Number(await readFile(join(base.dir, "timesyncd.pid"), "utf8").catch(() => "0"));
      if (timesyncd > 0) {
        try {
          process.kill(timesyncd, "SIGKILL");
        } catch {}
      }
      await sleep(50);
      await lab.cleanup();
      await build?.cleanup();
      await base?.cleanup();
    });

    test("with the unit's capabilities sethostname(2) is refused (CAP_SYS_ADMIN), hostnamed is not", () => {
      expect(() => run([...UNIT_CAPS, "hostname", "not-allowed"])).toThrow();
      expect(run(["hostname"])).toBe("factory-name");
      expect(execFileSync("hostname", { encoding: "utf8" }).trim()).not.toBe("factory-name"); // the test's own UTS
    });

    test("HostSettings via hostnamed: apply sets the static and kernel names, verify agrees, rollback restores both", async () => {
      const host = new HostSettings({
        hostnameVia: "hostnamed",
        hostnameFile: join(upper, "hostname"),
        hostnamectl: inside([...UNIT_CAPS, "hostnamectl"]),
        hostnameCommand: inside(["hostname"]),
      });
      const config = { hostname: "hsm-rollback-01", links: [], dns: [], ntp: [] };
      const before = await host.snapshot(config);
      expect(before).toEqual({
        hostname: "factory-name",
        files: { [join(upper, "hostname")]: "factory-name\n" },
      });
      await host.apply(config);
      await host.verify(config);
      expect(run(["hostname"])).toBe("hsm-rollback-01");
      expect(await readFile(join(upper, "hostname"), "utf8")).toBe("hsm-rollback-01\n"); // written by hostnamed
      await host.rollback(before);
      expect(run(["hostname"])).toBe("factory-name");
      expect(await readFile(join(upper, "hostname"), "utf8")).toBe("factory-name\n");
    }, 30_000);

    test("factory-init's default + agent run (CAP_NET_ADMIN only): hostname, DNS, NTP and the network applied; exit 0", async () => {
      const crl = await testPki.crl(1);
      const deviceDir = join(base.dir, "device");
      await issueDeviceToDirectory(testPki.dir, deviceDir, "1234567");
      const stateDir = join(base.dir, "state");
      const init = await runCliChild(build, [
        "agent",
        "factory-init",
        "--state-dir",
        stateDir,
        "--serial",
        "1234567",
        "--trust",
        join(testPki.dir, "root.pem"),
        "--device",
        deviceDir,
        "--net",
        "iproute2",
      ]);
      expect(init.code, init.stderr).toBe(0);
      expect(init.stdout).toMatch(/network applier iproute2, host settings hostnamed,/);
      expect((await AgentStateStore.open(stateDir)).state.hostSettings).toBe("hostnamed");

      const template = await CardTemplate.personalise(testPki.pki.tokenCa, base.dir, "card");
      await template.write(PLAN, { crl, sequence: 1 });
      const cardFile = join(base.dir, "card.json");
      new FileCardStateStore(cardFile).save(template.cardState);
      const result = await runCliChild(
        build,
        ["agent", "run", "--allow-plaintext", "--state-dir", stateDir, "--once", "--json", "--pin-stdin"],
        {
          env: { [VIRTUAL_CARD_ENV]: cardFile },
          stdin: `${PIN}\n`,
          timeoutMs: 60_000,
          wrap: (argv) => inside([...UNIT_CAPS, ...argv]),
        },
      );
      expect(result.code, result.stderr).toBe(0);
      expect(JSON.parse(result.stdout)).toMatchObject({ ok: true, hostname: "hsm-lab-07", sequence: 1 });
      expect(run(["hostname"])).toBe("hsm-lab-07");
      expect(await readFile(join(upper, "hostname"), "utf8")).toBe("hsm-lab-07\n");
      expect(await readFile(join(upper, "hsm-onboard", "resolv.conf"), "utf8")).toMatch(
        /\nnameserver 198\.51\.100\.53\nnameserver 198\.51\.100\.54\n$/,
      );
      expect(await readFile(join(upper, "hsm-onboard", "timesyncd.conf"), "utf8")).toMatch(
        /\[Time\]\nNTP=198\.51\.100\.123\n$/,
      );
      // The running timesyncd has them at once too (the drop-in counts from its next start).
      const ntp = run([
        "busctl",
        "--json=short",
        "get-property",
        "org.freedesktop.timesync1",
        "/org/freedesktop/timesync1",
        "org.freedesktop.timesync1.Manager",
        "RuntimeNTPServers",
      ]);
      expect(JSON.parse(ntp)).toEqual({ type: "as", data: ["198.51.100.123"] });
      await waitUntil(
        () => ip(["-n", hsm, "-br", "addr", "show", "eth0"]).includes("198.51.100.17/24"),
        5000,
        "eth0",
      );
      const { state } = await AgentStateStore.open(stateDir);
      expect(state.stage).toBe("configured");
      expect(execFileSync("hostname", { encoding: "utf8" }).trim()).not.toBe("hsm-lab-07"); // the test machine's name is untouched
    }, 90_000);
  },
);
