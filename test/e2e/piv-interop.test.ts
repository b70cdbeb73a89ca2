/**
 * The virtual PIV card over the real smart-card stack, personalised by `hsm-onboard card personalize`
 * and then checked by independent clients:
 *
 *   private pcscd (+ vpcd reader) ── card emulate (its own process: the vpcd bridge and the card)
 *        │ PCSCLITE_CSOCK_NAME
 *        ├── a ReaderWatcher child (insertion and removal events)
 *        ├── hsm-onboard card personalize / card status (the compiled CLI, child processes)
 *        └── yubico-piv-tool, OpenSC pkcs11-tool (child processes); OpenSSL checks what they read
 *
 * Every process is its own (libpcsclite reads PCSCLITE_CSOCK_NAME once per process; the bridge and a
 * client of the same reader must not share one, docs/TESTBED-NOTES.md). When network namespaces are
 * available pcscd and the card run in one the test creates, with the loopback `quickack` route, so an
 * APDU costs ~0.3 ms instead of ~44 ms (docs/TESTBED-NOTES.md): `card status` reads ~300 objects.
 * The steps share one card and run in order.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PrivatePcscd, startPrivatePcscd } from "../../src/sim/pcscd.js";
import { runCliInProcess } from "../helpers/cli.js";
import {
  buildForChildren,
  type Capability,
  cliLauncher,
  NodeChild,
  netnsCapability,
  nextWake,
  nowMs,
  type PrivateBuild,
  pcscClientLauncher,
  pcscE2eCapability,
  requireOrSkip,
  runTool,
  toolAvailable,
} from "../helpers/pcsc-env.js";

const OPENSC_MODULE_CANDIDATES = [
  "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
  "/usr/lib/x86_64-linux-gnu/pkcs11/opensc-pkcs11.so",
  "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
  "/usr/lib/aarch64-linux-gnu/pkcs11/opensc-pkcs11.so",
  "/usr/lib64/opensc-pkcs11.so",
  "/usr/lib/opensc-pkcs11.so",
];
const openscModule = OPENSC_MODULE_CANDIDATES.find((p) => existsSync(p));

function interopCapability(): Capability {
  const base = pcscE2eCapability();
  if (!base.ok) return base;
  const missing = ["yubico-piv-tool", "pkcs11-tool", "openssl"].filter((t) => !toolAvailable(t));
  if (!openscModule) missing.push("opensc-pkcs11.so (package opensc-pkcs11)");
  if (missing.length > 0) return { ok: false, reason: `PIV interop needs: ${missing.join(", ")}` };
  return base;
}

const cap = requireOrSkip(interopCapability());
const useNetns = cap.ok && netnsCapability().ok;

const OWNER = "ACME Bank";
const OFFICER = "Alice Example";
const NEW_PIN = "24681357";
const NEW_PUK = "97531864";
const WRONG_PIN = "11111111";

/** A run of the compiled CLI: stdout/stderr collected, stdin given up front, killed by PID on cleanup. */
class CliRun {
  stdout = "";
  stderr = "";
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;
  private readonly waiters = new Set<() => void>();

  constructor(script: string, args: string[], env: Record<string, string>, stdin?: string) {
    const guard = toolAvailable("setpriv") ? ["setpriv", "--pdeathsig", "TERM"] : [];
    const [command, ...rest] = [...guard, process.execPath, script, ...args] as [string, ...string[]];
    this.child = spawn(command, rest, { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
    this.child.stdout?.setEncoding("utf8").on("data", (s: string) => {
      this.stdout += s;
    });
    this.child.stderr?.setEncoding("utf8").on("data", (s: string) => {
      this.stderr += s;
      for (const w of [...this.waiters]) w();
    });
    this.child.stdin?.on("error", () => {});
    this.child.stdin?.end(stdin ?? "");
    this.exited = new Promise((resolve) =>
      this.child.once("exit", (code) => {
        for (const w of [...this.waiters]) w();
        resolve(code);
      }),
    );
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits (bounded) until stderr matches. */
  async waitForStderr(pattern: RegExp, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let turn = 0; turn < 10_000 && !pattern.test(this.stderr); turn++) {
      const left = deadline - Date.now();
      if (left <= 0 || !this.running) {
        throw new Error(`CLI never printed ${pattern} within ${timeoutMs} ms:\n${this.stderr.slice(-2000)}`);
      }
      await nextWake(this.waiters, left);
    }
  }

  /** The exit code within the bound; the process is killed when it runs over. */
  async exitCode(timeoutMs: number): Promise<number | null> {
    const result = await Promise.race([this.exited, sleep(timeoutMs).then(() => "timeout" as const)]);
    if (result === "timeout") {
      await this.stop();
      throw new Error(
        `CLI ${this.child.pid} still running after ${timeoutMs} ms:\n${this.stderr.slice(-2000)}`,
      );
    }
    return result;
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.child.kill("SIGTERM");
    const gone = await Promise.race([this.exited.then(() => true), sleep(3000).then(() => false)]);
    if (!gone && this.running) {
      this.child.kill("SIGKILL");
      await Promise.race([this.exited, sleep(2000)]);
    }
  }
}

describe.skipIf(!cap.ok)(
  `PIV interop over pcscd + vpcd: card personalize, yubico-piv-tool, OpenSC, OpenSSL${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    const netns = `hob-interop-${process.pid}-${randomBytes(2).toString("hex")}`;
    let netnsCreated = false;
    let build: PrivateBuild | undefined;
    let cli: string;
    let work: string | undefined;
    let pcscd: PrivatePcscd;
    let watcher: NodeChild;
    let card: NodeChild | undefined;
    const cleanups: (() => Promise<unknown>)[] = [];
    let env: Record<string, string>;
    let reader: string;
    let pki: string;
    /** What `card personalize --json` printed. */
    let personalised: {
      serial: string;
      slots: Record<"9E" | "9C", { certificate: { subject: string; sha256: string } }>;
      elapsedMs: number;
    };

    beforeAll(async () => {
      build = await buildForChildren([
        "cli/main.js",
        "transport/reader-watcher.js",
        "station/personalize-card.js",
        "cli/commands/card/personalize.js",
        "cli/commands/card/status.js",
      ]);
      cli = await cliLauncher(build);
      const launchClient = await pcscClientLauncher(build);
      work = await mkdtemp(join(tmpdir(), "hsm-onboard-piv-interop-"));
      pki = join(work, "pki");
      const init = await runCliInProcess(["pki", "init", "--out", pki, "--owner", OWNER]);
      expect(init.exitCode, init.stderr).toBe(0);
      if (useNetns) {
        const add = await runTool("ip", ["netns", "add", netns], {});
        expect(add.code, add.stderr).toBe(0);
        netnsCreated = true;
        expect((await runTool("ip", ["-n", netns, "link", "set", "lo", "up"], {})).code).toBe(0);
        // Only inside the namespace this test owns (docs/TESTBED-NOTES.md, "The quickack trick").
        const quick = await runTool(
          "ip",
          [
            ...["-n", netns, "route", "change", "local", "127.0.0.1", "dev", "lo", "proto", "kernel"],
            ...["scope", "host", "src", "127.0.0.1", "table", "local", "quickack", "1"],
          ],
          {},
        );
        expect(quick.code, quick.stderr).toBe(0);
      }
      pcscd = await startPrivatePcscd(useNetns ? { netns } : {});
      cleanups.push(() => pcscd.stop());
      env = { ...pcscd.env };
      reader = pcscd.readerName;
      watcher = launchClient(env);
      cleanups.push(() => watcher.stop());
      await watcher.waitForEvent("ready", 5000);
    }, 180_000);

    afterAll(async () => {
      // Children first (by PID), then pcscd, then the namespace, then files.
      for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
      if (netnsCreated) await runTool("ip", ["netns", "del", netns], {});
      await build?.cleanup();
      if (work) await rm(work, { recursive: true, force: true });
    });

    function runCli(args: string[], stdin?: string): CliRun {
      const run = new CliRun(cli, args, env, stdin);
      cleanups.push(() => run.stop());
      return run;
    }

    function startCard(): NodeChild {
      const child = new NodeChild(
        cli,
        {},
        {
          args: [
            "card",
            "emulate",
            "--state",
            join(work!, "card.json"),
            "--vpcd",
            `127.0.0.1:${pcscd.vpcdPort}`,
          ],
          ...(useNetns ? { netns } : {}),
        },
      );
      cleanups.push(() => child.stop());
      return child;
    }

    const ypt = (args: string[]) => runTool("yubico-piv-tool", ["-r", reader, ...args], env, 20_000);
    const pkcs11 = (args: string[]) =>
      runTool("pkcs11-tool", ["--module", openscModule!, ...args], env, 30_000);

    it("waits for the card by event and personalises it through PC/SC, secrets from --pin-stdin", async () => {
      const run = runCli(
        [
          ...["card", "personalize", "--pki", pki, "--owner", OWNER, "--officer", OFFICER],
          ...["--reader", "Virtual PCD", "--pin-stdin", "--json", "--timeout", "30"],
        ],
        `${NEW_PIN}\n${NEW_PUK}\n`,
      );
      // No card yet: the command asks for one and waits.
      await run.waitForStderr(/insert the card to personalise into a reader matching "Virtual PCD"/, 10_000);
      card = startCard();
      await card.waitForStderr(/inserted: connected to vpcd/, 5000);
      const inserted = await watcher.waitForEvent("card-inserted", 3000);
      const insertedAt = inserted.message.t as number;
      expect(inserted.message.reader).toBe(reader);

      const code = await run.exitCode(60_000);
      const doneAt = nowMs();
      expect(code, run.stderr).toBe(0);
      personalised = JSON.parse(run.stdout);
      expect(personalised).toMatchObject({
        reader,
        owner: OWNER,
        officer: OFFICER,
        algorithm: "P-256",
        managementKey: { type: "aes192", pinProtected: true, previous: "default" },
      });
      const serial = JSON.parse(await readFile(join(work!, "card.json"), "utf8")).serial as number;
      expect(personalised.serial).toBe(String(serial));
      for (const slot of ["9E", "9C"] as const) {
        expect(personalised.slots[slot].certificate.subject).toBe(
          `O=${OWNER}, CN=${OFFICER}, serialNumber=${serial}`,
        );
      }
      expect(run.stdout + run.stderr).not.toContain(NEW_PIN);
      expect(run.stdout + run.stderr).not.toContain(NEW_PUK);
      console.info(
        `card personalize over PC/SC (${useNetns ? "quickack netns" : "default loopback"}): ` +
          `${personalised.elapsedMs} ms on the card; ${Math.round(doneAt - insertedAt)} ms from insertion to exit`,
      );
    }, 90_000);

    it("yubico-piv-tool -a status lists 9C and 9E with their certificates, and the PIN tries", async () => {
      const status = await ypt(["-a", "status"]);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toContain(`Serial Number:\t${personalised.serial}`);
      for (const slot of ["9c", "9e"] as const) {
        const block = status.stdout.split(`Slot ${slot}:`)[1]?.split(/\nSlot |\nPIN tries/)[0] ?? "";
        expect(block, status.stdout).toContain("Algorithm:\tECCP256");
        expect(block).toContain(`Subject DN:\tO=${OWNER}, CN=${OFFICER}/serialNumber=${personalised.serial}`);
        expect(block).toContain(`Issuer DN:\tO=${OWNER}, CN=${OWNER} Token CA`);
        const fingerprint = personalised.slots[slot.toUpperCase() as "9C" | "9E"].certificate.sha256;
        expect(block).toContain(`Fingerprint:\t${fingerprint.replace(/:/g, "").toLowerCase()}`);
      }
      expect(status.stdout).not.toMatch(/Slot 9a:|Slot 9d:/);
      expect(status.stdout).toMatch(/PIN tries left:\t3/);
    }, 30_000);

    it("yubico-piv-tool reads the 9C certificate, which OpenSSL chains to the manufacturer root (CRL checked)", async () => {
      const read = await ypt(["-a", "read-certificate", "-s", "9c"]);
      expect(read.code, read.stderr).toBe(0);
      expect(read.stdout).toMatch(/^-----BEGIN CERTIFICATE-----/);
      const file = join(work!, "card-9c.pem");
      await writeFile(file, read.stdout);
      const verify = await runTool(
        "openssl",
        ["verify", "-CAfile", join(pki, "root.pem"), "-untrusted", join(pki, "token-ca.pem"), file],
        {},
      );
      expect(verify.stdout.trim(), verify.stderr).toBe(`${file}: OK`);
      const withCrl = await runTool(
        "openssl",
        [
          ...[
            "verify",
            "-crl_check",
            "-CAfile",
            join(pki, "root.pem"),
            "-untrusted",
            join(pki, "token-ca.pem"),
          ],
          ...["-CRLfile", join(pki, "token-ca.crl.pem"), file],
        ],
        {},
      );
      expect(withCrl.stdout.trim(), withCrl.stderr).toBe(`${file}: OK`);
      // The hsm-onboard items, read by yubico-piv-tool as plain PIV objects (docs/CARD.md).
      const crl = join(work!, "item-crl.der");
      expect((await ypt(["-a", "read-object", "--id", "0x5FFF12", "-f", "binary", "-o", crl])).code).toBe(0);
      const crlText = await runTool("openssl", ["crl", "-inform", "DER", "-in", crl, "-noout", "-text"], {});
      expect(crlText.stdout).toMatch(new RegExp(`Issuer: O = ${OWNER}, CN = ${OWNER} Token CA`));
      expect(crlText.stdout).toMatch(/X509v3 CRL Number: \n\s+1\n/);
      const certificates = join(work!, "item-certificates.der");
      expect(
        (await ypt(["-a", "read-object", "--id", "0x5FFF11", "-f", "binary", "-o", certificates])).code,
      ).toBe(0);
      const tokenCa = await runTool(
        "openssl",
        ["x509", "-inform", "DER", "-in", certificates, "-noout", "-subject"],
        {},
      );
      expect(tokenCa.stdout.trim()).toBe(`subject=O = ${OWNER}, CN = ${OWNER} Token CA`);
    }, 30_000);

    it("OpenSC lists the PIV objects and, after the PIN, signs with the 9C key; OpenSSL verifies the signature", async () => {
      const objects = await pkcs11(["-O"]);
      expect(objects.code, objects.stderr).toBe(0);
      expect(objects.stdout).toMatch(
        /Certificate Object; type = X\.509 cert\n\s+label:\s+Certificate for Digital Signature\n[^\n]*\n[^\n]*\n\s+ID:\s+02/,
      );
      expect(objects.stdout).toMatch(/label:\s+Certificate for Card Authentication/);
      expect(objects.stdout).toMatch(/Private Key Object; EC\n\s+label:\s+CARD AUTH key\n\s+ID:\s+04/);
      expect(objects.stdout).toContain(
        `subject:    DN: O=${OWNER}, CN=${OFFICER}/serialNumber=${personalised.serial}`,
      );

      const data = join(work!, "to-sign.txt");
      const digest = join(work!, "to-sign.sha256");
      const signature = join(work!, "signature.der");
      await writeFile(data, "network plan for rack fra1-a\n");
      expect((await runTool("openssl", ["dgst", "-sha256", "-binary", "-out", digest, data], {})).code).toBe(
        0,
      );
      const sign = await pkcs11([
        ...["--login", "--pin", NEW_PIN, "--sign", "--id", "02", "-m", "ECDSA"],
        ...["--input-file", digest, "--output-file", signature, "--signature-format", "openssl"],
      ]);
      expect(sign.code, sign.stderr + sign.stdout).toBe(0);

      const certificate = join(work!, "card-9c.pem");
      const publicKey = join(work!, "card-9c.pub.pem");
      const pub = await runTool(
        "openssl",
        ["x509", "-in", certificate, "-pubkey", "-noout", "-out", publicKey],
        {},
      );
      expect(pub.code, pub.stderr).toBe(0);
      const verified = await runTool(
        "openssl",
        ["dgst", "-sha256", "-verify", publicKey, "-signature", signature, data],
        {},
      );
      expect(verified.stdout.trim(), verified.stderr).toBe("Verified OK");
    }, 60_000);

    it("three wrong PINs block the PIN; the PUK unblocks it; card status follows the counters", async () => {
      const expected = ["2 tries left", "1 tries left", "blocked"];
      for (const fragment of expected) {
        const wrong = await ypt(["-a", "verify-pin", "-P", WRONG_PIN]);
        expect(wrong.code).not.toBe(0);
        expect(wrong.stderr + wrong.stdout).toContain(fragment);
      }
      const blocked = await ypt(["-a", "status"]);
      expect(blocked.stdout).toMatch(/PIN tries left:\t0/);
      const right = await ypt(["-a", "verify-pin", "-P", NEW_PIN]);
      expect(right.code).not.toBe(0);
      expect(right.stderr).toMatch(/Pin code blocked/);

      const statusBlocked = runCli(["card", "status", "--reader", "Virtual PCD", "--json"]);
      expect(await statusBlocked.exitCode(60_000), statusBlocked.stderr).toBe(0);
      expect(JSON.parse(statusBlocked.stdout)).toMatchObject({
        pin: { triesLeft: 0 },
        puk: { triesLeft: 3 },
      });

      const unblock = await ypt(["-a", "unblock-pin", "-P", NEW_PUK, "-N", NEW_PIN]);
      expect(unblock.code, unblock.stderr).toBe(0);
      expect(unblock.stderr + unblock.stdout).toMatch(/Successfully unblocked the pin code/);

      const started = nowMs();
      const status = runCli(["card", "status", "--reader", "Virtual PCD", "--json"]);
      expect(await status.exitCode(60_000), status.stderr).toBe(0);
      const statusMs = Math.round(nowMs() - started);
      const s = JSON.parse(status.stdout);
      expect(s).toMatchObject({
        reader,
        serial: personalised.serial,
        version: "5.4.3",
        pin: { triesLeft: 3, tries: 3, isDefault: false },
        puk: { triesLeft: 3, tries: 3, isDefault: false },
        managementKey: { type: "AES-192", isDefault: false, pinProtected: true },
        chuid: true,
        ccc: true,
      });
      const slots = Object.fromEntries(
        (
          s.slots as {
            slot: string;
            algorithm: string | null;
            pinPolicy: string | null;
            certificate: { sha256: string } | null;
          }[]
        ).map((x) => [x.slot, x]),
      );
      expect(slots["9C"]).toMatchObject({ algorithm: "ECC P-256", pinPolicy: "always" });
      expect(slots["9E"]).toMatchObject({ algorithm: "ECC P-256", pinPolicy: "never" });
      expect(slots["9C"]?.certificate?.sha256).toBe(personalised.slots["9C"].certificate.sha256);
      expect(slots["9A"]?.certificate).toBeNull();
      expect(s.items.map((i: { name: string }) => i.name)).toEqual(["certificates", "crl"]);
      expect(s.storage.totalBytes).toBe(50_225);
      console.info(`card status over PC/SC: ${statusMs} ms (process start to exit)`);

      // The unblocked PIN works for an independent client too.
      const verify = await ypt(["-a", "verify-pin", "-P", NEW_PIN]);
      expect(verify.code, verify.stderr).toBe(0);
      expect(verify.stderr + verify.stdout).toMatch(/Successfully verified PIN/);
    }, 180_000);

    it("card status prints the human summary through PC/SC", async () => {
      const status = runCli(["card", "status", "--reader", "Virtual PCD"]);
      expect(await status.exitCode(60_000), status.stderr).toBe(0);
      expect(status.stdout).toContain(`Card ${personalised.serial} (firmware 5.4.3) in ${reader}`);
      expect(status.stdout).toContain("  Slot 9C (digital signature): ECC P-256, PIN always, generated");
      expect(status.stdout).toContain(
        `    Subject:  O=${OWNER}, CN=${OFFICER}, serialNumber=${personalised.serial}`,
      );
      expect(status.stdout).toContain("  PIN tries left: 3 of 3; PUK tries left: 3 of 3");
      expect(status.stdout).toContain("  Management key: AES-192, PIN-protected");
    }, 90_000);

    it("removing the card (card emulate SIGTERM) is an event; then card status finds no card (exit 10)", async () => {
      const from = watcher.messages.length;
      card!.signal("SIGTERM");
      expect(await card!.exitCode(5000)).toBe(0);
      const removed = await watcher.waitForEvent("card-removed", 3000, from);
      expect(removed.message.reader).toBe(reader);
      const none = runCli(["card", "status", "--reader", "Virtual PCD", "--timeout", "1"]);
      expect(await none.exitCode(15_000)).toBe(10);
      expect(none.stderr).toMatch(
        /^card status: insert a card\nhsm-onboard: no card in a reader matching "Virtual PCD" after (1 s|\d+ ms)\n$/,
      );
    }, 30_000);
  },
);
