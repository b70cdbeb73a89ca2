/**
 * Issue 12 proof: the networkd applier under a real crash. `agent run --once --net networkd` as a
 * child process in a network namespace with the real systemd-networkd (TESTBED.md; "networkctl
 * reload" is sim rack's NETWORKD_RESTART_SCRIPT, a restart of that networkd, given with
 * --networkd-reload), the card in-process (HSM_ONBOARD_VIRTUAL_CARD).
 *
 * The agent is killed (SIGKILL, HSM_ONBOARD_CRASH_AT) after its first file was written, before
 * networkd was told. The next `agent run` rolls the interrupted apply back (files and live state,
 * audit record), then onboards the same card: networkd applies the files, `ip -json` shows the plan,
 * and networkd's own link state carries DNS and NTP.
 */
import { chmod, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { readAuditLog } from "../../src/agent/audit-log.js";
import { CRASH_AT_ENV } from "../../src/agent/faults.js";
import { AgentStateStore } from "../../src/agent/state-store.js";
import { VIRTUAL_CARD_ENV } from "../../src/cli/card-opener.js";
import { NETWORKD_RESTART_SCRIPT } from "../../src/sim/rack.js";
import {
  createTestPki,
  initAgent,
  LAB_PLAN,
  PIN,
  personalizeCard,
  tempDir,
  writeConfig,
} from "../agent/fixtures.js";
import { addrJson, ip, NetnsLab, netnsCapability, routesJson } from "../agent/netns.js";
import { buildForChildren, type PrivateBuild, requireOrSkip, toolAvailable } from "../helpers/pcsc-env.js";
import { runCliChild, stopChildren } from "./children.js";

const NETWORKD = "/lib/systemd/systemd-networkd";
const netns = requireOrSkip(netnsCapability());
const hasNetworkd = await readFile(NETWORKD).then(
  () => true,
  () => false,
);
const cap = requireOrSkip(
  !netns.ok
    ? netns
    : hasNetworkd && toolAvailable("unshare")
      ? { ok: true, reason: "" }
      : { ok: false, reason: `${NETWORKD} not installed (package systemd)` },
);

describe.skipIf(!cap.ok)(
  `networkd applier, agent killed mid-apply${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let base: { dir: string; cleanup: () => Promise<void> };
    let build: PrivateBuild;
    let lab: NetnsLab;
    let pidfile: string;

    beforeAll(async () => {
      base = await tempDir("hsm-networkd-crash-");
      build = await buildForChildren(["cli/main.js"]);
    }, 180_000);
    afterAll(async () => {
      await stopChildren();
      const pid = Number(await readFile(pidfile, "utf8").catch(() => ""));
      if (pid > 0) {
        try {
          process.kill(pid, "SIGTERM");
        } catch {}
      }
      await lab?.cleanup();
      await build?.cleanup();
      await base?.cleanup();
    });

    test("killed after the first file: the next run rolls files and network back, then onboards through networkd", async () => {
      const testPki = await createTestPki(base.dir);
      const crl = await testPki.crl(1);
      const netDir = join(base.dir, "network");
      await mkdir(netDir);
      await chmod(netDir, 0o755); // networkd reads it as the systemd-network user
      pidfile = join(base.dir, "networkd.pid");
      // "networkctl reload" without D-Bus: the same restart script sim rack uses.
      const restart = join(base.dir, "networkd-restart.sh");
      await writeFile(restart, NETWORKD_RESTART_SCRIPT, { mode: 0o755 });
      const { stateDir } = await initAgent(base.dir, testPki, { crl, applier: "networkd" });
      const cardFile = join(base.dir, "card.json");
      const { card } = await personalizeCard(testPki.pki.tokenCa, { path: cardFile });
      await writeConfig(card, LAB_PLAN, { sequence: 1, crl });
      lab = new NetnsLab();
      const hsm = lab.namespace("hsm");
      const lan = lab.namespace("lan");
      lab.link(hsm, "eth0", lan, "lan0");
      ip(["-n", lan, "link", "set", "lan0", "up"]);
      const before = JSON.stringify({ addr: addrJson(hsm), routes: routesJson(hsm) });
      const args = [
        "agent",
        "run",
        "--allow-plaintext",
        "--state-dir",
        stateDir,
        "--once",
        "--json",
        "--pin-stdin",
        "--network-dir",
        netDir,
        "--networkd-reload",
        `sh '${restart}' '${netDir}' '${pidfile}'`,
      ];

      const crashed = await runCliChild(build, args, {
        netns: hsm,
        env: { [VIRTUAL_CARD_ENV]: cardFile, [CRASH_AT_ENV]: "mid-apply:1" },
        stdin: `${PIN}\n`,
        timeoutMs: 60_000,
      });
      expect(crashed.signal, crashed.stderr).toBe("SIGKILL");
      expect(await readdir(netDir)).toEqual(["50-hsm-onboard-eth0.network"]); // written, networkd not told
      expect((await AgentStateStore.open(stateDir)).state.stage).toBe("applying");

      const next = await runCliChild(build, args, {
        netns: hsm,
        env: { [VIRTUAL_CARD_ENV]: cardFile },
        stdin: `${PIN}\n`,
        timeoutMs: 90_000,
      });
      expect(next.code, next.stderr).toBe(0);
      expect(next.stderr).toMatch(/an interrupted apply was found: the network was rolled back/);
      expect(JSON.parse(next.stdout)).toMatchObject({
        ok: true,
        addresses: ["198.51.100.11/24", "2001:db8:120::11/64"],
      });
      const { state } = await AgentStateStore.open(stateDir);
      expect(state).toMatchObject({ stage: "configured", configured: { backend: "networkd", sequence: 1 } });
      const audit = await readAuditLog(join(stateDir, "audit.log"), { expectedHead: state.auditHead! });
      expect(audit.records.map((r) => r.event)).toEqual([
        "factory-init",
        "interrupted-apply-rolled-back",
        "configured",
      ]);
      expect(before).not.toContain("198.51.100.11");
      expect(JSON.stringify(addrJson(hsm))).toContain("198.51.100.11");
      expect(JSON.stringify(routesJson(hsm))).toMatch(/"dst":"default","gateway":"198\.51\.100\.1"/);
      const pid = Number(await readFile(pidfile, "utf8"));
      const index = (
        JSON.parse(ip(["-n", hsm, "-json", "link", "show", "eth0"])) as { ifindex: number }[]
      )[0]!.ifindex;
      const linkState = await readFile(`/proc/${pid}/root/run/systemd/netif/links/${index}`, "utf8");
      expect(linkState).toMatch(/^DNS=198\.51\.100\.53$/m);
      expect(linkState).toMatch(/^NTP=198\.51\.100\.123$/m);
      expect(linkState).toMatch(/^ADMIN_STATE=configured$/m);
    }, 240_000);
  },
);
