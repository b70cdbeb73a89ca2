import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import { formatPkcs11Uri, type Pkcs11Uri, parsePkcs11Uri, redactPkcs11Uri } from "../../src/pkcs11/uri.js";

describe("PKCS#11 URI (RFC 7512)", () => {
  it("reads path and query attributes, percent-decoding text and id bytes", () => {
    const uri = parsePkcs11Uri(
      "pkcs11:token=ACME%20CA;object=token-ca;id=%01%a2%FF;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so",
    );
    expect(uri).toEqual({
      token: "ACME CA",
      object: "token-ca",
      id: new Uint8Array([0x01, 0xa2, 0xff]),
      type: "private",
      modulePath: "/usr/lib/softhsm/libsofthsm2.so",
    });
  });

  it("reads RFC 7512's own examples that use the attributes it knows", () => {
    expect(parsePkcs11Uri("pkcs11:object=my-pubkey;type=public")).toEqual({
      object: "my-pubkey",
      type: "public",
    });
    expect(
      parsePkcs11Uri("pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc."),
    ).toEqual({ token: "Software PKCS#11 softtoken", manufacturer: "Snake Oil, Inc." });
    expect(
      parsePkcs11Uri("pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert"),
    ).toEqual({ token: "A name with a substring %;", object: "my-certificate", type: "cert" });
  });

  it.each([
    ["not a URI", "token=x"],
    ["an unknown path attribute", "pkcs11:objet=x"],
    ["an unknown query attribute", "pkcs11:object=x?module-name=softhsm2"],
    ["an attribute given twice", "pkcs11:object=x;object=y"],
    ["an attribute without a value", "pkcs11:object"],
    ["bad percent-encoding", "pkcs11:object=%4"],
    ["an unknown type", "pkcs11:object=x;type=secret"],
    ["a fragment", "pkcs11:object=x#frag"],
    ["invalid UTF-8 in a text attribute", "pkcs11:object=%ff"],
  ])("refuses %s with a usage error", (_what, text) => {
    expect(() => parsePkcs11Uri(text)).toThrow(UsageError);
  });

  it("never puts a pin-value into a message, and redacts it", () => {
    const uri = "pkcs11:object=x?pin-value=%ZZsecret";
    try {
      parsePkcs11Uri(uri);
      expect.unreachable();
    } catch (error) {
      expect((error as Error).message).not.toContain("secret");
    }
    expect(redactPkcs11Uri("pkcs11:object=x?module-path=/m.so&pin-value=1234")).toBe(
      "pkcs11:object=x?module-path=/m.so&pin-value=REDACTED",
    );
  });

  it("format then parse gives back every attribute (property)", () => {
    const text = fc.string({ unit: "grapheme", maxLength: 20 });
    fc.assert(
      fc.property(
        fc.record(
          {
            token: text,
            serial: text,
            object: text,
            id: fc.uint8Array({ maxLength: 16 }),
            type: fc.constantFrom("public", "private", "cert", "secret-key", "data"),
            modulePath: text,
          },
          { requiredKeys: [] },
        ),
        (uri) => {
          const back = parsePkcs11Uri(formatPkcs11Uri(uri as Pkcs11Uri));
          expect(back).toEqual(uri);
        },
      ),
    );
  });

  it("any string either parses or is refused with a UsageError (property)", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), fc.string({ maxLength: 200 }), (path, query) => {
        try {
          parsePkcs11Uri(`pkcs11:${path}?${query}`);
        } catch (error) {
          expect(error).toBeInstanceOf(UsageError);
        }
      }),
    );
  });
});
