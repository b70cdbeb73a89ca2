/**
 * COSE_Sign (tag 98) and COSE_Sign1 (tag 18) with ECDSA, per RFC 9052 (structures), RFC 9053
 * (ES256 -7, ES384 -35) and RFC 9360 (x5chain, label 33), plus the strict CBOR profile every
 * decoder of untrusted bytes in src/config uses.
 *
 * Strict CBOR profile (checked before cbor-x sees a byte, so cbor-x only ever builds plain values):
 * definite lengths only; preferred (shortest) serialization of every head (RFC 8949 §4.2.1);
 * integers within ±(2^53-1); no floats, no simple values but false/true/null; no tags except one
 * around the top-level item (returned to the caller, who says which it expects); text is valid
 * UTF-8; map keys are integers or text and never repeat; bounded nesting; nothing after the item.
 * Every length is checked against the bytes that remain before anything is allocated, and the
 * whole input against a size limit, so a header claiming a 4 GB string or a 2^32-element array
 * fails at once. Failures are MalformedError; nothing else escapes a decoder.
 *
 * COSE verification never hands back a payload whose signatures did not all verify: the verify
 * functions return the payload only after every signature checked out against the key the caller's
 * `keyFor` returned for it. Trust in that key (x5chain validation) is the caller's (src/pki).
 */
import { type KeyObject, X509Certificate } from "node:crypto";
import { Decoder, Encoder, Tag } from "cbor-x";
import { ECDSA_PROFILES, type EcdsaAlgorithm, verifyEcdsaRaw } from "../crypto/ecdsa.js";
import type { Signer } from "../crypto/signer.js";
import { IntegrityError, MalformedError, UsageError } from "../errors.js";

// ---------------------------------------------------------------------------------------------
// Strict CBOR

/**
 * Upper bound for any untrusted CBOR input: everything a card can hold (17 PIV objects of 3,063
 * bytes is more than the ~50 KB a YubiKey offers). Decoders refuse larger input before parsing.
 */
export const MAX_UNTRUSTED_INPUT_BYTES = 3063 * 17;

const DEFAULT_MAX_DEPTH = 16;
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

// No records, no structured clone, Maps (not objects) for maps so integer keys stay integers.
const cborDecoder = new Decoder({
  useRecords: false,
  mapsAsObjects: false,
  structuredClone: false,
  pack: false,
  bundleStrings: false,
  copyBuffers: true,
  // Safe: the scanner has already refused any integer beyond 2^53-1.
  int64AsNumber: true,
} as ConstructorParameters<typeof Decoder>[0]);

const cborEncoder = new Encoder({
  useRecords: false,
  mapsAsObjects: false,
  structuredClone: false,
  pack: false,
  tagUint8Array: false,
  variableMapSize: true,
});

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export interface StrictCborOptions {
  /** What is decoded, for messages: `manifest payload`, `shard 0x5FFF20`... */
  readonly what: string;
  /** Refuse input longer than this, before parsing. */
  readonly maxBytes: number;
  /** Accept one tag around the top-level item (returned in `tag`). No other tag is ever accepted. */
  readonly allowTopLevelTag?: boolean;
  readonly maxDepth?: number;
}

export interface StrictCborItem {
  readonly tag: number | undefined;
  readonly value: unknown;
}

class CborScanner {
  pos = 0;
  private readonly latin1: Buffer;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly what: string,
    private readonly maxDepth: number,
  ) {
    this.latin1 = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  fail(message: string): never {
    throw new MalformedError(`${this.what}: ${message} (at byte ${this.pos})`);
  }

  /** Reads one head; returns [major type, argument]. */
  head(): [number, number] {
    const initial = this.bytes[this.pos];
    if (initial === undefined) this.fail("truncated CBOR");
    const major = initial >> 5;
    const info = initial & 0x1f;
    if (info < 24) {
      this.pos += 1;
      return [major, info];
    }
    if (info === 31) this.fail("indefinite-length items are not accepted");
    if (info > 27) this.fail("reserved CBOR additional information");
    if (major === 7)
      this.fail("floating-point and simple values other than false/true/null are not accepted");
    const size = 1 << (info - 24);
    if (this.pos + 1 + size > this.bytes.length) this.fail("truncated CBOR");
    const b = this.bytes;
    const p = this.pos + 1;
    let value: number;
    if (size === 1) value = b[p]!;
    else if (size === 2) value = (b[p]! << 8) | b[p + 1]!;
    else if (size === 4)
      value = (b[p]! * 0x1000000 + ((b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!)) >>> 0;
    else {
      const high = (b[p]! * 0x1000000 + ((b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!)) >>> 0;
      const low = (b[p + 4]! * 0x1000000 + ((b[p + 5]! << 16) | (b[p + 6]! << 8) | b[p + 7]!)) >>> 0;
      if (high > 0x1fffff) this.fail("integer or length beyond 2^53");
      value = high * 0x100000000 + low;
    }
    const minimum = size === 1 ? 24 : size === 2 ? 0x100 : size === 4 ? 0x10000 : 0x100000000;
    if (value < minimum) this.fail("CBOR head not in its shortest form");
    this.pos = p + size;
    return [major, value];
  }

  item(depth: number): void {
    if (depth > this.maxDepth) this.fail("CBOR nested too deeply");
    const [major, arg] = this.head();
    const remaining = this.bytes.length - this.pos;
    switch (major) {
      case 0:
        return;
      case 1:
        if (arg >= MAX_SAFE) this.fail("negative integer beyond -(2^53-1)");
        return;
      case 2:
      case 3:
        if (arg > remaining) this.fail(`string of ${arg} bytes runs past the end`);
        if (major === 3) {
          try {
            utf8.decode(this.bytes.subarray(this.pos, this.pos + arg));
          } catch {
            this.fail("text is not valid UTF-8");
          }
        }
        this.pos += arg;
        return;
      case 4:
        // Each element takes at least one byte.
        if (arg > remaining) this.fail(`array of ${arg} items runs past the end`);
        for (let i = 0; i < arg; i++) this.item(depth + 1);
        return;
      case 5: {
        if (arg * 2 > remaining) this.fail(`map of ${arg} entries runs past the end`);
        const keys = new Set<string>();
        for (let i = 0; i < arg; i++) {
          const keyStart = this.pos;
          const keyMajor = this.bytes[keyStart]! >> 5;
          if (keyMajor !== 0 && keyMajor !== 1 && keyMajor !== 3)
            this.fail("map keys must be integers or text");
          this.item(depth + 1);
          // Heads are shortest-form, so equal keys have equal bytes.
          const key = this.latin1.toString("latin1", keyStart, this.pos);
          if (keys.has(key)) this.fail("duplicate map key");
          keys.add(key);
          this.item(depth + 1);
        }
        return;
      }
      case 6:
        this.fail("CBOR tags are not accepted here");
        break;
      default:
        // major 7 with a direct value: 20 false, 21 true, 22 null.
        if (arg < 20 || arg > 22) this.fail("simple values other than false/true/null are not accepted");
    }
  }
}

/** Decodes one CBOR item under the strict profile above. Throws only MalformedError. */
export function decodeCborStrict(bytes: Uint8Array, options: StrictCborOptions): StrictCborItem {
  const { what } = options;
  if (!(bytes instanceof Uint8Array)) throw new MalformedError(`${what}: expected bytes`);
  if (bytes.length === 0) throw new MalformedError(`${what}: empty input`);
  if (bytes.length > options.maxBytes) {
    throw new MalformedError(`${what}: ${bytes.length} bytes exceeds the ${options.maxBytes}-byte limit`);
  }
  const scanner = new CborScanner(bytes, what, options.maxDepth ?? DEFAULT_MAX_DEPTH);
  let tag: number | undefined;
  if (options.allowTopLevelTag && bytes[0]! >> 5 === 6) {
    tag = scanner.head()[1];
    if (bytes[scanner.pos] !== undefined && bytes[scanner.pos]! >> 5 === 6) scanner.fail("nested tags");
  }
  const contentStart = scanner.pos;
  scanner.item(0);
  if (scanner.pos !== bytes.length) scanner.fail("bytes after the CBOR item");
  try {
    return { tag, value: cborDecoder.decode(bytes.subarray(contentStart)) };
  } catch (e) {
    throw new MalformedError(`${what}: CBOR decoding failed`, { cause: e });
  }
}

/**
 * Encodes plain values (numbers, bigint, strings, Uint8Array, arrays, Maps, booleans, null, Tag) in
 * preferred serialization. Integers of 2^32 and above must be passed through `cborUint`, since
 * cbor-x would otherwise write them as floats.
 */
export function encodeCbor(value: unknown): Uint8Array {
  return new Uint8Array(cborEncoder.encode(value));
}

/** An unsigned integer as cbor-x must receive it to encode it as an integer. */
export function cborUint(n: number): number | bigint {
  return n > 0xffffffff ? BigInt(n) : n;
}

/** Size of a CBOR head carrying `n`. */
export function cborHeadSize(n: number): number {
  return n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n <= 0xffffffff ? 5 : 9;
}

/**
 * The content length of the byte (or text) string whose whole encoding, head included, is exactly
 * `encodedSize` bytes; undefined when there is none. The head grows by a byte exactly when the
 * content does, so some sizes have no string: 25 (1 + 23 is 24 bytes, 2 + 24 is 26), 258, 65,539…
 */
export function cborStringLengthFor(encodedSize: number): number | undefined {
  for (const head of [1, 2, 3, 5, 9]) {
    const length = encodedSize - head;
    if (length >= 0 && cborHeadSize(length) === head) return length;
  }
  return undefined;
}

// Padding ----------------------------------------------------------------------------------------

/**
 * The padding item that fills a manifest payload or a shard up to a fixed size: a CBOR item of
 * exactly `size` bytes (size ≥ 1) whose content bytes are all zero. A byte string of zeros; for the
 * sizes no byte string has (cborStringLengthFor), a one-element array holding the byte string one
 * byte shorter. So each size has exactly one padding, and decoders check it by re-encoding.
 */
export function encodeZeroPadding(size: number): Uint8Array {
  if (!Number.isSafeInteger(size) || size < 1 || size > 0xffffffff) {
    throw new UsageError(`padding: ${size} is not a padding size`);
  }
  const plain = cborStringLengthFor(size);
  const bytes =
    plain === undefined
      ? encodeCbor([new Uint8Array(cborStringLengthFor(size - 1)!)])
      : encodeCbor(new Uint8Array(plain));
  if (bytes.length !== size) throw new Error(`internal: padding of ${size} bytes encoded in ${bytes.length}`);
  return bytes;
}

/**
 * Pads `encoded` — an encoding whose last item is the empty padding (an empty byte string, `40`)
 * and whose enclosing arrays and maps count items, not bytes — to exactly `size` bytes, by
 * replacing that last item with `encodeZeroPadding`. UsageError if `encoded` is already too long.
 */
export function padEncoding(encoded: Uint8Array, size: number, what: string): Uint8Array {
  if (encoded[encoded.length - 1] !== 0x40)
    throw new Error(`internal: ${what} does not end in empty padding`);
  if (!Number.isSafeInteger(size) || size < encoded.length) {
    throw new UsageError(`${what}: needs at least ${encoded.length} bytes, cannot be padded to ${size}`);
  }
  const padded = new Uint8Array(size);
  padded.set(encoded.subarray(0, encoded.length - 1));
  padded.set(encodeZeroPadding(size - encoded.length + 1), encoded.length - 1);
  return padded;
}

/**
 * Checks a decoded padding item: a byte string of zeros, or a one-element array holding one.
 * Returns its number of zero bytes. (Which of the two forms, and how long, is the encoder's to
 * decide: decoders re-encode and compare.)
 */
export function expectZeroPadding(value: unknown, what: string): number {
  const bytes = Array.isArray(value)
    ? expectBytes(expectArray(value, what, 1, 1)[0], what)
    : expectBytes(value, what);
  for (const b of bytes) if (b !== 0) throw new MalformedError(`${what}: padding bytes must be zero`);
  return bytes.length;
}

// Shape checks for decoded values; each names what it checks in its error.

export function expectMap(value: unknown, what: string): Map<unknown, unknown> {
  if (!(value instanceof Map)) throw new MalformedError(`${what}: expected a map`);
  return value;
}

/** A map whose keys are all in `allowed` (small integers) and include every `required` key. */
export function expectIntKeyedMap(
  value: unknown,
  what: string,
  allowed: readonly number[],
  required: readonly number[] = allowed,
): Map<number, unknown> {
  const map = expectMap(value, what);
  for (const key of map.keys()) {
    if (typeof key !== "number" || !allowed.includes(key))
      throw new MalformedError(`${what}: unexpected key ${String(key)}`);
  }
  for (const key of required) if (!map.has(key)) throw new MalformedError(`${what}: missing key ${key}`);
  return map as Map<number, unknown>;
}

export function expectArray(
  value: unknown,
  what: string,
  min = 0,
  max = Number.POSITIVE_INFINITY,
): unknown[] {
  if (!Array.isArray(value)) throw new MalformedError(`${what}: expected an array`);
  if (value.length < min || value.length > max) {
    throw new MalformedError(`${what}: expected ${min}..${max} items, got ${value.length}`);
  }
  return value;
}

export function expectBytes(value: unknown, what: string, length?: number): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new MalformedError(`${what}: expected a byte string`);
  if (length !== undefined && value.length !== length) {
    throw new MalformedError(`${what}: expected ${length} bytes, got ${value.length}`);
  }
  return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
}

export function expectText(value: unknown, what: string, minBytes: number, maxBytes: number): string {
  if (typeof value !== "string") throw new MalformedError(`${what}: expected text`);
  const length = Buffer.byteLength(value, "utf8");
  if (length < minBytes || length > maxBytes) {
    throw new MalformedError(`${what}: expected ${minBytes}..${maxBytes} bytes of text, got ${length}`);
  }
  return value;
}

export function expectUint(value: unknown, what: string, min = 0, max = MAX_SAFE): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value))
    throw new MalformedError(`${what}: expected an integer`);
  if (value < min || value > max) throw new MalformedError(`${what}: ${value} is outside ${min}..${max}`);
  return value;
}

/** Runs `decode` and turns any non-typed failure into a MalformedError about `what`. */
export function malformedUnlessTyped<T>(what: string, decode: () => T): T {
  try {
    return decode();
  } catch (e) {
    if (e instanceof IntegrityError) throw e;
    throw new MalformedError(`${what}: ${e instanceof Error ? e.message : "invalid"}`, { cause: e });
  }
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
}

// ---------------------------------------------------------------------------------------------
// COSE

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
