/**
 * PKCS#11 URIs (RFC 7512) naming a token and an object on it, e.g.
 *
 *   pkcs11:token=ACME%20CA;object=token-ca;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so
 *
 * Path attributes (`;`-separated): token, serial, manufacturer, model, slot-id (decimal CK_SLOT_ID),
 * object (CKA_LABEL), id (CKA_ID, raw bytes percent-encoded: `id=%01%a2`), type. Query attributes (`&`-separated):
 * module-path, and pin-value / pin-source, which this parser reads so that callers can refuse them
 * by name (a PIN in a URI ends up in argv, shell history and files). An attribute this parser does
 * not know, or one given twice, is refused rather than ignored: a misspelt `objet=` must not select
 * another key.
 */
import { UsageError } from "../errors.js";

export const PKCS11_URI_SCHEME = "pkcs11:";

export interface Pkcs11Uri {
  /** CK_TOKEN_INFO.label. */
  readonly token?: string;
  /** CK_TOKEN_INFO.serialNumber. */
  readonly serial?: string;
  readonly manufacturer?: string;
  readonly model?: string;
  /** CK_SLOT_ID, decimal in the URI. */
  readonly slotId?: bigint;
  /** CKA_LABEL of the object. */
  readonly object?: string;
  /** CKA_ID of the object (bytes). */
  readonly id?: Uint8Array;
  /** Object class: public, private, cert, secret-key, data. */
  readonly type?: "public" | "private" | "cert" | "secret-key" | "data";
  /** The PKCS#11 module (shared library) to load. */
  readonly modulePath?: string;
  /** A PIN written into the URI: parsed so callers can refuse it; never printed. */
  readonly pinValue?: string;
  /** Where a PIN is to be read from (RFC 7512 §2.3). */
  readonly pinSource?: string;
}

const PATH_ATTRIBUTES = [
  "token",
  "serial",
  "manufacturer",
  "model",
  "slot-id",
  "object",
  "id",
  "type",
] as const;
const QUERY_ATTRIBUTES = {
  "module-path": "modulePath",
  "pin-value": "pinValue",
  "pin-source": "pinSource",
} as const;
const TYPES = ["public", "private", "cert", "secret-key", "data"] as const;
/** Longer than any real reference; bounds the work on a hostile argument. */
const MAX_URI_LENGTH = 4096;

export function isPkcs11Uri(value: string): boolean {
  return value.slice(0, PKCS11_URI_SCHEME.length).toLowerCase() === PKCS11_URI_SCHEME;
}

/** Percent-decodes to bytes (RFC 3986 §2.1); a `%` not followed by two hex digits is refused. */
function percentDecode(value: string, what: string): Uint8Array {
  const bytes: number[] = [];
  const utf8 = Buffer.from(value, "utf8");
  for (let i = 0; i < utf8.length; i++) {
    const c = utf8[i] as number;
    if (c !== 0x25) {
      bytes.push(c);
      continue;
    }
    const hex = utf8.subarray(i + 1, i + 3).toString("latin1");
    if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new UsageError(`PKCS#11 URI: bad percent-encoding in ${what}`);
    bytes.push(Number.parseInt(hex, 16));
    i += 2;
  }
  return new Uint8Array(bytes);
}

function decodeText(value: string, what: string): string {
  const bytes = percentDecode(value, what);
  const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  if (!Buffer.from(text, "utf8").equals(Buffer.from(bytes)))
    throw new UsageError(`PKCS#11 URI: ${what} is not UTF-8`);
  return text;
}

/** Parses an RFC 7512 URI. UsageError (exit 2) for anything it cannot read exactly. */
export function parsePkcs11Uri(uri: string): Pkcs11Uri {
  if (!isPkcs11Uri(uri)) throw new UsageError("a PKCS#11 URI starts with pkcs11:");
  if (uri.length > MAX_URI_LENGTH) throw new UsageError("PKCS#11 URI: too long");
  const rest = uri.slice(PKCS11_URI_SCHEME.length);
  const q = rest.indexOf("?");
  const path = q < 0 ? rest : rest.slice(0, q);
  const query = q < 0 ? "" : rest.slice(q + 1);
  if (path.includes("#") || query.includes("#"))
    throw new UsageError("PKCS#11 URI: a fragment (#) is not allowed");
  const out: { -readonly [K in keyof Pkcs11Uri]: Pkcs11Uri[K] } = {};
  const seen = new Set<string>();
  const split = (part: string, separator: string) =>
    part
      .split(separator)
      .filter((p) => p.length > 0)
      .map((attribute) => {
        const eq = attribute.indexOf("=");
        const name = eq < 0 ? attribute : attribute.slice(0, eq);
        if (eq < 0) throw new UsageError(`PKCS#11 URI: "${name}" has no value`);
        if (seen.has(name)) throw new UsageError(`PKCS#11 URI: "${name}" given twice`);
        seen.add(name);
        return { name, value: attribute.slice(eq + 1) };
      });
  for (const { name, value } of split(path, ";")) {
    if (!(PATH_ATTRIBUTES as readonly string[]).includes(name)) {
      throw new UsageError(`PKCS#11 URI: unsupported path attribute "${name}"`);
    }
    if (name === "id") {
      out.id = percentDecode(value, "id");
    } else if (name === "slot-id") {
      const id = decodeText(value, "slot-id");
      if (!/^\d{1,20}$/.test(id) || BigInt(id) > 0xffff_ffff_ffff_ffffn) {
        throw new UsageError("PKCS#11 URI: slot-id must be a decimal number (CK_SLOT_ID)");
      }
      out.slotId = BigInt(id);
    } else if (name === "type") {
      const type = decodeText(value, "type");
      if (!(TYPES as readonly string[]).includes(type))
        throw new UsageError(`PKCS#11 URI: type must be one of ${TYPES.join(", ")}`);
      out.type = type as Pkcs11Uri["type"];
    } else {
      out[name as "token" | "serial" | "manufacturer" | "model" | "object"] = decodeText(value, name);
    }
  }
  for (const { name, value } of split(query, "&")) {
    const key = QUERY_ATTRIBUTES[name as keyof typeof QUERY_ATTRIBUTES];
    if (key === undefined) throw new UsageError(`PKCS#11 URI: unsupported query attribute "${name}"`);
    // The PIN itself is never echoed, even when refused.
    out[key] = decodeText(value, name === "pin-value" ? "pin-value" : name);
  }
  return out;
}

const UNRESERVED = /[A-Za-z0-9\-._~:[\]@!$'()*+,=/&]/;

function percentEncode(bytes: Uint8Array, keep: RegExp = UNRESERVED): string {
  let s = "";
  for (const b of bytes) {
    const ch = String.fromCharCode(b);
    s += b < 0x80 && keep.test(ch) ? ch : `%${b.toString(16).padStart(2, "0")}`;
  }
  return s;
}

/**
 * Formats a URI (path attributes in RFC order, then module-path). A PIN value is never formatted:
 * the result is what may be stored and printed.
 */
export function formatPkcs11Uri(uri: Pkcs11Uri): string {
  const text = (s: string) => percentEncode(Buffer.from(s, "utf8"), /[A-Za-z0-9\-._~:[\]@!$'()*+,=/]/);
  const path: string[] = [];
  if (uri.token !== undefined) path.push(`token=${text(uri.token)}`);
  if (uri.serial !== undefined) path.push(`serial=${text(uri.serial)}`);
  if (uri.manufacturer !== undefined) path.push(`manufacturer=${text(uri.manufacturer)}`);
  if (uri.model !== undefined) path.push(`model=${text(uri.model)}`);
  if (uri.slotId !== undefined) path.push(`slot-id=${uri.slotId}`);
  if (uri.object !== undefined) path.push(`object=${text(uri.object)}`);
  if (uri.id !== undefined)
    path.push(`id=${[...uri.id].map((b) => `%${b.toString(16).padStart(2, "0")}`).join("")}`);
  if (uri.type !== undefined) path.push(`type=${uri.type}`);
  const query = uri.modulePath !== undefined ? `?module-path=${text(uri.modulePath)}` : "";
  return `${PKCS11_URI_SCHEME}${path.join(";")}${query}`;
}

/** The URI with any pin-value replaced, for messages. */
export function redactPkcs11Uri(uri: string): string {
  return uri.replace(/([?&]pin-value=)[^&#]*/gi, "$1REDACTED");
}

// ---- token URIs (--token) ------------------------------------------------------------------------

/**
 * A URI naming a token for `--token` (the card commands): module-path required and absolute; the
 * token matched by token, serial, manufacturer, model, slot-id. pin-value and pin-source are refused
 * (a PIN never travels in a URI or on the command line: it is asked on the terminal, or given with
 * --pin-fd / --pin-stdin / --pin-command); text values longer than the CK_TOKEN_INFO field they match,
 * or holding control characters, are refused.
 */
export interface Pkcs11TokenUri extends Omit<Pkcs11Uri, "modulePath" | "pinValue" | "pinSource"> {
  readonly modulePath: string;
}

const TOKEN_FIELD_BYTES = { token: 32, serial: 16, manufacturer: 32, model: 16, object: 256 } as const;

/** Parses a `--token` URI (see {@link Pkcs11TokenUri}); UsageError with the reason otherwise. */
export function parsePkcs11TokenUri(text: string): Pkcs11TokenUri {
  const uri = parsePkcs11Uri(text);
  if (uri.pinValue !== undefined || uri.pinSource !== undefined) {
    throw new UsageError(
      `PKCS#11 URI: ${uri.pinValue !== undefined ? "pin-value" : "pin-source"} refused: the PIN never goes in a URI; it is asked on the terminal or given with --pin-fd, --pin-stdin or --pin-command`,
    );
  }
  if (uri.modulePath === undefined) {
    throw new UsageError(
      "PKCS#11 URI: module-path is missing (e.g. ?module-path=/usr/lib/softhsm/libsofthsm2.so)",
    );
  }
  if (!uri.modulePath.startsWith("/") || uri.modulePath.includes("\0")) {
    throw new UsageError("PKCS#11 URI: module-path must be an absolute file path");
  }
  for (const [name, limit] of Object.entries(TOKEN_FIELD_BYTES) as [
    keyof typeof TOKEN_FIELD_BYTES,
    number,
  ][]) {
    const value = uri[name];
    if (value === undefined) continue;
    if (Buffer.byteLength(value) > limit) {
      throw new UsageError(`PKCS#11 URI: ${name} is longer than ${limit} bytes`);
    }
    if (/[\u0000-\u001f\u007f]/.test(value)) {
      throw new UsageError(`PKCS#11 URI: ${name} has a control character`);
    }
  }
  const { pinValue: _v, pinSource: _s, ...token } = uri;
  return { ...token, modulePath: uri.modulePath };
}

/** What names the token, for messages: `token "X", serial Y`. */
export function describeTokenUri(uri: Pkcs11TokenUri): string {
  const parts = [
    uri.token !== undefined ? `token "${uri.token}"` : undefined,
    uri.serial !== undefined ? `serial ${uri.serial}` : undefined,
    uri.slotId !== undefined ? `slot ${uri.slotId}` : undefined,
  ].filter(Boolean);
  return parts.length > 0 ? parts.join(", ") : "any token";
}
