/**
 * Passphrase-encrypted CA keys through the CLI (issue 13): `pki init --encrypt`, then every command
 * that signs with a CA key asks the passphrase (here from --ca-passphrase-env / --ca-passphrase-fd
 * and never from argv) instead of warning; a wrong passphrase exits 13 with one line and changes
 * nothing; `pki encrypt-key` turns a plain key file into an encrypted one that OpenSSL reads.
 */
import { execFile } from "node:child_process";
import { openSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { ExitCode } from "../../src/errors.js";
import { type CliResult, runCliInProcess } from "../helpers/cli.js";

const execFileAsync = promisify(execFile);
const PASS = "passphrase of the CA keys";
const OWNER = "ACME Bank";

let work: string;
const run = (args: string[], env: Record<string, string> = { CA_PASS: PASS }, stdin?: string) =>
  runCliInProcess(args, { cwd: work, env, ...(stdin ? { stdin } : {}) });
const ok = (r: CliResult) => expect(r.exitCode, r.stderr).toBe(ExitCode.ok);
/** An open file descriptor reading `text` (the command closes it), as a shell's 3<file would give. */
async function fdWith(text: string): Promise<string> {
  const file = join(work, `secrets-${Math.random().toString(36).slice(2)}.txt`);
  await writeFile(file, text, { mode: 0o600 });
  return String(openSync(file, "r"));
}
const stderrLines = (r: CliResult) => r.stderr.split("\n").filter((l) => l.length > 0);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "hsm-onboard-cli-enc-"));
  ok(
    await run([
      "pki",
      "init",
      "--out",
      "pki",
      "--owner",
      OWNER,
      "--encrypt",
      "--ca-passphrase-env",
      "CA_PASS",
    ]),
  );
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("encrypted CA keys from the CLI", () => {
  it("pki init --encrypt writes the three keys encrypted; openssl reads them with the passphrase", async () => {
    for (const file of ["root.key.pem", "token-ca.key.pem", "device-ca.key.pem"]) {
      const text = await readFile(join(work, "pki", file), "utf8");
      expect(text, file).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
      const { stderr } = await execFileAsync(
        "openssl",
        ["pkey", "-in", file, "-passin", "env:CA_PASS", "-noout"],
        {
          cwd: join(work, "pki"),
          env: { ...process.env, CA_PASS: PASS },
        },
      );
      expect(stderr).toBe("");
    }
    const short = await run(
      ["pki", "init", "--out", "pki-short", "--encrypt", "--ca-passphrase-env", "CA_PASS"],
      {
        CA_PASS: "too short",
      },
    );
    expect(short.exitCode).toBe(ExitCode.usage);
    expect(short.stderr).toMatch(/at least 12 characters/);
  });

  it("pki crl and pki issue-device sign after the passphrase, without a warning; a wrong one exits 13 in one line and signs nothing", async () => {
    const crl = await run([
      "pki",
      "crl",
      "--pki",
      "pki",
      "--out",
      "crl.pem",
      "--ca-passphrase-env",
      "CA_PASS",
    ]);
    ok(crl);
    expect(crl.stderr).toBe("");
    expect(crl.stdout).toContain("CRL number 2");
    const device = await run([
      "pki",
      "issue-device",
      "--pki",
      "pki",
      "--serial",
      "1234567",
      "--out",
      "device",
      "--ca-passphrase-env",
      "CA_PASS",
    ]);
    ok(device);
    expect(device.stderr).toBe("");

    const wrong = await run(
      ["pki", "crl", "--pki", "pki", "--out", "crl-x.pem", "--ca-passphrase-env", "CA_PASS"],
      {
        CA_PASS: "the wrong passphrase",
      },
    );
    expect(wrong.exitCode).toBe(ExitCode.wrongPin);
    expect(stderrLines(wrong)).toEqual([
      expect.stringMatching(/token-ca\.key\.pem: wrong passphrase \(or the file is damaged\)$/),
    ]);
    expect(wrong.stderr).not.toContain("the wrong passphrase");
    const json = await run(
      ["pki", "crl", "--pki", "pki", "--out", "crl-x.pem", "--ca-passphrase-env", "CA_PASS", "--json"],
      { CA_PASS: "the wrong passphrase" },
    );
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { code: "ERR_WRONG_PASSPHRASE", exit: 13 } });
    // No CRL number was used by the refused runs.
    const next = await run(
      ["pki", "crl", "--pki", "pki", "--out", "crl.pem", "--ca-passphrase-fd", await fdWith(`${PASS}\n`)],
      {},
    );
    ok(next);
    expect(next.stdout).toContain("CRL number 3");

    const none = await run(["pki", "crl", "--pki", "pki", "--out", "crl-y.pem"], {});
    expect(none.exitCode).toBe(ExitCode.usage);
    expect(stderrLines(none)).toEqual([
      expect.stringMatching(
        /no terminal to ask the passphrase of .*--ca-passphrase-fd N or --ca-passphrase-env NAME/,
      ),
    ]);
  });

  it("pki issue-token-ca --encrypt: the root's passphrase and the new key's, one per line from --ca-passphrase-fd", async () => {
    const result = await run(
      [
        "pki",
        "issue-token-ca",
        "--pki",
        "pki",
        "--owner",
        "Owner B",
        "--out",
        "owner-b",
        "--encrypt",
        "--ca-passphrase-fd",
        await fdWith(`${PASS}\nOwner B's own passphrase\n`),
      ],
      {},
    );
    ok(result);
    expect(result.stdout).toMatch(/token-ca\.key\.pem \(encrypted\)/);
    const revokeLess = await run(
      [
        "pki",
        "crl",
        "--pki",
        "owner-b",
        "--out",
        "b.pem",
        "--ca-passphrase-fd",
        await fdWith("Owner B's own passphrase\n"),
      ],
      {},
    );
    ok(revokeLess);
  });

  it("card personalize with an encrypted token CA key asks its passphrase; a wrong one leaves the card untouched", async () => {
    const card = join(work, "card.json");
    VirtualPivCard.fromFile(card, { serial: 10_000_042 });
    const before = await readFile(card, "utf8");
    const args = [
      "card",
      "personalize",
      "--pki",
      "pki",
      "--owner",
      OWNER,
      "--pin-stdin",
      "--ca-passphrase-env",
      "CA_PASS",
    ];
    const wrong = await run(
      args,
      { CA_PASS: "the wrong passphrase", HSM_ONBOARD_VIRTUAL_CARD: card },
      "24681357\n97531864\n",
    );
    expect(wrong.exitCode).toBe(ExitCode.wrongPin);
    expect(await readFile(card, "utf8")).toBe(before);
    const right = await run(args, { CA_PASS: PASS, HSM_ONBOARD_VIRTUAL_CARD: card }, "24681357\n97531864\n");
    ok(right);
    expect(right.stderr).not.toMatch(/warning/);
  });

  it("pki encrypt-key turns a plain key into an encrypted one: the warning goes, the passphrase is asked", async () => {
    ok(await run(["pki", "init", "--out", "plain", "--owner", OWNER], {}));
    const warned = await run(["pki", "crl", "--pki", "plain", "--out", "p1.pem"], {});
    ok(warned);
    expect(stderrLines(warned)).toEqual([
      expect.stringMatching(/^pki crl: warning: .*token-ca\.key\.pem is an unencrypted private key/),
    ]);
    const encrypted = await run([
      "pki",
      "encrypt-key",
      "--key",
      "plain/token-ca.key.pem",
      "--ca-passphrase-env",
      "CA_PASS",
    ]);
    ok(encrypted);
    expect(encrypted.stdout).toMatch(/is now encrypted/);
    const again = await run([
      "pki",
      "encrypt-key",
      "--key",
      "plain/token-ca.key.pem",
      "--ca-passphrase-env",
      "CA_PASS",
    ]);
    expect(again.exitCode).toBe(ExitCode.usage);
    expect(again.stderr).toMatch(/already encrypted/);
    const signed = await run([
      "pki",
      "crl",
      "--pki",
      "plain",
      "--out",
      "p2.pem",
      "--ca-passphrase-env",
      "CA_PASS",
    ]);
    ok(signed);
    expect(signed.stderr).toBe("");
  });
});
