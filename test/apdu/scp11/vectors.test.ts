// Known-answer tests of the SCP11 crypto core against the vectors in test/vectors/scp11.
import { X509Certificate } from "node:crypto";
import { describe, expect, it } from "vitest";
import { decodeCommandApdu, encodeCommandApdu } from "../../../src/apdu/command.js";
import { decodeResponseApdu } from "../../../src/apdu/response.js";
import {
  cardHandshake,
  completeHostHandshake,
  decodeCertificateStore,
  encodeAuthenticateData,
  p256Point,
  p256PrivateKeyFromDer,
  p256PrivateKeyFromScalar,
  ScpCardChannel,
  ScpHostChannel,
  ScpIntegrityError,
} from "../../../src/apdu/scp11/index.js";
import { h, type SamsungVector, samsungA, samsungC, scp11b, x } from "./vectors.js";

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

describe.each([
  ["SCP11a", samsungA, "a" as const],
  ["SCP11c", samsungC, "c" as const],
])("Samsung %s transcript, host side (ephemeral key pinned)", (_name, load, variant) => {
  const v: SamsungVector = load();
  const t = v.transcript;
  const kvn = Number.parseInt(v.kvn, 16);
  const sdKid = Number.parseInt(v.sd_kid, 16);

  it("the certificate store (BF21, over GET RESPONSE) holds the SD certificate, leaf last", () => {
    const store = concat(t.slice(0, 3).map((s) => decodeResponseApdu(h(s.response)).data));
    expect(x(store.subarray(0, 2))).toBe("BF21");
    const certs = decodeCertificateStore(store);
    expect(certs).toHaveLength(1);
    const leaf = new X509Certificate(Buffer.from(certs[0]!));
    expect(leaf.subject).toContain("Samsung");
    // The bare form (what a YubiKey returns) decodes to the same certificates.
    expect(decodeCertificateStore(concat(certs)).map(x)).toEqual(certs.map(x));
  });

  it("the OCE certificate sent by PERFORM SECURITY OPERATION is the vector's", () => {
    const pso = t.slice(3, 6).map((s) => decodeCommandApdu(h(s.command)));
    expect(x(concat(pso.map((c) => c.data)))).toBe(v.constants.X509_CERT_OCE_ECKA_P256!.toUpperCase());
  });

  it("reproduces MUTUAL AUTHENTICATE, verifies the receipt, wraps GET STATUS and unwraps its answer", () => {
    const store = concat(t.slice(0, 3).map((s) => decodeResponseApdu(h(s.response)).data));
    const leaf = new X509Certificate(Buffer.from(decodeCertificateStore(store)[0]!));
    const pkSd = p256Point(leaf.publicKey);
    const eSkOce = p256PrivateKeyFromDer(h(v.constants.ESK_OCE_ECKA_P256!));
    const skOce = p256PrivateKeyFromDer(h(v.constants.SK_OCE_ECKA_P256!));

    const authData = encodeAuthenticateData(variant, p256Point(eSkOce));
    const mutual = encodeCommandApdu({ cla: 0x80, ins: 0x82, p1: kvn, p2: sdKid, data: authData, le: 256 });
    expect(x(mutual)).toBe(t[6]!.command.toUpperCase());

    const answer = decodeResponseApdu(h(t[6]!.response));
    expect(answer.sw).toBe(0x9000);
    const session = completeHostHandshake({ authData, answer: answer.data, eSkOce, skOce, pkSd });

    const channel = new ScpHostChannel(session);
    const wrapped = channel.wrap({ cla: 0x80, ins: 0xf2, p1: 0x20, p2: 0x00, data: h("4F00") });
    expect(x(encodeCommandApdu(wrapped))).toBe(t[7]!.command.toUpperCase());
    const plain = channel.unwrap(decodeResponseApdu(h(t[7]!.response)));
    expect(plain.sw).toBe(0x9000);
    expect(x(plain.data)).toBe(v.constants.LIST_PACKAGES_RSP_PLAIN_DATA!.toUpperCase());
  });

  it("refuses the answer when the receipt is off by one bit", () => {
    const store = concat(t.slice(0, 3).map((s) => decodeResponseApdu(h(s.response)).data));
    const pkSd = p256Point(new X509Certificate(Buffer.from(decodeCertificateStore(store)[0]!)).publicKey);
    const eSkOce = p256PrivateKeyFromDer(h(v.constants.ESK_OCE_ECKA_P256!));
    const skOce = p256PrivateKeyFromDer(h(v.constants.SK_OCE_ECKA_P256!));
    const authData = encodeAuthenticateData(variant, p256Point(eSkOce));
    const answer = decodeResponseApdu(h(t[6]!.response)).data;
    const forged = answer.slice();
    forged[forged.length - 1]! ^= 0x01;
    expect(() => completeHostHandshake({ authData, answer: forged, eSkOce, skOce, pkSd })).toThrow(
      ScpIntegrityError,
    );
  });
});

describe("SCP11b vector (KID 13, KVN 01): host side and card side", () => {
  const v = scp11b();
  const eSkOce = p256PrivateKeyFromScalar(
    h(v["eSK.OCE (Samsung OpenSCP-Java Scp11TestData.ESK_OCE_ECKA_P256)"]),
  );
  const skSd = p256PrivateKeyFromScalar(h(v["SK.SD"]));
  const eSkSd = p256PrivateKeyFromScalar(h(v["eSK.SD"]));

  it("the pinned keys are the vector's", () => {
    expect(x(p256Point(skSd))).toBe(v["PK.SD"].toUpperCase());
    // Samsung's DER-encoded ESK_OCE is the same scalar.
    const samsung = p256PrivateKeyFromDer(h(samsungA().constants.ESK_OCE_ECKA_P256!));
    expect(x(p256Point(samsung))).toBe(x(p256Point(eSkOce)));
  });

  it("host: INTERNAL AUTHENTICATE byte for byte, receipt verified, keys as the vector", () => {
    const authData = encodeAuthenticateData("b", p256Point(eSkOce));
    const cmd = encodeCommandApdu({ cla: 0x80, ins: 0x88, p1: 0x01, p2: 0x13, data: authData });
    expect(x(cmd)).toBe(v.internal_authenticate_capdu.toUpperCase());
    const answer = decodeResponseApdu(h(v.internal_authenticate_rapdu));
    const session = completeHostHandshake({ authData, answer: answer.data, eSkOce, pkSd: h(v["PK.SD"]) });
    expect(x(session.keys.sEnc)).toBe(v["S-ENC"].toUpperCase());
    expect(x(session.keys.sMac)).toBe(v["S-MAC"].toUpperCase());
    expect(x(session.keys.sRmac)).toBe(v["S-RMAC"].toUpperCase());
    expect(x(session.keys.dek)).toBe(v.DEK.toUpperCase());
  });

  it("card: the same answer from SK.SD and the pinned eSK.SD", () => {
    const authData = decodeCommandApdu(h(v.internal_authenticate_capdu)).data;
    const card = cardHandshake({ authData, skSd, eSkSd });
    expect(card.variant).toBe("b");
    expect(`${x(card.answer)}9000`).toBe(v.internal_authenticate_rapdu.toUpperCase());
    expect(x(card.keys.sEnc)).toBe(v["S-ENC"].toUpperCase());
  });

  it("both sides: wrapped commands and answers byte for byte, in order", () => {
    const authData = decodeCommandApdu(h(v.internal_authenticate_capdu)).data;
    const cardSession = cardHandshake({ authData, skSd, eSkSd });
    const hostSession = completeHostHandshake({
      authData,
      answer: cardSession.answer,
      eSkOce,
      pkSd: h(v["PK.SD"]),
    });
    const host = new ScpHostChannel(hostSession);
    const card = new ScpCardChannel(cardSession);
    for (const m of v.messages) {
      const plain = decodeCommandApdu(h(m.plain_command));
      const wrapped = encodeCommandApdu(host.wrap({ ...plain, le: undefined }));
      expect(x(wrapped)).toBe(m.wrapped_command.toUpperCase());

      const received = decodeCommandApdu(wrapped);
      expect(x(card.unwrapCommand(received))).toBe(x(plain.data));
      const plainResponse = decodeResponseApdu(h(m.plain_response));
      const cardData = card.wrapResponse(plainResponse.data, plainResponse.sw);
      expect(`${x(cardData)}9000`).toBe(m.wrapped_response.toUpperCase());

      const back = host.unwrap(decodeResponseApdu(h(m.wrapped_response)));
      expect(x(back.data)).toBe(x(plainResponse.data));
      expect(back.sw).toBe(plainResponse.sw);
    }
  });
});
