/**
 * The HSM's device identity: a `pki issue-device` directory or a PKCS#11 token (SoftHSM2) behind an
 * RFC 7512 URI; either signs receipts that verify with its certificate, and factory-init checks it
 * against the manufacturer root and the serial.
 */
import { X509Certificate } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, test } from "vitest";
import {
  describeDevice,
  loadDeviceIdentity,
  parseDeviceUri,
  validateDeviceIdentity,
} from "../../src/agent/device-identity.js";
import { factoryInit } from "../../src/agent/factory.js";
import { signReceipt, verifyReceipt } from "../../src/config/receipt.js";
import { UsageError } from "../../src/errors.js";
import { Pkcs11Token } from "../../src/pkcs11/pkcs11-token.js";
import { issueDeviceCertificate } from "../../src/pki/issue.js";
import { issueDeviceToDirectory } from "../../src/pki/pki-store.js";
import { requireOrSkip } from "../helpers/pcsc-env.js";
import { createSoftHsmToken, softHsmUnavailableReason } from "../helpers/softhsm.js";
import { createTestPki, useTestPki } from "./fixtures.js";

const bed = useTestPki();
let rootDer: Uint8Array;
beforeAll(() => {
  rootDer = new Uint8Array(new X509Certificate(Buffer.from(bed.testPki.rootPem)).raw);
});

const RECEIPT = {
  serial: "1234567",
  configurationId: new Uint8Array(16).fill(7),
  sequence: 3,
  stateDigest: new Uint8Array(32).fill(1),
  time: 1_900_000_000,
  outcome: 0 as const,
};

describe("PKCS#11 URIs", () => {
  test("parses the attributes the agent uses, percent-decoded", () => {
    expect(
      parseDeviceUri(
        "pkcs11:token=hsm%20one;object=device?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=12%2634",
      ),
    ).toEqual({
      token: "hsm one",
      object: "device",
      modulePath: "/usr/lib/softhsm/libsofthsm2.so",
      pinValue: "12&34",
    });
  });
  test.each([
    "pkcs11:token=a;colour=red",
    "pkcs11:token=a;token=b",
    "pkcs11:token=a?pin-value=%zz",
    // Valid RFC 7512, but nothing the agent uses: refused, not ignored.
    "pkcs11:token=a;slot-id=1",
    "pkcs11:token=a;object=o;type=cert",
  ])("refuses %s", (uri) => {
    expect(() => parseDeviceUri(uri)).toThrow(UsageError);
  });
  test("messages never show the PIN", () => {
    expect(describeDevice("pkcs11:token=t;object=o?module-path=/m.so&pin-value=secret")).toBe(
      "pkcs11:token=t;object=o?module-path=/m.so&pin-value=REDACTED",
    );
  });
});

describe("device key directory", () => {
  test("signs receipts that verify with the device certificate; validated against the root and serial", async () => {
    const dir = join(bed.dir, "device-1234567");
    await issueDeviceToDirectory(bed.testPki.dir, dir, "1234567");
    const identity = await loadDeviceIdentity(dir);
    await validateDeviceIdentity(identity, rootDer, "1234567", new Date());
    await expect(validateDeviceIdentity(identity, rootDer, "7654321", new Date())).rejects.toThrow(
      /not 7654321/,
    );
    const signed = await signReceipt(RECEIPT, identity.signer);
    const verified = await verifyReceipt(signed, { validateDevice: () => {} });
    expect(Buffer.from(verified.certificateChain[0]!)).toEqual(Buffer.from(identity.certificate));
    await identity.close();
  });

  test("factory-init refuses a device certificate from another manufacturer", async () => {
    const other = await createTestPki(join(bed.dir, "other"));
    const dir = join(bed.dir, "foreign-device");
    await issueDeviceToDirectory(other.dir, dir, "1234567");
    await expect(
      factoryInit({
        stateDir: join(bed.dir, "foreign-state"),
        serial: "1234567",
        root: bed.testPki.rootPem,
        device: dir,
        applier: "dry-run",
      }),
    ).rejects.toThrow(/does not chain to the manufacturer root/);
  });
});

const softhsm = requireOrSkip(
  softHsmUnavailableReason() === undefined
    ? { ok: true, reason: "" }
    : { ok: false, reason: softHsmUnavailableReason()! },
);
describe.skipIf(!softhsm.ok)("device key in a PKCS#11 token (SoftHSM2)", () => {
  test("factory-init and receipt signing through pkcs11:token=…;object=…?module-path=…&pin-source=file:…; a pin-value is refused, never stored", async () => {
    const token = await createSoftHsmToken({ userPin: "4321" });
    try {
      const session = await Pkcs11Token.open({ modulePath: token.modulePath, tokenLabel: token.label });
      try {
        session.login(token.userPin);
        const { spki } = session.generateEcKeyPair({ label: "device", curve: "P-256", id: Uint8Array.of(1) });
        const certificate = await issueDeviceCertificate({
          deviceCa: bed.testPki.pki.deviceCa,
          publicKey: spki,
          serial: "1234567",
        });
        session.importCertificate({
          label: "device",
          der: new Uint8Array(certificate.rawData),
          id: Uint8Array.of(1),
        });
        session.importCertificate({
          label: "device-ca",
          der: new Uint8Array(bed.testPki.pki.deviceCa.certificate.rawData),
          authority: true,
        });
      } finally {
        session.close();
      }
      const withPin = `pkcs11:token=${encodeURIComponent(token.label)};object=device?module-path=${token.modulePath}&pin-value=${token.userPin}`;
      const refusedDir = join(bed.dir, "pkcs11-refused");
      await expect(
        factoryInit({
          stateDir: refusedDir,
          serial: "1234567",
          root: bed.testPki.rootPem,
          device: withPin,
          applier: "dry-run",
        }),
      ).rejects.toThrow(/pin-value would be stored in the agent state/);
      await expect(readFile(join(refusedDir, "state.json"))).rejects.toThrow(/ENOENT/);
      const pinFile = join(bed.dir, "token.pin");
      await writeFile(pinFile, `${token.userPin}\n`, { mode: 0o600 });
      const uri = `pkcs11:token=${encodeURIComponent(token.label)};object=device?module-path=${token.modulePath}&pin-source=file:${pinFile}`;
      const stateDir = join(bed.dir, "pkcs11-state");
      await factoryInit({
        stateDir,
        serial: "1234567",
        root: bed.testPki.rootPem,
        device: uri,
        applier: "dry-run",
      });
      for (const file of ["state.json", "audit.log"]) {
        expect(await readFile(join(stateDir, file), "utf8")).not.toContain(token.userPin);
      }

      const identity = await loadDeviceIdentity(uri);
      try {
        expect(identity.signer.certificateChain).toHaveLength(2); // device certificate, device CA
        const signed = await signReceipt(RECEIPT, identity.signer);
        const verified = await verifyReceipt(signed, { validateDevice: () => {} });
        expect(verified.receipt.serial).toBe("1234567");
      } finally {
        await identity.close();
      }
    } finally {
      await token.dispose();
    }
  });
});
