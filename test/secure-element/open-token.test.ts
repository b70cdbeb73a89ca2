/**
 * Waiting for a PKCS#11 token (`--token`): on SoftHSM2, which never raises a slot event
 * (CKR_NO_EVENT for CKF_DONT_BLOCK), by bounded polling — a token initialised while the wait runs is
 * found, none at all is NoCardError at the deadline, a deleted one ends the removal wait; why the
 * wait initialises SoftHSM2 again rather than only polling C_GetSlotList (its slot list is built at
 * C_Initialize); on a module with slot events (the fake), by C_WaitForSlotEvent(CKF_DONT_BLOCK), the
 * slot list read only after an event.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { NoCardError, UsageError } from "../../src/errors.js";
import { CKF_DONT_BLOCK } from "../../src/pkcs11/constants.js";
import { type Handle, Pkcs11ModuleRegistry } from "../../src/pkcs11/module.js";
import { matchingTokenSlots } from "../../src/pkcs11/pkcs11-token.js";
import { parsePkcs11TokenUri } from "../../src/pkcs11/uri.js";
import {
  openToken,
  type TokenWaitMode,
  waitForToken,
  waitForTokenRemoval,
} from "../../src/secure-element/open-token.js";
import { requireOrSkipReason } from "../helpers/pcsc-env.js";
import { createSoftHsmToken, type SoftHsmToken, softHsmUnavailableReason } from "../helpers/softhsm.js";
import { FakeCkError, FakePkcs11, type FakeToken } from "../pkcs11/fake-module.js";

const exec = promisify(execFile);
const skip = requireOrSkipReason(softHsmUnavailableReason());

let hsm: SoftHsmToken | undefined;
afterEach(async () => {
  await hsm?.dispose();
  hsm = undefined;
});

const uriFor = (modulePath: string, label: string) =>
  parsePkcs11TokenUri(`pkcs11:token=${encodeURIComponent(label)}?module-path=${modulePath}`);

describe.skipIf(skip)("openToken on SoftHSM2", () => {
  it("finds a token initialised while it waits (polling, the module re-initialised), then sees it deleted", async () => {
    hsm = await createSoftHsmToken();
    const late = `late-${process.pid}`;
    const registry = new Pkcs11ModuleRegistry();
    const prompts: string[] = [];
    const started = Date.now();
    const init = (async () => {
      await new Promise((r) => setTimeout(r, 300));
      await exec(
        "softhsm2-util",
        ["--init-token", "--free", "--label", late, "--pin", "123456", "--so-pin", "12345678"],
        { env: hsm?.env },
      );
    })();
    const card = await openToken(uriFor(hsm.modulePath, late), {
      timeoutMs: 10_000,
      pollMs: 100,
      registry,
      onPrompt: (p) => prompts.push(p.reader ?? ""),
    });
    await init;
    try {
      expect(card.element.info).toMatchObject({ backend: "pkcs11", name: late, channel: { kind: "token" } });
      expect(card.readerName).toContain(late);
      expect(prompts).toEqual([`PKCS#11 token "${late}"`]);
      expect(Date.now() - started).toBeLessThan(8_000);
    } finally {
      await card.dispose();
    }
    expect(registry.activeLeases(hsm.modulePath)).toBe(0);
    const removed = card.waitForRemoval?.({});
    await exec("softhsm2-util", ["--delete-token", "--token", late], { env: hsm.env });
    await removed;
    expect(registry.activeLeases(hsm.modulePath)).toBe(0);
  });

  it("SoftHSM2 lists only the tokens it found at C_Initialize: polling the slot list of a module kept initialised never finds a token made since; initialised again, it does (why the wait re-initialises)", async () => {
    hsm = await createSoftHsmToken();
    const late = `late-${process.pid}`;
    const registry = new Pkcs11ModuleRegistry();
    const held = await registry.acquire(hsm.modulePath); // kept initialised for the whole test
    try {
      const before = held.api.C_GetSlotList(true).length;
      await exec(
        "softhsm2-util",
        ["--init-token", "--free", "--label", late, "--pin", "123456", "--so-pin", "12345678"],
        { env: hsm.env },
      );
      // softhsm2-util sees it (its own C_Initialize, after the token was made) …
      expect((await exec("softhsm2-util", ["--show-slots"], { env: hsm.env })).stdout).toContain(late);
      // … the module initialised before does not, however often its slots are listed.
      for (let i = 0; i < 5; i++) {
        expect(matchingTokenSlots(held.api, { tokenLabel: late })).toEqual([]);
        expect(held.api.C_GetSlotList(true)).toHaveLength(before);
      }
      // The wait while another user holds the module polls the slot list only (no re-initialisation):
      // it runs out.
      const polled: TokenWaitMode[] = [];
      const error = await waitForToken(
        hsm.modulePath,
        { tokenLabel: late },
        { registry, pollMs: 50, deadline: Date.now() + 400, onWaiting: (m) => polled.push(m) },
      ).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(NoCardError);
      expect(polled).toEqual(["poll"]);
    } finally {
      held.release();
    }
    expect(registry.activeLeases(hsm.modulePath)).toBe(0);
    // Its only user, the wait finalises and initialises the module again: the token is there.
    const found: TokenWaitMode[] = [];
    const lease = await waitForToken(
      hsm.modulePath,
      { tokenLabel: late },
      { registry, pollMs: 50, deadline: Date.now() + 5_000, onFound: (m) => found.push(m) },
    );
    try {
      expect(matchingTokenSlots(lease.api, { tokenLabel: late })).toHaveLength(1);
      expect(found).toEqual(["present"]);
    } finally {
      lease.release();
    }
  });

  it("gives up at the deadline with NoCardError, saying how it waited", async () => {
    hsm = await createSoftHsmToken();
    const registry = new Pkcs11ModuleRegistry();
    const started = Date.now();
    const error = await openToken(uriFor(hsm.modulePath, "nobody"), {
      timeoutMs: 400,
      pollMs: 100,
      registry,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NoCardError);
    expect((error as Error).message).toMatch(/label "nobody".*looked every 100 ms/);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(registry.activeLeases(hsm.modulePath)).toBe(0);
  });
});

/** A module with slot events: a token "inserted" raises one event. */
class EventfulFake extends FakePkcs11 {
  pending: Handle[] = [];
  slotListCalls = 0;
  C_WaitForSlotEvent(flags: number): Handle | null {
    if (flags !== CKF_DONT_BLOCK) throw new FakeCkError("CKR_ARGUMENTS_BAD", 0x7);
    return this.pending.shift() ?? null;
  }
  override C_GetSlotList(): Handle[] {
    this.slotListCalls++;
    return super.C_GetSlotList();
  }
  insert(token: FakeToken): void {
    this.tokens.push(token);
    this.pending.push(Buffer.of(this.tokens.length - 1, 0, 0, 0, 0, 0, 0, 0));
  }
}

describe("waitForToken with slot events (fake module)", () => {
  it("says the token was found after a slot event, the events drained", async () => {
    const fake = new EventfulFake([]);
    const registry = new Pkcs11ModuleRegistry(() => fake);
    const waited: TokenWaitMode[] = [];
    const found: TokenWaitMode[] = [];
    setTimeout(
      () => fake.insert({ label: "eToken", serialNumber: "0a1b", flags: 0, onLogin: () => {} }),
      200,
    );
    const lease = await waitForToken(
      "fake.so",
      { tokenLabel: "eToken" },
      {
        registry,
        pollMs: 20,
        deadline: Date.now() + 5_000,
        onWaiting: (m) => waited.push(m),
        onFound: (m) => found.push(m),
      },
    );
    lease.release();
    expect(waited).toEqual(["poll"]);
    expect(found).toEqual(["slot-event"]);
    expect(fake.pending).toEqual([]);
    expect(registry.activeLeases("fake.so")).toBe(0);
  });

  it("stops at once when aborted, and refuses URIs naming an object or no token", async () => {
    const registry = new Pkcs11ModuleRegistry(() => new EventfulFake([]));
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    await expect(
      openToken(parsePkcs11TokenUri("pkcs11:token=x?module-path=/fake.so"), {
        timeoutMs: 60_000,
        signal: controller.signal,
        registry,
      }),
    ).rejects.toThrow(/abort/i);
    expect(registry.activeLeases("/fake.so")).toBe(0);
    for (const text of ["pkcs11:token=x;object=k?module-path=/f.so", "pkcs11:slot-id=1?module-path=/f.so"]) {
      await expect(openToken(parsePkcs11TokenUri(text), { timeoutMs: 100, registry })).rejects.toThrow(
        UsageError,
      );
    }
  });
});

it("removal wait ends when aborted", async () => {
  const fake = new EventfulFake([{ label: "t", serialNumber: "1", flags: 0, onLogin: () => {} }]);
  const registry = new Pkcs11ModuleRegistry(() => fake);
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 60);
  await waitForTokenRemoval(
    "fake.so",
    { tokenLabel: "t" },
    { registry, pollMs: 20, signal: controller.signal },
  );
  expect(registry.activeLeases("fake.so")).toBe(0);
});
