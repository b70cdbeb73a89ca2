/**
 * station write across a card set (issue 13), in process on virtual PIV cards: one sequence for n
 * cards, card k of n in each manifest, the journal that resumes an interrupted set, and the
 * refusals (a card of the set shown again, another plan, too many cards for --cosigners).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { findShardFor, MANIFEST_CARD_SET_VERSION, verifyManifest } from "../../src/config/manifest.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { CardFullError, NotForThisHsmError, UsageError } from "../../src/errors.js";
import { openInProcessCard } from "../../src/secure-element/open-card.js";
import { readCardSetJournal } from "../../src/station/card-set-journal.js";
import { cosignConfiguration } from "../../src/station/cosign-card.js";
import { openInventory } from "../../src/station/inventory/open.js";
import { lastSequence } from "../../src/station/sequence-store.js";
import { loadStationTrust } from "../../src/station/station-dir.js";
import { configSigningValidator, writeConfigurationToCard } from "../../src/station/write-card.js";
import {
  generatedPlan,
  makePki,
  makeStation,
  PIN,
  personaliseCard,
  removeTempDirs,
  type TestPki,
} from "./fixtures.js";

let pki: TestPki;
let plan: NetworkPlan;
beforeAll(async () => {
  pki = await makePki();
  plan = generatedPlan(5000);
});
afterAll(removeTempDirs);

async function write(
  card: VirtualPivCard,
  stationDir: string,
  extra: Partial<Parameters<typeof writeConfigurationToCard>[0]> = {},
) {
  const c = await openInProcessCard(card, { readerName: "Test reader" });
  try {
    return await writeConfigurationToCard({ element: c.element, plan, stationDir, pin: PIN, ...extra });
  } finally {
    await c.dispose();
  }
}

async function manifestOf(card: VirtualPivCard, stationDir: string) {
  const c = await openInProcessCard(card, { readerName: "Test reader" });
  try {
    const bytes = await c.element.readItem("manifest");
    const trust = await loadStationTrust(stationDir);
    return (await verifyManifest(bytes!, { validateChain: configSigningValidator(trust, new Date()) }))
      .manifest;
  } finally {
    await c.dispose();
  }
}

describe("station write, a 5,000-HSM plan on a card set", () => {
  it("writes 3 cards with one configuration id and sequence; resumes after an interruption; refuses a card shown twice and another plan", async () => {
    const stationDir = await makeStation(pki);
    const cards = await Promise.all([1, 2, 3].map(async () => (await personaliseCard(pki)).card));

    const first = await write(cards[0]!, stationDir, { allowCardSet: true });
    expect(first.cardSet).toMatchObject({ index: 1, count: 3, planHsms: 5000, remaining: [2, 3] });
    expect(first.sequence).toBe(1);
    const journal = first.cardSet!.journal;

    // The officer shows card 1 again for card 2: refused before the PIN, nothing written.
    let pinAsked = false;
    const again = await write(cards[0]!, stationDir, {
      cardSet: journal,
      pin: async () => {
        pinAsked = true;
        return PIN;
      },
    }).catch((e: unknown) => e);
    expect(again).toBeInstanceOf(UsageError);
    expect((again as Error).message).toMatch(
      /already holds card 1 of 3 of this set: insert a card for card 2 of 3/,
    );
    expect(pinAsked).toBe(false);

    // The session ends after card 2 (card 3 "failed"): the journal on disk resumes it.
    const second = await write(cards[1]!, stationDir, { cardSet: journal });
    expect(second.cardSet).toMatchObject({ index: 2, count: 3, remaining: [3] });
    // The station stopped after writing card 2 but before its journal said so: card 2 shown again
    // for "card 2" is written again — same configuration, same sequence, same content.
    const secondAgain = await write(cards[1]!, stationDir, { cardSet: journal });
    expect(secondAgain.cardSet).toMatchObject({ index: 2, remaining: [3] });
    expect(secondAgain.sequence).toBe(second.sequence);
    expect(secondAgain.shards.map((s) => s.sha256)).toEqual(second.shards.map((s) => s.sha256));
    const resumed = await readCardSetJournal(stationDir, first.configurationId.slice(0, 8));
    expect(resumed.written.map((w) => w.index)).toEqual([1, 2]);

    // Another plan cannot take the set's sequence.
    const opened = await openInProcessCard(cards[2]!, { readerName: "Test reader" });
    const other = await writeConfigurationToCard({
      element: opened.element,
      plan: generatedPlan(4999),
      stationDir,
      pin: PIN,
      cardSet: resumed,
    })
      .catch((e: unknown) => e)
      .finally(() => opened.dispose());
    expect(other).toBeInstanceOf(UsageError);
    expect((other as Error).message).toMatch(/not the one card set .* was made from/);

    const third = await write(cards[2]!, stationDir, { cardSet: resumed });
    expect(third.cardSet).toMatchObject({ index: 3, count: 3, remaining: [] });
    expect(await lastSequence(stationDir, "ACME Bank")).toBe(1);

    const written = [first, second, third];
    expect(new Set(written.map((w) => w.configurationId)).size).toBe(1);
    expect(new Set(written.map((w) => w.sequence)).size).toBe(1);
    expect(written.reduce((sum, w) => sum + w.hsms, 0)).toBe(5000);
    expect(written.every((w) => w.notAfter.getTime() === first.notAfter.getTime())).toBe(true);

    // Each card: format 3, card k of 3, every card's range; each serial on exactly one card.
    const manifests = await Promise.all(cards.map((c) => manifestOf(c, stationDir)));
    for (const [i, m] of manifests.entries()) {
      expect(m.version).toBe(MANIFEST_CARD_SET_VERSION);
      expect(m.cardSet?.index).toBe(i + 1);
      expect(m.cardSet?.cards).toEqual(first.cardSet!.ranges);
    }
    const inventory = await openInventory({ stationDir });
    const states = new Map((await inventory.inventory()).map((s) => [s.serial, s]));
    await inventory.close();
    for (const hsm of plan.hsms.filter((_, i) => i % 250 === 0)) {
      const homes = manifests.filter((m) => {
        try {
          findShardFor(m, hsm.serial);
          return true;
        } catch (error) {
          expect(error).toBeInstanceOf(NotForThisHsmError);
          expect((error as Error).message).toMatch(/use card [123] of 3/);
          return false;
        }
      });
      expect(homes).toHaveLength(1);
      // The inventory says the same card (issue 14): the write of the card whose range carries it.
      expect(states.get(hsm.serial)?.written?.cardSerial).toBe(
        written[manifests.indexOf(homes[0]!)]!.card.serial,
      );
    }
    expect(new Set([...states.values()].map((s) => s.written?.cardSerial)).size).toBe(3);
  });

  it("refuses a plan larger than one card unless a card set is allowed, before the PIN", async () => {
    const stationDir = await makeStation(pki);
    const { card } = await personaliseCard(pki);
    let pinAsked = false;
    const error = await write(card, stationDir, {
      pin: async () => {
        pinAsked = true;
        return PIN;
      },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CardFullError);
    expect((error as Error).message).toMatch(/5000 HSMs need 3 cards/);
    expect(pinAsked).toBe(false);
    expect(await lastSequence(stationDir, "ACME Bank")).toBe(0);
  });

  it("dual control on a set: --cosigners keeps room on every card; station cosign co-signs a card of the set, which stays card k of n", async () => {
    const stationDir = await makeStation(pki);
    const cards = await Promise.all([1, 2, 3].map(async () => (await personaliseCard(pki)).card));
    const bob = await personaliseCard(pki, { officer: "Bob Example" });
    const first = await write(cards[0]!, stationDir, { allowCardSet: true, cosigners: 1 });
    expect(first.cardSet).toMatchObject({ index: 1, count: 3 });
    // Resuming with another number of co-signers is refused (the set keeps one layout).
    const other = await write(cards[1]!, stationDir, { cardSet: first.cardSet!.journal }).catch(
      (e: unknown) => e,
    );
    expect((other as Error).message).toMatch(/resume it with --cosigners 1/);
    const second = await write(cards[1]!, stationDir, { cardSet: first.cardSet!.journal, cosigners: 1 });
    expect(second.cardSet).toMatchObject({ index: 2, count: 3 });

    const held = async (card: VirtualPivCard) => {
      const opened = await openInProcessCard(card, { readerName: "Station reader" });
      return { element: opened.element, release: () => opened.dispose() };
    };
    const result = await cosignConfiguration({
      stationDir,
      openCarrier: () => held(cards[1]!),
      openSigner: () => held(bob.card),
      signerPin: PIN,
      carrierPin: PIN,
    });
    expect(result).toMatchObject({ sequence: second.sequence, hsms: second.hsms, signatures: 2 });
    const manifest = await manifestOf(cards[1]!, stationDir);
    expect(manifest.cardSet).toMatchObject({ index: 2, cards: first.cardSet!.ranges });
  });
});
