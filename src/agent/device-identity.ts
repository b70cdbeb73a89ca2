/**
 * The HSM's own identity (SPEC.md §4): its device key and certificate (subject serialNumber = the
 * HSM serial, issued by the device CA), which sign the receipts the agent writes onto cards.
 *
 * Two places the key can be:
 * - a directory written by `pki issue-device`: device.key.pem, device.pem, chain.pem (simple demo);
 * - a PKCS#11 token (a real HSM; SoftHSM2 in simulation), named by an RFC 7512 URI:
 *     pkcs11:token=LABEL;object=LABEL?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234
 *   (`pin-source=file:/path` instead of `pin-value` reads the PIN from a file). The private key and
 *   the certificate carry the `object` label; the CA certificates above it are the token's other
 *   certificates, or `chain.pem` is not needed when the token holds them.
 *
 * Neither PIN nor URI query is ever printed: describeDevice() redacts `pin-value`.
 */
import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";
import { createSoftwareSigner, type Signer } from "../crypto/signer.js";
import { CardNotTrustedError, OnboardError, UsageError } from "../errors.js";
import type { Pkcs11Token } from "../pkcs11/pkcs11-token.js";
import { isPkcs11Uri, type Pkcs11Uri, parsePkcs11Uri, redactPkcs11Uri } from "../pkcs11/uri.js";
import { DEVICE_FILES } from "../pki/files.js";
import { KEY_USAGE, validateChainView } from "../pki/path-validation.js";
import { VALIDATION_REQUIREMENTS } from "../pki/profiles.js";

export interface DeviceIdentity {
  /** Signs receipts; its chain is [device certificate, device CA, …]. */
  readonly signer: Signer;
  /** DER of the device certificate. */
  readonly certificate: Uint8Array;
  /** Where the key lives, for messages (PIN redacted). */
  readonly description: string;
  close(): Promise<void>;
}

/** What a `--device pkcs11:` URI may name: the agent's key, its token, and where its PIN is. */
export type DevicePkcs11Uri = Pick<
  Pkcs11Uri,
  "token" | "object" | "serial" | "modulePath" | "pinValue" | "pinSource"
>;

/**
 * Parses a `--device` URI with the shared RFC 7512 parser (src/pkcs11/uri.ts), then refuses what the
 * agent does not use (manufacturer, model, slot-id, id; a type other than private) rather than
 * ignoring it. Unlike `--token` and CA key URIs, `pin-source=file:` is accepted: an unattended HSM
 * reads its own device key's PIN from a file only the agent can read (docs/APPLIANCE.md).
 */
export function parseDeviceUri(uri: string): DevicePkcs11Uri {
  const { type, manufacturer, model, slotId, id, ...device } = parsePkcs11Uri(uri);
  const unused = [
    manufacturer !== undefined && "manufacturer",
    model !== undefined && "model",
    slotId !== undefined && "slot-id",
    id !== undefined && "id",
  ].find(Boolean);
  if (unused) throw new UsageError(`PKCS#11 URI: unsupported attribute "${unused}"`);
  if (type !== undefined && type !== "private") throw new UsageError("PKCS#11 URI: type must be private");
  return device;
}

/** A device reference fit for messages and `agent status`: a PKCS#11 PIN is replaced. */
export function describeDevice(spec: string): string {
  return isPkcs11Uri(spec) ? redactPkcs11Uri(spec) : spec;
}

/** Resolves a `--device` value: a PKCS#11 URI as it is, a directory made absolute. */
export function normalizeDeviceSpec(spec: string, cwd: string): string {
  if (isPkcs11Uri(spec)) {
    parseDeviceUri(spec);
    return spec;
  }
  return isAbsolute(spec) ? spec : resolve(cwd, spec);
}

/** Opens the device identity `spec` refers to (a key directory or a PKCS#11 URI). */
export async function loadDeviceIdentity(spec: string): Promise<DeviceIdentity> {
  return isPkcs11Uri(spec) ? loadPkcs11Identity(spec) : loadDirectoryIdentity(spec);
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    throw new UsageError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, {
      cause: error,
    });
  }
}

/** The DER certificates of a PEM bundle, in order. */
export function pemCertificates(text: string, what: string): Uint8Array[] {
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((block) => {
    try {
      return new Uint8Array(new X509Certificate(block).raw);
    } catch (error) {
      throw new UsageError(`${what} holds an unreadable certificate`, { cause: error });
    }
  });
}

async function loadDirectoryIdentity(dir: string): Promise<DeviceIdentity> {
  const [key, cert, chain] = await Promise.all([
    readText(join(dir, DEVICE_FILES.key)),
    readText(join(dir, DEVICE_FILES.cert)),
    readText(join(dir, DEVICE_FILES.chain)).catch(() => ""),
  ]);
  const [certificate] = pemCertificates(cert, join(dir, DEVICE_FILES.cert));
  if (!certificate) throw new UsageError(`${join(dir, DEVICE_FILES.cert)} holds no certificate`);
  const signer = createSoftwareSigner({
    privateKey: key,
    certificateChain: [certificate, ...pemCertificates(chain, join(dir, DEVICE_FILES.chain))],
  });
  return { signer, certificate, description: dir, close: async () => {} };
}

async function loadPkcs11Identity(uri: string): Promise<DeviceIdentity> {
  const parsed = parseDeviceUri(uri);
  if (!parsed.modulePath) throw new UsageError("PKCS#11 URI: module-path is required");
  if (!parsed.object) throw new UsageError("PKCS#11 URI: object (the key and certificate label) is required");
  if (parsed.token === undefined && parsed.serial === undefined) {
    throw new UsageError("PKCS#11 URI: token or serial is required");
  }
  let pin = parsed.pinValue;
  if (pin === undefined && parsed.pinSource !== undefined) {
    const source = parsed.pinSource.startsWith("file:") ? parsed.pinSource.slice(5) : parsed.pinSource;
    pin = (await readText(source)).replace(/\r?\n$/, "");
  }
  const { Pkcs11Token: TokenClass } = await import("../pkcs11/pkcs11-token.js");
  const token: Pkcs11Token = await TokenClass.open({
    modulePath: parsed.modulePath,
    ...(parsed.token !== undefined ? { tokenLabel: parsed.token } : {}),
    ...(parsed.serial !== undefined ? { tokenSerial: parsed.serial } : {}),
  });
  try {
    if (pin !== undefined) token.login(pin);
    const key = token.findPrivateKey(parsed.object);
    if (!key) throw new UsageError(`PKCS#11 token has no private key labelled "${parsed.object}"`);
    const certificate = token.findCertificate(parsed.object);
    if (!certificate) throw new UsageError(`PKCS#11 token has no certificate labelled "${parsed.object}"`);
    const leaf = new X509Certificate(certificate);
    // The CA certificates the token holds next to the device certificate, nearest first.
    const others = token
      .listCertificates()
      .filter((c) => c.label !== parsed.object)
      .map((c) => new X509Certificate(c.der));
    const chain: Uint8Array[] = [];
    let current = leaf;
    for (let i = 0; i < others.length; i++) {
      const issuer = others.find(
        (c) => c.subject === current.issuer && c.ca && !chain.some((d) => Buffer.from(d).equals(c.raw)),
      );
      if (!issuer || issuer.subject === issuer.issuer) break; // the root stays out: the verifier pins it
      chain.push(new Uint8Array(issuer.raw));
      current = issuer;
    }
    const algorithm = key.curve === "P-256" ? "ES256" : "ES384";
    const signer: Signer = {
      algorithm,
      certificateChain: [certificate, ...chain],
      sign: async (toBeSigned) => token.sign(key, toBeSigned),
    };
    return { signer, certificate, description: describeDevice(uri), close: async () => token.close() };
  } catch (error) {
    token.close();
    throw error;
  }
}

/**
 * Checks a device identity against the manufacturer root: chain to the root through the device CA,
 * receipt-signing EKU, validity at `now`, and subject serialNumber = `serial`. UsageError when it does
 * not hold (a factory mistake, not a card problem).
 */
export async function validateDeviceIdentity(
  identity: DeviceIdentity,
  root: Uint8Array,
  serial: string,
  now: Date,
): Promise<void> {
  try {
    const validated = await validateChainView({
      leaf: identity.certificate,
      intermediates: identity.signer.certificateChain.slice(1),
      trustAnchor: root,
      now,
      requireCrl: false,
      requiredEku: VALIDATION_REQUIREMENTS.deviceReceipt.requiredEku,
      requiredKeyUsage: KEY_USAGE.digitalSignature,
    });
    if (validated.subjectSerialNumber !== serial) {
      throw new UsageError(
        `the device certificate is for serial ${validated.subjectSerialNumber ?? "(none)"}, not ${serial}`,
      );
    }
  } catch (error) {
    if (error instanceof CardNotTrustedError || !(error instanceof OnboardError)) {
      throw new UsageError(
        `the device certificate does not chain to the manufacturer root: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
    throw error;
  }
}
