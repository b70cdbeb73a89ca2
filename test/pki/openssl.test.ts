import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { KeyUsageFlags, Name, type X509Certificate } from "@peculiar/x509";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateRevokedError, CertificateValidationError } from "../../src/errors.js";
import { encodeCrl } from "../../src/pki/crl.js";
import { issueCardCertificate } from "../../src/pki/issue.js";
import { generateEcKeyPair } from "../../src/pki/keys.js";
import { EKU, ONBOARDING_ARC } from "../../src/pki/oids.js";
import {
  initPkiDirectory,
  issueDeviceToDirectory,
  type LoadedPki,
  loadPkiDirectory,
  PKI_FILES,
  revokeInPki,
} from "../../src/pki/pki-store.js";
import { caSubject, VALIDATION_REQUIREMENTS } from "../../src/pki/profiles.js";
import { validateChain } from "../../src/pki/validate-chain.js";
import { requireOrSkipReason } from "../helpers/pcsc-env.js";
import { cardName, forge, forgeCa } from "./fixtures.js";

/**
 * Cross-checks against OpenSSL, an independent implementation: it must accept what this project issues,
 * reject what it revokes, read its CRLs, and agree on expiry. And this project must accept a chain and a
 * CRL that OpenSSL built.
 */

const run = promisify(execFile);

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function openssl(args: string[], cwd: string): Promise<Result> {
  try {
    const { stdout, stderr } = await run("openssl", args, { cwd });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

const opensslVersion = await run("openssl", ["version"]).then(
  (r) => r.stdout.trim(),
  () => undefined,
);
requireOrSkipReason(opensslVersion ? undefined : "the openssl command is not on PATH");

const DAY = 86_400_000;

describe.skipIf(!opensslVersion)(
  `OpenSSL cross-checks (${opensslVersion ?? "skipped: the openssl command is not on PATH"})`,
  () => {
    let dir: string;
    let pkiDir: string;
    let pki: LoadedPki;
    let card9e: X509Certificate;
    let card9c: X509Certificate;

    async function writePem(name: string, cert: X509Certificate): Promise<string> {
      await writeFile(join(dir, name), `${cert.toString("pem")}\n`);
      return name;
    }

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "hsm-onboard-openssl-"));
      pkiDir = join(dir, "pki");
      await initPkiDirectory(pkiDir, { owner: "ACME Bank" });
      pki = await loadPkiDirectory(pkiDir);
      for (const file of [PKI_FILES.rootCert, PKI_FILES.tokenCaCert, PKI_FILES.deviceCaCert]) {
        await writeFile(join(dir, file), await readFile(join(pkiDir, file)));
      }
      const keys = await generateEcKeyPair("P-256");
      const card = { tokenCa: pki.tokenCa, publicKey: keys.publicKey, owner: "ACME Bank", officer: "Alice" };
      card9e = await issueCardCertificate({ ...card, slot: "9E" });
      card9c = await issueCardCertificate({ ...card, slot: "9C" });
      await writePem("card-9e.pem", card9e);
      await writePem("card-9c.pem", card9c);
      await issueDeviceToDirectory(pkiDir, join(dir, "device"), "1234567");
    });

    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it("openssl verify accepts the 9E and 9C card certificates (also with -x509_strict)", async () => {
      for (const card of ["card-9e.pem", "card-9c.pem"]) {
        for (const strict of [[], ["-x509_strict"]]) {
          const result = await openssl(
            ["verify", ...strict, "-CAfile", "root.pem", "-untrusted", "token-ca.pem", card],
            dir,
          );
          expect(result.stdout.trim(), result.stderr).toBe(`${card}: OK`);
          expect(result.code).toBe(0);
        }
      }
    });

    it("openssl verify accepts the device certificate, and its key file belongs to it", async () => {
      const result = await openssl(
        ["verify", "-x509_strict", "-CAfile", "root.pem", "-untrusted", "device-ca.pem", "device/device.pem"],
        dir,
      );
      expect(result.stdout.trim(), result.stderr).toBe("device/device.pem: OK");
      const fromKey = await openssl(["pkey", "-in", "device/device.key.pem", "-pubout"], dir);
      const fromCert = await openssl(["x509", "-in", "device/device.pem", "-noout", "-pubkey"], dir);
      expect(fromKey.code).toBe(0);
      expect(fromKey.stdout).toBe(fromCert.stdout);
      // chain.pem is exactly what openssl needs above device.pem (device CA untrusted, root trusted).
      const chain = await openssl(
        ["verify", "-CAfile", "root.pem", "-untrusted", "device/chain.pem", "device/device.pem"],
        dir,
      );
      expect(chain.code).toBe(0);
    });

    it("openssl reads the onboarding EKUs with their 2.25 arcs, and the subject owner/officer", async () => {
      const text = (await openssl(["x509", "-in", "card-9e.pem", "-noout", "-text"], dir)).stdout;
      expect(text).toContain(`${ONBOARDING_ARC}.1`);
      expect(text).toMatch(/Subject: O = ACME Bank, CN = Alice/);
      expect(text).toMatch(/Key Usage: critical\s+Digital Signature\n/);
      const signing = (await openssl(["x509", "-in", "card-9c.pem", "-noout", "-text"], dir)).stdout;
      expect(signing).toContain(EKU.configSigning);
      expect(signing).toMatch(/Digital Signature, Non Repudiation/);
    });

    it("after pki revoke, openssl verify -crl_check rejects the revoked card and accepts the other", async () => {
      const { crl } = await revokeInPki(pkiDir, join(dir, "card-9e.pem"), "keyCompromise");
      await writeFile(join(dir, "token-ca.crl.pem"), await readFile(join(pkiDir, PKI_FILES.crl)));
      const base = [
        "verify",
        "-crl_check",
        "-CAfile",
        "root.pem",
        "-untrusted",
        "token-ca.pem",
        "-CRLfile",
        "token-ca.crl.pem",
      ];
      const revoked = await openssl([...base, "card-9e.pem"], dir);
      expect(revoked.code).not.toBe(0);
      expect(revoked.stdout + revoked.stderr).toContain("certificate revoked");
      const fine = await openssl([...base, "card-9c.pem"], dir);
      expect(fine.stdout.trim(), fine.stderr).toBe("card-9c.pem: OK");

      // The project agrees.
      const error = await validateChain({
        leaf: card9e,
        intermediates: [pki.tokenCa.certificate],
        trustAnchor: pki.root.certificate,
        crls: [crl!],
        ...VALIDATION_REQUIREMENTS.cardAuthentication,
      }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(CertificateRevokedError);
    });

    it("openssl crl reads the CRL number and the revoked serial, in PEM and in DER", async () => {
      const serial = card9e.serialNumber.toUpperCase();
      const pem = await openssl(["crl", "-in", join("pki", PKI_FILES.crl), "-noout", "-text"], dir);
      expect(pem.code, pem.stderr).toBe(0);
      expect(pem.stdout).toMatch(/X509v3 CRL Number:\s*\n\s*2\n/);
      expect(pem.stdout).toContain(`Serial Number: ${serial}`);
      expect(pem.stdout).toMatch(/Key Compromise/);
      expect(pem.stdout).toMatch(/Next Update: /);
      const crlNumber = await openssl(
        ["crl", "-in", join("pki", PKI_FILES.crl), "-noout", "-crlnumber"],
        dir,
      );
      expect(crlNumber.stdout.trim()).toBe("crlNumber=0x02");

      const { X509Crl } = await import("@peculiar/x509");
      const crl = new X509Crl(await readFile(join(pkiDir, PKI_FILES.crl), "utf8"));
      await writeFile(join(dir, "token-ca.crl"), encodeCrl(crl, "der"));
      const der = await openssl(["crl", "-inform", "DER", "-in", "token-ca.crl", "-noout", "-text"], dir);
      expect(der.code, der.stderr).toBe(0);
      expect(der.stdout).toContain(`Serial Number: ${serial}`);
      // openssl verifies the CRL's signature with the token CA's key.
      const signed = await openssl(
        ["crl", "-in", join("pki", PKI_FILES.crl), "-noout", "-CAfile", "token-ca.pem"],
        dir,
      );
      expect(signed.stderr + signed.stdout).toContain("verify OK");
    });

    it("an expired card certificate: the project says expired, and openssl verify says certificate has expired", async () => {
      const keys = await generateEcKeyPair("P-256");
      const now = Date.now();
      const expired = await issueCardCertificate({
        tokenCa: pki.tokenCa,
        publicKey: keys.publicKey,
        owner: "ACME Bank",
        slot: "9E",
        notBefore: new Date(now - 400 * DAY),
        notAfter: new Date(now - DAY),
      });
      await writePem("expired.pem", expired);
      const error = await validateChain({
        leaf: expired,
        intermediates: [pki.tokenCa.certificate],
        trustAnchor: pki.root.certificate,
        requireCrl: false,
        ...VALIDATION_REQUIREMENTS.cardAuthentication,
      }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(CertificateValidationError);
      expect((error as CertificateValidationError).reason).toBe("expired");
      const result = await openssl(
        ["verify", "-CAfile", "root.pem", "-untrusted", "token-ca.pem", "expired.pem"],
        dir,
      );
      expect(result.code).not.toBe(0);
      expect(result.stdout + result.stderr).toContain("certificate has expired");
    });

    it("a card certificate with the wrong key usage: the project rejects it with key-usage, openssl agrees", async () => {
      // emailProtection is added so OpenSSL's S/MIME signing purpose, whose key-usage rule is
      // digitalSignature or nonRepudiation, judges the key usage alone; a twin with the right key usage
      // passes both.
      const emailProtection = "1.3.6.1.5.5.7.3.4";
      // OpenSSL's S/MIME purpose also requires every CA's EKU to allow emailProtection, which the
      // project's token CA (token-auth, config-signing) does not: these leaves come from a token CA
      // of the same owner without a CA-level EKU (forged; the project always writes one).
      const looseCa = await forgeCa(new Name(caSubject("Loose Token CA", "ACME Bank")), pki.root, {
        pathLength: 0,
        notBefore: new Date(Date.now() - DAY),
        notAfter: new Date(Date.now() + 2 * DAY),
      });
      await writePem("loose-ca.pem", looseCa.certificate);
      const keys = await generateEcKeyPair("P-256");
      const make = (keyUsage: KeyUsageFlags, cn: string) =>
        forge({
          subject: cardName("ACME Bank", cn),
          issuer: looseCa,
          publicKey: keys.publicKey,
          keyUsage,
          eku: [EKU.tokenAuth, emailProtection],
          notBefore: new Date(Date.now() - DAY),
          notAfter: new Date(Date.now() + DAY),
        });
      const project = (leaf: X509Certificate) =>
        validateChain({
          leaf,
          intermediates: [looseCa.certificate],
          trustAnchor: pki.root.certificate,
          requireCrl: false,
          ...VALIDATION_REQUIREMENTS.cardAuthentication,
        });
      const smime = (file: string) =>
        openssl(
          ["verify", "-purpose", "smimesign", "-CAfile", "root.pem", "-untrusted", "loose-ca.pem", file],
          dir,
        );

      const wrong = await make(KeyUsageFlags.keyAgreement, "Mallory");
      await writePem("wrong-ku.pem", wrong);
      const error = await project(wrong).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(CertificateValidationError);
      expect((error as CertificateValidationError).reason).toBe("key-usage");
      const rejected = await smime("wrong-ku.pem");
      expect(rejected.code).not.toBe(0);
      expect(rejected.stdout + rejected.stderr).toContain("unsuitable certificate purpose");

      const right = await make(KeyUsageFlags.digitalSignature, "Trent");
      await writePem("right-ku.pem", right);
      await expect(project(right)).resolves.toMatchObject({ officer: "Trent" });
      expect((await smime("right-ku.pem")).stdout.trim()).toBe("right-ku.pem: OK");
    });

    it("the project validates a chain and a CRL that OpenSSL built (foreign encodings)", async () => {
      const ext = (lines: string[]) => `${lines.join("\n")}\n`;
      await writeFile(
        join(dir, "ca.ext"),
        ext([
          "basicConstraints=critical,CA:TRUE,pathlen:0",
          "keyUsage=critical,keyCertSign,cRLSign",
          "subjectKeyIdentifier=hash",
          "authorityKeyIdentifier=keyid",
        ]),
      );
      await writeFile(
        join(dir, "leaf.ext"),
        ext([
          "basicConstraints=critical,CA:FALSE",
          "keyUsage=critical,digitalSignature",
          `extendedKeyUsage=${EKU.tokenAuth},${EKU.pivCardAuth}`,
          "subjectKeyIdentifier=hash",
          "authorityKeyIdentifier=keyid",
        ]),
      );
      const steps: string[][] = [
        [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:P-384",
          "-nodes",
          "-keyout",
          "o-root.key",
          "-subj",
          "/C=DE/O=OpenSSL Maker/CN=OpenSSL Root",
          "-days",
          "30",
          "-addext",
          "basicConstraints=critical,CA:TRUE",
          "-addext",
          "keyUsage=critical,keyCertSign,cRLSign",
          "-out",
          "o-root.pem",
        ],
        [
          "req",
          "-new",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:P-384",
          "-nodes",
          "-keyout",
          "o-ca.key",
          "-subj",
          "/C=DE/O=ACME Bank/CN=OpenSSL Token CA",
          "-out",
          "o-ca.csr",
        ],
        [
          "x509",
          "-req",
          "-in",
          "o-ca.csr",
          "-CA",
          "o-root.pem",
          "-CAkey",
          "o-root.key",
          "-CAcreateserial",
          "-days",
          "20",
          "-sha384",
          "-extfile",
          "ca.ext",
          "-out",
          "o-ca.pem",
        ],
        [
          "req",
          "-new",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:P-256",
          "-nodes",
          "-keyout",
          "o-leaf.key",
          "-subj",
          "/O=ACME Bank/CN=Bob",
          "-out",
          "o-leaf.csr",
        ],
        [
          "x509",
          "-req",
          "-in",
          "o-leaf.csr",
          "-CA",
          "o-ca.pem",
          "-CAkey",
          "o-ca.key",
          "-CAcreateserial",
          "-days",
          "10",
          "-sha384",
          "-extfile",
          "leaf.ext",
          "-out",
          "o-leaf.pem",
        ],
      ];
      for (const step of steps) {
        const r = await openssl(step, dir);
        expect(r.code, `openssl ${step.join(" ")}: ${r.stderr}`).toBe(0);
      }
      await writeFile(
        join(dir, "o-ca.cnf"),
        ext([
          "[ ca ]",
          "default_ca = d",
          "[ d ]",
          "database = o-index.txt",
          "crlnumber = o-crlnumber",
          "default_md = sha384",
          "default_crl_days = 7",
        ]),
      );
      await writeFile(join(dir, "o-index.txt"), "");
      await writeFile(join(dir, "o-crlnumber"), "2A\n");
      const crl = await openssl(
        [
          "ca",
          "-config",
          "o-ca.cnf",
          "-gencrl",
          "-keyfile",
          "o-ca.key",
          "-cert",
          "o-ca.pem",
          "-out",
          "o-ca.crl.pem",
        ],
        dir,
      );
      expect(crl.code, crl.stderr).toBe(0);

      const read = (f: string) => readFile(join(dir, f), "utf8");
      const result = await validateChain({
        leaf: await read("o-leaf.pem"),
        intermediates: [await read("o-ca.pem")],
        trustAnchor: await read("o-root.pem"),
        crls: [await read("o-ca.crl.pem")],
        crlNumberFloor: 0x2a,
        ...VALIDATION_REQUIREMENTS.cardAuthentication,
      });
      expect(result).toMatchObject({ owner: "ACME Bank", officer: "Bob", crlNumber: 0x2an });
    });
  },
);
