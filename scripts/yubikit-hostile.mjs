#!/usr/bin/env node
// Independent check of the SCP11 hostile-card modes (issue 11): Yubico's yubikit/ykman 5.8.0, run
// from its source tree, opens SCP11b (`ykman --scp-sd scp11b 1 piv info`) to the virtual card over
// a private pcscd + vpcd while the card lies in one `scp-*` mode (src/card-emulator/hostile-card.ts).
// It shows that what the modes send is refused by a second, independent SCP11 implementation too —
// the modes lie in the protocol, not in our host's reading of it — and where yubikit is laxer than
// our host (a bare 9000 without R-MAC). Needs what scripts/yubikit-interop.mjs needs (root, a built
// tree, Debian's python3-cryptography/pyscard/fido2/click/keyring, YKMAN_SRC). Run by hand.
//
//   YKMAN_SRC=/path/to/yubikey-manager-5.8.0 node scripts/yubikit-hostile.mjs
import "reflect-metadata";
import { setTimeout as sleep } from "node:timers/promises";
import { hostileCard } from "../dist/card-emulator/hostile-card.js";
import { YUBIKEY_5_7_PROFILE } from "../dist/card-emulator/profiles.js";
import { provisionScpKey } from "../dist/card-emulator/scp-provision.js";
import { VirtualPivCard } from "../dist/card-emulator/virtual-piv-card.js";
import { VpcdBridge } from "../dist/card-emulator/vpcd-bridge.js";
import { createScpVendorCa } from "../dist/pki/scp-certificates.js";
import { startPrivatePcscd } from "../dist/sim/pcscd.js";
import { runPython, YKMAN_MAIN, ykmanSource } from "./yubikit-common.mjs";

const src = ykmanSource();
/**
 * Mode, and what yubikit does: go through (exit 0), or fail with output matching the pattern.
 * Two differences from our host, both shown here: yubikit 5.8.0 reads only the bare certificate
 * store (our host also accepts Samsung's BF21 form, as issue 11 asks); and yubikit checks an R-MAC
 * only when the answer has data, so a bare 9000 passes its SCP layer (our host: exit 15) and ykman
 * fails later, parsing an empty GET VERSION answer.
 */
const CASES = [
  [undefined, "ok"],
  ["scp-store-wrapped", /UnexpectedTag/],
  ["scp-store-wrapper-duplicated", /UnexpectedTag/],
  ["scp-store-wrong-tag", /UnexpectedTag/],
  ["scp-epk-off-curve", /Invalid public bytes/],
  ["scp-epk-identity", /Unsupported elliptic curve point type/],
  ["scp-epk-wrong-length", /Invalid public bytes/],
  ["scp-receipt-missing", /Invalid encoding of tag\/length/],
  ["scp-receipt-wrong", /InvalidSignature/],
  ["scp-rmac-flipped", /BadResponseError: Wrong MAC/],
  ["scp-response-truncated", /BadResponseError: Wrong MAC/],
  ["scp-response-bad-padding", /BadResponseError: Wrong padding/],
  ["scp-response-no-rmac", /Version.__new__\(\) missing/],
];
const vendor = await createScpVendorCa("yubikit-hostile Card Vendor");
const pcscd = await startPrivatePcscd();
let failed = false;
try {
  for (const [mode, expected] of CASES) {
    let card;
    const hostile = mode ? hostileCard(mode, { scpChannel: () => card?.scpChannel }) : undefined;
    card = new VirtualPivCard({
      profile: YUBIKEY_5_7_PROFILE,
      contactless: true, // a reader without "YubiKey" in its name is NFC to ykman
      ...(hostile ? { intercept: hostile.intercept } : {}),
    });
    await provisionScpKey(card, vendor);
    let powered = false;
    const responder = {
      powerOn: () => {
        powered = true;
        return card.powerOn();
      },
      powerOff: () => card.powerOff(),
      transmit: (command) => card.transmit(command),
    };
    const bridge = new VpcdBridge({ responder, host: "127.0.0.1", port: pcscd.vpcdPort, atr: card.atr });
    await bridge.start();
    try {
      // pcscd notices the card and powers it on (bounded wait) before ykman looks for it.
      for (let i = 0; i < 100 && !powered; i++) await sleep(50);
      const { status, stdout, stderr } = await runPython(
        ["-c", YKMAN_MAIN, "--reader", pcscd.readerName, "--scp-sd", "scp11b", "1", "piv", "info"],
        { src, pcscd, timeout: 60_000 },
      );
      const r = { status, out: stdout + stderr };
      const ok =
        (expected === "ok" ? r.status === 0 : r.status !== 0 && expected.test(r.out)) &&
        (!hostile || hostile.lies > 0);
      if (!ok) failed = true;
      const last = r.out.trim().split("\n").at(-1);
      console.log(
        `${ok ? "PASS" : "FAIL"} ${mode ?? "(honest card)"}: ykman exit ${r.status}${hostile ? `, ${hostile.lies} lie(s)` : ""} — ${last}`,
      );
    } finally {
      await bridge.stop();
    }
  }
} finally {
  await pcscd.stop();
}
process.exit(failed ? 1 : 0);
