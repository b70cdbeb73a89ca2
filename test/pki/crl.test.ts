import {
  AuthorityKeyIdentifierExtension,
  SubjectKeyIdentifierExtension,
  X509Crl,
  X509CrlReason,
} from "@peculiar/x509";
import { beforeAll, describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import { crlNumberOf, encodeCrl, issueCrl, parseCrl } from "../../src/pki/crl.js";
import { certificateParts, crlParts } from "../../src/pki/der.js";
import { createPki, type OnboardingPki } from "../../src/pki/issue.js";
import { EXT } from "../../src/pki/oids.js";
import { bytesEqual } from "../../src/util/bytes.js";
import { DAY, ISSUED_AT } from "./fixtures.js";

let pki: OnboardingPki;
beforeAll(async () => {
  pki = await createPki({ now: ISSUED_AT });
});

describe("issueCrl", () => {
  it("signs a v2 CRL with CRL number, AKI, thisUpdate backdated an hour and nextUpdate 30 days on", async () => {
    const crl = await issueCrl({ issuer: pki.tokenCa, crlNumber: 1n, now: ISSUED_AT });
    expect(crl.version).toBe(1); // v2
    expect(crlNumberOf(crl)).toBe(1n);
    expect(crl.thisUpdate.getTime()).toBe(ISSUED_AT.getTime() - 3_600_000);
    expect(crl.nextUpdate!.getTime()).toBe(ISSUED_AT.getTime() + 30 * DAY);
    expect(crl.getExtension(AuthorityKeyIdentifierExtension)!.keyId).toBe(
      pki.tokenCa.certificate.getExtension(SubjectKeyIdentifierExtension)!.keyId,
    );
    expect(crl.extensions.every((e) => !e.critical)).toBe(true);
    expect(await crl.verify({ publicKey: pki.tokenCa.certificate })).toBe(true);
    // The CRL's issuer is byte-for-byte the token CA's subject.
    expect(
      bytesEqual(crlParts(crl.rawData).issuer, certificateParts(pki.tokenCa.certificate.rawData).subject),
    ).toBe(true);
  });

  it("lists revoked serials with their dates; a reason code only when one is given (RFC 5280 §5.3.1)", async () => {
    const crl = await issueCrl({
      issuer: pki.tokenCa,
      crlNumber: 5n,
      now: ISSUED_AT,
      entries: [
        { serialNumber: "0a0b0c", revokedAt: ISSUED_AT, reason: "keyCompromise" },
        { serialNumber: "7f0102", revokedAt: ISSUED_AT, reason: "unspecified" },
      ],
    });
    expect(crl.entries.map((e) => [e.serialNumber, e.reason])).toEqual([
      ["0a0b0c", X509CrlReason.keyCompromise],
      ["7f0102", undefined],
    ]);
    expect(crl.entries[1]!.extensions.filter((e) => e.type === EXT.crlReason)).toHaveLength(0);
  });

  it("carries CRL numbers beyond 2^53", async () => {
    const big = 2n ** 100n + 1n;
    expect(crlNumberOf(await issueCrl({ issuer: pki.tokenCa, crlNumber: big }))).toBe(big);
  });

  it("refuses a nextUpdate not after thisUpdate", async () => {
    await expect(issueCrl({ issuer: pki.tokenCa, crlNumber: 1n, nextUpdate: new Date(0) })).rejects.toThrow(
      UsageError,
    );
    await expect(issueCrl({ issuer: pki.tokenCa, crlNumber: 1n, validityDays: 0 })).rejects.toThrow(
      UsageError,
    );
  });

  it("encodes as DER or PEM, and parses both back", async () => {
    const crl = await issueCrl({ issuer: pki.tokenCa, crlNumber: 2n });
    const der = encodeCrl(crl, "der");
    const pem = new TextDecoder().decode(encodeCrl(crl, "pem"));
    expect(der[0]).toBe(0x30);
    expect(pem).toMatch(/^-----BEGIN X509 CRL-----\n[\s\S]+-----END X509 CRL-----\n$/);
    for (const input of [der, pem]) expect(parseCrl(input).equal(crl)).toBe(true);
    expect(parseCrl(crl)).toBe(crl);
    expect(() => parseCrl(new Uint8Array([1, 2, 3]))).toThrow(/CRL/);
    expect(new X509Crl(crl.rawData).issuer).toBe(pki.tokenCa.certificate.subject);
  });
});
