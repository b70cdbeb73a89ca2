/**
 * `hsm-onboard card emulate`: the compiled CLI runs the virtual PIV card in a private pcscd's vpcd
 * reader; a PC/SC client child (src/transport) and opensc-tool see it as a real card.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { YUBIKEY_5_ATR_CONTACT, YUBIKEY_5_ATR_CONTACTLESS } from "../../src/card-emulator/profiles.js";
import { type PrivatePcscd, startPrivatePcscd } from "../../src/sim/pcscd.js";
import { runCliInProcess } from "../helpers/cli.js";
import {
  buildForChildren,
  cliLauncher,
  command,
  NodeChild,
  type PrivateBuild,
  pcscClientLauncher,
  pcscE2eCapability,
  requireOrSkip,
  runTool,
  toolAvailable,
} from "../helpers/pcsc-env.js";

const SELECT_PIV = "00A4040009A0000003080000100000";
const hexOf = (b: Uint8Array) => Buffer.from(b).toString("hex").toUpperCase();

/** A TCP port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 1;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

describe("card emulate without vpcd", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "hsm-onboard-emulate-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("fails with one clear line and exit 10 when vpcd is not there", async () => {
    const port = await closedPort();
    const result = await runCliInProcess(
      ["card", "emulate", "--state", "card.json", "--vpcd", `127.0.0.1:${port}`],
      {
        cwd: dir,
      },
    );
    expect(result.exitCode).toBe(10);
    const errors = result.stderr.split("\n").filter((l) => l.startsWith("hsm-onboard:"));
    expect(errors).toEqual([
      `hsm-onboard: cannot reach vpcd at 127.0.0.1:${port} (connection refused) after 3 attempts: is pcscd running with the vpcd driver?`,
    ]);
    expect(result.stderr).not.toMatch(/at .*\.ts:\d+/); // no stack trace
  });

  it("rejects a bad --vpcd and a state file in a missing directory with exit 2", async () => {
    const bad = await runCliInProcess(["card", "emulate", "--state", "card.json", "--vpcd", "host:99999"], {
      cwd: dir,
    });
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/--vpcd: bad port/);
    const missing = await runCliInProcess(["card", "emulate", "--state", "nowhere/card.json"], { cwd: dir });
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toMatch(/directory .*nowhere does not exist/);
  });
});

const cap = requireOrSkip(pcscE2eCapability());

describe.skipIf(!cap.ok)(`card emulate in a real pcscd${cap.ok ? "" : ` — skipped: ${cap.reason}`}`, () => {
  let build: PrivateBuild;
  let cli: string;
  let launchClient: Awaited<ReturnType<typeof pcscClientLauncher>>;
  let work: string;
  const cleanups: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    build = await buildForChildren([
      "cli/main.js",
      "transport/reader-watcher.js",
      "card-emulator/virtual-piv-card.js",
    ]);
    cli = await cliLauncher(build);
    launchClient = await pcscClientLauncher(build);
    work = await mkdtemp(join(tmpdir(), "hsm-onboard-emulate-e2e-"));
  });

  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  });

  afterAll(async () => {
    await build?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function pcscd(): Promise<PrivatePcscd> {
    const p = await startPrivatePcscd();
    cleanups.push(() => p.stop());
    return p;
  }

  function emulate(p: PrivatePcscd, args: string[]): NodeChild {
    const child = new NodeChild(
      cli,
      {},
      { args: ["card", "emulate", "--vpcd", `127.0.0.1:${p.vpcdPort}`, ...args] },
    );
    cleanups.push(() => child.stop());
    return child;
  }

  it("inserts the card, answers SELECT PIV like a YubiKey, removes it on SIGTERM and exits 0", async () => {
    const p = await pcscd();
    const client = launchClient(p.env);
    cleanups.push(() => client.stop());
    await client.waitForEvent("ready", 5000);

    const state = join(work, "card-a.json");
    const card = emulate(p, ["--state", state]);
    await card.waitForStderr(/inserted: connected to vpcd/, 5000);
    const inserted = await client.waitForEvent("card-inserted", 3000);
    expect(inserted.message.atr).toBe(hexOf(YUBIKEY_5_ATR_CONTACT));
    expect(inserted.message.contactless).toBe(false);

    client.send(command("connect", {}));
    await client.waitForEvent("connected", 3000);
    client.send(command("transmit", { apdu: SELECT_PIV }));
    const selected = await client.waitForEvent("transmitted", 3000);
    // Application property template (SP 800-73-4 Part 2 §3.1.1), then 9000.
    expect((selected.message.responses as string[])[0]).toMatch(/^6111.*9000$/);
    client.send(command("close"));
    await client.waitForEvent("closed", 3000);

    if (toolAvailable("opensc-tool")) {
      const atr = await runTool("opensc-tool", ["-r", "0", "-a"], p.env);
      expect(atr.stdout.replace(/:/g, "").toUpperCase()).toContain(hexOf(YUBIKEY_5_ATR_CONTACT));
    }

    card.signal("SIGTERM");
    expect(await card.exitCode(5000)).toBe(0);
    await client.waitForEvent("card-removed", 3000);
    expect(card.stderr).toMatch(/created card \d+/);
    expect(card.stderr).toMatch(/power on/);
    expect(card.stderr).toMatch(/removed: connection to vpcd closed/);
    expect(card.stderr).not.toMatch(/internal error/);

    // The state survives; the next run loads the same card.
    const saved = JSON.parse(await readFile(state, "utf8")) as { serial: number };
    const again = emulate(p, ["--state", state]);
    await again.waitForStderr(new RegExp(`loaded card ${saved.serial} `), 5000);
    await client.waitForEvent("card-inserted", 3000, inserted.index + 1);
    again.signal("SIGINT");
    expect(await again.exitCode(5000)).toBe(0);
  });

  it("presents the contactless ATR with --contactless, which the transport reports as contactless", async () => {
    const p = await pcscd();
    const client = launchClient(p.env);
    cleanups.push(() => client.stop());
    await client.waitForEvent("ready", 5000);
    const card = emulate(p, ["--state", join(work, "card-b.json"), "--contactless", "--trace"]);
    const inserted = await client.waitForEvent("card-inserted", 5000);
    expect(inserted.message.atr).toBe(hexOf(YUBIKEY_5_ATR_CONTACTLESS));
    expect(inserted.message.contactless).toBe(true);
    client.send(command("connect", {}));
    const connected = await client.waitForEvent("connected", 3000);
    expect(connected.message.contactless).toBe(true);
    client.send(command("transmit", { apdu: SELECT_PIV }));
    await client.waitForEvent("transmitted", 3000);
    // --trace shows headers and status words only.
    await card.waitForStderr(/apdu 00 A4 04 00 \(15 bytes\) -> 9000/, 3000);
    card.signal("SIGTERM");
    expect(await card.exitCode(5000)).toBe(0);
  });

  it("exits 10 with one line when pcscd goes away for good", async () => {
    const p = await pcscd();
    const card = emulate(p, ["--state", join(work, "card-c.json"), "--reconnect", "2"]);
    await card.waitForStderr(/inserted: connected to vpcd/, 5000);
    await p.stop();
    expect(await card.exitCode(10_000)).toBe(10);
    expect(card.stderr).toMatch(/vpcd dropped the connection/);
    expect(card.stderr).toMatch(
      /hsm-onboard: cannot reach vpcd at 127\.0\.0\.1:\d+ \(connection refused\) after 2 attempts/,
    );
  });
});
