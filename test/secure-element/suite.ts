/**
 * One behaviour suite for every SecureElement backend: what the station and the agent rely on must
 * hold for a PIV card and a PKCS#11 token alike. A backend's test file calls
 * `describeSecureElementSuite(name, factory)`; the factory hands over a personalised element (keys
 * generated on the element, certificates issued by a test token CA) and says what the backend can do.
 */
import { generateKeyPairSync, sign as nodeSign, verify as nodeVerify, X509Certificate } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ECDSA_PROFILES, ecdsaRawToDer } from "../../src/crypto/ecdsa.js";
import {
  CardFullError,
  CardNotTrustedError,
  ExitCode,
  PinBlockedError,
  PinRequiredError,
  WrongPinError,
} from "../../src/errors.js";
import {
  newChallenge,
  type SecureElement,
  type SecureElementIdentity,
  verifyChallengeProof,
} from "../../src/secure-element/secure-element.js";
import { requireOrSkipReason } from "../helpers/pcsc-env.js";

export interface SecureElementFixture {
  /** The element under test; replaced by {@link reopen}. */
  element: SecureElement;
  readonly pin: string;
  /** A PIN the element accepts as well formed but that is wrong. */
  readonly wrongPin: string;
  /** The certificates personalisation put on the element. */
  readonly expected: SecureElementIdentity;
  readonly capabilities: {
    /** The element blocks the PIN after `pinRetries` wrong tries (SPEC.md §8). */
    readonly pinLock: boolean;
    /** Retry count of a fresh PIN, or -1 when the element does not report one. */
    readonly pinRetries: number;
  };
  /** Closes the element and opens a new session to the same one (persistence, fresh PIN state). */
  reopen(): Promise<void>;
  /** Closes the element and removes everything the fixture made. */
  dispose(): Promise<void>;
}

export interface SecureElementFactoryOptions {
  readonly signingCurve: "P-256" | "P-384";
}

export type SecureElementFactory = (options: SecureElementFactoryOptions) => Promise<SecureElementFixture>;

export function describeSecureElementSuite(
  name: string,
  factory: SecureElementFactory,
  options: { skip?: string } = {},
): void {
  // Under CI (HSM_ONBOARD_REQUIRE_ALL=1) a backend that cannot run fails instead of skipping.
  const skip = requireOrSkipReason(options.skip);
  describe.skipIf(skip !== undefined)(`SecureElement contract: ${name}`, () => {
    let f: SecureElementFixture;
    beforeEach(async () => {
      f = await factory({ signingCurve: "P-256" });
    });
    afterEach(async () => {
      await f?.dispose();
    });

    describe("identity", () => {
      it("returns the certificates personalisation stored, without a PIN", async () => {
        const identity = await f.element.identity();
        expect(Buffer.from(identity.cardAuthentication)).toEqual(Buffer.from(f.expected.cardAuthentication));
        expect(Buffer.from(identity.signing)).toEqual(Buffer.from(f.expected.signing));
        expect(identity.intermediates.map((c) => Buffer.from(c))).toEqual(
          f.expected.intermediates.map((c) => Buffer.from(c)),
        );
        // Each intermediate really issued the leaves (the chain is in the right order).
        const leaf = new X509Certificate(identity.cardAuthentication);
        const ca = new X509Certificate(identity.intermediates[0]!);
        expect(leaf.checkIssued(ca)).toBe(true);
        expect(leaf.verify(ca.publicKey)).toBe(true);
      });

      it("is the same after the session is reopened", async () => {
        const before = await f.element.identity();
        await f.reopen();
        const after = await f.element.identity();
        expect(Buffer.from(after.cardAuthentication)).toEqual(Buffer.from(before.cardAuthentication));
      });

      it("describes the element", () => {
        expect(["piv", "pkcs11"]).toContain(f.element.info.backend);
        expect(f.element.info.name.length).toBeGreaterThan(0);
      });
    });

    describe("challenge proof (card authentication, PIN-free)", () => {
      it("signs a fresh challenge that verifies with the card-authentication certificate", async () => {
        const challenge = newChallenge();
        const proof = await f.element.proveChallenge(challenge);
        expect(proof.algorithm).toBe("ES256");
        expect(proof.signature.length).toBe(64);
        expect(() => verifyChallengeProof(f.expected.cardAuthentication, challenge, proof)).not.toThrow();
        // Independently, with node:crypto on the certificate's key.
        const key = new X509Certificate(f.expected.cardAuthentication).publicKey;
        expect(nodeVerify("sha256", challenge, { key, dsaEncoding: "ieee-p1363" }, proof.signature)).toBe(
          true,
        );
      });

      it("fails against a certificate of another key: a copied certificate does not prove the card", async () => {
        const challenge = newChallenge();
        const proof = await f.element.proveChallenge(challenge);
        // The element's own signing certificate holds another key.
        expect(() => verifyChallengeProof(f.expected.signing, challenge, proof)).toThrow(CardNotTrustedError);
        // A card with a copy of this card's certificate but its own key answers with that key.
        const impostor = generateKeyPairSync("ec", { namedCurve: "P-256" });
        const forged = nodeSign("sha256", challenge, { key: impostor.privateKey, dsaEncoding: "ieee-p1363" });
        expect(() =>
          verifyChallengeProof(f.expected.cardAuthentication, challenge, {
            algorithm: "ES256",
            signature: forged,
          }),
        ).toThrow(CardNotTrustedError);
      });

      it("does not verify for another challenge (no replay)", async () => {
        const proof = await f.element.proveChallenge(newChallenge());
        expect(() => verifyChallengeProof(f.expected.cardAuthentication, newChallenge(), proof)).toThrow(
          CardNotTrustedError,
        );
      });

      it("refuses a challenge too short to be fresh", async () => {
        await expect(f.element.proveChallenge(new Uint8Array(8))).rejects.toThrow(RangeError);
      });
    });

    describe("PIN", () => {
      it("reports the tries left of a fresh PIN", async () => {
        expect(await f.element.pinTriesLeft()).toBe(f.capabilities.pinRetries);
      });

      it("accepts the right PIN", async () => {
        await expect(f.element.verifyPin(f.pin)).resolves.toBeUndefined();
      });

      it("rejects a wrong PIN with WrongPinError, without the PIN in the message", async () => {
        const error = await f.element.verifyPin(f.wrongPin).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(WrongPinError);
        const wrong = error as WrongPinError;
        expect(wrong.code).toBe("ERR_WRONG_PIN");
        expect(wrong.exitCode).toBe(ExitCode.wrongPin);
        expect(wrong.message).not.toContain(f.wrongPin);
        expect(String(wrong.stack)).not.toContain(f.wrongPin);
        if (f.capabilities.pinRetries > 0) {
          expect(wrong.triesLeft).toBe(f.capabilities.pinRetries - 1);
          expect(await f.element.pinTriesLeft()).toBe(f.capabilities.pinRetries - 1);
        } else {
          expect(wrong.triesLeft).toBe(-1);
        }
        // The right PIN still works and resets the counter.
        await f.element.verifyPin(f.pin);
      });

      it("blocks the PIN after repeated failures, or documents that the element does not", async () => {
        if (f.capabilities.pinLock) {
          const tries = f.capabilities.pinRetries;
          for (let left = tries - 1; left >= 0; left--) {
            const error = await f.element.verifyPin(f.wrongPin).catch((e: unknown) => e);
            expect(error).toBeInstanceOf(WrongPinError);
            expect((error as WrongPinError).triesLeft).toBe(left);
          }
          expect(await f.element.pinTriesLeft()).toBe(0);
          await expect(f.element.verifyPin(f.pin)).rejects.toThrow(PinBlockedError);
          await expect(f.element.verifyPin(f.wrongPin)).rejects.toThrow(PinBlockedError);
          // Blocked stays blocked in a new session.
          await f.reopen();
          await expect(f.element.verifyPin(f.pin)).rejects.toThrow(PinBlockedError);
        } else {
          // SoftHSM2 has no retry counter: ten failures later the right PIN still works. The
          // guarantee "blocked after 3" then rests on the token (a real HSM or card enforces it).
          for (let i = 0; i < 10; i++) {
            await expect(f.element.verifyPin(f.wrongPin)).rejects.toThrow(WrongPinError);
          }
          await expect(f.element.verifyPin(f.pin)).resolves.toBeUndefined();
        }
      });
    });

    describe("signer (9C)", () => {
      it("needs the PIN first", async () => {
        const signer = await f.element.signer();
        await expect(signer.sign(new Uint8Array([1, 2, 3]))).rejects.toThrow(PinRequiredError);
      });

      it("carries the signing certificate, then the intermediates", async () => {
        const signer = await f.element.signer();
        expect(signer.algorithm).toBe("ES256");
        expect(signer.certificateChain.map((c) => Buffer.from(c))).toEqual(
          [f.expected.signing, ...f.expected.intermediates].map((c) => Buffer.from(c)),
        );
      });

      it("signs with ES256 after the PIN, again and again (PIN policy always)", async () => {
        await f.element.verifyPin(f.pin);
        const signer = await f.element.signer();
        const key = new X509Certificate(f.expected.signing).publicKey;
        for (const message of ["first configuration", "second configuration", "third"]) {
          const data = new TextEncoder().encode(message);
          const raw = await signer.sign(data);
          expect(raw.length).toBe(64);
          expect(nodeVerify("sha256", data, { key, dsaEncoding: "ieee-p1363" }, raw)).toBe(true);
          // The DER form verifies too (what OpenSSL would check).
          expect(nodeVerify("sha256", data, key, ecdsaRawToDer(raw, "ES256"))).toBe(true);
        }
      });

      it("is not the card-authentication key", async () => {
        await f.element.verifyPin(f.pin);
        const data = new TextEncoder().encode("configuration");
        const raw = await (await f.element.signer()).sign(data);
        const cardAuthKey = new X509Certificate(f.expected.cardAuthentication).publicKey;
        expect(nodeVerify("sha256", data, { key: cardAuthKey, dsaEncoding: "ieee-p1363" }, raw)).toBe(false);
      });
    });

    describe("items", () => {
      const bytes = (n: number, seed = 1) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

      it("need the PIN to be written or deleted, not to be read", async () => {
        await expect(f.element.writeItem("manifest", bytes(10))).rejects.toThrow(PinRequiredError);
        await expect(f.element.deleteItem("manifest")).rejects.toThrow(PinRequiredError);
        await expect(f.element.readItem("manifest")).resolves.toBeUndefined();
        await expect(f.element.listItems()).resolves.toEqual(
          f.expected.intermediates.length > 0 ? [{ name: "certificates", size: expect.any(Number) }] : [],
        );
      });

      it("write, read, overwrite, list and delete", async () => {
        await f.element.verifyPin(f.pin);
        await f.element.writeItem("shard-1", bytes(700, 2));
        await f.element.writeItem("manifest", bytes(300));
        await f.element.writeItem("receipt-0", bytes(120, 3));
        await f.element.writeItem("shard-0", bytes(900, 4));
        expect(await f.element.readItem("manifest")).toEqual(bytes(300));
        expect(await f.element.readItem("shard-0")).toEqual(bytes(900, 4));
        expect(await f.element.readItem("shard-2")).toBeUndefined();

        await f.element.writeItem("manifest", bytes(500, 9));
        expect(await f.element.readItem("manifest")).toEqual(bytes(500, 9));
        await f.element.writeItem("manifest", bytes(20, 5));
        expect(await f.element.readItem("manifest")).toEqual(bytes(20, 5));

        const names = (await f.element.listItems()).map((i) => i.name).filter((n) => n !== "certificates");
        expect(names).toEqual(["manifest", "shard-0", "shard-1", "receipt-0"]);
        const sizes = Object.fromEntries((await f.element.listItems()).map((i) => [i.name, i.size]));
        expect(sizes).toMatchObject({ manifest: 20, "shard-0": 900, "shard-1": 700, "receipt-0": 120 });

        expect(await f.element.deleteItem("shard-1")).toBe(true);
        expect(await f.element.deleteItem("shard-1")).toBe(false);
        expect(await f.element.readItem("shard-1")).toBeUndefined();
        expect((await f.element.listItems()).map((i) => i.name)).not.toContain("shard-1");
      });

      it("persist across sessions", async () => {
        await f.element.verifyPin(f.pin);
        await f.element.writeItem("crl", bytes(400, 7));
        await f.element.writeItem("receipt-5", bytes(90, 8));
        await f.reopen();
        expect(await f.element.readItem("crl")).toEqual(bytes(400, 7));
        expect(await f.element.readItem("receipt-5")).toEqual(bytes(90, 8));
        // A new session needs the PIN again before writing.
        await expect(f.element.writeItem("crl", bytes(10))).rejects.toThrow(PinRequiredError);
      });

      it("refuse names outside the item scheme", async () => {
        await f.element.verifyPin(f.pin);
        for (const name of [
          "",
          "Manifest",
          "shard-01",
          "shard--1",
          "shard-96",
          "receipt-128",
          "x",
          "shard-1~pending",
        ]) {
          await expect(f.element.writeItem(name, bytes(4)), name).rejects.toThrow(RangeError);
          await expect(f.element.readItem(name), name).rejects.toThrow(RangeError);
        }
        await expect(f.element.writeItem("manifest", new Uint8Array(0))).rejects.toThrow(RangeError);
      });

      it("hold an item of 3,063 bytes, the largest a YubiKey object takes", async () => {
        await f.element.verifyPin(f.pin);
        const capacity = await f.element.capacity();
        expect(capacity.maxItemBytes).toBe(3063);
        const big = bytes(3063, 11);
        await f.element.writeItem("shard-7", big);
        expect(await f.element.readItem("shard-7")).toEqual(big);
        await f.reopen();
        expect(await f.element.readItem("shard-7")).toEqual(big);
      });
    });

    describe("capacity", () => {
      const bytes = (n: number, seed = 1) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

      it("accounts for writes, overwrites and deletes", async () => {
        await f.element.verifyPin(f.pin);
        const start = await f.element.capacity();
        expect(start.totalBytes).toBe(50225);
        expect(start.usedBytes).toBeGreaterThan(0); // the identity certificates
        expect(start.usedBytes + start.freeBytes).toBe(start.totalBytes);

        await f.element.writeItem("shard-3", bytes(1000));
        expect((await f.element.capacity()).usedBytes).toBe(start.usedBytes + 1000);
        await f.element.writeItem("shard-3", bytes(400));
        expect((await f.element.capacity()).usedBytes).toBe(start.usedBytes + 400);
        await f.element.deleteItem("shard-3");
        expect(await f.element.capacity()).toEqual(start);
      });

      it("refuses an item larger than maxItemBytes with CardFullError, writing nothing", async () => {
        await f.element.verifyPin(f.pin);
        const start = await f.element.capacity();
        const error = await f.element.writeItem("shard-0", bytes(3064)).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(CardFullError);
        expect((error as CardFullError).exitCode).toBe(ExitCode.cardFull);
        expect(await f.element.readItem("shard-0")).toBeUndefined();
        expect(await f.element.capacity()).toEqual(start);
      });

      it("refuses a write beyond the total budget with CardFullError and keeps the old value", async () => {
        await f.element.verifyPin(f.pin);
        let index = 0;
        let full: unknown;
        // 50,225 bytes hold 16 full items at most; stop at the first refusal.
        for (; index < 40; index++) {
          full = await f.element.writeItem(`shard-${index}`, bytes(3063, index)).catch((e: unknown) => e);
          if (full !== undefined) break;
        }
        expect(full).toBeInstanceOf(CardFullError);
        expect(index).toBeGreaterThanOrEqual(14);
        expect(index).toBeLessThanOrEqual(16);
        const atFull = await f.element.capacity();
        expect(atFull.freeBytes).toBeLessThan(3063);
        expect(await f.element.readItem(`shard-${index}`)).toBeUndefined();

        // Exactly the free bytes fit; one more byte, even as an overwrite, does not and keeps the old value.
        const free = atFull.freeBytes;
        if (free > 0) {
          await f.element.writeItem("receipt-0", bytes(free, 3));
          expect((await f.element.capacity()).freeBytes).toBe(0);
          await expect(f.element.writeItem("receipt-0", bytes(free + 1, 4))).rejects.toThrow(CardFullError);
          expect(await f.element.readItem("receipt-0")).toEqual(bytes(free, 3));
          // Replacing with the same size needs no free byte.
          await f.element.writeItem("receipt-0", bytes(free, 5));
          expect(await f.element.readItem("receipt-0")).toEqual(bytes(free, 5));
        }
        // Deleting gives the room back.
        await f.element.deleteItem("shard-0");
        await f.element.writeItem(`shard-${index}`, bytes(3063, 6));
      });
    });

    describe("lifetime", () => {
      it("close() is idempotent and supports await using", async () => {
        await f.element.close();
        await f.element.close();
        await f.element[Symbol.asyncDispose]();
      });
    });
  });

  describe.skipIf(skip !== undefined)(`SecureElement contract: ${name}, P-384 signing key`, () => {
    let f: SecureElementFixture;
    beforeEach(async () => {
      f = await factory({ signingCurve: "P-384" });
    });
    afterEach(async () => {
      await f?.dispose();
    });

    it("signs with ES384", async () => {
      await f.element.verifyPin(f.pin);
      const signer = await f.element.signer();
      expect(signer.algorithm).toBe("ES384");
      const data = new TextEncoder().encode("a configuration signed with P-384");
      const raw = await signer.sign(data);
      expect(raw.length).toBe(ECDSA_PROFILES.ES384.size * 2);
      const key = new X509Certificate(f.expected.signing).publicKey;
      expect(nodeVerify("sha384", data, { key, dsaEncoding: "ieee-p1363" }, raw)).toBe(true);
    });
  });
}
