import { MalformedError } from "../errors.js";
import { bytesEqual } from "../util/bytes.js";
import { DerReader, encodingOf, type ParsedName, readName, readOnly, TAG } from "./der.js";

/**
 * The limits a CA certificate carries for what it may issue (SPEC.md §4, "Many owners, one root"):
 * name constraints (RFC 5280 §4.2.1.10) and a CA-level extended key usage. Decoding, encoding and
 * the matching rules live here, over the strict DER reader only (no X.509 library), so the agent's
 * fast path and the library validator share one implementation.
 *
 * Name constraints are processed for directoryName (a subtree is an RDN prefix, RDNs compared as DER:
 * the same rule as name chaining, docs/PKI.md). Constraints on other name forms cannot be evaluated
 * here: a certificate below such a CA that carries a name of that form is refused (RFC 5280
 * §4.2.1.10: "MUST either process the constraint or reject the certificate").
 */

/** GeneralName forms (RFC 5280 §4.2.1.6) by their context tag number. */
export const GENERAL_NAME_FORMS = [
  "otherName",
  "rfc822Name",
  "dNSName",
  "x400Address",
  "directoryName",
  "ediPartyName",
  "uniformResourceIdentifier",
  "iPAddress",
  "registeredID",
] as const;
export type GeneralNameForm = (typeof GENERAL_NAME_FORMS)[number];

/** One GeneralName: its form, and for a directoryName the parsed Name. */
export interface GeneralNameValue {
  readonly form: GeneralNameForm;
  /** The DER of the whole GeneralName element. */
  readonly encoding: Uint8Array;
  readonly directoryName?: ParsedName;
}

/** NameConstraints ::= SEQUENCE { permittedSubtrees [0] …, excludedSubtrees [1] … } */
export interface NameConstraints {
  /** undefined: no permitted subtrees (anything not excluded is allowed). */
  readonly permitted: readonly GeneralNameValue[] | undefined;
  readonly excluded: readonly GeneralNameValue[];
}

/** Bounded: a CA of this PKI carries one subtree; no honest certificate carries hundreds. */
export const MAX_SUBTREES = 64;

/**
 * Decodes the extnValue of a nameConstraints extension. MalformedError when it is not the RFC 5280
 * shape: empty, a subtree with minimum ≠ 0 or a maximum (both forbidden by §4.2.1.10), too many.
 */
export function decodeNameConstraints(value: Uint8Array): NameConstraints {
  const what = "nameConstraints";
  const element = readOnly(value, what);
  if (element.tag !== TAG.sequence) throw new MalformedError(`${what}: not a SEQUENCE`);
  const reader = DerReader.inside(value, element, what);
  const permittedElement = reader.optional(0xa0);
  const excludedElement = reader.optional(0xa1);
  reader.end();
  if (!permittedElement && !excludedElement) throw new MalformedError(`${what}: empty`);
  const subtrees = (e: { contentStart: number; end: number; tag: number; start: number }) => {
    const list = DerReader.inside(value, e, what);
    const out: GeneralNameValue[] = [];
    if (list.done) throw new MalformedError(`${what}: empty GeneralSubtrees`);
    while (!list.done) {
      if (out.length >= MAX_SUBTREES) throw new MalformedError(`${what}: more than ${MAX_SUBTREES} subtrees`);
      const subtree = DerReader.inside(value, list.expect(TAG.sequence, "GeneralSubtree"), what);
      const base = readGeneralName(value, subtree.next(), what);
      // minimum [0] DEFAULT 0 (absent in DER), maximum [1]: RFC 5280 §4.2.1.10 — MUST NOT be present.
      if (!subtree.done) throw new MalformedError(`${what}: GeneralSubtree with minimum or maximum`);
      out.push(base);
    }
    return out;
  };
  return {
    permitted: permittedElement ? subtrees(permittedElement) : undefined,
    excluded: excludedElement ? subtrees(excludedElement) : [],
  };
}

/** GeneralNames ::= SEQUENCE SIZE (1..MAX) OF GeneralName (a subjectAltName's extnValue). */
export function decodeGeneralNames(value: Uint8Array, what = "subjectAltName"): GeneralNameValue[] {
  const element = readOnly(value, what);
  if (element.tag !== TAG.sequence) throw new MalformedError(`${what}: not a SEQUENCE`);
  const reader = DerReader.inside(value, element, what);
  if (reader.done) throw new MalformedError(`${what}: empty`);
  const names: GeneralNameValue[] = [];
  while (!reader.done) {
    if (names.length >= MAX_SUBTREES) throw new MalformedError(`${what}: more than ${MAX_SUBTREES} names`);
    names.push(readGeneralName(value, reader.next(), what));
  }
  return names;
}

function readGeneralName(
  bytes: Uint8Array,
  element: { tag: number; start: number; contentStart: number; end: number },
  what: string,
): GeneralNameValue {
  if ((element.tag & 0xc0) !== 0x80) throw new MalformedError(`${what}: not a GeneralName`);
  const number = element.tag & 0x1f;
  const form = GENERAL_NAME_FORMS[number];
  if (form === undefined) throw new MalformedError(`${what}: unknown GeneralName form [${number}]`);
  const constructed = (element.tag & 0x20) !== 0;
  // otherName, x400Address, directoryName, ediPartyName are constructed; the others primitive.
  const mustBeConstructed = number === 0 || number === 3 || number === 4 || number === 5;
  if (constructed !== mustBeConstructed) throw new MalformedError(`${what}: ${form} with the wrong encoding`);
  const encoding = encodingOf(bytes, element);
  if (form !== "directoryName") return { form, encoding };
  // directoryName [4] EXPLICIT Name (Name is a CHOICE, so the tag is explicit).
  const inner = DerReader.inside(bytes, element, what);
  const directoryName = readName(bytes, inner.next(), what);
  inner.end();
  return { form, encoding, directoryName };
}

/** Whether `name` lies in the subtree `base`: base's RDNs are the first RDNs of name, equal as DER. */
export function withinDirectorySubtree(name: ParsedName, base: ParsedName): boolean {
  if (base.rdns.length > name.rdns.length) return false;
  for (let i = 0; i < base.rdns.length; i++) {
    const a = base.rdns[i]!;
    const b = name.rdns[i]!;
    if (a.length !== b.length) return false;
    for (let j = 0; j < a.length; j++) {
      if (a[j]!.type !== b[j]!.type || !bytesEqual(a[j]!.valueEncoding, b[j]!.valueEncoding)) return false;
    }
  }
  return true;
}

/** emailAddress (PKCS #9): a subject attribute RFC 5280 §4.2.1.10 treats as an rfc822Name. */
const EMAIL_ADDRESS = "1.2.840.113549.1.9.1";

/**
 * Why `names` (a certificate's subject and subjectAltName) break `constraints`, or undefined when
 * they do not. `subject` is checked as a directoryName when it is not empty.
 */
export function nameConstraintViolation(
  constraints: NameConstraints,
  subject: ParsedName,
  altNames: readonly GeneralNameValue[],
): string | undefined {
  const constrained = new Set<GeneralNameForm>(
    [...(constraints.permitted ?? []), ...constraints.excluded].map((n) => n.form),
  );
  const names: GeneralNameValue[] = [...altNames];
  if (subject.rdns.length > 0) {
    names.push({ form: "directoryName", encoding: subject.encoding, directoryName: subject });
    if (
      constrained.has("rfc822Name") &&
      subject.rdns.some((rdn) => rdn.some((a) => a.type === EMAIL_ADDRESS))
    ) {
      return "an emailAddress in the subject falls under rfc822Name constraints, which this validator does not evaluate";
    }
  }
  for (const name of names) {
    if (!constrained.has(name.form)) continue;
    if (name.form !== "directoryName" || !name.directoryName) {
      return `carries a ${name.form} and its issuer constrains ${name.form}s, which this validator does not evaluate`;
    }
    const dn = name.directoryName;
    const permitted = (constraints.permitted ?? []).filter((b) => b.form === "directoryName");
    if (permitted.length > 0 && !permitted.some((b) => withinDirectorySubtree(dn, b.directoryName!))) {
      return "directoryName is outside every permitted subtree";
    }
    const excluded = constraints.excluded.filter((b) => b.form === "directoryName");
    if (excluded.some((b) => withinDirectorySubtree(dn, b.directoryName!))) {
      return "directoryName is inside an excluded subtree";
    }
  }
  return undefined;
}

// ---- encoding (issuance) -------------------------------------------------------------------------

/**
 * The extnValue of a nameConstraints extension whose permitted subtrees are the given directory
 * names (each the DER of a Name): SEQUENCE { [0] { SEQUENCE { [4] Name } … } }.
 */
export function encodeDirectoryNameConstraints(permittedNames: readonly Uint8Array[]): Uint8Array {
  if (permittedNames.length === 0) throw new RangeError("at least one permitted name");
  const subtrees = permittedNames.map((name) => {
    readName(name, readOnly(name, "Name"), "Name"); // a well-formed Name, or throw
    return tlv(TAG.sequence, tlv(0xa4, name));
  });
  return tlv(TAG.sequence, tlv(0xa0, concat(subtrees)));
}

/** The DER of the Name made of the first RDN of `name` (e.g. O = owner of a CA's subject). */
export function firstRdnName(nameDer: Uint8Array): Uint8Array {
  const element = readOnly(nameDer, "Name");
  if (element.tag !== TAG.sequence) throw new MalformedError("Name: not a SEQUENCE");
  const reader = DerReader.inside(nameDer, element, "Name");
  const rdn = reader.expect(TAG.set, "RelativeDistinguishedName");
  return tlv(TAG.sequence, encodingOf(nameDer, rdn));
}

function tlv(tag: number, content: Uint8Array): Uint8Array {
  const n = content.length;
  const length = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : n < 0x10000 ? [0x82, n >> 8, n & 0xff] : undefined;
  if (!length) throw new RangeError("element too long");
  const out = new Uint8Array(1 + length.length + n);
  out[0] = tag;
  out.set(length, 1);
  out.set(content, 1 + length.length);
  return out;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
