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
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startPrivatePcscd } from "../dist/sim/pcscd.js";
import { checker, runPython, serveEmulatedCard, YKMAN_MAIN, ykmanSource } from "./yubikit-common.mjs";

const src = ykmanSource();
const work = mkdtempSync(join(tmpdir(), "yubikit-interop-"));
const pcscd = await startPrivatePcscd();
// A reader without "YubiKey" in its name is NFC to ykman: it wants a contactless ATR.
const card = await serveEmulatedCard({ work, pcscd, contactless: true });
const { trace } = card;
const { check, failed } = checker();
try {
  // Asynchronous: the card answers from this very process while ykman runs.
  const run = (args) => runPython(["-c", YKMAN_MAIN, ...args], { src, pcscd, timeout: 60_000 });
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
  await card.stop();
  await pcscd.stop();
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed() ? 1 : 0);
