import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  type Extension,
  KeyUsageFlags,
  KeyUsagesExtension,
  SubjectKeyIdentifierExtension,
  X509Certificate,
  type X509Crl,
  type X509CrlEntry,
  X509CrlReason,
} from "@peculiar/x509";
import {
  CertificateRevokedError,
  CertificateValidationError,
  type CertificateValidationReason,
  MalformedError,
  ReplayError,
} from "../errors.js";
import { crlNumberOf, parseCrl } from "./crl.js";
import {
  bytesEqual,
  type CertificateParts,
  certificateParts,
  crlParts,
  decodeExtendedKeyUsage,
  serialToBigInt,
} from "./der.js";
import { type CryptoProvider, nodeCrypto } from "./keys.js";
import { EKU, EXT } from "./oids.js";
import { readOwnership } from "./ownership.js";

/**
 * Certification path validation in the manner of RFC 5280 §6.1, for the onboarding PKI.
 *
 * Finding the issuer of each certificate only orders the inputs; every rule is then checked on its
 * own, top down from the trust anchor, and each failure says which rule and which certificate:
 * signatures, name chaining, basicConstraints, pathLenConstraint, keyUsage, the leaf's EKU, validity
 * at `now`, the trust anchor, unknown critical extensions, and revocation by CRL (signature, issuer,
 * freshness, CRL number against a replay floor).
 */

export type CertificateInput = X509Certificate | Uint8Array | ArrayBuffer | string;
export type CrlInput = X509Crl | Uint8Array | ArrayBuffer | string;

export interface ValidateChainOptions {
  /** The end-entity certificate (a card's 9E/9C certificate, or a device certificate). */
  readonly leaf: CertificateInput;
  /** CA certificates that may sit between the leaf and the anchor, in any order. */
  readonly intermediates?: readonly CertificateInput[];
  /** The installed self-signed root: the only thing trusted a priori. */
  readonly trustAnchor: CertificateInput;
  /** CRLs offered for the path (the token CA's CRL travels on the card). */
  readonly crls?: readonly CrlInput[];
  /** Validation time (default: the current time). */
  readonly now?: Date;
  /** The extended key usage the leaf must carry (anyExtendedKeyUsage does not count). */
  readonly requiredEku: string;
  /** keyUsage bits the leaf must carry (default: digitalSignature). */
  readonly requiredKeyUsage?: KeyUsageFlags;
  /** The lowest acceptable CRL number for the leaf's CRL: the highest one this verifier has seen. */
  readonly crlNumberFloor?: bigint | number;
  /** Whether the leaf's issuer must provide a CRL (default true: fail closed). */
  readonly requireCrl?: boolean;
  readonly crypto?: CryptoProvider;
}

export interface ValidatedChain {
  /** Leaf first, trust anchor last. */
  readonly path: readonly X509Certificate[];
  readonly leaf: X509Certificate;
  /** Subject O of the leaf: the owner of a card certificate. */
  readonly owner?: string;
  /** Subject CN of the leaf: the officer of a card certificate. */
  readonly officer?: string;
  /** Subject serialNumber of the leaf: the HSM serial of a device certificate. */
  readonly subjectSerialNumber?: string;
  /** CRL number of the CRL that cleared the leaf (remember the highest seen: crlNumberFloor). */
  readonly crlNumber?: bigint;
}

/** Longest path accepted (anchor, intermediates and leaf); the onboarding PKI needs 3. */
export const MAX_PATH_CERTIFICATES = 6;
/** More inputs than any honest card carries are refused before parsing them (a hostile card, SPEC.md §8). */
export const MAX_INTERMEDIATES = 8;
export const MAX_CRLS = 8;

/** Extensions this validator processes, and so may be critical (RFC 5280 §4.2). */
const PROCESSED_CERT_EXTENSIONS: ReadonlySet<string> = new Set([
  EXT.basicConstraints,
  EXT.keyUsage,
  EXT.extKeyUsage,
  EXT.subjectAltName,
  EXT.subjectKeyIdentifier,
  EXT.authorityKeyIdentifier,
]);
/** CRL extensions this validator processes (RFC 5280 §5.2); delta CRLs and distribution points are not supported. */
const PROCESSED_CRL_EXTENSIONS: ReadonlySet<string> = new Set([EXT.crlNumber, EXT.authorityKeyIdentifier]);
/** CRL entry extensions this validator processes (RFC 5280 §5.3); indirect CRLs are not supported. */
const PROCESSED_CRL_ENTRY_EXTENSIONS: ReadonlySet<string> = new Set([EXT.crlReason, EXT.invalidityDate]);

const ALLOWED_HASHES: ReadonlySet<string> = new Set(["SHA-256", "SHA-384", "SHA-512"]);
const ALLOWED_CURVES: ReadonlySet<string> = new Set(["P-256", "P-384", "P-521"]);

/** A parsed certificate with its raw names. */
interface Node {
  readonly cert: X509Certificate;
  readonly parts: CertificateParts;
  readonly extensions: readonly Extension[];
}

export async function validateChain(options: ValidateChainOptions): Promise<ValidatedChain> {
  const crypto = options.crypto ?? nodeCrypto;
  const now = options.now ?? new Date();
  const anchor = parseNode(options.trustAnchor, "trust anchor");
  const leaf = parseNode(options.leaf, "leaf certificate");
  if ((options.intermediates?.length ?? 0) > MAX_INTERMEDIATES) {
    throw new CertificateValidationError(
      "malformed",
      leaf.cert.subject,
      `more than ${MAX_INTERMEDIATES} intermediates`,
    );
  }
  if ((options.crls?.length ?? 0) > MAX_CRLS) {
    throw new CertificateValidationError("crl-malformed", leaf.cert.subject, `more than ${MAX_CRLS} CRLs`);
  }
  const intermediates = (options.intermediates ?? []).map((c) => parseNode(c, "intermediate certificate"));

  const path = buildPath(leaf, intermediates, anchor);

  // The anchor: self-signed, in force, and able to issue.
  if (!bytesEqual(anchor.parts.issuer, anchor.parts.subject) || !(await signedBy(anchor, anchor, crypto))) {
    fail("untrusted-anchor", anchor, "the installed trust anchor is not a valid self-signed certificate");
  }
  checkValidity(anchor, now);
  checkCriticalExtensions(anchor);

  // RFC 5280 §6.1.2 (k): max_path_length, here seeded with the anchor's own pathLenConstraint.
  let maxPathLength = basicConstraints(anchor)?.pathLength ?? Number.POSITIVE_INFINITY;
  for (let i = path.length - 2; i >= 0; i--) {
    const cert = path[i]!;
    const issuer = path[i + 1]!;
    checkCanIssue(issuer);
    if (!bytesEqual(cert.parts.issuer, issuer.parts.subject)) {
      fail("issuer-name", cert, `issuer name does not match the subject of "${issuer.cert.subject}"`);
    }
    await checkSignature(cert, issuer, issuer === anchor, crypto);
    checkValidity(cert, now);
    checkCriticalExtensions(cert);
    if (i > 0) {
      // An intermediate CA: §6.1.4 (l) and (m).
      if (!isSelfIssued(cert)) {
        if (maxPathLength <= 0) {
          fail("path-length", cert, "a pathLenConstraint above it allows no further CA certificate here");
        }
        maxPathLength--;
      }
      const own = basicConstraints(cert)?.pathLength;
      if (own !== undefined && own < maxPathLength) maxPathLength = own;
    }
  }

  checkLeafKeyUsage(leaf, options.requiredKeyUsage ?? KeyUsageFlags.digitalSignature);
  checkLeafEku(leaf, options.requiredEku);

  const crls = (options.crls ?? []).map((c) => {
    try {
      return parseCrl(c);
    } catch (error) {
      throw new CertificateValidationError("crl-malformed", "(unparsable CRL)", "not a readable CRL", {
        cause: error,
      });
    }
  });
  let leafCrlNumber: bigint | undefined;
  for (let i = path.length - 2; i >= 0; i--) {
    const isLeaf = i === 0;
    const crlNumber = await checkRevocation(path[i]!, path[i + 1]!, crls, now, crypto, {
      required: isLeaf && (options.requireCrl ?? true),
      floor: isLeaf && options.crlNumberFloor !== undefined ? BigInt(options.crlNumberFloor) : undefined,
    });
    if (isLeaf) leafCrlNumber = crlNumber;
  }

  const ownership = readOwnership(leaf.cert);
  return {
    path: path.map((n) => n.cert),
    leaf: leaf.cert,
    ...(ownership.owner !== undefined ? { owner: ownership.owner } : {}),
    ...(ownership.officer !== undefined ? { officer: ownership.officer } : {}),
    ...(ownership.serialNumber !== undefined ? { subjectSerialNumber: ownership.serialNumber } : {}),
    ...(leafCrlNumber !== undefined ? { crlNumber: leafCrlNumber } : {}),
  };
}

/**
 * Orders the given certificates from the leaf up to the anchor by issuer name (and key identifier when
 * several CAs share a name). The anchor is used as soon as a certificate names it as issuer, so a
 * different root carrying the anchor's name can only ever fail the signature check.
 */
function buildPath(leaf: Node, intermediates: readonly Node[], anchor: Node): Node[] {
  const path: Node[] = [leaf];
  let current = leaf;
  for (;;) {
    if (path.length >= MAX_PATH_CERTIFICATES) {
      fail("path-length", current, `chain is longer than ${MAX_PATH_CERTIFICATES} certificates`);
    }
    if (bytesEqual(current.parts.issuer, anchor.parts.subject)) {
      path.push(anchor);
      return path;
    }
    if (isSelfIssued(current)) {
      fail(
        "untrusted-anchor",
        current,
        `chain ends at a root that is not the trust anchor "${anchor.cert.subject}"`,
      );
    }
    const candidates = intermediates.filter(
      (n) => !path.includes(n) && bytesEqual(n.parts.subject, current.parts.issuer),
    );
    if (candidates.length === 0) {
      fail(
        "issuer-name",
        current,
        `issuer "${current.cert.issuer}" is neither a certificate of the chain nor the trust anchor "${anchor.cert.subject}"`,
      );
    }
    const wantedKeyId = authorityKeyId(current);
    const next =
      candidates.find((n) => wantedKeyId !== undefined && subjectKeyId(n) === wantedKeyId) ?? candidates[0]!;
    path.push(next);
    current = next;
  }
}

/** basicConstraints cA and keyUsage keyCertSign on every issuer (RFC 5280 §6.1.4 (k), (n)). */
function checkCanIssue(issuer: Node): void {
  const bc = basicConstraints(issuer);
  if (!bc?.ca) fail("not-ca", issuer, "issues certificates but basicConstraints does not say cA=TRUE");
  const ku = keyUsage(issuer);
  if (ku === undefined) fail("key-usage", issuer, "issues certificates but has no keyUsage extension");
  if ((ku & KeyUsageFlags.keyCertSign) === 0) {
    fail("key-usage", issuer, "issues certificates but keyUsage lacks keyCertSign");
  }
}

async function checkSignature(
  cert: Node,
  issuer: Node,
  issuerIsAnchor: boolean,
  crypto: CryptoProvider,
): Promise<void> {
  if (!bytesEqual(cert.parts.innerSignatureAlgorithm, cert.parts.outerSignatureAlgorithm)) {
    fail("malformed", cert, "signatureAlgorithm differs from tbsCertificate.signature (RFC 5280 §4.1.1.2)");
  }
  checkAlgorithms(cert, issuer);
  if (await signedBy(cert, issuer, crypto)) return;
  if (issuerIsAnchor) {
    fail(
      "untrusted-anchor",
      cert,
      `names the trust anchor "${issuer.cert.subject}" as issuer but was not signed by its key`,
    );
  }
  fail("signature", cert, `signature does not verify with the key of its issuer "${issuer.cert.subject}"`);
}

/** ECDSA with SHA-2 over P-256/P-384/P-521 only: nothing weaker, nothing this project cannot verify. */
function checkAlgorithms(cert: Node, issuer: Node): void {
  let signatureAlgorithm: { name: string; hash?: { name: string } };
  let keyAlgorithm: { name: string; namedCurve?: string };
  try {
    signatureAlgorithm = cert.cert.signatureAlgorithm as typeof signatureAlgorithm;
    keyAlgorithm = issuer.cert.publicKey.algorithm as typeof keyAlgorithm;
  } catch (error) {
    throw new CertificateValidationError("algorithm", cert.cert.subject, "unsupported signature algorithm", {
      cause: error,
    });
  }
  const hash = signatureAlgorithm.hash?.name ?? "";
  if (signatureAlgorithm.name !== "ECDSA" || !ALLOWED_HASHES.has(hash)) {
    fail("algorithm", cert, `signature algorithm ${signatureAlgorithm.name} ${hash} is not ECDSA with SHA-2`);
  }
  if (keyAlgorithm.name !== "ECDSA" || !ALLOWED_CURVES.has(keyAlgorithm.namedCurve ?? "")) {
    fail("algorithm", issuer, `key is not ECDSA on P-256, P-384 or P-521`);
  }
}

async function signedBy(cert: Node, issuer: Node, crypto: CryptoProvider): Promise<boolean> {
  try {
    return await cert.cert.verify({ publicKey: issuer.cert.publicKey, signatureOnly: true }, crypto);
  } catch {
    return false;
  }
}

/** notBefore ≤ now ≤ notAfter (RFC 5280 §4.1.2.5, §6.1.3 (a)(2)). */
function checkValidity(node: Node, now: Date): void {
  const { notBefore, notAfter } = node.cert;
  if (now.getTime() < notBefore.getTime()) {
    fail("not-yet-valid", node, `not valid before ${notBefore.toISOString()} (now ${now.toISOString()})`);
  }
  if (now.getTime() > notAfter.getTime()) {
    fail("expired", node, `expired at ${notAfter.toISOString()} (now ${now.toISOString()})`);
  }
}

/** Unknown critical extensions make a certificate unusable (RFC 5280 §4.2). */
function checkCriticalExtensions(node: Node): void {
  for (const ext of node.extensions) {
    if (ext.critical && !PROCESSED_CERT_EXTENSIONS.has(ext.type)) {
      fail("critical-extension", node, `unrecognised critical extension ${ext.type}`);
    }
  }
}

function checkLeafKeyUsage(leaf: Node, required: KeyUsageFlags): void {
  const ku = keyUsage(leaf);
  if (ku === undefined) fail("key-usage", leaf, "has no keyUsage extension");
  if ((ku & required) !== required) {
    fail("key-usage", leaf, `keyUsage ${describeKeyUsage(ku)} lacks ${describeKeyUsage(required & ~ku)}`);
  }
}

function checkLeafEku(leaf: Node, required: string): void {
  const ext = single(leaf, EXT.extKeyUsage);
  if (!ext) fail("eku", leaf, `has no extendedKeyUsage extension (needs ${required})`);
  let usages: string[];
  try {
    usages = decodeExtendedKeyUsage(ext.value);
  } catch (error) {
    throw new CertificateValidationError("malformed", leaf.cert.subject, "unreadable extendedKeyUsage", {
      cause: error,
    });
  }
  if (usages.includes(required)) return;
  if (usages.includes(EKU.any)) {
    fail("eku", leaf, `carries only anyExtendedKeyUsage, which does not stand in for ${required}`);
  }
  fail("eku", leaf, `extendedKeyUsage ${usages.join(", ")} lacks ${required}`);
}

/**
 * Revocation of `cert` by the CRLs of `issuer` (RFC 5280 §6.3, simplified to complete, direct CRLs):
 * CRL issuer name = issuer subject, signed by the issuer's key (which must carry cRLSign), no
 * unrecognised critical extensions, thisUpdate ≤ now < nextUpdate, a CRL number at or above the floor.
 * Returns the CRL number used, or undefined when the issuer has no CRL and none is required.
 */
async function checkRevocation(
  cert: Node,
  issuer: Node,
  crls: readonly X509Crl[],
  now: Date,
  crypto: CryptoProvider,
  policy: { required: boolean; floor: bigint | undefined },
): Promise<bigint | undefined> {
  const own = crls.filter((crl) => bytesEqual(crlIssuer(crl), issuer.parts.subject));
  if (own.length === 0) {
    if (policy.required) {
      fail("crl-missing", cert, `no CRL from its issuer "${issuer.cert.subject}" was provided`);
    }
    return undefined;
  }
  let newest: { crl: X509Crl; number: bigint } | undefined;
  for (const crl of own) {
    const number = await checkCrl(crl, issuer, now, crypto);
    if (!newest || number > newest.number) newest = { crl, number };
  }
  const { crl, number } = newest!;
  if (policy.floor !== undefined && number < policy.floor) {
    throw new ReplayError(
      `CRL of "${issuer.cert.subject}" has CRL number ${number}, older than the ${policy.floor} already seen: replayed CRL`,
    );
  }
  let entry: X509CrlEntry | null;
  try {
    entry = crl.findRevoked(cert.cert.serialNumber) ?? findRevokedBySerialValue(crl, cert.cert.serialNumber);
  } catch (error) {
    throw new CertificateValidationError(
      "crl-malformed",
      `CRL of ${crl.issuer}`,
      "unreadable revoked-certificate list",
      {
        cause: error,
      },
    );
  }
  if (entry) {
    for (const ext of entry.extensions) {
      if (ext.critical && !PROCESSED_CRL_ENTRY_EXTENSIONS.has(ext.type)) {
        crlFail(
          "critical-extension",
          crl,
          `entry for serial ${entry.serialNumber} has unrecognised critical extension ${ext.type}`,
        );
      }
    }
    const reason = entry.reason;
    throw new CertificateRevokedError(
      cert.cert.subject,
      cert.cert.serialNumber,
      entry.revocationDate,
      reason !== undefined ? X509CrlReason[reason] : undefined,
    );
  }
  return number;
}

async function checkCrl(crl: X509Crl, issuer: Node, now: Date, crypto: CryptoProvider): Promise<bigint> {
  let parts: ReturnType<typeof crlParts>;
  try {
    parts = crlParts(crl.rawData);
  } catch (error) {
    throw new CertificateValidationError("crl-malformed", crl.issuer, "not a readable CRL", { cause: error });
  }
  if (!bytesEqual(parts.innerSignatureAlgorithm, parts.outerSignatureAlgorithm)) {
    crlFail(
      "crl-malformed",
      crl,
      "signatureAlgorithm differs from tbsCertList.signature (RFC 5280 §5.1.1.2)",
    );
  }
  const ku = keyUsage(issuer);
  if (ku === undefined || (ku & KeyUsageFlags.cRLSign) === 0) {
    crlFail(
      "crl-signature",
      crl,
      `issuer "${issuer.cert.subject}" may not sign CRLs (keyUsage lacks cRLSign)`,
    );
  }
  if (!(await crlSignedBy(crl, issuer, crypto))) {
    crlFail("crl-signature", crl, `signature does not verify with the key of "${issuer.cert.subject}"`);
  }
  if (crl.version !== 1) crlFail("crl-malformed", crl, "not a v2 CRL");
  let extensions: Extension[];
  try {
    extensions = crl.extensions;
  } catch (error) {
    throw new CertificateValidationError("crl-malformed", crl.issuer, "unreadable CRL extensions", {
      cause: error,
    });
  }
  for (const ext of extensions) {
    if (ext.critical && !PROCESSED_CRL_EXTENSIONS.has(ext.type)) {
      crlFail("critical-extension", crl, `unrecognised critical CRL extension ${ext.type}`);
    }
  }
  if (now.getTime() < crl.thisUpdate.getTime()) {
    crlFail(
      "crl-stale",
      crl,
      `issued in the future (thisUpdate ${crl.thisUpdate.toISOString()}, now ${now.toISOString()})`,
    );
  }
  const nextUpdate = crl.nextUpdate;
  if (!nextUpdate) crlFail("crl-stale", crl, "has no nextUpdate, so its freshness cannot be judged");
  if (now.getTime() >= nextUpdate.getTime()) {
    crlFail("crl-stale", crl, `out of date since ${nextUpdate.toISOString()} (now ${now.toISOString()})`);
  }
  let number: bigint | undefined;
  try {
    number = crlNumberOf(crl);
  } catch (error) {
    throw new CertificateValidationError("crl-malformed", crl.issuer, "unreadable CRL number", {
      cause: error,
    });
  }
  if (number === undefined) crlFail("crl-malformed", crl, "has no CRL number (RFC 5280 §5.2.3)");
  return number;
}

async function crlSignedBy(crl: X509Crl, issuer: Node, crypto: CryptoProvider): Promise<boolean> {
  try {
    const key = await issuer.cert.publicKey.export(
      { ...issuer.cert.publicKey.algorithm, ...crl.signatureAlgorithm },
      ["verify"],
      crypto,
    );
    return await crl.verify({ publicKey: key }, crypto);
  } catch {
    return false;
  }
}

function crlIssuer(crl: X509Crl): Uint8Array {
  try {
    return crlParts(crl.rawData).issuer;
  } catch (error) {
    throw new CertificateValidationError("crl-malformed", "(unparsable CRL)", "not a readable CRL", {
      cause: error,
    });
  }
}

/** Serial numbers compare as integers: a CRL may pad a serial with a leading zero octet. */
function findRevokedBySerialValue(crl: X509Crl, serialHex: string): X509CrlEntry | null {
  const wanted = serialToBigInt(serialHex);
  return crl.entries.find((e) => serialToBigInt(e.serialNumber) === wanted) ?? null;
}

function parseNode(input: CertificateInput, what: string): Node {
  let cert: X509Certificate;
  try {
    cert =
      input instanceof X509Certificate
        ? input
        : new X509Certificate(input instanceof Uint8Array ? toArrayBuffer(input) : input);
  } catch (error) {
    throw new MalformedError(`${what}: not a readable X.509 certificate`, { cause: error });
  }
  let parts: CertificateParts;
  let extensions: Extension[];
  try {
    parts = certificateParts(cert.rawData);
    extensions = cert.extensions;
  } catch (error) {
    throw new MalformedError(`${what} "${safeSubject(cert)}": malformed`, { cause: error });
  }
  const seen = new Set<string>();
  for (const ext of extensions) {
    if (seen.has(ext.type)) {
      throw new CertificateValidationError("malformed", cert.subject, `extension ${ext.type} appears twice`);
    }
    seen.add(ext.type);
  }
  return { cert, parts, extensions };
}

function isSelfIssued(node: Node): boolean {
  return bytesEqual(node.parts.issuer, node.parts.subject);
}

function single(node: Node, type: string): Extension | undefined {
  return node.extensions.find((e) => e.type === type);
}

function basicConstraints(node: Node): BasicConstraintsExtension | undefined {
  const ext = single(node, EXT.basicConstraints);
  return ext instanceof BasicConstraintsExtension ? ext : undefined;
}

function keyUsage(node: Node): KeyUsageFlags | undefined {
  const ext = single(node, EXT.keyUsage);
  return ext instanceof KeyUsagesExtension ? ext.usages : undefined;
}

function subjectKeyId(node: Node): string | undefined {
  const ext = single(node, EXT.subjectKeyIdentifier);
  return ext instanceof SubjectKeyIdentifierExtension ? ext.keyId.toLowerCase() : undefined;
}

function authorityKeyId(node: Node): string | undefined {
  const ext = single(node, EXT.authorityKeyIdentifier);
  return ext instanceof AuthorityKeyIdentifierExtension ? ext.keyId?.toLowerCase() : undefined;
}

const KEY_USAGE_NAMES: readonly [KeyUsageFlags, string][] = [
  [KeyUsageFlags.digitalSignature, "digitalSignature"],
  [KeyUsageFlags.nonRepudiation, "nonRepudiation"],
  [KeyUsageFlags.keyEncipherment, "keyEncipherment"],
  [KeyUsageFlags.dataEncipherment, "dataEncipherment"],
  [KeyUsageFlags.keyAgreement, "keyAgreement"],
  [KeyUsageFlags.keyCertSign, "keyCertSign"],
  [KeyUsageFlags.cRLSign, "cRLSign"],
  [KeyUsageFlags.encipherOnly, "encipherOnly"],
  [KeyUsageFlags.decipherOnly, "decipherOnly"],
];

function describeKeyUsage(flags: number): string {
  const names = KEY_USAGE_NAMES.filter(([bit]) => (flags & bit) !== 0).map(([, name]) => name);
  return names.length > 0 ? names.join("+") : "(none)";
}

function fail(reason: CertificateValidationReason, node: Node, detail: string): never {
  throw new CertificateValidationError(reason, node.cert.subject, detail);
}

function crlFail(reason: CertificateValidationReason, crl: X509Crl, detail: string): never {
  throw new CertificateValidationError(reason, `CRL of ${crl.issuer}`, detail);
}

function safeSubject(cert: X509Certificate): string {
  try {
    return cert.subject;
  } catch {
    return "(unreadable subject)";
  }
}

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}
