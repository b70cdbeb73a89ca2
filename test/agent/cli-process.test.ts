/**
 * `hsm-onboard agent run` as a real process inside an HSM network namespace (root only): the live
 * iproute2 applier, the PIN on standard input, a JSON line per card, one status line per step, then
 * waiting for the card to be removed until SIGTERM (exit 0). The card is an in-process virtual card
 * (HSM_ONBOARD_VIRTUAL_CARD); PC/SC is covered by the e2e tests of the transport.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { VIRTUAL_CARD_ENV } from "../../src/cli/card-opener.js";
import {
  buildForChildren,
  cliLauncher,
  NodeChild,
  type PrivateBuild,
  requireOrSkip,
} from "../helpers/pcsc-env.js";
import {
  createTestPki,
  initAgent,
  LAB_PLAN,
  PIN,
  personalizeCard,
  tempDir,
  writeConfig,
} from "./fixtures.js";
import { exitOf, ip, NetnsLab, netnsCapability, TCP_CLIENT, TCP_SERVER, waitUntil } from "./netns.js";

const netns = requireOrSkip(netnsCapability());

describe.skipIf(!netns.ok)("agent run as a process in a network namespace", () => {
  let base: { dir: string; cleanup: () => Promise<void> };
  let build: PrivateBuild | undefined;
  let lab: NetnsLab;
  let child: NodeChild | undefined;

  beforeAll(async () => {
    base = await tempDir();
    lab = new NetnsLab();
    build = await buildForChildren(["cli/main.js", "agent/agent.js"]);
  }, 180_000);
  afterAll(async () => {
    await child?.stop();
    await lab.cleanup();
    await build?.cleanup();
    await base.cleanup();
  });

  test("configures the namespace from the card, reachable over TCP; SIGTERM ends the wait with exit 0", async () => {
    const testPki = await createTestPki(base.dir);
    const crl = await testPki.crl(1);
    const { stateDir } = await initAgent(base.dir, testPki, { crl });
    const cardFile = join(base.dir, "card.json");
    const { card } = await personalizeCard(testPki.pki.tokenCa, { path: cardFile });
    await writeConfig(card, LAB_PLAN, { sequence: 1, crl });
    const hsm = lab.namespace("hsm");
    const peer = lab.namespace("peer");
    lab.link(hsm, "eth0", peer, "lan0");
    ip(["-n", peer, "addr", "add", "198.51.100.1/24", "dev", "lan0"]);
    ip(["-n", peer, "link", "set", "lan0", "up"]);

    const script = await cliLauncher(build!);
    child = new NodeChild(
      script,
      { [VIRTUAL_CARD_ENV]: cardFile },
      {
        netns: hsm,
        args: [
          "agent",
          "run",
          "--allow-plaintext",
          "--state-dir",
          stateDir,
          "--net",
          "iproute2",
          "--json",
          "--pin-stdin",
        ],
      },
    );
    await child.waitForStderr(/agent: HSM 1234567 waiting for a card/, 20_000);
    child.send(PIN);
    const { message } = await child.waitFor((m) => typeof m.ok === "boolean", 30_000);
    expect(message).toMatchObject({
      ok: true,
      exitCode: 0,
      addresses: ["198.51.100.11/24", "2001:db8:120::11/64"],
    });
    expect(child.stderr).toMatch(/agent: card authenticated: ACME Bank/);
    expect(child.stderr).toMatch(/agent: configured: hsm-lab-01/);
    expect(child.stderr).not.toContain(PIN);
    await child.waitForStderr(/agent: remove the card/, 10_000);

    const server = lab.node(hsm, TCP_SERVER, ["198.51.100.11", "1792", "hsm-lab-01", "10000"]);
    await waitUntil(() => server.output().includes("listening"), 5000, "the TCP server");
    const client = lab.node(peer, TCP_CLIENT, ["198.51.100.11", "1792", "3000"]);
    expect(await exitOf(client, 8000)).toBe(0);
    expect(client.output()).toContain("got hsm-lab-01");

    expect(child.running).toBe(true); // waiting for the card to be taken out
    child.signal("SIGTERM");
    expect(await child.exitCode(10_000)).toBe(0);
  });
});
