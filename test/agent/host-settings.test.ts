/**
 * Host settings (issue 12) for real: the hostname set with the `hostname` program inside a UTS
 * namespace this test created (a long-lived `unshare -u` process, entered with nsenter), the
 * hostname file, resolv.conf and the timesyncd drop-in written into a temporary directory standing
 * for /etc; then through the agent with the iproute2 applier in a network namespace, and a failed
 * apply that restores the old hostname and files.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { HostSettings, hostSettingsUnder, withHostSettings } from "../../src/agent/host-settings.js";
import { Iproute2Backend } from "../../src/agent/net/iproute2.js";
import { applyWithRollback, type HostNetworkConfig } from "../../src/agent/net/net-backend.js";
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
  type TestPki,
  tempDir,
  writeConfig,
} from "./fixtures.js";
import { ip, NetnsLab, netnsCapability } from "./netns.js";

const cap = requireOrSkip(
  process.getuid?.() === 0 &&
    toolAvailable("unshare") &&
    toolAvailable("nsenter") &&
    toolAvailable("hostname")
    ? { ok: true, reason: "" }
    : { ok: false, reason: "needs root, unshare, nsenter and hostname (UTS namespaces)" },
);
const netns = requireOrSkip(netnsCapability());

const CONFIG: HostNetworkConfig = {
  hostname: "hsm-lab-01",
  links: [],
  dns: ["198.51.100.53", "2001:db8:120::53"],
  ntp: ["198.51.100.123", "198.51.100.124"],
};

describe.skipIf(!cap.ok)("host settings in a UTS namespace", () => {
  let uts: ChildProcess;
  let dir: { dir: string; cleanup: () => Promise<void> };
  let etc: string;
  const hostnameIn = () =>
    execFileSync("nsenter", ["-t", String(uts.pid), "-u", "hostname"], { encoding: "utf8" }).trim();
  const settings = (applier: "iproute2" | "networkd" = "iproute2") =>
    new HostSettings({
      ...hostSettingsUnder(etc, applier, "sethostname"),
      hostnameCommand: ["nsenter", "-t", String(uts.pid), "-u", "hostname"],
    });

  beforeEach(async () => {
    dir = await tempDir("hsm-host-");
    etc = join(dir.dir, "etc");
    await mkdir(join(etc, "hsm-onboard"), { recursive: true });
    await writeFile(join(etc, "hostname"), "factory-name\n");
    await writeFile(join(etc, "hsm-onboard", "resolv.conf"), "nameserver 192.0.2.1\n");
    uts = spawn("unshare", ["-u", "sh", "-c", "hostname factory-name && exec sleep 120"], {
      stdio: "ignore",
    });
    for (let turn = 0; turn < 100; turn++) {
      try {
        if (hostnameIn() === "factory-name") break;
      } catch {}
      await sleep(20);
    }
    expect(hostnameIn()).toBe("factory-name");
    expect(execFileSync("hostname", { encoding: "utf8" }).trim()).not.toBe("factory-name");
  });
  afterEach(async () => {
    uts.kill("SIGKILL");
    await dir.cleanup();
  });

  test("apply sets the UTS hostname and writes hostname, resolv.conf and the timesyncd drop-in; verify agrees; rollback restores all", async () => {
    const host = settings();
    const before = await host.snapshot(CONFIG);
    expect(before).toEqual({
      hostname: "factory-name",
      files: {
        [join(etc, "hostname")]: "factory-name\n",
        [join(etc, "hsm-onboard", "resolv.conf")]: "nameserver 192.0.2.1\n",
        [join(etc, "hsm-onboard", "timesyncd.conf")]: null,
      },
    });
    await host.apply(CONFIG);
    await host.verify(CONFIG);
    expect(hostnameIn()).toBe("hsm-lab-01");
    expect(await readFile(join(etc, "hostname"), "utf8")).toBe("hsm-lab-01\n");
    expect(await readFile(join(etc, "hsm-onboard", "resolv.conf"), "utf8")).toMatch(
      /\nnameserver 198\.51\.100\.53\nnameserver 2001:db8:120::53\n$/,
    );
    expect(await readFile(join(etc, "hsm-onboard", "timesyncd.conf"), "utf8")).toMatch(
      /\[Time\]\nNTP=198\.51\.100\.123 198\.51\.100\.124\n$/,
    );
    await host.rollback(before);
    expect(hostnameIn()).toBe("factory-name");
    expect(await host.snapshot(CONFIG)).toEqual(before);
  });

  test("with networkd only the hostname is written here (DNS= and NTP= are in its .network files); a bad name is refused", async () => {
    const host = settings("networkd");
    expect([...host.files(CONFIG).keys()]).toEqual([join(etc, "hostname")]);
    await expect(host.apply({ ...CONFIG, hostname: "bad name;rm" })).rejects.toThrow(NetworkApplyError);
    expect(hostnameIn()).toBe("factory-name");
  });

  describe.skipIf(!netns.ok)("with the iproute2 applier in a network namespace", () => {
    let lab: NetnsLab;
    let testPki: TestPki;
    beforeAll(async () => {
      const pkiDir = await tempDir("hsm-host-pki-");
      testPki = await createTestPki(pkiDir.dir);
    }, 60_000);
    afterEach(async () => {
      await lab?.cleanup();
    });

    test("a card configures network, hostname, DNS and NTP; a failing apply afterwards restores them all", async () => {
      lab = new NetnsLab();
      const hsm = lab.namespace("hsm");
      const peer = lab.namespace("peer");
      lab.link(hsm, "eth0", peer, "lan0");
      ip(["-n", peer, "link", "set", "lan0", "up"]);
      const crl = await testPki.crl(1);
      const { stateDir } = await initAgent(dir.dir, testPki, { crl, applier: "iproute2" });
      const { card } = await personalizeCard(testPki.pki.tokenCa);
      await writeConfig(card, LAB_PLAN, { sequence: 1, crl });
      const net = withHostSettings(new Iproute2Backend({ netns: hsm, probeWindowMs: 300 }), settings());
      const agent = await startAgent(stateDir, net);
      const element = await openElement(card);
      try {
        const result = await agent.onboard(element, pins(PIN));
        expect(result, result.error?.message).toMatchObject({ ok: true, hostname: "hsm-lab-01" });
      } finally {
        await element.close();
        await agent.close();
      }
      expect(hostnameIn()).toBe("hsm-lab-01");
      expect(await readFile(join(etc, "hsm-onboard", "resolv.conf"), "utf8")).toContain(
        "nameserver 198.51.100.53\n",
      );
      expect(await readFile(join(etc, "hsm-onboard", "timesyncd.conf"), "utf8")).toContain(
        "NTP=198.51.100.123\n",
      );
      expect(JSON.stringify(JSON.parse(ip(["-n", hsm, "-json", "addr", "show", "eth0"])))).toContain(
        "198.51.100.11",
      );
      expect((await AgentStateStore.open(stateDir)).state.stage).toBe("configured");

      // Another configuration, applied (network and host) and then failing verification: the
      // rollback brings the old hostname, files and addresses back.
      const other: HostNetworkConfig = {
        hostname: "hsm-other",
        links: [
          {
            name: "eth0",
            device: "eth0",
            physical: "eth0",
            ipv4: { address: "198.51.100.21", prefixLength: 24 },
            metric: 100,
          },
        ],
        dns: ["198.51.100.99"],
        ntp: ["198.51.100.98"],
      };
      const seen: string[] = [];
      const broken = {
        ...net,
        verify: async () => {
          seen.push(hostnameIn(), await readFile(join(etc, "hsm-onboard", "resolv.conf"), "utf8"));
          throw new NetworkApplyError("injected: verification failed");
        },
      };
      const snapshot = await broken.snapshot(other);
      await expect(applyWithRollback(broken, other, snapshot)).rejects.toThrow(/injected/);
      expect(seen[0]).toBe("hsm-other"); // it was applied before the failure
      expect(seen[1]).toContain("nameserver 198.51.100.99\n");
      expect(hostnameIn()).toBe("hsm-lab-01");
      expect(await readFile(join(etc, "hsm-onboard", "resolv.conf"), "utf8")).toContain(
        "nameserver 198.51.100.53\n",
      );
      const addresses = JSON.stringify(JSON.parse(ip(["-n", hsm, "-json", "addr", "show", "eth0"])));
      expect(addresses).toContain("198.51.100.11");
      expect(addresses).not.toContain("198.51.100.21");
    });
  });
});
