/**
 * Plans larger than one card, end to end (issue 13): a 5,000-HSM plan on a set of three cards. The
 * compiled CLI as child processes over a private pcscd with one vpcd reader, officers' cards as
 * `card emulate` processes: `plan check` says 3 cards; `station write` writes card 1, 2 and 3 in
 * one session, the officer swapping cards in the reader when told; `agent run` (dry-run applier)
 * onboards one HSM of each card from its card and refuses another card with 16, naming the card
 * that holds its serial — also for an HSM already configured from its own card (before the PIN).
 * `station receipts` then reads each card: the success receipts of exactly its own HSMs. The bulk (a sample
 * of HSMs of every card against all three cards) runs the agent in process on the same card files.
 * The write dominates: ~1,040 APDUs through pcscd and vpcd (docs/PERFORMANCE.md, card sets).
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { runAgentOnce } from "../../src/agent/agent.js";
import { factoryInit } from "../../src/agent/factory.js";
import { VIRTUAL_CARD_ENV } from "../../src/cli/card-opener.js";
import type { CardRange } from "../../src/config/manifest.js";
import { compareSerials } from "../../src/config/shard.js";
import { issueDeviceToDirectory } from "../../src/pki/index.js";
import { type PrivatePcscd, startPrivatePcscd } from "../../src/sim/pcscd.js";
import { pkiCardsAndStation, withCardFile } from "../helpers/card-file.js";
import { runCliInProcess } from "../helpers/cli.js";
import {
  buildForChildren,
  CliRun,
  cliLauncher,
  EmulatedCards,
  type PrivateBuild,
  pcscE2eCapability,
  requireOrSkip,
} from "../helpers/pcsc-env.js";

const cap = requireOrSkip(pcscE2eCapability());
const OWNER = "ACME Bank";
const PIN = "111111";
const HSMS = 5000;
const serialOf = (i: number) => String(1_000_001 + i * 7);

describe.skipIf(!cap.ok)(`card set over pcscd + vpcd${cap.ok ? "" : ` — skipped: ${cap.reason}`}`, () => {
  let build: PrivateBuild;
  let cli: string;
  let work: string;
  let pcscd: PrivatePcscd;
  let stationDir: string;
  let planFile: string;
  let rootPem: string;
  let pkiDir: string;
  const cards: string[] = [];
  let emulated: EmulatedCards;

  beforeAll(async () => {
    build = await buildForChildren(["cli/main.js"]);
    cli = await cliLauncher(build);
    work = await mkdtemp(join(tmpdir(), "hsm-onboard-card-set-"));
    cards.push(...[1, 2, 3].map((k) => join(work, `card-${k}.json`)));
    ({ pkiDir, rootPem, stationDir } = await pkiCardsAndStation(
      work,
      OWNER,
      cards.map((file) => ({ file, officer: "Alice", pin: PIN })),
    ));
    // 5,000 HSMs, 7-digit serials, one IPv4 address each in 10.20.0.0/16.
    const lines = ["serial,hostname,interface,ipv4_cidr,gateway,dns"];
    for (let i = 0; i < HSMS; i++) {
      const host = 10 + i;
      lines.push(
        `${serialOf(i)},hsm-a${String(i + 1).padStart(4, "0")},eth0,10.20.${host >> 8}.${host & 255}/16,10.20.0.1,10.20.0.53`,
      );
    }
    planFile = join(work, "hall-5000.csv");
    await writeFile(planFile, `${lines.join("\n")}\n`);
    pcscd = await startPrivatePcscd();
    emulated = new EmulatedCards(cli, pcscd);
  }, 180_000);

  afterEach(async () => {
    await remove();
  });

  afterAll(async () => {
    await remove();
    await pcscd?.stop();
    await build?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const reader = () => pcscd.slots[0]!.readerName;

  const insert = (k: number) => emulated.insert(cards[k - 1]!, 0);
  const remove = () => emulated?.removeAll();

  const cliRun = (args: string[], input = "") => new CliRun(cli, args, pcscd.env, input);

  async function hsm(serial: string): Promise<string> {
    const stateDir = join(work, "hsms", serial);
    const deviceDir = join(work, "devices", serial);
    await mkdir(join(work, "devices"), { recursive: true });
    await issueDeviceToDirectory(pkiDir, deviceDir, serial);
    await factoryInit({
      stateDir,
      serial,
      root: new Uint8Array(await readFile(rootPem)),
      device: deviceDir,
      applier: "dry-run",
    });
    return stateDir;
  }

  /** `agent run --once` over pcscd with card `k` in the reader (inserted by the caller). */
  async function agentRun(stateDir: string): Promise<{ code: number | null; run: CliRun }> {
    const run = cliRun(
      [
        "agent",
        "run",
        "--allow-plaintext",
        "--state-dir",
        stateDir,
        "--reader",
        reader(),
        "--once",
        "--json",
        "--pin-stdin",
        "--timeout",
        "60",
      ],
      `${PIN}\n`,
    );
    return { code: await run.code(), run };
  }

  const hint = (serial: string, own: number, range: CardRange) =>
    new RegExp(
      `serial ${serial} is not on this card, card \\d of 3 of configuration [0-9a-f]{8} \\(serials \\d+\\.\\.\\d+\\): ` +
        `use card ${own} of 3 \\(serials ${range.firstSerial}\\.\\.${range.lastSerial}\\)`,
    );

  test("a 5,000-HSM plan on 3 cards: written in one session swapping cards; each HSM onboards from its card, every other card is 16 naming it", async () => {
    // plan check: 3 cards.
    const check = await runCliInProcess(["plan", "check", planFile, "--owner", OWNER, "--json"], {
      cwd: work,
    });
    expect(check.exitCode).toBe(0);
    const checked = JSON.parse(check.stdout) as { cards: number; hsmsPerCard: number[] };
    expect(checked.cards).toBe(3);

    // station write: card 1, swap, card 2, swap, card 3 — one PIN per card.
    await insert(1);
    const started = performance.now();
    const write = cliRun(
      [
        "station",
        "write",
        "--allow-plaintext",
        "--plan",
        planFile,
        "--owner",
        OWNER,
        "--station-dir",
        stationDir,
        "--reader",
        reader(),
        "--timeout",
        "60",
        "--pin-stdin",
        "--json",
      ],
      `${PIN}\n${PIN}\n${PIN}\n`,
    );
    for (const k of [1, 2]) {
      await write.waitForStderr(new RegExp(`Remove card ${k} of 3`));
      await remove();
      await write.waitForStderr(new RegExp(`Insert or tap an officer's card for card ${k + 1} of 3`));
      await insert(k + 1);
    }
    expect(await write.code(), write.stderr).toBe(0);
    const writeMs = performance.now() - started;
    await remove();
    const set = JSON.parse(write.stdout) as {
      configurationId: string;
      sequence: number;
      hsms: number;
      cards: number;
      ranges: CardRange[];
      written: { cardIndex: number; sequence: number; configurationId: string; hsms: number }[];
      remaining: number[];
    };
    expect(set).toMatchObject({ hsms: HSMS, cards: 3, remaining: [] });
    expect(set.written.map((w) => w.cardIndex)).toEqual([1, 2, 3]);
    expect(
      set.written.every((w) => w.sequence === set.sequence && w.configurationId === set.configurationId),
    ).toBe(true);
    expect(set.written.map((w) => w.hsms)).toEqual(checked.hsmsPerCard);
    console.log(
      `station write, 5,000 HSMs on 3 cards over pcscd/vpcd (swaps included): ${Math.round(writeMs)} ms`,
    );

    const cardOf = (serial: string) =>
      set.ranges.findIndex(
        (r) => compareSerials(r.firstSerial, serial) <= 0 && compareSerials(serial, r.lastSerial) <= 0,
      ) + 1;

    // Over the real stack: the first HSM of each card's range onboards from its card; HSM 2 (not
    // configured yet) shown card 1, and HSM 1 (configured from card 1) shown card 2, are told which
    // card is theirs — from the signed ranges of the card in the reader.
    const agentsStarted = performance.now();
    const firsts = set.ranges.map((r) => r.firstSerial);
    const states = await Promise.all(firsts.map((s) => hsm(s)));
    const expectOnboarded = async (k: number) => {
      const own = await agentRun(states[k - 1]!);
      expect(own.code, own.run.stderr).toBe(0);
      expect(JSON.parse(own.run.stdout)).toMatchObject({
        ok: true,
        serial: firsts[k - 1],
        sequence: set.sequence,
      });
    };
    const expectSentTo = async (k: number) => {
      const wrong = await agentRun(states[k - 1]!);
      expect(wrong.code, wrong.run.stderr).toBe(16);
      expect(wrong.run.stdout + wrong.run.stderr).toMatch(hint(firsts[k - 1]!, k, set.ranges[k - 1]!));
    };
    await insert(1);
    await expectOnboarded(1);
    await expectSentTo(2);
    await remove();
    await insert(2);
    await expectOnboarded(2);
    await expectSentTo(1);
    await remove();
    await insert(3);
    await expectOnboarded(3);
    await remove();

    console.log(`agent run over pcscd/vpcd, 5 runs: ${Math.round(performance.now() - agentsStarted)} ms`);
    const sampleStarted = performance.now();
    // In process on the same card files: a sample of HSMs of every card against all three cards.
    const sample = Array.from({ length: 12 }, (_, i) => serialOf(17 + i * 413));
    const sampleStates = new Map<string, string>();
    for (const serial of sample) sampleStates.set(serial, await hsm(serial));
    const onboard = (serial: string, k: number) =>
      withCardFile(cards[k - 1]!, (element) =>
        runAgentOnce({
          stateDir: sampleStates.get(serial)!,
          element,
          pinSource: { read: async () => PIN },
          keepElementOpen: true,
        }),
      );
    const homes = new Set<number>();
    // Serials with a success receipt on each card (the real-stack HSMs first).
    const onboardedFrom = new Map<number, string[]>([
      [1, [firsts[0]!]],
      [2, [firsts[1]!]],
      [3, [firsts[2]!]],
    ]);
    for (const serial of sample) {
      const home = cardOf(serial);
      homes.add(home);
      for (const k of [1, 2, 3].filter((c) => c !== home)) {
        const result = await onboard(serial, k);
        expect(result.exitCode, result.error?.message).toBe(16);
        expect(result.error?.message).toMatch(hint(serial, home, set.ranges[home - 1]!));
      }
      const result = await onboard(serial, home);
      expect(result.ok, result.error?.message).toBe(true);
      expect(result.sequence).toBe(set.sequence);
      if (result.receipt?.written) onboardedFrom.get(home)!.push(serial);
    }
    expect([...homes].sort()).toEqual([1, 2, 3]);
    console.log(`in-process sample, 36 agent runs: ${Math.round(performance.now() - sampleStarted)} ms`);

    // Receipts per card: station receipts reads each card of the set like any card; the HSMs that
    // onboarded from it, and only those, have a success receipt there (a refused HSM leaves a
    // failure receipt, 16, on the card it was shown).
    for (const k of [1, 2, 3]) {
      const receipts = await runCliInProcess(
        ["station", "receipts", "--allow-plaintext", "--station-dir", stationDir, "--json"],
        { cwd: work, env: { [VIRTUAL_CARD_ENV]: cards[k - 1]! } },
      );
      expect(receipts.exitCode, receipts.stderr).toBe(0);
      const report = JSON.parse(receipts.stdout) as {
        configuration: { sequence: number };
        receipts: {
          serial: string;
          verified: boolean;
          authentic: boolean;
          outcome: number;
          reason?: string;
        }[];
      };
      expect(report.configuration.sequence).toBe(set.sequence);
      expect(report.receipts.every((r) => r.authentic)).toBe(true);
      const successes = report.receipts.filter((r) => r.outcome === 0);
      expect(successes.every((r) => r.verified)).toBe(true);
      expect(successes.map((r) => r.serial).sort()).toEqual([...onboardedFrom.get(k)!].sort());
      // A failure receipt of an HSM shown this card is authentic but not of this card's part: the
      // station's reason names the HSM's own card (the same hint, from this card's manifest).
      for (const r of report.receipts.filter((x) => x.outcome === 16)) {
        expect(cardOf(r.serial)).not.toBe(k);
        expect(r.reason).toMatch(new RegExp(`use card ${cardOf(r.serial)} of 3`));
      }
    }
  }, 300_000);
});
