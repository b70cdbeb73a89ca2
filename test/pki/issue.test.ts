import { generateKeyPairSync } from "node:crypto";
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsageExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  SubjectKeyIdentifierExtension,
  type X509Certificate,
} from "@peculiar/x509";
import { beforeAll, describe, expect, it } from "vitest";
import { CertificateValidationError, UsageError } from "../../src/errors.js";
import { decodeExtendedKeyUsage } from "../../src/pki/der.js";
import {
  createPki,
  issueCardCertificate,
  issueDeviceCertificate,
  type OnboardingPki,
  randomSerialNumber,
} from "../../src/pki/issue.js";
import { generateEcKeyPair } from "../../src/pki/keys.js";
import { EKU, EXT } from "../../src/pki/oids.js";
import { extractOfficer, extractOwner } from "../../src/pki/ownership.js";
import { forge, ISSUED_AT } from "./fixtures.js";

const HOUR = 3_600_000;

function addYears(date: Date, years: number): Date {
  const d = new Date(date);
  d.setUTCFullYear(d.getUTCFullYear() + years);
  return d;
}

function ekuOf(cert: X509Certificate): string[] {
  const ext = cert.getExtension(EXT.extKeyUsage);
  return ext ? decodeExtendedKeyUsage(ext.value) : [];
}

let pki: OnboardingPki;
beforeAll(async () => {
  pki = await createPki({ owner: "ACME Bank", now: ISSUED_AT });
});

describe("createPki", () => {
  it("makes a self-signed P-384 root, and token and device CAs under it with pathLen 0", async () => {
    const { root, tokenCa, deviceCa } = pki;
    expect(await root.certificate.isSelfSigned()).toBe(true);
    expect(root.certificate.publicKey.algorithm).toMatchObject({ name: "ECDSA", namedCurve: "P-384" });
    expect(root.certificate.signatureAlgorithm).toMatchObject({ name: "ECDSA", hash: { name: "SHA-384" } });
    for (const ca of [tokenCa, deviceCa]) {
      expect(ca.certificate.issuer).toBe(root.certificate.subject);
      expect(ca.certificate.publicKey.algorithm).toMatchObject({ namedCurve: "P-384" });
      expect(
        await ca.certificate.verify({ publicKey: root.certificate.publicKey, signatureOnly: true }),
      ).toBe(true);
      const bc = ca.certificate.getExtension(BasicConstraintsExtension)!;
      expect(bc).toMatchObject({ ca: true, pathLength: 0, critical: true });
      expect(ca.certificate.getExtension(KeyUsagesExtension)!.usages).toBe(
        KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign,
      );
      const aki = ca.certificate.getExtension(AuthorityKeyIdentifierExtension)!;
      expect(aki.keyId).toBe(root.certificate.getExtension(SubjectKeyIdentifierExtension)!.keyId);
    }
    expect(root.certificate.getExtension(BasicConstraintsExtension)).toMatchObject({
      ca: true,
      pathLength: 1,
    });
    expect(tokenCa.certificate.subjectName.getField("O")).toEqual(["ACME Bank"]);
    expect(deviceCa.certificate.subjectName.getField("O")).toEqual(["hsm-onboard Manufacturer"]);
  });

  it("gives the root 20 years and the CAs 10, with notBefore an hour before issuing", () => {
    expect(pki.root.certificate.notBefore.getTime()).toBe(ISSUED_AT.getTime() - HOUR);
    expect(pki.root.certificate.notAfter).toEqual(addYears(ISSUED_AT, 20));
    expect(pki.tokenCa.certificate.notAfter).toEqual(addYears(ISSUED_AT, 10));
    expect(pki.deviceCa.certificate.notAfter).toEqual(addYears(ISSUED_AT, 10));
  });
});

describe("issueCardCertificate", () => {
  it("9E: card authentication — digitalSignature, onboarding token-auth EKU and id-PIV-cardAuth, 3 years", async () => {
    const keys = await generateEcKeyPair("P-256");
    const cert = await issueCardCertificate({
      tokenCa: pki.tokenCa,
      publicKey: keys.publicKey,
      owner: "ACME Bank",
      officer: "Alice Example",
      slot: "9E",
      serial: "12345678",
      now: ISSUED_AT,
    });
    expect(cert.getExtension(KeyUsagesExtension)).toMatchObject({
      usages: KeyUsageFlags.digitalSignature,
      critical: true,
    });
    expect(cert.getExtension(BasicConstraintsExtension)).toMatchObject({ ca: false });
    expect(ekuOf(cert)).toEqual([EKU.tokenAuth, EKU.pivCardAuth]);
    expect(cert.notAfter).toEqual(addYears(ISSUED_AT, 3));
    expect(cert.issuer).toBe(pki.tokenCa.certificate.subject);
    expect(cert.signatureAlgorithm).toMatchObject({ hash: { name: "SHA-384" } });
    expect(cert.subjectName.getField("2.5.4.5")).toEqual(["12345678"]);
    expect(extractOwner(cert)).toBe("ACME Bank");
    expect(extractOfficer(cert)).toBe("Alice Example");
  });

  it("9C: configuration signing — digitalSignature + nonRepudiation, config-signing EKU only", async () => {
    const keys = await generateEcKeyPair("P-384");
    const cert = await issueCardCertificate({
      tokenCa: pki.tokenCa,
      publicKey: keys.publicKey,
      owner: "ACME Bank",
      slot: "9C",
      now: ISSUED_AT,
    });
    expect(cert.getExtension(KeyUsagesExtension)!.usages).toBe(
      KeyUsageFlags.digitalSignature | KeyUsageFlags.nonRepudiation,
    );
    expect(ekuOf(cert)).toEqual([EKU.configSigning]);
    expect(extractOfficer(cert)).toBeUndefined();
  });

  it("takes the card's key as SPKI DER, a KeyObject or a CryptoKey, and certifies exactly that key", async () => {
    const { publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const spki = new Uint8Array(publicKey.export({ type: "spki", format: "der" }));
    for (const input of [spki, publicKey]) {
      const cert = await issueCardCertificate({
        tokenCa: pki.tokenCa,
        publicKey: input,
        owner: "ACME Bank",
        slot: "9E",
      });
      expect(Buffer.from(cert.publicKey.rawData).equals(Buffer.from(spki))).toBe(true);
    }
  });

  it("refuses keys that are not ECDSA P-256/P-384", async () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey;
    const p521 = generateKeyPairSync("ec", { namedCurve: "secp521r1" }).publicKey;
    for (const publicKey of [rsa, p521]) {
      await expect(
        issueCardCertificate({ tokenCa: pki.tokenCa, publicKey, owner: "ACME", slot: "9E" }),
      ).rejects.toThrow(UsageError);
    }
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    await expect(
      issueCardCertificate({ tokenCa: pki.tokenCa, publicKey: privateKey, owner: "ACME", slot: "9E" }),
    ).rejects.toThrow(/public key/);
  });

  it("keeps owner and officer names as given, commas and quotes included (UTF8String, no DN escaping)", async () => {
    const keys = await generateEcKeyPair("P-256");
    const owner = 'ACME Bank, "Frankfurt" Branch\\Ops';
    const cert = await issueCardCertificate({
      tokenCa: pki.tokenCa,
      publicKey: keys.publicKey,
      owner,
      officer: "Zoë Ørsted",
      slot: "9E",
    });
    expect(extractOwner(cert)).toBe(owner);
    expect(extractOfficer(cert)).toBe("Zoë Ørsted");
  });

  it("refuses empty, padded, control-character and over-long names, and unknown slots", async () => {
    const keys = await generateEcKeyPair("P-256");
    const base = { tokenCa: pki.tokenCa, publicKey: keys.publicKey, slot: "9E" as const };
    for (const owner of ["", " ACME", "AC\nME", "x".repeat(65)]) {
      await expect(issueCardCertificate({ ...base, owner })).rejects.toThrow(UsageError);
    }
    await expect(issueCardCertificate({ ...base, owner: "ACME", slot: "9A" as "9E" })).rejects.toThrow(
      UsageError,
    );
  });

  it("never outlives the token CA", async () => {
    const keys = await generateEcKeyPair("P-256");
    const late = addYears(ISSUED_AT, 9);
    const cert = await issueCardCertificate({
      tokenCa: pki.tokenCa,
      publicKey: keys.publicKey,
      owner: "ACME",
      slot: "9E",
      now: late,
    });
    expect(cert.notAfter).toEqual(pki.tokenCa.certificate.notAfter);
  });

  it("honours explicit notBefore/notAfter and certificate serial (for tests)", async () => {
    const keys = await generateEcKeyPair("P-256");
    const notBefore = new Date("2031-02-03T04:05:06Z");
    const notAfter = new Date("2031-03-03T04:05:06Z");
    const cert = await issueCardCertificate({
      tokenCa: pki.tokenCa,
      publicKey: keys.publicKey,
      owner: "ACME",
      slot: "9C",
      notBefore,
      notAfter,
      certificateSerial: "0102030405",
    });
    expect(cert.notBefore).toEqual(notBefore);
    expect(cert.notAfter).toEqual(notAfter);
    expect(cert.serialNumber).toBe("0102030405");
  });
});

describe("issueDeviceCertificate", () => {
  it("subject serialNumber = HSM serial, digitalSignature, device-receipt EKU; clamped to the device CA", async () => {
    const keys = await generateEcKeyPair("P-256");
    const cert = await issueDeviceCertificate({
      deviceCa: pki.deviceCa,
      publicKey: keys.publicKey,
      serial: "1234567",
      now: ISSUED_AT,
    });
    expect(cert.subjectName.getField("2.5.4.5")).toEqual(["1234567"]);
    expect(cert.subjectName.getField("CN")).toEqual(["1234567"]);
    expect(cert.getExtension(KeyUsagesExtension)!.usages).toBe(KeyUsageFlags.digitalSignature);
    expect(ekuOf(cert)).toEqual([EKU.deviceReceipt]);
    expect(cert.getExtension(ExtendedKeyUsageExtension)!.critical).toBe(false);
    // 20 years asked, but never past the device CA's notAfter.
    expect(cert.notAfter).toEqual(pki.deviceCa.certificate.notAfter);
  });

  it("gets its full 20 years under a device CA that lives long enough", async () => {
    const keys = await generateEcKeyPair("P-256");
    const longCa = { ...pki.deviceCa, certificate: pki.root.certificate, privateKey: pki.root.privateKey };
    const cert = await issueDeviceCertificate({
      deviceCa: longCa,
      publicKey: keys.publicKey,
      serial: "1",
      now: ISSUED_AT,
      backdateMs: 0,
    });
    expect(cert.notBefore).toEqual(ISSUED_AT);
    expect(cert.notAfter).toEqual(addYears(ISSUED_AT, 20));
  });

  it("refuses serials that are not a safe PrintableString", async () => {
    const keys = await generateEcKeyPair("P-256");
    for (const serial of ["", "has space", "ümlaut", "x".repeat(65)]) {
      await expect(
        issueDeviceCertificate({ deviceCa: pki.deviceCa, publicKey: keys.publicKey, serial }),
      ).rejects.toThrow(UsageError);
    }
  });
});

describe("serial numbers and ownership", () => {
  it("are 16 random bytes, positive, without sign padding", () => {
    const serials = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const s = randomSerialNumber();
      expect(s).toMatch(/^[0-9a-f]{32}$/);
      const first = Number.parseInt(s.slice(0, 2), 16);
      expect(first).toBeGreaterThanOrEqual(1);
      expect(first).toBeLessThanOrEqual(0x7f);
      serials.add(s);
    }
    expect(serials.size).toBe(200);
  });

  it("issued certificates carry a 16-octet positive serial", () => {
    for (const ca of [pki.root, pki.tokenCa, pki.deviceCa])
      expect(ca.certificate.serialNumber).toMatch(/^[0-7][0-9a-f]{31}$/);
  });

  it("extractOwner refuses a subject with no O or with two", async () => {
    const keys = await generateEcKeyPair("P-256");
    for (const subject of ["CN=Alice", "O=ACME, O=Evil, CN=Alice"]) {
      const cert = await forge({ subject, issuer: pki.tokenCa, publicKey: keys.publicKey });
      expect(() => extractOwner(cert)).toThrow(CertificateValidationError);
    }
  });
});
