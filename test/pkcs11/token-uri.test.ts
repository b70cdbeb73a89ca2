/**
 * `--token` URIs (RFC 7512, parsePkcs11TokenUri over parsePkcs11Uri): what names a token, the
 * refusals (a PIN in the URI above all, no or a relative module path, over-long fields, slot-id not
 * decimal), and properties: formatting then parsing gives the same token back, and no input makes
 * the parser throw anything but a UsageError.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import { formatPkcs11Uri, type Pkcs11TokenUri, parsePkcs11TokenUri } from "../../src/pkcs11/uri.js";

const MODULE = "?module-path=/usr/lib/softhsm/libsofthsm2.so";

describe("parsePkcs11TokenUri", () => {
  it("reads token, serial, manufacturer, model, slot-id and module-path, percent-decoded", () => {
    expect(
      parsePkcs11TokenUri(
        `pkcs11:token=ACME%20officer%20%231;serial=7f3a;manufacturer=SoftHSM%20project;model=SoftHSM%20v2;slot-id=1844674407${MODULE}`,
      ),
    ).toEqual({
      token: "ACME officer #1",
      serial: "7f3a",
      manufacturer: "SoftHSM project",
      model: "SoftHSM v2",
      slotId: 1844674407n,
      modulePath: "/usr/lib/softhsm/libsofthsm2.so",
    });
  });

  it("reads the RFC 7512 §3 object example (object, type, id as bytes)", () => {
    const uri = parsePkcs11TokenUri(
      `pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91${MODULE}`,
    );
    expect(uri.token).toBe("The Software PKCS#11 Softtoken");
    expect(uri.manufacturer).toBe("Snake Oil, Inc.");
    expect(uri.type).toBe("cert");
    expect(Buffer.from(uri.id ?? []).toString("hex")).toBe("69953e5cf4bdec91");
  });

  it("decodes UTF-8 labels", () => {
    expect(parsePkcs11TokenUri(`pkcs11:token=Bj%C3%B6rn${MODULE}`).token).toBe("Björn");
  });

  it.each([
    ["pin-value", `pkcs11:token=a${MODULE}&pin-value=123456`, /PIN never goes in a URI/],
    ["pin-source", `pkcs11:token=a${MODULE}&pin-source=file:/etc/pin`, /PIN never goes in a URI/],
    ["no module-path", "pkcs11:token=a", /module-path is missing/],
    ["module-name", "pkcs11:token=a?module-name=softhsm2", /unsupported query attribute "module-name"/],
    ["relative module-path", "pkcs11:token=a?module-path=libsofthsm2.so", /absolute/],
    ["not pkcs11:", "pkcs12:token=a", /starts with pkcs11:/],
    ["unknown attribute", `pkcs11:token=a;flavour=b${MODULE}`, /unsupported path attribute "flavour"/],
    ["vendor attribute", `pkcs11:x-vendor=b;token=a${MODULE}`, /unsupported path attribute "x-vendor"/],
    ["twice", `pkcs11:token=a;token=b${MODULE}`, /"token" given twice/],
    ["no value", `pkcs11:token${MODULE}`, /has no value/],
    ["bad escape", `pkcs11:token=a%4${MODULE}`, /bad percent-encoding/],
    ["not UTF-8", `pkcs11:token=%FF${MODULE}`, /not UTF-8/],
    ["control character", `pkcs11:token=a%0Ab${MODULE}`, /control character/],
    ["label over 32 bytes", `pkcs11:token=${"a".repeat(33)}${MODULE}`, /longer than 32 bytes/],
    ["serial over 16 bytes", `pkcs11:serial=${"1".repeat(17)}${MODULE}`, /longer than 16 bytes/],
    ["slot-id not decimal", `pkcs11:slot-id=0x1${MODULE}`, /decimal/],
    ["slot-id over 64 bits", `pkcs11:slot-id=18446744073709551616${MODULE}`, /decimal/],
    ["unknown type", `pkcs11:type=door${MODULE}`, /type must be one of/],
  ])("refuses %s", (_name, text, message) => {
    expect(() => parsePkcs11TokenUri(text)).toThrow(UsageError);
    expect(() => parsePkcs11TokenUri(text)).toThrow(message);
  });

  it("never echoes a PIN given in the URI", () => {
    try {
      parsePkcs11TokenUri(`pkcs11:token=a${MODULE}&pin-value=86421357`);
      expect.unreachable();
    } catch (error) {
      expect(String((error as Error).message)).not.toContain("86421357");
    }
  });
});

const text = (maxBytes: number) =>
  fc
    .string({ unit: "binary", maxLength: maxBytes })
    .filter((s) => Buffer.byteLength(s) <= maxBytes && !/[\u0000-\u001f\u007f]/.test(s));

const tokenUri: fc.Arbitrary<Pkcs11TokenUri> = fc.record(
  {
    token: text(32),
    serial: text(16),
    manufacturer: text(32),
    model: text(16),
    slotId: fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn }),
    object: text(64),
    type: fc.constantFrom("cert", "data", "private", "public", "secret-key" as const),
    id: fc.uint8Array({ maxLength: 20 }),
    modulePath: text(200).map((s) => `/${s}`),
  },
  { requiredKeys: ["modulePath"] },
);

describe("parsePkcs11TokenUri (properties)", () => {
  it("gives back what formatPkcs11TokenUri wrote", () => {
    fc.assert(
      fc.property(tokenUri, (uri) => {
        const parsed = parsePkcs11TokenUri(formatPkcs11Uri(uri));
        expect({ ...parsed, id: parsed.id && [...parsed.id] }).toEqual({
          ...uri,
          id: uri.id && [...uri.id],
        });
      }),
      { numRuns: 500 },
    );
  });

  it("throws nothing but UsageError, for any text after pkcs11:", () => {
    const pieces = fc.constantFrom(
      "token=",
      "serial=",
      "slot-id=",
      "object=",
      "id=",
      "type=",
      ";",
      "?",
      "&",
      "=",
      "%",
      "%4",
      "%C3",
      "%FF",
      "%00",
      "module-path=/x",
      "pin-value=1",
      "a",
      "é",
    );
    fc.assert(
      fc.property(fc.array(fc.oneof(pieces, fc.string({ maxLength: 4 })), { maxLength: 12 }), (parts) => {
        try {
          parsePkcs11TokenUri(`pkcs11:${parts.join("")}`);
        } catch (error) {
          expect(error).toBeInstanceOf(UsageError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
