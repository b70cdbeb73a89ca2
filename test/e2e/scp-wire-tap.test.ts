/**
 * Issue 11 proof over the real stack: a private pcscd with vpcd, the virtual card behind a vpcd
 * bridge in this process (the tap: every APDU pcscd hands the card, and its answer), `station write`
 * and `agent run` as child processes through pcscd.
 * - With the SCP trust installed (station init / factory-init --scp-trust) both open SCP11b first:
 *   after each handshake no APDU carries the PIN (text, FF-padded block, hex, base64), a plan
 *   address (text and binary) or a hostname; the channel is shown by the station, recorded in the
 *   audit log, `agent status` and the signed receipt.
 * - The same run with a card that has no secure channel is refused (exit 11) before any PIN is
 *   sent; with --allow-plaintext it goes through, is recorded as plaintext, and the tap finds the
 *   PIN, the address and the hostname (the tap works).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { FileCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { YUBIKEY_5_7_PROFILE } from "../../src/card-emulator/profiles.js";
import { provisionScpKey } from "../../src/card-emulator/scp-provision.js";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { VpcdBridge } from "../../src/card-emulator/vpcd-bridge.js";
import { planToYaml } from "../../src/config/plan.js";
import { ExitCode } from "../../src/errors.js";
import type { IssuerCredentials } from "../../src/pki/issue.js";
import { createScpVendorCa } from "../../src/pki/scp-certificates.js";
import { installScpTrust } from "../../src/secure-element/channel-policy.js";
import { type PrivatePcscd, startPrivatePcscd } from "../../src/sim/pcscd.js";
import { initAgent, LAB_PLAN, PIN } from "../agent/fixtures.js";
import { pcscE2eCapability, requireOrSkip } from "../helpers/pcsc-env.js";
import { runCliChild, stopChildren } from "../security/children.js";
import { put, useChildTestBed } from "../security/stack.js";
import { CardTemplate } from "../security/support.js";

const cap = requireOrSkip(pcscE2eCapability());

interface Apdu {
  command: Buffer;
  response: Buffer;
}

/** The byte strings a PIN, an address or a hostname may travel as. */
function needles(): { what: string; bytes: Buffer }[] {
  const out: { what: string; bytes: Buffer }[] = [];
  const pin = Buffer.from(PIN, "utf8");
  const padded = Buffer.concat([pin, Buffer.alloc(8 - pin.length, 0xff)]);
  for (const b of [pin, padded]) {
    out.push({ what: "PIN", bytes: b });
    out.push({ what: "PIN", bytes: Buffer.from(b.toString("hex")) });
    out.push({ what: "PIN", bytes: Buffer.from(b.toString("hex").toUpperCase()) });
    out.push({ what: "PIN", bytes: Buffer.from(b.toString("base64").replace(/=+$/, "")) });
  }
  // Shards store a hostname as prefix + numeric suffix, and addresses in binary, per subnet (network,
  // gateway, DNS, NTP) and per HSM: look for all of those, as text too.
  const hsm = LAB_PLAN.hsms[0]!;
  out.push({ what: "hostname", bytes: Buffer.from(hsm.hostname) });
  out.push({ what: "hostname", bytes: Buffer.from(hsm.hostname.replace(/\d+$/, "")) });
  const subnet = LAB_PLAN.subnets[0]!;
  const v4 = [hsm.interfaces[0]!.ipv4!, subnet.gateway!, subnet.dns![0]!, subnet.ntp![0]!];
  for (const a of v4) {
    out.push({ what: "address", bytes: Buffer.from(a) });
    out.push({ what: "address", bytes: Buffer.from(a.split(".").map(Number)) });
  }
  out.push({ what: "address", bytes: Buffer.from(hsm.interfaces[0]!.ipv6!) });
  out.push({ what: "address", bytes: Buffer.from("20010db8012000000000000000000001", "hex") }); // gateway
  out.push({ what: "address", bytes: Buffer.from("20010db8012000000000000000000000", "hex") }); // network
  return out;
}

/** What the tap found in the APDUs after the last handshake of each session (or in all of them). */
function found(tap: Apdu[], afterHandshake: boolean): Set<string> {
  const hits = new Set<string>();
  let inside = !afterHandshake;
  for (const a of tap) {
    if (afterHandshake && a.command[1] === 0x88) {
      inside = true; // INTERNAL AUTHENTICATE: everything from its answer on is protected
      continue;
    }
    if (afterHandshake && a.command[1] === 0xa4 && (a.command[0]! & 0x04) === 0) inside = false;
    if (!inside) continue;
    for (const n of needles()) {
      if (a.command.includes(n.bytes) || a.response.includes(n.bytes)) hits.add(n.what);
    }
  }
  return hits;
}

describe.skipIf(!cap.ok)(`SCP11 on the wire (real pcscd)${cap.ok ? "" : ` — skipped: ${cap.reason}`}`, () => {
  let template: CardTemplate;
  let vendor: IssuerCredentials;
  let vendorPem: string;
  let pcscd: PrivatePcscd;
  let bridge: VpcdBridge | undefined;

  const bed = useChildTestBed("hsm-scp-tap-", ["cli/main.js"]);
  beforeAll(async () => {
    template = await CardTemplate.personalise(bed.testPki.pki.tokenCa, bed.dir, "officer");
    vendor = await createScpVendorCa("Tap Test Card Vendor");
    vendorPem = vendor.certificate.toString("pem");
    pcscd = await startPrivatePcscd();
  }, 240_000);
  afterAll(async () => {
    await bridge?.stop();
    await stopChildren();
    await pcscd?.stop();
  });

  async function insert(cardFile: string, tap: Apdu[]): Promise<void> {
    await bridge?.stop();
    const card = VirtualPivCard.fromFile(cardFile, { profile: YUBIKEY_5_7_PROFILE });
    bridge = new VpcdBridge({ responder: card, host: "127.0.0.1", port: pcscd.vpcdPort, atr: card.atr });
    bridge.on("event", (e) => {
      if (e.type === "apdu") tap.push({ command: Buffer.from(e.command), response: Buffer.from(e.response) });
    });
    await bridge.start();
  }

  const cli = (args: string[], stdin?: string) =>
    runCliChild(bed.build, args, { env: pcscd.env, timeoutMs: 90_000, ...(stdin ? { stdin } : {}) });

  async function setUp(name: string, scp: boolean, cardHasScp: boolean) {
    const dir = join(bed.dir, name);
    const { stateDir } = await initAgent(dir, bed.testPki, { crl: bed.crl1, name: "hsm" });
    const stationDir = join(dir, "station");
    const vendorFile = await put(join(bed.dir, `${name}-vendor.pem`), vendorPem);
    const init = await cli([
      "station",
      "init",
      "--trust",
      await put(join(dir, "root.pem"), bed.testPki.rootPem),
      "--crl",
      await put(join(dir, "token-ca.crl"), bed.crl1),
      "--issuer",
      join(bed.testPki.dir, "token-ca.pem"),
      "--station-dir",
      stationDir,
      ...(scp ? ["--scp-trust", vendorFile] : []),
    ]);
    expect(init.code, init.stderr).toBe(ExitCode.ok);
    if (scp) await installScpTrust(stateDir, vendorPem, "vendor");
    const cardFile = join(dir, "card.json");
    new FileCardStateStore(cardFile).save(template.cardState);
    if (cardHasScp)
      await provisionScpKey(VirtualPivCard.fromFile(cardFile, { profile: YUBIKEY_5_7_PROFILE }), vendor);
    const plan = await put(join(dir, "lab.yaml"), planToYaml(LAB_PLAN));
    return { stateDir, stationDir, cardFile, plan };
  }

  test("SCP11b required: station write and agent onboarding; nothing secret after the handshakes; channel recorded", async () => {
    const s = await setUp("scp", true, true);
    const tap: Apdu[] = [];
    await insert(s.cardFile, tap);
    const write = await cli(
      ["station", "write", "--plan", s.plan, "--station-dir", s.stationDir, "--pin-stdin"],
      `${PIN}\n`,
    );
    expect(write.code, write.stderr).toBe(ExitCode.ok);
    expect(write.stderr).toMatch(/Secure channel: SCP11b/);
    const run = await cli(
      ["agent", "run", "--state-dir", s.stateDir, "--once", "--net", "dry-run", "--json", "--pin-stdin"],
      `${PIN}\n`,
    );
    expect(run.code, run.stderr).toBe(ExitCode.ok);
    expect(JSON.parse(run.stdout).card.channel).toBe("SCP11b");
    const status = await cli(["agent", "status", "--state-dir", s.stateDir]);
    expect(status.stdout).toMatch(/card read over SCP11b/);
    const audit = await readFile(join(s.stateDir, "audit.log"), "utf8").catch(() => "");
    expect(audit).toMatch(/"channel":"SCP11b"/);
    const receipts = await cli(["station", "receipts", "--station-dir", s.stationDir, "--json"]);
    expect(receipts.code, receipts.stderr).toBe(ExitCode.ok);
    expect(JSON.parse(receipts.stdout).receipts.map((r: { channel: string }) => r.channel)).toEqual([
      "SCP11b",
    ]);

    // Three sessions (write, onboarding, receipts), each opened by INTERNAL AUTHENTICATE.
    expect(tap.filter((a) => a.command[1] === 0x88).length).toBe(3);
    const wrapped = tap.filter((a) => (a.command[0]! & 0x04) !== 0);
    expect(wrapped.length).toBeGreaterThan(20);
    expect([...found(tap, true)]).toEqual([]);
  }, 300_000);

  test("a card without the channel: refused (exit 11, no PIN sent); with --allow-plaintext it goes, recorded, and the tap sees the secrets", async () => {
    const s = await setUp("plain", true, false);
    const tap: Apdu[] = [];
    await insert(s.cardFile, tap);
    const refused = await cli(
      ["station", "write", "--plan", s.plan, "--station-dir", s.stationDir, "--pin-stdin"],
      `${PIN}\n`,
    );
    expect(refused.code, refused.stderr).toBe(ExitCode.cardNotTrusted);
    expect(refused.stderr).toMatch(/--allow-plaintext/);
    expect([...found(tap, false)]).toEqual([]);

    const write = await cli(
      [
        "station",
        "write",
        "--plan",
        s.plan,
        "--station-dir",
        s.stationDir,
        "--pin-stdin",
        "--allow-plaintext",
      ],
      `${PIN}\n`,
    );
    expect(write.code, write.stderr).toBe(ExitCode.ok);
    expect(write.stderr).toMatch(/WARNING: no secure channel/);
    const run = await cli(
      [
        "agent",
        "run",
        "--state-dir",
        s.stateDir,
        "--once",
        "--net",
        "dry-run",
        "--json",
        "--pin-stdin",
        "--allow-plaintext",
      ],
      `${PIN}\n`,
    );
    expect(run.code, run.stderr).toBe(ExitCode.ok);
    expect(JSON.parse(run.stdout).card.channel).toBe("plaintext");
    const receipts = await cli(["station", "receipts", "--station-dir", s.stationDir, "--allow-plaintext"]);
    expect(receipts.stdout).toMatch(/plaintext/);
    expect([...found(tap, false)].sort()).toEqual(["PIN", "address", "hostname"]);
  }, 300_000);

  test("a forged receipt from the card is refused before any PIN (exit 15)", async () => {
    const s = await setUp("forged", true, true);
    const tap: Apdu[] = [];
    // A card that answers INTERNAL AUTHENTICATE with a flipped receipt bit.
    const card = VirtualPivCard.fromFile(s.cardFile, {
      profile: YUBIKEY_5_7_PROFILE,
      intercept: (command, answer) => {
        const r = answer(command);
        if (command[1] !== 0x88 || r.length < 20) return r;
        const f = r.slice();
        f[f.length - 3]! ^= 0x01;
        return f;
      },
    });
    await bridge?.stop();
    bridge = new VpcdBridge({ responder: card, host: "127.0.0.1", port: pcscd.vpcdPort, atr: card.atr });
    bridge.on("event", (e) => {
      if (e.type === "apdu") tap.push({ command: Buffer.from(e.command), response: Buffer.from(e.response) });
    });
    await bridge.start();
    const write = await cli(
      ["station", "write", "--plan", s.plan, "--station-dir", s.stationDir, "--pin-stdin"],
      `${PIN}\n`,
    );
    expect(write.code, write.stderr).toBe(ExitCode.integrity);
    expect([...found(tap, false)]).toEqual([]);
  }, 300_000);
});
