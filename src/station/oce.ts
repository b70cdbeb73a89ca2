/**
 * The station's SCP11a credentials (issue 11): an OCE ("off-card entity") key and its certificate
 * under the owner's token CA, issued by `pki issue-oce` into the station directory:
 *
 *   <station dir>/oce.key.pem   P-256 private key, PKCS#8 PEM, mode 0600 (written first)
 *   <station dir>/oce.pem       the OCE certificate (keyAgreement), issued by the token CA
 *
 * The card holds the token CA's public key as its OCE CA key (KID 0x10, installed by
 * `card personalize --scp-trust`) and checks the certificate against it (PERFORM SECURITY
 * OPERATION); only the leaf is sent, as the token CA's key is the card's anchor. With these files
 * present every station command opens SCP11a instead of SCP11b.
 */
import { createPrivateKey, generateKeyPairSync, type KeyObject, X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { SmartCardProtocol } from "../apdu/chaining.js";
import { DEFAULT_OCE_KID, ISD_AID, type OceCredentials } from "../apdu/scp11/host.js";
import { installOceCaKey, readOceCaIdentifiers } from "../apdu/scp11/oce-ca.js";
import { openScp03 } from "../apdu/scp11/scp03.js";
import { ScpOceRefusedError, ScpUnavailableError, UsageError } from "../errors.js";
import { parseCertificate } from "../pki/fast-x509.js";
import type { IssuerCredentials } from "../pki/issue.js";
import { issueOceCertificate } from "../pki/scp-certificates.js";
import type { CardTransport } from "../transport/card-transport.js";
import { bytesEqual, hex } from "../util/bytes.js";
import type { X509Certificate as IssuedCertificate } from "../util/x509.js";
import { ensureStationDir, writeStationFile } from "./station-dir.js";

export const OCE_FILES = { key: "oce.key.pem", cert: "oce.pem" } as const;

export interface IssuedOce {
  readonly certificate: IssuedCertificate;
  readonly files: { readonly key: string; readonly cert: string };
}

/** Issues a fresh OCE key and certificate under `tokenCa` into the station directory. */
export async function issueStationOce(
  stationDir: string,
  tokenCa: IssuerCredentials,
  options: { owner: string; name: string; force?: boolean; years?: number },
): Promise<IssuedOce> {
  await ensureStationDir(stationDir);
  const files = { key: join(stationDir, OCE_FILES.key), cert: join(stationDir, OCE_FILES.cert) };
  if (!options.force && (await readStationOce(stationDir).then(Boolean, () => true))) {
    throw new UsageError(`${files.cert} already exists; pass --force to replace the station's OCE key`);
  }
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const spki = new Uint8Array(publicKey.export({ format: "der", type: "spki" }));
  const cert = await issueOceCertificate(tokenCa, spki, options.name, options.years ?? 3, options.owner);
  // The key first: a certificate without its key is useless, a key without a certificate is harmless.
  await writeStationFile(
    stationDir,
    OCE_FILES.key,
    privateKey.export({ format: "pem", type: "pkcs8" }) as string,
  );
  await writeStationFile(stationDir, OCE_FILES.cert, cert.toString("pem"));
  return { certificate: cert, files };
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new UsageError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
}

/** The station's OCE credentials, or undefined when it has none (then it opens SCP11b). */
export async function readStationOce(stationDir: string): Promise<OceCredentials | undefined> {
  const keyPath = join(stationDir, OCE_FILES.key);
  const certPath = join(stationDir, OCE_FILES.cert);
  const [keyPem, certPem] = await Promise.all([readOptional(keyPath), readOptional(certPath)]);
  if (keyPem === undefined && certPem === undefined) return undefined;
  if (keyPem === undefined || certPem === undefined) {
    throw new UsageError(
      `${stationDir}: ${keyPem === undefined ? OCE_FILES.key : OCE_FILES.cert} is missing beside ${keyPem === undefined ? OCE_FILES.cert : OCE_FILES.key} (pki issue-oce --force)`,
    );
  }
  let privateKey: KeyObject;
  let cert: X509Certificate;
  try {
    privateKey = createPrivateKey(keyPem);
    cert = new X509Certificate(certPem);
  } catch (cause) {
    throw new UsageError(`${stationDir}: the OCE key or certificate does not parse`, { cause });
  }
  const d = privateKey.asymmetricKeyDetails;
  if (
    privateKey.asymmetricKeyType !== "ec" ||
    d?.namedCurve !== "prime256v1" ||
    !cert.checkPrivateKey(privateKey)
  ) {
    throw new UsageError(`${certPath}: not the certificate of the P-256 key in ${OCE_FILES.key}`);
  }
  const der = new Uint8Array(cert.raw);
  const aki = parseCertificate(der).authorityKeyId;
  return {
    certificates: [der],
    privateKey,
    ...(aki ? { issuerSki: new Uint8Array(Buffer.from(aki, "hex")) } : {}),
  };
}

export interface OceCaOnCard {
  /** "installed" now, or "already" there (the card lists this CA's key identifier). */
  readonly outcome: "installed" | "already";
  readonly kid: number;
  readonly kvn: number;
  /** The CA's key identifier (hex). */
  readonly ski: string;
}

/**
 * `card personalize --scp-trust`: installs the owner's token CA public key as the card's OCE CA key
 * (KID 0x10, KVN 0x01) with its key identifier, inside an SCP03 session on the card's issuer
 * security domain with the factory default key set (KVN FF), as a YubiKey 5.7 takes it (SCP11b does
 * not authenticate the host, so a card refuses key management over it). The card itself was
 * authenticated on this same connection by the SCP11b session personalisation ran in. Ends with the
 * ISD selected: the caller's PIV session is over. A card that already lists this CA is left alone;
 * one that lists another CA is refused (ScpOceRefusedError): replacing it takes SCP11a with an OCE
 * certificate of the current CA.
 */
export async function installOceCaOnCard(
  transport: CardTransport,
  options: { tokenCaCertificate: Uint8Array },
): Promise<OceCaOnCard> {
  const ca = new X509Certificate(options.tokenCaCertificate);
  const skiHex = parseCertificate(options.tokenCaCertificate).subjectKeyId;
  if (!skiHex) throw new UsageError("the token CA certificate has no subject key identifier");
  const ski = new Uint8Array(Buffer.from(skiHex, "hex"));
  const protocol = new SmartCardProtocol(transport);
  await protocol.select(ISD_AID).catch((cause: unknown) => {
    throw new ScpUnavailableError(
      "the card has no GlobalPlatform security domain: no OCE CA can be installed",
      {
        cause,
      },
    );
  });
  const listed = (await readOceCaIdentifiers(protocol)).filter((id) => id.kid === DEFAULT_OCE_KID);
  const same = listed.find((id) => bytesEqual(id.ski, ski));
  if (same) return { outcome: "already", kid: same.kid, kvn: same.kvn, ski: skiHex };
  if (listed.length > 0) {
    throw new ScpOceRefusedError(
      `the card's OCE CA is another one (key identifier ${hex(listed[0]!.ski)}): not replaced (that takes SCP11a with an OCE certificate of the current CA)`,
    );
  }
  // The ISD stays selected: the session is opened on the security domain itself.
  try {
    await openScp03(protocol);
  } catch (error) {
    if (error instanceof ScpUnavailableError) {
      throw new ScpUnavailableError(
        `${error.message}: the card's SCP03 factory key set is gone (replaced by its owner?); install the OCE CA with that key set (e.g. ykman sd)`,
        { cause: error },
      );
    }
    throw error;
  }
  await installOceCaKey(protocol, { publicKey: ca.publicKey, ski, kid: DEFAULT_OCE_KID, kvn: 0x01 });
  return { outcome: "installed", kid: DEFAULT_OCE_KID, kvn: 0x01, ski: skiHex };
}
