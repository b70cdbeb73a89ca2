/**
 * `station write` of a plan larger than one card, in process with virtual card files (issue 13):
 * a virtual card file is one card that cannot be swapped, so the session stops after each card —
 * the card shown again for the next card is refused before its PIN (exit 2) and the CLI prints
 * the --resume command — which exercises the interruption and resume path of a card set.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VIRTUAL_CARD_ENV } from "../../src/cli/card-opener.js";
import { type LoadedPki, loadPkiDirectory } from "../../src/pki/index.js";
import { runCliInProcess } from "../helpers/cli.js";
import { PIN, personaliseCardFile, removeTempDirs, stationInitArgs, tempDir } from "../station/fixtures.js";

let root: string;
let pki: LoadedPki;

beforeAll(async () => {
  root = await tempDir("cli-card-set");
  const made = await runCliInProcess(["pki", "init", "--out", "pki", "--owner", "ACME Bank"], { cwd: root });
  expect(made.exitCode).toBe(0);
  pki = await loadPkiDirectory(join(root, "pki"));
  const init = await runCliInProcess(stationInitArgs("station"), { cwd: root });
  expect(init.exitCode, init.stderr).toBe(0);
  const lines = ["serial,hostname,interface,ipv4_cidr,gateway"];
  for (let i = 0; i < 5000; i++) {
    const host = 10 + i;
    lines.push(`${1_000_001 + i * 7},hsm-a${i + 1},eth0,10.20.${host >> 8}.${host & 255}/16,10.20.0.1`);
  }
  await writeFile(join(root, "hall.csv"), `${lines.join("\n")}\n`);
  await writeFile(join(root, "hall-other.csv"), `${lines.slice(0, -1).join("\n")}\n`);
});
afterAll(removeTempDirs);

async function card(name: string): Promise<string> {
  const path = join(root, `${name}.json`);
  await personaliseCardFile(pki, path, {});
  return path;
}

const write = (cardFile: string, extra: string[] = [], plan = "hall.csv") =>
  runCliInProcess(
    [
      "station",
      "write",
      "--allow-plaintext",
      "--plan",
      plan,
      "--owner",
      "ACME Bank",
      "--station-dir",
      "station",
      "--pin-stdin",
      "--json",
      ...extra,
    ],
    { cwd: root, stdin: `${PIN}\n${PIN}\n`, env: { [VIRTUAL_CARD_ENV]: cardFile } },
  );

describe("station write, a card set interrupted and resumed", () => {
  it("writes card 1, stops with the --resume command, refuses another plan, finishes cards 2 and 3", async () => {
    const first = await write(await card("one"));
    // Card 1 written; the same card offered for card 2 is refused before its PIN (exit 2).
    expect(first.exitCode, first.stderr).toBe(2);
    expect(first.stderr).toMatch(/Card 1 of 3 written and verified/);
    expect(first.stderr).toMatch(
      /this card already holds card 1 of 3 of this set: insert a card for card 2 of 3/,
    );
    const resume =
      /finish it with: hsm-onboard station write --plan hall\.csv --owner "ACME Bank" --resume ([0-9a-f]{8})/.exec(
        first.stderr,
      );
    expect(resume, first.stderr).not.toBeNull();
    const id = resume![1]!;
    // Under --json the failure is an object on standard output.
    expect(JSON.parse(first.stdout)).toMatchObject({ error: { code: "ERR_USAGE", exit: 2 } });

    // Another plan cannot take the set's sequence.
    const other = await write(await card("other"), ["--resume", id], "hall-other.csv");
    expect(other.exitCode).toBe(2);
    expect(other.stderr).toMatch(/the plan is not the one card set [0-9a-f]+ was made from/);

    const second = await write(await card("two"), ["--resume", id]);
    expect(second.exitCode).toBe(2);
    expect(second.stderr).toMatch(/1 of 3 cards written; next: card 2, 3/);
    expect(second.stderr).toMatch(/card 2 of 3 of set [0-9a-f]{8}: sequence 1 \(allocated with card 1\)/);
    expect(second.stderr).toMatch(/Card 2 of 3 written and verified/);

    const third = await write(await card("three"), ["--resume", id]);
    expect(third.exitCode, third.stderr).toBe(0);
    const json = JSON.parse(third.stdout) as {
      configurationId: string;
      sequence: number;
      hsms: number;
      cards: number;
      written: { cardIndex: number; sequence: number; hsms: number }[];
      remaining: number[];
    };
    expect(json.configurationId.startsWith(id)).toBe(true);
    expect(json).toMatchObject({ sequence: 1, hsms: 5000, cards: 3, remaining: [] });
    expect(json.written.map((w) => [w.cardIndex, w.sequence])).toEqual([[3, 1]]);

    // Nothing left: a further --resume says so.
    const done = await write(await card("four"), ["--resume", id]);
    expect(done.exitCode).toBe(2);
    expect(done.stderr).toMatch(/is written and verified|nothing left to write/);
  }, 120_000);
});
