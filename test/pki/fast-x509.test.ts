import { X509Certificate as NodeX509Certificate } from "node:crypto";
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  Extension,
  KeyUsageFlags,
  KeyUsagesExtension,
  Name,
  SubjectKeyIdentifierExtension,
  type X509Certificate,
  X509CrlGenerator,
} from "@peculiar/x509";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { MalformedError, OnboardError } from "../../src/errors.js";
import { crlNumberOf } from "../../src/pki/crl.js";
import {
  crlParts,
  encodeCrlNumber,
  integerContent,
  readBoolean,
  readOid,
  readOnly,
  readTime,
} from "../../src/pki/der.js";
import {
  CertificateView,
  crlNumberOfDer,
  KEY_USAGE,
  type ParsedCertificate,
  parseCertificate,
  readCrl,
} from "../../src/pki/fast-x509.js";
import { generateEcKeyPair } from "../../src/pki/keys.js";
import { ATTR, EXT } from "../../src/pki/oids.js";
import { DAY, forge, forgeCa, freshCrl, ISSUED_AT, makeTestPki, NOW, type TestPki } from "./fixtures.js";

/**
 * The agent's X.509 parsing (src/pki/der.ts + fast-x509.ts) against two independent parsers:
 * @peculiar/x509 (whose string forms it reproduces) and OpenSSL (node:crypto's X509Certificate).
 */

let pki: TestPki;
let corpus: X509Certificate[];
beforeAll(async () => {
  pki = await makeTestPki();
  const keys = await generateEcKeyPair("P-256");
  const odd = await forge({
    // Every character RFC 4514 escapes, a leading '#', a trailing space, a line break, several string
    // types, a multi-valued RDN and an attribute of a type @peculiar/x509 prints as #hex.
    subject: new Name([
      { CN: [{ utf8String: '#Alice, "Bob"+Carol\\<Dave>;Eve ' }] },
      { O: [{ printableString: "ACME Bank" }], OU: [{ utf8String: "Ops\nTeam" }] },
      { "2.5.4.5": [{ printableString: "SN-0001" }] },
      { L: [{ bmpString: "Zürich" }] },
      { E: [{ ia5String: "officer@example.com" }] },
      { ST: [{ universalString: "Bayern" }] },
    ]),
    issuer: pki.tokenCa,
    publicKey: keys.publicKey,
    keyUsage: KeyUsageFlags.digitalSignature | KeyUsageFlags.decipherOnly | KeyUsageFlags.keyAgreement,
  });
  const hexValued = await forge({
    subject: "CN=Hex Valued, 1.2.3.4=#120431323334", // a NumericString: no text type for @peculiar/x509
    issuer: pki.tokenCa,
    publicKey: keys.publicKey,
    notAfter: new Date("2051-03-04T05:06:07Z"), // GeneralizedTime
  });
  const constrained = await forgeCa("CN=Constrained CA, O=ACME Bank", pki.root, { pathLength: 3 });
  corpus = [
    pki.root.certificate,
    pki.tokenCa.certificate,
    pki.deviceCa.certificate,
    pki.card9e,
    pki.card9c,
    pki.device,
    odd,
    hexValued,
    constrained.certificate,
  ];
});

function der(cert: X509Certificate): Uint8Array {
  return new Uint8Array(cert.rawData).slice();
}

/**
 * Whether every name value is well-formed text of a type both read as text. Other values (a NULL, a
 * BMPString of odd length, invalid UTF-8 …) are printed by each parser in its own way.
 */
function ordinaryNames(parsed: ParsedCertificate): boolean {
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  return [parsed.structure.subject, parsed.structure.issuer].every((name) =>
    name.rdns.every((rdn) =>
      rdn.every(({ valueTag, value }) => {
        switch (valueTag) {
          case 0x0c:
            try {
              utf8.decode(value);
              return true;
            } catch {
              return false;
            }
          case 0x13:
          case 0x16:
            return value.every((b) => b < 0x80);
          case 0x1e:
            return value.length % 2 === 0;
          case 0x1c:
            return value.length % 4 === 0 && value.every((b, i) => i % 4 > 1 || b === 0);
          default:
            return false;
        }
      }),
    ),
  );
}

function expectSameAsPeculiar(parsed: ParsedCertificate, cert: X509Certificate) {
  if (ordinaryNames(parsed)) {
    expect(parsed.subject).toBe(cert.subject);
    expect(parsed.issuer).toBe(cert.issuer);
    for (const type of [ATTR.organization, ATTR.commonName, ATTR.serialNumber, "2.5.4.11", "1.2.3.4"]) {
      expect(new CertificateView(parsed).subjectValues(type)).toEqual(cert.subjectName.getField(type));
    }
  }
  expect(parsed.serialNumber).toBe(cert.serialNumber);
  expect(parsed.structure.notBefore.getTime()).toBe(cert.notBefore.getTime());
  expect(parsed.structure.notAfter.getTime()).toBe(cert.notAfter.getTime());
  expect(parsed.keyUsage).toBe(cert.getExtension(KeyUsagesExtension)?.usages);
  const bc = cert.getExtension(BasicConstraintsExtension);
  expect(parsed.basicConstraints?.ca).toBe(bc?.ca);
  expect(parsed.basicConstraints?.pathLength).toBe(bc?.pathLength);
  expect(parsed.subjectKeyId).toBe(cert.getExtension(SubjectKeyIdentifierExtension)?.keyId.toLowerCase());
  expect(parsed.authorityKeyId).toBe(
    cert.getExtension(AuthorityKeyIdentifierExtension)?.keyId?.toLowerCase(),
  );
  expect(parsed.extensions.map((e) => [e.oid, e.critical])).toEqual(
    cert.extensions.map((e) => [e.type, e.critical]),
  );
}

describe("parseCertificate agrees with @peculiar/x509 and OpenSSL", () => {
  it("names, serials, validity and the extensions validation reads, for every profile and odd names", () => {
    for (const cert of corpus) {
      const parsed = parseCertificate(der(cert));
      expect(ordinaryNames(parsed) || cert === corpus[7]).toBe(true); // all text but the NumericString one
      expectSameAsPeculiar(parsed, cert);
      const openssl = new NodeX509Certificate(der(cert));
      expect(parsed.serialNumber.toUpperCase()).toBe(openssl.serialNumber);
      expect(parsed.structure.notAfter.getTime()).toBe(new Date(openssl.validTo).getTime());
      expect(parsed.basicConstraints?.ca ?? false).toBe(openssl.ca);
    }
  });

  it("prints names exactly as @peculiar/x509 does (escapes, string types, #hex, multi-valued RDNs)", () => {
    const [odd, hexValued] = corpus.slice(6);
    expect(parseCertificate(der(odd!)).subject).toBe(odd!.subject);
    expect(odd!.subject).toContain('\\#Alice\\, \\"Bob\\"\\+Carol\\\\\\<Dave\\>\\;Eve\\ ');
    expect(odd!.subject).toContain("+OU=Ops\\0ATeam");
    expect(parseCertificate(der(hexValued!)).subject).toBe("CN=Hex Valued, 1.2.3.4=#120431323334");
  });

  it("reads a name value OpenSSL refuses (an INTEGER) as @peculiar/x509 does, without OpenSSL", async () => {
    const keys = await generateEcKeyPair("P-256");
    const cert = await forge({
      subject: "CN=Odd, 1.2.3.4=#020101",
      issuer: pki.tokenCa,
      publicKey: keys.publicKey,
    });
    expect(() => new NodeX509Certificate(der(cert))).toThrow();
    expect(parseCertificate(der(cert)).subject).toBe("CN=Odd, 1.2.3.4=#020101");
  });

  it("reads DER only: PEM, hex and base64 text are refused, whether as text or as bytes", () => {
    const pem = pki.card9e.toString("pem");
    const bytes = der(pki.card9e);
    for (const text of [pem, Buffer.from(bytes).toString("hex"), Buffer.from(bytes).toString("base64")]) {
      expect(() => parseCertificate(new TextEncoder().encode(text))).toThrow(MalformedError);
      // A string is not even accepted by the types; at run time it is refused the same way.
      expect(() => parseCertificate(text as unknown as Uint8Array)).toThrow(MalformedError);
    }
    expect(parseCertificate(bytes).der).toEqual(bytes);
  });

  it("keyUsage bits are numbered as @peculiar/x509's KeyUsageFlags", () => {
    expect(KEY_USAGE).toEqual({
      digitalSignature: KeyUsageFlags.digitalSignature,
      nonRepudiation: KeyUsageFlags.nonRepudiation,
      keyEncipherment: KeyUsageFlags.keyEncipherment,
      dataEncipherment: KeyUsageFlags.dataEncipherment,
      keyAgreement: KeyUsageFlags.keyAgreement,
      keyCertSign: KeyUsageFlags.keyCertSign,
      cRLSign: KeyUsageFlags.cRLSign,
      encipherOnly: KeyUsageFlags.encipherOnly,
      decipherOnly: KeyUsageFlags.decipherOnly,
    });
  });

  it("differential: never reads what both OpenSSL and @peculiar/x509 refuse; where they read it, reads the same", () => {
    const seeds = corpus.map(der);
    // Mutations: a flipped byte, a dropped byte, an inserted byte, a changed length octet's neighbour.
    const mutant = fc
      .tuple(
        fc.nat(seeds.length - 1),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        fc.constantFrom("xor", "drop", "insert"),
      )
      .map(([which, at, x, how]) => {
        const seed = seeds[which]!;
        const i = at % seed.length;
        if (how === "drop") return Uint8Array.from([...seed.subarray(0, i), ...seed.subarray(i + 1)]);
        if (how === "insert") return Uint8Array.from([...seed.subarray(0, i), x, ...seed.subarray(i)]);
        const bytes = seed.slice();
        bytes[i] = bytes[i]! ^ x;
        return bytes;
      });
    const peculiar = corpus[0]!.constructor as typeof X509Certificate;
    fc.assert(
      fc.property(mutant, (bytes) => {
        let ours: ParsedCertificate | undefined;
        try {
          ours = parseCertificate(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(MalformedError);
          return;
        }
        let openssl: NodeX509Certificate | undefined;
        try {
          openssl = new NodeX509Certificate(bytes);
        } catch {
          openssl = undefined;
        }
        let theirs: X509Certificate | undefined;
        try {
          theirs = new peculiar(bytes);
          void theirs.subject;
          void theirs.extensions;
        } catch {
          theirs = undefined;
        }
        // The fast path is the stricter reader: accepting bytes both others refuse is a bug.
        expect(
          openssl !== undefined || theirs !== undefined,
          `the fast path read a certificate OpenSSL and @peculiar/x509 both refuse: ${Buffer.from(bytes).toString("hex")}`,
        ).toBe(true);
        // Where OpenSSL reads it too, it reads the same serial, validity and CA flag.
        if (openssl) {
          if (!openssl.serialNumber.startsWith("-") && (ours.structure.serialNumber[0]! & 0x80) === 0) {
            expect(BigInt(`0x${ours.serialNumber}`)).toBe(BigInt(`0x${openssl.serialNumber}`));
          }
          expect(ours.structure.notBefore.getTime()).toBe(new Date(openssl.validFrom).getTime());
          expect(ours.structure.notAfter.getTime()).toBe(new Date(openssl.validTo).getTime());
        }
        // Where @peculiar/x509 reads it too, it reads every field validation uses the same way.
        if (theirs) expectSameAsPeculiar(ours, theirs);
      }),
      { numRuns: 1500 },
    );
  });
});

describe("the DER reader is strict and bounded", () => {
  const cert = () => der(pki.card9e);

  it("refuses indefinite, non-minimal and overlong lengths, trailing and missing bytes", () => {
    const good = cert();
    expect(good[1]).toBe(0x82); // SEQUENCE with a two-octet length
    const indefinite = Uint8Array.from([0x30, 0x80, ...good.subarray(4), 0, 0]);
    const nonMinimal = Uint8Array.from([0x30, 0x83, 0x00, good[2]!, good[3]!, ...good.subarray(4)]);
    const shortAsLong = Uint8Array.from([0x30, 0x81, 0x03, 0x02, 0x01, 0x01]);
    for (const bytes of [
      indefinite,
      nonMinimal,
      shortAsLong,
      Uint8Array.from([...good, 0]),
      good.subarray(0, good.length - 1),
      new Uint8Array(0),
      Uint8Array.from([0x30, 0x85, 1, 0, 0, 0, 0]),
    ]) {
      expect(() => parseCertificate(bytes)).toThrow(MalformedError);
    }
  });

  it("refuses BER forms DER forbids: padded INTEGERs, BOOLEAN TRUE other than FF, bad OIDs", () => {
    expect(() =>
      integerContent(Uint8Array.of(2, 2, 0, 1), readOnly(Uint8Array.of(2, 2, 0, 1), "t"), "t"),
    ).toThrow(MalformedError);
    expect(() =>
      integerContent(Uint8Array.of(2, 2, 0xff, 0x80), readOnly(Uint8Array.of(2, 2, 0xff, 0x80), "t"), "t"),
    ).toThrow(MalformedError);
    expect(
      integerContent(Uint8Array.of(2, 2, 0, 0x80), readOnly(Uint8Array.of(2, 2, 0, 0x80), "t"), "t"),
    ).toEqual(Uint8Array.of(0, 0x80));
    const bool = (b: number) => {
      const bytes = Uint8Array.of(1, 1, b);
      return readBoolean(bytes, readOnly(bytes, "t"), "t");
    };
    expect(bool(0xff)).toBe(true);
    expect(bool(0)).toBe(false);
    expect(() => bool(1)).toThrow(MalformedError);
    const oid = (...b: number[]) => {
      const bytes = Uint8Array.of(6, b.length, ...b);
      return readOid(bytes, readOnly(bytes, "t"), "t");
    };
    expect(oid(0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03)).toBe("1.2.840.10045.4.3.3");
    expect(() => oid(0x2a, 0x80, 0x01)).toThrow(MalformedError);
    expect(() => oid(0x2a, 0x86)).toThrow(MalformedError);
    // A certificate whose critical flag is BER's 01 rather than FF.
    const good = cert();
    const at = Buffer.from(good).indexOf(Buffer.from([0x01, 0x01, 0xff]));
    expect(at).toBeGreaterThan(0);
    const ber = good.slice();
    ber[at + 2] = 0x01;
    expect(() => parseCertificate(ber)).toThrow(MalformedError);
  });

  it("reads RFC 5280 times only, and only real dates", () => {
    const time = (tag: number, text: string) => {
      const bytes = Uint8Array.from([tag, text.length, ...Buffer.from(text, "latin1")]);
      return readTime(bytes, readOnly(bytes, "t"), "t");
    };
    expect(time(0x17, "491231235959Z").toISOString()).toBe("2049-12-31T23:59:59.000Z");
    expect(time(0x17, "500101000000Z").toISOString()).toBe("1950-01-01T00:00:00.000Z");
    expect(time(0x18, "20510304050607Z").toISOString()).toBe("2051-03-04T05:06:07.000Z");
    for (const [tag, text] of [
      [0x17, "300230000000Z"], // 30 February
      [0x17, "301301000000Z"],
      [0x17, "300101240000Z"],
      [0x17, "3001010000Z"], // no seconds
      [0x17, "300101000000+0100"],
      [0x18, "20300101000000.5Z"],
      [0x17, "30010100000aZ"],
    ] as const) {
      expect(() => time(tag, text)).toThrow(MalformedError);
    }
  });

  it("whatever the bytes, parsing throws nothing but an OnboardError", () => {
    const seeds = [der(pki.card9e), der(pki.root.certificate), new Uint8Array(pki.crl.rawData)];
    fc.assert(
      fc.property(
        fc.nat(seeds.length - 1),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
        fc.option(fc.nat(), { nil: undefined }),
        (which, sets, cut) => {
          let bytes = seeds[which]!.slice();
          for (const [at, value] of sets) bytes[at % bytes.length] = value;
          if (cut !== undefined) bytes = bytes.subarray(0, cut % (bytes.length + 1));
          for (const parse of [parseCertificate, readCrl, crlNumberOfDer]) {
            try {
              parse(bytes);
            } catch (error) {
              expect(error).toBeInstanceOf(OnboardError);
            }
          }
        },
      ),
      { numRuns: 400 },
    );
  });
});

describe("readCrl: the agent's CRL reader", () => {
  it("gives what @peculiar/x509 and crlParts give", async () => {
    const revoked = await freshCrl(pki.tokenCa, 2n ** 70n, [
      { serialNumber: pki.card9e.serialNumber, revokedAt: ISSUED_AT, reason: "keyCompromise" },
    ]);
    for (const crl of [pki.crl, revoked]) {
      const view = readCrl(new Uint8Array(crl.rawData));
      expect(view.issuer).toBe(crl.issuer);
      expect(view.crlNumber).toBe(crlNumberOf(crl));
      expect(view.thisUpdate.getTime()).toBe(crl.thisUpdate.getTime());
      expect(view.nextUpdate?.getTime()).toBe(crl.nextUpdate?.getTime());
      expect(new Uint8Array(view.rawData)).toEqual(new Uint8Array(crl.rawData));
      expect(view.issuerDer).toEqual(crlParts(crl.rawData).issuer);
      expect(() => readCrl(new TextEncoder().encode(crl.toString("pem")))).toThrow(MalformedError);
      expect(crlNumberOfDer(new Uint8Array(crl.rawData))).toBe(view.crlNumber);
    }
    expect(readCrl(new Uint8Array(revoked.rawData)).crlNumber).toBe(2n ** 70n);
  });

  it("refuses junk and reports a CRL with two CRL numbers as malformed", async () => {
    expect(() => readCrl(new Uint8Array([0x30, 0x00]))).toThrow(MalformedError);
    expect(() => readCrl(new TextEncoder().encode("not a CRL at all!"))).toThrow(MalformedError);
    const twice = await X509CrlGenerator.create({
      issuer: pki.tokenCa.certificate.subjectName,
      thisUpdate: new Date(NOW.getTime() - DAY),
      nextUpdate: new Date(NOW.getTime() + DAY),
      extensions: [
        new Extension(EXT.crlNumber, false, encodeCrlNumber(3n)),
        new Extension(EXT.crlNumber, false, encodeCrlNumber(4n)),
      ],
      signingKey: pki.tokenCa.privateKey,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-384" },
    });
    expect(() => readCrl(new Uint8Array(twice.rawData)).crlNumber).toThrow(MalformedError);
    expect(() => crlNumberOf(twice)).toThrow(MalformedError);
  });
});

describe("CertificateView", () => {
  it("hands out copies: changing them changes nothing that is remembered", () => {
    const view = new CertificateView(parseCertificate(der(pki.card9e)));
    const raw = new Uint8Array(view.rawData);
    raw[raw.length - 1] = raw[raw.length - 1]! ^ 0xff;
    view.subjectDer.fill(0);
    view.notAfter.setTime(0);
    expect(view.equal(pki.card9e)).toBe(true);
    expect(view.notAfter.getTime()).toBe(pki.card9e.notAfter.getTime());
    expect(parseCertificate(der(pki.card9e)).der).toEqual(der(pki.card9e));
    expect(view.subject).toBe(pki.card9e.subject);
    expect(view.serialNumber).toBe(pki.card9e.serialNumber);
  });
});
