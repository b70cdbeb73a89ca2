/**
 * The PKCS#11 layer against SoftHSM2, cross-checked with OpenSC's pkcs11-tool: what the project
 * writes (keys, certificates, data objects) is what another PKCS#11 application sees, and a key the
 * project generated signs through pkcs11-tool with signatures node:crypto verifies.
 */
import { execFile } from "node:child_process";
import { createHash, createPublicKey, verify as nodeVerify, X509Certificate } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ecdsaDerToRaw } from "../../src/crypto/ecdsa.js";
import { NoCardError, WrongPinError } from "../../src/errors.js";
import { defaultModuleRegistry } from "../../src/pkcs11/module.js";
import { PENDING_SUFFIX, Pkcs11Token } from "../../src/pkcs11/pkcs11-token.js";
import { createPki, type OnboardingPki } from "../../src/pki/issue.js";
import { requireOrSkipReason } from "../helpers/pcsc-env.js";
import {
  createSoftHsmToken,
  pkcs11ToolUnavailableReason,
  type SoftHsmToken,
  softHsmUnavailableReason,
} from "../helpers/softhsm.js";
import { issueIdentityCertificates } from "../secure-element/identity.js";

const execFileAsync = promisify(execFile);
const skip = requireOrSkipReason(softHsmUnavailableReason());
const noTool = requireOrSkipReason(pkcs11ToolUnavailableReason());

/** The uncompressed point inside an EC SubjectPublicKeyInfo, as hex. */
function pointHex(spki: Uint8Array): string {
  const jwk = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" }).export({
    format: "jwk",
  });
  return `04${Buffer.from(jwk.x!, "base64url").toString("hex")}${Buffer.from(jwk.y!, "base64url").toString("hex")}`;
}

/** pkcs11-tool -O output, one block per object. */
function objectBlocks(listing: string): string[] {
  return listing.split(/\n(?=\S)/).filter((b) => b.trim().length > 0);
}

describe.skipIf(skip !== undefined)("Pkcs11Token on SoftHSM2", () => {
  let hsm: SoftHsmToken;
  let token: Pkcs11Token;

  beforeEach(async () => {
    hsm = await createSoftHsmToken();
    token = await Pkcs11Token.open({ modulePath: hsm.modulePath, tokenLabel: hsm.label });
  });
  afterEach(async () => {
    token?.close();
    expect(defaultModuleRegistry.activeLeases(hsm.modulePath)).toBe(0);
    await hsm?.dispose();
  });

  it("finds its token by label after another token is initialised and slots are renumbered", async () => {
    const serial = token.description.serialNumber;
    token.close();
    // A second token in the same configuration: SoftHSM2 assigns fresh slot ids.
    await execFileAsync(
      "softhsm2-util",
      ["--init-token", "--free", "--label", "second", "--pin", "111111", "--so-pin", "22222222"],
      { env: hsm.env },
    );
    token = await Pkcs11Token.open({ modulePath: hsm.modulePath, tokenLabel: hsm.label });
    expect(token.description.serialNumber).toBe(serial);
    const second = await Pkcs11Token.open({ modulePath: hsm.modulePath, tokenLabel: "second" });
    expect(second.description.serialNumber).not.toBe(serial);
    second.close();
    const bySerial = await Pkcs11Token.open({ modulePath: hsm.modulePath, tokenSerial: serial });
    expect(bySerial.description.label).toBe(hsm.label);
    bySerial.close();
    await expect(Pkcs11Token.open({ modulePath: hsm.modulePath, tokenLabel: "absent" })).rejects.toThrow(
      NoCardError,
    );
  });

  it("logs in; a wrong PIN is WrongPinError with tries unknown, and SoftHSM2 only raises COUNT_LOW", () => {
    expect(token.loggedIn).toBe(false);
    expect(() => token.login("000000")).toThrow(WrongPinError);
    expect(token.pinStatus()).toEqual({
      triesLeft: -1,
      locked: false,
      finalTry: false,
      countLow: true,
      mustChange: false,
    });
    token.login(hsm.userPin);
    expect(token.loggedIn).toBe(true);
    expect(token.pinStatus().countLow).toBe(false);
    // Logging in again checks the PIN again (an existing login is dropped first).
    expect(() => token.login("000000")).toThrow(WrongPinError);
    expect(token.loggedIn).toBe(false);
    token.login(hsm.userPin);
    token.logout();
    expect(token.loggedIn).toBe(false);
  });

  it("generates sign-only, sensitive, never-extractable keys that pkcs11-tool lists", async (ctx) => {
    token.login(hsm.userPin);
    const p256 = token.generateEcKeyPair({ label: "k256", id: Uint8Array.of(0x11), curve: "P-256" });
    const p384 = token.generateEcKeyPair({
      label: "k384",
      id: Uint8Array.of(0x12),
      curve: "P-384",
      requireLogin: false,
    });
    expect(
      createPublicKey({ key: Buffer.from(p256.spki), format: "der", type: "spki" }).asymmetricKeyDetails,
    ).toEqual({ namedCurve: "prime256v1" });
    expect(token.publicKeySpki("k384")).toEqual(p384.spki);
    expect(token.findPrivateKey("k256")).toMatchObject({
      curve: "P-256",
      requiresLogin: true,
      alwaysAuthenticate: false,
    });
    // The cross-check needs pkcs11-tool: reported as skipped without it (never passed silently).
    if (noTool) return ctx.skip(noTool);
    const { stdout } = await hsm.pkcs11Tool(["-O", "--login", "--pin", hsm.userPin]);
    const blocks = objectBlocks(stdout);
    for (const [label, spki, bits] of [
      ["k256", p256.spki, 256],
      ["k384", p384.spki, 384],
    ] as const) {
      const priv = blocks.find(
        (b) => b.startsWith("Private Key Object; EC") && b.includes(`label:      ${label}\n`),
      );
      expect(priv, label).toBeDefined();
      expect(priv).toMatch(/Usage:\s+sign\n/);
      expect(priv).toMatch(/Access:\s+sensitive, always sensitive, never extractable, local/);
      const pub = blocks.find(
        (b) => b.startsWith("Public Key Object; EC") && b.includes(`label:      ${label}\n`),
      );
      expect(pub).toContain(`EC_POINT ${bits} bits`);
      expect(pub).toContain(`EC_POINT:   04${bits === 256 ? "41" : "61"}${pointHex(spki)}`);
      expect(pub).toMatch(/Usage:\s+verify\n/);
    }
    // The PIN-free key is visible without a login; the PIN-protected one is not.
    const { stdout: publicView } = await hsm.pkcs11Tool(["-O"]);
    expect(publicView).toMatch(/Private Key Object; EC\s+label:\s+k384/);
    expect(publicView).not.toMatch(/Private Key Object; EC\s+label:\s+k256/);
  });

  it("signs raw r‖s and DER that node:crypto verifies (P-256 and P-384)", () => {
    token.login(hsm.userPin);
    for (const curve of ["P-256", "P-384"] as const) {
      const { spki, privateKey } = token.generateEcKeyPair({ label: curve, curve, alwaysAuthenticate: true });
      const key = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
      const hash = curve === "P-256" ? "sha256" : "sha384";
      const data = Buffer.from(`configuration signed on ${curve}`);
      const raw = token.sign(privateKey, data);
      expect(raw.length).toBe(curve === "P-256" ? 64 : 96);
      expect(nodeVerify(hash, data, { key, dsaEncoding: "ieee-p1363" }, raw)).toBe(true);
      expect(nodeVerify(hash, data, key, token.signDer(privateKey, data))).toBe(true);
      // The digest path: what the token signs is exactly the software digest.
      const digestSig = token.signDigest(privateKey, createHash(hash).update(data).digest());
      expect(nodeVerify(hash, data, { key, dsaEncoding: "ieee-p1363" }, digestSig)).toBe(true);
    }
  });

  it.skipIf(noTool !== undefined)(
    "pkcs11-tool --sign with the project's keys gives signatures node verifies",
    async () => {
      token.login(hsm.userPin);
      const signing = token.generateEcKeyPair({
        label: "signing",
        id: Uint8Array.of(0x02),
        curve: "P-384",
        alwaysAuthenticate: true,
      });
      const cardAuth = token.generateEcKeyPair({
        label: "card-auth",
        id: Uint8Array.of(0x04),
        curve: "P-256",
        requireLogin: false,
      });
      token.close();
      const data = Buffer.from("bytes signed by OpenSC with a key hsm-onboard generated");
      for (const { label, id, spki, hash } of [
        { label: "signing", id: "02", spki: signing.spki, hash: "sha384" },
        { label: "card-auth", id: "04", spki: cardAuth.spki, hash: "sha256" },
      ]) {
        const input = join(hsm.dir, `${label}.digest`);
        const output = join(hsm.dir, `${label}.sig`);
        await writeFile(input, createHash(hash).update(data).digest());
        // pkcs11-tool logs in before any --sign (CKF_LOGIN_REQUIRED), even for the PIN-free key; the
        // always-authenticate key additionally gets its context-specific login from the same --pin.
        // Keys are picked by CKA_ID: pkcs11-tool 0.23 --sign does not select by --label.
        const args = ["--login", "--pin", hsm.userPin, "--sign", "--mechanism", "ECDSA", "--id", id];
        await hsm.pkcs11Tool([...args, "-i", input, "-o", output]);
        const raw = await readFile(output);
        const key = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
        expect(nodeVerify(hash, data, { key, dsaEncoding: "ieee-p1363" }, raw), label).toBe(true);
        // And OpenSSL's DER form.
        await hsm.pkcs11Tool([...args, "-i", input, "-o", output, "--signature-format", "openssl"]);
        const der = await readFile(output);
        expect(Buffer.from(ecdsaDerToRaw(der, hash === "sha256" ? "ES256" : "ES384")).length).toBe(
          raw.length,
        );
        expect(nodeVerify(hash, data, key, der), label).toBe(true);
      }
    },
  );

  it("stores certificates that pkcs11-tool reads back byte for byte", async (ctx) => {
    const pki: OnboardingPki = await createPki({ owner: "ACME Bank" });
    token.login(hsm.userPin);
    const a = token.generateEcKeyPair({ label: "a", curve: "P-256", requireLogin: false });
    const b = token.generateEcKeyPair({ label: "b", curve: "P-256" });
    const certs = await issueIdentityCertificates(pki, { cardAuthentication: a.spki, signing: b.spki });
    token.importCertificate({ label: "a", id: Uint8Array.of(0x04), der: certs.cardAuthentication });
    token.importCertificate({ label: "ca", der: certs.intermediates[0]!, authority: true });
    expect(token.findCertificate("a")).toEqual(certs.cardAuthentication);
    expect(token.findCertificate("missing")).toBeUndefined();
    // Replacing keeps one certificate under the label.
    token.importCertificate({ label: "a", id: Uint8Array.of(0x04), der: certs.signing, replace: true });
    expect(token.findCertificate("a")).toEqual(certs.signing);
    expect(
      token
        .listCertificates()
        .map((c) => c.label)
        .sort(),
    ).toEqual(["a", "ca"]);
    // The cross-check needs pkcs11-tool: reported as skipped without it (never passed silently).
    if (noTool) return ctx.skip(noTool);
    const out = join(hsm.dir, "a.der");
    await hsm.pkcs11Tool(["--read-object", "--type", "cert", "--label", "a", "-o", out]);
    expect(new Uint8Array(await readFile(out))).toEqual(certs.signing);
    const { stdout } = await hsm.pkcs11Tool(["-O"]);
    const block = objectBlocks(stdout).find(
      (x) => x.startsWith("Certificate Object") && x.includes("label:      a"),
    );
    expect(block).toContain("subject:    DN: O=ACME Bank, CN=Test Officer");
    // CKA_SERIAL_NUMBER is the certificate's serial.
    expect(block).toContain(`serial:     ${new X509Certificate(certs.signing).serialNumber}`);
    expect(block).toContain("ID:         04");
  });

  it("stores data objects (application hsm-onboard, one label each) that pkcs11-tool lists and reads", async (ctx) => {
    const manifest = Uint8Array.from({ length: 3063 }, (_, i) => i & 0xff);
    token.writeData("manifest", manifest);
    token.writeData("receipt-0", Buffer.from("receipt"));
    token.writeData("other", Buffer.from("not ours"), "another-app");
    expect(token.readData("manifest")).toEqual(manifest);
    expect(token.listData()).toEqual([
      { label: "manifest", size: 3063 },
      { label: "receipt-0", size: 7 },
    ]);
    token.writeData("manifest", Buffer.from("v2"));
    expect(Buffer.from(token.readData("manifest")!).toString()).toBe("v2");
    // The cross-check needs pkcs11-tool: reported as skipped without it (never passed silently).
    if (noTool) return ctx.skip(noTool);
    const { stdout } = await hsm.pkcs11Tool(["-O"]);
    const data = objectBlocks(stdout).filter((b) => b.startsWith("Data object"));
    expect(data).toHaveLength(3);
    for (const label of ["manifest", "receipt-0"]) {
      const block = data.find((b) => b.includes(`label:          '${label}'`));
      expect(block, label).toContain("application:    'hsm-onboard'");
    }
    const out = join(hsm.dir, "manifest.bin");
    await hsm.pkcs11Tool([
      "--read-object",
      "--type",
      "data",
      "--label",
      "manifest",
      "--application-label",
      "hsm-onboard",
      "-o",
      out,
    ]);
    expect((await readFile(out)).toString()).toBe("v2");
    expect(token.deleteData("manifest")).toBe(true);
    expect(token.deleteData("manifest")).toBe(false);
    expect(token.readData("manifest")).toBeUndefined();
  });

  it.skipIf(noTool !== undefined)(
    "an interrupted replacement reads as the old value before its commit point, the new one after",
    async () => {
      token.writeData("manifest", Buffer.from("old"));
      // Left by a writer killed after creating the replacement, before destroying the old object.
      const file = join(hsm.dir, "pending.bin");
      await writeFile(file, "new");
      const writePending = [
        "--write-object",
        file,
        "--type",
        "data",
        "--label",
        `manifest${PENDING_SUFFIX}`,
        "--application-label",
        "hsm-onboard",
      ];
      await hsm.pkcs11Tool(["--login", "--pin", hsm.userPin, ...writePending]);
      expect(Buffer.from(token.readData("manifest")!).toString()).toBe("old");
      expect(token.listData()).toEqual([{ label: "manifest", size: 3 }]);
      // The next write discards the leftover.
      token.writeData("manifest", Buffer.from("newer"));
      expect(Buffer.from(token.readData("manifest")!).toString()).toBe("newer");
      const { stdout } = await hsm.pkcs11Tool(["-O"]);
      expect(stdout).not.toContain(PENDING_SUFFIX);

      // Killed after destroying the old object, before the rename: the new value is committed.
      token.deleteData("manifest");
      await hsm.pkcs11Tool(["--login", "--pin", hsm.userPin, ...writePending]);
      expect(Buffer.from(token.readData("manifest")!).toString()).toBe("new");
      expect(token.listData()).toEqual([{ label: "manifest", size: 3 }]);
      token.writeData("manifest", Buffer.from("next"));
      expect(Buffer.from(token.readData("manifest")!).toString()).toBe("next");
      expect((await hsm.pkcs11Tool(["-O"])).stdout).not.toContain(PENDING_SUFFIX);
    },
  );

  it("leaks no session or module reference over many open/close cycles", async () => {
    token.close();
    for (let i = 0; i < 50; i++) {
      const t = await Pkcs11Token.open({ modulePath: hsm.modulePath, tokenLabel: hsm.label });
      t.login(hsm.userPin);
      expect(defaultModuleRegistry.activeLeases(hsm.modulePath)).toBe(1);
      t[Symbol.dispose]();
    }
    expect(defaultModuleRegistry.activeLeases(hsm.modulePath)).toBe(0);
    token = await Pkcs11Token.open({ modulePath: hsm.modulePath, tokenLabel: hsm.label });
    // A new session starts logged out: close() logged the last one out.
    expect(token.loggedIn).toBe(false);
  });
});
