/**
 * SCP11a over the real stack (issue 11): a private pcscd with vpcd, the virtual card behind a vpcd
 * bridge in this process (the tap), the CLI as child processes through pcscd.
 * - `card personalize --scp-trust` personalises a factory card inside SCP11b and installs the owner's
 *   token CA key as the card's OCE CA (PUT KEY + STORE DATA, wrapped, on the ISD);
 * - `pki issue-oce` gives the station its OCE key (0600) and certificate; openssl verifies that
 *   certificate to the manufacturer root through the token CA;
 * - `station write` opens SCP11a (PSO + MUTUAL AUTHENTICATE) and the agent onboards from the card
 *   over SCP11b;
 * - a station holding another owner's OCE certificate is refused before any PIN (exit 15): no VERIFY
 *   reaches the card, its PIN counter is unchanged, nothing is written.
 */
import { execFileSync } from "node:child_process";
import { statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { FileCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { YUBIKEY_5_7_PROFILE } from "../../src/card-emulator/profiles.js";
import { provisionScpKey } from "../../src/card-emulator/scp-provision.js";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { VpcdBridge } from "../../src/card-emulator/vpcd-bridge.js";
import { planToYaml } from "../../src/config/plan.js";
import { ExitCode } from "../../src/errors.js";
import type { IssuerCredentials } from "../../src/pki/issue.js";
import { initPkiDirectory } from "../../src/pki/pki-store.js";
import { createScpVendorCa } from "../../src/pki/scp-certificates.js";
import { installScpTrust } from "../../src/secure-element/channel-policy.js";
import { type PrivatePcscd, startPrivatePcscd } from "../../src/sim/pcscd.js";
import { createTestPki, initAgent, LAB_PLAN, OWNER, PIN, type TestPki, tempDir } from "../agent/fixtures.js";
import {
  buildForChildren,
  type PrivateBuild,
  pcscE2eCapability,
  requireOrSkip,
} from "../helpers/pcsc-env.js";
import { runCliChild, stopChildren } from "../security/children.js";
import { put } from "../security/stack.js";

const cap = requireOrSkip(pcscE2eCapability());
const PUK = "24681357";

const hexIns = (c: Buffer) => c.subarray(0, 2).toString("hex").toUpperCase();

describe.skipIf(!cap.ok)(
  `SCP11a in the station flow (real pcscd)${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let base: { dir: string; cleanup: () => Promise<void> };
    let build: PrivateBuild;
    let testPki: TestPki;
    let crl: Uint8Array;
    let vendor: IssuerCredentials;
    let vendorFile: string;
    let pcscd: PrivatePcscd;
    let bridge: VpcdBridge | undefined;
    let card: VirtualPivCard;
    let cardFile: string;
    const tap: { command: Buffer; response: Buffer }[] = [];

    beforeAll(async () => {
      base = await tempDir("hsm-scp11a-");
      [build, testPki, vendor, pcscd] = await Promise.all([
        buildForChildren(["cli/main.js"]),
        createTestPki(base.dir),
        createScpVendorCa("SCP11a Test Card Vendor"),
        startPrivatePcscd(),
      ]);
      crl = await testPki.crl(1);
      vendorFile = await put(join(base.dir, "vendor.pem"), vendor.certificate.toString("pem"));
      // A factory card with the vendor's SCP11b and SCP11a SD keys, in the reader for the whole file.
      cardFile = join(base.dir, "card.json");
      card = VirtualPivCard.fromFile(cardFile, { profile: YUBIKEY_5_7_PROFILE });
      await provisionScpKey(card, vendor);
      await provisionScpKey(card, vendor, { kid: 0x11 });
      bridge = new VpcdBridge({ responder: card, host: "127.0.0.1", port: pcscd.vpcdPort, atr: card.atr });
      bridge.on("event", (e) => {
        if (e.type === "apdu")
          tap.push({ command: Buffer.from(e.command), response: Buffer.from(e.response) });
      });
      await bridge.start();
    }, 240_000);
    afterAll(async () => {
      await bridge?.stop();
      await stopChildren();
      await pcscd?.stop();
      await build?.cleanup();
      await base?.cleanup();
    });

    const cli = (args: string[], stdin?: string) =>
      runCliChild(build, args, { env: pcscd.env, timeoutMs: 90_000, ...(stdin ? { stdin } : {}) });

    async function station(name: string): Promise<string> {
      const dir = join(base.dir, name);
      const init = await cli([
        "station",
        "init",
        "--trust",
        await put(join(base.dir, `${name}-root.pem`), testPki.rootPem),
        "--crl",
        await put(join(base.dir, `${name}-token-ca.crl`), crl),
        "--issuer",
        join(testPki.dir, "token-ca.pem"),
        "--station-dir",
        dir,
        "--scp-trust",
        vendorFile,
      ]);
      expect(init.code, init.stderr).toBe(ExitCode.ok);
      return dir;
    }

    test("personalize installs the OCE CA; station write opens SCP11a; the agent onboards; openssl verifies the OCE chain", async () => {
      const personalize = await cli(
        [
          "card",
          "personalize",
          "--pki",
          testPki.dir,
          "--owner",
          OWNER,
          "--officer",
          "Alice Officer",
          "--pin-stdin",
          "--scp-trust",
          vendorFile,
          "--json",
        ],
        `${PIN}\n${PUK}\n`,
      );
      expect(personalize.code, personalize.stderr).toBe(ExitCode.ok);
      const summary = JSON.parse(personalize.stdout);
      expect(summary.channel).toBe("SCP11b");
      expect(summary.oceCa).toMatchObject({ outcome: "installed", kid: 0x10, kvn: 1 });
      // PUT KEY and STORE DATA went wrapped (CLA 84 / 04), after an INTERNAL AUTHENTICATE on the ISD.
      const i = tap.map((a) => hexIns(a.command));
      expect(i).toContain("84D8");
      expect(i).toContain("04E2");
      expect(
        i.filter((c) => c.endsWith("D8") || c.endsWith("E2")).every((c) => c === "84D8" || c === "04E2"),
      ).toBe(true);

      const stationDir = await station("station");
      const issue = await cli([
        "pki",
        "issue-oce",
        "--pki",
        testPki.dir,
        "--station-dir",
        stationDir,
        "--name",
        "Station One",
        "--json",
      ]);
      expect(issue.code, issue.stderr).toBe(ExitCode.ok);
      expect(JSON.parse(issue.stdout).oce.authorityKeyId).toBe(summary.oceCa.ski);
      expect(statSync(join(stationDir, "oce.key.pem")).mode & 0o777).toBe(0o600);
      // Independent check: OpenSSL validates the OCE certificate to the root through the token CA.
      const verified = execFileSync(
        "openssl",
        [
          "verify",
          "-CAfile",
          join(testPki.dir, "root.pem"),
          "-untrusted",
          join(testPki.dir, "token-ca.pem"),
          join(stationDir, "oce.pem"),
        ],
        { encoding: "utf8" },
      );
      expect(verified.trim()).toBe(`${join(stationDir, "oce.pem")}: OK`);

      const { stateDir } = await initAgent(join(base.dir, "hsm"), testPki, { crl, name: "hsm" });
      await installScpTrust(stateDir, vendor.certificate.toString("pem"), "vendor");
      const plan = await put(join(base.dir, "lab.yaml"), planToYaml(LAB_PLAN));
      tap.length = 0;
      const write = await cli(
        [
          "station",
          "write",
          "--plan",
          plan,
          "--station-dir",
          stationDir,
          "--pin-stdin",
          "--scp11a",
          "--json",
        ],
        `${PIN}\n`,
      );
      expect(write.code, write.stderr).toBe(ExitCode.ok);
      expect(write.stderr).toMatch(/Secure channel: SCP11a .*accepted the station's OCE certificate/);
      expect(JSON.parse(write.stdout).channel).toBe("SCP11a");
      const w = tap.map((a) => hexIns(a.command));
      expect(w).toContain("802A");
      expect(w.filter((c) => c === "8082")).toHaveLength(1);
      expect(w).not.toContain("8088");

      const run = await cli(
        ["agent", "run", "--state-dir", stateDir, "--once", "--net", "dry-run", "--json", "--pin-stdin"],
        `${PIN}\n`,
      );
      expect(run.code, run.stderr).toBe(ExitCode.ok);
      expect(JSON.parse(run.stdout).card.channel).toBe("SCP11b");
    }, 120_000);

    test("another owner's station: refused before any PIN (exit 15), nothing sent after FF33, PIN counter unchanged", async () => {
      // The card was personalised by the first test (OCE CA = ACME's token CA).
      const otherPki = join(base.dir, "other-pki");
      await initPkiDirectory(otherPki, { owner: "Other Bank" });
      const stationDir = await station("other-station");
      const issue = await cli(["pki", "issue-oce", "--pki", otherPki, "--station-dir", stationDir]);
      expect(issue.code, issue.stderr).toBe(ExitCode.ok);
      const plan = await put(join(base.dir, "lab2.yaml"), planToYaml(LAB_PLAN));
      const objectsBefore = JSON.stringify(new FileCardStateStore(cardFile).load()!.objects);
      tap.length = 0;
      const write = await cli(
        ["station", "write", "--plan", plan, "--station-dir", stationDir, "--pin-stdin", "--json"],
        `${PIN}\n`,
      );
      expect(write.code, write.stderr).toBe(ExitCode.integrity);
      expect(JSON.parse(write.stdout).error).toMatchObject({ code: "ERR_SCP_OCE_REFUSED", exit: 15 });
      expect(write.stderr).toMatch(/another owner's card/);
      const w = tap.map((a) => hexIns(a.command));
      expect(w.filter((c) => c !== "00C0")).toEqual(["00A4", "00CA", "00CA"]); // SELECT ISD, BF21, FF33
      expect(w.some((c) => c.endsWith("20"))).toBe(false); // no VERIFY
      // The card's PIN counter is untouched and nothing was written: its stored state is as before.
      const state = new FileCardStateStore(cardFile).load()!;
      expect(state.pin.triesLeft).toBe(state.pin.tries);
      expect(JSON.stringify(state.objects)).toBe(objectsBefore);
    }, 60_000);
  },
);
