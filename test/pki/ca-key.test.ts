/**
 * CA key references (src/pki/ca-key.ts) without a token: the URI rules (no PIN in it, what must be
 * named), a key that is not the certificate's, and an external signer (the path a PKCS#11 key takes)
 * producing certificates and CRLs that verify. The SoftHSM2 end-to-end: ca-key-softhsm.test.ts.
 */
import { createPrivateKey, generateKeyPairSync, sign } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ecdsaDerToRaw } from "../../src/crypto/ecdsa.js";
import { ExitCode, UsageError } from "../../src/errors.js";
import {
  assertKeyOfCertificate,
  canonicalCaKeyReference,
  type OpenedCaKey,
  parseCaKeyUri,
} from "../../src/pki/ca-key.js";
import { crlNumberOf, issueCrl } from "../../src/pki/crl.js";
import { createPki, issueCardCertificate } from "../../src/pki/issue.js";
import { externalSigningKey, generateEcKeyPair, nodeCrypto } from "../../src/pki/keys.js";
import { runCliInProcess } from "../helpers/cli.js";

const MODULE = "/usr/lib/softhsm/libsofthsm2.so";

describe("pkcs11: references to a CA key", () => {
  it.each([
    [
      "a pin-value",
      `pkcs11:token=t;object=k?module-path=${MODULE}&pin-value=123456`,
      /no pin-value or pin-source/,
    ],
    [
      "a pin-source",
      `pkcs11:token=t;object=k?module-path=${MODULE}&pin-source=file:/pin`,
      /no pin-value or pin-source/,
    ],
    ["no module-path", "pkcs11:token=t;object=k", /module-path is required/],
    ["no token", `pkcs11:object=k?module-path=${MODULE}`, /token \(label\) or serial is required/],
    [
      "no object or id",
      `pkcs11:token=t?module-path=${MODULE}`,
      /object \(the key's label\) or id is required/,
    ],
    ["a public key", `pkcs11:token=t;object=k;type=public?module-path=${MODULE}`, /type must be private/],
  ])("refuses %s", (_what, uri, message) => {
    expect(() => parseCaKeyUri(uri)).toThrow(message);
  });

  it("stores a URI normalised, id as percent-encoded bytes, never a PIN", () => {
    expect(
      canonicalCaKeyReference(`pkcs11:object=token%2Dca;token=ACME%20CA;id=%0a?module-path=${MODULE}`),
    ).toBe(`pkcs11:token=ACME%20CA;object=token-ca;id=%0a?module-path=${MODULE}`);
    expect(canonicalCaKeyReference("/pki/token-ca.key.pem")).toBe("/pki/token-ca.key.pem");
  });

  it("the CLI refuses a PIN in the URI before anything is read, and does not echo it", async () => {
    const result = await runCliInProcess([
      "pki",
      "issue-token-ca",
      "--pki",
      "/nonexistent",
      "--owner",
      "ACME Bank",
      "--out",
      "/nonexistent-out",
      "--token-ca-key",
      `pkcs11:token=t;object=k?module-path=${MODULE}&pin-value=73915824`,
    ]);
    expect(result.exitCode).toBe(ExitCode.usage);
    expect(result.stderr).toMatch(/no pin-value or pin-source/);
    expect(result.stderr + result.stdout).not.toContain("73915824");
  });
});

describe("a CA key that signs outside WebCrypto", () => {
  it("issues certificates and CRLs that verify, with the digest computed by the caller (r‖s from the signer)", async () => {
    const pki = await createPki({ owner: "ACME Bank" });
    // Stand-in for a token: a P-384 key in a KeyObject, signing the message it is given.
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-384" });
    const calls: string[] = [];
    const key = externalSigningKey("P-384", async (data, hash) => {
      calls.push(hash);
      return ecdsaDerToRaw(sign("sha384", data, privateKey), "ES384");
    });
    const { issueCaCertificate } = await import("../../src/pki/issue.js");
    const webPublic = await nodeCrypto.subtle.importKey(
      "spki",
      publicKey.export({ type: "spki", format: "der" }),
      { name: "ECDSA", namedCurve: "P-384" },
      true,
      ["verify"],
    );
    const tokenCa = await issueCaCertificate({
      issuer: pki.root,
      kind: "tokenCa",
      organization: "ACME Bank",
      commonName: "ACME Bank Token CA",
      keys: { publicKey: webPublic, privateKey: key },
    });
    const card = await generateEcKeyPair("P-256");
    const leaf = await issueCardCertificate({
      tokenCa,
      publicKey: card.publicKey,
      owner: "ACME Bank",
      slot: "9E",
    });
    expect(await leaf.verify({ publicKey: tokenCa.certificate.publicKey, signatureOnly: true })).toBe(true);
    const crl = await issueCrl({ issuer: tokenCa, crlNumber: 5n });
    expect(await crl.verify({ publicKey: tokenCa.certificate })).toBe(true);
    expect(crlNumberOf(crl)).toBe(5n);
    expect(calls).toEqual(["SHA-384", "SHA-384"]);
    // node's own WebCrypto cannot use the stand-in: only the provider made for it signs.
    await expect(
      nodeCrypto.subtle.sign({ name: "ECDSA", hash: "SHA-384" }, key, new Uint8Array(1)),
    ).rejects.toThrow();

    // A key is checked against the certificate by a signature when the token shows no public key.
    const opened = (k: typeof key, curve: "P-256" | "P-384"): OpenedCaKey => ({
      key: k,
      curve,
      kind: "pkcs11",
      description: "pkcs11:token=t;object=k",
      storeCertificate: () => {},
      close: () => {},
    });
    await assertKeyOfCertificate(opened(key, "P-384"), tokenCa.certificate, "token-ca.pem");
    const other = createPrivateKey(
      generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey.export({ type: "pkcs8", format: "pem" }),
    );
    const wrong = externalSigningKey("P-384", async (data) =>
      ecdsaDerToRaw(sign("sha384", data, other), "ES384"),
    );
    await expect(
      assertKeyOfCertificate(opened(wrong, "P-384"), tokenCa.certificate, "token-ca.pem"),
    ).rejects.toThrow(new UsageError("pkcs11:token=t;object=k is not the key of token-ca.pem"));
  });
});
