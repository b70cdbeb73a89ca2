import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { X509Certificate, X509Crl } from "@peculiar/x509";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateRevokedError, ExitCode } from "../../src/errors.js";
import { crlNumberOf } from "../../src/pki/crl.js";
import { issueCardCertificate } from "../../src/pki/issue.js";
import { generateEcKeyPair } from "../../src/pki/keys.js";
import { loadPkiDirectory } from "../../src/pki/pki-store.js";
import { VALIDATION_REQUIREMENTS } from "../../src/pki/profiles.js";
import { validateChain } from "../../src/pki/validate-chain.js";
import { outputLines, runCliInProcess } from "../helpers/cli.js";

async function run(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const { exitCode, stdout, stderr } = await runCliInProcess(args, { cwd });
  return { code: exitCode, stdout, stderr };
}

const lines = outputLines;

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "hsm-onboard-cli-pki-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("hsm-onboard pki init", () => {
  it("writes the three CAs, their keys (0600), an empty CRL number 1 and the state; prints one line", async () => {
    const result = await run(["pki", "init", "--out", "pki-a", "--owner", "ACME Bank"], work);
    expect(result).toMatchObject({ code: 0, stderr: "" });
    expect(lines(result.stdout)).toHaveLength(1);
    expect(result.stdout).toMatch(/^PKI created in .*pki-a: root ".*Root CA" \(SHA-256 [0-9A-F:]{95}\)/);
    const dir = join(work, "pki-a");
    for (const key of ["root.key.pem", "token-ca.key.pem", "device-ca.key.pem"]) {
      expect((await stat(join(dir, key))).mode & 0o777).toBe(0o600);
    }
    const crl = new X509Crl(await readFile(join(dir, "token-ca.crl.pem"), "utf8"));
    expect(crlNumberOf(crl)).toBe(1n);
    expect(crl.entries).toHaveLength(0);
    const state = JSON.parse(await readFile(join(dir, "pki-state.json"), "utf8"));
    expect(state).toMatchObject({ version: 1, owner: "ACME Bank", nextCrlNumber: 2, revoked: [] });
    const tokenCa = new X509Certificate(await readFile(join(dir, "token-ca.pem"), "utf8"));
    expect(tokenCa.subjectName.getField("O")).toEqual(["ACME Bank"]);
  });

  it("refuses to overwrite an existing PKI without --force (exit 2, one line), and replaces it with --force", async () => {
    await run(["pki", "init", "--out", "pki-b"], work);
    const before = await readFile(join(work, "pki-b", "root.pem"), "utf8");
    const refused = await run(["pki", "init", "--out", "pki-b"], work);
    expect(refused.code).toBe(ExitCode.usage);
    expect(lines(refused.stderr)).toHaveLength(1);
    expect(refused.stderr).toContain("--force");
    expect(await readFile(join(work, "pki-b", "root.pem"), "utf8")).toBe(before);

    const forced = await run(["pki", "init", "--out", "pki-b", "--force"], work);
    expect(forced.code).toBe(0);
    expect(await readFile(join(work, "pki-b", "root.pem"), "utf8")).not.toBe(before);
  });

  it("prints JSON with --json", async () => {
    const result = await run(["pki", "init", "--out", "pki-json", "--json"], work);
    expect(result.code).toBe(0);
    const json = JSON.parse(result.stdout);
    expect(json.crl).toMatchObject({ crlNumber: 1, revoked: [] });
    expect(json.root.subject).toBe(json.root.issuer);
    expect(json.tokenCa.issuer).toBe(json.root.subject);
    expect(json.root.sha256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  });

  it("reports a missing --out as a one-line usage error", async () => {
    const result = await run(["pki", "init"], work);
    expect(result.code).toBe(ExitCode.usage);
    expect(lines(result.stderr)).toHaveLength(1);
    expect(result.stderr).toContain("--out");
    expect(result.stdout).toBe("");
  });

  it("rejects an empty owner name in one line", async () => {
    const result = await run(["pki", "init", "--out", "pki-empty-owner", "--owner", " "], work);
    expect(result.code).toBe(ExitCode.usage);
    expect(lines(result.stderr)).toHaveLength(1);
  });
});

describe("hsm-onboard pki issue-device", () => {
  beforeAll(async () => {
    expect((await run(["pki", "init", "--out", "pki-d"], work)).code).toBe(0);
  });

  it("writes device.key.pem (0600), device.pem and chain.pem (device CA + root) that validate", async () => {
    const result = await run(
      ["pki", "issue-device", "--pki", "pki-d", "--serial", "HSM-0042", "--out", "dev"],
      work,
    );
    expect(result.code).toBe(0);
    expect(lines(result.stdout)).toHaveLength(1);
    expect(result.stdout).toContain("HSM HSM-0042");
    const out = join(work, "dev");
    expect((await stat(join(out, "device.key.pem"))).mode & 0o777).toBe(0o600);
    const device = new X509Certificate(await readFile(join(out, "device.pem"), "utf8"));
    const chain = (await readFile(join(out, "chain.pem"), "utf8")).match(
      /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g,
    );
    expect(chain).toHaveLength(2);
    const [deviceCa, root] = chain!.map((pem) => new X509Certificate(pem));
    const trusted = new X509Certificate(await readFile(join(work, "pki-d", "root.pem"), "utf8"));
    expect(root!.equal(trusted)).toBe(true);
    const validated = await validateChain({
      leaf: device,
      intermediates: [deviceCa!],
      trustAnchor: trusted,
      requireCrl: false,
      ...VALIDATION_REQUIREMENTS.deviceReceipt,
    });
    expect(validated.subjectSerialNumber).toBe("HSM-0042");
    expect(await readFile(join(out, "device.key.pem"), "utf8")).toContain("-----BEGIN PRIVATE KEY-----");
  });

  it("refuses to overwrite device files without --force", async () => {
    await run(["pki", "issue-device", "--pki", "pki-d", "--serial", "7", "--out", "dev-twice"], work);
    const again = await run(
      ["pki", "issue-device", "--pki", "pki-d", "--serial", "7", "--out", "dev-twice"],
      work,
    );
    expect(again.code).toBe(ExitCode.usage);
    expect(lines(again.stderr)).toHaveLength(1);
    const forced = await run(
      ["pki", "issue-device", "--pki", "pki-d", "--serial", "7", "--out", "dev-twice", "--force", "--json"],
      work,
    );
    expect(forced.code).toBe(0);
    expect(JSON.parse(forced.stdout)).toMatchObject({
      serial: "7",
      files: { key: join(work, "dev-twice", "device.key.pem") },
    });
  });

  it("rejects a serial that cannot be a PrintableString serialNumber, in one line", async () => {
    const result = await run(
      ["pki", "issue-device", "--pki", "pki-d", "--serial", "bad serial!", "--out", "x"],
      work,
    );
    expect(result.code).toBe(ExitCode.usage);
    expect(lines(result.stderr)).toHaveLength(1);
    expect(result.stderr).toContain("--serial");
  });

  it("reports a directory that is not a PKI in one line", async () => {
    const result = await run(
      ["pki", "issue-device", "--pki", "nowhere", "--serial", "1", "--out", "x"],
      work,
    );
    expect(result.code).toBe(ExitCode.usage);
    expect(lines(result.stderr)).toHaveLength(1);
    expect(result.stderr).toContain("pki init");
  });
});

describe("hsm-onboard pki revoke and pki crl", () => {
  let cardFile: string;
  let cardSerial: string;
  beforeAll(async () => {
    expect((await run(["pki", "init", "--out", "pki-r", "--owner", "ACME Bank"], work)).code).toBe(0);
    const pki = await loadPkiDirectory(join(work, "pki-r"));
    const keys = await generateEcKeyPair("P-256");
    const card = await issueCardCertificate({
      tokenCa: pki.tokenCa,
      publicKey: keys.publicKey,
      owner: "ACME Bank",
      officer: "Alice",
      slot: "9E",
    });
    cardSerial = card.serialNumber;
    cardFile = join(work, "alice-9e.pem");
    await writeFile(cardFile, card.toString("pem"));
  });

  it("revokes a card certificate: its serial on a new CRL with the next number, and validation refuses it", async () => {
    const result = await run(
      ["pki", "revoke", "--pki", "pki-r", "--cert", cardFile, "--reason", "key-compromise"],
      work,
    );
    expect(result.code, result.stderr).toBe(0);
    // The token CA key of `pki init` is a plain file: signing with it warns, one line on stderr.
    expect(lines(result.stderr)).toEqual([
      expect.stringMatching(/^pki revoke: warning: .*token-ca\.key\.pem is an unencrypted private key/),
    ]);
    expect(lines(result.stdout)).toHaveLength(1);
    expect(result.stdout).toContain("CRL number 2");
    const dir = join(work, "pki-r");
    const crl = new X509Crl(await readFile(join(dir, "token-ca.crl.pem"), "utf8"));
    expect(crlNumberOf(crl)).toBe(2n);
    expect(crl.entries.map((e) => e.serialNumber)).toEqual([cardSerial]);
    expect(crl.entries[0]!.reason).toBe(1); // keyCompromise

    const pki = await loadPkiDirectory(dir);
    const error = await validateChain({
      leaf: await readFile(cardFile, "utf8"),
      intermediates: [pki.tokenCa.certificate],
      trustAnchor: pki.root.certificate,
      crls: [crl],
      ...VALIDATION_REQUIREMENTS.cardAuthentication,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CertificateRevokedError);
  });

  it("says so, and signs nothing, when the certificate is already revoked", async () => {
    const result = await run(["pki", "revoke", "--pki", "pki-r", "--cert", cardFile, "--json"], work);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ alreadyRevoked: true, reason: "keyCompromise" });
    const crl = new X509Crl(await readFile(join(work, "pki-r", "token-ca.crl.pem"), "utf8"));
    expect(crlNumberOf(crl)).toBe(2n);
  });

  it("refuses a certificate this token CA did not issue", async () => {
    await run(["pki", "issue-device", "--pki", "pki-r", "--serial", "99", "--out", "dev-r"], work);
    const result = await run(
      ["pki", "revoke", "--pki", "pki-r", "--cert", join("dev-r", "device.pem")],
      work,
    );
    expect(result.code).toBe(ExitCode.usage);
    expect(lines(result.stderr)).toHaveLength(1);
    expect(result.stderr).toContain("not issued by this PKI's token CA");
  });

  it("rejects an unknown reason and a missing certificate file in one line each", async () => {
    const badReason = await run(
      ["pki", "revoke", "--pki", "pki-r", "--cert", cardFile, "--reason", "bored"],
      work,
    );
    expect(badReason.code).toBe(ExitCode.usage);
    expect(lines(badReason.stderr)).toHaveLength(1);
    expect(badReason.stderr).toContain("keyCompromise");
    const noFile = await run(["pki", "revoke", "--pki", "pki-r", "--cert", "missing.pem"], work);
    expect(noFile.code).toBe(ExitCode.usage);
    expect(lines(noFile.stderr)).toHaveLength(1);
  });

  it("pki crl signs a new CRL number each time; DER for .crl/.der, PEM otherwise", async () => {
    const der = await run(["pki", "crl", "--pki", "pki-r", "--out", "current.crl"], work);
    expect(der.code).toBe(0);
    expect(lines(der.stdout)).toHaveLength(1);
    expect(der.stdout).toContain("CRL number 3 (1 revoked certificate,");
    const derBytes = await readFile(join(work, "current.crl"));
    expect(derBytes[0]).toBe(0x30);
    expect(crlNumberOf(new X509Crl(new Uint8Array(derBytes).buffer))).toBe(3n);

    const pem = await run(
      ["pki", "crl", "--pki", "pki-r", "--out", "current.pem", "--next-update-days", "7", "--json"],
      work,
    );
    expect(pem.code).toBe(0);
    const json = JSON.parse(pem.stdout);
    expect(json).toMatchObject({ crlNumber: 4, format: "pem", revoked: [cardSerial] });
    const crl = new X509Crl(await readFile(join(work, "current.pem"), "utf8"));
    expect(crlNumberOf(crl)).toBe(4n);
    const days = (crl.nextUpdate!.getTime() - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(6.9);
    expect(days).toBeLessThan(7.1);
    // The PKI directory's copy follows.
    const inDir = new X509Crl(await readFile(join(work, "pki-r", "token-ca.crl.pem"), "utf8"));
    expect(crlNumberOf(inDir)).toBe(4n);
  });

  it("rejects a bad --next-update-days in one line", async () => {
    const result = await run(
      ["pki", "crl", "--pki", "pki-r", "--out", "x.pem", "--next-update-days", "0"],
      work,
    );
    expect(result.code).toBe(ExitCode.usage);
    expect(lines(result.stderr)).toHaveLength(1);
  });
});
