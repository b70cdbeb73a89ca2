import { closeSync, fstatSync, openSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { loadDeviceIdentity } from "../../src/agent/device-identity.js";
import { pinCommandSource } from "../../src/agent/pin-command.js";
import { backoffMs, priorityOf, SdNotifier, stderrIsJournal, withPriority } from "../../src/agent/service.js";
import { AgentStateStore } from "../../src/agent/state-store.js";
import { UsageError } from "../../src/errors.js";
import { listenNotifySocket } from "../helpers/notify-socket.js";
import { requireOrSkip, toolAvailable } from "../helpers/pcsc-env.js";
import { createTestPki, initAgent, type TestPki, tempDir } from "./fixtures.js";

const notifyCap = requireOrSkip(
  toolAvailable("systemd-notify") && toolAvailable("python3")
    ? { ok: true, reason: "" }
    : { ok: false, reason: "systemd-notify or python3 not installed" },
);

let base: { dir: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  base = await tempDir("hsm-service-");
});
afterAll(async () => {
  await base.cleanup();
});

describe.skipIf(!notifyCap.ok)("sd_notify through systemd-notify into a real datagram socket", () => {
  test("READY, STATUS and WATCHDOG arrive in order, attributed to this process; nothing without NOTIFY_SOCKET", async () => {
    const socketPath = join(base.dir, "notify.sock");
    const listener = await listenNotifySocket(socketPath, join(base.dir, "notify.log"));
    try {
      const notifier = new SdNotifier({
        env: { ...process.env, NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: "200000" },
      });
      expect(notifier.watchdogMs()).toBe(200);
      await notifier.ready("waiting for a card");
      notifier.startWatchdog();
      await notifier.status("card: onboarding");
      await sleep(350);
      await notifier.stop();
      const raw = await listener.messages();
      // systemd-notify (252) names this process in every message (MAINPID=, from --pid) and follows
      // each with a BARRIER=1 datagram (it waits until the manager has read it).
      const messages = raw.filter((m) => m[0] !== "BARRIER=1");
      for (const m of messages) expect(m[0]).toBe(`MAINPID=${process.pid}`);
      const fields = messages.map((m) => m.slice(1));
      expect(fields[0]).toEqual(["READY=1", "STATUS=waiting for a card"]);
      expect(fields).toContainEqual(["STATUS=card: onboarding"]);
      // The watchdog: one at once, then every 100 ms (half of WATCHDOG_USEC).
      expect(fields.filter((m) => m[0] === "WATCHDOG=1").length).toBeGreaterThanOrEqual(3);
      expect(notifier.sent).toBe(messages.length);

      const silent = new SdNotifier({ env: { PATH: process.env.PATH } });
      await silent.ready("x");
      expect(silent.enabled).toBe(false);
      expect(silent.sent).toBe(0);
      // WATCHDOG_PID naming another process: no watchdog for this one.
      expect(
        new SdNotifier({
          env: { NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: "1000", WATCHDOG_PID: "1" },
        }).watchdogMs(),
      ).toBeUndefined();
    } finally {
      await listener.stop();
    }
  });

  test("a socket nobody listens on is reported once, never thrown", async () => {
    const errors: string[] = [];
    const notifier = new SdNotifier({
      env: { ...process.env, NOTIFY_SOCKET: join(base.dir, "nobody.sock") },
      onError: (m) => errors.push(m),
    });
    await notifier.ready("a");
    await notifier.status("b");
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/cannot notify the service manager through systemd-notify/);
  });
});

describe("journal priorities", () => {
  test("<N> prefixes only when JOURNAL_STREAM names the stderr file itself", () => {
    const file = join(base.dir, "journal-stand-in");
    const fd = openSync(file, "w");
    try {
      const s = fstatSync(fd);
      expect(stderrIsJournal({ JOURNAL_STREAM: `${s.dev}:${s.ino}` }, fd)).toBe(true);
      expect(stderrIsJournal({ JOURNAL_STREAM: `${s.dev}:${s.ino + 1}` }, fd)).toBe(false);
      expect(stderrIsJournal({ JOURNAL_STREAM: "garbage" }, fd)).toBe(false);
      expect(stderrIsJournal({}, fd)).toBe(false);
    } finally {
      closeSync(fd);
    }
    expect(withPriority("agent: PIN verified", true, priorityOf("PIN verified"))).toBe(
      "<6>agent: PIN verified",
    );
    expect(priorityOf("failed (13): wrong PIN")).toBe(3);
    expect(priorityOf("PC/SC service gone (x); waiting 1 s for it")).toBe(4);
    expect(priorityOf("cannot use this card: no PIV")).toBe(4);
    expect(withPriority("agent: x", false)).toBe("agent: x");
  });

  test("backoff: 1 s doubling, capped", () => {
    expect([0, 1, 2, 3, 4, 5, 6, 50].map((n) => backoffMs(n))).toEqual([
      1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000,
    ]);
  });
});

describe("the PIN from a front-panel program (--pin-command)", () => {
  test("it is told the card and officer in its environment; the first line of its output is the PIN", async () => {
    const seen = join(base.dir, "front-panel.env");
    const source = pinCommandSource({
      command: `env | grep -E '^HSM_ONBOARD_(CARD|HSM|PIN)_' | sort > '${seen}'; printf 'S3cret\\nignored\\n'`,
    });
    const pin = await source.read("PIN", {
      hsmSerial: "1234567",
      owner: "ACME Bank",
      officer: "Alice Officer",
      subject: "CN=card, O=ACME Bank",
      cardSerial: "42",
      triesLeft: 3,
    });
    expect(pin).toBe("S3cret");
    expect((await readFile(seen, "utf8")).trim().split("\n")).toEqual([
      "HSM_ONBOARD_CARD_OFFICER=Alice Officer",
      "HSM_ONBOARD_CARD_OWNER=ACME Bank",
      "HSM_ONBOARD_CARD_SERIAL=42",
      "HSM_ONBOARD_CARD_SUBJECT=CN=card, O=ACME Bank",
      "HSM_ONBOARD_HSM_SERIAL=1234567",
      "HSM_ONBOARD_PIN_FOR=PIN",
      "HSM_ONBOARD_PIN_TRIES=3",
    ]);
  });

  test("a failing, silent or slow program is a UsageError that never quotes its output", async () => {
    const failing = pinCommandSource({ command: "echo Leak1234; exit 3" });
    const error = await failing.read("PIN").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UsageError);
    expect((error as Error).message).toMatch(/failed \(exit 3\); no PIN given/);
    expect((error as Error).message).not.toContain("Leak1234");
    await expect(pinCommandSource({ command: "true" }).read("PIN")).rejects.toThrow(/printed no PIN/);
    await expect(pinCommandSource({ command: "sleep 5", timeoutMs: 200 }).read("PIN")).rejects.toThrow(
      /gave no PIN within 0.2 s/,
    );
  });
});

describe("factory-init owns the device key", () => {
  let testPki: TestPki;
  beforeAll(async () => {
    testPki = await createTestPki(join(base.dir, "pki"));
  }, 60_000);

  test("a key directory is copied into the state directory (key 0600), and the state names the copy", async () => {
    const { stateDir, deviceDir } = await initAgent(base.dir, testPki, { name: "owned" });
    const { state } = await AgentStateStore.open(stateDir);
    expect(state.device).toBe(join(stateDir, "device"));
    expect(state.device.startsWith(deviceDir)).toBe(false);
    expect((await stat(join(stateDir, "device"))).mode & 0o777).toBe(0o700);
    expect((await stat(join(stateDir, "device", "device.key.pem"))).mode & 0o777).toBe(0o600);
    expect(await readFile(join(stateDir, "device", "device.key.pem"))).toEqual(
      await readFile(join(deviceDir, "device.key.pem")),
    );
    // The copy signs on its own: the issue-device output may go.
    const identity = await loadDeviceIdentity(state.device);
    try {
      expect(identity.signer.certificateChain.length).toBeGreaterThan(0);
    } finally {
      await identity.close();
    }
  });
});
