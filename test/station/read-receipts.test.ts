import { randomBytes, type webcrypto } from "node:crypto";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { findShardFor, type Manifest, verifyManifest } from "../../src/config/manifest.js";
import { loadPlanFile } from "../../src/config/plan.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { appendReceipt, type Receipt, signReceipt } from "../../src/config/receipt.js";
import { decodeShardEntry, networkStateDigest } from "../../src/config/shard.js";
import { createSoftwareSigner, type Signer } from "../../src/crypto/signer.js";
import { ExitCode } from "../../src/errors.js";
import { createDeviceIdentity } from "../../src/pki/issue.js";
import { exportPrivateKeyPem } from "../../src/pki/keys.js";
import { shardItemName } from "../../src/secure-element/card-layout.js";
import { openInProcessCard } from "../../src/secure-element/open-card.js";
import { readReceipts } from "../../src/station/read-receipts.js";
import { loadStationTrust } from "../../src/station/station-dir.js";
import { configSigningValidator, writeConfigurationToCard } from "../../src/station/write-card.js";
import * as x509 from "../../src/util/x509.js";
import {
  EXAMPLES,
  makePki,
  makeStation,
  PIN,
  personaliseCard,
  removeTempDirs,
  type TestPki,
} from "./fixtures.js";

let pki: TestPki;
let plan: NetworkPlan;
beforeAll(async () => {
  pki = await makePki();
  plan = await loadPlanFile(join(EXAMPLES, "rack-4.yaml"));
});
afterAll(removeTempDirs);

async function deviceSigner(issuer: TestPki, serial: string): Promise<Signer> {
  const { certificate, privateKey } = await createDeviceIdentity({ deviceCa: issuer.deviceCa, serial });
  return createSoftwareSigner({
    privateKey: await exportPrivateKeyPem(privateKey),
    certificateChain: [
      new Uint8Array(certificate.rawData),
      new Uint8Array(issuer.deviceCa.certificate.rawData),
    ],
  });
}

/** A card with rack-4 written, and what an HSM needs to make its receipt. */
async function configuredCard() {
  const { card } = await personaliseCard(pki);
  const stationDir = await makeStation(pki);
  const c = await openInProcessCard(card);
  await writeConfigurationToCard({ element: c.element, plan, stationDir, pin: PIN });
  const trust = await loadStationTrust(stationDir);
  const { manifest } = await verifyManifest((await c.element.readItem("manifest"))!, {
    validateChain: configSigningValidator(trust, new Date()),
  });
  const shards = new Map<number, Uint8Array>();
  for (const ref of manifest.shards)
    shards.set(ref.objectId, (await c.element.readItem(shardItemName(ref.objectId)))!);
  await c.dispose();
  const digestOf = async (serial: string) => {
    const ref = findShardFor(manifest, serial);
    return networkStateDigest(decodeShardEntry(shards.get(ref.objectId)!, ref, serial));
  };
  return { card, stationDir, manifest, digestOf };
}

/** What the agent does: append a receipt to a receipt object (PIN verified first). */
async function addReceipt(card: VirtualPivCard, item: string, receipt: Uint8Array): Promise<void> {
  const c = await openInProcessCard(card);
  try {
    await c.element.verifyPin(PIN);
    const log = appendReceipt(await c.element.readItem(item), receipt, 3063);
    await c.element.writeItem(item, log);
  } finally {
    await c.dispose();
  }
}

function receiptFor(
  manifest: Manifest,
  serial: string,
  stateDigest: Uint8Array,
  outcome: ExitCode = 0,
): Receipt {
  return {
    serial,
    configurationId: manifest.configurationId,
    sequence: manifest.sequence,
    stateDigest,
    time: Math.floor(Date.now() / 1000),
    outcome,
  };
}

async function report(card: VirtualPivCard, stationDir: string) {
  const c = await openInProcessCard(card);
  try {
    return await readReceipts({ element: c.element, stationDir });
  } finally {
    await c.dispose();
  }
}

describe("readReceipts", () => {
  it("shows the configuration and no receipts on a freshly written card", async () => {
    const { card, stationDir, manifest } = await configuredCard();
    const r = await report(card, stationDir);
    expect(r.configuration).toMatchObject({ owner: "ACME Bank", sequence: manifest.sequence });
    expect(r.receipts).toEqual([]);
  });

  it("verifies genuine receipts and shows the addresses applied", async () => {
    const { card, stationDir, manifest, digestOf } = await configuredCard();
    for (const serial of ["1234567", "1234568"]) {
      const signer = await deviceSigner(pki, serial);
      await addReceipt(
        card,
        "receipt-0",
        await signReceipt(receiptFor(manifest, serial, await digestOf(serial)), signer),
      );
    }
    // An HSM that found its address taken reports 21 and applied nothing.
    const conflict = await deviceSigner(pki, "1234569");
    await addReceipt(
      card,
      "receipt-1",
      await signReceipt(
        receiptFor(manifest, "1234569", new Uint8Array(32), ExitCode.addressConflict),
        conflict,
      ),
    );
    const r = await report(card, stationDir);
    expect(r.receipts).toHaveLength(3);
    const [a, b, c] = r.receipts;
    expect(a).toMatchObject({
      location: "receipt-0[0]",
      serial: "1234567",
      hostname: "hsm-fra1-a01",
      addresses: ["eth0 198.51.100.11/24"],
      outcome: 0,
      outcomeName: "configured",
      verified: true,
    });
    expect(b).toMatchObject({ serial: "1234568", hostname: "hsm-fra1-a02", verified: true });
    expect(c).toMatchObject({
      serial: "1234569",
      outcome: 21,
      outcomeName: "address-conflict",
      addresses: [],
      verified: true,
      authentic: true,
    });
  });

  it("marks every kind of bad receipt ✗ with its reason and keeps showing the good ones", async () => {
    const { card, stationDir, manifest, digestOf } = await configuredCard();
    const serial = "1234567";
    const signer = await deviceSigner(pki, serial);
    const good = await signReceipt(receiptFor(manifest, serial, await digestOf(serial)), signer);
    const flipped = Uint8Array.from(good);
    flipped[flipped.length - 40]! ^= 0x01;
    const foreignPki = await makePki();
    const cases: [string, Uint8Array][] = [
      ["flipped byte", flipped],
      [
        "foreign device PKI",
        await signReceipt(
          receiptFor(manifest, serial, await digestOf(serial)),
          await deviceSigner(foreignPki, serial),
        ),
      ],
      [
        "device certificate of another serial",
        await signReceipt(
          receiptFor(manifest, serial, await digestOf(serial)),
          await deviceSigner(pki, "1234568"),
        ),
      ],
      [
        "another configuration",
        await signReceipt(
          {
            ...receiptFor(manifest, serial, await digestOf(serial)),
            configurationId: new Uint8Array(randomBytes(16)),
            sequence: 0,
          },
          signer,
        ),
      ],
      ["applied state differs", await signReceipt(receiptFor(manifest, serial, new Uint8Array(32)), signer)],
      [
        "serial not planned",
        await signReceipt(
          receiptFor(manifest, "9999999", new Uint8Array(32)),
          await deviceSigner(pki, "9999999"),
        ),
      ],
      ["good", good],
    ];
    // About 650 bytes each (device certificate and CA in x5chain): one receipt object apiece.
    for (const [i, [, bytes]] of cases.entries()) await addReceipt(card, `receipt-${i}`, bytes);
    const r = await report(card, stationDir);
    const byCase = Object.fromEntries(cases.map(([name], i) => [name, r.receipts[i]!]));
    expect(byCase["flipped byte"]).toMatchObject({ authentic: false, verified: false });
    expect(byCase["foreign device PKI"]).toMatchObject({ authentic: false, verified: false });
    expect(byCase["foreign device PKI"]!.reason).toMatch(/not authentic/);
    expect(byCase["device certificate of another serial"]).toMatchObject({ authentic: false });
    expect(byCase["device certificate of another serial"]!.reason).toMatch(/serial 1234568/);
    expect(byCase["another configuration"]).toMatchObject({
      authentic: true,
      current: false,
      verified: false,
    });
    expect(byCase["another configuration"]!.reason).toMatch(/another configuration/);
    expect(byCase["applied state differs"]).toMatchObject({
      authentic: true,
      current: true,
      verified: false,
    });
    expect(byCase["applied state differs"]!.reason).toMatch(/differs from its planned entry/);
    expect(byCase["serial not planned"]).toMatchObject({ authentic: true, verified: false });
    expect(byCase["serial not planned"]!.reason).toMatch(/not in the configuration/);
    expect(byCase.good).toMatchObject({ verified: true, hostname: "hsm-fra1-a01" });
  });

  it("says so when the card carries no configuration, and reports an unreadable receipt object", async () => {
    const { card } = await personaliseCard(pki);
    const stationDir = await makeStation(pki);
    const c = await openInProcessCard(card);
    await c.element.verifyPin(PIN);
    await c.element.writeItem("receipt-0", Uint8Array.of(0x01, 0x02));
    await c.dispose();
    const r = await report(card, stationDir);
    expect(r.configuration).toBeUndefined();
    expect(r.configurationProblem).toMatch(/no configuration/);
    expect(r.receipts).toEqual([
      expect.objectContaining({ location: "receipt-0", authentic: false, verified: false }),
    ]);
  });
});

describe("receipts only under a device CA (issue 10 finding 2)", () => {
  it("a device certificate under a CA without CA-level EKU (a token CA from before issue 10) is not a device: ✗", async () => {
    const { card, stationDir, manifest, digestOf } = await configuredCard();
    const serial = "1234567";
    // A legacy token CA under the same root: CA, keyCertSign, but no extendedKeyUsage at all, so the
    // validator's CA-level EKU rule has nothing to refuse; only "issued by a device CA" stops it.
    const keys = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ])) as webcrypto.CryptoKeyPair;
    const rootSki = pki.root.certificate.getExtension(x509.SubjectKeyIdentifierExtension)!;
    const legacy = await x509.X509CertificateGenerator.create({
      serialNumber: "0a1b2c3d",
      subject: "O=ACME Bank, CN=ACME Bank Legacy Token CA",
      issuer: pki.root.certificate.subjectName,
      notBefore: new Date(Date.now() - 3_600_000),
      notAfter: new Date(Date.now() + 86_400_000),
      publicKey: keys.publicKey,
      signingKey: pki.root.privateKey,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-384" },
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        new x509.AuthorityKeyIdentifierExtension(rootSki.keyId),
      ],
    });
    const { certificate, privateKey } = await createDeviceIdentity({
      deviceCa: { certificate: legacy, privateKey: keys.privateKey },
      serial,
    });
    const forged = await signReceipt(
      receiptFor(manifest, serial, await digestOf(serial)),
      createSoftwareSigner({
        privateKey: await exportPrivateKeyPem(privateKey),
        certificateChain: [new Uint8Array(certificate.rawData), new Uint8Array(legacy.rawData)],
      }),
    );
    const genuine = await signReceipt(
      receiptFor(manifest, serial, await digestOf(serial)),
      await deviceSigner(pki, serial),
    );
    await addReceipt(card, "receipt-0", forged);
    await addReceipt(card, "receipt-1", genuine);
    const r = await report(card, stationDir);
    expect(r.receipts[0]).toMatchObject({ authentic: false, verified: false });
    expect(r.receipts[0]!.reason).toMatch(/is not a device CA/);
    expect(r.receipts[1]).toMatchObject({ verified: true });
  });
});
