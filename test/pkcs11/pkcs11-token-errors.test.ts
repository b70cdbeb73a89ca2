/**
 * Error mapping and module bookkeeping of the PKCS#11 layer, over a fake module: the return values
 * SoftHSM2 never produces (CKR_PIN_LOCKED, the PIN flags, a full or removed token) still become the
 * project's typed errors.
 */
import { describe, expect, it } from "vitest";
import {
  CardFullError,
  NoCardError,
  PinBlockedError,
  PinRequiredError,
  WrongPinError,
} from "../../src/errors.js";
import {
  CKF_USER_PIN_COUNT_LOW,
  CKF_USER_PIN_FINAL_TRY,
  CKF_USER_PIN_LOCKED,
  CKU_USER,
} from "../../src/pkcs11/constants.js";
import { Pkcs11Error, Pkcs11UnavailableError } from "../../src/pkcs11/errors.js";
import { Pkcs11ModuleRegistry } from "../../src/pkcs11/module.js";
import { Pkcs11Token } from "../../src/pkcs11/pkcs11-token.js";
import { FakePkcs11 as Fake, FakeCkError, type FakePkcs11, type FakeToken } from "./fake-module.js";

const PIN = "246810";

function fakeToken(overrides: Partial<FakeToken> = {}): FakeToken {
  return {
    label: "card",
    serialNumber: "0001",
    flags: 0x40d,
    onLogin: (pin, userType) => {
      if (userType === CKU_USER && pin !== PIN) throw new FakeCkError("CKR_PIN_INCORRECT", 0xa0);
    },
    ...overrides,
  };
}

function setup(tokens: FakeToken[] = [fakeToken()]): { fake: FakePkcs11; registry: Pkcs11ModuleRegistry } {
  const fake = new Fake(tokens);
  return { fake, registry: new Pkcs11ModuleRegistry(() => fake) };
}

const open = (registry: Pkcs11ModuleRegistry, tokenLabel = "card") =>
  Pkcs11Token.open({ modulePath: "fake-module.so", tokenLabel, registry });

describe("module registry", () => {
  it("initialises a module once for all its users and finalises it with the last", async () => {
    const { fake, registry } = setup();
    const a = await open(registry);
    const b = await open(registry);
    expect(fake.initializeCalls).toBe(1);
    expect(registry.activeLeases("fake-module.so")).toBe(2);
    a.close();
    expect(fake.finalizeCalls).toBe(0);
    b.close();
    b.close(); // twice is harmless
    expect(fake.finalizeCalls).toBe(1);
    expect(registry.activeLeases("fake-module.so")).toBe(0);
    expect(fake.openSessions.size).toBe(0);
    // The next user initialises it again (SoftHSM2 then rereads SOFTHSM2_CONF).
    (await open(registry)).close();
    expect(fake.initializeCalls).toBe(2);
  });

  it("never finalises a module someone else in the process initialised", async () => {
    const { fake, registry } = setup();
    fake.alreadyInitialized = true;
    (await open(registry)).close();
    expect(fake.finalizeCalls).toBe(0);
  });

  it("reports a module that cannot be loaded, or a missing binding, as Pkcs11UnavailableError", async () => {
    const { registry } = setup();
    await expect(
      Pkcs11Token.open({ modulePath: "/nowhere/missing.so", tokenLabel: "card", registry }),
    ).rejects.toThrow(Pkcs11UnavailableError);
    const noBinding = new Pkcs11ModuleRegistry(() => {
      throw new Pkcs11UnavailableError("PKCS#11 support needs the optional native package pkcs11js");
    });
    await expect(
      Pkcs11Token.open({ modulePath: "fake-module.so", tokenLabel: "card", registry: noBinding }),
    ).rejects.toThrow(/pkcs11js/);
  });

  it("releases the module when opening the session fails", async () => {
    const { fake, registry } = setup();
    fake.failOpenSession = new FakeCkError("CKR_DEVICE_REMOVED", 0x32);
    await expect(open(registry)).rejects.toThrow(NoCardError);
    expect(registry.activeLeases("fake-module.so")).toBe(0);
    expect(fake.finalizeCalls).toBe(1);
  });
});

describe("finding the token", () => {
  it("finds a token by label or serial, whatever its slot", async () => {
    const { registry } = setup([
      fakeToken({ label: "other", serialNumber: "0009" }),
      fakeToken({ label: "card", serialNumber: "0042" }),
    ]);
    const byLabel = await open(registry);
    expect(byLabel.description).toMatchObject({ label: "card", serialNumber: "0042", manufacturer: "Fake" });
    byLabel.close();
    const bySerial = await Pkcs11Token.open({ modulePath: "fake-module.so", tokenSerial: "0009", registry });
    expect(bySerial.description.label).toBe("other");
    bySerial.close();
  });

  it("says NoCardError when no token has the label, and refuses an ambiguous label", async () => {
    const { registry } = setup([fakeToken(), fakeToken({ serialNumber: "0002" })]);
    await expect(open(registry, "absent")).rejects.toThrow(NoCardError);
    await expect(open(registry)).rejects.toThrow(/2 tokens/);
    expect(registry.activeLeases("fake-module.so")).toBe(0);
  });
});

describe("PIN", () => {
  it("maps CKR_PIN_INCORRECT to WrongPinError, tries unknown (-1) without flags", async () => {
    const { registry } = setup();
    const token = await open(registry);
    const error = await Promise.resolve()
      .then(() => token.login("999999"))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WrongPinError);
    expect((error as WrongPinError).triesLeft).toBe(-1);
    expect((error as Error).message).toMatch(/does not report/);
    expect((error as Error).message).not.toContain("999999");
    token.login(PIN);
    expect(token.loggedIn).toBe(true);
    token.close();
  });

  it("estimates the tries left from CKF_USER_PIN_FINAL_TRY and CKF_USER_PIN_LOCKED", async () => {
    const card = fakeToken();
    const { registry } = setup([card]);
    const token = await open(registry);
    card.onLogin = () => {
      card.flags |= CKF_USER_PIN_COUNT_LOW;
      throw new FakeCkError("CKR_PIN_INCORRECT", 0xa0);
    };
    expect(() => token.login("1")).toThrow(/few tries left/);
    card.onLogin = () => {
      card.flags |= CKF_USER_PIN_FINAL_TRY;
      throw new FakeCkError("CKR_PIN_INCORRECT", 0xa0);
    };
    expect(() => token.login("1")).toThrow(expect.objectContaining({ triesLeft: 1 }));
    expect(token.pinStatus()).toMatchObject({ triesLeft: 1, finalTry: true, countLow: true, locked: false });
    card.onLogin = () => {
      card.flags = (card.flags & ~CKF_USER_PIN_FINAL_TRY) | CKF_USER_PIN_LOCKED;
      throw new FakeCkError("CKR_PIN_INCORRECT", 0xa0);
    };
    expect(() => token.login("1")).toThrow(expect.objectContaining({ name: "WrongPinError", triesLeft: 0 }));
    card.onLogin = () => {
      throw new FakeCkError("CKR_PIN_LOCKED", 0xa4);
    };
    expect(() => token.login(PIN)).toThrow(PinBlockedError);
    expect(token.pinStatus()).toMatchObject({ triesLeft: 0, locked: true });
    token.close();
  });

  it("maps a PIN of the wrong length to WrongPinError that says so", async () => {
    const card = fakeToken({
      onLogin: () => {
        throw new FakeCkError("CKR_PIN_LEN_RANGE", 0xa2);
      },
    });
    const { registry } = setup([card]);
    const token = await open(registry);
    expect(() => token.login("1")).toThrow(/length/);
    token.close();
  });
});

describe("other return values", () => {
  it("CKR_DEVICE_MEMORY is CardFullError, CKR_USER_NOT_LOGGED_IN is PinRequiredError", async () => {
    const card = fakeToken({ createError: new FakeCkError("CKR_DEVICE_MEMORY", 0x31) });
    const { registry } = setup([card]);
    const token = await open(registry);
    expect(() => token.writeData("manifest", new Uint8Array(10))).toThrow(CardFullError);
    expect(() => token.generateEcKeyPair({ label: "k", curve: "P-256" })).toThrow(PinRequiredError);
    token.close();
  });

  it("a token pulled mid-session is NoCardError; an unknown value is Pkcs11Error with its name", async () => {
    const card = fakeToken({ createError: new FakeCkError("CKR_FUNCTION_FAILED", 0x6) });
    const { registry } = setup([card]);
    const token = await open(registry);
    const key = {
      handle: Buffer.alloc(8),
      label: "k",
      id: new Uint8Array(),
      curve: "P-256" as const,
      requiresLogin: false,
      alwaysAuthenticate: false,
    };
    expect(() => token.signDigest(key, new Uint8Array(32))).toThrow(NoCardError);
    const error = (() => {
      try {
        token.writeData("manifest", new Uint8Array(1));
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(Pkcs11Error);
    expect((error as Pkcs11Error).rv).toBe(0x6);
    expect((error as Error).message).toContain("C_CreateObject failed: CKR_0x00000006");
    token.close();
  });

  it("refuses to work on a closed session", async () => {
    const { registry } = setup();
    const token = await open(registry);
    token[Symbol.dispose]();
    expect(token.closed).toBe(true);
    expect(() => token.readData("manifest")).toThrow(/closed/);
  });

  it("asks for the PIN before signing with an always-authenticate key", async () => {
    const { registry } = setup();
    const token = await open(registry);
    const key = {
      handle: Buffer.alloc(8),
      label: "sig",
      id: new Uint8Array(),
      curve: "P-256" as const,
      requiresLogin: true,
      alwaysAuthenticate: true,
    };
    expect(() => token.signDigest(key, new Uint8Array(32))).toThrow(PinRequiredError);
    token.close();
  });
});
