#!/usr/bin/env node
// Independent SCP11 client check (issue 11): Yubico's yubikit/ykman, run from its source tree,
// opens SCP11b to the virtual card over a private pcscd + vpcd, runs `piv info` and a PIN change
// inside the channel. Needs root (private pcscd), a built tree (npm run build), Debian's
// python3-cryptography, python3-pyscard, python3-fido2, python3-click, python3-keyring, and a
// yubikey-manager 5.8.0 source tree in YKMAN_SRC (CI cannot fetch it; see docs/SECURITY.md).
//
//   YKMAN_SRC=/path/to/yubikey-manager-5.8.0 node scripts/yubikit-interop.mjs
//
// Prints each ykman run, the APDU headers the card received (from the emulator's trace: header
// and status word only), and checks: the handshake ran (SELECT ISD, GET DATA BF21, SELECT PIV,
// 80 88 → 9000), every later PIV command had CLA 84/04/94/14, and the card's stored PIN changed.
import "reflect-metadata";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { YUBIKEY_5_7_PROFILE } from "../dist/card-emulator/profiles.js";
import { runEmulator } from "../dist/cli/commands/card/emulate.js";
import { startPrivatePcscd } from "../dist/sim/pcscd.js";

const src = process.env.YKMAN_SRC;
if (!src) {
  console.error("set YKMAN_SRC to a yubikey-manager 5.8.0 source tree");
  process.exit(2);
}
const work = mkdtempSync(join(tmpdir(), "yubikit-interop-"));
const pcscd = await startPrivatePcscd();
const controller = new AbortController();
const trace = [];
const emulator = runEmulator({
  statePath: join(work, "card.json"),
  host: "127.0.0.1",
  port: pcscd.vpcdPort,
  contactless: true, // a reader without "YubiKey" in its name is NFC to ykman: it wants a contactless ATR
  profile: YUBIKEY_5_7_PROFILE,
  scpVendorDir: join(work, "vendor"),
  trace: true,
  reconnectAttempts: 0,
  signal: controller.signal,
  log: (line) => trace.push(line),
});
let failed = false;
const check = (ok, what) => {
  console.log(`${ok ? "PASS" : "FAIL"} ${what}`);
  if (!ok) failed = true;
};
try {
  // pcscd notices the card and powers it on (it is then "present" to clients).
  for (let i = 0; i < 100 && !trace.some((l) => l === "power on"); i++) await sleep(100);
  // Asynchronous: the card answers from this very process while ykman runs.
  const run = (args) =>
    new Promise((resolve) => {
      const child = spawn(
        "/usr/bin/python3", // Debian's interpreter, with the python3-* packages
        ["-c", "import sys; from ykman._cli.__main__ import main; sys.argv[0] = 'ykman'; main()", ...args],
        { env: { ...process.env, ...pcscd.env, PYTHONPATH: src }, timeout: 60_000 },
      );
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.on("close", (status) => resolve({ status, stdout, stderr }));
    });
  const ykman = async (...args) => {
    const start = trace.length;
    const r = await run(args);
    console.log(`\n$ ykman ${args.join(" ")}\n${r.stdout}${r.stderr}exit ${r.status}`);
    const apdus = trace.slice(start).filter((l) => l.startsWith("apdu "));
    console.log(apdus.map((l) => `  ${l}`).join("\n"));
    return { ...r, apdus };
  };
  console.log(trace.join("\n"));
  const reader = ["--log-level", process.env.YKMAN_LOG ?? "WARNING", "--reader", pcscd.readerName];
  const info = await ykman(...reader, "--scp-sd", "scp11b", "1", "piv", "info");
  check(
    info.status === 0 && /PIV version:\s*5\.7\.1/.test(info.stdout),
    "ykman piv info over SCP11b exits 0 and reads PIV version 5.7.1",
  );
  const handshake = ["00 A4 04 00", "00 CA BF 21", "80 88 01 13"];
  for (const h of handshake) {
    const ok = info.apdus.some((l) => l.startsWith(`apdu ${h}`) && / -> (9000|61..) /.test(l));
    check(ok, `card answered ${h} with 9000 (or 61xx, more data)`);
  }
  const i88 = info.apdus.findIndex((l) => l.startsWith("apdu 80 88"));
  const after = info.apdus.slice(i88 + 1).filter((l) => !l.startsWith("apdu 00 C0"));
  check(
    after.length > 0 && after.every((l) => /^apdu (84|04|94|14) /.test(l)),
    `all ${after.length} PIV commands after the handshake were wrapped`,
  );

  const change = await ykman(
    ...reader,
    "--scp-sd",
    "scp11b",
    "1",
    "piv",
    "access",
    "change-pin",
    "-P",
    "123456",
    "-n",
    "246810",
  );
  check(change.status === 0, "ykman piv access change-pin over SCP11b exits 0");
  check(
    change.apdus.some((l) => /^apdu 04 24 00 80 /.test(l) && / -> 9000 /.test(l)),
    "CHANGE REFERENCE went wrapped (04 24 00 80) and the card answered 9000",
  );
  check(!change.apdus.some((l) => /^apdu 00 (20|24) /.test(l)), "no plaintext VERIFY or CHANGE REFERENCE");
  const state = JSON.parse(readFileSync(join(work, "card.json"), "utf8"));
  check(
    state.pin.value === Buffer.from("246810").toString("hex") + "ffff",
    "the card's stored PIN is the new one",
  );
} finally {
  controller.abort();
  await emulator.catch(() => undefined);
  await pcscd.stop();
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
