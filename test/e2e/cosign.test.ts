/**
 * Dual control end to end (issue 13): the compiled CLI as child processes over a private pcscd with
 * two vpcd readers, officers' cards as `card emulate` processes. One officer writes (`station write
 * --cosigners 2`), others co-sign (`station cosign`) — swapping cards in one reader when told, or
 * with a second reader — and HSMs set up with `agent factory-init --quorum 2|3` (dry-run applier)
 * take the card or refuse it with 19. Then receipts mid-room: `station receipts --collect` verifies,
 * archives and clears a card full of receipts (a tampered receipt object stays), and the second
 * rack's receipts fit.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { runAgentOnce } from "../../src/agent/agent.js";
import { factoryInit } from "../../src/agent/factory.js";
import { prepareManifestCosignature } from "../../src/config/manifest.js";
import { planToYaml } from "../../src/config/plan.js";
import { issueDeviceToDirectory } from "../../src/pki/index.js";
import { parseItemName } from "../../src/secure-element/secure-element.js";
import { rackPlan } from "../../src/sim/demo.js";
import { type PrivatePcscd, startPrivatePcscd } from "../../src/sim/pcscd.js";
import { openInventory } from "../../src/station/inventory/open.js";
import { pkiCardsAndStation, withCardFile } from "../helpers/card-file.js";
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
const OFFICERS = { alice: "111111", bob: "222222", carol: "333333" } as const;
type Officer = keyof typeof OFFICERS;

describe.skipIf(!cap.ok)(
  `station cosign over pcscd + vpcd${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let build: PrivateBuild;
    let cli: string;
    let work: string;
    let pcscd: PrivatePcscd;
    let stationDir: string;
    let planFile: string;
    let rootPem: string;
    let pkiDir: string;
    const cards = {} as Record<Officer, string>;
    let emulated: EmulatedCards;
    const serials: string[] = [];

    beforeAll(async () => {
      build = await buildForChildren(["cli/main.js", "station/cosign-card.js"]);
      cli = await cliLauncher(build);
      work = await mkdtemp(join(tmpdir(), "hsm-onboard-cosign-"));
      for (const officer of Object.keys(OFFICERS) as Officer[])
        cards[officer] = join(work, `${officer}.json`);
      ({ pkiDir, rootPem, stationDir } = await pkiCardsAndStation(
        work,
        OWNER,
        (Object.entries(OFFICERS) as [Officer, string][]).map(([officer, pin]) => ({
          file: cards[officer],
          officer: officer[0]!.toUpperCase() + officer.slice(1),
          pin,
        })),
      ));
      const plan = rackPlan({ hsms: 4, vlan: false, ipv6: false });
      serials.push(...plan.hsms.map((h) => h.serial));
      planFile = join(work, "plan.yaml");
      await writeFile(planFile, planToYaml(plan));
      pcscd = await startPrivatePcscd();
      emulated = new EmulatedCards(cli, pcscd);
    }, 180_000);

    afterEach(async () => {
      await emulated?.removeAll();
    });

    afterAll(async () => {
      await emulated?.removeAll();
      await pcscd?.stop();
      await build?.cleanup();
      if (work) await rm(work, { recursive: true, force: true });
    });

    const reader = (slot: number) => pcscd.slots[slot]!.readerName;

    const insert = (officer: Officer, slot = 0) => emulated.insert(cards[officer], slot);
    const remove = (slot = 0) => emulated.remove(slot);

    function cliRun(args: string[], input = ""): CliRun {
      return new CliRun(cli, args, pcscd.env, input);
    }

    async function hsm(serial: string, quorum: number): Promise<string> {
      const stateDir = join(work, "hsms", `${serial}-q${quorum}`);
      const deviceDir = join(work, "devices", serial);
      await mkdir(join(work, "devices"), { recursive: true });
      await issueDeviceToDirectory(pkiDir, deviceDir, serial);
      const run = cliRun([
        "agent",
        "factory-init",
        "--state-dir",
        stateDir,
        "--serial",
        serial,
        "--trust",
        rootPem,
        "--device",
        deviceDir,
        "--quorum",
        String(quorum),
        "--net",
        "dry-run",
        "--json",
      ]);
      expect(await run.code(), run.stderr).toBe(0);
      expect(run.json<{ quorum: number }>().quorum).toBe(quorum);
      return stateDir;
    }

    /** `agent run --once` with the card in reader 0; its exit code. */
    async function agentRun(stateDir: string, pin: string): Promise<{ code: number | null; run: CliRun }> {
      const run = cliRun(
        [
          "agent",
          "run",
          "--allow-plaintext",
          "--state-dir",
          stateDir,
          "--reader",
          reader(0),
          "--once",
          "--json",
          "--pin-stdin",
          "--timeout",
          "60",
        ],
        `${pin}\n`,
      );
      return { code: await run.code(), run };
    }

    async function write(
      officer: Officer,
      cosigners: number,
      plan = planFile,
    ): Promise<{ manifestBytes: number; sequence: number }> {
      await insert(officer, 0);
      const run = cliRun(
        [
          "station",
          "write",
          "--allow-plaintext",
          "--plan",
          plan,
          "--station-dir",
          stationDir,
          "--reader",
          reader(0),
          "--timeout",
          "60",
          "--cosigners",
          String(cosigners),
          "--pin-stdin",
          "--json",
        ],
        `${OFFICERS[officer]}\n`,
      );
      expect(await run.code(), run.stderr).toBe(0);
      await remove(0);
      return run.json();
    }

    /**
     * `station cosign` with one reader: the carrier is in, the co-signer's card comes when asked, then
     * the carrier again. Returns the run once it exited.
     */
    async function cosignOneReader(carrier: Officer, signer: Officer, expectSwap = true): Promise<CliRun> {
      await insert(carrier, 0);
      const run = cliRun(
        [
          "station",
          "cosign",
          "--allow-plaintext",
          "--reader",
          reader(0),
          "--station-dir",
          stationDir,
          "--timeout",
          "60",
          "--pin-stdin",
          "--json",
        ],
        `${OFFICERS[signer]}\n${OFFICERS[carrier]}\n`,
      );
      if (expectSwap) {
        await run.waitForStderr(/Remove the carrier card/);
        await remove(0);
        await run.waitForStderr(/Insert or tap the co-signing officer's card/);
        await insert(signer, 0);
        await run.waitForStderr(/Remove the co-signer's card|hsm-onboard:/);
        if (/Remove the co-signer's card/.test(run.stderr)) {
          await remove(0);
          await run.waitForStderr(/Insert or tap the carrier card again/);
          await insert(carrier, 0);
        }
      }
      await run.code();
      await remove(0);
      return run;
    }

    test("quorum 2 and 3 from the CLI: missing co-signature 19; co-signed in one reader and with two; same card refused", async () => {
      const q2 = await hsm(serials[0]!, 2);
      const q3 = await hsm(serials[1]!, 3);

      const written = await write("alice", 2);
      expect(written.manifestBytes).toBeLessThan(3063);

      // One signature: both HSMs refuse with 19, nothing applied.
      await insert("alice", 0);
      const missing = await agentRun(q2, OFFICERS.alice);
      expect(missing.code, missing.run.stderr).toBe(19);
      expect(missing.run.stderr).toMatch(/1 valid signature\(s\) on the configuration; this HSM requires 2/);
      await remove(0);

      // Bob co-signs, swapping cards in one reader.
      const bob = await cosignOneReader("alice", "bob");
      expect(await bob.code(), bob.stderr).toBe(0);
      const bobResult = bob.json<{
        signatures: number;
        bytesAfter: number;
        hsms: number;
        sequence: number;
        owner: string;
      }>();
      expect(bobResult).toMatchObject({ signatures: 2, hsms: 4, sequence: written.sequence, owner: OWNER });
      expect(bobResult.bytesAfter).toBeLessThanOrEqual(3063);
      expect(bob.stderr).toMatch(/To be co-signed:/);
      expect(bob.stderr).toMatch(/HSMs\s+4/);
      expect(bob.stderr).toMatch(/digest\s+sha256 [0-9a-f]{64}/);
      expect(bob.stderr).toMatch(/signed by\s+O=ACME Bank, CN=Alice, serialNumber=\d+\n/);

      await insert("alice", 0);
      const q2ok = await agentRun(q2, OFFICERS.alice);
      expect(q2ok.code, q2ok.run.stderr).toBe(0);
      const q3short = await agentRun(q3, OFFICERS.alice);
      expect(q3short.code, q3short.run.stderr).toBe(19);
      expect(q3short.run.stderr).toMatch(/2 valid signature\(s\) on the configuration; this HSM requires 3/);
      await remove(0);

      // The same card twice, and the same officer again: refused at the station (19), nothing signed.
      for (const again of ["alice", "bob"] as const) {
        const twice = await cosignOneReader("alice", again);
        expect(await twice.code()).toBe(19);
        expect(twice.stderr).toMatch(/already signed this configuration/);
        expect(twice.stderr).not.toMatch(/To be co-signed:/);
      }

      // Carol co-signs with a second reader: no swap.
      await insert("alice", 0);
      await insert("carol", 1);
      const carol = cliRun(
        [
          "station",
          "cosign",
          "--allow-plaintext",
          "--reader",
          reader(0),
          "--signer-reader",
          reader(1),
          "--station-dir",
          stationDir,
          "--timeout",
          "60",
          "--pin-stdin",
          "--json",
        ],
        `${OFFICERS.carol}\n${OFFICERS.alice}\n`,
      );
      expect(await carol.code(), carol.stderr).toBe(0);
      expect(carol.stderr).not.toMatch(/Remove the/);
      const carolResult = carol.json<{ signatures: number; bytesAfter: number }>();
      expect(carolResult.signatures).toBe(3);
      expect(carolResult.bytesAfter).toBeLessThanOrEqual(3063);
      await remove(1);

      // Both co-signatures are in the station's inventory (issue 14), with the co-signing officer.
      const inventory = await openInventory({ stationDir });
      try {
        const cosigns = (await inventory.history({ owner: OWNER })).filter((h) => h.kind === "cosign");
        expect(cosigns).toHaveLength(2);
        expect(cosigns.map((h) => h.text).join("\n")).toMatch(/Bob/);
        expect(cosigns.map((h) => h.text).join("\n")).toMatch(/Carol/);
      } finally {
        await inventory.close();
      }

      const q3ok = await agentRun(q3, OFFICERS.alice);
      expect(q3ok.code, q3ok.run.stderr).toBe(0);
      await remove(0);
    }, 600_000);

    test("a co-signature from the same card twice (forged past the station) → 19 at the HSM", async () => {
      const q2 = await hsm(serials[2]!, 2);
      await write("alice", 1);
      // What the station refuses, done by hand: Alice's card signs its own manifest a second time.
      await withCardFile(cards.alice, async (element) => {
        await element.verifyPin(OFFICERS.alice);
        const manifest = (await element.readItem("manifest"))!;
        const twice = await prepareManifestCosignature(manifest, await element.signer()).sign();
        await element.writeItem("manifest", twice);
      });
      await insert("alice", 0);
      const agent = await agentRun(q2, OFFICERS.alice);
      expect(agent.code, agent.run.stderr).toBe(19);
      expect(agent.run.stderr).toMatch(/1 valid signature\(s\) on the configuration; this HSM requires 2/);
    }, 120_000);

    test("a manifest that would outgrow its 3,063-byte object is refused before any PIN or signature (22)", async () => {
      await write("alice", 0); // padded to the whole object: no room for a co-signature
      const full = await cosignOneReader("alice", "bob");
      expect(await full.code()).toBe(22);
      expect(full.stderr).toMatch(/co-signed manifest would be \d+ bytes; its object holds 3063/);
      expect(full.stderr).toMatch(/nothing was signed/);
      // Bob's PIN was not tried: his full count is left.
      const status = await withCardFile(cards.bob, (element) => element.pinTriesLeft());
      expect(status).toBe(3);
    }, 120_000);

    test("receipts mid-room: --collect verifies, archives (durable, read back) and clears; a tampered object stays; the second rack's receipts fit", async () => {
      const plan = rackPlan({ hsms: 60, vlan: false, ipv6: false });
      const roomPlan = join(work, "room-60.yaml");
      await writeFile(roomPlan, planToYaml(plan));
      const room = plan.hsms.map((h) => h.serial);
      const stateOf = (serial: string) => join(work, "room", serial, "state");
      for (const serial of room) {
        const deviceDir = join(work, "room", serial, "device");
        await issueDeviceToDirectory(pkiDir, deviceDir, serial);
        await factoryInit({
          stateDir: stateOf(serial),
          serial,
          root: new Uint8Array(await readFile(rootPem)),
          device: deviceDir,
          applier: "dry-run",
        });
      }
      await write("alice", 0, roomPlan);

      // Rack 1: HSMs onboard (in-process, the card file) until the card has no room for a receipt.
      const receiptItems = () =>
        withCardFile(cards.alice, async (e) =>
          (await e.listItems()).filter((i) => parseItemName(i.name)?.kind === "receipt").map((i) => i.name),
        );
      const onboardInProcess = (serial: string) =>
        withCardFile(cards.alice, (element) =>
          runAgentOnce({
            stateDir: stateOf(serial),
            element,
            pinSource: { read: async () => OFFICERS.alice },
            keepElementOpen: true,
          }),
        );
      let next = 0;
      let full = false;
      for (; next < room.length && !full; next++) {
        const result = await onboardInProcess(room[next]!);
        expect(result.ok, result.error?.message).toBe(true);
        full = result.receipt?.written === false;
      }
      expect(full, "the card never filled up with receipts").toBe(true);
      const rack1 = next - 1; // receipts on the card
      const before = await receiptItems();
      expect(before.length).toBeGreaterThan(1);
      // One receipt object tampered with (its last byte: a signature): it must stay on the card.
      const tampered = before[1]!;
      await withCardFile(cards.alice, async (e) => {
        await e.verifyPin(OFFICERS.alice);
        const bytes = (await e.readItem(tampered))!;
        bytes[bytes.length - 1]! ^= 0x01;
        await e.writeItem(tampered, bytes);
      });

      await insert("alice", 0);
      const collect = cliRun(
        [
          "station",
          "receipts",
          "--allow-plaintext",
          "--collect",
          "--reader",
          reader(0),
          "--station-dir",
          stationDir,
          "--timeout",
          "60",
          "--pin-stdin",
          "--json",
        ],
        `${OFFICERS.alice}\n`,
      );
      expect(await collect.code(), collect.stderr).toBe(15); // the tampered object: kept, said so
      await remove(0);
      const report = collect.json<{
        receipts: { verified: boolean; location: string; outcomeName?: string; dryRun?: boolean }[];
        collected: {
          archive: string;
          receiptsArchived: number;
          cleared: string[];
          kept: { item: string }[];
          freeBytes: number;
        };
      }>();
      expect(report.collected.kept.map((k) => k.item)).toEqual([tampered]);
      expect(report.collected.cleared).toEqual(before.filter((n) => n !== tampered));
      // Archived: exactly the receipts of the cleared objects, each verified; the tampered object's
      // receipt is not verified and its whole object stayed.
      const inCleared = report.receipts.filter((r) =>
        report.collected.cleared.includes(r.location.slice(0, r.location.indexOf("["))),
      );
      expect(inCleared.every((r) => r.verified)).toBe(true);
      // These HSMs run the dry-run applier: the station shows their receipts as such, never as
      // configured (issue 12), read over PC/SC by the CLI.
      expect(new Set(inCleared.map((r) => `${r.dryRun} ${r.outcomeName}`))).toEqual(
        new Set(["true dry run — nothing applied"]),
      );
      expect(report.collected.receiptsArchived).toBe(inCleared.length);
      expect(report.receipts.some((r) => r.location.startsWith(`${tampered}[`) && !r.verified)).toBe(true);
      expect(report.collected.receiptsArchived).toBeGreaterThan(0);
      expect(report.collected.receiptsArchived).toBeLessThanOrEqual(rack1);
      // The archive holds every cleared object as the card held it (base64).
      const archive = JSON.parse(await readFile(report.collected.archive, "utf8")) as {
        items: Record<string, string>;
      };
      expect(Object.keys(archive.items).sort()).toEqual([...report.collected.cleared].sort());
      expect(report.collected.archive.startsWith(join(stationDir, "receipts-archive"))).toBe(true);
      expect(await receiptItems()).toEqual([tampered]);

      // Rack 2: the next HSM through the CLI over PC/SC, its receipt on the card; then more in-process.
      await insert("alice", 0);
      const agent = await agentRun(stateOf(room[next]!), OFFICERS.alice);
      expect(agent.code, agent.run.stderr).toBe(0);
      expect(agent.run.json<{ receipt: { written: boolean } }>().receipt.written).toBe(true);
      await remove(0);
      for (const serial of room.slice(next + 1, next + 11)) {
        const result = await onboardInProcess(serial);
        expect(result.receipt?.written, `${serial}: ${result.receipt?.reason}`).toBe(true);
      }
    }, 600_000);
  },
);
