/**
 * Many owners under one root (SPEC.md §4, issue 10): `issueTokenCaToDirectory` (`pki issue-token-ca`),
 * the limits CA certificates carry (name constraints O = owner, CA-level EKU) and both validators
 * enforcing them, checked against OpenSSL where OpenSSL has an opinion (name constraints).
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { X509Certificate } from "@peculiar/x509";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateValidationError } from "../../src/errors.js";
import { isDeviceCa, isTokenCa, spkiSha256, tokenCaOwner } from "../../src/pki/ca-facts.js";
import { decodeNameConstraints } from "../../src/pki/constraints.js";
import { issueCardCertificate, issueDeviceCertificate } from "../../src/pki/issue.js";
import { generateEcKeyPair } from "../../src/pki/keys.js";
import { EKU, EXT } from "../../src/pki/oids.js";
import {
  initPkiDirectory,
  issueTokenCaToDirectory,
  type LoadedPki,
  loadPkiDirectory,
  loadTokenCaDirectory,
  PKI_FILES,
  resignCrl,
} from "../../src/pki/pki-store.js";
import { VALIDATION_REQUIREMENTS } from "../../src/pki/profiles.js";
import {
  type PathValidationOptions,
  validateChain,
  validateChainView,
} from "../../src/pki/validate-chain.js";
import { requireOrSkip } from "../helpers/pcsc-env.js";
import { cardName, forge } from "./fixtures.js";

const run = promisify(execFile);
const opensslVersion = await run("openssl", ["version"]).then(
  (r) => r.stdout.trim(),
  () => undefined,
);
/** HSM_ONBOARD_REQUIRE_ALL=1 (CI) turns a missing openssl into a failure instead of a skip. */
const opensslCap = requireOrSkip({ ok: opensslVersion !== undefined, reason: "needs the openssl command" });

async function openssl(args: string[], cwd: string): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await run("openssl", args, { cwd });
    return { code: 0, out: stdout + stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : -1, out: (e.stdout ?? "") + (e.stderr ?? "") };
  }
}

let work: string;
let manufacturer: LoadedPki;
const ownerA = { name: "Owner A", dir: "" };
const ownerB = { name: "Owner B", dir: "" };

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "hsm-onboard-token-ca-"));
  await initPkiDirectory(join(work, "manufacturer"));
  manufacturer = await loadPkiDirectory(join(work, "manufacturer"));
  for (const owner of [ownerA, ownerB]) {
    owner.dir = join(work, owner.name.replace(" ", "-"));
    await issueTokenCaToDirectory(join(work, "manufacturer"), owner.name, owner.dir);
  }
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

async function cardOf(ownerDir: string, subjectOwner: string, slot: "9E" | "9C" = "9E") {
  const { tokenCa, root } = await loadTokenCaDirectory(ownerDir);
  const keys = await generateEcKeyPair("P-256");
  const leaf = await issueCardCertificate({ tokenCa, publicKey: keys.publicKey, owner: subjectOwner, slot });
  return { leaf, tokenCa, root, keys };
}

function cardAuth(o: Pick<PathValidationOptions, "leaf" | "intermediates" | "trustAnchor">) {
  return { ...o, requireCrl: false, ...VALIDATION_REQUIREMENTS.cardAuthentication };
}

async function reason(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(CertificateValidationError);
  return (error as CertificateValidationError).reason;
}

describe("pki issue-token-ca (library)", () => {
  it("writes the owner's directory: its token CA and key, the root certificate, CRL 1 — no other key", async () => {
    const files = (await readdir(ownerA.dir)).sort();
    expect(files).toEqual(
      [
        PKI_FILES.crl,
        PKI_FILES.state,
        PKI_FILES.rootCert,
        PKI_FILES.tokenCaKey,
        PKI_FILES.tokenCaCert,
      ].sort(),
    );
    expect((await stat(join(ownerA.dir, PKI_FILES.tokenCaKey))).mode & 0o777).toBe(0o600);
    const state = JSON.parse(await readFile(join(ownerA.dir, PKI_FILES.state), "utf8"));
    expect(state).toMatchObject({ owner: "Owner A", nextCrlNumber: 2, revoked: [] });
    const loaded = await loadTokenCaDirectory(ownerA.dir);
    expect(loaded.root.certificate.equal(manufacturer.root.certificate)).toBe(true);
    // The owner's CA is not the manufacturer's own token CA, and each owner has its own key.
    const b = await loadTokenCaDirectory(ownerB.dir);
    expect(spkiSha256(loaded.tokenCa.certificate)).not.toBe(spkiSha256(b.tokenCa.certificate));
    expect(spkiSha256(loaded.tokenCa.certificate)).not.toBe(spkiSha256(manufacturer.tokenCa.certificate));
    // An owner directory is not a manufacturer directory: it cannot issue token CAs itself.
    await expect(issueTokenCaToDirectory(ownerA.dir, "Owner C", join(work, "owner-c"))).rejects.toThrow(
      /root\.key\.pem/,
    );
  });

  it("refuses to overwrite a PKI without --force, and to write into the manufacturer's directory", async () => {
    await expect(issueTokenCaToDirectory(join(work, "manufacturer"), "Owner A", ownerA.dir)).rejects.toThrow(
      /already holds a PKI/,
    );
    await expect(
      issueTokenCaToDirectory(join(work, "manufacturer"), "Owner A", join(work, "manufacturer"), {
        force: true,
      }),
    ).rejects.toThrow(/directory of its own/);
  });

  it("the token CA carries name constraints O = owner (critical) and CA-level EKU token-auth + config-signing", async () => {
    const { tokenCa } = await loadTokenCaDirectory(ownerA.dir);
    const nc = tokenCa.certificate.extensions.find((e) => e.type === EXT.nameConstraints);
    expect(nc?.critical).toBe(true);
    const decoded = decodeNameConstraints(new Uint8Array(nc!.value));
    expect(decoded.excluded).toHaveLength(0);
    expect(decoded.permitted?.map((p) => p.form)).toEqual(["directoryName"]);
    expect(tokenCaOwner(tokenCa.certificate)).toBe("Owner A");
    expect(isTokenCa(tokenCa.certificate)).toBe(true);
    expect(isDeviceCa(tokenCa.certificate)).toBe(false);
    expect(isDeviceCa(manufacturer.deviceCa.certificate)).toBe(true);
    expect(isTokenCa(manufacturer.deviceCa.certificate)).toBe(false);
    expect(isDeviceCa(manufacturer.root.certificate)).toBe(false);
    expect(isTokenCa(manufacturer.root.certificate)).toBe(false);
    // `pki init` writes its token CA the same way (O = the manufacturer here: no --owner).
    expect(tokenCaOwner(manufacturer.tokenCa.certificate)).toBe("hsm-onboard Manufacturer");
    expect(isTokenCa(manufacturer.tokenCa.certificate)).toBe(true);
  });

  it("spkiSha256 is the SHA-256 of the SubjectPublicKeyInfo DER (the bytes @peculiar/x509 gives as the public key)", async () => {
    const { tokenCa } = await loadTokenCaDirectory(ownerA.dir);
    const expected = createHash("sha256")
      .update(new Uint8Array(tokenCa.certificate.publicKey.rawData))
      .digest("hex");
    expect(spkiSha256(tokenCa.certificate)).toBe(expected);
    expect(spkiSha256(new Uint8Array(tokenCa.certificate.rawData))).toBe(expected);
  });

  it("revoke and crl work on an owner's directory (no root key needed)", async () => {
    const { crl, state } = await resignCrl(ownerB.dir);
    expect(state.nextCrlNumber).toBe(3);
    expect(crl.issuer).toContain("Owner B");
  });
});

describe("both validators enforce the CA limits (library and fast path)", () => {
  const validators = [
    ["validateChain", validateChain],
    ["validateChainView", validateChainView],
  ] as const;

  for (const [name, validate] of validators) {
    it(`${name}: owner B's token CA cannot speak for owner A (name-constraints), but for owner B`, async () => {
      const forged = await cardOf(ownerB.dir, "Owner A");
      const chain = {
        leaf: new Uint8Array(forged.leaf.rawData),
        intermediates: [new Uint8Array(forged.tokenCa.certificate.rawData)],
        trustAnchor: new Uint8Array(forged.root.certificate.rawData),
      };
      expect(await reason(validate(cardAuth(chain)))).toBe("name-constraints");
      const genuine = await cardOf(ownerB.dir, "Owner B", "9C");
      await expect(
        validate({
          ...chain,
          leaf: new Uint8Array(genuine.leaf.rawData),
          requireCrl: false,
          ...VALIDATION_REQUIREMENTS.configSigning,
        }),
      ).resolves.toMatchObject({ owner: "Owner B" });
    });

    it(`${name}: a token CA cannot make a device certificate, nor a device CA a card certificate (CA-level EKU)`, async () => {
      const { tokenCa, root } = await loadTokenCaDirectory(ownerA.dir);
      const keys = await generateEcKeyPair("P-256");
      // A "device" certificate by owner A's token CA (within its name constraints: O = Owner A).
      const device = await forge({
        subject: cardName("Owner A", "1234567"),
        issuer: tokenCa,
        publicKey: keys.publicKey,
        eku: [EKU.deviceReceipt],
        notBefore: new Date(Date.now() - 86_400_000),
        notAfter: new Date(Date.now() + 86_400_000),
      });
      const asDevice = validate({
        leaf: new Uint8Array(device.rawData),
        intermediates: [new Uint8Array(tokenCa.certificate.rawData)],
        trustAnchor: new Uint8Array(root.certificate.rawData),
        requireCrl: false,
        ...VALIDATION_REQUIREMENTS.deviceReceipt,
      });
      const error = await asDevice.catch((e: unknown) => e as CertificateValidationError);
      expect(error).toBeInstanceOf(CertificateValidationError);
      expect((error as CertificateValidationError).reason).toBe("eku");
      expect((error as Error).message).toContain("outside what its issuer");

      const card = await issueCardCertificate({
        tokenCa: manufacturer.deviceCa, // the wrong CA, on purpose
        publicKey: keys.publicKey,
        owner: "hsm-onboard Manufacturer",
        slot: "9E",
      });
      expect(
        await reason(
          validate({
            leaf: new Uint8Array(card.rawData),
            intermediates: [new Uint8Array(manufacturer.deviceCa.certificate.rawData)],
            trustAnchor: new Uint8Array(manufacturer.root.certificate.rawData),
            requireCrl: false,
            requiredEku: EKU.tokenAuth,
          }),
        ),
      ).toBe("eku");

      // The genuine device certificate under the device CA passes.
      const genuine = await issueDeviceCertificate({
        deviceCa: manufacturer.deviceCa,
        publicKey: keys.publicKey,
        serial: "7654321",
      });
      await expect(
        validate({
          leaf: new Uint8Array(genuine.rawData),
          intermediates: [new Uint8Array(manufacturer.deviceCa.certificate.rawData)],
          trustAnchor: new Uint8Array(manufacturer.root.certificate.rawData),
          requireCrl: false,
          ...VALIDATION_REQUIREMENTS.deviceReceipt,
        }),
      ).resolves.toMatchObject({ subjectSerialNumber: "7654321" });
    });
  }
});

describe.skipIf(!opensslCap.ok)(
  `OpenSSL agrees on the name constraints (${opensslVersion ?? "no openssl"})`,
  () => {
    it("openssl verify accepts owner B's genuine card and refuses the one naming owner A (permitted subtree violation)", async () => {
      const dir = await mkdtemp(join(work, "openssl-"));
      const genuine = await cardOf(ownerB.dir, "Owner B");
      const forged = await cardOf(ownerB.dir, "Owner A");
      const pem = (c: X509Certificate) => `${c.toString("pem")}\n`;
      await writeFile(join(dir, "root.pem"), pem(genuine.root.certificate));
      await writeFile(join(dir, "token-ca.pem"), pem(genuine.tokenCa.certificate));
      await writeFile(join(dir, "genuine.pem"), pem(genuine.leaf));
      await writeFile(join(dir, "forged.pem"), pem(forged.leaf));
      const verify = (leaf: string) =>
        openssl(["verify", "-x509_strict", "-CAfile", "root.pem", "-untrusted", "token-ca.pem", leaf], dir);
      const ok = await verify("genuine.pem");
      expect(ok.out.trim()).toBe("genuine.pem: OK");
      const refused = await verify("forged.pem");
      expect(refused.code).not.toBe(0);
      expect(refused.out).toContain("permitted subtree violation");
      // OpenSSL reads the constraint as the project wrote it.
      const text = await openssl(["x509", "-in", "token-ca.pem", "-noout", "-ext", "nameConstraints"], dir);
      expect(text.out).toMatch(/critical/);
      expect(text.out).toMatch(/Permitted:\s+DirName:\s*O\s*=\s*Owner B/);
    });
  },
);
