/**
 * The agent's wait/onboard/remove loop (Agent.serve, which `agent run` drives), over real in-process
 * virtual cards. The card source stands in for the reader only: it hands out the cards in order,
 * and "removing" a card happens at once.
 */
import { describe, expect, test } from "vitest";
import type { CardSource } from "../../src/agent/card-source.js";
import { DryRunBackend } from "../../src/agent/net/dry-run.js";
import type { OnboardingResult } from "../../src/agent/onboarding.js";
import type { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { ApplicationNotAvailableError, ExitCode, NoCardError, PcscError } from "../../src/errors.js";
import type { SecureElement } from "../../src/secure-element/secure-element.js";
import {
  initAgent,
  LAB_PLAN,
  openElement,
  PIN,
  personalizeCard,
  pins,
  startAgent,
  useTestPki,
  writeConfig,
} from "./fixtures.js";

const bed = useTestPki();

/** Hands out `cards` in order (an Error: a card that cannot be opened), then runs out (NoCardError). */
function queueSource(cards: (VirtualPivCard | Error)[]) {
  const events: string[] = [];
  let open: SecureElement | undefined;
  const source: CardSource = {
    async nextCard() {
      const next = cards.shift();
      if (next === undefined) throw new NoCardError("no card inserted");
      if (next instanceof Error) {
        events.push("open-failed");
        throw next;
      }
      open = await openElement(next);
      events.push("opened");
      return open;
    },
    async release() {
      if (open) events.push("released");
      await open?.close();
      open = undefined;
    },
    async waitForRemoval() {
      events.push("removed");
    },
  };
  return { source, events };
}

async function cardWithConfig(): Promise<VirtualPivCard> {
  const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
  await writeConfig(card, LAB_PLAN, { crl: await bed.testPki.crl(1) });
  return card;
}

describe("Agent.serve", () => {
  test("with once: onboards the first card, reports and returns its result, releases the card", async () => {
    const { stateDir } = await initAgent(bed.dir, bed.testPki, { name: "serve-once" });
    const agent = await startAgent(stateDir, await DryRunBackend.open({}));
    try {
      const { source, events } = queueSource([await cardWithConfig(), await cardWithConfig()]);
      const reported: OnboardingResult[] = [];
      const last = await agent.serve({
        source,
        pinSource: pins(PIN),
        once: true,
        onResult: (r) => reported.push(r),
      });
      expect(last?.exitCode).toBe(ExitCode.ok);
      expect(last?.stage).toBe("configured");
      expect(reported).toEqual([last]);
      expect(events).toEqual(["opened", "released"]);
      expect(agent.store.state.stage).toBe("configured");
    } finally {
      await agent.close();
    }
  });

  test("without once: a card it cannot open is reported and must be removed; then card after card until stopped", async () => {
    const { stateDir } = await initAgent(bed.dir, bed.testPki, { name: "serve-loop" });
    const log: string[] = [];
    const agent = await startAgent(stateDir, await DryRunBackend.open({}), log);
    const controller = new AbortController();
    try {
      const card = await cardWithConfig();
      // A card without PIV, the configuration card, then the same card again (its configuration is applied).
      const { source, events } = queueSource([
        new ApplicationNotAvailableError("no PIV application"),
        card,
        card,
      ]);
      const reported: OnboardingResult[] = [];
      const last = await agent.serve({
        source,
        pinSource: pins(PIN, PIN),
        signal: controller.signal,
        onResult: (r) => {
          reported.push(r);
          if (reported.length === 2) controller.abort();
        },
      });
      // The same card again is recognised before the PIN (issue 12): 0, nothing changed.
      expect(reported.map((r) => r.exitCode)).toEqual([ExitCode.ok, ExitCode.ok]);
      expect(reported[1]?.alreadyConfigured).toBe(true);
      expect(last).toBe(reported[1]);
      expect(events).toEqual([
        "open-failed",
        "removed",
        "opened",
        "released",
        "removed",
        "opened",
        "released",
        "removed",
      ]);
      expect(log.some((l) => l.startsWith("cannot use this card: no PIV application"))).toBe(true);
      expect(log.filter((l) => l === "remove the card")).toHaveLength(2);
    } finally {
      await agent.close();
    }
  });

  test("without once, pcscd refusing a context is waited out like pcscd gone (seen: SCARD_E_NO_ACCESS while it restarts); with once it is thrown", async () => {
    const { stateDir } = await initAgent(bed.dir, bed.testPki, { name: "serve-pcscd" });
    const log: string[] = [];
    const agent = await startAgent(stateDir, await DryRunBackend.open({}), log);
    const refused = () =>
      new PcscError("SCardEstablishContext failed: Access denied", "SCardEstablishContext", 0x8010006a);
    const gone = () =>
      new PcscError("PC/SC service not available", "SCardEstablishContext", 0x8010001d, {
        serviceGone: true,
      });
    const controller = new AbortController();
    try {
      const { source, events } = queueSource([refused(), gone(), refused(), await cardWithConfig()]);
      const last = await agent.serve({
        source,
        pinSource: pins(PIN),
        signal: controller.signal,
        backoff: { firstMs: 1, maxMs: 5 },
        onResult: () => controller.abort(),
      });
      expect(last?.exitCode).toBe(ExitCode.ok);
      expect(events.filter((e) => e === "open-failed")).toHaveLength(3);
      expect(log.filter((l) => l.startsWith("PC/SC service gone"))).toHaveLength(3);
      await expect(
        agent.serve({ source: queueSource([refused()]).source, pinSource: pins(), once: true }),
      ).rejects.toThrow(/Access denied/);
    } finally {
      await agent.close();
    }
  });

  test("throws what ends the wait: no card in time (10), or with once a card it cannot open (11)", async () => {
    const { stateDir } = await initAgent(bed.dir, bed.testPki, { name: "serve-errors" });
    const agent = await startAgent(stateDir, await DryRunBackend.open({}));
    try {
      await expect(agent.serve({ source: queueSource([]).source, pinSource: pins() })).rejects.toThrow(
        NoCardError,
      );
      await expect(
        agent.serve({
          source: queueSource([new ApplicationNotAvailableError("no PIV application")]).source,
          pinSource: pins(),
          once: true,
        }),
      ).rejects.toThrow(ApplicationNotAvailableError);
      expect(agent.store.state.stage).toBe("waiting-for-card");
    } finally {
      await agent.close();
    }
  });
});
