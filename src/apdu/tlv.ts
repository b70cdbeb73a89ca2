/**
 * BER-TLV as ISO/IEC 7816-4 §5.2 uses it for smart-card data objects: tags of one to three bytes,
 * definite lengths in one byte or `81`/`82`/`83` + 1–3 bytes. Decoding is strict and bounded —
 * bytes come from a card that may be hostile:
 * - invalid tags (`00`/`FF` first byte, bad subsequent bytes, more than three bytes) are refused;
 * - the indefinite length (`80`) and length fields longer than three bytes are refused;
 * - a value that runs past the end of its enclosing buffer is refused (no truncation);
 * - the tree decoder descends into constructed tags only down to a maximum depth.
 * Every failure is a `TlvError` (a MalformedError). Decoded values are views into the input.
 */
import { TlvError } from "../errors.js";

export { TlvError } from "../errors.js";

export interface Tlv {
  /** Tag bytes as a big-endian number, e.g. 0x53, 0x7f49, 0x5fc105. */
  readonly tag: number;
  readonly value: Uint8Array;
}

export interface TlvNode extends Tlv {
  /** Present for constructed tags (bit 6 of the first tag byte set). */
  readonly children?: readonly TlvNode[];
}

export interface TlvDecodeOptions {
  /** Maximum nesting of constructed tags the tree decoder descends into (default 8). */
  readonly maxDepth?: number;
  /** Maximum number of TLVs decoded in total (default 4096). */
  readonly maxItems?: number;
}

export const TLV_DEFAULT_MAX_DEPTH = 8;
export const TLV_DEFAULT_MAX_ITEMS = 4096;
/** Largest value length an `83` length field can express. */
export const TLV_MAX_VALUE_LENGTH = 0xffffff;

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/** Encodes a tag number into its 1–3 bytes; throws RangeError for a number that is not a valid tag. */
export function encodeTag(tag: number): Uint8Array {
  if (!Number.isInteger(tag) || tag <= 0 || tag > 0xffffff) throw new RangeError(`invalid TLV tag ${tag}`);
  let bytes: number[];
  if (tag <= 0xff) bytes = [tag];
  else if (tag <= 0xffff) bytes = [tag >> 8, tag & 0xff];
  else bytes = [tag >> 16, (tag >> 8) & 0xff, tag & 0xff];
  const out = Uint8Array.from(bytes);
  let parsed: { tag: number; end: number };
  try {
    parsed = readTag(out, 0);
  } catch {
    throw new RangeError(`invalid TLV tag 0x${tag.toString(16)}`);
  }
  if (parsed.end !== out.length) throw new RangeError(`invalid TLV tag 0x${tag.toString(16)}`);
  return out;
}

/** Minimal definite length encoding (`L`, `81 L`, `82 LL`, `83 LLL`). */
export function encodeLength(length: number): Uint8Array {
  if (!Number.isInteger(length) || length < 0 || length > TLV_MAX_VALUE_LENGTH) {
    throw new RangeError(`TLV length ${length} out of range`);
  }
  if (length < 0x80) return Uint8Array.of(length);
  if (length <= 0xff) return Uint8Array.of(0x81, length);
  if (length <= 0xffff) return Uint8Array.of(0x82, length >> 8, length & 0xff);
  return Uint8Array.of(0x83, length >> 16, (length >> 8) & 0xff, length & 0xff);
}

export function encodeTlv(tag: number, value: Uint8Array = new Uint8Array(0)): Uint8Array {
  return concatBytes(encodeTag(tag), encodeLength(value.length), value);
}

/** Encodes a sequence of TLVs back to back. */
export function encodeTlvs(items: readonly (Tlv | readonly [number, Uint8Array])[]): Uint8Array {
  return concatBytes(
    ...items.map((it) => ("tag" in it ? encodeTlv(it.tag, it.value) : encodeTlv(it[0], it[1]))),
  );
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

function readTag(buf: Uint8Array, offset: number): { tag: number; end: number } {
  const b0 = buf[offset];
  if (b0 === undefined) throw new TlvError("TLV truncated: missing tag");
  // ISO/IEC 7816-4 §5.2.2.1: 00 and FF are not valid first tag bytes (padding).
  if (b0 === 0x00 || b0 === 0xff) throw new TlvError(`invalid TLV tag byte ${hexByte(b0)}`);
  if ((b0 & 0x1f) !== 0x1f) return { tag: b0, end: offset + 1 };
  const b1 = buf[offset + 1];
  if (b1 === undefined) throw new TlvError("TLV truncated inside a multi-byte tag");
  if ((b1 & 0x80) === 0) {
    // Two-byte tag: the second byte is 1F..7F.
    if (b1 < 0x1f) throw new TlvError(`invalid second tag byte ${hexByte(b1)}`);
    return { tag: (b0 << 8) | b1, end: offset + 2 };
  }
  // Three-byte tag: second byte 81..FF (no leading zero bits), third byte 00..7F.
  if (b1 === 0x80) throw new TlvError("invalid second tag byte 80");
  const b2 = buf[offset + 2];
  if (b2 === undefined) throw new TlvError("TLV truncated inside a multi-byte tag");
  if ((b2 & 0x80) !== 0) throw new TlvError("TLV tag longer than three bytes");
  return { tag: (b0 << 16) | (b1 << 8) | b2, end: offset + 3 };
}

function readLength(buf: Uint8Array, offset: number): { length: number; end: number } {
  const b = buf[offset];
  if (b === undefined) throw new TlvError("TLV truncated: missing length");
  if (b < 0x80) return { length: b, end: offset + 1 };
  if (b === 0x80) throw new TlvError("indefinite TLV length is not allowed");
  const n = b & 0x7f;
  if (n > 3) throw new TlvError(`TLV length field of ${n} bytes is not allowed (max 3)`);
  if (offset + 1 + n > buf.length) throw new TlvError("TLV truncated inside the length field");
  let length = 0;
  for (let i = 0; i < n; i++) length = length * 256 + buf[offset + 1 + i]!;
  return { length, end: offset + 1 + n };
}

/** Reads one TLV at `offset`; the value must lie entirely inside `buf`. */
export function readTlv(buf: Uint8Array, offset = 0): { tlv: Tlv; end: number } {
  const t = readTag(buf, offset);
  const l = readLength(buf, t.end);
  if (l.length > buf.length - l.end) {
    throw new TlvError(
      `TLV ${tagHex(t.tag)} truncated: ${l.length} bytes announced, ${buf.length - l.end} left`,
    );
  }
  const end = l.end + l.length;
  return { tlv: { tag: t.tag, value: buf.subarray(l.end, end) }, end };
}

/** Decodes TLVs back to back; they must fill `buf` exactly. */
export function decodeTlvs(buf: Uint8Array, options: TlvDecodeOptions = {}): Tlv[] {
  const maxItems = options.maxItems ?? TLV_DEFAULT_MAX_ITEMS;
  const out: Tlv[] = [];
  let o = 0;
  while (o < buf.length) {
    if (out.length >= maxItems) throw new TlvError(`more than ${maxItems} TLVs`);
    const r = readTlv(buf, o);
    out.push(r.tlv);
    o = r.end;
  }
  return out;
}

/** Decodes exactly one TLV filling `buf`; with `expectedTag`, the tag must match. */
export function decodeTlv(buf: Uint8Array, expectedTag?: number): Tlv {
  const r = readTlv(buf, 0);
  if (r.end !== buf.length) throw new TlvError(`${buf.length - r.end} unexpected bytes after a TLV`);
  if (expectedTag !== undefined && r.tlv.tag !== expectedTag) {
    throw new TlvError(`expected TLV ${tagHex(expectedTag)}, got ${tagHex(r.tlv.tag)}`);
  }
  return r.tlv;
}

export function isConstructedTag(tag: number): boolean {
  const first = tag > 0xffff ? tag >> 16 : tag > 0xff ? tag >> 8 : tag;
  return (first & 0x20) !== 0;
}

/**
 * Decodes a TLV tree: constructed tags are decoded recursively, at most `maxDepth` levels deep
 * (level 1 = the top-level TLVs). Deeper nesting is a TlvError, so a hostile card cannot make the
 * decoder recurse without bound.
 */
export function decodeTlvTree(buf: Uint8Array, options: TlvDecodeOptions = {}): TlvNode[] {
  const maxDepth = options.maxDepth ?? TLV_DEFAULT_MAX_DEPTH;
  const budget = { items: options.maxItems ?? TLV_DEFAULT_MAX_ITEMS };
  return decodeLevel(buf, 1, maxDepth, budget);
}

function decodeLevel(buf: Uint8Array, depth: number, maxDepth: number, budget: { items: number }): TlvNode[] {
  if (depth > maxDepth) throw new TlvError(`TLV nesting deeper than ${maxDepth}`);
  const out: TlvNode[] = [];
  let o = 0;
  while (o < buf.length) {
    if (--budget.items < 0) throw new TlvError("too many TLVs");
    const r = readTlv(buf, o);
    o = r.end;
    if (isConstructedTag(r.tlv.tag)) {
      out.push({ ...r.tlv, children: decodeLevel(r.tlv.value, depth + 1, maxDepth, budget) });
    } else {
      out.push(r.tlv);
    }
  }
  return out;
}

/** First value with `tag`, or undefined. */
export function findTlv(items: readonly Tlv[], tag: number): Uint8Array | undefined {
  for (const it of items) if (it.tag === tag) return it.value;
  return undefined;
}

/** First value with `tag`; a TlvError naming `what` when it is missing. */
export function requireTlv(items: readonly Tlv[], tag: number, what: string): Uint8Array {
  const v = findTlv(items, tag);
  if (v === undefined) throw new TlvError(`${what}: missing TLV ${tagHex(tag)}`);
  return v;
}

export function tagHex(tag: number): string {
  const s = tag.toString(16).toUpperCase();
  return s.length % 2 === 0 ? s : `0${s}`;
}

function hexByte(b: number): string {
  return b.toString(16).toUpperCase().padStart(2, "0");
}
