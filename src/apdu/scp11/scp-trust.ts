/**
 * Validation of the SD's SCP certificate chain (from GET DATA BF21, leaf last) to one of the SCP
 * trust anchors the station or agent was given: the card vendor's CA (Yubico's SD attestation root
 * for a real YubiKey; the virtual card's vendor CA for the emulator). Only after this does the host
 * use PK.SD in the key agreement, so a card whose SCP key is not vouched for by a known vendor is
 * refused before any secret is sent.
 *
 * Rules, each failure a CertificateValidationError (exit 11): every certificate parses strictly
 * (fast-x509); each one is signed by the next (ECDSA with SHA-2) and names it as issuer; every
 * issuer is a CA (basicConstraints cA, keyCertSign when keyUsage is present, path length
 * respected); the top of the store is signed by an anchor (or is one); every certificate is within
 * its validity at `now`; the leaf holds a P-256 key and, when it has keyUsage, keyAgreement.
 */
import { CertificateValidationError, type CertificateValidationReason } from "../../errors.js";
import {
  certificateSignedBy,
  KEY_USAGE,
  type ParsedCertificate,
  parseCertificate,
} from "../../pki/fast-x509.js";
import { PEM_LABELS, pemToDer } from "../../pki/pem.js";
import { bytesEqual } from "../../util/bytes.js";
import { p256Point } from "./handshake.js";

export interface ScpTrust {
  /** The SCP trust anchors (DER or PEM certificates of the card vendors' CAs). */
  readonly anchors: readonly (Uint8Array | string)[];
  /** Validation time (default now). */
  readonly now?: Date;
}

export interface ValidatedScpChain {
  /** PK.SD: the leaf's uncompressed P-256 point. */
  readonly pkSd: Uint8Array;
  /** Subjects from the leaf up to the anchor. */
  readonly subjects: readonly string[];
}

function fail(reason: CertificateValidationReason, subject: string, detail: string, cause?: unknown): never {
  throw new CertificateValidationError(
    reason,
    subject,
    `SCP certificate ${detail}`,
    cause ? { cause } : undefined,
  );
}

function parse(der: Uint8Array | string, what: string): ParsedCertificate {
  try {
    return parseCertificate(typeof der === "string" ? pemToDer(der, PEM_LABELS.certificate) : der);
  } catch (cause) {
    return fail("malformed", what, "does not parse", cause);
  }
}

async function signedBy(cert: ParsedCertificate, issuer: ParsedCertificate): Promise<boolean> {
  try {
    return await certificateSignedBy(cert, issuer, undefined);
  } catch {
    return false;
  }
}

function checkIssuer(ca: ParsedCertificate, below: number): void {
  const bc = ca.basicConstraints;
  if (!bc?.ca) fail("not-ca", ca.subject, "issues certificates but is not a CA");
  if (ca.keyUsage !== undefined && (ca.keyUsage & KEY_USAGE.keyCertSign) === 0) {
    fail("key-usage", ca.subject, "issues certificates without keyCertSign");
  }
  if (bc.pathLength !== undefined && below > bc.pathLength) {
    fail("path-length", ca.subject, `has ${below} CA certificates below a path length of ${bc.pathLength}`);
  }
}

function checkValidity(c: ParsedCertificate, now: Date): void {
  if (now < c.structure.notBefore) fail("not-yet-valid", c.subject, "is not yet valid");
  if (now > c.structure.notAfter) fail("expired", c.subject, "has expired");
}

/** Validates `store` (leaf last) to one of `trust.anchors` and returns PK.SD. */
export async function validateScpChain(
  store: readonly Uint8Array[],
  trust: ScpTrust,
): Promise<ValidatedScpChain> {
  if (store.length === 0) fail("malformed", "(empty)", "store is empty");
  if (trust.anchors.length === 0)
    fail("untrusted-anchor", "(none)", "cannot be trusted: no SCP trust anchor configured");
  const now = trust.now ?? new Date();
  const path = store.map((d, i) => parse(d, `SCP store certificate ${i}`)).reverse(); // leaf first
  const anchors = trust.anchors.map((a, i) => parse(a, `SCP trust anchor ${i}`));
  const leaf = path[0]!;
  if (leaf.keyCurve !== "P-256") fail("algorithm", leaf.subject, "does not hold a P-256 key");
  if (leaf.keyUsage !== undefined && (leaf.keyUsage & KEY_USAGE.keyAgreement) === 0) {
    fail("key-usage", leaf.subject, "lacks keyAgreement");
  }
  for (const c of path) {
    if (c.duplicateExtension) fail("malformed", c.subject, `repeats extension ${c.duplicateExtension}`);
    checkValidity(c, now);
  }
  for (let i = 0; i + 1 < path.length; i++) {
    const child = path[i]!;
    const issuer = path[i + 1]!;
    if (!bytesEqual(child.structure.issuer.encoding, issuer.structure.subject.encoding)) {
      fail(
        "issuer-name",
        child.subject,
        `is not issued by the next certificate of the store ("${issuer.subject}")`,
      );
    }
    checkIssuer(issuer, i);
    if (!(await signedBy(child, issuer))) fail("signature", child.subject, "signature does not verify");
  }
  const top = path[path.length - 1]!;
  const caBelow = path.length - 1;
  let anchor = anchors.find((a) => bytesEqual(a.der, top.der));
  if (!anchor) {
    for (const a of anchors) {
      if (!bytesEqual(top.structure.issuer.encoding, a.structure.subject.encoding)) continue;
      checkIssuer(a, caBelow);
      if (await signedBy(top, a)) {
        anchor = a;
        break;
      }
      fail("signature", top.subject, `signature by the trust anchor "${a.subject}" does not verify`);
    }
  }
  if (!anchor) fail("untrusted-anchor", top.subject, "does not chain to a configured SCP trust anchor");
  checkValidity(anchor, now);
  let pkSd: Uint8Array;
  try {
    pkSd = p256Point(leaf.publicKey());
  } catch (cause) {
    return fail("algorithm", leaf.subject, "public key is not a usable P-256 point", cause);
  }
  const subjects = path.map((c) => c.subject);
  if (anchor !== top) subjects.push(anchor.subject);
  return { pkSd, subjects };
}
