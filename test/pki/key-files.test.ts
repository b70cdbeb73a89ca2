/**
 * Passphrase-encrypted CA key files (issue 13): what this project writes, OpenSSL reads; what OpenSSL
 * writes (scrypt and PBKDF2), this project reads; a wrong passphrase, a legacy encrypted PEM, a weak
 * new passphrase and a plain file each behave as documented (docs/PKI.md, "CA keys").
 */
import { execFile } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ExitCode, UsageError, WrongPassphraseError } from "../../src/errors.js";
import {
  decodePrivateKeyPem,
  encryptPrivateKeyPkcs8,
  type KeyFileOptions,
  plainKeyWarning,
} from "../../src/pki/key-files.js";

const execFileAsync = promisify(execFile);
const PASSPHRASE = "correct horse battery";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "hsm-onboard-key-files-"));
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

function pkcs8Of(curve: "P-256" | "P-384"): { der: Uint8Array; spki: Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: curve });
  return {
    der: new Uint8Array(privateKey.export({ type: "pkcs8", format: "der" })),
    spki: publicKey.export({ type: "spki", format: "der" }),
  };
}

function options(passphrase = PASSPHRASE, warnings: string[] = []): KeyFileOptions & { asked: number } {
  const o = {
    asked: 0,
    passphrase: async () => {
      o.asked++;
      return passphrase;
    },
    warn: (line: string) => warnings.push(line),
  };
  return o;
}

const openssl = (args: string[], env: Record<string, string> = {}) =>
  execFileAsync("openssl", args, { cwd: work, encoding: "utf8", env: { ...process.env, ...env } });

describe("encrypted PKCS#8 key files", () => {
  it("writes PBES2 with scrypt (N=16384, r=8, p=1) and AES-256-CBC, which openssl pkey reads with the passphrase only", async () => {
    const { der, spki } = pkcs8Of("P-384");
    const pem = encryptPrivateKeyPkcs8(der, PASSPHRASE);
    expect(pem).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----\n/);
    await writeFile(join(work, "ours.pem"), pem);
    const parsed = (await openssl(["asn1parse", "-in", "ours.pem"])).stdout;
    expect(parsed).toMatch(
      /OBJECT\s+:PBES2[\s\S]*OBJECT\s+:scrypt[\s\S]*INTEGER\s+:4000\n[\s\S]*INTEGER\s+:08\n[\s\S]*INTEGER\s+:01\n[\s\S]*OBJECT\s+:aes-256-cbc/,
    );
    const pub = await openssl(
      [
        "pkey",
        "-in",
        "ours.pem",
        "-passin",
        "env:KEY_PASS",
        "-pubout",
        "-outform",
        "DER",
        "-out",
        "ours.pub.der",
      ],
      {
        KEY_PASS: PASSPHRASE,
      },
    );
    expect(pub.stderr).toBe("");
    expect(Buffer.compare(await readFile(join(work, "ours.pub.der")), spki)).toBe(0);
    await expect(
      openssl(["pkey", "-in", "ours.pem", "-passin", "env:KEY_PASS", "-noout"], {
        KEY_PASS: "wrong passphrase!",
      }),
    ).rejects.toThrow();
    // And it reads back here.
    const back = await decodePrivateKeyPem(pem, "ours.pem", options());
    expect(back).toMatchObject({ curve: "P-384", encrypted: true });
    expect(Buffer.compare(Buffer.from(back.spki), spki)).toBe(0);
  });

  it.each([
    ["scrypt", ["-scrypt"]],
    ["PBKDF2 (hmacWithSHA256, AES-256-CBC)", ["-v2", "aes-256-cbc"]],
  ])(
    "reads what openssl pkcs8 -topk8 writes with %s, asking the passphrase once and not warning",
    async (_what, flags) => {
      const { der, spki } = pkcs8Of("P-256");
      await writeFile(join(work, "plain.der"), der);
      await openssl(
        [
          "pkcs8",
          "-topk8",
          "-inform",
          "DER",
          "-in",
          "plain.der",
          ...flags,
          "-passout",
          "env:KEY_PASS",
          "-out",
          "theirs.pem",
        ],
        { KEY_PASS: PASSPHRASE },
      );
      const warnings: string[] = [];
      const o = options(PASSPHRASE, warnings);
      const loaded = await decodePrivateKeyPem(
        await readFile(join(work, "theirs.pem"), "utf8"),
        "theirs.pem",
        o,
      );
      expect(loaded).toMatchObject({ curve: "P-256", encrypted: true });
      expect(Buffer.compare(Buffer.from(loaded.spki), spki)).toBe(0);
      expect(o.asked).toBe(1);
      expect(warnings).toEqual([]);
    },
  );

  it("a wrong passphrase is WrongPassphraseError (exit 13), one line naming the file and not the passphrase", async () => {
    const pem = encryptPrivateKeyPkcs8(pkcs8Of("P-256").der, PASSPHRASE);
    const error = await decodePrivateKeyPem(
      pem,
      "/pki/token-ca.key.pem",
      options("not the passphrase"),
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WrongPassphraseError);
    expect((error as WrongPassphraseError).exitCode).toBe(ExitCode.wrongPin);
    expect((error as Error).message).toBe("/pki/token-ca.key.pem: wrong passphrase (or the file is damaged)");
  });

  it("a plain key loads with one warning per load; no passphrase is asked", async () => {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const pem = privateKey.export({ type: "pkcs8", format: "pem" }) as string;
    const warnings: string[] = [];
    const o = options(PASSPHRASE, warnings);
    await decodePrivateKeyPem(pem, "k.pem", o);
    await decodePrivateKeyPem(pem, "k.pem", o);
    expect(warnings).toEqual([plainKeyWarning("k.pem"), plainKeyWarning("k.pem")]);
    expect(warnings[0]).toMatch(/^warning: k\.pem is an unencrypted private key: .*pki encrypt-key/);
    expect(o.asked).toBe(0);
  });

  it("refuses a legacy Proc-Type encrypted PEM (one MD5 round) with the command that converts it", async () => {
    await openssl(["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", "ec.pem"]);
    const legacy = (
      await openssl(["ec", "-in", "ec.pem", "-aes-128-cbc", "-passout", "env:KEY_PASS"], {
        KEY_PASS: PASSPHRASE,
      })
    ).stdout;
    expect(legacy).toContain("Proc-Type: 4,ENCRYPTED");
    await expect(decodePrivateKeyPem(legacy, "legacy.pem", options())).rejects.toThrow(
      /legacy encrypted PEM.*openssl pkcs8 -topk8 -scrypt/,
    );
  });

  it("refuses a non-EC key and a new passphrase shorter than 12 characters", async () => {
    const { privateKey } = generateKeyPairSync("ed25519");
    await expect(
      decodePrivateKeyPem(privateKey.export({ type: "pkcs8", format: "pem" }) as string, "ed.pem", options()),
    ).rejects.toThrow(/must be ECDSA P-256 or P-384/);
    expect(() => encryptPrivateKeyPkcs8(pkcs8Of("P-256").der, "short pass")).toThrow(UsageError);
  });

  it("any bytes in an encrypted-key envelope are refused as a usage error or a wrong passphrase, nothing else (property)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 300 }), async (bytes) => {
        const body = Buffer.from(bytes).toString("base64").replace(/.{64}/g, "$&\n");
        const pem = `-----BEGIN ENCRYPTED PRIVATE KEY-----\n${body}\n-----END ENCRYPTED PRIVATE KEY-----\n`;
        const error = await decodePrivateKeyPem(pem, "fuzz.pem", options()).catch((e: unknown) => e);
        expect(error instanceof UsageError || error instanceof WrongPassphraseError).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});
