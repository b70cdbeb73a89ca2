/**
 * How large a network plan may be (issue 10 finding 4), and the cheap scans that refuse a larger one
 * before it is parsed: a plan past these limits is not a real plan, and parsing it would cost
 * gigabytes (a 63 MiB YAML file ended in a V8 out-of-memory abort).
 *
 * Where a real plan ends: one card holds about 2,500 HSMs (docs/PERFORMANCE.md), and one card set
 * serves one site or hall — a few thousand HSMs. 20,000 HSMs is eight full cards; a 20,000-HSM YAML
 * plan with two interfaces each (IPv4 and IPv6) is about 4.5 MB and 1.0 million YAML tokens. The
 * byte limit leaves room for comments and a verbose layout (×3.5); the token and value limits are what
 * bound memory: parsing YAML costs about 0.6–1 KB per scalar (the `yaml` library keeps a syntax tree),
 * so the token limit keeps the worst YAML under about 450 MB, and the JSON value limit keeps the worst
 * JSON under about 150 MB (docs/SECURITY.md "Plan size" has the measurements).
 */
import { Lexer } from "yaml";

export const PLAN_LIMITS = {
  /** Largest plan file, in bytes. */
  bytes: 16 * 1024 * 1024,
  /** Most HSM entries (YAML/JSON `hsms`, CSV data rows). */
  hsms: 20_000,
  /** Most YAML tokens other than white space and line breaks (scalars, indicators, comments). */
  yamlTokens: 1_200_000,
  /** Most JSON values (objects, arrays, members and elements). */
  jsonValues: 1_200_000,
} as const;

const MIB = 1024 * 1024;

export function bytesLimitMessage(size?: number): string {
  const seen = size === undefined ? "" : ` (${size.toLocaleString("en-US")} bytes)`;
  return `is larger than the plan size limit of ${PLAN_LIMITS.bytes / MIB} MiB${seen}: a real plan (up to ${PLAN_LIMITS.hsms.toLocaleString("en-US")} HSMs) is far smaller; split it per card set`;
}

/** `count`: the entries seen, when known (a CSV plan is refused on its line count alone). */
export function hsmsLimitMessage(count?: number): string {
  const limit = PLAN_LIMITS.hsms.toLocaleString("en-US");
  return count === undefined
    ? `holds more HSM rows than the limit of ${limit} per plan; split it per card set`
    : `holds ${count.toLocaleString("en-US")} HSM entries, more than the limit of ${limit} per plan; split it per card set`;
}

/**
 * Counts YAML tokens that are not white space, up to `limit`: true when the text stays within it.
 * The lexer yields one token at a time (nothing is kept), so this costs time in proportion to the
 * limit, not memory.
 */
export function yamlWithinTokenLimit(text: string, limit: number = PLAN_LIMITS.yamlTokens): boolean {
  let count = 0;
  for (const token of new Lexer().lex(text)) {
    const c = token.charCodeAt(0);
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
    if (++count > limit) return false;
  }
  return true;
}

/**
 * An upper bound on the number of values in a JSON text, without parsing it: every value after the
 * first follows a `,` `[` `{` or `:` outside strings. Works on any text (invalid JSON included).
 */
export function jsonValueBound(text: string): number {
  let count = 1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x2c || c === 0x5b || c === 0x7b || c === 0x3a) count++;
  }
  return count;
}

/**
 * Lines of a CSV text, up to `limit + 1`, counted without splitting (quoted line breaks count too:
 * an upper bound on the records).
 */
export function csvLineCount(text: string, limit: number): number {
  let lines = 1;
  for (let i = text.indexOf("\n"); i >= 0 && lines <= limit; i = text.indexOf("\n", i + 1)) {
    if (i < text.length - 1) lines++;
  }
  return lines;
}

/**
 * The first key that appears twice in one JSON object, with the path to that object, or undefined.
 * `text` must be valid JSON (call after JSON.parse succeeded). Keys are compared decoded ("a" and
 * "\u0061" are the same key). Iterative: nesting depth costs no stack.
 */
export function firstDuplicateJsonKey(text: string): { key: string; path: string } | undefined {
  interface Frame {
    readonly object: boolean;
    readonly keys: Set<string> | undefined;
    readonly label: string;
    index: number;
    lastKey: string;
  }
  const stack: Frame[] = [];
  let expectKey = false;
  const pathOf = () =>
    stack
      .slice(1)
      .map((f) => f.label)
      .join("") || "(top level)";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      const start = i;
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) i++;
        else if (d === 0x22) break;
      }
      const top = stack[stack.length - 1];
      if (top?.object && expectKey) {
        const key = JSON.parse(text.slice(start, i + 1)) as string;
        if (top.keys!.has(key)) {
          return { key, path: pathOf() };
        }
        top.keys!.add(key);
        top.lastKey = key;
        expectKey = false;
      }
    } else if (c === 0x7b || c === 0x5b) {
      const parent = stack[stack.length - 1];
      const label = !parent ? "" : parent.object ? `.${parent.lastKey}` : `[${parent.index}]`;
      stack.push({
        object: c === 0x7b,
        keys: c === 0x7b ? new Set() : undefined,
        label,
        index: 0,
        lastKey: "",
      });
      expectKey = c === 0x7b;
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
    } else if (c === 0x2c) {
      const top = stack[stack.length - 1];
      if (top?.object) expectKey = true;
      else if (top) top.index++;
    }
  }
  return undefined;
}
