// The host processor against the virtual card's SCP11 (in-process): SCP11b and SCP11a open, PIV
// runs inside, and every way of breaking the channel ends it fail-closed.
import { generateKeyPairSync } from "node:crypto";
import { X509Certificate } from "@peculiar/x509";
import { beforeAll, describe, expect, it } from "vitest";
import { SmartCardProtocol } from "../../../src/apdu/chaining.js";
import { decodeCommandApdu, encodeCommandApdu } from "../../../src/apdu/command.js";
import { decodeResponseApdu, encodeResponseApdu } from "../../../src/apdu/response.js";
import {
  decodeCertificateStore,
  ISD_AID,
  type Scp11HostOptions,
  ScpIntegrityError,
  ScpOceRefusedError,
  ScpUnavailableError,
} from "../../../src/apdu/scp11/index.js";
import { YUBIKEY_5_7_FIPS_PROFILE, YUBIKEY_5_7_PROFILE } from "../../../src/card-emulator/profiles.js";
import { installOceAnchor, provisionScpKey } from "../../../src/card-emulator/scp-provision.js";
import { type ApduInterceptor, VirtualPivCard } from "../../../src/card-emulator/virtual-piv-card.js";
import { CertificateValidationError, ExitCode } from "../../../src/errors.js";
import { PIV_AID, YUBICO_MANAGEMENT_AID, YUBICO_OTP_AID } from "../../../src/piv/objects.js";
import { PivSession } from "../../../src/piv/piv-session.js";
import { createPki, type IssuerCredentials, type OnboardingPki } from "../../../src/pki/issue.js";
import { createScpVendorCa, issueOceCertificate } from "../../../src/pki/scp-certificates.js";
import { InProcessTransport } from "../../../src/transport/in-process.js";

const x = (b: Uint8Array) => Buffer.from(b).toString("hex").toUpperCase();
const PIN = "654321";

let vendor: IssuerCredentials;
let otherVendor: IssuerCredentials;
let pki: OnboardingPki;

beforeAll(async () => {
  vendor = await createScpVendorCa("Test Card Vendor");
  otherVendor = await createScpVendorCa("Someone Else");
  pki = await createPki({ owner: "ACME Bank" });
});

/** A 5.7 virtual card with its SCP11b key, PIN changed, and a tap on everything it receives. */
async function makeCard(options: { profile?: typeof YUBIKEY_5_7_PROFILE; tamper?: ApduInterceptor } = {}) {
  const tap: { command: Uint8Array; response: Uint8Array }[] = [];
  const card = new VirtualPivCard({
    profile: options.profile ?? YUBIKEY_5_7_PROFILE,
    intercept: (command, answer) => {
      const response = options.tamper ? options.tamper(command, answer) : answer(command);
      tap.push({ command, response });
      return response;
    },
  });
  await provisionScpKey(card, vendor);
  return { card, tap };
}

function scp11b(anchor = vendor): Scp11HostOptions {
  return { variant: "b", trust: { anchors: [new Uint8Array(anchor.certificate.rawData)] } };
}

/** CLA INS of each command, GET RESPONSE left out. */
function ins(tap: { command: Uint8Array }[]): string[] {
  return tap.map((t) => x(t.command.subarray(0, 2))).filter((c) => c !== "00C0");
}

describe("SCP11b with the virtual card", () => {
  it("opens (ISD, BF21, SELECT PIV, INTERNAL AUTHENTICATE) and runs PIV wrapped; the PIN never appears", async () => {
    const { card, tap } = await makeCard();
    const session = await PivSession.open(new InProcessTransport(card), { scp: scp11b() });
    expect(session.secureChannel).toMatchObject({ protocol: "SCP11b", kid: 0x13, kvn: 0x01 });
    expect(card.scpSessionOpen).toBe(true);
    expect(ins(tap).slice(0, 4)).toEqual(["00A4", "00CA", "00A4", "8088"]);
    expect(x(decodeCommandApdu(tap[0]!.command).data)).toBe(x(ISD_AID));

    await session.changePin("123456", PIN);
    await session.verifyPin(PIN);
    expect(await session.pinTriesLeft()).toBe(3);
    const version = await session.getVersion();
    expect([version.major, version.minor]).toEqual([5, 7]);
    // Everything after the handshake is wrapped (CLA 84 or chained 94), and nothing in it is the PIN.
    const after = tap.slice(tap.findIndex((t) => t.command[1] === 0x88) + 1);
    expect(after.length).toBeGreaterThan(3);
    for (const t of after) expect([0x84, 0x94, 0x04, 0x14]).toContain(t.command[0]);
    const hay = Buffer.concat(tap.flatMap((t) => [t.command, t.response]));
    for (const needle of [PIN, "123456"]) expect(hay.includes(Buffer.from(needle))).toBe(false);
  });

  it("large objects go wrapped, then chained (short) or extended, and read back", async () => {
    for (const extended of [false, true]) {
      const { card } = await makeCard();
      const session = await PivSession.open(new InProcessTransport(card), {
        scp: scp11b(),
        extendedApdus: extended,
      });
      await session.authenticateManagementKey(
        new Uint8Array(Buffer.from("010203040506070801020304050607080102030405060708", "hex")),
      );
      const content = new Uint8Array(3000).map((_, i) => i & 0xff);
      await session.putData(0x5fff10, content);
      expect(x((await session.readObject(0x5fff10))!)).toBe(x(content));
    }
  });

  it("refuses a card whose SCP certificate is from an unknown vendor, before authenticating (exit 11)", async () => {
    const { card, tap } = await makeCard();
    const err = await PivSession.open(new InProcessTransport(card), { scp: scp11b(otherVendor) }).catch(
      (e) => e,
    );
    expect(err).toBeInstanceOf(CertificateValidationError);
    expect(err.exitCode).toBe(ExitCode.cardNotTrusted);
    expect(ins(tap)).toEqual(["00A4", "00CA"]);
  });

  it("refuses a card without a secure channel (exit 11, ScpUnavailableError)", async () => {
    const card = new VirtualPivCard({ profile: YUBIKEY_5_7_PROFILE });
    const err = await PivSession.open(new InProcessTransport(card), { scp: scp11b() }).catch((e) => e);
    expect(err).toBeInstanceOf(ScpUnavailableError);
    expect(err.exitCode).toBe(ExitCode.cardNotTrusted);
  });

  it("a flipped bit in a wrapped command: the card answers 6982, drops the session; the host fails with exit 15", async () => {
    let n = 0;
    const { card, tap } = await makeCard({
      tamper: (command, answer) => {
        if ((command[0]! & 0x04) !== 0 && ++n === 2) {
          const c = command.slice();
          c[6]! ^= 0x01;
          return answer(c);
        }
        return answer(command);
      },
    });
    const session = await PivSession.open(new InProcessTransport(card), { scp: scp11b() });
    const err = await session.verifyPin("123456").catch((e) => e);
    expect(err).toBeInstanceOf(ScpIntegrityError);
    expect(err.exitCode).toBe(ExitCode.integrity);
    expect(x(tap.at(-1)!.response)).toBe("6982");
    expect(card.scpSessionOpen).toBe(false);
    // Nothing more goes out, in clear or otherwise.
    const sent = tap.length;
    await expect(session.getVersion()).rejects.toThrow(ScpIntegrityError);
    expect(tap.length).toBe(sent);
  });

  it("a flipped bit in a wrapped answer: the host fails with exit 15 and sends nothing more", async () => {
    let n = 0;
    const { card, tap } = await makeCard({
      tamper: (command, answer) => {
        const r = answer(command);
        if ((command[0]! & 0x04) !== 0 && ++n === 2) {
          const f = r.slice();
          f[0]! ^= 0x80;
          return f;
        }
        return r;
      },
    });
    const session = await PivSession.open(new InProcessTransport(card), { scp: scp11b() });
    const err = await session.verifyPin("123456").catch((e) => e);
    expect(err).toBeInstanceOf(ScpIntegrityError);
    const sent = tap.length;
    await expect(session.verifyPin("123456")).rejects.toThrow(ScpIntegrityError);
    expect(tap.length).toBe(sent);
  });

  it("a replayed or reordered wrapped command is refused by the card (6982)", async () => {
    const { card, tap } = await makeCard();
    const t = new InProcessTransport(card);
    const session = await PivSession.open(t, { scp: scp11b() });
    await session.verifyPin("123456");
    const verify = tap.at(-1)!.command;
    expect(x(card.transmit(verify))).toBe("6982");
    expect(card.scpSessionOpen).toBe(false);

    // Reorder: two wrapped commands made by the host, delivered in swapped order.
    const { card: card2 } = await makeCard();
    const held: Uint8Array[] = [];
    const s2 = await PivSession.open(new InProcessTransport(card2), { scp: scp11b() });
    const wrapped = (s2.protocol as unknown as { top: { channel: { wrap: (c: unknown) => never } } }).top
      .channel;
    held.push(encodeCommandApdu(wrapped.wrap({ cla: 0, ins: 0xfd, p1: 0, p2: 0 })));
    held.push(encodeCommandApdu(wrapped.wrap({ cla: 0, ins: 0xf8, p1: 0, p2: 0 })));
    expect(x(card2.transmit(held[1]!))).toBe("6982");
    expect(x(card2.transmit(held[0]!))).toBe("6982");
  });

  it("a forged receipt or an invalid ePK.SD is refused before any PIN is sent", async () => {
    for (const forge of ["receipt", "point"] as const) {
      const { card, tap } = await makeCard({
        tamper: (command, answer) => {
          const r = answer(command);
          if (command[1] !== 0x88) return r;
          const f = r.slice();
          if (forge === "receipt") f[f.length - 3]! ^= 0x01;
          else f[3 + 64]! ^= 0x01; // Y of ePK.SD: off the curve
          return f;
        },
      });
      const err = await PivSession.open(new InProcessTransport(card), { scp: scp11b() }).catch((e) => e);
      expect(err).toBeInstanceOf(ScpIntegrityError);
      expect(err.exitCode).toBe(ExitCode.integrity);
      expect(ins(tap).at(-1)).toBe("8088");
    }
  });

  it("a SELECT inside the session is refused by the host; a plain command ends the card's session (6982)", async () => {
    const { card, tap } = await makeCard();
    const session = await PivSession.open(new InProcessTransport(card), { scp: scp11b() });
    const sent = tap.length;
    await expect(session.select()).rejects.toThrow(ScpIntegrityError);
    expect(tap.length).toBe(sent);

    const { card: c2 } = await makeCard();
    await PivSession.open(new InProcessTransport(c2), { scp: scp11b() });
    expect(x(c2.transmit(Uint8Array.of(0x00, 0xfd, 0x00, 0x00)))).toBe("6982");
    expect(c2.scpSessionOpen).toBe(false);
  });

  it("power-off ends the session; a SELECT ends it too", async () => {
    const { card } = await makeCard();
    await PivSession.open(new InProcessTransport(card), { scp: scp11b() });
    card.powerOff();
    card.powerOn();
    expect(card.scpSessionOpen).toBe(false);
    await PivSession.open(new InProcessTransport(card), { scp: scp11b() });
    expect(card.scpSessionOpen).toBe(true);
    const select = encodeCommandApdu({ cla: 0, ins: 0xa4, p1: 4, p2: 0, data: PIV_AID });
    expect(decodeResponseApdu(card.transmit(select)).sw).toBe(0x9000);
    expect(card.scpSessionOpen).toBe(false);
  });

  it("FIPS-like profile: plaintext VERIFY is refused (6985), VERIFY inside SCP11 works", async () => {
    const { card } = await makeCard({ profile: YUBIKEY_5_7_FIPS_PROFILE });
    const plain = await PivSession.open(new InProcessTransport(card));
    await expect(plain.verifyPin("123456")).rejects.toThrow(/6985/);
    card.powerOff();
    const secure = await PivSession.open(new InProcessTransport(card), { scp: scp11b() });
    await secure.verifyPin("123456");
  });

  it("the 5.7 profile answers SELECT of the OTP and management applications with 6A82", async () => {
    const { card } = await makeCard();
    card.powerOn();
    for (const aid of [YUBICO_OTP_AID.subarray(0, 7), YUBICO_MANAGEMENT_AID]) {
      const r = card.transmit(encodeCommandApdu({ cla: 0, ins: 0xa4, p1: 4, p2: 0, data: aid }));
      expect(x(r)).toBe(x(encodeResponseApdu(new Uint8Array(0), 0x6a82)));
    }
  });
});

describe("SCP11a with the virtual card (OCE certificate under the owner's token CA)", () => {
  async function oce(issuer: IssuerCredentials) {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const spki = new Uint8Array(publicKey.export({ format: "der", type: "spki" }));
    const cert = await issueOceCertificate(issuer, spki, "Station OCE");
    return { privateKey, certificates: [new Uint8Array(cert.rawData)] };
  }

  async function makeCardA() {
    const made = await makeCard();
    await provisionScpKey(made.card, vendor, { kid: 0x11 });
    installOceAnchor(made.card, new Uint8Array(pki.tokenCa.certificate.rawData));
    return made;
  }

  it("opens with PERFORM SECURITY OPERATION then MUTUAL AUTHENTICATE and runs PIV wrapped", async () => {
    const { card, tap } = await makeCardA();
    const session = await PivSession.open(new InProcessTransport(card), {
      scp: { ...scp11b(), variant: "a", oce: await oce(pki.tokenCa) },
    });
    expect(session.secureChannel?.protocol).toBe("SCP11a");
    expect(ins(tap)).toContain("802A");
    expect(ins(tap)).toContain("8082");
    await session.verifyPin("123456");
  });

  it("an OCE certificate from another CA is refused by the card (6A80): no channel, exit 15", async () => {
    const { card } = await makeCardA();
    const err = await PivSession.open(new InProcessTransport(card), {
      scp: { ...scp11b(), variant: "a", oce: await oce(pki.deviceCa) },
    }).catch((e) => e);
    expect(err).toBeInstanceOf(ScpOceRefusedError);
    expect(err.exitCode).toBe(ExitCode.integrity);
    expect(err.message).toMatch(/6A80/);
  });

  it("the card's certificate store is plain DER (no BF21), leaf last; an unknown key is 6A88", async () => {
    const { card } = await makeCardA();
    const protocol = new SmartCardProtocol(new InProcessTransport(card));
    await protocol.select(ISD_AID);
    const getData = (ref: string) => ({
      cla: 0,
      ins: 0xca,
      p1: 0xbf,
      p2: 0x21,
      data: new Uint8Array(Buffer.from(`A60483 02${ref}`.replace(/ /g, ""), "hex")),
      le: 256,
    });
    const store = await protocol.sendApdu(getData("1301"));
    expect(store[0]).toBe(0x30);
    const certs = decodeCertificateStore(store);
    expect(certs).toHaveLength(1);
    expect(new X509Certificate(certs[0]!).issuer).toBe(vendor.certificate.subject);
    expect((await protocol.transmit(getData("1302"))).sw).toBe(0x6a88);
  });
});
