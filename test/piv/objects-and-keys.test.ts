import { describe, expect, it } from "vitest";
import { SecurityStatusError } from "../../src/apdu/status-words.js";
import { TlvError } from "../../src/apdu/tlv.js";
import { ManagementKeyError } from "../../src/piv/errors.js";
import {
  authenticateManagementKey,
  DEFAULT_MANAGEMENT_KEY,
  managementKeyCipher,
  managementKeyTypeFromAlgorithm,
} from "../../src/piv/management-key.js";
import {
  buildCcc,
  buildChuid,
  buildDiscoveryObject,
  buildKeyHistory,
  certificateObjectId,
  decodeCertificateObject,
  encodeCertificateObject,
  encodeFascN,
  encodeObjectTagList,
  encodePivmanData,
  isVendorObjectId,
  parseChuid,
  parsePivmanData,
  parsePivmanProtectedData,
  slotFromReference,
  slotReference,
} from "../../src/piv/objects.js";
import { encodePin } from "../../src/piv/piv-session.js";

const h = (s: string) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "hex"));
const X = (b: Uint8Array) => Buffer.from(b).toString("hex").toUpperCase();

describe("PIV objects", () => {
  it("maps slots to key references and certificate objects (SP 800-73-4 Part 1 Table 3)", () => {
    expect(certificateObjectId("9A")).toBe(0x5fc105);
    expect(certificateObjectId("9C")).toBe(0x5fc10a);
    expect(certificateObjectId("9D")).toBe(0x5fc10b);
    expect(certificateObjectId("9E")).toBe(0x5fc101);
    expect(certificateObjectId("82")).toBe(0x5fc10d);
    expect(certificateObjectId("95")).toBe(0x5fc120);
    expect(slotReference("9E")).toBe(0x9e);
    expect(slotFromReference(0x9b)).toBeUndefined();
    expect(slotFromReference(0x8a)).toBe("8A");
    expect(X(encodeObjectTagList(0x5fc102))).toBe("5C035FC102");
    expect(X(encodeObjectTagList(0x7e))).toBe("5C017E");
    expect(isVendorObjectId(0x5fff00)).toBe(true);
    expect(isVendorObjectId(0x5fffff)).toBe(true);
    expect(isVendorObjectId(0x600000)).toBe(false);
  });

  it("lays out certificate objects as 70/71/FE and reads them back, gzip included", () => {
    const der = h("3003020101");
    expect(X(encodeCertificateObject(der))).toBe("70053003020101 710100 FE00".replace(/ /g, ""));
    expect(decodeCertificateObject(encodeCertificateObject(der))).toEqual(der);
    const gz = encodeCertificateObject(der, { compress: true });
    expect(X(gz)).toContain("710101FE00");
    expect(decodeCertificateObject(gz)).toEqual(der);
    expect(() => decodeCertificateObject(h("710100"))).toThrow(TlvError);
    expect(() => decodeCertificateObject(h("7002 0102 710101"))).toThrow(TlvError); // not gzip
    expect(() => decodeCertificateObject(h("7002 0102"))).toThrow(TlvError); // not DER
  });

  it("encodes a FASC-N of agency 9999 so OpenSC takes the GUID as serial", () => {
    const f = encodeFascN();
    expect(f).toHaveLength(25);
    expect(X(f.subarray(0, 3))).toBe("D4E739");
    expect(f[3]! & 0xf0).toBe(0xd0);
    // last character is the LRC; 5-bit characters with odd parity everywhere
    const bits = Array.from(f, (b) => b.toString(2).padStart(8, "0")).join("");
    for (let i = 0; i < 200; i += 5) {
      expect([...bits.slice(i, i + 5)].filter((c) => c === "1").length % 2).toBe(1);
    }
    expect(bits.slice(0, 5)).toBe("11010"); // SS
    expect(bits.slice(190, 195)).toBe("11111"); // ES (character 38)
  });

  it("builds CHUID, CCC, Discovery and Key History", () => {
    const guid = new Uint8Array(16).fill(0x11);
    const chuid = buildChuid({ guid, expires: new Date("2030-01-01T00:00:00Z") });
    expect(X(chuid.subarray(0, 2))).toBe("3019");
    expect(X(chuid.subarray(-4))).toBe("3E00FE00");
    expect(parseChuid(chuid)).toMatchObject({ guid, expires: "20300101" });
    const ccc = buildCcc(new Uint8Array(14).fill(0xee));
    expect(X(ccc)).toBe(
      `F015A000000116FF02${"EE".repeat(14)}F10121F20121F300F40100F50110F600F700FA00FB00FC00FD00FE00`,
    );
    expect(X(buildDiscoveryObject())).toBe("7E124F0BA0000003080000100001005F2F024000");
    expect(X(buildKeyHistory(2, 0))).toBe("C10102C20100FE00");
  });

  it("reads and writes the Yubico ADMIN DATA and PRINTED layouts", () => {
    expect(parsePivmanData(h("8003810102"))).toEqual({ flags: 2 });
    const salt = new Uint8Array(16).fill(5);
    const withSalt = encodePivmanData({ flags: 1, salt, pinLastChanged: h("01020304") });
    expect(X(withSalt)).toBe(`801B810101 8210${"05".repeat(16)} 830401020304`.replace(/ /g, ""));
    expect(parsePivmanData(withSalt)).toEqual({ flags: 1, salt, pinLastChanged: h("01020304") });
    expect(X(encodePivmanData({ flags: 0 }))).toBe("8000");
    expect(parsePivmanProtectedData(h(`881A8918${"AB".repeat(24)}`))).toEqual(new Uint8Array(24).fill(0xab));
    expect(parsePivmanProtectedData(h("8800"))).toBeUndefined();
    expect(() => parsePivmanData(h("81 01 02"))).toThrow(TlvError);
  });

  it("pads PINs with FF", () => {
    expect(X(encodePin("123456"))).toBe("313233343536FFFF");
    expect(X(encodePin("12345678"))).toBe("3132333435363738");
  });
});

describe("management key ciphers", () => {
  it("match published known answers (FIPS-197 C.2, SP 800-67 B.1)", () => {
    expect(
      X(
        managementKeyCipher(
          "aes192",
          h("000102030405060708090a0b0c0d0e0f1011121314151617"),
          h("00112233445566778899aabbccddeeff"),
          "encrypt",
        ),
      ),
    ).toBe("DDA97CA4864CDFE06EAF70A0EC0D7191");
    const tdea = h("0123456789ABCDEF 23456789ABCDEF01 456789ABCDEF0123");
    expect(X(managementKeyCipher("3des", tdea, h("5468652071756663"), "encrypt"))).toBe("A826FD8CE53B855F");
    expect(X(managementKeyCipher("3des", tdea, h("A826FD8CE53B855F"), "decrypt"))).toBe("5468652071756663");
    expect(managementKeyTypeFromAlgorithm(0x0a)).toBe("aes192");
    expect(managementKeyTypeFromAlgorithm(0x03)).toBe("3des");
    expect(managementKeyTypeFromAlgorithm(0x11)).toBeUndefined();
    expect(() => managementKeyCipher("aes192", new Uint8Array(16), new Uint8Array(16), "encrypt")).toThrow(
      ManagementKeyError,
    );
  });

  it("detects a card that does not prove the key (mutual authentication)", async () => {
    // A fake card that knows the witness protocol but answers the host's challenge with garbage.
    const key = DEFAULT_MANAGEMENT_KEY;
    const witness = h("0102030405060708");
    const send = async (cmd: { data: Uint8Array }) => {
      if (cmd.data.length === 4) {
        return h(`7C0A8008${X(managementKeyCipher("3des", key, witness, "encrypt"))}`);
      }
      expect(X(cmd.data.subarray(4, 12))).toBe(X(witness));
      return h("7C0A82080000000000000000");
    };
    const e = await authenticateManagementKey(send, "3des", key).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ManagementKeyError);
    expect((e as ManagementKeyError).reason).toBe("card-not-authentic");
  });

  it("maps the card's refusal to ManagementKeyError('wrong-key')", async () => {
    const send = async (cmd: { data: Uint8Array }) => {
      if (cmd.data.length === 4) return h(`7C0A8008${"00".repeat(8)}`);
      throw new SecurityStatusError(0x6982);
    };
    const e = await authenticateManagementKey(send, "3des", DEFAULT_MANAGEMENT_KEY).catch((x: unknown) => x);
    expect((e as ManagementKeyError).reason).toBe("wrong-key");
    // and a malformed answer is a TLV error
    await expect(
      authenticateManagementKey(async () => h("7C0380"), "3des", DEFAULT_MANAGEMENT_KEY),
    ).rejects.toThrow(TlvError);
  });
});
