/**
 * The agent's audit log (SPEC.md §6): append-only JSON lines, each record chained to the one before
 * by SHA-256, so an edit, a deletion, a reordering or a cut in the middle breaks the chain where it
 * happened. A cut at the end leaves a valid shorter chain; the agent therefore records the newest
 * record's number and hash in its state file (`auditHead`), and `verifyAuditLog` compares against it.
 *
 * Record: {"seq":N,"time":ISO,"event":NAME,"data":{…},"prev":HEX,"hash":HEX} where
 *   hash = SHA-256( canonical JSON of {seq, time, event, data, prev} )
 * (canonical: object keys sorted, no whitespace), prev = the previous record's hash, 64 zeros for the
 * first. Every line is written with one append and fsync'd.
 *
 * Never a PIN: data whose keys look like secrets (pin, puk, password, secret, pin-value) is refused.
 *
 * A torn tail (issue 10 finding 3): a short write (disk full, power cut) leaves one partial line at
 * the end. `open` with `recoverTornTail` keeps those bytes aside in `audit.log.torn-<seq>-<time>`,
 * cuts the file back to the last whole record and appends an `audit-tail-recovered` record (size,
 * SHA-256 and file name of what was kept aside): the chain continues and says what happened. Only a
 * single unterminated line after an intact chain counts as torn; anything else (an edit, a deleted
 * record, several bad lines) is damage that `open` reports, never repairs.
 */
import { createHash } from "node:crypto";
import { constants as fsConstants } from "node:fs";
import { open, readFile, truncate, writeFile } from "node:fs/promises";
import { basename } from "node:path";
import { IntegrityError } from "../errors.js";

export const AUDIT_GENESIS = "0".repeat(64);

export interface AuditRecord {
  readonly seq: number;
  readonly time: string;
  readonly event: string;
  readonly data: Readonly<Record<string, unknown>>;
  readonly prev: string;
  readonly hash: string;
}

/** What `open` repaired: the torn bytes it kept aside and the record that says so. */
export interface AuditRecovery {
  readonly keptAs: string;
  readonly bytes: number;
  readonly sha256: string;
  readonly record: AuditRecord;
}

export interface AuditHead {
  readonly seq: number;
  readonly hash: string;
}

const SECRET_KEY = /^(pin|puk|newpin|new-pin|pin-?value|password|passphrase|secret|management-?key)$/i;
/** Longest line read back; a longer one is damage, not a record. */
const MAX_LINE_BYTES = 64 * 1024;

/** JSON with object keys sorted at every level: one text per value, for hashing. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") {
    if (typeof value === "number" && !Number.isFinite(value))
      throw new TypeError("audit data: non-finite number");
    if (typeof value === "bigint") return JSON.stringify(value.toString());
    return JSON.stringify(value) ?? "null";
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

export function recordHash(record: Omit<AuditRecord, "hash">): string {
  const body = canonicalJson({
    seq: record.seq,
    time: record.time,
    event: record.event,
    data: record.data,
    prev: record.prev,
  });
  return createHash("sha256").update(body).digest("hex");
}

function assertNoSecrets(value: unknown, path: string): void {
  if (value === null || typeof value !== "object") return;
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    if (SECRET_KEY.test(key)) throw new TypeError(`audit data must not carry secrets (${path}${key})`);
    assertNoSecrets(v, `${path}${key}.`);
  }
}

/** An open audit log: appends records after the newest one. One writer per file (the agent's lock). */
export class AuditLog {
  readonly path: string;
  readonly #clock: () => Date;
  #head: AuditHead | undefined;
  #recovered: AuditRecovery | undefined;
  #damage: string | undefined;

  private constructor(path: string, head: AuditHead | undefined, clock: () => Date) {
    this.path = path;
    this.#head = head;
    this.#clock = clock;
  }

  /**
   * Opens (or starts) the log at `path`. The existing log is verified first: appending to a broken
   * chain would hide where it broke, so IntegrityError then.
   */
  static async open(
    path: string,
    options: { clock?: () => Date; expectedHead?: AuditHead; recoverTornTail?: boolean } = {},
  ): Promise<AuditLog> {
    const bytes = await readFile(path).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return Buffer.alloc(0);
      throw error;
    });
    const text = bytes.toString("utf8");
    const clock = options.clock ?? (() => new Date());
    const expected = options.expectedHead ? { expectedHead: options.expectedHead } : {};
    const result = verifyAuditLog(text, expected);
    if (result.ok) {
      // A whole last record whose newline was not written: end the line before the next append.
      if (options.recoverTornTail && bytes.length > 0 && bytes[bytes.length - 1] !== 0x0a) {
        await writeFile(path, "\n", { flag: "a" });
      }
      return new AuditLog(path, result.head, clock);
    }
    const torn = options.recoverTornTail ? tornTail(bytes, expected) : undefined;
    if (!torn) {
      throw new IntegrityError(
        `audit log ${path} is damaged: ${result.problems.map((p) => p.message).join("; ")}`,
      );
    }
    // Keep the torn bytes aside first (a crash here leaves both: the next start repeats the repair).
    const tail = bytes.subarray(torn.keepLength);
    const sha256 = createHash("sha256").update(tail).digest("hex");
    const keptAs = `${path}.torn-${(torn.head?.seq ?? 0) + 1}-${clock().toISOString().replace(/[:.]/g, "")}`;
    await writeFile(keptAs, tail, { mode: 0o600, flag: "wx" });
    await truncate(path, torn.keepLength);
    const log = new AuditLog(path, torn.head, clock);
    const record = await log.append("audit-tail-recovered", {
      keptAs: basename(keptAs),
      bytes: tail.length,
      sha256,
      afterSeq: torn.head?.seq ?? 0,
    });
    log.#recovered = { keptAs, bytes: tail.length, sha256, record };
    return log;
  }

  /**
   * A log that cannot be appended to: damaged beyond a torn tail. The agent still reconciles and
   * re-applies its network (that never depends on the log) but refuses to onboard (IntegrityError).
   */
  static damaged(path: string, message: string): AuditLog {
    const log = new AuditLog(path, undefined, () => new Date());
    log.#damage = message;
    return log;
  }

  /** Why the log cannot be appended to (AuditLog.damaged), or undefined. */
  get damage(): string | undefined {
    return this.#damage;
  }

  /** The repair `open` made (recoverTornTail), if any. */
  get recovered(): AuditRecovery | undefined {
    return this.#recovered;
  }

  get head(): AuditHead | undefined {
    return this.#head;
  }

  /** Appends one record (fsync'd before it returns) and returns it. */
  async append(event: string, data: Record<string, unknown> = {}): Promise<AuditRecord> {
    if (this.#damage !== undefined) throw new IntegrityError(this.#damage);
    assertNoSecrets(data, "");
    // Round-trip through JSON so what is hashed is exactly what a reader parses back.
    const plain = JSON.parse(canonicalJson(data)) as Record<string, unknown>;
    const seq = (this.#head?.seq ?? 0) + 1;
    const unsigned = {
      seq,
      time: this.#clock().toISOString(),
      event,
      data: plain,
      prev: this.#head?.hash ?? AUDIT_GENESIS,
    };
    const record: AuditRecord = { ...unsigned, hash: recordHash(unsigned) };
    const handle = await open(
      this.path,
      fsConstants.O_WRONLY | fsConstants.O_APPEND | fsConstants.O_CREAT,
      0o600,
    );
    try {
      await handle.write(`${canonicalJson(record)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    this.#head = { seq, hash: record.hash };
    return record;
  }
}

export interface AuditProblem {
  /** 1-based line number in the file. */
  readonly line: number;
  readonly message: string;
}

export interface AuditVerification {
  readonly ok: boolean;
  readonly records: readonly AuditRecord[];
  readonly problems: readonly AuditProblem[];
  /** The last record of an unbroken chain from the start. */
  readonly head?: AuditHead;
}

/**
 * Checks the chain: every line a well-formed record, numbered 1, 2, 3…, each `prev` the hash of the
 * line before and each `hash` correct. With `expectedHead`, the log must also reach that record with
 * that hash (a log cut at its end fails here).
 */
export function verifyAuditLog(text: string, options: { expectedHead?: AuditHead } = {}): AuditVerification {
  const problems: AuditProblem[] = [];
  const records: AuditRecord[] = [];
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  let prev = AUDIT_GENESIS;
  let expectedSeq = 1;
  let head: AuditHead | undefined;
  let broken = false;
  for (const [i, line] of lines.entries()) {
    const lineNo = i + 1;
    const record = parseRecord(line);
    if (!record) {
      problems.push({ line: lineNo, message: `line ${lineNo} is not an audit record` });
      broken = true;
      continue;
    }
    records.push(record);
    if (record.seq !== expectedSeq) {
      problems.push({
        line: lineNo,
        message: `line ${lineNo}: record ${record.seq} where ${expectedSeq} belongs (records deleted or reordered)`,
      });
      broken = true;
    }
    if (record.prev !== prev) {
      problems.push({
        line: lineNo,
        message: `line ${lineNo}: does not follow the record before it (chain broken)`,
      });
      broken = true;
    }
    if (recordHash(record) !== record.hash) {
      problems.push({ line: lineNo, message: `line ${lineNo}: content does not match its hash (edited)` });
      broken = true;
    }
    if (!broken) head = { seq: record.seq, hash: record.hash };
    prev = record.hash;
    expectedSeq = record.seq + 1;
  }
  const expected = options.expectedHead;
  if (expected) {
    const at = records.find((r) => r.seq === expected.seq);
    if (!at) {
      problems.push({
        line: lines.length + 1,
        message: `the log ends before record ${expected.seq}, the newest the agent wrote (truncated)`,
      });
    } else if (at.hash !== expected.hash) {
      problems.push({
        line: records.indexOf(at) + 1,
        message: `record ${expected.seq} is not the one the agent wrote`,
      });
    }
  }
  return { ok: problems.length === 0, records, problems, ...(head ? { head } : {}) };
}

/**
 * The torn tail of a damaged log, if that is all the damage is: the text up to the last newline is
 * an intact chain (reaching `expectedHead`), and what follows is one line without its newline.
 */
function tornTail(
  bytes: Uint8Array,
  options: { expectedHead?: AuditHead },
): { keepLength: number; head: AuditHead | undefined } | undefined {
  const cut = bytes.lastIndexOf(0x0a) + 1;
  if (cut === bytes.length) return undefined; // the file ends with a newline: no torn line
  const prefix = verifyAuditLog(Buffer.from(bytes.subarray(0, cut)).toString("utf8"), options);
  if (!prefix.ok) return undefined;
  return { keepLength: cut, head: prefix.head };
}

/** Reads and verifies the log file (a missing file is an empty, valid log). */
export async function readAuditLog(
  path: string,
  options: { expectedHead?: AuditHead } = {},
): Promise<AuditVerification> {
  const text = await readFile(path, "utf8").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return "";
    throw error;
  });
  return verifyAuditLog(text, options);
}

function parseRecord(line: string): AuditRecord | undefined {
  if (line.length > MAX_LINE_BYTES) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) return undefined;
  const r = value as Record<string, unknown>;
  if (
    !Number.isSafeInteger(r.seq) ||
    typeof r.time !== "string" ||
    typeof r.event !== "string" ||
    r.data === null ||
    typeof r.data !== "object" ||
    Array.isArray(r.data) ||
    typeof r.prev !== "string" ||
    typeof r.hash !== "string" ||
    Object.keys(r).length !== 6
  ) {
    return undefined;
  }
  return r as unknown as AuditRecord;
}
