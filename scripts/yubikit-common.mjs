// What the yubikit scripts (yubikit-interop, yubikit-scp11a, yubikit-hostile) share: finding the
// yubikey-manager source tree, running Debian's python3 with it against a private pcscd, the virtual
// card served through vpcd, and PASS/FAIL lines. Run by hand; see each script's header.
import "reflect-metadata";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { YUBIKEY_5_7_PROFILE } from "../dist/card-emulator/profiles.js";
import { runEmulator } from "../dist/cli/commands/card/emulate.js";

/** ykman's command line, for `python3 -c`. */
export const YKMAN_MAIN = "import sys; from ykman._cli.__main__ import main; sys.argv[0] = 'ykman'; main()";

/** The yubikey-manager 5.8.0 source tree in YKMAN_SRC; exits 2 when it is not set. */
export function ykmanSource() {
  const src = process.env.YKMAN_SRC;
  if (!src) {
    console.error("set YKMAN_SRC to a yubikey-manager 5.8.0 source tree");
    process.exit(2);
  }
  return src;
}

/** Runs Debian's python3 (with the python3-* packages) with yubikit on its path, against `pcscd`. */
export function runPython(args, { src, pcscd, timeout }) {
  return new Promise((resolve) => {
    const child = spawn("/usr/bin/python3", args, {
      env: { ...process.env, ...pcscd.env, PYTHONPATH: src },
      timeout,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

/**
 * The virtual card (YubiKey 5.7 profile, state in `work`/card.json) served to `pcscd` through vpcd
 * by this very process, its trace lines collected; resolves once pcscd has powered it on (bounded).
 */
export async function serveEmulatedCard({ work, pcscd, contactless }) {
  const controller = new AbortController();
  const trace = [];
  const emulator = runEmulator({
    statePath: join(work, "card.json"),
    host: "127.0.0.1",
    port: pcscd.vpcdPort,
    contactless,
    profile: YUBIKEY_5_7_PROFILE,
    scpVendorDir: join(work, "vendor"),
    trace: true,
    reconnectAttempts: 0,
    signal: controller.signal,
    log: (line) => trace.push(line),
  });
  // pcscd notices the card and powers it on (it is then "present" to clients).
  for (let i = 0; i < 100 && !trace.some((l) => l === "power on"); i++) await sleep(100);
  return {
    trace,
    async stop() {
      controller.abort();
      await emulator.catch(() => undefined);
    },
  };
}

/** PASS/FAIL lines; `failed()` says whether any check failed. */
export function checker() {
  let failed = false;
  return {
    check(ok, what) {
      console.log(`${ok ? "PASS" : "FAIL"} ${what}`);
      if (!ok) failed = true;
    },
    failed: () => failed,
  };
}
