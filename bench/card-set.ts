/**
 * A plan larger than one card (issue 13): `station write` of a 5,000-HSM plan on a card set, card
 * after card as the station does it (writeConfigurationToCard: card 1 allocates the set, each next
 * card continues its journal), each a virtual YubiKey 5 behind the APDU meter. Per card: HSMs,
 * shards, APDUs, host wall time (the station's work and the in-process emulator) and the modeled
 * card time of the exchanges; the sum is the write time without the officer's card swaps.
 */
import { MemoryCardStateStore } from "../src/card-emulator/card-state-store.js";
import { ApduMeter, YUBIKEY5_LATENCY } from "../src/card-emulator/latency-profile.js";
import { MeteredCard } from "../src/card-emulator/metered-card.js";
import { VirtualPivCard } from "../src/card-emulator/virtual-piv-card.js";
import { PivElement } from "../src/secure-element/piv-element.js";
import type { CardSetJournal } from "../src/station/card-set-journal.js";
import { type WriteResult, writeConfigurationToCard } from "../src/station/write-card.js";
import { InProcessTransport } from "../src/transport/in-process.js";
import type { BenchFixture } from "./fixture.js";
import { BENCH_PIN } from "./onboarding.js";
import { benchPlan } from "./plans.js";
import { fixed, int, print, section, table } from "./report.js";

export interface CardSetBench {
  readonly hsms: number;
  readonly cards: number;
  readonly hostMs: number;
  readonly modeledCardMs: number;
}

export async function benchCardSet(fixture: BenchFixture, hsms = 5000): Promise<CardSetBench> {
  section(`5b. Station write of a ${int(hsms)}-HSM plan on a card set, yubikey5 model (issue 13)`);
  const plan = benchPlan(hsms);
  const rows: (string | number)[][] = [];
  let journal: CardSetJournal | undefined;
  let hostMs = 0;
  let modeledCardMs = 0;
  let apdus = 0;
  let count = 1;
  for (let pass = 0; pass < 32; pass++) {
    const meter = new ApduMeter(YUBIKEY5_LATENCY);
    const card = new VirtualPivCard({
      store: new MemoryCardStateStore(fixture.personalisedCard),
      profile: YUBIKEY5_LATENCY.card,
    });
    const element = await PivElement.open(
      new InProcessTransport(new MeteredCard(card, meter), { readerName: "bench virtual card" }),
    );
    const started = performance.now();
    let result: WriteResult;
    try {
      result = await writeConfigurationToCard({
        element,
        plan,
        stationDir: fixture.stationDir,
        pin: BENCH_PIN,
        allowCardSet: true,
        ...(journal ? { cardSet: journal } : {}),
      });
    } finally {
      await element.close();
    }
    const wall = performance.now() - started;
    const t = meter.totals;
    hostMs += wall;
    modeledCardMs += t.modeledMs;
    apdus += t.apdus;
    count = result.cardSet?.count ?? 1;
    rows.push([
      `${result.cardSet?.index ?? 1} of ${count}`,
      int(result.hsms),
      result.shards.length,
      t.apdus,
      fixed(wall),
      fixed(t.modeledMs),
      fixed(wall + t.modeledMs),
    ]);
    journal = result.cardSet?.journal;
    if (!result.cardSet || result.cardSet.remaining.length === 0) break;
  }
  rows.push([
    "all",
    int(hsms),
    "",
    apdus,
    fixed(hostMs),
    fixed(modeledCardMs),
    fixed(hostMs + modeledCardMs),
  ]);
  table(["card", "HSMs", "shards", "APDUs", "host wall ms", "modeled card ms", "total ms"], rows);
  print(
    `  ${int(hsms)} HSMs on ${count} cards, one configuration id and sequence: ` +
      `${fixed((hostMs + modeledCardMs) / 1000, 2)} s (host ${fixed(hostMs / 1000, 2)} s incl. the in-process card, ` +
      `card ${fixed(modeledCardMs / 1000, 2)} s modeled), without the officer's card swaps`,
  );
  print(
    "  per card: authenticate (live challenge), PIN, sign, write manifest + shards + CRL + certificates, read all back",
  );
  return { hsms, cards: count, hostMs, modeledCardMs };
}
