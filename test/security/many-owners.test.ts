/**
 * Issue 10 findings 1 and 2, with two genuinely separate owners under one manufacturer root, over
 * the real stack (a private pcscd with vpcd in a network namespace, `hsm-onboard card emulate` as
 * the cards, every other command as a CLI child process): the manufacturer runs `pki init` and
 * `pki issue-token-ca` for "Owner A" and "Owner B"; each owner personalises its own cards from its
 * own PKI directory (`card personalize`) and writes them from its own station directory.
 *
 * 1. Owner takeover. `agent factory-init --owner NAME` alone is refused; `--owner-ca` binds the HSM
 *    to A's token CA key. Owner B's genuine card, and a card B forges with its own token CA key whose
 *    leaf says O = "Owner A" (the attack of the issue; `card personalize` itself refuses to make it),
 *    configure nothing and leave the binding as it was; A's card then configures the HSM (exit 0).
 *    A second token CA that the manufacturer issued under the name "Owner A" (mis-issued, or a rogue
 *    request) is refused by the key pin (16) — at the factory binding and after first-use pinning.
 * 2. Forged receipts. A receipt signed with a certificate B's token CA issued (device usage, the
 *    serialNumber of an HSM in A's plan) is never shown as verified at A's station; the genuine
 *    receipt is. A device CA's CRL (`station update-crl --device`) that revokes the HSM's device
 *    certificate makes its receipt show as revoked.
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { AgentStateStore } from "../../src/agent/state-store.js";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { planToYaml } from "../../src/config/plan.js";
import { appendReceipt, signReceipt } from "../../src/config/receipt.js";
import { createSoftwareSigner } from "../../src/crypto/signer.js";
import { ExitCode } from "../../src/errors.js";
import { crlToPem, issueCrl } from "../../src/pki/crl.js";
import { createDeviceIdentity } from "../../src/pki/issue.js";
import { exportPrivateKeyPem } from "../../src/pki/keys.js";
import { loadPkiDirectory, loadTokenCaDirectory } from "../../src/pki/pki-store.js";
import { LAB_PLAN, openElement, PIN, personalizeCard, tempDir, writeConfig } from "../agent/fixtures.js";
import { buildForChildren, type PrivateBuild } from "../helpers/pcsc-env.js";
import { plaintextWrite } from "../station/fixtures.js";
import { Stack, stackCapability } from "./stack.js";

const cap = stackCapability();
const PUK = "86429753";
const A = "Owner A";
const B = "Owner B";

describe.skipIf(!cap.ok)(
  `many owners under one root (real stack, CLI children)${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let base: { dir: string; cleanup: () => Promise<void> };
    let build: PrivateBuild;
    let stack: Stack;
    const path = (...parts: string[]) => join(base.dir, ...parts);
    const ok = (r: { code: number | null; stderr: string }) => expect(r.code, r.stderr).toBe(ExitCode.ok);
    const spki: Record<string, string> = {};

    /** A fresh card in the reader, personalised by `card personalize` from `pkiDir`. */
    async function personalise(name: string, pkiDir: string, owner: string) {
      await stack.insert(path(`${name}.card.json`));
      const r = await stack.cli(
        [
          "card",
          "personalize",
          "--pki",
          pkiDir,
          "--owner",
          owner,
          "--officer",
          `${name} officer`,
          "--pin-stdin",
        ],
        { stdin: `${PIN}\n${PUK}\n` },
      );
      return r;
    }

    /** Writes `owner`'s plan onto the card in the reader from station `station`. */
    async function stationWrite(station: string, owner: string, sequence?: number) {
      const plan = path(`${station}-plan.yaml`);
      await writeFile(plan, planToYaml({ ...LAB_PLAN, owner }));
      return stack.cli(
        plaintextWrite(
          path(station),
          plan,
          ...(sequence === undefined ? [] : ["--sequence", String(sequence)]),
        ),
        { stdin: `${PIN}\n` },
      );
    }

    async function factoryInit(name: string, extra: string[]) {
      return stack.cli([
        "agent",
        "factory-init",
        "--state-dir",
        path(`${name}-state`),
        "--serial",
        "1234567",
        "--trust",
        path("mfr", "root.pem"),
        "--device",
        path("device-1234567"),
        "--net",
        "dry-run",
        ...extra,
      ]);
    }

    async function agentRun(name: string) {
      const r = await stack.cli(
        [
          "agent",
          "run",
          "--allow-plaintext",
          "--state-dir",
          path(`${name}-state`),
          "--once",
          "--net",
          "dry-run",
          "--pin-stdin",
          "--json",
          "--timeout",
          "20",
        ],
        { stdin: `${PIN}\n` },
      );
      return {
        ...r,
        result: r.stdout
          ? (JSON.parse(r.stdout) as { exitCode: number; error?: { message: string } })
          : undefined,
      };
    }

    const ownerOf = async (name: string) => (await AgentStateStore.open(path(`${name}-state`))).state.owner;

    beforeAll(async () => {
      base = await tempDir("hsm-security-owners-");
      build = await buildForChildren(["cli/main.js"]);
      stack = await Stack.start(build);
      // The manufacturer, and one token CA per owner (each owner's directory: its token CA key only).
      ok(await stack.cli(["pki", "init", "--out", path("mfr")]));
      for (const [dir, owner] of [
        ["owner-a", A],
        ["owner-b", B],
        ["rogue-a", A],
      ] as const) {
        const r = await stack.cli([
          "pki",
          "issue-token-ca",
          "--pki",
          path("mfr"),
          "--owner",
          owner,
          "--out",
          path(dir),
          "--json",
        ]);
        ok(r);
        spki[dir] = (JSON.parse(r.stdout) as { tokenCa: { spkiSha256: string } }).tokenCa.spkiSha256;
      }
      ok(
        await stack.cli([
          "pki",
          "issue-device",
          "--pki",
          path("mfr"),
          "--serial",
          "1234567",
          "--out",
          path("device-1234567"),
        ]),
      );
      for (const [station, dir] of [
        ["station-a", "owner-a"],
        ["station-b", "owner-b"],
        ["station-rogue", "rogue-a"],
      ]) {
        ok(
          await stack.cli([
            "station",
            "init",
            "--trust",
            path("mfr", "root.pem"),
            "--crl",
            path(dir!, "token-ca.crl.pem"),
            "--issuer",
            path(dir!, "token-ca.pem"),
            "--station-dir",
            path(station!),
          ]),
        );
      }
      // Each owner's card, written by its own station.
      ok(await personalise("a", path("owner-a"), A));
      ok(await stationWrite("station-a", A));
      ok(await personalise("b", path("owner-b"), B));
      ok(await stationWrite("station-b", B));
      ok(await personalise("rogue", path("rogue-a"), A));
      ok(await stationWrite("station-rogue", A));
      await stack.remove();
    }, 300_000);
    afterAll(async () => {
      await stack?.close();
      await build?.cleanup();
      await base?.cleanup();
    });

    test("owner takeover: --owner alone refused; bound by --owner-ca, B's card and B's forged 'Owner A' card change nothing; A's card configures", async () => {
      const nameOnly = await factoryInit("hsm", ["--owner", A]);
      expect(nameOnly.code).toBe(ExitCode.usage);
      expect(nameOnly.stderr).toMatch(/--owner alone does not bind an HSM/);
      ok(await factoryInit("hsm", ["--owner-ca", path("owner-a", "token-ca.pem")]));
      const bound = await ownerOf("hsm");
      expect(bound).toMatchObject({ name: A, boundBy: "factory", tokenCaSpkiSha256: spki["owner-a"] });

      // B's genuine card.
      await stack.insert(path("b.card.json"));
      const withB = await agentRun("hsm");
      expect(withB.code, withB.stderr).toBe(ExitCode.notForThisHsm);
      expect(withB.result?.error?.message).toMatch(/whose key this HSM is not bound to/);

      // B forges: `card personalize` refuses a leaf O other than its token CA's; B signs one anyway.
      const refused = await personalise("forged", path("owner-b"), A);
      expect(refused.code, refused.stdout).not.toBe(ExitCode.ok);
      await stack.remove();
      const tokenCaB = (await loadTokenCaDirectory(path("owner-b"))).tokenCa;
      const forged = await personalizeCard(tokenCaB, { owner: A, path: path("forged.card.json") });
      const crlB = new Uint8Array(
        Buffer.from(
          (await readFile(path("owner-b", "token-ca.crl.pem"), "utf8")).replace(/-----[^-]+-----|\s/g, ""),
          "base64",
        ),
      );
      await writeConfig(forged.card, { ...LAB_PLAN, owner: A }, { sequence: 50, crl: crlB });
      await stack.insert(path("forged.card.json"));
      const withForged = await agentRun("hsm");
      expect([ExitCode.cardNotTrusted, ExitCode.notForThisHsm], withForged.stderr).toContain(withForged.code);
      expect(withForged.result?.error?.message).toMatch(/name constraint|not bound to/);
      expect(await ownerOf("hsm")).toEqual(bound);

      // A's genuine card still configures the HSM.
      await stack.insert(path("a.card.json"));
      const withA = await agentRun("hsm");
      expect(withA.code, withA.stderr).toBe(ExitCode.ok);
      expect((await AgentStateStore.open(path("hsm-state"))).state.configured?.owner).toBe(A);
    }, 240_000);

    test("a second token CA named 'Owner A' is refused by the key pin: at the factory binding, and after first-use pinning", async () => {
      ok(await factoryInit("hsm-pinned", ["--owner-ca", path("owner-a", "token-ca.pem"), "--owner", A]));
      await stack.insert(path("rogue.card.json"));
      const rogue = await agentRun("hsm-pinned");
      expect(rogue.code, rogue.stderr).toBe(ExitCode.notForThisHsm);
      expect(rogue.result?.error?.message).toMatch(/token CA whose key this HSM is not bound to/);

      // No factory binding: the first onboarding (A's card) pins A's token CA key; the rogue card is then refused.
      ok(await factoryInit("hsm-first-use", []));
      await stack.insert(path("a.card.json"));
      const first = await agentRun("hsm-first-use");
      expect(first.code, first.stderr).toBe(ExitCode.ok);
      expect(await ownerOf("hsm-first-use")).toMatchObject({
        name: A,
        boundBy: "first-onboarding",
        tokenCaSpkiSha256: spki["owner-a"],
      });
      await stack.insert(path("rogue.card.json"));
      const after = await agentRun("hsm-first-use");
      expect(after.code, after.stderr).toBe(ExitCode.notForThisHsm);
      expect(after.result?.error?.message).toMatch(/token CA whose key this HSM is not bound to/);
    }, 240_000);

    test("forged receipts never verify at A's station; a device CRL shows a revoked device's receipt as revoked", async () => {
      // HSM 1234567, bound to A, onboards A's card and writes its genuine receipt. B forges one for
      // HSM 1234568 into the next free receipt object.
      ok(await factoryInit("hsm-receipts", ["--owner-ca", path("owner-a", "token-ca.pem")]));
      await stack.insert(path("a.card.json"));
      const onboarded = await agentRun("hsm-receipts");
      expect(onboarded.code, onboarded.stderr).toBe(ExitCode.ok);
      await stack.remove();
      const tokenCaB = (await loadTokenCaDirectory(path("owner-b"))).tokenCa;
      const fake = await createDeviceIdentity({ deviceCa: tokenCaB, serial: "1234568", manufacturer: B });
      const signer = createSoftwareSigner({
        privateKey: await exportPrivateKeyPem(fake.privateKey),
        certificateChain: [
          new Uint8Array(fake.certificate.rawData),
          new Uint8Array(tokenCaB.certificate.rawData),
        ],
      });
      let forgedAt = "";
      const card = VirtualPivCard.fromFile(path("a.card.json"));
      const element = await openElement(card);
      try {
        expect(await element.readItem("receipt-0")).toBeDefined();
        let free = 1;
        while (await element.readItem(`receipt-${free}`)) free++;
        forgedAt = `receipt-${free}[0]`;
        const forged = await signReceipt(
          {
            serial: "1234568",
            configurationId: new Uint8Array(16),
            sequence: 1,
            stateDigest: new Uint8Array(32),
            time: Math.floor(Date.now() / 1000),
            outcome: 0,
          },
          signer,
        );
        await element.verifyPin(PIN);
        await element.writeItem(forgedAt.slice(0, -3), appendReceipt(undefined, forged, 3063));
      } finally {
        await element.close();
      }
      await stack.insert(path("a.card.json"));
      const receipts = async () => {
        const r = await stack.cli([
          "station",
          "receipts",
          "--allow-plaintext",
          "--station-dir",
          path("station-a"),
          "--json",
        ]);
        return JSON.parse(r.stdout) as {
          receipts: {
            location: string;
            serial: string | null;
            verified: boolean;
            revoked: boolean;
            reason: string | null;
          }[];
        };
      };
      const before = await receipts();
      const genuineRows = before.receipts.filter((r) => r.serial === "1234567" && r.verified);
      const forgedRow = before.receipts.find((r) => r.location === forgedAt);
      expect(genuineRows.length, JSON.stringify(before)).toBeGreaterThan(0);
      expect(genuineRows.every((r) => !r.revoked)).toBe(true);
      expect(forgedRow).toMatchObject({ verified: false, revoked: false });
      expect(forgedRow?.reason).toMatch(/not authentic: .*(not a device CA|outside what its issuer)/);

      // The device CA revokes HSM 1234567's device certificate; the station takes the device CRL.
      const mfr = await loadPkiDirectory(path("mfr"));
      const deviceCert = await readFile(path("device-1234567", "device.pem"), "utf8");
      const { X509Certificate } = await import("node:crypto");
      const serialNumber = new X509Certificate(deviceCert).serialNumber.toLowerCase();
      const crl = await issueCrl({
        issuer: mfr.deviceCa,
        crlNumber: 1n,
        entries: [{ serialNumber, revokedAt: new Date(Date.now() - 60_000) }],
      });
      await writeFile(path("device-ca.crl.pem"), crlToPem(crl));
      const asToken = await stack.cli([
        "station",
        "update-crl",
        "--crl",
        path("device-ca.crl.pem"),
        "--issuer",
        path("mfr", "device-ca.pem"),
        "--station-dir",
        path("station-a"),
      ]);
      expect(asToken.code, asToken.stderr).toBe(ExitCode.usage);
      expect(asToken.stderr).toMatch(/is a device CA: take its CRL with --device/);
      ok(
        await stack.cli([
          "station",
          "update-crl",
          "--device",
          "--crl",
          path("device-ca.crl.pem"),
          "--issuer",
          path("mfr", "device-ca.pem"),
          "--station-dir",
          path("station-a"),
        ]),
      );
      const after = await receipts();
      for (const genuine of genuineRows) {
        const row = after.receipts.find((r) => r.location === genuine.location);
        expect(row).toMatchObject({ verified: false, revoked: true });
        expect(row?.reason).toMatch(/^revoked: /);
      }
      expect(after.receipts.find((r) => r.location === forgedAt)).toMatchObject({
        verified: false,
        revoked: false,
      });
    }, 240_000);
  },
);
