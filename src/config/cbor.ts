/**
 * The strict deterministic CBOR profile every decoder of untrusted bytes in src/config uses (shards,
 * the manifest, receipts and the COSE structures around them), plus the shape checks and the fixed-size
 * padding built on it.
 *
 * Strict CBOR profile (checked before cbor-x sees a byte, so cbor-x only ever builds plain values):
 * definite lengths only; preferred (shortest) serialization of every head (RFC 8949 §4.2.1);
 * integers within ±(2^53-1); no floats, no simple values but false/true/null; no tags except one
 * around the top-level item (returned to the caller, who says which it expects); text is valid
 * UTF-8; map keys are integers or text and never repeat; bounded nesting; nothing after the item.
 * Every length is checked against the bytes that remain before anything is allocated, and the
 * whole input against a size limit, so a header claiming a 4 GB string or a 2^32-element array
 * fails at once. Failures are MalformedError; nothing else escapes a decoder.
 */
// The package's `decode`/`encode` entries (its plain JavaScript codec), not its main entry: that one
// also loads the optional native string extractor (cbor-extract), C++ that parses the untrusted
// buffer's string heads itself, for no gain on objects of at most 3 KB. Memory is not the reason
// (≈ 0.2 MiB in the agent). test/repo/agent-imports.test.ts keeps the main entry off the agent's path.
import { Decoder } from "cbor-x/decode";
import { Encoder } from "cbor-x/encode";
import { IntegrityError, MalformedError, UsageError } from "../errors.js";

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

  /** The major type of the last head read. */
  major = 0;

  /** Reads one head; returns its argument (its major type in `major`). */
  head(): number {
    const initial = this.bytes[this.pos];
    if (initial === undefined) this.fail("truncated CBOR");
    const major = initial >> 5;
    const info = initial & 0x1f;
    this.major = major;
    if (info < 24) {
      this.pos += 1;
      return info;
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
    return value;
  }

  item(depth: number): void {
    if (depth > this.maxDepth) this.fail("CBOR nested too deeply");
    // Two reads, not a destructured pair: cold (interpreted) code pays for the array and iterator.
    const arg = this.head();
    const major = this.major;
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
    tag = scanner.head();
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
 * Checks bytes against the strict profile above without building any value: the validating skip a
 * bounded decoder runs over a whole object before it decodes only the part it needs. Same checks
 * and same MalformedError as decodeCborStrict (no top-level tag).
 */
export function checkCborStrict(bytes: Uint8Array, options: StrictCborOptions): void {
  const { what } = options;
  if (!(bytes instanceof Uint8Array)) throw new MalformedError(`${what}: expected bytes`);
  if (bytes.length === 0) throw new MalformedError(`${what}: empty input`);
  if (bytes.length > options.maxBytes) {
    throw new MalformedError(`${what}: ${bytes.length} bytes exceeds the ${options.maxBytes}-byte limit`);
  }
  const scanner = new CborScanner(bytes, what, options.maxDepth ?? DEFAULT_MAX_DEPTH);
  scanner.item(0);
  if (scanner.pos !== bytes.length) scanner.fail("bytes after the CBOR item");
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
