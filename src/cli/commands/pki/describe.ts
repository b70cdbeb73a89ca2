import { createHash } from "node:crypto";
import { crlNumberOf } from "../../../pki/crl.js";
import type { X509Certificate, X509Crl } from "../../../util/x509.js";

/** The parts of a certificate an officer checks, for `--json` output. */
export function describeCertificate(cert: X509Certificate, file?: string) {
  return {
    ...(file !== undefined ? { file } : {}),
    subject: cert.subject,
    issuer: cert.issuer,
    serialNumber: cert.serialNumber,
    notBefore: cert.notBefore.toISOString(),
    notAfter: cert.notAfter.toISOString(),
    sha256: fingerprint(cert),
  };
}

export function describeCrl(crl: X509Crl, file?: string) {
  return {
    ...(file !== undefined ? { file } : {}),
    issuer: crl.issuer,
    crlNumber: Number(crlNumberOf(crl)),
    thisUpdate: crl.thisUpdate.toISOString(),
    nextUpdate: crl.nextUpdate?.toISOString(),
    revoked: crl.entries.map((e) => e.serialNumber),
  };
}

/** SHA-256 over the DER, as `openssl x509 -fingerprint -sha256` prints it. */
export function fingerprint(cert: X509Certificate): string {
  return createHash("sha256")
    .update(new Uint8Array(cert.rawData))
    .digest("hex")
    .toUpperCase()
    .replace(/(..)(?!$)/g, "$1:");
}

/** A date as an officer reads it in a one-line summary. */
export function day(date: Date): string {
  return date.toISOString().slice(0, 10);
}
