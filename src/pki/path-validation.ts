import {
  CertificateRevokedError,
  CertificateValidationError,
  type CertificateValidationReason,
  MalformedError,
  ReplayError,
} from "../errors.js";
import { bytesEqual } from "../util/bytes.js";
import { nameConstraintViolation } from "./constraints.js";
import { decodeExtendedKeyUsage } from "./der.js";
import {
  CertificateView,
  certificateSignedBy,
  crlEntryReason,
  crlNumberOfParsed,
  crlSignedBy,
  KEY_USAGE,
  nameValues,
  type ParsedCertificate,
  type ParsedCrl,
  parseCertificate,
  parseCrlDer,
  readCrl,
  selfSigned,
} from "./fast-x509.js";
import type { CryptoProvider } from "./keys.js";
import { ATTR, EKU, EXT } from "./oids.js";
import { WARM_UP_CHAIN, WARM_UP_TIME } from "./warm-up-chain.js";

/**
 * Certification path validation in the manner of RFC 5280 §6.1, for the onboarding PKI: the core
 * that both entry points run — `validateChainView` here (the agent's: DER in, read-only views out,
 * node:crypto only) and `validateChain` in validate-chain.ts (the station's and the CLI's: PEM or
 * @peculiar/x509 objects in and out).
 *
 * Finding the issuer of each certificate only orders the inputs; every rule is then checked on its
 * own, top down from the trust anchor, and each failure says which rule and which certificate:
 * signatures, name chaining, basicConstraints, pathLenConstraint, keyUsage, the leaf's EKU, validity
 * at `now`, the trust anchor, unknown critical extensions, and revocation by CRL (signature, issuer,
 * freshness, CRL number against a replay floor).
 *
 * Certificates and CRLs are read by src/pki/fast-x509.ts (a strict DER reader; OpenSSL for keys and
 * signatures; caches of parsed objects and verified signatures), so this module loads neither
 * @peculiar/x509 nor asn1js: `validateChainView` is what the agent calls. `validateChain` runs the
 * same validation and returns @peculiar/x509 certificates, for the station and the CLI, which use
 * them further (it loads @peculiar/x509 when it returns).
 */

/** A certificate or CRL as DER: bytes, or an object holding its DER (@peculiar/x509, CertificateView). */
export type DerInput = Uint8Array | ArrayBuffer | { readonly rawData: ArrayBuffer };

/** Options of both entry points; `C` and `L` are the accepted certificate and CRL forms. */
export interface PathValidationOptions<C = DerInput, L = DerInput> {
  /** The end-entity certificate (a card's 9E/9C certificate, or a device certificate). */
  readonly leaf: C;
  /** CA certificates that may sit between the leaf and the anchor, in any order. */
  readonly intermediates?: readonly C[];
  /** The installed self-signed root: the only thing trusted a priori. */
  readonly trustAnchor: C;
  /** CRLs offered for the path (the token CA's CRL travels on the card). */
  readonly crls?: readonly L[];
  /** Validation time (default: the current time). */
  readonly now?: Date;
  /**
   * The extended key usage the leaf must carry (anyExtendedKeyUsage does not count). `null`: none
   * required — for generic RFC 5280 test suites (x509-limbo); every onboarding use names one.
   */
  readonly requiredEku: string | null;
  /**
   * keyUsage bits the leaf must carry (KEY_USAGE or @peculiar/x509's KeyUsageFlags; default
   * digitalSignature). 0: none, and a leaf without a keyUsage extension is accepted (test suites).
   */
  readonly requiredKeyUsage?: number;
  /** The lowest acceptable CRL number for the leaf's CRL: the highest one this verifier has seen. */
  readonly crlNumberFloor?: bigint | number;
  /** Whether the leaf's issuer must provide a CRL (default true: fail closed). */
  readonly requireCrl?: boolean;
  /**
   * The leaf's subject O must be its issuer's subject O, exactly one each, equal as DER (card
   * certificates: a token CA speaks only for its own owner, SPEC.md §4). Default false.
   */
  readonly requireIssuerOrganization?: boolean;
  /**
   * Verifies the signatures (default: Node's WebCrypto, which runs as OpenSSL calls directly and
   * remembers what verified; any other provider is asked for every signature).
   */
  readonly crypto?: CryptoProvider;
}

/** What a validation established, with the path as `C` (read-only views, or @peculiar/x509 objects). */
export interface ValidatedPath<C> {
  /** Leaf first, trust anchor last. */
  readonly path: readonly C[];
  readonly leaf: C;
  /** Subject O of the leaf: the owner of a card certificate. */
  readonly owner?: string;
  /** Subject CN of the leaf: the officer of a card certificate. */
  readonly officer?: string;
  /** Subject serialNumber of the leaf: the HSM serial of a device certificate. */
  readonly subjectSerialNumber?: string;
  /** CRL number of the CRL that cleared the leaf (remember the highest seen: crlNumberFloor). */
  readonly crlNumber?: bigint;
}

export type ValidatedChainView = ValidatedPath<CertificateView>;

/** Longest path accepted (anchor, intermediates and leaf); the onboarding PKI needs 3. */
export const MAX_PATH_CERTIFICATES = 6;
/** More inputs than any honest card carries are refused before parsing them (a hostile card, SPEC.md §8). */
export const MAX_INTERMEDIATES = 8;
export const MAX_CRLS = 8;

export { CertificateView, KEY_USAGE, readCrl };

/** Extensions this validator processes, and so may be critical (RFC 5280 §4.2). */
const PROCESSED_CERT_EXTENSIONS: ReadonlySet<string> = new Set([
  EXT.basicConstraints,
  EXT.keyUsage,
  EXT.extKeyUsage,
  EXT.subjectAltName,
  EXT.subjectKeyIdentifier,
  EXT.authorityKeyIdentifier,
  EXT.nameConstraints,
]);
/** CRL extensions this validator processes (RFC 5280 §5.2); delta CRLs and distribution points are not supported. */
const PROCESSED_CRL_EXTENSIONS: ReadonlySet<string> = new Set([EXT.crlNumber, EXT.authorityKeyIdentifier]);
/** CRL entry extensions this validator processes (RFC 5280 §5.3); indirect CRLs are not supported. */
const PROCESSED_CRL_ENTRY_EXTENSIONS: ReadonlySet<string> = new Set([EXT.crlReason, EXT.invalidityDate]);

/** One input certificate, parsed; `source` is the caller's object when one was given. */
export interface Node {
  readonly cert: ParsedCertificate;
  readonly source?: { readonly rawData: ArrayBuffer };
}

/**
 * Validates the path and returns read-only certificate views: the agent's entry point, which loads
 * no X.509 library. Same checks, same errors as `validateChain`.
 */
export async function validateChainView(options: PathValidationOptions): Promise<ValidatedChainView> {
  const { path, ...facts } = await validatePath(options);
  const views = path.map((n) => new CertificateView(n.cert));
  return { path: views, leaf: views[0]!, ...facts };
}

/**
 * Parses and remembers the installed trust anchor, its own signature verified, so that the first
 * onboarding does not pay for it (call it when the agent starts). MalformedError if unreadable;
 * whether it is a valid anchor is decided, as always, by each validation.
 */
export function primeTrustAnchor(trustAnchor: DerInput): void {
  const anchor = parseNode(trustAnchor, "trust anchor").cert;
  void selfSigned(anchor, undefined);
}

/**
 * One complete validation (parsing, every rule, a CRL with an entry) over a built-in chain, then
 * primeTrustAnchor for the installed anchor if one is given: the first onboarding then does not pay
 * for compiling this code and for OpenSSL's first use of each curve (≈ 10 ms of CPU on the reference
 * machine, against ≈ 2.5 ms for the two chains of a new card afterwards). Call it when the agent
 * starts, before any card is present. Throws only for an unreadable anchor (MalformedError).
 */
export async function warmUpValidation(trustAnchor?: DerInput): Promise<void> {
  const der = (base64: string) => new Uint8Array(Buffer.from(base64, "base64"));
  await validateChainView({
    leaf: der(WARM_UP_CHAIN.leaf),
    intermediates: [der(WARM_UP_CHAIN.tokenCa)],
    trustAnchor: der(WARM_UP_CHAIN.root),
    crls: [der(WARM_UP_CHAIN.crl)],
    now: WARM_UP_TIME,
    crlNumberFloor: 1n,
    requiredEku: EKU.tokenAuth,
  });
  if (trustAnchor !== undefined) primeTrustAnchor(trustAnchor);
}

/** The validation itself, over DER inputs: what both entry points run. */
export async function validatePath(
  options: PathValidationOptions,
): Promise<Omit<ValidatedPath<never>, "path" | "leaf"> & { path: readonly Node[] }> {
  const provider = options.crypto === undefined ? undefined : await otherThanNodes(options.crypto);
  const now = options.now ?? new Date();
  const anchor = parseNode(options.trustAnchor, "trust anchor");
  const leaf = parseNode(options.leaf, "leaf certificate");
  if ((options.intermediates?.length ?? 0) > MAX_INTERMEDIATES) {
    fail("malformed", leaf, `more than ${MAX_INTERMEDIATES} intermediates`);
  }
  if ((options.crls?.length ?? 0) > MAX_CRLS) {
    fail("crl-malformed", leaf, `more than ${MAX_CRLS} CRLs`);
  }
  const intermediates = (options.intermediates ?? []).map((c) => parseNode(c, "intermediate certificate"));

  const path = buildPath(leaf, intermediates, anchor);

  // The anchor: self-signed, in force, and able to issue.
  const a = anchor.cert.structure;
  if (
    !bytesEqual(a.issuer.encoding, a.subject.encoding) ||
    !bytesEqual(a.innerAlgorithm.encoding, a.outerAlgorithm.encoding) ||
    !(await selfSigned(anchor.cert, provider))
  ) {
    fail("untrusted-anchor", anchor, "the installed trust anchor is not a valid self-signed certificate");
  }
  checkValidity(anchor, now);
  checkCriticalExtensions(anchor);
  checkProfile(anchor, "anchor");

  // RFC 5280 §6.1.2 (k): max_path_length, here seeded with the anchor's own pathLenConstraint.
  let maxPathLength = anchor.cert.basicConstraints?.pathLength ?? Number.POSITIVE_INFINITY;
  for (let i = path.length - 2; i >= 0; i--) {
    const node = path[i]!;
    const issuer = path[i + 1]!;
    checkCanIssue(issuer);
    if (!bytesEqual(node.cert.structure.issuer.encoding, issuer.cert.structure.subject.encoding)) {
      fail("issuer-name", node, `issuer name does not match the subject of "${issuer.cert.subject}"`);
    }
    await checkSignature(node, issuer, issuer === anchor, provider);
    checkValidity(node, now);
    checkCriticalExtensions(node);
    checkProfile(node, i === 0 ? "leaf" : "ca");
    if (i > 0) {
      // An intermediate CA: §6.1.4 (l) and (m).
      if (!isSelfIssued(node)) {
        if (maxPathLength <= 0) {
          fail("path-length", node, "a pathLenConstraint above it allows no further CA certificate here");
        }
        maxPathLength--;
      }
      const own = node.cert.basicConstraints?.pathLength;
      if (own !== undefined && own < maxPathLength) maxPathLength = own;
    }
  }

  checkNameConstraints(path);
  const requiredKeyUsage = options.requiredKeyUsage ?? KEY_USAGE.digitalSignature;
  if (requiredKeyUsage !== 0) checkLeafKeyUsage(leaf, requiredKeyUsage);
  if (options.requiredEku !== null) checkLeafEku(leaf, options.requiredEku);
  checkIssuerEku(path);
  if (options.requireIssuerOrganization) checkIssuerOrganization(leaf, path[1]!);

  const crls = (options.crls ?? []).map((c) => {
    try {
      return parseCrlDer(derBytes(c));
    } catch (error) {
      throw new CertificateValidationError("crl-malformed", "(unparsable CRL)", "not a readable CRL", {
        cause: error,
      });
    }
  });
  let leafCrlNumber: bigint | undefined;
  for (let i = path.length - 2; i >= 0; i--) {
    const isLeaf = i === 0;
    const crlNumber = await checkRevocation(path[i]!, path[i + 1]!, crls, now, provider, {
      required: isLeaf && (options.requireCrl ?? true),
      floor: isLeaf && options.crlNumberFloor !== undefined ? BigInt(options.crlNumberFloor) : undefined,
    });
    if (isLeaf) leafCrlNumber = crlNumber;
  }

  const subject = leaf.cert.structure.subject;
  const only = (type: string): string | undefined => {
    const values = nameValues(subject, type);
    return values.length === 1 ? values[0] : undefined;
  };
  const owner = only(ATTR.organization);
  const officer = only(ATTR.commonName);
  const serialNumber = only(ATTR.serialNumber);
  return {
    path,
    ...(owner !== undefined ? { owner } : {}),
    ...(officer !== undefined ? { officer } : {}),
    ...(serialNumber !== undefined ? { subjectSerialNumber: serialNumber } : {}),
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
    const issuerName = current.cert.structure.issuer.encoding;
    if (bytesEqual(issuerName, anchor.cert.structure.subject.encoding)) {
      path.push(anchor);
      return path;
    }
    const candidates = intermediates.filter(
      (n) => !path.includes(n) && bytesEqual(n.cert.structure.subject.encoding, issuerName),
    );
    // A self-issued CA certificate (a key rollover, RFC 5280 §6.1) chains on to an older key of the
    // same name; one that nothing else signed is a root, and not the trust anchor.
    if (candidates.length === 0 && isSelfIssued(current)) {
      fail(
        "untrusted-anchor",
        current,
        `chain ends at a root that is not the trust anchor "${anchor.cert.subject}"`,
      );
    }
    if (candidates.length === 0) {
      fail(
        "issuer-name",
        current,
        `issuer "${current.cert.issuer}" is neither a certificate of the chain nor the trust anchor "${anchor.cert.subject}"`,
      );
    }
    const wantedKeyId = current.cert.authorityKeyId;
    const next =
      candidates.find((n) => wantedKeyId !== undefined && n.cert.subjectKeyId === wantedKeyId) ??
      candidates[0]!;
    path.push(next);
    current = next;
  }
}

/** basicConstraints cA and keyUsage keyCertSign on every issuer (RFC 5280 §6.1.4 (k), (n)). */
function checkCanIssue(issuer: Node): void {
  if (!issuer.cert.basicConstraints?.ca) {
    fail("not-ca", issuer, "issues certificates but basicConstraints does not say cA=TRUE");
  }
  const ku = issuer.cert.keyUsage;
  if (ku === undefined) fail("key-usage", issuer, "issues certificates but has no keyUsage extension");
  if ((ku & KEY_USAGE.keyCertSign) === 0) {
    fail("key-usage", issuer, "issues certificates but keyUsage lacks keyCertSign");
  }
}

async function checkSignature(
  node: Node,
  issuer: Node,
  issuerIsAnchor: boolean,
  provider: CryptoProvider | undefined,
): Promise<void> {
  const s = node.cert.structure;
  if (!bytesEqual(s.innerAlgorithm.encoding, s.outerAlgorithm.encoding)) {
    fail("malformed", node, "signatureAlgorithm differs from tbsCertificate.signature (RFC 5280 §4.1.1.2)");
  }
  checkAlgorithms(node, issuer);
  if (await certificateSignedBy(node.cert, issuer.cert, provider)) return;
  if (issuerIsAnchor) {
    fail(
      "untrusted-anchor",
      node,
      `names the trust anchor "${issuer.cert.subject}" as issuer but was not signed by its key`,
    );
  }
  fail("signature", node, `signature does not verify with the key of its issuer "${issuer.cert.subject}"`);
}

/** ECDSA with SHA-2 over P-256/P-384/P-521 only: nothing weaker, nothing this project cannot verify. */
function checkAlgorithms(node: Node, issuer: Node): void {
  if (!node.cert.signatureHash) {
    const parameters = node.cert.structure.outerAlgorithm.parameters ? " (with parameters)" : "";
    fail(
      "algorithm",
      node,
      `signature algorithm ${node.cert.signatureAlgorithmName}${parameters} is not ECDSA with SHA-2`,
    );
  }
  if (!issuer.cert.keyCurve) fail("algorithm", issuer, "key is not ECDSA on P-256, P-384 or P-521");
}

/** notBefore ≤ now ≤ notAfter (RFC 5280 §4.1.2.5, §6.1.3 (a)(2)). */
function checkValidity(node: Node, now: Date): void {
  const { notBefore, notAfter } = node.cert.structure;
  if (now.getTime() < notBefore.getTime()) {
    fail("not-yet-valid", node, `not valid before ${notBefore.toISOString()} (now ${now.toISOString()})`);
  }
  if (now.getTime() > notAfter.getTime()) {
    fail("expired", node, `expired at ${notAfter.toISOString()} (now ${now.toISOString()})`);
  }
}

/**
 * What RFC 5280 requires of every certificate a conforming CA issues, where a validator that let it
 * pass would accept a certificate no conforming CA makes: serial numbers positive and at most 20
 * octets (§4.1.2.2); authority and subject key identifiers non-critical (§4.2.1.1, §4.2.1.2), the
 * former in every certificate not self-signed, the latter in every CA certificate; a CA's
 * basicConstraints critical (§4.2.1.9); keyCertSign only with cA (§4.2.1.3); name constraints only in
 * CA certificates (§4.2.1.10); an empty subject only with a critical subjectAltName (§4.1.2.6).
 */
function checkProfile(node: Node, role: "anchor" | "ca" | "leaf"): void {
  const cert = node.cert;
  const serial = cert.structure.serialNumber;
  if ((serial[0]! & 0x80) !== 0 || serial.every((b) => b === 0)) {
    fail("malformed", node, "serial number is not a positive integer (RFC 5280 §4.1.2.2)");
  }
  if (serial.length > 20)
    fail("malformed", node, "serial number is longer than 20 octets (RFC 5280 §4.1.2.2)");
  const ext = (oid: string) => cert.extensions.find((e) => e.oid === oid);
  const aki = ext(EXT.authorityKeyIdentifier);
  const ski = ext(EXT.subjectKeyIdentifier);
  if (aki?.critical)
    fail("critical-extension", node, "authorityKeyIdentifier must not be critical (RFC 5280 §4.2.1.1)");
  if (ski?.critical)
    fail("critical-extension", node, "subjectKeyIdentifier must not be critical (RFC 5280 §4.2.1.2)");
  if (!aki && role !== "anchor") {
    fail(
      "malformed",
      node,
      "has no authorityKeyIdentifier (RFC 5280 §4.2.1.1: required but in self-signed roots)",
    );
  }
  const isCa = cert.basicConstraints?.ca === true;
  if (role !== "leaf" || isCa) {
    if (!ski) fail("malformed", node, "a CA certificate without subjectKeyIdentifier (RFC 5280 §4.2.1.2)");
    if (isCa && !ext(EXT.basicConstraints)?.critical) {
      fail("malformed", node, "a CA certificate whose basicConstraints is not critical (RFC 5280 §4.2.1.9)");
    }
  }
  // (An issuer without cA fails "not-ca" when the certificate it signed is checked.)
  if (
    role === "leaf" &&
    !isCa &&
    cert.keyUsage !== undefined &&
    (cert.keyUsage & KEY_USAGE.keyCertSign) !== 0
  ) {
    fail("key-usage", node, "keyUsage keyCertSign in a certificate that is not a CA (RFC 5280 §4.2.1.3)");
  }
  if (!isCa && ext(EXT.nameConstraints)) {
    fail("name-constraints", node, "name constraints in a certificate that is not a CA (RFC 5280 §4.2.1.10)");
  }
  if (cert.structure.subject.rdns.length === 0 && !ext(EXT.subjectAltName)?.critical) {
    fail("malformed", node, "an empty subject needs a critical subjectAltName (RFC 5280 §4.1.2.6)");
  }
}

/** Unknown critical extensions make a certificate unusable (RFC 5280 §4.2). */
function checkCriticalExtensions(node: Node): void {
  for (const ext of node.cert.extensions) {
    if (ext.critical && !PROCESSED_CERT_EXTENSIONS.has(ext.oid)) {
      fail("critical-extension", node, `unrecognised critical extension ${ext.oid}`);
    }
  }
}

function checkLeafKeyUsage(leaf: Node, required: number): void {
  const ku = leaf.cert.keyUsage;
  if (ku === undefined) fail("key-usage", leaf, "has no keyUsage extension");
  if ((ku & required) !== required) {
    fail("key-usage", leaf, `keyUsage ${describeKeyUsage(ku)} lacks ${describeKeyUsage(required & ~ku)}`);
  }
}

function checkLeafEku(leaf: Node, required: string): void {
  const ext = leaf.cert.extensions.find((e) => e.oid === EXT.extKeyUsage);
  if (!ext) fail("eku", leaf, `has no extendedKeyUsage extension (needs ${required})`);
  let usages: string[];
  try {
    usages = decodeUsages(ext.value);
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
 * Name constraints (RFC 5280 §6.1.3 (b), (c); §6.1.4 (g)) of every CA of the path, the anchor
 * included, over each certificate below it that is the leaf or not self-issued (src/pki/constraints.ts
 * says which name forms are evaluated).
 */
function checkNameConstraints(path: readonly Node[]): void {
  for (let k = path.length - 1; k >= 1; k--) {
    const constraints = path[k]!.cert.nameConstraints;
    if (!constraints) continue;
    for (let i = k - 1; i >= 0; i--) {
      const node = path[i]!;
      if (i > 0 && isSelfIssued(node)) continue;
      const violation = nameConstraintViolation(constraints, node.cert.structure.subject, node.cert.altNames);
      if (violation) {
        fail("name-constraints", node, `${violation} (name constraints of "${path[k]!.cert.subject}")`);
      }
    }
  }
}

/**
 * CA-level extended key usage: a CA that carries extendedKeyUsage may only issue for those usages, so
 * every usage of the leaf must be listed by every such CA above it (anyExtendedKeyUsage in a CA
 * stands for nothing but itself). A token CA (token-auth, config-signing) cannot make a device
 * certificate, a device CA (device) cannot make a card certificate.
 */
function checkIssuerEku(path: readonly Node[]): void {
  const leaf = path[0]!;
  const usages = leaf.cert.extendedKeyUsage ?? [];
  for (let k = 1; k < path.length; k++) {
    const allowed = path[k]!.cert.extendedKeyUsage;
    if (!allowed) continue;
    const outside = usages.filter((u) => !allowed.includes(u));
    if (outside.length > 0) {
      fail(
        "eku",
        leaf,
        `extendedKeyUsage ${outside.join(", ")} is outside what its issuer "${path[k]!.cert.subject}" may issue (${allowed.join(", ")})`,
      );
    }
  }
}

/** Exactly one O in the leaf and in its issuer, the same value (as DER: type, string type and text). */
function checkIssuerOrganization(leaf: Node, issuer: Node): void {
  const leafO = organizations(leaf);
  const issuerO = organizations(issuer);
  if (leafO.length !== 1 || issuerO.length !== 1) {
    fail(
      "owner-mismatch",
      leaf,
      `leaf and issuer must each name exactly one O (found ${leafO.length} and ${issuerO.length})`,
    );
  }
  if (!bytesEqual(leafO[0]!, issuerO[0]!)) {
    fail("owner-mismatch", leaf, `O differs from the O of its issuer "${issuer.cert.subject}"`);
  }
}

function organizations(node: Node): Uint8Array[] {
  return node.cert.structure.subject.rdns.flatMap((rdn) =>
    rdn.filter((a) => a.type === ATTR.organization).map((a) => a.valueEncoding),
  );
}

/** EKU OIDs of a leaf; remembered per extension value (the same leaf is validated again and again). */
const usagesByValue = new WeakMap<Uint8Array, string[]>();

function decodeUsages(value: Uint8Array): string[] {
  let usages = usagesByValue.get(value);
  if (!usages) {
    usages = decodeExtendedKeyUsage(value);
    usagesByValue.set(value, usages);
  }
  return usages;
}

/**
 * Revocation of `cert` by the CRLs of `issuer` (RFC 5280 §6.3, simplified to complete, direct CRLs):
 * CRL issuer name = issuer subject, signed by the issuer's key (which must carry cRLSign), no
 * unrecognised critical extensions, thisUpdate ≤ now < nextUpdate, a CRL number at or above the floor.
 * Returns the CRL number used, or undefined when the issuer has no CRL and none is required.
 */
async function checkRevocation(
  node: Node,
  issuer: Node,
  crls: readonly ParsedCrl[],
  now: Date,
  provider: CryptoProvider | undefined,
  policy: { required: boolean; floor: bigint | undefined },
): Promise<bigint | undefined> {
  const issuerName = issuer.cert.structure.subject.encoding;
  const own = crls.filter((crl) => bytesEqual(crl.structure.issuer.encoding, issuerName));
  if (own.length === 0) {
    if (policy.required) {
      fail("crl-missing", node, `no CRL from its issuer "${issuer.cert.subject}" was provided`);
    }
    return undefined;
  }
  let newest: { crl: ParsedCrl; number: bigint } | undefined;
  for (const crl of own) {
    const number = await checkCrl(crl, issuer, now, provider);
    if (!newest || number > newest.number) newest = { crl, number };
  }
  const { crl, number } = newest!;
  if (policy.floor !== undefined && number < policy.floor) {
    throw new ReplayError(
      `CRL of "${issuer.cert.subject}" has CRL number ${number}, older than the ${policy.floor} already seen: replayed CRL`,
    );
  }
  // Serial numbers compare as unsigned integers, whatever sign octet either side carries.
  const wanted = magnitude(node.cert.structure.serialNumber);
  const entry = crl.structure.entries.find((e) => bytesEqual(magnitude(e.serialNumber), wanted));
  if (entry) {
    for (const ext of entry.extensions) {
      if (ext.critical && !PROCESSED_CRL_ENTRY_EXTENSIONS.has(ext.oid)) {
        crlFail(
          "critical-extension",
          crl,
          `entry for serial ${node.cert.serialNumber} has unrecognised critical extension ${ext.oid}`,
        );
      }
    }
    let reason: string | undefined;
    try {
      reason = crlEntryReason(entry.extensions);
    } catch {
      reason = undefined; // listed all the same: revoked, reason unreadable
    }
    throw new CertificateRevokedError(
      node.cert.subject,
      node.cert.serialNumber,
      new Date(entry.revocationDate.getTime()),
      reason,
    );
  }
  return number;
}

async function checkCrl(
  crl: ParsedCrl,
  issuer: Node,
  now: Date,
  provider: CryptoProvider | undefined,
): Promise<bigint> {
  const s = crl.structure;
  if (!bytesEqual(s.innerAlgorithm.encoding, s.outerAlgorithm.encoding)) {
    crlFail(
      "crl-malformed",
      crl,
      "signatureAlgorithm differs from tbsCertList.signature (RFC 5280 §5.1.1.2)",
    );
  }
  const ku = issuer.cert.keyUsage;
  if (ku === undefined || (ku & KEY_USAGE.cRLSign) === 0) {
    crlFail(
      "crl-signature",
      crl,
      `issuer "${issuer.cert.subject}" may not sign CRLs (keyUsage lacks cRLSign)`,
    );
  }
  if (!(await crlSignedBy(crl, issuer.cert, provider))) {
    crlFail("crl-signature", crl, `signature does not verify with the key of "${issuer.cert.subject}"`);
  }
  if (s.version !== 1) crlFail("crl-malformed", crl, "not a v2 CRL");
  for (const ext of s.extensions) {
    if (ext.critical && !PROCESSED_CRL_EXTENSIONS.has(ext.oid)) {
      crlFail("critical-extension", crl, `unrecognised critical CRL extension ${ext.oid}`);
    }
  }
  if (now.getTime() < s.thisUpdate.getTime()) {
    crlFail(
      "crl-stale",
      crl,
      `issued in the future (thisUpdate ${s.thisUpdate.toISOString()}, now ${now.toISOString()})`,
    );
  }
  const nextUpdate = s.nextUpdate;
  if (!nextUpdate) crlFail("crl-stale", crl, "has no nextUpdate, so its freshness cannot be judged");
  if (now.getTime() >= nextUpdate.getTime()) {
    crlFail("crl-stale", crl, `out of date since ${nextUpdate.toISOString()} (now ${now.toISOString()})`);
  }
  let number: bigint | undefined;
  try {
    number = crlNumberOfParsed(crl);
  } catch (error) {
    throw new CertificateValidationError("crl-malformed", crl.issuer, "unreadable CRL number", {
      cause: error,
    });
  }
  if (number === undefined) crlFail("crl-malformed", crl, "has no CRL number (RFC 5280 §5.2.3)");
  return number;
}

/**
 * The provider, unless it is Node's own WebCrypto (which the fast path is). keys.js is loaded only
 * here: reading node:crypto's `webcrypto` costs ≈ 5 ms of start-up the default path does not need.
 */
async function otherThanNodes(provider: CryptoProvider): Promise<CryptoProvider | undefined> {
  const { nodeCrypto } = await import("./keys.js");
  return provider === nodeCrypto ? undefined : provider;
}

function parseNode(input: DerInput, what: string): Node {
  let cert: ParsedCertificate;
  try {
    cert = parseCertificate(derBytes(input));
  } catch (error) {
    throw new MalformedError(`${what}: not a readable X.509 certificate (DER)`, { cause: error });
  }
  if (cert.duplicateExtension !== undefined) {
    throw new CertificateValidationError(
      "malformed",
      cert.subject,
      `extension ${cert.duplicateExtension} appears twice`,
    );
  }
  return input instanceof Uint8Array || input instanceof ArrayBuffer ? { cert } : { cert, source: input };
}

/** The DER of an input: the bytes themselves, or an object's `rawData`. Nothing is decoded from text. */
function derBytes(input: DerInput): Uint8Array {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (input && typeof input === "object" && input.rawData instanceof ArrayBuffer)
    return new Uint8Array(input.rawData);
  throw new MalformedError("expected DER bytes");
}

function isSelfIssued(node: Node): boolean {
  return bytesEqual(node.cert.structure.issuer.encoding, node.cert.structure.subject.encoding);
}

/** An INTEGER's content without leading zero octets. */
function magnitude(content: Uint8Array): Uint8Array {
  let i = 0;
  while (i < content.length - 1 && content[i] === 0) i++;
  return content.subarray(i);
}

const KEY_USAGE_NAMES: readonly [number, string][] = Object.entries(KEY_USAGE).map(([name, bit]) => [
  bit,
  name,
]);

function describeKeyUsage(flags: number): string {
  const names = KEY_USAGE_NAMES.filter(([bit]) => (flags & bit) !== 0).map(([, name]) => name);
  return names.length > 0 ? names.join("+") : "(none)";
}

function fail(reason: CertificateValidationReason, node: Node, detail: string): never {
  throw new CertificateValidationError(reason, node.cert.subject, detail);
}

function crlFail(reason: CertificateValidationReason, crl: ParsedCrl, detail: string): never {
  throw new CertificateValidationError(reason, `CRL of ${crl.issuer}`, detail);
}
