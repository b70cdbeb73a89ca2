/**
 * Issue 12: "SIGTERM finishes or rolls back the step in progress and exits 0" — over the real stack:
 * a private pcscd with vpcd, `hsm-onboard card emulate` as the card, `agent run` as a service
 * process (no --once) with the iproute2 applier in a network namespace of its own, its PIN from a
 * front-panel program (--pin-command).
 *
 * The SIGTERM is real: sent by the test while the front panel waits for the officer, or by the agent
 * to itself at a named point (HSM_ONBOARD_SIGTERM_AT, src/agent/faults.ts) — its handler then runs
 * inside the step in progress. Before the PIN the card is let go (nothing changed: no address, no
 * receipt, stage as before, an `onboarding-stopped` audit record); once the PIN is verified the
 * flow is finished: the network fully applied and verified, `configured` recorded, the receipt
 * written. Every run exits 0 and leaves a verifying audit log and no `applying` behind.
 */
import { existsSync, readFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { readAuditLog } from "../../src/agent/audit-log.js";
import { type CrashPoint, SIGTERM_AT_ENV } from "../../src/agent/faults.js";
import { AgentStateStore } from "../../src/agent/state-store.js";
import { FileCardStateStore } from "../../src/card-emulator/card-state-store.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { type PrivatePcscd, startPrivatePcscd } from "../../src/sim/pcscd.js";
import { initAgent, OWNER, PIN } from "../agent/fixtures.js";
import { ip, NetnsLab, waitUntil } from "../agent/netns.js";
import { type LiveChild, startCliChild, stopChildren } from "./children.js";
import { stackCapability, useChildTestBed } from "./stack.js";
import { CardTemplate } from "./support.js";

// pcscd + vpcd and network namespaces, both needed.
const cap = stackCapability();

const ADDRESS = "198.51.100.31";
const PLAN: NetworkPlan = {
  owner: OWNER,
  subnets: [
    {
      name: "lab",
      cidr: "198.51.100.0/24",
      gateway: "198.51.100.1",
      dns: ["198.51.100.53"],
      ntp: [],
      mtu: 1400,
    },
  ],
  hsms: [
    {
      serial: "1234567",
      hostname: "hsm-term-01",
      interfaces: [{ name: "eth0", subnet: "lab", ipv4: ADDRESS }],
    },
  ],
};

interface Result {
  ok: boolean;
  exitCode: number;
  stopped?: boolean;
  sequence?: number;
  receipt?: { written: boolean };
}

describe.skipIf(!cap.ok)(
  `agent run: SIGTERM in the middle of a card${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let template: CardTemplate;
    let pcscd: PrivatePcscd | undefined;
    const lab = new NetnsLab();
    let pcNs: string;
    let run = 0;

    const bed = useChildTestBed("hsm-sigterm-", ["cli/main.js", "agent/faults.js"]);
    beforeAll(async () => {
      template = await CardTemplate.personalise(bed.testPki.pki.tokenCa, bed.dir, "card", {
        officer: "Alice Officer",
      });
      await template.write(PLAN, { crl: bed.crl1, sequence: 1 });
      pcNs = lab.namespace("pc");
      pcscd = await startPrivatePcscd({ netns: pcNs });
    }, 180_000);
    afterAll(async () => {
      await stopChildren();
      await pcscd?.stop();
      await lab.cleanup();
    });

    /**
     * A fresh HSM (state, namespace with eth0 to a peer), the agent started as a service, the card
     * inserted; `waitPin`: the front panel waits (bounded) instead of answering.
     */
    async function start(env: Record<string, string>, waitPin = false) {
      const name = `run${++run}`;
      const hsm = lab.namespace(`hsm${run}`);
      const peer = lab.namespace(`peer${run}`);
      lab.link(hsm, "eth0", peer, "lan0");
      ip(["-n", peer, "addr", "add", "198.51.100.1/24", "dev", "lan0"]);
      ip(["-n", peer, "link", "set", "lan0", "up"]);
      const { stateDir } = await initAgent(bed.dir, bed.testPki, {
        crl: bed.crl1,
        name,
        applier: "iproute2",
      });
      const told = join(bed.dir, `${name}-front-panel.log`);
      const frontPanel = join(bed.dir, `${name}-front-panel.sh`);
      await writeFile(
        frontPanel,
        `#!/bin/sh\necho "$$ $HSM_ONBOARD_CARD_OFFICER" >> '${told}'\n${waitPin ? "sleep 20\n" : ""}printf '%s\\n' '${PIN}'\n`,
        { mode: 0o755 },
      );
      const agent = await startCliChild(
        bed.build,
        ["agent", "run", "--allow-plaintext", "--state-dir", stateDir, "--json", "--pin-command", frontPanel],
        { netns: hsm, env: { ...pcscd!.env, ...env } },
      );
      await agent.waitForStderr(/waiting for a card/, 20_000);
      const cardFile = join(bed.dir, `${name}-card.json`);
      new FileCardStateStore(cardFile).save(template.cardState);
      const card = await startCliChild(
        bed.build,
        ["card", "emulate", "--state", cardFile, "--vpcd", `127.0.0.1:${pcscd!.vpcdPort}`],
        { netns: pcNs },
      );
      await card.waitForStderr(/inserted: connected to vpcd/, 10_000);
      return { agent, card, hsm, stateDir, told };
    }

    async function finish(agent: LiveChild, card: LiveChild, stateDir: string) {
      const exit = await agent.exit(30_000);
      await card.stop();
      const results = exit.stdout
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Result);
      const { state } = await AgentStateStore.open(stateDir);
      const audit = await readAuditLog(join(stateDir, "audit.log"), { expectedHead: state.auditHead! });
      expect(audit.ok).toBe(true);
      expect(state.applying).toBeUndefined();
      return { exit, results, state, events: audit.records.map((r) => r.event) };
    }

    const addresses = (ns: string) =>
      JSON.stringify(JSON.parse(ip(["-n", ns, "-json", "addr", "show", "eth0"])));
    const defaultRoute = (ns: string) => ip(["-n", ns, "-json", "route", "show", "default"]);

    test("while the card is read (before the PIN): the card is let go, nothing changed, exit 0", async () => {
      const { agent, card, hsm, stateDir, told } = await start({ [SIGTERM_AT_ENV]: "card-inserted" });
      const { exit, results, state, events } = await finish(agent, card, stateDir);
      expect(exit.code, exit.stderr).toBe(0);
      expect(exit.stderr).toMatch(
        /stopping: the card in progress[\s\S]*card authenticated[\s\S]*stopping before the PIN/,
      );
      expect(results).toEqual([expect.objectContaining({ ok: false, stopped: true, exitCode: 0 })]);
      await expect(readFile(told, "utf8")).rejects.toThrow(/ENOENT/); // the front panel was never asked
      expect(state.stage).toBe("waiting-for-card");
      expect(state.configured).toBeUndefined();
      expect(events).toEqual(["factory-init", "onboarding-stopped"]);
      expect(addresses(hsm)).not.toContain(ADDRESS);
    }, 90_000);

    test("while the front panel waits for the PIN: the PIN program is killed, nothing changed, exit 0", async () => {
      const { agent, card, hsm, stateDir, told } = await start({}, true);
      let panelPid = 0;
      await waitUntil(
        () => {
          const line = existsSync(told) ? readFileSync(told, "utf8") : "";
          panelPid = Number(line.split(" ")[0]);
          return panelPid > 0;
        },
        20_000,
        "the front panel to be asked",
      );
      process.kill(agent.pid!, "SIGTERM");
      const { exit, results, state, events } = await finish(agent, card, stateDir);
      expect(exit.code, exit.stderr).toBe(0);
      expect(results).toEqual([expect.objectContaining({ ok: false, stopped: true, exitCode: 0 })]);
      expect((await readFile(told, "utf8")).trim()).toBe(`${panelPid} Alice Officer`);
      // Its process group was killed: gone, or dead and not yet reaped by its new parent.
      await waitUntil(
        () =>
          !existsSync(`/proc/${panelPid}`) ||
          /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${panelPid}/stat`, "utf8")),
        5000,
        "the PIN program to die",
      );
      expect(state.stage).toBe("waiting-for-card");
      expect(events).toEqual(["factory-init", "onboarding-stopped"]);
      expect(addresses(hsm)).not.toContain(ADDRESS);
    }, 90_000);

    const APPLY_POINTS: CrashPoint[] = ["mid-apply:2", "after-persist-before-receipt"];
    test.each(APPLY_POINTS)(
      "at %s (after the PIN): the card is finished — applied, verified, recorded, receipt; exit 0",
      async (point) => {
        const { agent, card, hsm, stateDir } = await start({ [SIGTERM_AT_ENV]: point });
        const { exit, results, state, events } = await finish(agent, card, stateDir);
        expect(exit.code, exit.stderr).toBe(0);
        // The signal arrived inside the step: its line comes before the step's end.
        expect(exit.stderr).toMatch(
          /PIN verified[\s\S]*stopping: the card in progress[\s\S]*receipt written/,
        );
        expect(results).toEqual([
          expect.objectContaining({
            ok: true,
            exitCode: 0,
            sequence: 1,
            receipt: expect.objectContaining({ written: true }),
          }),
        ]);
        expect(state.stage).toBe("configured");
        expect(state.configured?.sequence).toBe(1);
        expect(events).toEqual(["factory-init", "configured"]);
        expect(addresses(hsm)).toContain(`"local":"${ADDRESS}","prefixlen":24`);
        expect(defaultRoute(hsm)).toContain('"gateway":"198.51.100.1"');
      },
      90_000,
    );
  },
);
