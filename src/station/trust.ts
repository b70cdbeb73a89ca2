/**
 * What the station accepts into its directory, checked before it is stored (SPEC.md §4):
 *
 * - the trust anchor: a self-signed CA certificate (the manufacturer root) in its validity period;
 * - a token CA: a CA certificate issued directly by that anchor, allowed to sign certificates and CRLs;
 * - a CRL: issued and signed by such a token CA, v2, with a CRL number, current at `now`.
 *
 * Card chains themselves are validated by src/pki validateChain (authenticate-card.ts); these checks
 * cover the inputs that have no end-entity certificate to validate.
 */

import { IntegrityError, MalformedError, UsageError, ValidityError } from "../errors.js";
import { crlNumberOf } from "../pki/crl.js";
import { certificateParts, crlParts } from "../pki/der.js";
import { nodeCrypto } from "../pki/keys.js";
import { bytesEqual } from "../util/bytes.js";
import {
  BasicConstraintsExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  type X509Certificate,
  type X509Crl,
} from "../util/x509.js";

/** UsageError unless `certificate` is a self-signed CA certificate valid at `now`. */
export async function checkTrustAnchor(certificate: X509Certificate, now: Date): Promise<void> {
  const parts = certificateParts(certificate.rawData);
  const what = `trust anchor "${certificate.subject}"`;
  if (!bytesEqual(parts.issuer, parts.subject)) {
    throw new UsageError(
      `${what} is not self-signed (issued by "${certificate.issuer}"): give the manufacturer root`,
    );
  }
  if (!(await signedBy(certificate, certificate))) {
    throw new UsageError(`${what}: its self-signature does not verify`);
  }
  checkCa(certificate, what, KeyUsageFlags.keyCertSign, UsageError);
  checkValidity(certificate, what, now, UsageError);
}

/**
 * Checks that `tokenCa` is a CA issued by `anchor` that may sign CRLs, valid at `now`. Throws
 * IntegrityError when it was not issued by the anchor, UsageError when it is not a usable CA.
 */
export async function checkTokenCa(
  tokenCa: X509Certificate,
  anchor: X509Certificate,
  now: Date,
): Promise<void> {
  const what = `token CA "${tokenCa.subject}"`;
  const parts = certificateParts(tokenCa.rawData);
  if (
    !bytesEqual(parts.issuer, certificateParts(anchor.rawData).subject) ||
    !(await signedBy(tokenCa, anchor))
  ) {
    throw new IntegrityError(`${what} was not issued by the station's trust anchor "${anchor.subject}"`);
  }
  checkCa(tokenCa, what, KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, UsageError);
  checkValidity(tokenCa, what, now, ValidityError);
}

/**
 * Verifies `crl` against its issuer (already checked with checkTokenCa) and returns its CRL number.
 * IntegrityError: not issued or not signed by that issuer. ValidityError: not current at `now`.
 * MalformedError: not v2, or without a CRL number.
 */
export async function verifyCrlSignedBy(crl: X509Crl, issuer: X509Certificate, now: Date): Promise<bigint> {
  const what = `CRL of "${crl.issuer}"`;
  const parts = crlParts(crl.rawData);
  if (!bytesEqual(parts.issuer, certificateParts(issuer.rawData).subject)) {
    throw new IntegrityError(`${what} was not issued by "${issuer.subject}"`);
  }
  if (!bytesEqual(parts.innerSignatureAlgorithm, parts.outerSignatureAlgorithm)) {
    throw new MalformedError(`${what}: signatureAlgorithm differs from tbsCertList.signature`);
  }
  if (!(await crlSignedBy(crl, issuer))) {
    throw new IntegrityError(`${what}: signature does not verify with the key of "${issuer.subject}"`);
  }
  if (crl.version !== 1) throw new MalformedError(`${what}: not a v2 CRL`);
  const number = crlNumberOf(crl);
  if (number === undefined) throw new MalformedError(`${what}: no CRL number (RFC 5280 §5.2.3)`);
  if (now.getTime() < crl.thisUpdate.getTime()) {
    throw new ValidityError(`${what} is not valid before ${crl.thisUpdate.toISOString()}`);
  }
  const nextUpdate = crl.nextUpdate;
  if (!nextUpdate) throw new MalformedError(`${what}: no nextUpdate`);
  if (now.getTime() >= nextUpdate.getTime()) {
    throw new ValidityError(
      `${what} is out of date since ${nextUpdate.toISOString()}: get a fresh one from the token CA`,
    );
  }
  return number;
}

/** Whether the CRL names `certificate` as its issuer (same subject name bytes). */
export function crlIssuedUnder(crl: X509Crl, certificate: X509Certificate): boolean {
  return bytesEqual(crlParts(crl.rawData).issuer, certificateParts(certificate.rawData).subject);
}

type ErrorClass = new (message: string) => Error;

function checkCa(
  certificate: X509Certificate,
  what: string,
  usages: KeyUsageFlags,
  Failure: ErrorClass,
): void {
  const bc = certificate.getExtension(BasicConstraintsExtension);
  if (!bc?.ca) throw new Failure(`${what} is not a CA certificate (basicConstraints cA is not TRUE)`);
  const ku = certificate.getExtension(KeyUsagesExtension);
  if (!ku || (ku.usages & usages) !== usages) {
    throw new Failure(
      `${what}: keyUsage lacks ${usages & KeyUsageFlags.cRLSign ? "keyCertSign or cRLSign" : "keyCertSign"}`,
    );
  }
}

function checkValidity(certificate: X509Certificate, what: string, now: Date, Failure: ErrorClass): void {
  if (now < certificate.notBefore) {
    throw new Failure(`${what} is not valid before ${certificate.notBefore.toISOString()}`);
  }
  if (now > certificate.notAfter)
    throw new Failure(`${what} expired at ${certificate.notAfter.toISOString()}`);
}

async function signedBy(certificate: X509Certificate, issuer: X509Certificate): Promise<boolean> {
  try {
    return await certificate.verify({ publicKey: issuer.publicKey, signatureOnly: true }, nodeCrypto);
  } catch {
    return false;
  }
}

async function crlSignedBy(crl: X509Crl, issuer: X509Certificate): Promise<boolean> {
  try {
    // The key is imported with the CRL's own hash (a P-384 token CA signs with SHA-384).
    const key = await issuer.publicKey.export(
      { ...issuer.publicKey.algorithm, ...crl.signatureAlgorithm },
      ["verify"],
      nodeCrypto,
    );
    return await crl.verify({ publicKey: key }, nodeCrypto);
  } catch {
    return false;
  }
}
