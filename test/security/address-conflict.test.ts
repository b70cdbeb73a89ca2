/**
 * SPEC.md §8 "survived: two HSMs planned with the same address (the second detects the conflict)".
 * One plan cannot carry the same address twice (validation refuses it, test/config/plan-rules), so
 * the way it happens is two configurations: HSM 1 configured from one card, HSM 2 later from another
 * card whose plan reuses HSM 1's address. Two HSM namespaces on a LAN bridge (namespaces this test
 * created, documentation addresses): the second agent finds the address in use — by an ARP probe
 * for IPv4, by duplicate address detection for IPv6 — and exits 21 with its network exactly as
 * before, HSM 1 keeps its address, and the officer's card carries HSM 2's receipt saying 21.
 *
 * The applier-level checks of the probe and DAD are test/agent/iproute2.test.ts ("an IPv4 address
 * another host holds …", "an IPv6 address another host holds …"); this is the whole agent flow.
 */
import { afterEach, beforeAll, describe, expect, test } from "vitest";
import { Agent } from "../../src/agent/agent.js";
import { Iproute2Backend } from "../../src/agent/net/iproute2.js";
import { AgentStateStore } from "../../src/agent/state-store.js";
import type { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { decodeReceiptLog, verifyReceipt } from "../../src/config/receipt.js";
import { ExitCode } from "../../src/errors.js";
import { createTestPki, initAgent, OWNER, PIN, pins, type TestPki, tempDir } from "../agent/fixtures.js";
import { ip, NetnsLab, netnsCapability, settled } from "../agent/netns.js";
import { requireOrSkip } from "../helpers/pcsc-env.js";
import { CardTemplate, networkOf, openMetered } from "./support.js";

const cap = requireOrSkip(netnsCapability());

function planFor(serial: string, hostname: string, ipv4: string, ipv6: string): NetworkPlan {
  return {
    owner: OWNER,
    subnets: [
      {
        name: "lan",
        cidr: "198.51.100.0/24",
        gateway: "198.51.100.1",
        dns: [],
        ntp: [],
        ipv6Cidr: "2001:db8:7::/64",
        ipv6Gateway: "2001:db8:7::1",
      },
    ],
    hsms: [{ serial, hostname, interfaces: [{ name: "eth0", subnet: "lan", ipv4, ipv6 }] }],
  };
}

describe.skipIf(!cap.ok)(
  `the same address planned for two HSMs${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let base: { dir: string; cleanup: () => Promise<void> };
    let testPki: TestPki;
    let crl: Uint8Array;
    let lab: NetnsLab;
    let racks = 0;
    beforeAll(async () => {
      base = await tempDir("hsm-security-conflict-");
      testPki = await createTestPki(base.dir);
      crl = await testPki.crl(1);
      return () => base.cleanup();
    });
    afterEach(async () => {
      await lab?.cleanup();
    });

    /** A LAN bridge and two HSM namespaces on it; HSM 1 configured from its card. */
    async function rack(hsm1Plan: NetworkPlan) {
      lab = new NetnsLab();
      racks++;
      const lan = lab.namespace("lan");
      ip(["-n", lan, "link", "add", "br0", "type", "bridge"]);
      ip(["-n", lan, "link", "set", "br0", "up"]);
      const hsms = [lab.namespace("hsm1"), lab.namespace("hsm2")];
      for (const [i, ns] of hsms.entries()) {
        lab.link(ns, "eth0", lan, `port${i + 1}`);
        ip(["-n", lan, "link", "set", `port${i + 1}`, "master", "br0", "up"]);
      }
      const agents = [];
      for (const [i, serial] of ["1234567", "1234568"].entries()) {
        const { stateDir } = await initAgent(base.dir, testPki, {
          crl,
          serial,
          name: `conflict-${racks}-${i}`,
        });
        agents.push({
          stateDir,
          ns: hsms[i]!,
          net: () => new Iproute2Backend({ netns: hsms[i]!, probeWindowMs: 500 }),
        });
      }
      const card1 = await CardTemplate.personalise(testPki.pki.tokenCa, base.dir, `card1-${racks}`);
      await card1.write(hsm1Plan, { crl, sequence: 1 });
      expect((await onboard(agents[0]!, card1.card())).exitCode).toBe(0);
      return agents;
    }

    async function onboard(agent: { stateDir: string; net: () => Iproute2Backend }, card: VirtualPivCard) {
      const a = await Agent.open({ stateDir: agent.stateDir, net: agent.net() });
      const element = await openMetered(card);
      try {
        await a.start();
        return await a.onboard(element, pins(PIN));
      } finally {
        await element.close();
        await a.close();
      }
    }

    for (const family of ["IPv4 (ARP probe)", "IPv6 (duplicate address detection)"] as const) {
      test(`${family}: HSM 2 refuses the address HSM 1 holds — exit 21, its network untouched, a receipt saying 21`, async () => {
        const agents = await rack(planFor("1234567", "hsm-a", "198.51.100.11", "2001:db8:7::11"));
        const [hsm1, hsm2] = agents as [(typeof agents)[0], (typeof agents)[0]];
        await settled(hsm1.ns);
        await settled(hsm2.ns);
        const hsm1Before = networkOf(hsm1.ns);
        const hsm2Before = networkOf(hsm2.ns);
        // The second configuration reuses HSM 1's IPv4 address, or only its IPv6 address.
        const plan2 =
          family === "IPv4 (ARP probe)"
            ? planFor("1234568", "hsm-b", "198.51.100.11", "2001:db8:7::12")
            : planFor("1234568", "hsm-b", "198.51.100.12", "2001:db8:7::11");
        const template = await CardTemplate.personalise(
          testPki.pki.tokenCa,
          base.dir,
          `card2-${family.slice(0, 4)}`,
        );
        await template.write(plan2, { crl, sequence: 2 });
        const card2 = template.card();
        const result = await onboard(hsm2, card2);
        expect(result, result.error?.message).toMatchObject({
          ok: false,
          exitCode: ExitCode.addressConflict,
          error: { code: "ERR_ADDRESS_CONFLICT" },
        });
        expect(result.error?.message).toMatch(
          family === "IPv4 (ARP probe)"
            ? /198\.51\.100\.11 is already in use/
            : /duplicate address detection/,
        );
        await settled(hsm2.ns);
        expect(networkOf(hsm2.ns)).toEqual(hsm2Before);
        expect(networkOf(hsm1.ns)).toEqual(hsm1Before);
        const state = (await AgentStateStore.open(hsm2.stateDir)).state;
        expect(state).toMatchObject({ stage: "waiting-for-card", lastError: { exitCode: 21 } });
        expect(state.configured).toBeUndefined();
        // The officer learns it at the station: HSM 2's signed receipt with outcome 21.
        const element = await openMetered(card2);
        const log = await element.readItem("receipt-0");
        await element.close();
        const [signed] = decodeReceiptLog(log!);
        const { receipt } = await verifyReceipt(signed!, { validateDevice: () => {} });
        expect(receipt).toMatchObject({ serial: "1234568", outcome: ExitCode.addressConflict });
      }, 60_000);
    }
  },
);
