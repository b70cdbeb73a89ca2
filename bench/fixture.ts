/**
 * The world the benchmarks (and test/card-emulator/latency-profile.test.ts) run in, built with the
 * project's own flows end to end, nothing hand-assembled:
 *
 *   pki init (initPkiDirectory) → station init + CRL (initStation, updateStationCrl)
 *   → card personalize (personalizeCard, on a virtual YubiKey 5)
 *   → station write (writeConfigurationToCard, one card per plan)
 *   → pki issue-device + agent factory-init (issueDeviceToDirectory, factoryInit)
 *   → one agent onboarding (onboarding.ts: runAgentOnce, dry-run network, card behind a MeteredCard).
 *
 * Everything lives under one temporary directory that dispose() removes.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { X509Crl } from "@peculiar/x509";
import { factoryInit } from "../src/agent/factory.js";
import { type CardState, MemoryCardStateStore } from "../src/card-emulator/card-state-store.js";
import { VirtualPivCard } from "../src/card-emulator/virtual-piv-card.js";
import type { NetworkPlan } from "../src/config/plan-model.js";
import type { OnboardingPki } from "../src/pki/issue.js";
import { initPkiDirectory, issueDeviceToDirectory } from "../src/pki/pki-store.js";
import { PivElement } from "../src/secure-element/piv-element.js";
import { updateStationCrl } from "../src/station/crl-update.js";
import { initStation } from "../src/station/init-station.js";
import { personalizeCard } from "../src/station/personalize-card.js";
import { type WriteResult, writeConfigurationToCard } from "../src/station/write-card.js";
import { InProcessTransport } from "../src/transport/in-process.js";
import { BENCH_PIN } from "./onboarding.js";
import { BENCH_OWNER } from "./plans.js";

export { BENCH_PIN };

const BENCH_PUK = "13572468";

export interface BenchFixture {
  readonly dir: string;
  readonly pkiDir: string;
  readonly pki: OnboardingPki;
  readonly crl: X509Crl;
  readonly rootDer: Uint8Array;
  readonly stationDir: string;
  /** The officer card right after `card personalize`: no configuration yet. */
  readonly personalisedCard: CardState;
  dispose(): Promise<void>;
}

async function openElement(card: VirtualPivCard): Promise<PivElement> {
  return PivElement.open(new InProcessTransport(card, { readerName: "bench virtual card" }));
}

/** PKI, station directory and one personalised officer card (P-256 keys, as `card personalize`). */
export async function createFixture(): Promise<BenchFixture> {
  const dir = await mkdtemp(join(tmpdir(), "hsm-onboard-bench-"));
  try {
    const pkiDir = join(dir, "pki");
    const stationDir = join(dir, "station");
    const { pki, crl } = await initPkiDirectory(pkiDir, { owner: BENCH_OWNER });
    await initStation(stationDir, pki.root.certificate);
    await updateStationCrl(stationDir, crl, { issuers: [pki.tokenCa.certificate] });
    const store = new MemoryCardStateStore();
    const element = await openElement(new VirtualPivCard({ store }));
    try {
      await personalizeCard({
        element,
        pki: { tokenCa: pki.tokenCa, root: pki.root },
        crl,
        owner: BENCH_OWNER,
        officer: "Alice Example",
        newPin: BENCH_PIN,
        newPuk: BENCH_PUK,
      });
    } finally {
      await element.close();
    }
    const personalisedCard = store.load();
    if (!personalisedCard) throw new Error("personalisation left no card state");
    return {
      dir,
      pkiDir,
      pki,
      crl,
      rootDer: new Uint8Array(pki.root.certificate.rawData),
      stationDir,
      personalisedCard,
      dispose: () => rm(dir, { recursive: true, force: true }),
    };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

export interface WrittenCard {
  /** The card after `station write`. */
  readonly state: CardState;
  readonly write: WriteResult;
}

/** `station write` of `plan` onto a copy of the personalised card. */
export async function writePlanCard(fixture: BenchFixture, plan: NetworkPlan): Promise<WrittenCard> {
  const store = new MemoryCardStateStore(fixture.personalisedCard);
  const element = await openElement(new VirtualPivCard({ store }));
  let write: WriteResult;
  try {
    write = await writeConfigurationToCard({ element, plan, stationDir: fixture.stationDir, pin: BENCH_PIN });
  } finally {
    await element.close();
  }
  return { state: store.load()!, write };
}

/**
 * `pki issue-device` + `agent factory-init` for `serial`: a state directory to copy for each
 * onboarding (an agent's state changes when it onboards).
 */
export async function prepareAgent(fixture: BenchFixture, serial: string): Promise<string> {
  const deviceDir = join(fixture.dir, `device-${serial}`);
  const stateDir = join(fixture.dir, `agent-template-${serial}`);
  await issueDeviceToDirectory(fixture.pkiDir, deviceDir, serial);
  await factoryInit({
    stateDir,
    serial,
    root: fixture.rootDer,
    device: deviceDir,
    crl: new Uint8Array(fixture.crl.rawData),
    applier: "dry-run",
  });
  return stateDir;
}
