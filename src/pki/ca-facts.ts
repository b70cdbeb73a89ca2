import { createHash } from "node:crypto";
import { MalformedError } from "../errors.js";
import { withinDirectorySubtree } from "./constraints.js";
import { KEY_USAGE, nameValues, type ParsedCertificate, parseCertificate } from "./fast-x509.js";
import { ATTR, EKU } from "./oids.js";

/**
 * Facts about CA certificates that the flows decide on (SPEC.md §4, "Many owners, one root"): which
 * key an owner binding pins, whether a CA is a device CA or an owner's token CA. Read with the strict
 * DER reader only (no X.509 library), so the agent may call them. Inputs are DER — bytes, or any
 * certificate object with its DER as `rawData` (an @peculiar/x509 X509Certificate, a CertificateView).
 */
export type CertificateDer = Uint8Array | ArrayBuffer | { readonly rawData: ArrayBuffer };

/**
 * SHA-256 of the certificate's SubjectPublicKeyInfo (its DER, as in RFC 7469 pins), lowercase hex:
 * what an HSM pins to bind itself to an owner's token CA key (`agent factory-init --owner-ca`).
 */
export function spkiSha256(certificate: CertificateDer): string {
  return createHash("sha256").update(parsed(certificate).structure.publicKey.encoding).digest("hex");
}

/** A CA certificate: basicConstraints cA and keyUsage keyCertSign. */
function isCa(cert: ParsedCertificate): boolean {
  return cert.basicConstraints?.ca === true && ((cert.keyUsage ?? 0) & KEY_USAGE.keyCertSign) !== 0;
}

/**
 * A device CA: a CA whose CA-level extendedKeyUsage is the device (receipt-signing) usage and nothing
 * else. Receipts are accepted only from device certificates under such a CA.
 */
export function isDeviceCa(certificate: CertificateDer): boolean {
  const cert = parsed(certificate);
  const eku = cert.extendedKeyUsage;
  return isCa(cert) && eku !== undefined && eku.length > 0 && eku.every((u) => u === EKU.deviceReceipt);
}

const TOKEN_CA_USAGES: ReadonlySet<string> = new Set([EKU.tokenAuth, EKU.configSigning, EKU.pivCardAuth]);

/**
 * A token CA: a CA whose CA-level extendedKeyUsage allows card usages (token-auth or config-signing)
 * and nothing beyond the card usages (no device usage).
 */
export function isTokenCa(certificate: CertificateDer): boolean {
  const cert = parsed(certificate);
  const eku = cert.extendedKeyUsage ?? [];
  return (
    isCa(cert) &&
    eku.every((u) => TOKEN_CA_USAGES.has(u)) &&
    (eku.includes(EKU.tokenAuth) || eku.includes(EKU.configSigning))
  );
}

/**
 * The owner a token CA speaks for: its single subject O, provided its name constraints permit
 * exactly that O (a directoryName subtree "O = owner") — undefined for a CA that is not so limited.
 */
export function tokenCaOwner(certificate: CertificateDer): string | undefined {
  const cert = parsed(certificate);
  const owners = nameValues(cert.structure.subject, ATTR.organization);
  const permitted = cert.nameConstraints?.permitted;
  if (owners.length !== 1 || !permitted || permitted.length === 0) return undefined;
  const ownerRdn = cert.structure.subject.rdns.find((rdn) => rdn.some((a) => a.type === ATTR.organization));
  if (ownerRdn?.length !== 1) return undefined;
  const ownerOnly = { encoding: new Uint8Array(), rdns: [ownerRdn] };
  const exact = permitted.every(
    (b) =>
      b.form === "directoryName" &&
      b.directoryName !== undefined &&
      b.directoryName.rdns.length === 1 &&
      withinDirectorySubtree(ownerOnly, b.directoryName),
  );
  return exact ? owners[0] : undefined;
}

function parsed(certificate: CertificateDer): ParsedCertificate {
  const der =
    certificate instanceof Uint8Array
      ? certificate
      : certificate instanceof ArrayBuffer
        ? new Uint8Array(certificate)
        : new Uint8Array(certificate.rawData);
  try {
    return parseCertificate(der);
  } catch (error) {
    throw new MalformedError("not a readable X.509 certificate", { cause: error });
  }
}
