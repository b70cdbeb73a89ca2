/**
 * `hsm-onboard card status` in-process against the virtual card (HSM_ONBOARD_VIRTUAL_CARD). The same
 * command through pcscd + vpcd: test/e2e/piv-interop.test.ts.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { ExitCode, PinBlockedError, WrongPinError } from "../../src/errors.js";
import { PivSession } from "../../src/piv/piv-session.js";
import { PivElement } from "../../src/secure-element/piv-element.js";
import { InProcessTransport } from "../../src/transport/in-process.js";
import { type CliResult, outputLines, runCliInProcess } from "../helpers/cli.js";

const NEW_PIN = "24681357";
const NEW_PUK = "97531864";

let work: string;
let counter = 0;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "hsm-onboard-cli-card-status-"));
  const init = await runCliInProcess(["pki", "init", "--out", "pki", "--owner", "ACME Bank"], { cwd: work });
  expect(init.exitCode, init.stderr).toBe(0);
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

function freshCard(serial: number): string {
  const name = `status-${++counter}.json`;
  VirtualPivCard.fromFile(join(work, name), { serial });
  return name;
}

function status(card: string, args: string[] = []): Promise<CliResult> {
  return runCliInProcess(["card", "status", ...args], { cwd: work, env: { HSM_ONBOARD_VIRTUAL_CARD: card } });
}

async function personalised(serial: number): Promise<string> {
  const card = freshCard(serial);
  const result = await runCliInProcess(
    ["card", "personalize", "--pki", "pki", "--owner", "ACME Bank", "--officer", "Alice", "--pin-stdin"],
    { cwd: work, env: { HSM_ONBOARD_VIRTUAL_CARD: card }, stdin: `${NEW_PIN}\n${NEW_PUK}\n` },
  );
  expect(result.exitCode, result.stderr).toBe(0);
  return card;
}

async function withSession<T>(card: string, fn: (session: PivSession) => Promise<T>): Promise<T> {
  const transport = new InProcessTransport(VirtualPivCard.fromFile(join(work, card)));
  try {
    return await fn(await PivSession.open(transport));
  } finally {
    await transport.close();
  }
}

describe("card status", () => {
  it("shows a factory-fresh card: empty slots, default PIN/PUK/management key, no items", async () => {
    const card = freshCard(11223344);
    const result = await status(card, ["--json"]);
    expect(result.exitCode, result.stderr).toBe(0);
    const s = JSON.parse(result.stdout);
    expect(s).toMatchObject({
      serial: "11223344",
      version: "5.4.3",
      pin: { triesLeft: 3, tries: 3, isDefault: true },
      puk: { triesLeft: 3, tries: 3, isDefault: true },
      managementKey: { type: "3DES", isDefault: true, pinProtected: false, pinDerived: false },
      chuid: true,
      ccc: true,
      items: [],
    });
    expect(s.slots.map((x: { slot: string }) => x.slot)).toEqual(["9A", "9C", "9D", "9E"]);
    for (const slot of s.slots) expect(slot).toMatchObject({ algorithm: null, certificate: null });
    // CHUID (61 bytes) and CCC (51 bytes) as the card stores them.
    const v = VirtualPivCard.fromFile(join(work, card));
    expect(s.storage).toEqual({
      totalBytes: 50_225,
      usedBytes: v.usedObjectBytes,
      freeBytes: 50_225 - v.usedObjectBytes,
      maxItemBytes: 3_063,
    });
  });

  it("shows a personalised card: slots with algorithm, policy and certificate, AES-192 PIN-protected key, items", async () => {
    const card = await personalised(55667788);
    const result = await status(card, ["--json"]);
    expect(result.exitCode, result.stderr).toBe(0);
    const s = JSON.parse(result.stdout);
    const bySlot = Object.fromEntries(s.slots.map((x: { slot: string }) => [x.slot, x]));
    expect(bySlot["9A"]).toMatchObject({ algorithm: null, certificate: null });
    expect(bySlot["9D"]).toMatchObject({ algorithm: null, certificate: null });
    for (const [slot, policy] of [
      ["9C", "always"],
      ["9E", "never"],
    ] as const) {
      expect(bySlot[slot]).toMatchObject({
        algorithm: "ECC P-256",
        pinPolicy: policy,
        origin: "generated",
        certificate: {
          subject: "O=ACME Bank, CN=Alice, serialNumber=55667788",
          issuer: "O=ACME Bank, CN=ACME Bank Token CA",
        },
      });
      expect(Date.parse(bySlot[slot].certificate.notAfter)).toBeGreaterThan(Date.now());
    }
    expect(s).toMatchObject({
      pin: { triesLeft: 3, tries: 3, isDefault: false },
      puk: { triesLeft: 3, tries: 3, isDefault: false },
      managementKey: { type: "AES-192", isDefault: false, pinProtected: true },
    });
    expect(s.items.map((i: { name: string }) => i.name)).toEqual(["certificates", "crl"]);
    for (const item of s.items) expect(item.size).toBeGreaterThan(200);
    expect(s.storage.usedBytes + s.storage.freeBytes).toBe(50_225);
  });

  it("prints a readable summary without --json", async () => {
    const card = await personalised(99887766);
    const result = await status(card);
    expect(result.exitCode, result.stderr).toBe(0);
    const lines = outputLines(result.stdout);
    expect(lines[0]).toMatch(/^Card 99887766 \(firmware 5\.4\.3\) in Virtual card status-\d+\.json$/);
    expect(lines).toContain("  Slot 9A (authentication): empty");
    expect(lines).toContain("  Slot 9C (digital signature): ECC P-256, PIN always, generated");
    expect(lines).toContain("  Slot 9E (card authentication): ECC P-256, PIN never, generated");
    expect(lines).toContain("    Subject:  O=ACME Bank, CN=Alice, serialNumber=99887766");
    expect(lines).toContain("  PIN tries left: 3 of 3; PUK tries left: 3 of 3");
    expect(lines).toContain("  Management key: AES-192, PIN-protected");
    expect(result.stdout).toMatch(/ {2}Items: certificates \(\d+ bytes\), crl \(\d+ bytes\)\n/);
    expect(result.stdout).toMatch(/ {2}Storage: [\d,]+ of 50,225 bytes used, [\d,]+ free\n/);
  });

  it("follows the PIN and PUK counters: wrong PINs, blocked, unblocked with the PUK", async () => {
    const card = await personalised(12121212);
    await withSession(card, async (session) => {
      await expect(session.verifyPin("00000000")).rejects.toBeInstanceOf(WrongPinError);
    });
    expect(JSON.parse((await status(card, ["--json"])).stdout).pin.triesLeft).toBe(2);
    await withSession(card, async (session) => {
      await expect(session.verifyPin("00000000")).rejects.toBeInstanceOf(WrongPinError);
      await expect(session.verifyPin("00000000")).rejects.toBeInstanceOf(WrongPinError);
      await expect(session.verifyPin(NEW_PIN)).rejects.toBeInstanceOf(PinBlockedError);
    });
    const blocked = await status(card);
    expect(blocked.stdout).toContain("  PIN tries left: 0 of 3; PUK tries left: 3 of 3");
    await withSession(card, async (session) => {
      await expect(session.unblockPin("00000000", NEW_PIN)).rejects.toBeInstanceOf(WrongPinError);
      await session.unblockPin(NEW_PUK, NEW_PIN);
    });
    const after = JSON.parse((await status(card, ["--json"])).stdout);
    expect(after.pin.triesLeft).toBe(3);
    expect(after.puk.triesLeft).toBe(3); // a right PUK restores its own counter
  });

  it("lists the hsm-onboard items a station and an agent wrote, with their sizes", async () => {
    const card = await personalised(34343434);
    const transport = new InProcessTransport(VirtualPivCard.fromFile(join(work, card)));
    const element = await PivElement.open(transport);
    try {
      await element.verifyPin(NEW_PIN);
      await element.writeItem("manifest", new Uint8Array(700).fill(1));
      await element.writeItem("shard-0", new Uint8Array(1200).fill(2));
      await element.writeItem("receipt-3", new Uint8Array(90).fill(3));
    } finally {
      await element.close();
    }
    const s = JSON.parse((await status(card, ["--json"])).stdout);
    expect(s.items).toEqual([
      { name: "manifest", size: 700 },
      { name: "certificates", size: expect.any(Number) },
      { name: "crl", size: expect.any(Number) },
      { name: "shard-0", size: 1200 },
      { name: "receipt-3", size: 90 },
    ]);
  });

  it("exits 10 with one line when there is no card, and 2 for a bad --timeout", async () => {
    const none = await status("missing.json");
    expect(none.exitCode).toBe(ExitCode.noCard);
    expect(outputLines(none.stderr)).toEqual([
      expect.stringMatching(/^hsm-onboard: no virtual card state at .*missing\.json/),
    ]);
    const bad = await status("missing.json", ["--timeout", "-1"]);
    expect(bad.exitCode).toBe(ExitCode.usage);
    expect(outputLines(bad.stderr)).toHaveLength(1);
  });
});
