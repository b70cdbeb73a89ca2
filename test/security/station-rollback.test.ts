/**
 * Issue 10 finding 5: a station must detect its own rollback. Over the real stack (pcscd + vpcd +
 * `card emulate`, CLI children): a station takes CRL 1 then CRL 2 of its token CA and writes a card
 * twice (sequences 1 and 2). Then
 * - the inventory (inventory.sqlite, formerly sequences.json) put back to 1 → `station write` refuses
 *   with 17 (before: it re-issued sequence 2);
 * - the CRL 1 file put back → `station write` refuses with 17 (before: it wrote the older CRL, which
 *   may not list a revoked card);
 * - an edited journal line → 15.
 * With the files as the station left them, writing goes on (sequence 3).
 */
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { planToYaml } from "../../src/config/plan.js";
import { ExitCode } from "../../src/errors.js";
import { LAB_PLAN, PIN } from "../agent/fixtures.js";
import { plaintextWrite } from "../station/fixtures.js";
import { put, Stack, stackCapability, useChildTestBed } from "./stack.js";
import { CardTemplate } from "./support.js";

const cap = stackCapability();

describe.skipIf(!cap.ok)(
  `the station detects its own rollback (real stack)${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let stack: Stack;
    const bed = useChildTestBed("hsm-security-station-rollback-", ["cli/main.js"]);
    beforeAll(async () => {
      stack = await Stack.start(bed.build);
    }, 180_000);
    afterAll(async () => {
      await stack?.close();
    });

    test("a lowered inventory and an older CRL file are refused with 17; an edited journal with 15", async () => {
      const station = join(bed.dir, "station");
      const issuer = join(bed.testPki.dir, "token-ca.pem");
      const crl1 = await put(join(bed.dir, "crl-1.der"), await bed.testPki.crl(1));
      const crl2 = await put(join(bed.dir, "crl-2.der"), await bed.testPki.crl(2));
      const root = await put(join(bed.dir, "root.pem"), bed.testPki.rootPem);
      const ok = (r: { code: number | null; stderr: string }) => expect(r.code, r.stderr).toBe(ExitCode.ok);
      ok(
        await stack.cli([
          "station",
          "init",
          "--trust",
          root,
          "--crl",
          crl1,
          "--issuer",
          issuer,
          "--station-dir",
          station,
        ]),
      );
      const crlDir = join(station, "crls");
      const [crlFile] = await readdir(crlDir);
      const crl1Pem = await readFile(join(crlDir, crlFile!), "utf8");
      ok(
        await stack.cli([
          "station",
          "update-crl",
          "--crl",
          crl2,
          "--issuer",
          issuer,
          "--station-dir",
          station,
        ]),
      );

      const template = await CardTemplate.personalise(bed.testPki.pki.tokenCa, bed.dir, "officer");
      await stack.insert(join(bed.dir, "card.json"), template.cardState);
      const plan = await put(join(bed.dir, "plan.yaml"), planToYaml(LAB_PLAN));
      const write = () =>
        stack.cli(plaintextWrite(station, plan, "--json"), {
          stdin: `${PIN}\n`,
        });
      const sequenceOf = (r: { stdout: string }) => (JSON.parse(r.stdout) as { sequence: number }).sequence;
      const first = await write();
      ok(first);
      expect(sequenceOf(first)).toBe(1);
      // Each CLI process closed the inventory: no write-ahead log beside it, the file is complete.
      expect(await readdir(station)).not.toContain("inventory.sqlite-wal");
      const afterFirst = await readFile(join(station, "inventory.sqlite"));
      const second = await write();
      ok(second);
      expect(sequenceOf(second)).toBe(2);

      // The inventory put back to its copy from after the first write (issue 14: it replaced sequences.json).
      const inventoryPath = join(station, "inventory.sqlite");
      const current = await readFile(inventoryPath);
      await writeFile(inventoryPath, afterFirst);
      const afterLowering = await write();
      expect(afterLowering.code, afterLowering.stderr).toBe(ExitCode.replay);
      expect(afterLowering.stderr).toMatch(
        /station rollback detected: the inventory .*inventory\.sqlite says 1 for "ACME Bank", but the station journal recorded 2/,
      );
      await writeFile(inventoryPath, current);
      const third = await write();
      ok(third);
      expect(sequenceOf(third)).toBe(3);

      // The CRL 1 file put back.
      const crl2Pem = await readFile(join(crlDir, crlFile!), "utf8");
      await writeFile(join(crlDir, crlFile!), crl1Pem);
      const afterCrl = await write();
      expect(afterCrl.code, afterCrl.stderr).toBe(ExitCode.replay);
      expect(afterCrl.stderr).toMatch(
        /station rollback detected: the station holds CRL number 1 of .*but it took number 2 before/,
      );
      await writeFile(join(crlDir, crlFile!), crl2Pem);

      // An edited journal line.
      const journalPath = join(station, "journal.log");
      const journal = await readFile(journalPath, "utf8");
      await writeFile(journalPath, journal.replace('"number":"2"', '"number":"1"'));
      const afterEdit = await write();
      expect(afterEdit.code, afterEdit.stderr).toBe(ExitCode.integrity);
      expect(afterEdit.stderr).toMatch(/station journal .* breaks the chain/);
      await writeFile(journalPath, journal);
      ok(await write());
    }, 240_000);
  },
);
