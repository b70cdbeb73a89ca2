/**
 * Manufacturing step of the virtual card's secure channel: what a card vendor does before a card
 * ships (Yubico for a YubiKey 5.7), and what an owner adds for SCP11a.
 * - `createScpVendor` / `loadScpVendor`: the emulator's vendor CA, kept in a directory
 *   (`scp-vendor-ca.pem` — the trust anchor station and agent are given — and
 *   `scp-vendor-ca.key.pem`, mode 0600);
 * - `provisionScpKey`: a fresh P-256 SD key (SCP11b: KID 0x13 KVN 0x01, as a YubiKey) and its
 *   certificate from the vendor CA, persisted in the card state (GET DATA BF21 returns it);
 * - `installOceAnchor`: the owner's token CA public key as the card's OCE CA key (KID 0x10), so the
 *   card accepts an SCP11a OCE certificate issued under it.
 */
import { generateKeyPairSync } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { IssuerCredentials } from "../pki/issue.js";
import { exportPrivateKeyPem, importPrivateKeyPem } from "../pki/keys.js";
import { createScpVendorCa, issueScpKeyCertificate } from "../pki/scp-certificates.js";
import { X509Certificate } from "../util/x509.js";
import type { VirtualPivCard } from "./virtual-piv-card.js";

export const SCP_VENDOR_CA_FILE = "scp-vendor-ca.pem";
export const SCP_VENDOR_KEY_FILE = "scp-vendor-ca.key.pem";
export const DEFAULT_SCP_VENDOR = "hsm-onboard Virtual Card Vendor";

/** Creates the vendor CA in `dir` (or loads it when it is already there). */
export async function createScpVendor(
  dir: string,
  organization = DEFAULT_SCP_VENDOR,
): Promise<IssuerCredentials> {
  if (existsSync(join(dir, SCP_VENDOR_CA_FILE))) return loadScpVendor(dir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = await createScpVendorCa(organization);
  writeFileSync(join(dir, SCP_VENDOR_KEY_FILE), await exportPrivateKeyPem(ca.privateKey), { mode: 0o600 });
  writeFileSync(join(dir, SCP_VENDOR_CA_FILE), ca.certificate.toString("pem"), { mode: 0o644 });
  return ca;
}

export async function loadScpVendor(dir: string): Promise<IssuerCredentials> {
  const certificate = new X509Certificate(readFileSync(join(dir, SCP_VENDOR_CA_FILE), "utf8"));
  const { key } = await importPrivateKeyPem(readFileSync(join(dir, SCP_VENDOR_KEY_FILE), "utf8"));
  return { certificate, privateKey: key };
}

export interface ProvisionScpKeyOptions {
  readonly kid?: number;
  readonly kvn?: number;
}

/** Gives `card` an SD key for SCP11 with its certificate from `vendor` (persisted with the card). */
export async function provisionScpKey(
  card: VirtualPivCard,
  vendor: IssuerCredentials,
  options: ProvisionScpKeyOptions = {},
): Promise<X509Certificate> {
  const kid = options.kid ?? 0x13;
  const kvn = options.kvn ?? 0x01;
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const spki = new Uint8Array(publicKey.export({ format: "der", type: "spki" }));
  const cert = await issueScpKeyCertificate(
    vendor,
    spki,
    `Virtual card ${card.serial} SD key ${kid.toString(16).padStart(2, "0")}/${kvn.toString(16).padStart(2, "0")}`,
  );
  card.installScpKey({
    kid,
    kvn,
    pkcs8: privateKey.export({ format: "der", type: "pkcs8" }).toString("base64"),
    certificates: [Buffer.from(cert.rawData).toString("base64")],
  });
  return cert;
}

/** Installs the OCE CA key (the owner's token CA certificate's key) for SCP11a. */
export function installOceAnchor(
  card: VirtualPivCard,
  caCertificate: Uint8Array,
  kid = 0x10,
  kvn = 0x01,
): void {
  const cert = new X509Certificate(caCertificate);
  card.installOceCa(kid, kvn, new Uint8Array(cert.publicKey.rawData));
}
