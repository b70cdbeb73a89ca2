/**
 * The eToken path end to end (issue 13) on SoftHSM2, whose slot stands for a USB token: the CLI
 * (in-process, real SoftHSM2 module through pkcs11js) with `--token pkcs11:…?module-path=…` on every
 * card command — card personalize, card status, station write, agent run (dry-run applier),
 * station receipts — with the PIN only on standard input. No SCP trust anchor is installed and no
 * --allow-plaintext is passed: a token's channel is its own. Refusals as for PIV cards: a wrong PIN
 * (13, nothing applied), another owner's token (16 at the station and at the HSM), a manifest
 * object tampered with on the token (15, nothing applied). Dual control with two tokens of one owner:
 * write --cosigners 1, quorum 2 refuses the lone signature (19), station cosign --token
 * --signer-token, then the HSM onboards. OpenSC's pkcs11-tool lists what the
 * project wrote on the token. At the end every output (debug on), argument list and file the flows
 * wrote is searched for the PINs (text, hex, base64); the SoftHSM2 store is elsewhere: it is the
 * token's own secure storage.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { planToYaml } from "../../src/config/plan.js";
import { Pkcs11Token } from "../../src/pkcs11/pkcs11-token.js";
import {
  initPkiDirectory,
  issueDeviceToDirectory,
  issueTokenCaToDirectory,
  PKI_FILES,
} from "../../src/pki/index.js";
import { rackPlan } from "../../src/sim/demo.js";
import { updateStationCrl } from "../../src/station/crl-update.js";
import { initStation } from "../../src/station/init-station.js";
import { runCliInProcess } from "../helpers/cli.js";
import { requireOrSkipReason } from "../helpers/pcsc-env.js";
import {
  createSoftHsmToken,
  pkcs11ToolUnavailableReason,
  type SoftHsmToken,
  softHsmUnavailableReason,
} from "../helpers/softhsm.js";

const exec = promisify(execFile);
const skip = requireOrSkipReason(softHsmUnavailableReason() ?? pkcs11ToolUnavailableReason());

const ALICE_PIN = "Ak7mQz2v";
const GUS_PIN = "Gx4nRs8t";
const BOB_PIN = "Bq9wLx3m";
// Not made of hex digits only, so that no hash printed in hex can match one by chance.
const WRONG_PIN = "Hj5nRtYw";

describe.skipIf(skip)("--token on SoftHSM2: personalize → station write → agent run → receipts", () => {
  let work: string;
  let hsm: SoftHsmToken;
  let acmeUri: string;
  let globexUri: string;
  let acmeDir: string;
  let globexDir: string;
  let stationDir: string;
  let acmePlan: string;
  let globexPlan: string;
  let serials: string[];
  const globexLabel = `globex-${process.pid}`;
  const bobLabel = `acme-bob-${process.pid}`;
  let bobUri: string;
  let rootCertificate: Parameters<typeof initStation>[1];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "hsm-onboard-token-"));
    // Token A (ACME's officer) from the helper; token B (Globex's) in the same SoftHSM2 store.
    hsm = await createSoftHsmToken({ label: `acme-${process.pid}`, userPin: ALICE_PIN });
    await exec(
      "softhsm2-util",
      ["--init-token", "--free", "--label", globexLabel, "--pin", GUS_PIN, "--so-pin", "12345678"],
      { env: hsm.env },
    );
    await exec(
      "softhsm2-util",
      ["--init-token", "--free", "--label", bobLabel, "--pin", BOB_PIN, "--so-pin", "12345678"],
      { env: hsm.env },
    );
    acmeUri = `pkcs11:token=${hsm.label}?module-path=${hsm.modulePath}`;
    bobUri = `pkcs11:token=${bobLabel}?module-path=${hsm.modulePath}`;
    globexUri = `pkcs11:token=${globexLabel}?module-path=${hsm.modulePath}`;
    const manufacturer = join(work, "manufacturer");
    const { pki } = await initPkiDirectory(manufacturer);
    rootCertificate = pki.root.certificate;
    acmeDir = join(work, "acme");
    globexDir = join(work, "globex");
    const acme = await issueTokenCaToDirectory(manufacturer, "ACME Bank", acmeDir);
    const globex = await issueTokenCaToDirectory(manufacturer, "Globex", globexDir);
    stationDir = join(work, "station");
    await initStation(stationDir, pki.root.certificate);
    await updateStationCrl(stationDir, acme.crl, { issuers: [acme.tokenCa.certificate] });
    await updateStationCrl(stationDir, globex.crl, { issuers: [globex.tokenCa.certificate] });
    const plan = rackPlan({ hsms: 4, vlan: false, ipv6: false, owner: "ACME Bank" });
    serials = plan.hsms.map((h) => h.serial);
    acmePlan = join(work, "acme.yaml");
    await writeFile(acmePlan, planToYaml(plan));
    globexPlan = join(work, "globex.yaml");
    await writeFile(globexPlan, planToYaml(rackPlan({ hsms: 4, vlan: false, ipv6: false, owner: "Globex" })));
  }, 60_000);

  afterAll(async () => {
    await hsm?.dispose();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** Every output of every run, searched for the PINs at the end. */
  const outputs: string[] = [];
  const cli = async (args: string[], stdin = "") => {
    expect(args.join(" ")).not.toMatch(new RegExp(`${ALICE_PIN}|${GUS_PIN}|${BOB_PIN}`));
    const result = await runCliInProcess(args, { stdin, cwd: work, env: { HSM_ONBOARD_DEBUG: "1" } });
    outputs.push(result.stdout, result.stderr);
    return result;
  };

  /** `station write` of `plan` signed with the officer key on token `uri`, the PIN on standard input. */
  const tokenWrite = (plan: string, uri: string, ...more: string[]) => [
    "station",
    "write",
    "--plan",
    plan,
    "--station-dir",
    stationDir,
    "--token",
    uri,
    ...more,
    "--pin-stdin",
  ];

  async function hsmState(serial: string, quorum = 1): Promise<string> {
    const deviceDir = join(work, "devices", serial);
    await issueDeviceToDirectory(join(work, "manufacturer"), deviceDir, serial);
    const stateDir = join(work, "hsms", serial);
    const init = await cli([
      "agent",
      "factory-init",
      "--state-dir",
      stateDir,
      "--serial",
      serial,
      "--trust",
      join(work, "manufacturer", PKI_FILES.rootCert),
      "--device",
      deviceDir,
      "--owner-ca",
      join(acmeDir, PKI_FILES.tokenCaCert),
      "--net",
      "dry-run",
      "--quorum",
      String(quorum),
    ]);
    expect(init.exitCode, init.stderr).toBe(0);
    return stateDir;
  }

  const agentRun = (stateDir: string, uri: string, pin: string) =>
    cli(
      [
        "agent",
        "run",
        "--state-dir",
        stateDir,
        "--token",
        uri,
        "--once",
        "--json",
        "--pin-stdin",
        "--timeout",
        "20",
      ],
      `${pin}\n`,
    );

  /** The agent's stage and addresses: nothing applied means not configured and no address. */
  async function applied(stateDir: string): Promise<{ stage: string; addresses: unknown[] }> {
    const status = await cli(["agent", "status", "--state-dir", stateDir, "--json"]);
    const { stage, addresses } = JSON.parse(status.stdout) as { stage: string; addresses: unknown[] };
    return { stage, addresses };
  }
  const NOTHING_APPLIED = { stage: "waiting-for-card", addresses: [] };

  test("card personalize --token puts the keys and objects on the token; pkcs11-tool sees them", async () => {
    for (const [dir, owner, officer, uri, pin] of [
      [acmeDir, "ACME Bank", "Alice Example", acmeUri, ALICE_PIN],
      [globexDir, "Globex", "Gus Globex", globexUri, GUS_PIN],
      [acmeDir, "ACME Bank", "Bob Example", bobUri, BOB_PIN],
    ] as const) {
      const done = await cli(
        [
          "card",
          "personalize",
          "--pki",
          dir,
          "--owner",
          owner,
          "--officer",
          officer,
          "--token",
          uri,
          "--pin-stdin",
          "--json",
        ],
        `${pin}\n`,
      );
      expect(done.exitCode, done.stderr).toBe(0);
      const summary = JSON.parse(done.stdout) as {
        owner: string;
        keys: { signing: { certificate: { subject: string } } };
      };
      expect(summary.owner).toBe(owner);
      expect(summary.keys.signing.certificate.subject).toContain(`O=${owner}`);
    }
    const status = await cli(["card", "status", "--token", acmeUri, "--json"]);
    expect(status.exitCode, status.stderr).toBe(0);
    const s = JSON.parse(status.stdout) as {
      channel: string;
      keys: { label: string; algorithm: string; certificate: { subject: string } | null }[];
      items: { name: string }[];
    };
    expect(s.channel).toBe("token");
    expect(s.keys.map((k) => [k.label, k.algorithm, Boolean(k.certificate)])).toEqual([
      ["hsm-onboard card authentication", "ECC P-256", true],
      ["hsm-onboard digital signature", "ECC P-256", true],
    ]);
    expect(s.items.map((i) => i.name)).toEqual(["certificates", "crl"]);

    // Independent tool: OpenSC's pkcs11-tool, without logging in.
    const { stdout } = await hsm.pkcs11Tool(["--list-objects"]);
    const objects = stdout.split(/\n(?=\S)/);
    const labelled = (kind: string, label: string) =>
      objects.filter((o) => o.startsWith(kind) && o.includes(`label:      ${label}`)).length;
    expect(labelled("Certificate Object", "hsm-onboard card authentication")).toBe(1);
    expect(labelled("Certificate Object", "hsm-onboard digital signature")).toBe(1);
    expect(labelled("Public Key Object", "hsm-onboard digital signature")).toBe(1);
    // The card-authentication key works without the PIN (PIV 9E), so it is visible; the signing
    // key is CKA_PRIVATE: not listed before login.
    expect(labelled("Private Key Object", "hsm-onboard card authentication")).toBe(1);
    expect(labelled("Private Key Object", "hsm-onboard digital signature")).toBe(0);
    expect(stdout).toMatch(/Data object[\s\S]*label:\s+'certificates'[\s\S]*application:\s+'hsm-onboard'/);
    expect(stdout).toMatch(/label:\s+'crl'/);
  }, 30_000);

  test("station write --token: signed and verified without SCP or --allow-plaintext; wrong PIN 13, other owner 16", async () => {
    const wrong = await cli(tokenWrite(acmePlan, acmeUri), `${WRONG_PIN}\n`);
    expect(wrong.exitCode, wrong.stderr).toBe(13);
    const other = await cli(tokenWrite(acmePlan, globexUri), `${GUS_PIN}\n`);
    expect(other.exitCode, other.stderr).toBe(16);
    expect(other.stderr).toMatch(/the plan is for owner "ACME Bank" but the card belongs to "Globex"/);
    expect(wrong.stderr).toMatch(/wrong PIN; the token reports few tries left/);
    // The token's own counter flag (PKCS#11 has no count): raised by the failure, shown by card status.
    const flagged = await cli(["card", "status", "--token", acmeUri, "--json"]);
    expect(JSON.parse(flagged.stdout)).toMatchObject({ pin: { countLow: true, locked: false } });

    const started = performance.now();
    const done = await cli(tokenWrite(acmePlan, acmeUri, "--json"), `${ALICE_PIN}\n`);
    const ms = Math.round(performance.now() - started);
    expect(done.exitCode, done.stderr).toBe(0);
    expect(done.stderr).toContain("Channel: PKCS#11 token");
    expect(done.stderr).not.toContain("WARNING");
    expect(done.stderr + done.stdout).not.toContain(ALICE_PIN);
    expect(JSON.parse(done.stdout)).toMatchObject({ hsms: 4 });
    const cleared = await cli(["card", "status", "--token", acmeUri, "--json"]);
    expect(JSON.parse(cleared.stdout)).toMatchObject({ pin: { countLow: false } });
    console.info(`station write --token (SoftHSM2, 4 HSMs): ${ms} ms`);

    // Globex's own configuration on its own token, for the HSM-side refusal below.
    const globex = await cli(tokenWrite(globexPlan, globexUri), `${GUS_PIN}\n`);
    expect(globex.exitCode, globex.stderr).toBe(0);
  }, 30_000);

  test("station update-crl --token learns the token CA from the token itself (no --issuer); another owner's token is no issuer of this CRL", async () => {
    // A station that has never seen ACME's token CA: the certificate must come from the token.
    const fresh = join(work, "station-crl");
    await initStation(fresh, rootCertificate);
    const crl = join(acmeDir, PKI_FILES.crl);
    const without = await cli(["station", "update-crl", "--crl", crl, "--station-dir", fresh]);
    expect(without.exitCode, without.stderr).toBe(2);
    const fromToken = await cli([
      "station",
      "update-crl",
      "--crl",
      crl,
      "--station-dir",
      fresh,
      "--token",
      acmeUri,
      "--json",
    ]);
    expect(fromToken.exitCode, fromToken.stderr).toBe(0);
    expect(JSON.parse(fromToken.stdout).issuer.subject).toMatch(/ACME Bank/);
    const wrongToken = await cli([
      "station",
      "update-crl",
      "--crl",
      join(globexDir, PKI_FILES.crl),
      "--station-dir",
      fresh,
      "--token",
      acmeUri,
    ]);
    // Globex's CRL: the token gave ACME's token CA only, and the station knows no Globex issuer.
    expect(wrongToken.exitCode, wrongToken.stderr).toBe(2);
    expect(wrongToken.stderr).toMatch(/issuer|token CA/i);
  });

  test("agent run --token: wrong PIN 13 (nothing applied), then onboarded with a receipt on the token", async () => {
    const stateDir = await hsmState(serials[0]!);
    const wrong = await agentRun(stateDir, acmeUri, WRONG_PIN);
    expect(wrong.exitCode, wrong.stderr).toBe(13);
    expect(await applied(stateDir)).toEqual(NOTHING_APPLIED);

    const started = performance.now();
    const run = await agentRun(stateDir, acmeUri, ALICE_PIN);
    const ms = Math.round(performance.now() - started);
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as { ok: boolean; dryRun: boolean; receipt: { written: boolean } };
    expect(result).toMatchObject({ ok: true, dryRun: true, receipt: { written: true } });
    expect(run.stderr).not.toContain(ALICE_PIN);
    console.info(`agent run --token --once (SoftHSM2, dry run, receipt written): ${ms} ms`);
    // The channel recorded for the card: the token's own (status and audit log).
    const status = await cli(["agent", "status", "--state-dir", stateDir, "--json"]);
    expect(status.stdout).toMatch(/"channel": "token"/);
    expect(status.stdout).not.toMatch(/"channel": "plaintext"/);

    const receipts = await cli([
      "station",
      "receipts",
      "--station-dir",
      stationDir,
      "--token",
      acmeUri,
      "--json",
    ]);
    expect(receipts.exitCode, receipts.stderr).toBe(0);
    const report = JSON.parse(receipts.stdout) as { receipts: { serial: string; verified: boolean }[] };
    expect(report.receipts).toHaveLength(1);
    expect(report.receipts[0]).toMatchObject({ serial: serials[0], verified: true });

    // Receipts mid-room on a token: verified, archived, then the receipt object deleted (the PIN).
    const collected = await cli(
      [
        "station",
        "receipts",
        "--station-dir",
        stationDir,
        "--token",
        acmeUri,
        "--collect",
        "--pin-stdin",
        "--json",
      ],
      `${ALICE_PIN}\n`,
    );
    expect(collected.exitCode, collected.stderr).toBe(0);
    expect(JSON.parse(collected.stdout)).toMatchObject({ collected: { receiptsArchived: 1, kept: [] } });
    const after = await cli(["card", "status", "--token", acmeUri, "--json"]);
    expect(
      (JSON.parse(after.stdout) as { items: { name: string }[] }).items.map((i) => i.name),
    ).not.toContain("receipt-0");
  }, 30_000);

  test("dual control with tokens: write --cosigners 1, cosign --token/--signer-token, an HSM with quorum 2 onboards", async () => {
    const written = await cli(tokenWrite(acmePlan, acmeUri, "--cosigners", "1"), `${ALICE_PIN}\n`);
    expect(written.exitCode, written.stderr).toBe(0);
    const stateDir = await hsmState(serials[3]!, 2);
    const alone = await agentRun(stateDir, acmeUri, ALICE_PIN);
    expect(alone.exitCode, alone.stderr).toBe(19);
    // Secrets in order: the co-signer's PIN, then the carrier officer's.
    const cosigned = await cli(
      [
        "station",
        "cosign",
        "--station-dir",
        stationDir,
        "--token",
        acmeUri,
        "--signer-token",
        bobUri,
        "--pin-stdin",
        "--json",
      ],
      `${BOB_PIN}\n${ALICE_PIN}\n`,
    );
    expect(cosigned.exitCode, cosigned.stderr).toBe(0);
    expect(JSON.parse(cosigned.stdout)).toMatchObject({ signatures: 2, verified: true });
    const run = await agentRun(stateDir, acmeUri, ALICE_PIN);
    expect(run.exitCode, run.stderr).toBe(0);
  }, 30_000);

  test("the HSM refuses another owner's token (16) and a tampered manifest object (15); nothing applied", async () => {
    const bound = await hsmState(serials[1]!);
    const other = await agentRun(bound, globexUri, GUS_PIN);
    expect(other.exitCode, other.stderr).toBe(16);
    expect(other.stderr).toMatch(/card of "Globex" comes from a token CA whose key this HSM is not bound to/);
    expect(await applied(bound)).toEqual(NOTHING_APPLIED);

    // Someone with the token's PIN rewrites one byte of the manifest object.
    const token = await Pkcs11Token.open({ modulePath: hsm.modulePath, tokenLabel: hsm.label });
    try {
      token.login(ALICE_PIN);
      const manifest = token.readData("manifest");
      expect(manifest).toBeDefined();
      const tampered = new Uint8Array(manifest!);
      tampered[tampered.length - 40]! ^= 0x01;
      token.writeData("manifest", tampered);
    } finally {
      token.close();
    }
    const stateDir = await hsmState(serials[2]!);
    const run = await agentRun(stateDir, acmeUri, ALICE_PIN);
    expect(run.exitCode, run.stderr).toBe(15);
    expect(run.stderr).toMatch(/failed \(15\): COSE_Sign signature \d: ES256 signature does not verify/);
    expect(await applied(stateDir)).toEqual(NOTHING_APPLIED);
  }, 30_000);

  test("no PIN in any output (debug on), argument list or file the flows wrote", async () => {
    const forms = [ALICE_PIN, GUS_PIN, BOB_PIN, WRONG_PIN].flatMap((pin) => {
      const b = Buffer.from(pin);
      return [pin, b.toString("hex"), b.toString("hex").toUpperCase(), b.toString("base64")];
    });
    const files = (await readdir(work, { recursive: true, withFileTypes: true }))
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name));
    expect(files.length).toBeGreaterThan(20);
    const texts = [...outputs, ...(await Promise.all(files.map((f) => readFile(f, "latin1"))))];
    for (const form of forms) {
      const hits = texts.map((t, i) => [i, t.indexOf(form)] as const).filter(([, at]) => at >= 0);
      expect(
        hits.map(
          ([i, at]) =>
            `${form} in ${i < outputs.length ? `output ${i}` : files[i - outputs.length]}: …${texts[i]!.slice(Math.max(0, at - 60), at + 20)}`,
        ),
      ).toEqual([]);
    }
  });
});
