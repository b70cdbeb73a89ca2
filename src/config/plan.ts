/**
 * Network plans (SPEC.md §7.1): YAML, JSON or CSV in, one validated `NetworkPlan` out.
 *
 * `parsePlan` (text) and `loadPlanFile` (a file) are the entry points; both throw
 * `PlanInvalidError` listing every problem at once. `checkPlan` returns the problems instead, for
 * callers (such as `plan check`) that report rather than stop.
 *
 * YAML and JSON go through the same path: parse to plain data, check each entry's shape with zod
 * (an entry with a wrong shape is reported and left out of the semantic checks, so one typo does not
 * cascade), expand the single-interface shorthand, then hand a located draft to
 * `validatePlanDraft` (src/config/validate-plan.ts). CSV has its own reader (src/config/plan-csv.ts)
 * that produces the same kind of draft.
 *
 * The owner: a CSV plan has none, so `options.owner` (`--owner NAME`) supplies it; for YAML and
 * JSON it supplies a missing `owner:` and must agree with one that is present.
 */
import { open } from "node:fs/promises";
import { extname } from "node:path";
import YAML, { isMap, isScalar, isSeq } from "yaml";
import * as z from "zod";
import { PlanInvalidError, type PlanProblem, UsageError } from "../errors.js";
import { planCsvToDraft } from "./plan-csv.js";
import {
  bytesLimitMessage,
  csvLineCount,
  firstDuplicateJsonKey,
  hsmsLimitMessage,
  jsonValueBound,
  PLAN_LIMITS,
  yamlWithinTokenLimit,
} from "./plan-limits.js";
import type { NetworkPlan } from "./plan-model.js";
import type { PlanOptions } from "./validate-plan.js";
import {
  type DraftHsm,
  type DraftInterface,
  type DraftSubnet,
  type HsmKey,
  type InterfaceKey,
  type Location,
  PLAN_ENTRY,
  PLAN_LIST_ORDER,
  type PlanDraft,
  ProblemList,
  planMessages,
  quote,
  type SubnetKey,
  validatePlanDraft,
} from "./validate-plan.js";

export type PlanFormat = "yaml" | "json" | "csv";
export const PLAN_FORMATS: readonly PlanFormat[] = ["yaml", "json", "csv"];

export type { PlanOptions };

export interface PlanCheck {
  readonly format: PlanFormat;
  /** Present exactly when `problems` is empty. */
  readonly plan?: NetworkPlan;
  readonly problems: readonly PlanProblem[];
}

/** Largest plan file read (plan-limits.ts says why): a 20,000-HSM YAML plan is about 4.5 MB. */
export const MAX_PLAN_BYTES = PLAN_LIMITS.bytes;

// ---------------------------------------------------------------------------------------------
// Entry points

/** Parses and validates a plan; throws `PlanInvalidError` with every problem found. */
export function parsePlan(
  input: string | Uint8Array,
  format: PlanFormat | "auto" = "auto",
  options: PlanOptions = {},
): NetworkPlan {
  const result = checkPlan(input, format, options);
  if (!result.plan) throw new PlanInvalidError(result.problems);
  return result.plan;
}

/** Like `parsePlan`, but returns the problems instead of throwing them. */
export function checkPlan(
  input: string | Uint8Array,
  format: PlanFormat | "auto" = "auto",
  options: PlanOptions = {},
): PlanCheck {
  if (format !== "auto" && !PLAN_FORMATS.includes(format)) {
    throw new UsageError(`unknown plan format ${quote(String(format))} (use yaml, json or csv)`);
  }
  const size = typeof input === "string" ? input.length : input.length;
  if (size > PLAN_LIMITS.bytes) {
    const problems = new ProblemList();
    problems.addRaw(PLAN_ENTRY, "", 0, bytesLimitMessage(size));
    return { format: format === "auto" ? "yaml" : format, problems: problems.sorted() };
  }
  const text = typeof input === "string" ? stripBom(input) : decodePlanBytes(input);
  const resolved = format === "auto" ? sniffPlanFormat(text ?? "") : format;
  const problems = new ProblemList();
  if (text === undefined) {
    problems.addRaw(PLAN_ENTRY, "", 0, "is not UTF-8 text");
    return { format: resolved, problems: problems.sorted() };
  }
  if (resolved === "csv" && csvLineCount(text, PLAN_LIMITS.hsms + 1) > PLAN_LIMITS.hsms + 1) {
    problems.addRaw(PLAN_ENTRY, "", 0, hsmsLimitMessage());
    return { format: resolved, problems: problems.sorted() };
  }
  const draft =
    resolved === "csv"
      ? planCsvToDraft(text, options, problems)
      : readDocument(text, resolved, options, problems);
  const plan = draft ? validatePlanDraft(draft, problems) : undefined;
  return plan && problems.size === 0
    ? { format: resolved, plan, problems: [] }
    : { format: resolved, problems: problems.sorted() };
}

/** Reads a plan file (format from its extension, else from its content) and validates it. */
export async function loadPlanFile(
  path: string,
  options: PlanOptions & { readonly format?: PlanFormat } = {},
): Promise<NetworkPlan> {
  const bytes = await readPlanFile(path);
  return parsePlan(bytes, options.format ?? planFormatFromPath(path) ?? "auto", options);
}

/**
 * The bytes of a plan file (`shownAs`: the name messages use). Anything that keeps it from being
 * read — missing, a directory, no permission, too large — is a `UsageError` with one clear line.
 */
export async function readPlanFile(path: string, shownAs = path): Promise<Uint8Array> {
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(path, "r");
    const info = await handle.stat();
    if (info.isDirectory()) throw new UsageError(`cannot read plan ${shownAs}: it is a directory`);
    if (info.size > MAX_PLAN_BYTES) throw tooLarge(shownAs, info.size);
    // Read to the end rather than trusting `size`, so pipes (`<(...)`, /dev/stdin) work too.
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const chunk = new Uint8Array(1024 * 1024);
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > MAX_PLAN_BYTES) throw tooLarge(shownAs);
      chunks.push(chunk.subarray(0, bytesRead));
    }
    return Buffer.concat(chunks, total);
  } catch (error) {
    if (error instanceof UsageError || error instanceof PlanInvalidError) throw error;
    throw new UsageError(`cannot read plan ${shownAs}: ${describeFsError(error)}`, { cause: error });
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/** Refused before reading further: exit 23, with the limit in the message. */
function tooLarge(path: string, size?: number): PlanInvalidError {
  return new PlanInvalidError([{ entry: `plan ${path}`, field: "", message: bytesLimitMessage(size) }]);
}

function describeFsError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case "ENOENT":
      return "no such file";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EISDIR":
      return "it is a directory";
    default:
      return error instanceof Error ? error.message : String(error);
  }
}

export function planFormatFromPath(path: string): PlanFormat | undefined {
  switch (extname(path).toLowerCase()) {
    case ".yaml":
    case ".yml":
      return "yaml";
    case ".json":
      return "json";
    case ".csv":
      return "csv";
    default:
      return undefined;
  }
}

/**
 * Guesses the format from content: JSON starts with `{` or `[`; CSV has a first line of
 * comma-separated names that include `serial`; anything else is read as YAML.
 */
export function sniffPlanFormat(text: string): PlanFormat {
  const start = text.trimStart();
  if (start.startsWith("{") || start.startsWith("[")) return "json";
  const firstLine = start.split(/\r?\n/, 1)[0] ?? "";
  const cells = firstLine.split(",").map((c) =>
    c
      .trim()
      .replace(/^"(.*)"$/, "$1")
      .toLowerCase(),
  );
  if (cells.length >= 3 && cells.includes("serial") && !firstLine.includes(": ")) return "csv";
  return "yaml";
}

/** UTF-8 text without a byte order mark, or undefined when the bytes are not UTF-8. */
function decodePlanBytes(bytes: Uint8Array): string | undefined {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
}

function stripBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** What a valid plan holds, in numbers (the `plan check` summary). */
export interface PlanSummary {
  readonly owner: string;
  readonly hsms: number;
  readonly subnets: number;
  readonly interfaces: number;
  readonly ipv4Addresses: number;
  readonly ipv6Addresses: number;
}

export function summarizePlan(plan: NetworkPlan): PlanSummary {
  let interfaces = 0;
  let ipv4Addresses = 0;
  let ipv6Addresses = 0;
  for (const hsm of plan.hsms) {
    for (const iface of hsm.interfaces) {
      interfaces++;
      if (iface.ipv4 !== undefined) ipv4Addresses++;
      if (iface.ipv6 !== undefined) ipv6Addresses++;
    }
  }
  return {
    owner: plan.owner,
    hsms: plan.hsms.length,
    subnets: plan.subnets.length,
    interfaces,
    ipv4Addresses,
    ipv6Addresses,
  };
}

// ---------------------------------------------------------------------------------------------
// Writing a plan back out (tests, demos and tools that generate plans)

/** The §7.1 document for a plan (snake_case keys, absent values left out). */
export function planToDocument(plan: NetworkPlan): Record<string, unknown> {
  return {
    owner: plan.owner,
    subnets: plan.subnets.map((s) => ({
      name: s.name,
      ...(s.cidr !== undefined && { cidr: s.cidr }),
      ...(s.gateway !== undefined && { gateway: s.gateway }),
      dns: [...s.dns],
      ntp: [...s.ntp],
      ...(s.vlan !== undefined && { vlan: s.vlan }),
      ...(s.mtu !== undefined && { mtu: s.mtu }),
      ...(s.ipv6Cidr !== undefined && { ipv6_cidr: s.ipv6Cidr }),
      ...(s.ipv6Gateway !== undefined && { ipv6_gateway: s.ipv6Gateway }),
    })),
    hsms: plan.hsms.map((h) => ({
      serial: h.serial,
      hostname: h.hostname,
      interfaces: h.interfaces.map((i) => ({
        name: i.name,
        subnet: i.subnet,
        ...(i.ipv4 !== undefined && { ipv4: i.ipv4 }),
        ...(i.ipv6 !== undefined && { ipv6: i.ipv6 }),
      })),
    })),
  };
}

export function planToYaml(plan: NetworkPlan): string {
  return YAML.stringify(planToDocument(plan));
}

export function planToJson(plan: NetworkPlan): string {
  return `${JSON.stringify(planToDocument(plan), null, 2)}\n`;
}

// ---------------------------------------------------------------------------------------------
// YAML and JSON

interface RawDocument {
  readonly data: unknown;
  /** The source text of `hsms[i].serial` when it was read as a number (YAML keeps it). */
  readonly serialSource: (hsmIndex: number) => string | undefined;
}

function readDocument(
  text: string,
  format: "yaml" | "json",
  options: PlanOptions,
  problems: ProblemList,
): PlanDraft | undefined {
  const raw = format === "json" ? readJson(text, problems) : readYaml(text, problems);
  return raw && documentToDraft(raw, options, problems);
}

function readJson(text: string, problems: ProblemList): RawDocument | undefined {
  if (jsonValueBound(text) > PLAN_LIMITS.jsonValues) {
    problems.addRaw(
      PLAN_ENTRY,
      "",
      0,
      `holds more than ${PLAN_LIMITS.jsonValues.toLocaleString("en-US")} JSON values, the limit for a plan (${PLAN_LIMITS.hsms.toLocaleString("en-US")} HSMs need far fewer)`,
    );
    return undefined;
  }
  try {
    const data: unknown = JSON.parse(text);
    // JSON.parse keeps the last of duplicate keys; YAML refuses them, and so does a JSON plan.
    const duplicate = firstDuplicateJsonKey(text);
    if (duplicate) {
      problems.addRaw(
        PLAN_ENTRY,
        "",
        0,
        `not valid JSON: key ${quote(duplicate.key)} appears twice in ${duplicate.path}`,
      );
      return undefined;
    }
    return { data, serialSource: () => undefined };
  } catch (error) {
    const raw = error instanceof Error ? error.message : String(error);
    // V8 quotes the input back (`, "..." is not valid JSON`); keep only the reason and the position.
    const reason = raw
      .replace(/, (?:\.\.\.)?".*" is not valid JSON$/s, "")
      .replace(/ in JSON at position \d+.*$/s, "");
    const position = /at position (\d+)/.exec(raw)?.[1];
    const where = position === undefined ? locateJsonError(text) : lineAndColumn(text, Number(position));
    problems.addRaw(PLAN_ENTRY, "", 0, `not valid JSON${where ? ` (${where})` : ""}: ${reason}`);
    return undefined;
  }
}

/**
 * Where JSON.parse failed when its message does not say (V8 gives no position for an unexpected
 * token): JSON is YAML, and the YAML parser reports where it first stumbles.
 */
function locateJsonError(text: string): string | undefined {
  try {
    const pos = YAML.parseDocument(text).errors[0]?.linePos?.[0];
    return pos ? `line ${pos.line}, column ${pos.col}` : undefined;
  } catch {
    return undefined;
  }
}

function lineAndColumn(text: string, offset: number): string {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return `line ${line}, column ${offset - lineStart + 1}`;
}

function readYaml(text: string, problems: ProblemList): RawDocument | undefined {
  if (!yamlWithinTokenLimit(text)) {
    problems.addRaw(
      PLAN_ENTRY,
      "",
      0,
      `holds more than ${PLAN_LIMITS.yamlTokens.toLocaleString("en-US")} YAML tokens, the limit for a plan (${PLAN_LIMITS.hsms.toLocaleString("en-US")} HSMs need fewer)`,
    );
    return undefined;
  }
  try {
    const doc = YAML.parseDocument(text, { uniqueKeys: true });
    const error = doc.errors[0];
    if (error) {
      const pos = error.linePos?.[0];
      const where = pos ? ` (line ${pos.line}, column ${pos.col})` : "";
      const reason = error.message.split("\n", 1)[0]!.replace(/ at line \d+, column \d+:?$/, "");
      problems.addRaw(PLAN_ENTRY, "", 0, `not valid YAML${where}: ${reason}`);
      return undefined;
    }
    // The alias limit stops "billion laughs" expansion.
    const data: unknown = doc.toJS({ maxAliasCount: 100 });
    const hsmsNode = doc.get("hsms", true);
    const serialSource = (i: number): string | undefined => {
      const item = isSeq(hsmsNode) ? hsmsNode.items[i] : undefined;
      const node = isMap(item) ? item.get("serial", true) : undefined;
      return isScalar(node) && typeof node.source === "string" ? node.source : undefined;
    };
    return { data, serialSource };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    problems.addRaw(PLAN_ENTRY, "", 0, `not valid YAML: ${reason.split("\n", 1)[0]}`);
    return undefined;
  }
}

// Shapes. `null` (an empty YAML value) stands for "absent" in optional fields.
const text = z.string();
const optionalText = z.string().nullish();
const SubnetShape = z.strictObject({
  name: text,
  cidr: optionalText,
  gateway: optionalText,
  dns: z.array(text).nullish(),
  ntp: z.array(text).nullish(),
  vlan: z.number().nullish(),
  mtu: z.number().nullish(),
  ipv6_cidr: optionalText,
  ipv6_gateway: optionalText,
});
const InterfaceShape = z.strictObject({
  name: text,
  subnet: text,
  ipv4: optionalText,
  ipv6: optionalText,
});
const HsmShape = z.strictObject({
  serial: z.union([z.string(), z.number()]),
  hostname: text,
  interfaces: z.array(InterfaceShape).nullish(),
  // the shorthand: one interface, eth0
  subnet: optionalText,
  ipv4: optionalText,
  ipv6: optionalText,
});
const TOP_LEVEL_KEYS = ["owner", "subnets", "hsms"] as const;
const SHORTHAND_INTERFACE = "eth0";

const YAML_KEY: Record<string, string> = { ipv6Cidr: "ipv6_cidr", ipv6Gateway: "ipv6_gateway" };
const yamlKey = (key: string): string => YAML_KEY[key] ?? key;
const indexed = (name: string, index?: number): string => (index === undefined ? name : `${name}[${index}]`);

// Sort keys: plan-level problems first, then subnets, then HSMs, each in input order.
const SUBNETS_ORDER = 1e7;
const HSMS_ORDER = 2e7;

function planLocation(): Location<"owner" | "hsms" | "subnets"> {
  return { entry: PLAN_ENTRY, order: 0, field: (key) => key };
}

function subnetLocation(index: number, name: unknown, nameCount: Map<string, number>): Location<SubnetKey> {
  const usable =
    typeof name === "string" &&
    name.trim() !== "" &&
    nameCount.get(name) === 1 &&
    !/[\]\s\u0000-\u001f\u007f]/.test(name);
  return {
    entry: usable ? `subnets[${name}]` : `subnets[${index}]`,
    order: SUBNETS_ORDER + index,
    field: (key, i) => indexed(yamlKey(key), i),
  };
}

function hsmLabel(index: number, serial: unknown): string {
  const s = typeof serial === "number" ? String(serial) : serial;
  return typeof s === "string" && /^[\x21-\x7e]{1,64}$/.test(s)
    ? `hsms[${index}] (serial ${s})`
    : `hsms[${index}]`;
}

function documentToDraft(
  raw: RawDocument,
  options: PlanOptions,
  problems: ProblemList,
): PlanDraft | undefined {
  const planAt = planLocation();
  const data = raw.data;
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    problems.addRaw(
      PLAN_ENTRY,
      "",
      0,
      `must be a mapping with owner, subnets and hsms, not ${describeValue(data)}`,
    );
    return undefined;
  }
  const doc = data as Record<string, unknown>;
  for (const key of Object.keys(doc)) {
    if (!(TOP_LEVEL_KEYS as readonly string[]).includes(key)) {
      problems.addRaw(PLAN_ENTRY, key, 0, unknownField(TOP_LEVEL_KEYS));
    }
  }

  if (Array.isArray(doc.hsms) && doc.hsms.length > PLAN_LIMITS.hsms) {
    problems.addRaw(PLAN_ENTRY, "hsms", PLAN_LIST_ORDER, hsmsLimitMessage(doc.hsms.length));
    return undefined;
  }
  const owner = readOwner(doc.owner, options, planAt, problems);
  const rawSubnets = readList(doc.subnets, "subnets", planAt, problems);
  const rawHsms = readList(doc.hsms, "hsms", planAt, problems);

  const nameCount = new Map<string, number>();
  for (const s of rawSubnets) {
    const name = (s as { name?: unknown } | null)?.name;
    if (typeof name === "string") nameCount.set(name, (nameCount.get(name) ?? 0) + 1);
  }
  const subnets: DraftSubnet[] = [];
  const rejectedSubnets = new Set<string>();
  rawSubnets.forEach((value, index) => {
    const name = (value as { name?: unknown } | null)?.name;
    const at = subnetLocation(index, name, nameCount);
    const parsed = SubnetShape.safeParse(value, { reportInput: true });
    if (!parsed.success) {
      reportShapeIssues(parsed.error.issues, at.entry, at.order, problems);
      if (typeof name === "string") rejectedSubnets.add(name);
      return;
    }
    const s = parsed.data;
    subnets.push({
      at,
      name: s.name,
      cidr: s.cidr ?? undefined,
      gateway: s.gateway ?? undefined,
      dns: s.dns ?? [],
      ntp: s.ntp ?? [],
      vlan: s.vlan ?? undefined,
      mtu: s.mtu ?? undefined,
      ipv6Cidr: s.ipv6_cidr ?? undefined,
      ipv6Gateway: s.ipv6_gateway ?? undefined,
    });
  });

  const hsms: DraftHsm[] = [];
  rawHsms.forEach((value, index) => {
    const hsm = hsmToDraft(value, index, raw.serialSource, problems);
    if (hsm) hsms.push(hsm);
  });

  // Only an empty list is reported here: entries with a wrong shape were reported already.
  if (Array.isArray(doc.hsms) && doc.hsms.length === 0) {
    problems.addRaw(PLAN_ENTRY, "hsms", PLAN_LIST_ORDER, planMessages.noHsms());
  }
  return { owner, planAt, subnets, hsms, rejectedSubnets };
}

function readOwner(
  value: unknown,
  options: PlanOptions,
  at: Location<"owner" | "hsms" | "subnets">,
  problems: ProblemList,
): string | undefined {
  if (value === undefined || value === null) {
    if (options.owner !== undefined) return options.owner;
    problems.add(at, "owner", planMessages.required());
    return undefined;
  }
  if (typeof value !== "string") {
    problems.add(at, "owner", `must be a string, not ${describeValue(value)}`);
    return undefined;
  }
  if (options.owner !== undefined && options.owner.trim() !== value.trim()) {
    problems.add(at, "owner", planMessages.ownerMismatch(value, options.owner));
  }
  return value;
}

function readList(
  value: unknown,
  key: "subnets" | "hsms",
  at: Location<"owner" | "hsms" | "subnets">,
  problems: ProblemList,
): unknown[] {
  if (value === undefined || value === null) {
    problems.add(at, key, planMessages.required());
    return [];
  }
  if (!Array.isArray(value)) {
    problems.add(at, key, `must be a list, not ${describeValue(value)}`);
    return [];
  }
  return value;
}

function hsmToDraft(
  value: unknown,
  index: number,
  serialSource: RawDocument["serialSource"],
  problems: ProblemList,
): DraftHsm | undefined {
  const rawSerial = (value as { serial?: unknown } | null)?.serial;
  const entry = hsmLabel(
    index,
    typeof rawSerial === "number" ? (serialSource(index) ?? rawSerial) : rawSerial,
  );
  const order = HSMS_ORDER + index;
  const parsed = HsmShape.safeParse(value, { reportInput: true });
  if (!parsed.success) {
    reportShapeIssues(parsed.error.issues, entry, order, problems);
    return undefined;
  }
  const h = parsed.data;
  const at: Location<HsmKey> = { entry, order, field: (key) => key };

  let serial: string;
  if (typeof h.serial === "string") serial = h.serial;
  else {
    // YAML reads `serial: 0012345` as the number 12345; its source text keeps the zeros.
    const source = serialSource(index);
    if (source !== undefined && /^\d+$/.test(source)) serial = source;
    else if (source === undefined && Number.isSafeInteger(h.serial) && h.serial >= 0)
      serial = String(h.serial);
    else {
      problems.add(at, "serial", planMessages.numericSerial(source ?? String(h.serial)));
      return undefined;
    }
  }

  const shorthand = h.subnet != null || h.ipv4 != null || h.ipv6 != null;
  let interfaces: DraftInterface[];
  if (h.interfaces != null) {
    if (shorthand) {
      problems.add(at, "", planMessages.interfacesAndShorthand());
      return undefined;
    }
    interfaces = h.interfaces.map((i, k) => ({
      at: {
        entry,
        order,
        field: (key: InterfaceKey | "") => (key ? `interfaces[${k}].${key}` : `interfaces[${k}]`),
      },
      name: i.name,
      subnet: i.subnet,
      ipv4: i.ipv4 ?? undefined,
      ipv6: i.ipv6 ?? undefined,
    }));
  } else if (shorthand) {
    if (h.subnet == null) {
      problems.addRaw(entry, "subnet", order, planMessages.required());
      return undefined;
    }
    interfaces = [
      {
        // The shorthand's fields sit on the HSM entry itself; its name (eth0) is implicit.
        at: { entry, order, field: (key: InterfaceKey | "") => key },
        name: SHORTHAND_INTERFACE,
        subnet: h.subnet,
        ipv4: h.ipv4 ?? undefined,
        ipv6: h.ipv6 ?? undefined,
      },
    ];
  } else {
    problems.add(at, "", planMessages.noInterfaceForm());
    return undefined;
  }
  return { at, serial, hostname: h.hostname, interfaces };
}

function unknownField(allowed: readonly string[]): string {
  return `unknown field (expected one of: ${allowed.join(", ")})`;
}

const SHAPE_KEYS: Record<string, readonly string[]> = {
  subnet: Object.keys(SubnetShape.shape),
  hsm: Object.keys(HsmShape.shape),
  interface: Object.keys(InterfaceShape.shape),
};

/** Turns zod issues into problems in house style (`is required`, `must be a list`, ...). */
function reportShapeIssues(
  issues: readonly z.core.$ZodIssue[],
  entry: string,
  order: number,
  problems: ProblemList,
): void {
  for (const issue of issues) {
    const path = issue.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("");
    const field = path.startsWith(".") ? path.slice(1) : path;
    if (issue.code === "unrecognized_keys") {
      const allowed = entry.startsWith("subnets")
        ? SHAPE_KEYS.subnet!
        : field.startsWith("interfaces")
          ? SHAPE_KEYS.interface!
          : SHAPE_KEYS.hsm!;
      for (const key of issue.keys) {
        problems.addRaw(entry, field ? `${field}.${key}` : key, order, unknownField(allowed));
      }
      continue;
    }
    problems.addRaw(entry, field, order, describeIssue(issue));
  }
}

const TYPE_NAMES: Record<string, string> = {
  string: "a string",
  number: "a number",
  array: "a list",
  object: "a mapping",
};

function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === "invalid_type") {
    if (issue.input === undefined || issue.input === null) return planMessages.required();
    return `must be ${TYPE_NAMES[issue.expected] ?? issue.expected}, not ${describeValue(issue.input)}`;
  }
  if (issue.code === "invalid_union") {
    if (issue.input === undefined || issue.input === null) return planMessages.required();
    return `must be a string or a whole number, not ${describeValue(issue.input)}`;
  }
  return issue.message;
}

function describeValue(value: unknown): string {
  if (value === null || value === undefined) return "empty";
  if (Array.isArray(value)) return "a list";
  switch (typeof value) {
    case "string":
      return `the string ${quote(value)}`;
    case "number":
      return Number.isFinite(value) ? `the number ${value}` : "a non-finite number";
    case "boolean":
      return `${value}`;
    case "object":
      return "a mapping";
    default:
      return typeof value;
  }
}
