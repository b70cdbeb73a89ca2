import { Extension, KeyUsageFlags, Name, X509Certificate } from "@peculiar/x509";
import { beforeAll, describe, expect, it } from "vitest";
import {
  CardNotTrustedError,
  CardRevokedError,
  CertificateRevokedError,
  CertificateValidationError,
  type CertificateValidationReason,
  ExitCode,
  MalformedError,
  ReplayError,
} from "../../src/errors.js";
import { issueCrl } from "../../src/pki/crl.js";
import { encodeCrlNumber } from "../../src/pki/der.js";
import { issueCardCertificate } from "../../src/pki/issue.js";
import { generateEcKeyPair } from "../../src/pki/keys.js";
import { EKU, EXT } from "../../src/pki/oids.js";
import { caSubject, VALIDATION_REQUIREMENTS } from "../../src/pki/profiles.js";
import { type ValidateChainOptions, validateChain } from "../../src/pki/validate-chain.js";
import {
  cardName,
  DAY,
  forge,
  forgeCa,
  freshCrl,
  ISSUED_AT,
  makeTestPki,
  NOW,
  OFFICER,
  OWNER,
  type TestPki,
} from "./fixtures.js";

let pki: TestPki;
beforeAll(async () => {
  pki = await makeTestPki();
});

/** Validation of a 9E card certificate as the agent does it, with any field replaced. */
function cardAuth(overrides: Partial<ValidateChainOptions> = {}): Promise<unknown> {
  return validateChain({
    leaf: pki.card9e,
    intermediates: [pki.tokenCa.certificate],
    trustAnchor: pki.root.certificate,
    crls: [pki.crl],
    now: NOW,
    ...VALIDATION_REQUIREMENTS.cardAuthentication,
    ...overrides,
  });
}

async function expectReason(
  promise: Promise<unknown>,
  reason: CertificateValidationReason,
  subject?: string,
) {
  const error = await promise.then(
    () => {
      throw new Error(`expected a ${reason} failure, but the chain validated`);
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(CertificateValidationError);
  expect(error).toBeInstanceOf(CardNotTrustedError);
  expect((error as CertificateValidationError).reason).toBe(reason);
  expect((error as CertificateValidationError).exitCode).toBe(ExitCode.cardNotTrusted);
  if (subject) expect((error as Error).message).toContain(subject);
  return error as CertificateValidationError;
}

/** A leaf under the real token CA, with one thing changed. */
async function cardLeaf(overrides: Partial<Parameters<typeof forge>[0]> = {}) {
  return forge({
    subject: cardName(),
    issuer: pki.tokenCa,
    publicKey: pki.cardKeys.publicKey,
    ...overrides,
  });
}

describe("validateChain: valid chains", () => {
  it("accepts a 9E card-authentication certificate and reports owner, officer, CRL number", async () => {
    const result = await validateChain({
      leaf: pki.card9e,
      intermediates: [pki.tokenCa.certificate],
      trustAnchor: pki.root.certificate,
      crls: [pki.crl],
      now: NOW,
      requiredEku: EKU.tokenAuth,
      requiredKeyUsage: KeyUsageFlags.digitalSignature,
      crlNumberFloor: 1n,
    });
    expect(result.owner).toBe(OWNER);
    expect(result.officer).toBe(OFFICER);
    expect(result.crlNumber).toBe(1n);
    expect(result.path.map((c) => c.subject)).toEqual([
      pki.card9e.subject,
      pki.tokenCa.certificate.subject,
      pki.root.certificate.subject,
    ]);
    expect(result.leaf.equal(pki.card9e)).toBe(true);
  });

  it("accepts a 9C configuration-signing certificate", async () => {
    const result = await cardAuth({ leaf: pki.card9c, ...VALIDATION_REQUIREMENTS.configSigning });
    expect(result).toMatchObject({ owner: OWNER, officer: OFFICER, crlNumber: 1n });
  });

  it("accepts a device certificate without a CRL when none is required, reporting the HSM serial", async () => {
    const result = await validateChain({
      leaf: pki.device,
      intermediates: [pki.deviceCa.certificate],
      trustAnchor: pki.root.certificate,
      now: NOW,
      requireCrl: false,
      ...VALIDATION_REQUIREMENTS.deviceReceipt,
    });
    expect(result.subjectSerialNumber).toBe("1234567");
    expect(result.crlNumber).toBeUndefined();
  });

  it("takes DER bytes and PEM text, intermediates in any order with unrelated ones mixed in", async () => {
    const result = await cardAuth({
      leaf: new Uint8Array(pki.card9e.rawData),
      intermediates: [
        pki.deviceCa.certificate.toString("pem"),
        pki.root.certificate,
        pki.tokenCa.certificate,
      ],
      trustAnchor: pki.root.certificate.toString("pem"),
      crls: [pki.crl.toString("pem")],
    });
    expect(result).toMatchObject({ owner: OWNER });
  });

  it("uses the CRL with the highest CRL number when several are offered", async () => {
    const newer = await freshCrl(pki.tokenCa, 7n);
    expect(await cardAuth({ crls: [pki.crl, newer] })).toMatchObject({ crlNumber: 7n });
  });

  it("accepts a CRL number equal to the floor (the same CRL seen again)", async () => {
    expect(await cardAuth({ crlNumberFloor: 1n })).toMatchObject({ crlNumber: 1n });
  });

  it("accepts a recognised extension marked critical only when it is processed", async () => {
    // A non-critical unknown extension is ignored (RFC 5280 §4.2).
    const leaf = await cardLeaf({
      extraExtensions: [new Extension("1.3.6.1.4.1.99999.1", false, new Uint8Array([5, 0]))],
    });
    expect(await cardAuth({ leaf })).toMatchObject({ owner: OWNER });
  });
});

describe("validateChain: each rule, broken on its own", () => {
  it("signature: a leaf naming the token CA but signed by another key", async () => {
    const intruder = await generateEcKeyPair("P-384");
    const leaf = await cardLeaf({ signingKey: intruder.privateKey });
    await expectReason(cardAuth({ leaf }), "signature", OFFICER);
  });

  it("picks, among CAs sharing a name, the one whose key the leaf's authority key identifier names", async () => {
    const rekeyed = await forgeCa(pki.tokenCa.certificate.subjectName, pki.root, { pathLength: 0 });
    const leaf = await forge({
      subject: cardName(),
      issuer: rekeyed,
      publicKey: pki.cardKeys.publicKey,
    });
    const result = await cardAuth({
      leaf,
      intermediates: [pki.tokenCa.certificate, rekeyed.certificate],
      crls: [],
      requireCrl: false,
    });
    expect((result as { path: X509Certificate[] }).path[1]!.equal(rekeyed.certificate)).toBe(true);
  });

  it("issuer-name: the leaf's issuer name matches no certificate, though the token CA signed it", async () => {
    const leaf = await cardLeaf({ issuerName: "CN=ACME Bank Token CA 2, O=ACME Bank" });
    await expectReason(cardAuth({ leaf }), "issuer-name", OFFICER);
  });

  it("issuer-name: names are chained by their DER, so the same text in another string type does not match", async () => {
    // The token CA's subject is UTF8String; a string-built name encodes as PrintableString.
    const leaf = await cardLeaf({ issuerName: pki.tokenCa.certificate.subject });
    expect(leaf.issuer).toBe(pki.tokenCa.certificate.subject);
    await expectReason(cardAuth({ leaf }), "issuer-name", OFFICER);
  });

  it("not-ca: an intermediate without cA=TRUE", async () => {
    const notCa = await forgeCa("CN=Not A CA, O=ACME Bank", pki.root, {
      ca: false,
      keyUsage: KeyUsageFlags.keyCertSign,
      eku: null,
    });
    const leaf = await forge({
      subject: cardName(),
      issuer: notCa,
      publicKey: pki.cardKeys.publicKey,
    });
    await expectReason(cardAuth({ leaf, intermediates: [notCa.certificate] }), "not-ca", "Not A CA");
  });

  it("not-ca: an intermediate with no basicConstraints at all", async () => {
    const notCa = await forgeCa("CN=No Constraints CA, O=ACME Bank", pki.root, { basicConstraints: null });
    const leaf = await forge({
      subject: cardName(),
      issuer: notCa,
      publicKey: pki.cardKeys.publicKey,
    });
    await expectReason(cardAuth({ leaf, intermediates: [notCa.certificate] }), "not-ca", "No Constraints CA");
  });

  it("path-length: a CA below the token CA, whose pathLenConstraint is 0", async () => {
    const subCa = await forgeCa("CN=Sub CA, O=ACME Bank", pki.tokenCa);
    const leaf = await forge({
      subject: cardName(),
      issuer: subCa,
      publicKey: pki.cardKeys.publicKey,
    });
    const crl = await freshCrl(subCa, 1n);
    await expectReason(
      cardAuth({ leaf, intermediates: [pki.tokenCa.certificate, subCa.certificate], crls: [pki.crl, crl] }),
      "path-length",
      "Sub CA",
    );
  });

  it("path-length: the constraint of an intermediate applies even under an unconstrained root", async () => {
    const root = await forgeCa("CN=Open Root, O=Test", undefined);
    const ca = await forgeCa("CN=Tight CA, O=Test", root, { pathLength: 0 });
    const sub = await forgeCa("CN=Sub CA, O=Test", ca);
    const leaf = await forge({ subject: "CN=Leaf, O=Test", issuer: sub, publicKey: pki.cardKeys.publicKey });
    await expectReason(
      validateChain({
        leaf,
        intermediates: [ca.certificate, sub.certificate],
        trustAnchor: root.certificate,
        now: NOW,
        requireCrl: false,
        requiredEku: EKU.tokenAuth,
      }),
      "path-length",
      "Sub CA",
    );
  });

  it("key-usage: an intermediate CA without keyCertSign", async () => {
    const ca = await forgeCa("CN=CRL Only CA, O=ACME Bank", pki.root, { keyUsage: KeyUsageFlags.cRLSign });
    const leaf = await forge({
      subject: cardName(),
      issuer: ca,
      publicKey: pki.cardKeys.publicKey,
    });
    const error = await expectReason(
      cardAuth({ leaf, intermediates: [ca.certificate] }),
      "key-usage",
      "CRL Only CA",
    );
    expect(error.message).toContain("keyCertSign");
  });

  it("key-usage: a leaf whose keyUsage lacks digitalSignature", async () => {
    const leaf = await cardLeaf({ keyUsage: KeyUsageFlags.keyAgreement });
    const error = await expectReason(cardAuth({ leaf }), "key-usage", OFFICER);
    expect(error.message).toContain("digitalSignature");
  });

  it("key-usage: a leaf without a keyUsage extension", async () => {
    await expectReason(cardAuth({ leaf: await cardLeaf({ keyUsage: null }) }), "key-usage", OFFICER);
  });

  it("eku: a leaf with no extendedKeyUsage", async () => {
    await expectReason(cardAuth({ leaf: await cardLeaf({ eku: null }) }), "eku", OFFICER);
  });

  it("eku: a 9C signing certificate presented for card authentication", async () => {
    const error = await expectReason(cardAuth({ leaf: pki.card9c }), "eku", OFFICER);
    expect(error.message).toContain(EKU.tokenAuth);
  });

  it("eku: anyExtendedKeyUsage alone does not stand in for the onboarding EKU", async () => {
    const error = await expectReason(cardAuth({ leaf: await cardLeaf({ eku: [EKU.any] }) }), "eku", OFFICER);
    expect(error.message).toContain("anyExtendedKeyUsage");
  });

  it("expired: a leaf past its notAfter", async () => {
    const leaf = await cardLeaf({
      notBefore: new Date(NOW.getTime() - 400 * DAY),
      notAfter: new Date(NOW.getTime() - DAY),
    });
    await expectReason(cardAuth({ leaf }), "expired", OFFICER);
  });

  it("expired: an intermediate past its notAfter", async () => {
    const ca = await forgeCa("CN=Old CA, O=ACME Bank", pki.root, {
      notBefore: new Date(NOW.getTime() - 400 * DAY),
      notAfter: new Date(NOW.getTime() - DAY),
    });
    const leaf = await forge({
      subject: cardName(),
      issuer: ca,
      publicKey: pki.cardKeys.publicKey,
    });
    await expectReason(cardAuth({ leaf, intermediates: [ca.certificate] }), "expired", "Old CA");
  });

  it("not-yet-valid: a leaf whose notBefore is in the future", async () => {
    const leaf = await cardLeaf({
      notBefore: new Date(NOW.getTime() + DAY),
      notAfter: new Date(NOW.getTime() + 400 * DAY),
    });
    await expectReason(cardAuth({ leaf }), "not-yet-valid", OFFICER);
  });

  it("untrusted-anchor: another root with the anchor's name signed the token CA", async () => {
    // Same names, byte for byte (the Name objects, not re-typed strings), other keys.
    const fakeRoot = await forgeCa(pki.root.certificate.subjectName, undefined);
    const fakeTokenCa = await forgeCa(pki.tokenCa.certificate.subjectName, fakeRoot, { pathLength: 0 });
    const leaf = await forge({
      subject: cardName(),
      issuer: fakeTokenCa,
      publicKey: pki.cardKeys.publicKey,
    });
    const crl = await freshCrl(fakeTokenCa, 1n);
    // With and without the impostor root in the presented chain.
    for (const intermediates of [
      [fakeTokenCa.certificate],
      [fakeTokenCa.certificate, fakeRoot.certificate],
    ]) {
      await expectReason(cardAuth({ leaf, intermediates, crls: [crl] }), "untrusted-anchor", "Token CA");
    }
  });

  it("untrusted-anchor: a chain that ends at a self-signed root with another name", async () => {
    const otherRoot = await forgeCa("CN=Someone Else Root, O=Evil", undefined);
    const ca = await forgeCa("CN=Evil Token CA, O=Evil", otherRoot, { pathLength: 0 });
    const leaf = await forge({
      subject: cardName(),
      issuer: ca,
      publicKey: pki.cardKeys.publicKey,
    });
    await expectReason(
      cardAuth({ leaf, intermediates: [ca.certificate, otherRoot.certificate] }),
      "untrusted-anchor",
      "Someone Else Root",
    );
  });

  it("untrusted-anchor: a self-made card certificate (self-signed leaf)", async () => {
    const keys = await generateEcKeyPair("P-256");
    const leaf = await forge({
      subject: cardName(),
      signingKey: keys.privateKey,
      publicKey: keys.publicKey,
    });
    await expectReason(cardAuth({ leaf, intermediates: [] }), "untrusted-anchor", OFFICER);
  });

  it("critical-extension: an unknown extension marked critical", async () => {
    const leaf = await cardLeaf({
      extraExtensions: [new Extension("1.3.6.1.4.1.99999.1", true, new Uint8Array([5, 0]))],
    });
    const error = await expectReason(cardAuth({ leaf }), "critical-extension", OFFICER);
    expect(error.message).toContain("1.3.6.1.4.1.99999.1");
  });

  it("revoked: the leaf's serial on the token CA's CRL → CardRevokedError", async () => {
    const crl = await freshCrl(pki.tokenCa, 2n, [
      { serialNumber: pki.card9e.serialNumber, revokedAt: ISSUED_AT, reason: "keyCompromise" },
    ]);
    const error = await cardAuth({ crls: [crl] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CardRevokedError);
    expect(error).toBeInstanceOf(CertificateRevokedError);
    expect(error).not.toBeInstanceOf(CardNotTrustedError);
    expect((error as CertificateRevokedError).exitCode).toBe(ExitCode.cardRevoked);
    expect((error as CertificateRevokedError).serialNumber).toBe(pki.card9e.serialNumber);
    expect((error as CertificateRevokedError).revocationReason).toBe("keyCompromise");
    expect((error as Error).message).toContain(OFFICER);
  });

  it("revoked: other serials on the CRL do not matter", async () => {
    const crl = await freshCrl(pki.tokenCa, 2n, [
      { serialNumber: pki.card9c.serialNumber, revokedAt: ISSUED_AT },
    ]);
    expect(await cardAuth({ crls: [crl] })).toMatchObject({ crlNumber: 2n });
  });

  it("crl-signature: a CRL with the token CA's name signed by another key", async () => {
    const other = await generateEcKeyPair("P-384");
    const crl = await freshCrl({ certificate: pki.tokenCa.certificate, privateKey: other.privateKey }, 2n);
    await expectReason(cardAuth({ crls: [crl] }), "crl-signature", "Token CA");
  });

  it("crl-stale: a CRL past its nextUpdate", async () => {
    const crl = await issueCrl({
      issuer: pki.tokenCa,
      crlNumber: 2n,
      now: new Date(NOW.getTime() - 40 * DAY),
    });
    await expectReason(cardAuth({ crls: [crl] }), "crl-stale", "Token CA");
  });

  it("crl-stale: a CRL issued after `now`", async () => {
    const crl = await issueCrl({
      issuer: pki.tokenCa,
      crlNumber: 2n,
      now: new Date(NOW.getTime() + 2 * DAY),
    });
    await expectReason(cardAuth({ crls: [crl] }), "crl-stale", "Token CA");
  });

  it("replay: a CRL number below the highest one seen → ReplayError", async () => {
    const error = await cardAuth({ crlNumberFloor: 2n }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ReplayError);
    expect((error as ReplayError).exitCode).toBe(ExitCode.replay);
    expect((error as Error).message).toMatch(/CRL number 1\b.*\b2\b/);
  });

  it("crl-missing: no CRL from the token CA when one is required", async () => {
    await expectReason(cardAuth({ crls: [] }), "crl-missing", OFFICER);
    // A CRL from another issuer (here the device CA) does not count.
    await expectReason(cardAuth({ crls: [await freshCrl(pki.deviceCa, 1n)] }), "crl-missing", OFFICER);
  });

  it("crl-malformed: a CRL without a CRL number", async () => {
    const crl = await issueCrl({ issuer: pki.tokenCa, crlNumber: 2n, now: NOW });
    // Re-sign the same content without the CRLNumber extension, straight through the generator.
    const { X509CrlGenerator } = await import("@peculiar/x509");
    const bare = await X509CrlGenerator.create({
      issuer: pki.tokenCa.certificate.subjectName,
      thisUpdate: crl.thisUpdate,
      nextUpdate: crl.nextUpdate!,
      signingKey: pki.tokenCa.privateKey,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-384" },
    });
    await expectReason(cardAuth({ crls: [bare] }), "crl-malformed", "Token CA");
  });

  it("critical-extension: a CRL with an unsupported critical extension (delta CRL indicator)", async () => {
    const { X509CrlGenerator } = await import("@peculiar/x509");
    const delta = await X509CrlGenerator.create({
      issuer: pki.tokenCa.certificate.subjectName,
      thisUpdate: new Date(NOW.getTime() - DAY),
      nextUpdate: new Date(NOW.getTime() + DAY),
      extensions: [
        new Extension(EXT.crlNumber, false, encodeCrlNumber(3n)),
        new Extension(EXT.deltaCrlIndicator, true, encodeCrlNumber(1n)),
      ],
      signingKey: pki.tokenCa.privateKey,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-384" },
    });
    await expectReason(cardAuth({ crls: [delta] }), "critical-extension", "Token CA");
  });
});

describe("validateChain: inputs", () => {
  it("checks a CRL of the root too: a revoked token CA takes its cards down with it", async () => {
    const rootCrl = await freshCrl(pki.root, 1n, [
      { serialNumber: pki.tokenCa.certificate.serialNumber, revokedAt: ISSUED_AT },
    ]);
    const error = await cardAuth({ crls: [pki.crl, rootCrl] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CertificateRevokedError);
    expect((error as CertificateRevokedError).subject).toBe(pki.tokenCa.certificate.subject);
  });

  it("refuses more intermediates or CRLs than any card carries, before parsing them", async () => {
    const junk = new Uint8Array([0]);
    await expectReason(cardAuth({ intermediates: Array(9).fill(junk) }), "malformed");
    await expectReason(cardAuth({ crls: Array(9).fill(junk) }), "crl-malformed");
  });

  it("reports an unreadable CRL as crl-malformed", async () => {
    await expectReason(cardAuth({ crls: [new Uint8Array([0x30, 0x00])] }), "crl-malformed");
  });

  it("rejects bytes that are not a certificate as malformed", async () => {
    const error = await cardAuth({ leaf: new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01]) }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(MalformedError);
  });

  it("validates at the current time by default", async () => {
    // The fixture certificates are issued in 2030, so today they are not yet valid.
    await expectReason(cardAuth({ now: undefined }), "not-yet-valid");
  });

  it("name-constraints: a token CA cannot issue a card certificate for another owner (SPEC.md §4)", async () => {
    // The owner-takeover hole of issue 10: the token CA's permitted subtree is O = its owner.
    const keys = await generateEcKeyPair("P-384");
    const leaf = await issueCardCertificate({
      tokenCa: pki.tokenCa,
      publicKey: keys.publicKey,
      owner: "Other Corp",
      slot: "9E",
      now: ISSUED_AT,
    });
    const error = await expectReason(cardAuth({ leaf }), "name-constraints", "Other Corp");
    expect(error.message).toContain("permitted subtree");
  });

  it("owner-mismatch: without name constraints, a card leaf's O must still be its token CA's O", async () => {
    // A token CA made without name constraints (forged: the project always writes them).
    const bare = await forgeCa(new Name(caSubject("Owner B Token CA", "Owner B")), pki.root, {
      pathLength: 0,
    });
    const leaf = await forge({ subject: cardName(OWNER), issuer: bare, publicKey: pki.cardKeys.publicKey });
    await expectReason(
      validateChain({
        leaf,
        intermediates: [bare.certificate],
        trustAnchor: pki.root.certificate,
        now: NOW,
        requireCrl: false,
        ...VALIDATION_REQUIREMENTS.cardAuthentication,
      }),
      "owner-mismatch",
      OFFICER,
    );
    // The same chain passes when the caller does not ask for it (device certificates, tests).
    await expect(
      validateChain({
        leaf,
        intermediates: [bare.certificate],
        trustAnchor: pki.root.certificate,
        now: NOW,
        requireCrl: false,
        requiredEku: EKU.tokenAuth,
      }),
    ).resolves.toMatchObject({ owner: OWNER });
  });

  it("treats an X509Certificate instance and its DER the same", async () => {
    const again = new X509Certificate(pki.card9e.rawData);
    expect(await cardAuth({ leaf: again })).toMatchObject({ owner: OWNER });
  });
});
