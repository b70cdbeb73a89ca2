// SCP11a end to end in-process (issue 11): the owner installs its token CA key as the card's OCE CA
// (PUT KEY KID 10 + STORE DATA, inside an SCP11b session on the ISD), the station's OCE certificate
// from `pki issue-oce` opens SCP11a, another owner's station is refused before any PIN; two wrapped
// commands delivered in swapped order are refused by the card (6982) and by the host (exit 15).
import { createPublicKey } from "node:crypto";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SmartCardProtocol } from "../../../src/apdu/chaining.js";
import { decodeCommandApdu, encodeCommandApdu } from "../../../src/apdu/command.js";
import { decodeResponseApdu } from "../../../src/apdu/response.js";
import {
  decodeOceCaIdentifiers,
  encodePutOceCaKey,
  externalAuthenticateMac,
  ISD_AID,
  openScp03,
  openScp11,
  readOceCaIdentifiers,
  SCP03_DEFAULT_KEYS,
  type Scp11HostOptions,
  ScpHostChannel,
  ScpIntegrityError,
  ScpMalformedError,
  ScpOceRefusedError,
  ScpProcessor,
  scp03Keys,
} from "../../../src/apdu/scp11/index.js";
import { encodeTlv } from "../../../src/apdu/tlv.js";
import { YUBIKEY_5_7_PROFILE } from "../../../src/card-emulator/profiles.js";
import { installOceAnchor, provisionScpKey } from "../../../src/card-emulator/scp-provision.js";
import { VirtualPivCard } from "../../../src/card-emulator/virtual-piv-card.js";
import { ExitCode, ScpUnavailableError } from "../../../src/errors.js";
import { PivSession } from "../../../src/piv/piv-session.js";
import { parseCertificate } from "../../../src/pki/fast-x509.js";
import { createPki, type IssuerCredentials, type OnboardingPki } from "../../../src/pki/issue.js";
import { createScpVendorCa } from "../../../src/pki/scp-certificates.js";
import { installOceCaOnCard, issueStationOce, readStationOce } from "../../../src/station/oce.js";
import { InProcessTransport } from "../../../src/transport/in-process.js";
import { fixedAnswerTransport } from "../../helpers/fixed-answer-transport.js";

const x = (b: Uint8Array) => Buffer.from(b).toString("hex").toUpperCase();

let vendor: IssuerCredentials;
let acme: OnboardingPki;
let other: OnboardingPki;
let dir: string;

beforeAll(async () => {
  vendor = await createScpVendorCa("Test Card Vendor");
  acme = await createPki({ owner: "ACME Bank" });
  other = await createPki({ owner: "Other Bank" });
  dir = mkdtempSync(join(tmpdir(), "oce-ca-test-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const anchors = () => [new Uint8Array(vendor.certificate.rawData)];
const tokenCaDer = (p: OnboardingPki) => new Uint8Array(p.tokenCa.certificate.rawData);
const caPublicKey = (p: OnboardingPki) =>
  createPublicKey({ key: Buffer.from(p.tokenCa.certificate.publicKey.rawData), format: "der", type: "spki" });

/** A 5.7 virtual card with SCP11b and SCP11a SD keys and a tap on every command it receives. */
async function makeCard() {
  const tap: Uint8Array[] = [];
  const card = new VirtualPivCard({
    profile: YUBIKEY_5_7_PROFILE,
    intercept: (command, answer) => {
      tap.push(command);
      return answer(command);
    },
  });
  await provisionScpKey(card, vendor);
  await provisionScpKey(card, vendor, { kid: 0x11 });
  card.powerOn();
  return { card, tap };
}

/** CLA INS of each command, GET RESPONSE left out. */
const ins = (tap: Uint8Array[]) => tap.map((c) => x(c.subarray(0, 2))).filter((c) => c !== "00C0");

async function stationOce(name: string, p: OnboardingPki, owner: string) {
  const stationDir = join(dir, name);
  await issueStationOce(stationDir, p.tokenCa, { owner, name: `${name} OCE` });
  return { stationDir, oce: (await readStationOce(stationDir))! };
}

function scp11a(oce: Scp11HostOptions["oce"]): Scp11HostOptions {
  return { variant: "a", trust: { anchors: anchors() }, ...(oce ? { oce } : {}) };
}

describe("pki issue-oce: the station's OCE key and certificate", () => {
  it("writes the key 0600 and a keyAgreement certificate under the token CA, AKI = the CA's SKI", async () => {
    const { stationDir, oce } = await stationOce("s1", acme, "ACME Bank");
    expect(statSync(join(stationDir, "oce.key.pem")).mode & 0o777).toBe(0o600);
    const leaf = parseCertificate(oce.certificates[0]!);
    const ca = parseCertificate(tokenCaDer(acme));
    expect(leaf.authorityKeyId).toBe(ca.subjectKeyId);
    expect(x(oce.issuerSki!)).toBe(ca.subjectKeyId!.toUpperCase());
    expect(leaf.keyUsage).toBeDefined();
    expect(leaf.extendedKeyUsage).toBeUndefined();
    expect(leaf.basicConstraints?.ca).toBe(false);
    expect(leaf.keyCurve).toBe("P-256");
    expect(leaf.subject).toMatch(/O=ACME Bank/);
    await expect(
      issueStationOce(stationDir, acme.tokenCa, { owner: "ACME Bank", name: "again" }),
    ).rejects.toThrow(/already exists/);
  });
});

describe("the OCE CA on the card (PUT KEY + STORE DATA in an SCP03 session on the ISD)", () => {
  it("installs once, lists the identifier (FF33), then says 'already'; the SD session was wrapped", async () => {
    const { card, tap } = await makeCard();
    const first = await installOceCaOnCard(new InProcessTransport(card), {
      tokenCaCertificate: tokenCaDer(acme),
    });
    expect(first.outcome).toBe("installed");
    const i = ins(tap);
    // SELECT ISD, GET DATA FF33 (none yet), INITIALIZE UPDATE, EXTERNAL AUTHENTICATE, PUT KEY, STORE DATA.
    expect(i).toEqual(["00A4", "00CA", "8050", "8482", "84D8", "04E2"]);
    const protocol = new SmartCardProtocol(new InProcessTransport(card));
    await protocol.select(ISD_AID);
    const ids = await readOceCaIdentifiers(protocol);
    expect(ids).toHaveLength(1);
    expect(ids[0]).toMatchObject({ kid: 0x10, kvn: 0x01 });
    expect(x(ids[0]!.ski)).toBe(first.ski.toUpperCase());
    const again = await installOceCaOnCard(new InProcessTransport(card), {
      tokenCaCertificate: tokenCaDer(acme),
    });
    expect(again.outcome).toBe("already");
  });

  it("another owner cannot replace it: refused from the listed identifier; the card refuses PUT KEY over SCP11b (6985)", async () => {
    const { card } = await makeCard();
    await installOceCaOnCard(new InProcessTransport(card), {
      tokenCaCertificate: tokenCaDer(acme),
    });
    const err = await installOceCaOnCard(new InProcessTransport(card), {
      tokenCaCertificate: tokenCaDer(other),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ScpOceRefusedError);
    expect((err as ScpOceRefusedError).exitCode).toBe(ExitCode.integrity);
    // The card itself: SCP11b authenticates only the card, so it may not administer the OCE CA.
    const protocol = new SmartCardProtocol(new InProcessTransport(card));
    await openScp11(protocol, { variant: "b", trust: { anchors: anchors() } }, async () => {});
    const put = await protocol.transmit({
      cla: 0x80,
      ins: 0xd8,
      p1: 0x01,
      p2: 0x10,
      data: encodePutOceCaKey(caPublicKey(other), 1),
    });
    expect(put.sw).toBe(0x6985);
  });

  it("PUT KEY outside a session is 6982, over SCP11b 6985; off-curve points and unknown curves are 6A80", async () => {
    const { card } = await makeCard();
    const protocol = new SmartCardProtocol(new InProcessTransport(card));
    await protocol.select(ISD_AID);
    const good = encodePutOceCaKey(caPublicKey(acme), 1);
    expect((await protocol.transmit({ cla: 0x80, ins: 0xd8, p1: 0, p2: 0x10, data: good })).sw).toBe(0x6982);
    // Over SCP11b the card refuses before looking at the data; over SCP03 it checks the point.
    const b = new SmartCardProtocol(new InProcessTransport(card));
    await openScp11(b, { variant: "b", trust: { anchors: anchors() } }, async () => {});
    expect((await b.transmit({ cla: 0x80, ins: 0xd8, p1: 0, p2: 0x10, data: good })).sw).toBe(0x6985);
    await protocol.select(ISD_AID);
    await openScp03(protocol);
    const offCurve = good.slice();
    offCurve[10] = offCurve[10]! ^ 0x01;
    expect((await protocol.transmit({ cla: 0x80, ins: 0xd8, p1: 0, p2: 0x10, data: offCurve })).sw).toBe(
      0x6a80,
    );
    const badCurve = good.slice();
    badCurve[badCurve.length - 2] = 0x09;
    expect((await protocol.transmit({ cla: 0x80, ins: 0xd8, p1: 0, p2: 0x10, data: badCurve })).sw).toBe(
      0x6a80,
    );
    // Nothing was installed: the card still lists no OCE CA.
    const fresh = new SmartCardProtocol(new InProcessTransport(card));
    await fresh.select(ISD_AID);
    expect(await readOceCaIdentifiers(fresh)).toEqual([]);
  });
});

describe("SCP11a with the station's OCE certificate", () => {
  it("opens (FF33, PSO, MUTUAL AUTHENTICATE) and runs PIV wrapped", async () => {
    const { card, tap } = await makeCard();
    await installOceCaOnCard(new InProcessTransport(card), {
      tokenCaCertificate: tokenCaDer(acme),
    });
    const { oce } = await stationOce("s2", acme, "ACME Bank");
    tap.length = 0;
    const session = await PivSession.open(new InProcessTransport(card), { scp: scp11a(oce) });
    expect(session.secureChannel?.protocol).toBe("SCP11a");
    // The OCE certificate (> 255 bytes) goes in two PSO blocks (GP chaining, CLA 90 then 80).
    expect(ins(tap).slice(0, 7)).toEqual(["00A4", "00CA", "00CA", "00A4", "902A", "802A", "8082"]);
    await session.verifyPin("123456");
    expect(await session.pinTriesLeft()).toBe(3);
  });

  it("another owner's station is refused from FF33 before PSO, without a VERIFY, PIN counter unchanged", async () => {
    const { card, tap } = await makeCard();
    await installOceCaOnCard(new InProcessTransport(card), {
      tokenCaCertificate: tokenCaDer(acme),
    });
    const { oce } = await stationOce("s3", other, "Other Bank");
    tap.length = 0;
    const err = await PivSession.open(new InProcessTransport(card), { scp: scp11a(oce) }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ScpOceRefusedError);
    expect((err as Error).message).toMatch(/another owner's card/);
    expect(ins(tap)).not.toContain("802A");
    expect(tap.some((c) => c[1] === 0x20)).toBe(false);
    expect(card.scpSessionOpen).toBe(false);
  });

  it("a card without the identifier (FF33 empty) refuses the foreign OCE certificate itself (PSO 6A80)", async () => {
    const { card, tap } = await makeCard();
    installOceAnchor(card, tokenCaDer(acme)); // OCE CA key without STORE DATA: nothing listed
    const { oce } = await stationOce("s4", other, "Other Bank");
    tap.length = 0;
    const err = await PivSession.open(new InProcessTransport(card), { scp: scp11a(oce) }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ScpOceRefusedError);
    expect((err as Error).message).toMatch(/6A80/);
    expect(ins(tap)).toContain("802A");
    expect(ins(tap)).not.toContain("8082");
    expect(tap.some((c) => c[1] === 0x20)).toBe(false);
  });
});

describe("SCP03 on the ISD (factory default keys, as a YubiKey 5.7 ships)", () => {
  it("derives what yubikit 5.8.0 derives (default keys, context 00…0F; values computed with yubikit's _derive and _calculate_mac)", () => {
    const h = scp03Keys(
      SCP03_DEFAULT_KEYS,
      Uint8Array.from({ length: 8 }, (_, i) => i),
      Uint8Array.from({ length: 8 }, (_, i) => i + 8),
    );
    expect(x(h.keys.sMac)).toBe("94D9141C5E50A39EF3939B9A4616C910");
    expect(x(h.hostCryptogram)).toBe("FAFA93C2EDE62463");
    expect(x(externalAuthenticateMac(h.keys.sMac, 0x33, h.hostCryptogram))).toBe(
      "CB51E38EC18EB00BA2140A6B09656E0F",
    );
  });

  it("opens with the default keys; other keys fail the card cryptogram (exit 15); a forged host cryptogram is 6982", async () => {
    const { card, tap } = await makeCard();
    const protocol = new SmartCardProtocol(new InProcessTransport(card));
    await protocol.select(ISD_AID);
    const session = await openScp03(protocol);
    expect(session.keys.sEnc).toHaveLength(16);
    expect(card.scpSessionOpen).toBe(true);
    // A wrapped GET DATA FF33 answers 6A88 (no OCE CA yet), bare, and the session goes on.
    expect((await protocol.transmit({ cla: 0x00, ins: 0xca, p1: 0xff, p2: 0x33, le: 256 })).sw).toBe(0x6a88);
    expect(ins(tap).slice(-3)).toEqual(["8050", "8482", "04CA"]);

    const wrong = new SmartCardProtocol(new InProcessTransport(card));
    await wrong.select(ISD_AID);
    const key = new Uint8Array(16).fill(0x11);
    const err = await openScp03(wrong, { keys: { enc: key, mac: key, dek: key } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ScpIntegrityError);
    expect((err as ScpIntegrityError).exitCode).toBe(ExitCode.integrity);

    const forged = new SmartCardProtocol(new InProcessTransport(card));
    await forged.select(ISD_AID);
    const init = await forged.transmit({
      cla: 0x80,
      ins: 0x50,
      p1: 0xff,
      p2: 0,
      data: new Uint8Array(8),
      le: 256,
    });
    expect(init.sw).toBe(0x9000);
    const ea = await forged.transmit({ cla: 0x84, ins: 0x82, p1: 0x33, p2: 0, data: new Uint8Array(16) });
    expect(ea.sw).toBe(0x6982);
    expect(card.scpSessionOpen).toBe(false);
  });
});

describe("reorder: two wrapped commands delivered in swapped order", () => {
  it("the card refuses the second-wrapped one first (6982) and then the other (session gone); nothing written", async () => {
    const { card } = await makeCard();
    const protocol = new SmartCardProtocol(new InProcessTransport(card));
    const opened = await openScp11(protocol, { variant: "b", trust: { anchors: anchors() } }, async () => {
      await protocol.select(Uint8Array.of(0xa0, 0x00, 0x00, 0x03, 0x08));
    });
    // The host's channel state, as ScpProcessor holds it: wrap two PIV commands in order.
    const host = new ScpHostChannel(opened.session);
    const putData = (tag: number, value: number) => ({
      cla: 0x00,
      ins: 0xdb,
      p1: 0x3f,
      p2: 0xff,
      data: new Uint8Array([0x5c, 0x03, 0x5f, 0xc1, 0x05, ...encodeTlv(0x53, Uint8Array.of(tag, value))]),
    });
    const first = encodeCommandApdu(host.wrap(putData(0x01, 0xaa)));
    const second = encodeCommandApdu(host.wrap(putData(0x02, 0xbb)));
    const send = (apdu: Uint8Array) => decodeResponseApdu(card.transmit(apdu));
    expect(decodeCommandApdu(second).cla).toBe(0x04);
    expect(send(second).sw).toBe(0x6982);
    expect(card.scpSessionOpen).toBe(false);
    expect(send(first).sw).toBe(0x6982);
    // Nothing was written: the object is still absent (plaintext GET DATA after a fresh SELECT).
    await protocol.transport.transmit(
      encodeCommandApdu({ cla: 0, ins: 0xa4, p1: 4, p2: 0, data: Uint8Array.of(0xa0, 0, 0, 3, 8) }),
    );
    const get = decodeResponseApdu(
      card.transmit(
        encodeCommandApdu({
          cla: 0,
          ins: 0xcb,
          p1: 0x3f,
          p2: 0xff,
          data: Uint8Array.of(0x5c, 0x03, 0x5f, 0xc1, 0x05),
          le: 256,
        }),
      ),
    );
    expect(get.sw).toBe(0x6a82);
  });

  it("on the host: a wrapped command held back and the next one sent → card 6982 → ScpIntegrityError (exit 15)", async () => {
    const { card, tap } = await makeCard();
    const protocol = new SmartCardProtocol(new InProcessTransport(card));
    await openScp11(protocol, { variant: "b", trust: { anchors: anchors() } }, async () => {
      await protocol.select(Uint8Array.of(0xa0, 0x00, 0x00, 0x03, 0x08));
    });
    const processor = (protocol as unknown as { top: ScpProcessor }).top;
    expect(processor).toBeInstanceOf(ScpProcessor);
    const getVersion = { cla: 0x00, ins: 0xfd, p1: 0, p2: 0 };
    // The wire holds the first wrapped command back; the host's next command reaches the card first.
    const held = encodeCommandApdu(processor.channel.wrap(getVersion));
    const err = await protocol.transmit(getVersion).catch((e: unknown) => e);
    expect(x(tap.at(-1)!.subarray(0, 2))).toBe("04FD");
    expect(err).toBeInstanceOf(ScpIntegrityError);
    expect((err as ScpIntegrityError).exitCode).toBe(ExitCode.integrity);
    expect(card.scpSessionOpen).toBe(false);
    // The held one, delivered late, is refused too; and the host sends nothing more.
    expect(decodeResponseApdu(card.transmit(held)).sw).toBe(0x6982);
    await expect(protocol.transmit(getVersion)).rejects.toBeInstanceOf(ScpIntegrityError);
  });
});

describe("openScp03 against arbitrary INITIALIZE UPDATE answers (untrusted bytes)", () => {
  it("never opens a session and fails only with the typed SCP errors", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 40 }),
        fc.constantFrom(0x9000, 0x6a88, 0x6982),
        async (answer, sw) => {
          const { transport, sent } = fixedAnswerTransport(answer, sw);
          const err = await openScp03(new SmartCardProtocol(transport)).catch((e: unknown) => e);
          expect(
            err instanceof ScpMalformedError ||
              err instanceof ScpIntegrityError ||
              err instanceof ScpUnavailableError,
          ).toBe(true);
          // Nothing after INITIALIZE UPDATE: the card cryptogram (or the answer's shape) stopped it.
          expect(sent).toHaveLength(1);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe("decodeOceCaIdentifiers (untrusted bytes from the card)", () => {
  it("round-trips pairs and throws only ScpMalformedError on anything else", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            ski: fc.uint8Array({ minLength: 1, maxLength: 32 }),
            kid: fc.nat(255),
            kvn: fc.nat(255),
          }),
          {
            maxLength: 16,
          },
        ),
        (ids) => {
          const bytes = Buffer.concat(
            ids.flatMap((i) => [encodeTlv(0x42, i.ski), encodeTlv(0x83, Uint8Array.of(i.kid, i.kvn))]),
          );
          if (ids.length === 0) return;
          const out = decodeOceCaIdentifiers(new Uint8Array(bytes));
          expect(out.map((o) => [x(o.ski), o.kid, o.kvn])).toEqual(ids.map((i) => [x(i.ski), i.kid, i.kvn]));
        },
      ),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        try {
          decodeOceCaIdentifiers(bytes);
        } catch (e) {
          expect(e).toBeInstanceOf(ScpMalformedError);
        }
      }),
    );
  });
});
