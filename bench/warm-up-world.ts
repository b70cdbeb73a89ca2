/**
 * Makes src/agent/warm-up-world.ts: the small, complete, self-contained onboarding the agent
 * verifies at start (src/agent/warm-up.ts) so that the first real card does not pay V8's and
 * OpenSSL's first-use costs. Built with the project's own flows, as the benchmarks build their world
 * (bench/fixture.ts): pki init → station init + CRL → card personalize → station write of a 200-HSM
 * plan → the card's objects read back, and the card's 9E private key taken out of the virtual
 * card's state (so the warm-up's card answers every fresh challenge, as a card does); pki issue-device
 * for the first HSM gives the key the warm-up signs its receipt with. Every other private key stays in
 * a temporary directory that is removed: nothing can sign for this world again, except those two keys
 * (the card's 9E key and the device key), which are in the file as test keys and are certified by
 * nothing but the world's own root.
 *
 *   npx tsc -p tsconfig.bench.json --outDir /tmp/b && echo '{"type":"module"}' > /tmp/b/package.json \
 *     && ln -s "$PWD/node_modules" /tmp/b/node_modules && node /tmp/b/bench/warm-up-world.js > src/agent/warm-up-world.ts
 */
import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryCardStateStore } from "../src/card-emulator/card-state-store.js";
import { VirtualPivCard } from "../src/card-emulator/virtual-piv-card.js";
import { findShardFor, verifyManifest } from "../src/config/manifest.js";
import { initPkiDirectory, issueDeviceToDirectory } from "../src/pki/pki-store.js";
import { shardItemName } from "../src/secure-element/card-layout.js";
import { PivElement } from "../src/secure-element/piv-element.js";
import { newChallenge, verifyChallengeProof } from "../src/secure-element/secure-element.js";
import { updateStationCrl } from "../src/station/crl-update.js";
import { initStation } from "../src/station/init-station.js";
import { personalizeCard } from "../src/station/personalize-card.js";
import { writeConfigurationToCard } from "../src/station/write-card.js";
import { InProcessTransport } from "../src/transport/in-process.js";
import { benchPlan } from "./plans.js";

const OWNER = "hsm-onboard warm-up";
const PIN = "246810";

const dir = await mkdtemp(join(tmpdir(), "hsm-onboard-warm-up-world-"));
try {
  const { pki, crl } = await initPkiDirectory(join(dir, "pki"), { owner: OWNER });
  const stationDir = join(dir, "station");
  await initStation(stationDir, pki.root.certificate);
  await updateStationCrl(stationDir, crl, { issuers: [pki.tokenCa.certificate] });
  const store = new MemoryCardStateStore();
  const open = () => PivElement.open(new InProcessTransport(new VirtualPivCard({ store })));
  let element = await open();
  try {
    await personalizeCard({
      element,
      pki: { tokenCa: pki.tokenCa, root: pki.root },
      crl,
      owner: OWNER,
      officer: "Warm-up Officer",
      newPin: PIN,
      newPuk: "13572468",
    });
  } finally {
    await element.close();
  }
  const plan = { ...benchPlan(200), owner: OWNER };
  element = await open();
  try {
    await writeConfigurationToCard({ element, plan, stationDir, pin: PIN });
  } finally {
    await element.close();
  }
  element = await open();
  let world: Record<string, string | number>;
  try {
    const identity = await element.identity();
    const crlItem = await element.readItem("crl");
    const manifest = await element.readItem("manifest");
    if (!crlItem || !manifest) throw new Error("no CRL or manifest on the card");
    const { manifest: content } = await verifyManifest(manifest, { validateChain: () => {} });
    const serial = plan.hsms[0]!.serial;
    const ref = findShardFor(content, serial);
    const shard = await element.readItem(shardItemName(ref.objectId));
    if (!shard) throw new Error("the shard is missing");
    // The world card's 9E key, as the virtual card stores it (PKCS#8), checked against a live
    // challenge answered by the card itself before it goes into the file.
    const cardKeyState = store.load()?.keys["9E"];
    if (!cardKeyState) throw new Error("the card has no 9E key");
    const cardKey = createPrivateKey({
      key: Buffer.from(cardKeyState.pkcs8, "base64"),
      format: "der",
      type: "pkcs8",
    });
    const challenge = newChallenge();
    verifyChallengeProof(identity.cardAuthentication, challenge, await element.proveChallenge(challenge));
    if (!createPublicKey(cardKey).equals(new X509Certificate(identity.cardAuthentication).publicKey))
      throw new Error("the card's 9E key is not the key of its 9E certificate");
    const b64 = (b: Uint8Array | ArrayBuffer) => Buffer.from(new Uint8Array(b)).toString("base64");
    const device = await issueDeviceToDirectory(join(dir, "pki"), join(dir, "device"), serial);
    const deviceKey = createPrivateKey(await readFile(device.files.key, "utf8")).export({
      format: "der",
      type: "pkcs8",
    });
    const deviceChain = (await readFile(device.files.chain, "utf8")).match(
      /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g,
    );
    const deviceCa = new X509Certificate(deviceChain![0]!).raw;
    world = {
      root: b64(pki.root.certificate.rawData),
      tokenCa: b64(identity.intermediates[0]!),
      cardAuthentication: b64(identity.cardAuthentication),
      signing: b64(identity.signing),
      crl: b64(crlItem),
      manifest: b64(manifest),
      shard: b64(shard),
      serial,
      cardAuthenticationKey: b64(cardKey.export({ format: "der", type: "pkcs8" })),
      deviceKey: b64(deviceKey),
      deviceCertificate: b64(device.certificate.rawData),
      deviceCa: b64(deviceCa),
      // Inside every validity window of this world (certificates, CRL, configuration).
      time: new Date(Math.max(content.notBefore * 1000, Date.now()) + 3_600_000).toISOString(),
    };
  } finally {
    await element.close();
  }
  const wrap = (s: string) => (s.match(/.{1,100}/g) ?? [s]).map((l) => `    "${l}"`).join(" +\n");
  const lines = Object.entries(world).map(([k, v]) =>
    typeof v === "number" || v.length <= 80 ? `  ${k}: ${JSON.stringify(v)},` : `  ${k}:\n${wrap(v)},`,
  );
  process.stdout.write(
    [
      "/**",
      " * A complete, self-contained onboarding for the agent's warm-up at start (warm-up.ts): a root, token",
      ` * CA, card certificates (9E, 9C) and CRL of the owner "${OWNER}", a signed configuration of 200`,
      " * HSMs (manifest and the full shard of the first), the card's 9E private key (so the warm-up's",
      " * in-memory card answers each fresh challenge by signing it, as a card does), and a device identity",
      " * for the first HSM (key, certificate, device CA) to sign the warm-up receipt. Made with this",
      " * project's own flows by bench/warm-up-world.ts (pki init, card personalize, station write and pki",
      " * issue-device on the virtual card); every other private key was thrown away. Trusted for nothing:",
      " * the warm-up checks it against its own root, never against the agent's trust anchor, applies",
      " * nothing and writes nothing. The 9E key and the device key here are test keys of this world only,",
      " * certified by nothing but its own root.",
      " */",
      "export const WARM_UP_WORLD = {",
      ...lines,
      "} as const;",
      "",
    ].join("\n"),
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
