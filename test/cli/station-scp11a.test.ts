/**
 * SCP11a through the CLI in-process (issue 11), with the virtual card named by
 * HSM_ONBOARD_VIRTUAL_CARD: `card personalize --scp-trust` installs the OCE CA, `pki issue-oce`
 * equips the station, and the station commands that open the officer's card (receipts, write) open
 * SCP11a by default; `--scp11a` without an OCE key is a usage error naming `pki issue-oce`.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { provisionScpKey } from "../../src/card-emulator/scp-provision.js";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { planToYaml } from "../../src/config/plan.js";
import { ExitCode } from "../../src/errors.js";
import { createScpVendorCa } from "../../src/pki/scp-certificates.js";
import { LAB_PLAN } from "../agent/fixtures.js";
import { runCliInProcess } from "../helpers/cli.js";

const PIN = "24681357";
let work: string;
const env = { HSM_ONBOARD_VIRTUAL_CARD: "card.json" };

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "hsm-onboard-cli-scp11a-"));
  const init = await runCliInProcess(["pki", "init", "--out", "pki", "--owner", "ACME Bank"], { cwd: work });
  expect(init.exitCode, init.stderr).toBe(0);
  const vendor = await createScpVendorCa("CLI Test Card Vendor");
  await writeFile(join(work, "vendor.pem"), vendor.certificate.toString("pem"));
  const card = VirtualPivCard.fromFile(join(work, "card.json"), { serial: 31_000_011 });
  await provisionScpKey(card, vendor);
  await provisionScpKey(card, vendor, { kid: 0x11 });
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("SCP11a through the station commands (in-process virtual card)", () => {
  it("personalize installs the OCE CA; receipts and write open SCP11a; --scp11a needs the OCE key", async () => {
    const personalize = await runCliInProcess(
      [
        "card",
        "personalize",
        "--pki",
        "pki",
        "--owner",
        "ACME Bank",
        "--officer",
        "Alice",
        "--pin-stdin",
        "--scp-trust",
        "vendor.pem",
      ],
      { cwd: work, env, stdin: `${PIN}\n97531864\n` },
    );
    expect(personalize.exitCode, personalize.stderr).toBe(0);
    expect(personalize.stdout).toMatch(
      /channel SCP11b; OCE CA for SCP11a: token CA key installed \(KID 10\/KVN 1/,
    );
    const state = JSON.parse(await readFile(join(work, "card.json"), "utf8"));
    expect(state.scp.oceCa).toMatchObject({ kid: 0x10, kvn: 1 });

    const init = await runCliInProcess(
      [
        "station",
        "init",
        "--trust",
        "pki/root.pem",
        "--crl",
        "pki/token-ca.crl.pem",
        "--issuer",
        "pki/token-ca.pem",
        "--scp-trust",
        "vendor.pem",
        "--station-dir",
        "station",
      ],
      { cwd: work },
    );
    expect(init.exitCode, init.stderr).toBe(0);

    const noKey = await runCliInProcess(["station", "receipts", "--station-dir", "station", "--scp11a"], {
      cwd: work,
      env,
    });
    expect(noKey.exitCode).toBe(ExitCode.usage);
    expect(noKey.stderr).toMatch(/--scp11a: the station has no OCE key .*pki issue-oce/);

    const issue = await runCliInProcess(["pki", "issue-oce", "--pki", "pki", "--station-dir", "station"], {
      cwd: work,
    });
    expect(issue.exitCode, issue.stderr).toBe(0);
    expect(issue.stdout).toMatch(
      /OCE certificate "O=ACME Bank, CN=Station OCE" issued by the token CA of "ACME Bank"/,
    );

    const receipts = await runCliInProcess(["station", "receipts", "--station-dir", "station", "--json"], {
      cwd: work,
      env,
    });
    expect(receipts.exitCode, receipts.stderr).toBe(0);
    expect(receipts.stderr).toMatch(/Secure channel: SCP11a .*accepted the station's OCE certificate/);

    await writeFile(join(work, "lab.yaml"), planToYaml(LAB_PLAN));
    const write = await runCliInProcess(
      [
        "station",
        "write",
        "--plan",
        "lab.yaml",
        "--station-dir",
        "station",
        "--pin-stdin",
        "--scp11a",
        "--json",
      ],
      { cwd: work, env, stdin: `${PIN}\n` },
    );
    expect(write.exitCode, write.stderr).toBe(0);
    expect(JSON.parse(write.stdout).channel).toBe("SCP11a");
  });
});
