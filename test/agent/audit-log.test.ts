/**
 * The audit log's hash chain: intact logs verify; an edit, a deletion, a reordering, a cut in the
 * middle and a cut at the end (against the head the agent remembers) are each found and located.
 */
import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  AUDIT_GENESIS,
  AuditLog,
  canonicalJson,
  readAuditLog,
  verifyAuditLog,
} from "../../src/agent/audit-log.js";
import { IntegrityError } from "../../src/errors.js";
import { tempDir } from "./fixtures.js";

let dir: { dir: string; cleanup: () => Promise<void> };
let path: string;
beforeEach(async () => {
  dir = await tempDir("hsm-audit-");
  path = join(dir.dir, "audit.log");
});
afterEach(async () => {
  await dir.cleanup();
});

async function writeLog(count: number): Promise<{ log: AuditLog; lines: string[] }> {
  let t = Date.parse("2030-01-01T00:00:00Z");
  const clock = () => {
    t += 1000;
    return new Date(t);
  };
  const log = await AuditLog.open(path, { clock });
  for (let i = 1; i <= count; i++) {
    await log.append(i === 1 ? "factory-init" : "configured", {
      serial: "1234567",
      sequence: i,
      addresses: [`198.51.100.${i}/24`],
    });
  }
  return { log, lines: (await readFile(path, "utf8")).trimEnd().split("\n") };
}

const rewrite = (lines: string[]) => writeFile(path, `${lines.join("\n")}\n`);

describe("audit log", () => {
  test("records are chained JSON lines that verify, from genesis to the head", async () => {
    const { log, lines } = await writeLog(5);
    expect(lines).toHaveLength(5);
    const first = JSON.parse(lines[0]!);
    expect(first).toMatchObject({ seq: 1, event: "factory-init", prev: AUDIT_GENESIS });
    expect(JSON.parse(lines[1]!).prev).toBe(first.hash);
    const result = await readAuditLog(path, { expectedHead: log.head! });
    expect(result).toMatchObject({ ok: true, problems: [], head: log.head });
    expect(result.records).toHaveLength(5);
    // Reopening continues the chain.
    const reopened = await AuditLog.open(path, { expectedHead: log.head! });
    await reopened.append("reapplied", { sequence: 5 });
    expect((await readAuditLog(path)).ok).toBe(true);
  });

  test.each([
    [
      "an edited record",
      (lines: string[]) => {
        lines[2] = lines[2]!.replace("198.51.100.3/24", "198.51.100.99/24");
      },
      /line 3: content does not match its hash \(edited\)/,
    ],
    [
      "a deleted record in the middle",
      (lines: string[]) => void lines.splice(2, 1),
      /line 3: record 4 where 3 belongs/,
    ],
    [
      "two records swapped",
      (lines: string[]) => {
        [lines[1], lines[2]] = [lines[2]!, lines[1]!];
      },
      /line 2: record 3 where 2 belongs/,
    ],
    [
      "a record that is not JSON",
      (lines: string[]) => {
        lines[3] = "{garbage";
      },
      /line 4 is not an audit record/,
    ],
    [
      "a record re-hashed after an edit (the next one no longer follows it)",
      (lines: string[]) => {
        const r = JSON.parse(lines[1]!);
        r.data.sequence = 99;
        const { hash: _old, ...rest } = r;
        // Whoever edits can recompute this record's hash, but not the chain after it.
        r.hash = "f".repeat(64);
        lines[1] = canonicalJson({ ...rest, hash: r.hash });
      },
      /line 2: content does not match its hash|line 3: does not follow/,
    ],
  ])("finds %s", async (_what, tamper, message) => {
    const { log, lines } = await writeLog(5);
    tamper(lines);
    await rewrite(lines);
    const result = await readAuditLog(path, { expectedHead: log.head! });
    expect(result.ok).toBe(false);
    expect(result.problems.map((p) => p.message).join("\n")).toMatch(message);
    await expect(AuditLog.open(path)).rejects.toBeInstanceOf(IntegrityError);
  });

  test("finds a log cut at its end, against the head the agent remembers", async () => {
    const { log, lines } = await writeLog(5);
    await rewrite(lines.slice(0, 3));
    expect((await readAuditLog(path)).ok).toBe(true); // the chain alone cannot tell
    const result = await readAuditLog(path, { expectedHead: log.head! });
    expect(result.ok).toBe(false);
    expect(result.problems[0]?.message).toMatch(/ends before record 5.*truncated/);
  });

  test("refuses to record secrets", async () => {
    const log = await AuditLog.open(path);
    await expect(log.append("x", { pin: "123456" })).rejects.toThrow(/secrets/);
    await expect(log.append("x", { card: { "pin-value": "1" } })).rejects.toThrow(/secrets/);
    expect(verifyAuditLog(await readFile(path, "utf8").catch(() => "")).records).toEqual([]);
  });
});

describe("torn tail recovery (issue 10 finding 3)", () => {
  test("every cut inside the last record: kept aside byte for byte, cut back, recorded, the chain continues", async () => {
    const { lines } = await writeLog(3);
    const whole = await readFile(path);
    const lastStart = whole.length - Buffer.byteLength(`${lines[2]}\n`);
    const headBefore = verifyAuditLog(lines.slice(0, 2).join("\n")).head!;
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: lastStart + 1, max: whole.length - 2 }), async (cut) => {
        await writeFile(path, whole.subarray(0, cut));
        for (const name of (await readdir(dir.dir)).filter((n) => n.includes(".torn-"))) {
          await rm(join(dir.dir, name));
        }
        const log = await AuditLog.open(path, { recoverTornTail: true, expectedHead: headBefore });
        const recovered = log.recovered!;
        expect(recovered.bytes).toBe(cut - lastStart);
        expect(await readFile(recovered.keptAs)).toEqual(whole.subarray(lastStart, cut));
        const after = await readAuditLog(path, { expectedHead: log.head! });
        expect(after.ok, JSON.stringify(after.problems)).toBe(true);
        expect(after.records.map((r) => r.event)).toEqual([
          "factory-init",
          "configured",
          "audit-tail-recovered",
        ]);
        expect(after.records[2]!.data).toMatchObject({ afterSeq: 2, bytes: cut - lastStart });
      }),
      { numRuns: 40 },
    );
  });

  test("a whole last record without its newline is kept, and the next record starts on its own line", async () => {
    await writeLog(2);
    const whole = await readFile(path);
    await writeFile(path, whole.subarray(0, whole.length - 1));
    const log = await AuditLog.open(path, { recoverTornTail: true });
    expect(log.recovered).toBeUndefined();
    await log.append("reapplied", {});
    const after = await readAuditLog(path);
    expect(after.ok).toBe(true);
    expect(after.records).toHaveLength(3);
  });

  test("damage that is not a torn tail is never repaired: edited line, two bad lines, a cut before the remembered head", async () => {
    const { lines } = await writeLog(3);
    const head = verifyAuditLog(lines.join("\n")).head!;
    const cases = [
      `${lines[0]!.replace("factory-init", "factory-inix")}\n${lines[1]}\n${lines[2]}\n`,
      `${lines[0]}\n${lines[1]}\ngarbage\n{"torn`,
      `${lines[0]}\n${lines[1]}\n{"torn`, // cuts record 3, which the agent remembers as written
    ];
    for (const text of cases) {
      await writeFile(path, text);
      await expect(AuditLog.open(path, { recoverTornTail: true, expectedHead: head })).rejects.toThrow(
        IntegrityError,
      );
      expect(await readFile(path, "utf8")).toBe(text);
    }
  });
});
