/**
 * PivSession against the in-process virtual card: the personalisation flow, PIN life cycle, the
 * YubiKey PIN-protected management key, limits, persistence, and hostile answers.
 */
import {
  createECDH,
  createHash,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  verify,
  X509Certificate,
} from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ResponseChainingError } from "../../src/apdu/chaining.js";
import { BadResponseError } from "../../src/apdu/response.js";
import { SecurityStatusError } from "../../src/apdu/status-words.js";
import { encodeTlv } from "../../src/apdu/tlv.js";
import {
  type CardProfile,
  YUBIKEY_5_7_PROFILE,
  YUBIKEY_5_PROFILE,
} from "../../src/card-emulator/profiles.js";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { CardFullError, MalformedError, PinBlockedError, WrongPinError } from "../../src/errors.js";
import {
  ApplicationNotAvailableError,
  InvalidPinFormatError,
  ManagementKeyError,
  PukBlockedError,
  WrongPukError,
} from "../../src/piv/errors.js";
import type { ManagementKeyType } from "../../src/piv/management-key.js";
import { ObjectId, parseChuid } from "../../src/piv/objects.js";
import { PivSession } from "../../src/piv/piv-session.js";
import { InProcessTransport } from "../../src/transport/in-process.js";
import { DEFAULT_MGM, indexOfBytes, issueCertificate, testCard } from "./helpers.js";

const spkiKey = (spki: Uint8Array): KeyObject =>
  createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
const sha = (alg: "sha256" | "sha384", data: string | Uint8Array) =>
  new Uint8Array(createHash(alg).update(data).digest());

describe.each<[string, CardProfile, ManagementKeyType]>([
  ["3DES (firmware 5.4.3)", YUBIKEY_5_PROFILE, "3des"],
  ["AES-192 (firmware 5.7.1)", YUBIKEY_5_7_PROFILE, "aes192"],
])("personalisation flow, management key %s", (_name, profile, mgmType) => {
  it("authenticates, generates 9E/9C keys, signs, stores certificates and objects", async () => {
    const t = testCard({ profile });
    const piv = await t.open();
    expect(piv.version).toEqual({
      major: profile.firmware[0],
      minor: profile.firmware[1],
      patch: profile.firmware[2],
    });
    expect(piv.protocol.format).toBe("extended");
    expect(await piv.getSerial()).toBe(24681357);
    expect(await piv.getManagementKeyType()).toBe(mgmType);
    expect((await piv.getMetadata(0x9b)).isDefault).toBe(true);

    // writes need the management key
    await expect(piv.putData(0x5fff10, Uint8Array.of(1))).rejects.toThrow(SecurityStatusError);
    await piv.authenticateManagementKey(DEFAULT_MGM);

    const spki9e = await piv.generateKey("9E", "P-256");
    const spki9c = await piv.generateKey("9C", "P-384");
    expect(spkiKey(spki9e).asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    expect(spkiKey(spki9c).asymmetricKeyDetails?.namedCurve).toBe("secp384r1");

    // 9E: no PIN, DER and raw forms
    const challenge = new Uint8Array(32).fill(0x33);
    const der9e = await piv.signDigest("9E", "P-256", sha("sha256", challenge));
    expect(verify("sha256", challenge, spkiKey(spki9e), der9e)).toBe(true);
    const raw9e = await piv.signDigestRaw("9E", "P-256", sha("sha256", challenge));
    expect(raw9e).toHaveLength(64);
    expect(verify("sha256", challenge, { key: spkiKey(spki9e), dsaEncoding: "ieee-p1363" }, raw9e)).toBe(
      true,
    );

    // 9C: PIN always
    const config = new TextEncoder().encode("configuration to sign");
    await expect(piv.signDigest("9C", "P-384", sha("sha384", config))).rejects.toThrow(SecurityStatusError);
    await piv.verifyPin("123456");
    const der9c = await piv.signDigest("9C", "P-384", sha("sha384", config));
    expect(verify("sha384", config, spkiKey(spki9c), der9c)).toBe(true);
    await expect(piv.signDigest("9C", "P-384", sha("sha384", config))).rejects.toThrow(SecurityStatusError);
    await expect(piv.signDigest("9C", "P-384", new Uint8Array(49))).rejects.toThrow(RangeError);

    // metadata
    const md9c = await piv.getSlotMetadata("9C");
    expect(md9c).toMatchObject({
      algorithm: 0x14,
      pinPolicy: "always",
      touchPolicy: "never",
      origin: "generated",
    });
    expect(md9c?.publicKey).toEqual(spki9c);
    expect((await piv.getSlotMetadata("9E"))?.pinPolicy).toBe("never");
    expect(await piv.getSlotMetadata("9D")).toBeUndefined();

    // certificates: plain and gzip-compressed
    const cert9c = await issueCertificate(spki9c, "CN=Officer,O=ACME Bank");
    const cert9e = await issueCertificate(spki9e, "CN=Card 24681357");
    await piv.putCertificate("9C", cert9c);
    await piv.putCertificate("9E", cert9e, { compress: true });
    expect(await piv.getCertificate("9C")).toEqual(cert9c);
    expect(await piv.getCertificate("9E")).toEqual(cert9e);
    expect(
      new X509Certificate((await piv.getCertificate("9C")) as Uint8Array).publicKey.export({
        type: "spki",
        format: "der",
      }),
    ).toEqual(Buffer.from(spki9c));
    expect(await piv.getCertificate("9A")).toBeUndefined();
    await piv.deleteCertificate("9C");
    expect(await piv.getCertificate("9C")).toBeUndefined();

    // vendor objects
    const manifest = new Uint8Array(2500).map((_, i) => i & 0xff);
    await piv.putData(0x5fff10, manifest);
    await piv.putData(0x5fffff, Uint8Array.of(0xaa));
    expect(await piv.getData(0x5fff10)).toEqual(manifest);
    expect(await piv.readObject(0x5fffff)).toEqual(Uint8Array.of(0xaa));
    expect(await piv.readObject(0x5fff11)).toBeUndefined();

    // CHUID and CCC from the card's initialisation, then replaced as ypt set-chuid does
    const chuid = parseChuid(await piv.getData(ObjectId.chuid));
    expect(chuid.guid).toHaveLength(16);
    const guid = new Uint8Array(16).fill(0x42);
    await piv.setChuid({ guid, expires: new Date("2035-01-01T00:00:00Z") });
    expect(parseChuid(await piv.getData(ObjectId.chuid))).toMatchObject({ guid, expires: "20350101" });
    await piv.setCcc();
    expect((await piv.getData(ObjectId.cardCapabilityContainer)).subarray(0, 9)).toEqual(
      Uint8Array.of(0xf0, 0x15, 0xa0, 0x00, 0x00, 0x01, 0x16, 0xff, 0x02),
    );
    await piv.protocol.close();
  });
});

describe("PIN and PUK", () => {
  it("counts down, blocks after three wrong PINs, and unblocks with the PUK", async () => {
    const t = testCard();
    const piv = await t.open();
    expect(await piv.pinTriesLeft()).toBe(3);
    const tries: number[] = [];
    for (let i = 0; i < 3; i++) {
      const e = await piv.verifyPin("000000").catch((x: unknown) => x);
      expect(e).toBeInstanceOf(WrongPinError);
      tries.push((e as WrongPinError).triesLeft);
    }
    expect(tries).toEqual([2, 1, 0]);
    await expect(piv.verifyPin("123456")).rejects.toThrow(PinBlockedError);
    expect(await piv.pinTriesLeft()).toBe(0);

    const wrongPuk = await piv.unblockPin("87654321", "654321").catch((x: unknown) => x);
    expect(wrongPuk).toBeInstanceOf(WrongPukError);
    expect(wrongPuk).toBeInstanceOf(WrongPinError);
    expect((wrongPuk as WrongPukError).triesLeft).toBe(2);
    expect((wrongPuk as WrongPukError).message).toMatch(/PUK/);
    await piv.unblockPin("12345678", "654321");
    await piv.verifyPin("654321");
    // verified: the empty VERIFY says 9000, the count comes from the metadata
    expect(await piv.pinTriesLeft()).toBe(3);
    await piv.logout();
    expect(await piv.pinTriesLeft()).toBe(3);
  });

  it("changes PIN and PUK; a blocked PUK is PukBlockedError", async () => {
    const piv = await testCard().open();
    await expect(piv.changePin("111111", "222222")).rejects.toThrow(WrongPinError);
    await piv.changePin("123456", "87654321");
    await piv.verifyPin("87654321");
    await expect(piv.changePuk("00000000", "11111111")).rejects.toThrow(WrongPukError);
    await piv.changePuk("12345678", "abcdefgh");
    expect((await piv.getMetadata(0x81)).isDefault).toBe(false);
    await expect(piv.changePuk("xxxxxxxx", "11111111")).rejects.toThrow(WrongPukError);
    await expect(piv.changePuk("xxxxxxxx", "11111111")).rejects.toThrow(WrongPukError);
    await expect(piv.changePuk("xxxxxxxx", "11111111")).rejects.toThrow(WrongPukError);
    const e = await piv.unblockPin("abcdefgh", "123456").catch((x: unknown) => x);
    expect(e).toBeInstanceOf(PukBlockedError);
    expect(e).toBeInstanceOf(PinBlockedError);
  });

  it("refuses PINs it cannot send", async () => {
    const piv = await testCard().open();
    await expect(piv.verifyPin("123")).rejects.toThrow(InvalidPinFormatError);
    await expect(piv.verifyPin("123456789")).rejects.toThrow(InvalidPinFormatError);
    await expect(piv.verifyPin(Uint8Array.of(1, 2, 3, 4, 5, 0xff))).rejects.toThrow(InvalidPinFormatError);
    expect(await piv.pinTriesLeft()).toBe(3);
  });

  it("resets the application once PIN and PUK are blocked", async () => {
    const t = testCard();
    const piv = await t.open();
    await piv.authenticateManagementKey(DEFAULT_MGM);
    await piv.generateKey("9A", "P-256");
    for (let i = 0; i < 3; i++) await piv.verifyPin("000000").catch(() => undefined);
    for (let i = 0; i < 3; i++) await piv.changePuk("00000000", "11111111").catch(() => undefined);
    await piv.reset();
    await piv.verifyPin("123456");
    expect(await piv.getSlotMetadata("9A")).toBeUndefined();
  });
});

describe("management key", () => {
  it("refuses a wrong key or a wrong type with ManagementKeyError", async () => {
    const piv = await testCard().open();
    const wrong = new Uint8Array(24).fill(9);
    const e = await piv.authenticateManagementKey(wrong).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ManagementKeyError);
    expect((e as ManagementKeyError).reason).toBe("wrong-key");
    await expect(piv.authenticateManagementKey(DEFAULT_MGM, "aes192")).rejects.toThrow(ManagementKeyError);
    await expect(piv.authenticateManagementKey(new Uint8Array(16), "3des")).rejects.toThrow(
      ManagementKeyError,
    );
    await piv.authenticateManagementKey(DEFAULT_MGM);
  });

  it("follows the YubiKey PIN-protected management key convention", async () => {
    const t = testCard();
    let piv = await t.open();
    await piv.authenticateManagementKey(DEFAULT_MGM);
    const newKey = new Uint8Array(24).map((_, i) => 0xa0 + i);
    await piv.setManagementKey(newKey, "aes192", { protect: true });
    // exact bytes of the convention (PIV-NOTES §6)
    expect(await piv.getData(ObjectId.yubicoAdminData)).toEqual(Uint8Array.of(0x80, 0x03, 0x81, 0x01, 0x02));
    await expect(piv.getData(ObjectId.printedInformation)).rejects.toThrow(SecurityStatusError);
    await piv.verifyPin("123456");
    expect(await piv.getData(ObjectId.printedInformation)).toEqual(
      Uint8Array.of(0x88, 0x1a, 0x89, 0x18, ...newKey),
    );
    expect(await piv.getPivmanData()).toEqual({ flags: 0x02 });
    await piv.protocol.close();

    // the agent's view: a new session, PIN first, then the stored key
    piv = await t.open();
    await expect(piv.authenticateWithPinProtectedManagementKey()).rejects.toThrow(SecurityStatusError);
    await piv.verifyPin("123456");
    await piv.authenticateWithPinProtectedManagementKey();
    await piv.putData(0x5fff80, Uint8Array.of(1, 2, 3)); // the receipt
    expect(await piv.getManagementKeyType()).toBe("aes192");
    await expect(piv.authenticateManagementKey(DEFAULT_MGM, "3des")).rejects.toThrow(ManagementKeyError);

    // back to an unprotected key: the flag and the stored copy go away
    await piv.authenticateManagementKey(newKey);
    await piv.setManagementKey(DEFAULT_MGM, "3des");
    expect((await piv.getPivmanData()).flags & 0x02).toBe(0);
    const e = await piv.readPinProtectedManagementKey().catch((x: unknown) => x);
    expect((e as ManagementKeyError).reason).toBe("not-stored");
  });
});

describe("YubiKey limits", () => {
  it.each([
    ["extended APDUs (USB)", false],
    ["short APDUs + chaining (NFC)", true],
  ])("an object above 3,063 bytes or the card total → CardFullError, over %s", async (_name, contactless) => {
    const t = testCard({ contactless, initialObjects: false });
    const piv = await t.open();
    expect(piv.protocol.format).toBe(contactless ? "short" : "extended");
    await piv.authenticateManagementKey(DEFAULT_MGM);
    await piv.putData(0x5fff10, new Uint8Array(3063).fill(1));
    expect(await piv.getData(0x5fff10)).toHaveLength(3063);
    await expect(piv.putData(0x5fff11, new Uint8Array(3064))).rejects.toThrow(CardFullError);
    let id = 0x5fff11;
    const err = await (async () => {
      for (;;) {
        await piv.putData(id++, new Uint8Array(3063).fill(2));
      }
    })().catch((x: unknown) => x);
    expect(err).toBeInstanceOf(CardFullError);
    expect(t.card.usedObjectBytes).toBeLessThanOrEqual(50225);
    expect(t.card.usedObjectBytes).toBeGreaterThan(50225 - 3063);
    expect(await piv.readObject(id - 1)).toBeUndefined(); // nothing half-written
  });
});

describe("persistence", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("keeps keys, objects, PIN, counters and management key across a reload from file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "piv-state-"));
    dirs.push(dir);
    const path = join(dir, "card.json");
    const card1 = VirtualPivCard.fromFile(path, { serial: 11223344 });
    let piv = await PivSession.open(new InProcessTransport(card1));
    await piv.authenticateManagementKey(DEFAULT_MGM);
    const spki = await piv.generateKey("9C", "P-256");
    await piv.putData(0x5fff10, Uint8Array.of(9, 8, 7));
    const aesKey = new Uint8Array(24).fill(0x17);
    await piv.setManagementKey(aesKey, "aes192");
    await piv.changePin("123456", "24682468");
    await expect(piv.verifyPin("11111111")).rejects.toThrow(WrongPinError);
    await piv.protocol.close();
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir)).toEqual(["card.json"]);

    const card2 = VirtualPivCard.fromFile(path, { serial: 99 });
    expect(card2.serial).toBe(11223344);
    piv = await PivSession.open(new InProcessTransport(card2));
    expect(await piv.pinTriesLeft()).toBe(2);
    await piv.verifyPin("24682468");
    const digest = sha("sha256", "after reload");
    expect(
      verify(
        "sha256",
        Buffer.from("after reload"),
        spkiKey(spki),
        await piv.signDigest("9C", "P-256", digest),
      ),
    ).toBe(true);
    expect(await piv.getData(0x5fff10)).toEqual(Uint8Array.of(9, 8, 7));
    await piv.authenticateManagementKey(aesKey);
    expect((await piv.getSlotMetadata("9C"))?.publicKey).toEqual(spki);
  });
});

describe("key material stays inside", () => {
  it("no response ever carries a private key", async () => {
    const t = testCard();
    const piv = await t.open();
    await piv.authenticateManagementKey(DEFAULT_MGM);
    for (const [slot, curve] of [
      ["9A", "P-256"],
      ["9C", "P-384"],
      ["9D", "P-256"],
      ["9E", "P-384"],
    ] as const) {
      const spki = await piv.generateKey(slot, curve);
      await piv.putCertificate(slot, await issueCertificate(spki));
      await piv.getCertificate(slot);
      await piv.getMetadata(Number.parseInt(slot, 16));
      await piv.verifyPin("123456");
      await piv.signDigest(slot, curve, new Uint8Array(curve === "P-256" ? 32 : 48).fill(1));
    }
    const peer = createECDH("prime256v1");
    peer.generateKeys();
    const secret = await piv.calculateSecret("9D", "P-256", new Uint8Array(peer.getPublicKey()));
    const state = t.store.load()!;
    const d9d = createPrivateKey({
      key: Buffer.from(state.keys["9D"]!.pkcs8, "base64"),
      format: "der",
      type: "pkcs8",
    });
    expect(Buffer.from(secret)).toEqual(peer.computeSecret(ecdhPoint(d9d)));

    for (const entry of Object.values(state.keys)) {
      const pkcs8 = new Uint8Array(Buffer.from(entry.pkcs8, "base64"));
      const d = new Uint8Array(
        Buffer.from(
          createPrivateKey({ key: Buffer.from(pkcs8), format: "der", type: "pkcs8" }).export({
            format: "jwk",
          }).d!,
          "base64url",
        ),
      );
      for (const r of t.responses) {
        expect(indexOfBytes(r, d)).toBe(-1);
        expect(indexOfBytes(r, d.subarray(0, 12))).toBe(-1);
        expect(indexOfBytes(r, d.subarray(d.length - 12))).toBe(-1);
      }
    }
    expect(t.responses.length).toBeGreaterThanOrEqual(30);
  });
});

function ecdhPoint(priv: KeyObject): Buffer {
  const jwk = createPublicKey(priv).export({ format: "jwk" });
  return Buffer.concat([Buffer.of(4), Buffer.from(jwk.x!, "base64url"), Buffer.from(jwk.y!, "base64url")]);
}

describe("trace", () => {
  it("never shows a PIN, PUK or management key", async () => {
    const lines: string[] = [];
    const t = testCard();
    const piv = await t.open({ trace: { debug: (m) => lines.push(m) } });
    const secrets = ["918273", "564738", "12345678", "87654321", "123456"];
    await piv.verifyPin("123456");
    await piv.changePin("123456", "918273");
    await piv.verifyPin("000000").catch(() => undefined);
    await piv.verifyPin("918273");
    await piv.changePuk("12345678", "87654321");
    for (let i = 0; i < 3; i++) await piv.verifyPin("000000").catch(() => undefined);
    await piv.unblockPin("87654321", "564738");
    await piv.authenticateManagementKey(DEFAULT_MGM);
    const newKey = new Uint8Array(24).fill(0xc5);
    await piv.setManagementKey(newKey, "3des", { protect: true });
    await piv.verifyPin("564738");
    await piv.readPinProtectedManagementKey();
    const text = lines.join("\n");
    expect(lines.length).toBeGreaterThan(20);
    for (const s of secrets) {
      const bytes = Buffer.from(s);
      expect(text).not.toContain(
        Array.from(bytes, (b) => b.toString(16).toUpperCase().padStart(2, "0")).join(" "),
      );
      expect(text).not.toContain(s);
    }
    expect(text).not.toContain("C5 C5 C5");
    expect(text).not.toContain("01 02 03 04 05 06 07 08");
    expect(text).toContain("apdu >> 00 A4 04 00"); // the rest is still traced
  });
});

describe("hostile or broken cards", () => {
  it("a card without PIV → ApplicationNotAvailableError", async () => {
    const t = testCard({
      intercept: (cmd, card) => (cmd[1] === 0xa4 ? Uint8Array.of(0x6a, 0x82) : card(cmd)),
    });
    await expect(t.open()).rejects.toThrow(ApplicationNotAvailableError);
  });

  it("endless 61xx → ResponseChainingError after a bounded number of APDUs", async () => {
    const t = testCard({
      intercept: (cmd, card) =>
        cmd[1] === 0xcb || cmd[1] === 0xc0 ? Uint8Array.of(0x00, 0x61, 0x00) : card(cmd),
    });
    const piv = await t.open();
    const before = t.commands.length;
    await expect(piv.getData(ObjectId.chuid)).rejects.toThrow(ResponseChainingError);
    expect(t.commands.length - before).toBeLessThanOrEqual(200);
  });

  it("huge answers → ResponseChainingError", async () => {
    const t = testCard({
      intercept: (cmd, card) =>
        cmd[1] === 0xcb || cmd[1] === 0xc0 ? new Uint8Array(258).fill(0x61) : card(cmd),
    });
    const piv = await t.open({ maxResponseBytes: 8192 });
    await expect(piv.getData(0x5fff10)).rejects.toThrow(ResponseChainingError);
  });

  it("wrong lengths, bad points and bad signatures → MalformedError", async () => {
    let mode = "";
    const t = testCard({
      intercept: (cmd, card) => {
        const r = card(cmd);
        if (mode === "length" && cmd[1] === 0xcb)
          return Uint8Array.of(0x53, 0x82, 0x10, 0x00, 0x01, 0x90, 0x00);
        if (mode === "point" && cmd[1] === 0x47) {
          const bad = r.slice();
          bad[10] = (bad[10]! ^ 0x01) & 0xff;
          return bad;
        }
        if (mode === "signature" && cmd[1] === 0x87 && cmd[3] === 0x9e)
          return Uint8Array.of(0x7c, 0x04, 0x82, 0x02, 0x30, 0x00, 0x90, 0x00);
        if (mode === "version" && cmd[1] === 0xfd) return Uint8Array.of(5, 4, 0x90, 0x00);
        if (mode === "select" && cmd[1] === 0xa4) return Uint8Array.of(0x61, 0x05, 0x01, 0x90, 0x00);
        return r;
      },
    });
    const piv = await t.open();
    await piv.authenticateManagementKey(DEFAULT_MGM);
    mode = "length";
    await expect(piv.getData(ObjectId.chuid)).rejects.toThrow(MalformedError);
    mode = "point";
    await expect(piv.generateKey("9E", "P-256")).rejects.toThrow(BadResponseError);
    mode = "";
    await piv.generateKey("9E", "P-256");
    mode = "signature";
    await expect(piv.signDigest("9E", "P-256", new Uint8Array(32))).rejects.toThrow(MalformedError);
    mode = "version";
    await expect(piv.getVersion()).rejects.toThrow(BadResponseError);
    mode = "select";
    await expect(piv.select()).rejects.toThrow(MalformedError);
  });

  it("a gzip bomb in a certificate object is refused", async () => {
    const { gzipSync } = await import("node:zlib");
    const t = testCard();
    const piv = await t.open();
    await piv.authenticateManagementKey(DEFAULT_MGM);
    const bomb = gzipSync(Buffer.concat([Buffer.of(0x30), Buffer.alloc(1 << 20)]));
    await piv.putData(
      ObjectId.certificate9A,
      new Uint8Array([...encodeTlv(0x70, bomb), ...encodeTlv(0x71, Uint8Array.of(1)), 0xfe, 0x00]),
    );
    await expect(piv.getCertificate("9A")).rejects.toThrow(MalformedError);
  });
});
