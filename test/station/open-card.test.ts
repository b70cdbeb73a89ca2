/**
 * openCard over PC/SC, with the in-memory pcsclite stand-in (test/transport/fake-pcsclite.ts) whose
 * card answers with the project's virtual PIV card: the whole path ReaderWatcher → PcscTransport →
 * PivSession → PivElement runs as with pcscd, only the native binding is replaced.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { virtualCardOpener } from "../../src/card-emulator/open-virtual-card.js";
import type { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { cardOpener, VIRTUAL_CARD_ENV } from "../../src/cli/card-opener.js";
import { NoCardError } from "../../src/errors.js";
import { ApplicationNotAvailableError } from "../../src/piv/errors.js";
import { type CardOpener, type CardPrompt, openCard } from "../../src/secure-element/open-card.js";
import { type FakeCard, fakeBinding } from "../transport/fake-pcsclite.js";
import {
  makePki,
  personaliseCard,
  personaliseCardFile,
  removeTempDirs,
  type TestPki,
  tempDir,
} from "./fixtures.js";

const ATR = Uint8Array.from(Buffer.from("3BF81300008131FE15597562696B657934D4", "hex"));

let pki: TestPki;
beforeAll(async () => {
  pki = await makePki();
});
afterAll(removeTempDirs);

/** Waits (bounded, in 10 ms steps) until `condition` holds. */
async function until(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function asFakeCard(card: VirtualPivCard): FakeCard {
  card.powerOn();
  return { atr: ATR, transmit: (command) => Buffer.from(card.transmit(new Uint8Array(command))) };
}

describe("openCard over PC/SC", () => {
  it("takes a card that is already present, without a prompt, and releases everything on dispose", async () => {
    const { card, identity } = await personaliseCard(pki);
    const fake = fakeBinding(["Yubico YubiKey OTP+FIDO+CCID 00 00"], (f) =>
      f.prepare("Yubico YubiKey OTP+FIDO+CCID 00 00").insert(asFakeCard(card)),
    );
    const prompts: CardPrompt[] = [];
    const opened = await openCard({
      timeoutMs: 2000,
      pcsc: { binding: fake.factory, readyTimeoutMs: 1000 },
      onPrompt: (p) => prompts.push(p),
    });
    expect(prompts).toEqual([]);
    expect(opened.readerName).toBe("Yubico YubiKey OTP+FIDO+CCID 00 00");
    expect(opened.element.info).toMatchObject({ backend: "piv", serial: String(card.serial) });
    expect(Buffer.from((await opened.element.identity()).cardAuthentication)).toEqual(
      Buffer.from(identity.cardAuthentication),
    );
    const reader = fake.instances[0]!.reader("Yubico YubiKey OTP+FIDO+CCID 00 00");
    expect(reader.connected).toBe(true);
    await opened.dispose();
    await opened.dispose(); // idempotent
    expect(reader.connected).toBe(false);
    expect(reader.disconnects).toEqual([1]); // SCARD_RESET_CARD: the verified PIN does not outlive us
    await new Promise((r) => setImmediate(r));
    expect(reader.closed).toBe(true);
  });

  it("prompts once when no card is there, then opens the card inserted into the matching reader", async () => {
    const { card } = await personaliseCard(pki);
    const fake = fakeBinding(["Virtual PCD 00 00", "Virtual PCD 00 01"]);
    const prompts: CardPrompt[] = [];
    const opening = openCard({
      reader: "00 01",
      timeoutMs: 2000,
      pcsc: { binding: fake.factory, readyTimeoutMs: 1000 },
      onPrompt: (p) => prompts.push(p),
    });
    await until(() => prompts.length > 0, 3000);
    expect(prompts).toEqual([{ reader: "00 01", readers: ["Virtual PCD 00 00", "Virtual PCD 00 01"] }]);
    // A card in the other reader does not count.
    fake.instances[0]!.reader("Virtual PCD 00 00").insert({ atr: ATR });
    fake.instances[0]!.reader("Virtual PCD 00 01").insert(asFakeCard(card));
    const opened = await opening;
    expect(opened.readerName).toBe("Virtual PCD 00 01");
    expect(await opened.element.pinTriesLeft()).toBe(3);
    await opened.dispose();
    expect(prompts).toHaveLength(1);
  });

  it("gives up with NoCardError (exit 10) after the timeout and stops watching", async () => {
    const fake = fakeBinding([]);
    const started = Date.now();
    let prompted = 0;
    const error = await openCard({
      timeoutMs: 150,
      pcsc: { binding: fake.factory, readyTimeoutMs: 1000 },
      onPrompt: ({ readers }) => {
        prompted++;
        expect(readers).toEqual([]);
      },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NoCardError);
    expect((error as NoCardError).exitCode).toBe(10);
    expect(prompted).toBe(1);
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it("waits again when the card cannot be connected at first (pulled between event and connect)", async () => {
    const { card } = await personaliseCard(pki);
    const fake = fakeBinding(["R"], (f) => {
      const reader = f.prepare("R");
      reader.connectError = new Error("SCardConnect error: Card was removed.(0x80100069)");
      reader.insert(asFakeCard(card));
      setTimeout(() => {
        reader.connectError = undefined;
      }, 50);
    });
    const opened = await openCard({ timeoutMs: 3000, pcsc: { binding: fake.factory, readyTimeoutMs: 1000 } });
    expect(opened.readerName).toBe("R");
    await opened.dispose();
  });

  it("refuses a card without the PIV application (exit 11) and disconnects it", async () => {
    const fake = fakeBinding(["R"], (f) =>
      f.prepare("R").insert({ atr: ATR, transmit: () => Buffer.from([0x6a, 0x82]) }),
    );
    const error = await openCard({
      timeoutMs: 1000,
      pcsc: { binding: fake.factory, readyTimeoutMs: 1000 },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApplicationNotAvailableError);
    expect((error as ApplicationNotAvailableError).exitCode).toBe(11);
    expect(fake.instances[0]!.reader("R").connected).toBe(false);
  });
});

describe("a virtual card state file, injected as a CardOpener", () => {
  it("opens the card in the file in-process", async () => {
    const path = join(await tempDir("card"), "card.json");
    const { card } = await personaliseCardFile(pki, path);
    const opened = await virtualCardOpener(path)({ timeoutMs: 10 });
    expect(opened.readerName).toBe("Virtual card card.json");
    expect(opened.inProcess).toBe(true);
    expect(opened.element.info.serial).toBe(String(card.serial));
    await opened.dispose();
  });

  it("does not invent a factory-fresh card for a missing file (exit 10)", async () => {
    const path = join(await tempDir("card"), "absent.json");
    const error = await virtualCardOpener(path, VIRTUAL_CARD_ENV)({ timeoutMs: 10 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NoCardError);
    expect((error as Error).message).toBe(`no virtual card state at ${path} (${VIRTUAL_CARD_ENV})`);
  });

  it("the CLI context chooses: the injected opener, else the file HSM_ONBOARD_VIRTUAL_CARD names, else PC/SC", async () => {
    const dir = await tempDir("card");
    const { card } = await personaliseCardFile(pki, join(dir, "env.json"));
    const base = {
      stdin: process.stdin,
      stdout: process.stdout,
      stderr: process.stderr,
      cwd: dir,
      exitCode: 0,
    };
    const fromEnv = await cardOpener({ ...base, env: { [VIRTUAL_CARD_ENV]: "env.json" } })({ timeoutMs: 10 });
    expect(fromEnv.readerName).toBe("Virtual card env.json");
    expect(fromEnv.element.info.serial).toBe(String(card.serial));
    await fromEnv.dispose();
    const injected: CardOpener = async () => {
      throw new NoCardError("injected opener called");
    };
    const ctx = { ...base, env: { [VIRTUAL_CARD_ENV]: "env.json" }, openCard: injected };
    expect(cardOpener(ctx)).toBe(injected);
    expect(cardOpener({ ...base, env: {} })).toBe(openCard);
  });
});
