/**
 * COSE_Sign (tag 98) and COSE_Sign1 (tag 18) with ECDSA, per RFC 9052 (structures), RFC 9053
 * (ES256 -7, ES384 -35) and RFC 9360 (x5chain, label 33), over the strict CBOR profile of cbor.ts.
 *
 * COSE verification never hands back a payload whose signatures did not all verify: the verify
 * functions return the payload only after every signature checked out against the key the caller's
 * `keyFor` returned for it. Trust in that key (x5chain validation) is the caller's (src/pki).
 */
import { type KeyObject, X509Certificate } from "node:crypto";
import { Tag } from "cbor-x/decode";
import { ECDSA_PROFILES, type EcdsaAlgorithm, verifyEcdsaRaw } from "../crypto/ecdsa.js";
import type { Signer } from "../crypto/signer.js";
import { IntegrityError, MalformedError, UsageError } from "../errors.js";
import { bytesEqual } from "../util/bytes.js";
import {
  cborHeadSize,
  decodeCborStrict,
  encodeCbor,
  expectArray,
  expectBytes,
  expectMap,
  expectUint,
  MAX_UNTRUSTED_INPUT_BYTES,
} from "./cbor.js";

export const COSE_SIGN_TAG = 98;
export const COSE_SIGN1_TAG = 18;

/** Header parameter labels (RFC 9052 §3.1, RFC 9360 §2). */
export const CoseHeader = { alg: 1, crit: 2, contentType: 3, kid: 4, x5chain: 33 } as const;

/** Labels this implementation understands, so they may be listed in `crit`. */
const UNDERSTOOD_LABELS: ReadonlySet<CoseLabel> = new Set<CoseLabel>(Object.values(CoseHeader));

const MAX_SIGNATURES = 16;
const MAX_CHAIN_CERTIFICATES = 8;
const EMPTY = new Uint8Array(0);

export type CoseLabel = number | string;
export type CoseHeaderMap = ReadonlyMap<CoseLabel, unknown>;

/** One signer as the message describes it. Nothing here is trusted until its signature verifies. */
export interface CoseSignerInfo {
  /** Position among the signatures (always 0 for COSE_Sign1). */
  readonly index: number;
  readonly algorithm: EcdsaAlgorithm;
  readonly protectedHeader: CoseHeaderMap;
  readonly unprotectedHeader: CoseHeaderMap;
  /** x5chain (RFC 9360) DER certificates, leaf first; empty without the header. */
  readonly x5chain: readonly Uint8Array[];
  /** True when x5chain sits in the protected header, i.e. is covered by the signature. */
  readonly x5chainProtected: boolean;
  readonly kid: Uint8Array | undefined;
}

/**
 * Returns the public key that must have made a signature, or throws a typed error to refuse the
 * signer (an unknown kid, a chain that does not validate...).
 */
export type CoseKeyResolver = (signer: CoseSignerInfo) => KeyObject | Promise<KeyObject>;

export interface CoseDecodeOptions {
  /** external_aad of the Sig_structure (RFC 9052 §4.3); empty by default. */
  readonly externalAad?: Uint8Array;
  /** Accept the message without its COSE tag (RFC 9052 §2 lets the application decide). */
  readonly allowUntagged?: boolean;
  /** Refuse longer input before parsing (default MAX_UNTRUSTED_INPUT_BYTES). */
  readonly maxBytes?: number;
}

export interface CoseVerifyOptions extends CoseDecodeOptions {
  readonly keyFor: CoseKeyResolver;
}

/** A COSE_Sign whose every signature verified. */
export interface VerifiedCoseSign {
  readonly payload: Uint8Array;
  readonly protectedHeader: CoseHeaderMap;
  readonly unprotectedHeader: CoseHeaderMap;
  readonly signers: readonly CoseSignerInfo[];
}

/** A COSE_Sign1 whose signature verified. */
export interface VerifiedCoseSign1 {
  readonly payload: Uint8Array;
  readonly signer: CoseSignerInfo;
}

interface HeaderLayer {
  readonly protectedBytes: Uint8Array;
  readonly protectedHeader: Map<CoseLabel, unknown>;
  readonly unprotectedHeader: Map<CoseLabel, unknown>;
}

interface SignatureLayer extends HeaderLayer {
  readonly signature: Uint8Array;
}

interface ParsedCoseSign {
  readonly body: HeaderLayer;
  readonly payload: Uint8Array;
  readonly signatures: readonly SignatureLayer[];
}

interface ParsedCoseSign1 extends SignatureLayer {
  readonly payload: Uint8Array;
}

function decodeTaggedArray(
  bytes: Uint8Array,
  expectedTag: number,
  name: string,
  options: CoseDecodeOptions,
): unknown[] {
  const { tag, value } = decodeCborStrict(bytes, {
    what: name,
    maxBytes: options.maxBytes ?? MAX_UNTRUSTED_INPUT_BYTES,
    allowTopLevelTag: true,
  });
  if (tag === undefined) {
    if (!options.allowUntagged) throw new MalformedError(`${name}: CBOR tag ${expectedTag} missing`);
  } else if (tag !== expectedTag) {
    throw new MalformedError(`${name}: wrong CBOR tag ${tag}, expected ${expectedTag}`);
  }
  return expectArray(value, name, 4, 4);
}

function parseHeaderLayer(protectedValue: unknown, unprotectedValue: unknown, where: string): HeaderLayer {
  const protectedBytes = expectBytes(protectedValue, `${where} protected header`);
  let protectedHeader = new Map<CoseLabel, unknown>();
  if (protectedBytes.length > 0) {
    const { value } = decodeCborStrict(protectedBytes, {
      what: `${where} protected header`,
      maxBytes: protectedBytes.length,
    });
    protectedHeader = expectMap(value, `${where} protected header`) as Map<CoseLabel, unknown>;
  }
  const unprotectedHeader = expectMap(unprotectedValue, `${where} unprotected header`) as Map<
    CoseLabel,
    unknown
  >;
  checkHeaders(protectedHeader, unprotectedHeader, where);
  return { protectedBytes, protectedHeader, unprotectedHeader };
}

/** RFC 9052 §3 and §3.1 rules on header buckets, plus value types of the labels we read. */
function checkHeaders(p: Map<CoseLabel, unknown>, u: Map<CoseLabel, unknown>, where: string): void {
  for (const label of u.keys()) {
    if (p.has(label)) {
      throw new MalformedError(
        `${where}: header label ${String(label)} is in both the protected and unprotected header`,
      );
    }
  }
  if (u.has(CoseHeader.crit)) throw new MalformedError(`${where}: crit must be in the protected header`);
  const crit = p.get(CoseHeader.crit);
  if (crit !== undefined) {
    const labels = expectArray(crit, `${where} crit`, 1, 32);
    for (const label of labels) {
      if (typeof label !== "number" && typeof label !== "string")
        throw new MalformedError(`${where}: crit lists a non-label`);
      if (!p.has(label))
        throw new MalformedError(`${where}: crit lists ${String(label)}, absent from the protected header`);
      if (!UNDERSTOOD_LABELS.has(label))
        throw new MalformedError(`${where}: unknown critical header ${String(label)}`);
    }
  }
  for (const header of [p, u]) {
    const alg = header.get(CoseHeader.alg);
    if (alg !== undefined && typeof alg !== "number" && typeof alg !== "string") {
      throw new MalformedError(`${where}: alg must be an integer or text`);
    }
    const contentType = header.get(CoseHeader.contentType);
    if (contentType !== undefined && typeof contentType !== "string") {
      expectUint(contentType, `${where} content type`, 0, 0xffff);
    }
    if (header.has(CoseHeader.kid)) expectBytes(header.get(CoseHeader.kid), `${where} kid`);
    if (header.has(CoseHeader.x5chain)) readX5chain(header.get(CoseHeader.x5chain), where);
  }
}

/** x5chain: one certificate as a bstr, several as an array of bstr (RFC 9360 §2). */
function readX5chain(value: unknown, where: string): Uint8Array[] {
  if (value instanceof Uint8Array) return [expectBytes(value, `${where} x5chain`)];
  return expectArray(value, `${where} x5chain`, 1, MAX_CHAIN_CERTIFICATES).map((c, i) =>
    expectBytes(c, `${where} x5chain[${i}]`),
  );
}

function algorithmFromLabel(alg: unknown, where: string): EcdsaAlgorithm {
  if (alg === undefined) throw new MalformedError(`${where}: no alg header`);
  for (const profile of Object.values(ECDSA_PROFILES)) {
    if (alg === profile.coseAlgorithm) return profile.algorithm;
  }
  throw new IntegrityError(
    `${where}: unsupported algorithm ${String(alg)} (this profile accepts ES256 -7 and ES384 -35)`,
  );
}

function signerInfo(layer: SignatureLayer, index: number, where: string): CoseSignerInfo {
  const algorithm = algorithmFromLabel(
    layer.protectedHeader.get(CoseHeader.alg) ?? layer.unprotectedHeader.get(CoseHeader.alg),
    where,
  );
  const expectedLength = 2 * ECDSA_PROFILES[algorithm].size;
  if (layer.signature.length !== expectedLength) {
    throw new MalformedError(
      `${where}: ${algorithm} signature must be ${expectedLength} bytes, got ${layer.signature.length}`,
    );
  }
  const x5chainProtected = layer.protectedHeader.has(CoseHeader.x5chain);
  const x5chainValue = x5chainProtected
    ? layer.protectedHeader.get(CoseHeader.x5chain)
    : layer.unprotectedHeader.get(CoseHeader.x5chain);
  const kid = layer.protectedHeader.get(CoseHeader.kid) ?? layer.unprotectedHeader.get(CoseHeader.kid);
  return {
    index,
    algorithm,
    protectedHeader: layer.protectedHeader,
    unprotectedHeader: layer.unprotectedHeader,
    x5chain: x5chainValue === undefined ? [] : readX5chain(x5chainValue, where),
    x5chainProtected,
    kid: kid === undefined ? undefined : expectBytes(kid, `${where} kid`),
  };
}

function parseCoseSign(bytes: Uint8Array, options: CoseDecodeOptions): ParsedCoseSign {
  const name = "COSE_Sign";
  const [protectedValue, unprotectedValue, payloadValue, signaturesValue] = decodeTaggedArray(
    bytes,
    COSE_SIGN_TAG,
    name,
    options,
  );
  const body = parseHeaderLayer(protectedValue, unprotectedValue, name);
  if (payloadValue === null) throw new MalformedError(`${name}: detached payloads are not supported`);
  const payload = expectBytes(payloadValue, `${name} payload`);
  const signatures = expectArray(signaturesValue, `${name} signatures`, 1, MAX_SIGNATURES).map((s, i) => {
    const where = `${name} signature ${i}`;
    const [sp, su, sig] = expectArray(s, where, 3, 3);
    return { ...parseHeaderLayer(sp, su, where), signature: expectBytes(sig, `${where} value`) };
  });
  return { body, payload, signatures };
}

function parseCoseSign1(bytes: Uint8Array, options: CoseDecodeOptions): ParsedCoseSign1 {
  const name = "COSE_Sign1";
  const [protectedValue, unprotectedValue, payloadValue, signatureValue] = decodeTaggedArray(
    bytes,
    COSE_SIGN1_TAG,
    name,
    options,
  );
  const layer = parseHeaderLayer(protectedValue, unprotectedValue, name);
  if (payloadValue === null) throw new MalformedError(`${name}: detached payloads are not supported`);
  return {
    ...layer,
    payload: expectBytes(payloadValue, `${name} payload`),
    signature: expectBytes(signatureValue, `${name} signature`),
  };
}

/**
 * The protected bucket as it enters a Sig_structure: the bytes as transmitted, except that a
 * bucket without parameters is the zero-length bstr even when sent as an encoded empty map (RFC 9052
 * §4.4 "if there are no protected attributes, a zero-length byte string is used"; the cose-wg
 * example sign-pass-01 depends on it).
 */
function protectedForSigning(layer: HeaderLayer): Uint8Array {
  return layer.protectedHeader.size === 0 ? EMPTY : layer.protectedBytes;
}

/** Sig_structure (RFC 9052 §4.4) for one signer of a COSE_Sign. */
function signStructure(
  body: Uint8Array,
  signer: Uint8Array,
  aad: Uint8Array,
  payload: Uint8Array,
): Uint8Array {
  return encodeCbor(["Signature", body, signer, aad, payload]);
}

/** Sig_structure (RFC 9052 §4.4) for a COSE_Sign1. */
function sign1Structure(body: Uint8Array, aad: Uint8Array, payload: Uint8Array): Uint8Array {
  return encodeCbor(["Signature1", body, aad, payload]);
}

/** The ToBeSigned bytes of each signer of a COSE_Sign, rebuilt from the message (for audit and tests). */
export function coseSignToBeSigned(bytes: Uint8Array, options: CoseDecodeOptions = {}): Uint8Array[] {
  const parsed = parseCoseSign(bytes, options);
  const aad = options.externalAad ?? EMPTY;
  return parsed.signatures.map((s) =>
    signStructure(protectedForSigning(parsed.body), protectedForSigning(s), aad, parsed.payload),
  );
}

/** The ToBeSigned bytes of a COSE_Sign1, rebuilt from the message. */
export function coseSign1ToBeSigned(bytes: Uint8Array, options: CoseDecodeOptions = {}): Uint8Array {
  const parsed = parseCoseSign1(bytes, options);
  return sign1Structure(protectedForSigning(parsed), options.externalAad ?? EMPTY, parsed.payload);
}

function verifyWithContext(
  key: KeyObject,
  algorithm: EcdsaAlgorithm,
  toBeSigned: Uint8Array,
  signature: Uint8Array,
  where: string,
): void {
  try {
    verifyEcdsaRaw(key, algorithm, toBeSigned, signature);
  } catch (e) {
    if (e instanceof MalformedError) throw new MalformedError(`${where}: ${e.message}`, { cause: e });
    if (e instanceof IntegrityError) throw new IntegrityError(`${where}: ${e.message}`, { cause: e });
    throw e;
  }
}

/**
 * Verifies every signature of a COSE_Sign and only then returns the payload. Throws MalformedError
 * for bytes that are not a well-formed COSE_Sign of this profile, IntegrityError for an unsupported
 * algorithm or a signature that does not verify, and whatever `keyFor` throws to refuse a signer.
 */
export async function verifyCoseSign(
  bytes: Uint8Array,
  options: CoseVerifyOptions,
): Promise<VerifiedCoseSign> {
  const parsed = parseCoseSign(bytes, options);
  const aad = options.externalAad ?? EMPTY;
  const signers = parsed.signatures.map((s, i) => signerInfo(s, i, `COSE_Sign signature ${i}`));
  const bodyProtected = protectedForSigning(parsed.body);
  for (const signer of signers) {
    const layer = parsed.signatures[signer.index]!;
    const key = await options.keyFor(signer);
    const toBeSigned = signStructure(bodyProtected, protectedForSigning(layer), aad, parsed.payload);
    verifyWithContext(
      key,
      signer.algorithm,
      toBeSigned,
      layer.signature,
      `COSE_Sign signature ${signer.index}`,
    );
  }
  return {
    payload: parsed.payload,
    protectedHeader: parsed.body.protectedHeader,
    unprotectedHeader: parsed.body.unprotectedHeader,
    signers,
  };
}

/** As verifyCoseSign, for a COSE_Sign1. */
export async function verifyCoseSign1(
  bytes: Uint8Array,
  options: CoseVerifyOptions,
): Promise<VerifiedCoseSign1> {
  const parsed = parseCoseSign1(bytes, options);
  const signer = signerInfo(parsed, 0, "COSE_Sign1");
  const key = await options.keyFor(signer);
  const toBeSigned = sign1Structure(
    protectedForSigning(parsed),
    options.externalAad ?? EMPTY,
    parsed.payload,
  );
  verifyWithContext(key, signer.algorithm, toBeSigned, parsed.signature, "COSE_Sign1");
  return { payload: parsed.payload, signer };
}

/** The public key of the leaf (first) certificate of an x5chain. */
export function leafPublicKey(chain: readonly Uint8Array[]): KeyObject {
  const leaf = chain[0];
  if (leaf === undefined) throw new MalformedError("x5chain: no certificate");
  // X509Certificate would also take PEM; the header carries DER only.
  if (leaf[0] !== 0x30) throw new MalformedError("x5chain: leaf certificate is not DER");
  try {
    return new X509Certificate(Buffer.from(leaf)).publicKey;
  } catch (e) {
    throw new MalformedError("x5chain: leaf certificate cannot be parsed", { cause: e });
  }
}

/**
 * The chain without a trailing self-signed certificate. Every relying party pins the root (SPEC.md
 * §4), and RFC 9360 §2 lets x5chain leave out certificates the relying party already has: ~500
 * bytes saved per signer, which is what lets two officers' chains fit one PIV object.
 */
export function withoutSelfSignedRoot(chain: readonly Uint8Array[]): readonly Uint8Array[] {
  const last = chain[chain.length - 1];
  if (chain.length < 2 || last === undefined) return chain;
  try {
    const cert = new X509Certificate(Buffer.from(last));
    const selfSigned = cert.subject === cert.issuer && cert.checkIssued(cert) && cert.verify(cert.publicKey);
    return selfSigned ? chain.slice(0, -1) : chain;
  } catch {
    return chain;
  }
}

// Signing ----------------------------------------------------------------------------------------

export interface CoseSignOptions {
  /** Content type (label 3) for the body's protected header. */
  readonly contentType?: string | number;
  readonly externalAad?: Uint8Array;
}

export interface CoseSign1Options extends CoseSignOptions {
  /** The certificates to carry in x5chain, leaf first (default: the signer's chain; empty: none). */
  readonly x5chain?: readonly Uint8Array[];
}

function x5chainValue(chain: readonly Uint8Array[]): Uint8Array | Uint8Array[] {
  return chain.length === 1 ? chain[0]! : [...chain];
}

/**
 * The signer's protected header: alg, then x5chain. x5chain is protected so the signature binds the
 * certificate: nobody can swap in another certificate for the same key (e.g. with other names or
 * extensions) without breaking the signature, and our profiles then need no unprotected header at all.
 */
function signerProtectedHeader(
  signer: Signer,
  chain: readonly Uint8Array[],
  contentType?: string | number,
): Uint8Array {
  const header = new Map<number, unknown>([[CoseHeader.alg, ECDSA_PROFILES[signer.algorithm].coseAlgorithm]]);
  if (contentType !== undefined) header.set(CoseHeader.contentType, contentType);
  if (chain.length > 0) header.set(CoseHeader.x5chain, x5chainValue(chain));
  return encodeCbor(header);
}

/** Has `signer` sign, and checks the signature against its own leaf certificate before use. */
async function signChecked(signer: Signer, toBeSigned: Uint8Array, where: string): Promise<Uint8Array> {
  const signature = await signer.sign(toBeSigned);
  const expected = 2 * ECDSA_PROFILES[signer.algorithm].size;
  if (!(signature instanceof Uint8Array) || signature.length !== expected) {
    throw new IntegrityError(
      `${where}: the signer returned ${signature?.length ?? 0} bytes, expected ${expected} (raw r‖s)`,
    );
  }
  // A card answering with a wrong key or a corrupted signature is caught here, not by every HSM.
  if (signer.certificateChain.length > 0) {
    try {
      verifyEcdsaRaw(leafPublicKey(signer.certificateChain), signer.algorithm, toBeSigned, signature);
    } catch (e) {
      throw new IntegrityError(`${where}: the signer's own certificate does not verify its signature`, {
        cause: e,
      });
    }
  }
  return new Uint8Array(signature);
}

/** The protected buckets signCoseSign writes: the body's, then one per signer. */
function coseSignHeaders(
  signers: readonly Signer[],
  options: CoseSignOptions,
): { body: Uint8Array; signers: Uint8Array[] } {
  if (signers.length === 0 || signers.length > MAX_SIGNATURES) {
    throw new UsageError(`COSE_Sign needs 1..${MAX_SIGNATURES} signers, got ${signers.length}`);
  }
  return {
    body:
      options.contentType === undefined
        ? EMPTY
        : encodeCbor(new Map([[CoseHeader.contentType, options.contentType]])),
    signers: signers.map((signer) => signerProtectedHeader(signer, signer.certificateChain)),
  };
}

/**
 * The exact length of the COSE_Sign that signCoseSign builds for a payload of `payloadLength`
 * bytes with these signers and options, without signing: raw r‖s signatures have a fixed length.
 * Lets a caller pad its payload so that the signed message has a given size.
 */
export function coseSignLength(
  payloadLength: number,
  signers: readonly Signer[],
  options: CoseSignOptions = {},
): number {
  const headers = coseSignHeaders(signers, options);
  const signatures = signers.map((signer, i) => [
    headers.signers[i]!,
    new Map(),
    new Uint8Array(2 * ECDSA_PROFILES[signer.algorithm].size),
  ]);
  const withEmptyPayload = encodeCbor(
    new Tag([headers.body, new Map(), EMPTY, signatures], COSE_SIGN_TAG),
  ).length;
  return withEmptyPayload - 1 + cborHeadSize(payloadLength) + payloadLength;
}

/** Builds a COSE_Sign (tag 98) with one signature per signer, each carrying its x5chain. */
export async function signCoseSign(
  payload: Uint8Array,
  signers: readonly Signer[],
  options: CoseSignOptions = {},
): Promise<Uint8Array> {
  const headers = coseSignHeaders(signers, options);
  const bodyProtected = headers.body;
  const aad = options.externalAad ?? EMPTY;
  const signatures: unknown[] = [];
  for (const [i, signer] of signers.entries()) {
    const signerProtected = headers.signers[i]!;
    const signature = await signChecked(
      signer,
      signStructure(bodyProtected, signerProtected, aad, payload),
      `COSE_Sign signer ${i}`,
    );
    signatures.push([signerProtected, new Map(), signature]);
  }
  return encodeCbor(new Tag([bodyProtected, new Map(), payload, signatures], COSE_SIGN_TAG));
}

/** One more signature on an existing COSE_Sign, laid out before anyone signs. */
export interface PreparedCoseCosignature {
  /** The length of the COSE_Sign with the added signature. */
  readonly length: number;
  /** Has the signer sign; gives exactly `length` bytes: the message with its signature appended. */
  sign(): Promise<Uint8Array>;
}

/**
 * Appends a signer to a COSE_Sign (dual control): the payload and every existing signature stay as
 * they are, byte for byte; the new signature covers the same body header and payload. The length is
 * known before the signer is asked (raw r‖s signatures have a fixed length). MalformedError for a
 * message that is not a COSE_Sign in the one encoding this profile writes (it would not survive the
 * re-encoding unchanged); UsageError when it already holds the most signatures a message may carry.
 * The caller verifies the existing signatures first (verifyCoseSign): this function does not.
 */
export function prepareCoseCosignature(
  bytes: Uint8Array,
  signer: Signer,
  options: CoseDecodeOptions = {},
): PreparedCoseCosignature {
  const parsed = parseCoseSign(bytes, options);
  if (parsed.signatures.length >= MAX_SIGNATURES) {
    throw new UsageError(`COSE_Sign holds ${parsed.signatures.length} signatures, the most it may carry`);
  }
  const existing = parsed.signatures.map((s) => [s.protectedBytes, s.unprotectedHeader, s.signature]);
  const encode = (added: unknown[]) =>
    encodeCbor(
      new Tag(
        [parsed.body.protectedBytes, parsed.body.unprotectedHeader, parsed.payload, [...existing, ...added]],
        COSE_SIGN_TAG,
      ),
    );
  if (!bytesEqual(encode([]), bytes)) {
    throw new MalformedError("COSE_Sign: not in the canonical encoding; it cannot be co-signed unchanged");
  }
  const signerProtected = signerProtectedHeader(signer, signer.certificateChain);
  const size = 2 * ECDSA_PROFILES[signer.algorithm].size;
  const length = encode([[signerProtected, new Map(), new Uint8Array(size)]]).length;
  return {
    length,
    sign: async () => {
      const toBeSigned = signStructure(
        protectedForSigning(parsed.body),
        signerProtected,
        options.externalAad ?? EMPTY,
        parsed.payload,
      );
      const signature = await signChecked(signer, toBeSigned, `COSE_Sign signer ${parsed.signatures.length}`);
      const signed = encode([[signerProtected, new Map(), signature]]);
      if (signed.length !== length) {
        throw new Error(`internal: the co-signed message is ${signed.length} bytes, laid out ${length}`);
      }
      return signed;
    },
  };
}

/** Builds a COSE_Sign1 (tag 18); alg, content type and x5chain are all in the protected header. */
export async function signCoseSign1(
  payload: Uint8Array,
  signer: Signer,
  options: CoseSign1Options = {},
): Promise<Uint8Array> {
  const bodyProtected = signerProtectedHeader(
    signer,
    options.x5chain ?? signer.certificateChain,
    options.contentType,
  );
  const signature = await signChecked(
    signer,
    sign1Structure(bodyProtected, options.externalAad ?? EMPTY, payload),
    "COSE_Sign1",
  );
  return encodeCbor(new Tag([bodyProtected, new Map(), payload, signature], COSE_SIGN1_TAG));
}
