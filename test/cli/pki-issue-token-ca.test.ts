/**
 * `hsm-onboard pki issue-token-ca` in-process, and the owner's directory it writes in use: `card
 * personalize --pki OWNER-DIR` (virtual card), `pki revoke` and `pki crl` on it.
 */
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { X509Certificate } from "@peculiar/x509";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { ExitCode } from "../../src/errors.js";
import { spkiSha256, tokenCaOwner } from "../../src/pki/ca-facts.js";
import { VALIDATION_REQUIREMENTS } from "../../src/pki/profiles.js";
import { validateChain } from "../../src/pki/validate-chain.js";
import { outputLines, runCliInProcess } from "../helpers/cli.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "hsm-onboard-cli-token-ca-"));
  const init = await runCliInProcess(["pki", "init", "--out", "maker"], { cwd: work });
  expect(init.exitCode, init.stderr).toBe(0);
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("hsm-onboard pki issue-token-ca", () => {
  it("issues an owner's token CA into a directory of its own and prints its SPKI SHA-256", async () => {
    const result = await runCliInProcess(
      ["pki", "issue-token-ca", "--pki", "maker", "--owner", "Owner A", "--out", "owner-a"],
      { cwd: work },
    );
    expect(result.exitCode, result.stderr).toBe(0);
    expect(outputLines(result.stdout)).toHaveLength(1);
    const tokenCa = new X509Certificate(await readFile(join(work, "owner-a", "token-ca.pem"), "utf8"));
    expect(result.stdout).toContain(`token CA for "Owner A"`);
    expect(result.stdout).toContain(spkiSha256(tokenCa));
    expect(tokenCaOwner(tokenCa)).toBe("Owner A");
    expect((await readdir(join(work, "owner-a"))).filter((f) => f.endsWith(".key.pem"))).toEqual([
      "token-ca.key.pem",
    ]);

    const json = await runCliInProcess(
      ["pki", "issue-token-ca", "--pki", "maker", "--owner", "Owner B", "--out", "owner-b", "--json"],
      { cwd: work },
    );
    expect(json.exitCode, json.stderr).toBe(0);
    const parsed = JSON.parse(json.stdout) as {
      owner: string;
      tokenCa: { spkiSha256: string };
      crl: { crlNumber: number };
    };
    expect(parsed).toMatchObject({ owner: "Owner B", crl: { crlNumber: 1 } });
    expect(parsed.tokenCa.spkiSha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it("usage errors: a missing --owner (2), an owner directory as --pki (no root key)", async () => {
    const missing = await runCliInProcess(["pki", "issue-token-ca", "--pki", "maker", "--out", "x"], {
      cwd: work,
    });
    expect(missing.exitCode).toBe(ExitCode.usage);
    const fromOwner = await runCliInProcess(
      ["pki", "issue-token-ca", "--pki", "owner-a", "--owner", "Owner C", "--out", "owner-c"],
      { cwd: work },
    );
    expect(fromOwner.exitCode).toBe(ExitCode.usage);
    expect(fromOwner.stderr).toContain("root.key.pem");
  });

  it("card personalize --pki OWNER-DIR: the card's certificates chain to the root under owner A's token CA", async () => {
    VirtualPivCard.fromFile(join(work, "card-a.json"), { serial: 31_000_001 });
    const result = await runCliInProcess(
      [
        "card",
        "personalize",
        "--pki",
        "owner-a",
        "--owner",
        "Owner A",
        "--officer",
        "Alice",
        "--pin-stdin",
        "--json",
      ],
      { cwd: work, env: { HSM_ONBOARD_VIRTUAL_CARD: "card-a.json" }, stdin: "24681357\n97531864\n" },
    );
    expect(result.exitCode, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout) as {
      certificates: Record<string, { pem?: string; subject: string }>;
    };
    expect(JSON.stringify(out)).toContain("O=Owner A");

    // The other owner's name is refused before the card is touched.
    VirtualPivCard.fromFile(join(work, "card-x.json"), { serial: 31_000_002 });
    const foreign = await runCliInProcess(
      [
        "card",
        "personalize",
        "--pki",
        "owner-b",
        "--owner",
        "Owner A",
        "--officer",
        "Mallory",
        "--pin-stdin",
      ],
      { cwd: work, env: { HSM_ONBOARD_VIRTUAL_CARD: "card-x.json" }, stdin: "24681357\n97531864\n" },
    );
    expect(foreign.exitCode).toBe(ExitCode.usage);
    expect(foreign.stderr).toContain("Owner B");
  });

  it("pki revoke and pki crl work on the owner's directory", async () => {
    const cert = join(work, "owner-a", "leaf.pem");
    const { issueCardCertificate } = await import("../../src/pki/issue.js");
    const { loadTokenCaDirectory } = await import("../../src/pki/pki-store.js");
    const { generateEcKeyPair } = await import("../../src/pki/keys.js");
    const { writeFile } = await import("node:fs/promises");
    const owner = await loadTokenCaDirectory(join(work, "owner-a"));
    const leaf = await issueCardCertificate({
      tokenCa: owner.tokenCa,
      publicKey: (await generateEcKeyPair("P-256")).publicKey,
      owner: "Owner A",
      slot: "9E",
    });
    await writeFile(cert, leaf.toString("pem"));
    const revoked = await runCliInProcess(["pki", "revoke", "--pki", "owner-a", "--cert", cert], {
      cwd: work,
    });
    expect(revoked.exitCode, revoked.stderr).toBe(0);
    expect(revoked.stdout).toContain("CRL number 2");
    const crl = await runCliInProcess(["pki", "crl", "--pki", "owner-a", "--out", "owner-a.crl"], {
      cwd: work,
    });
    expect(crl.exitCode, crl.stderr).toBe(0);
    // The revoked leaf is refused by the CRL the owner signed.
    await expect(
      validateChain({
        leaf,
        intermediates: [owner.tokenCa.certificate],
        trustAnchor: owner.root.certificate,
        crls: [await readFile(join(work, "owner-a", "token-ca.crl.pem"), "utf8")],
        ...VALIDATION_REQUIREMENTS.cardAuthentication,
      }),
    ).rejects.toThrow(/revoked/);
  });
});

describe("card personalize and a token CA's name constraints", () => {
  it("a PKI made without --owner certifies only its own O (the manufacturer): another owner is refused", async () => {
    VirtualPivCard.fromFile(join(work, "card-m.json"), { serial: 31_000_003 });
    const result = await runCliInProcess(
      ["card", "personalize", "--pki", "maker", "--owner", "ACME Bank", "--officer", "Alice", "--pin-stdin"],
      { cwd: work, env: { HSM_ONBOARD_VIRTUAL_CARD: "card-m.json" }, stdin: "24681357\n97531864\n" },
    );
    expect(result.exitCode).toBe(ExitCode.usage);
    expect(result.stderr).toContain("pki issue-token-ca");
  });
});
