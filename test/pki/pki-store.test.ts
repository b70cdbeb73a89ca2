import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { X509Crl } from "@peculiar/x509";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import { crlNumberOf } from "../../src/pki/crl.js";
import { issueCardCertificate } from "../../src/pki/issue.js";
import { generateEcKeyPair } from "../../src/pki/keys.js";
import {
  initPkiDirectory,
  loadPkiDirectory,
  PKI_FILES,
  resignCrl,
  revokeInPki,
  withPkiLock,
} from "../../src/pki/pki-store.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "hsm-onboard-pki-store-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("PKI directory", () => {
  it("round-trips: what init writes, load reads back, keys included", async () => {
    const dir = join(work, "round-trip");
    const { pki } = await initPkiDirectory(dir, { owner: "ACME Bank" });
    const loaded = await loadPkiDirectory(dir);
    expect(loaded.root.certificate.equal(pki.root.certificate)).toBe(true);
    expect(loaded.state).toMatchObject({ owner: "ACME Bank", nextCrlNumber: 2 });
    // The loaded token CA key still signs for the token CA.
    const keys = await generateEcKeyPair("P-256");
    const card = await issueCardCertificate({
      tokenCa: loaded.tokenCa,
      publicKey: keys.publicKey,
      owner: "ACME Bank",
      slot: "9E",
    });
    expect(await card.verify({ publicKey: pki.tokenCa.certificate.publicKey, signatureOnly: true })).toBe(
      true,
    );
  });

  it("refuses to initialise over an existing PKI unless forced", async () => {
    const dir = join(work, "twice");
    await initPkiDirectory(dir);
    await expect(initPkiDirectory(dir)).rejects.toThrow(UsageError);
    await expect(initPkiDirectory(dir, { force: true })).resolves.toBeDefined();
  });

  it("numbers CRLs 1, 2, 3… across revoke and re-sign, never reusing one", async () => {
    const dir = join(work, "numbers");
    await initPkiDirectory(dir);
    const pki = await loadPkiDirectory(dir);
    const keys = await generateEcKeyPair("P-256");
    const card = await issueCardCertificate({
      tokenCa: pki.tokenCa,
      publicKey: keys.publicKey,
      owner: "ACME",
      slot: "9C",
    });
    const certFile = join(work, "numbers-card.pem");
    await writeFile(certFile, card.toString("pem"));

    const revoked = await revokeInPki(dir, certFile, "superseded");
    expect(crlNumberOf(revoked.crl!)).toBe(2n);
    expect((await resignCrl(dir)).crl).toSatisfy((crl: X509Crl) => crlNumberOf(crl) === 3n);
    const again = await revokeInPki(dir, certFile, "keyCompromise");
    expect(again).toMatchObject({ alreadyRevoked: true, record: { reason: "superseded" } });
    const { crl, state } = await resignCrl(dir, { validityDays: 3 });
    expect(crlNumberOf(crl)).toBe(4n);
    expect(state).toMatchObject({ nextCrlNumber: 5, crlValidityDays: 3 });
    expect(crl.entries.map((e) => e.serialNumber)).toEqual([card.serialNumber]);
    const onDisk = new X509Crl(await readFile(join(dir, PKI_FILES.crl), "utf8"));
    expect(onDisk.equal(crl)).toBe(true);
  });

  it("holds a lock so two CRL updates cannot interleave", async () => {
    const dir = join(work, "locked");
    await initPkiDirectory(dir);
    await withPkiLock(dir, async () => {
      await expect(resignCrl(dir)).rejects.toThrow(/locked by another pki command/);
    });
    await expect(resignCrl(dir)).resolves.toBeDefined();
  });

  it("reports a damaged state file as a usage error naming the problem", async () => {
    const dir = join(work, "damaged");
    await initPkiDirectory(dir);
    await writeFile(join(dir, PKI_FILES.state), JSON.stringify({ version: 1, nextCrlNumber: -1 }));
    await expect(loadPkiDirectory(dir)).rejects.toThrow(UsageError);
    await writeFile(join(dir, PKI_FILES.state), "{");
    await expect(loadPkiDirectory(dir)).rejects.toThrow(/not valid JSON/);
  });
});
