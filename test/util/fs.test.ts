import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { UsageError } from "../../src/errors.js";
import { atomicWriteFile, atomicWriteFileSync, readJsonFile } from "../../src/util/fs.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "hsm-onboard-util-fs-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("atomicWriteFile", () => {
  it("replaces a file whole, with the requested mode, leaving no temporary file", async () => {
    const dir = join(work, "atomic");
    await mkdir(dir, { recursive: true });
    const file = join(dir, "secret.pem");
    await writeFile(file, "old");
    await atomicWriteFile(file, "new", 0o600);
    expect(await readFile(file, "utf8")).toBe("new");
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    await atomicWriteFile(file, new Uint8Array([1, 2, 3]));
    expect((await stat(file)).mode & 0o777).toBe(0o644);
    expect(await readdir(dir)).toEqual(["secret.pem"]);
  });

  it("the synchronous variant does the same with mode 0600 by default", async () => {
    const dir = join(work, "atomic-sync");
    await mkdir(dir, { recursive: true });
    const file = join(dir, "card.json");
    atomicWriteFileSync(file, "one");
    atomicWriteFileSync(file, new Uint8Array([0x74, 0x77, 0x6f]));
    expect(await readFile(file, "utf8")).toBe("two");
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(["card.json"]);
  });
});

describe("readJsonFile", () => {
  const schema = z.object({ version: z.literal(1), name: z.string() });
  const dir = () => join(work, "json");

  beforeAll(async () => {
    await mkdir(dir(), { recursive: true });
  });

  it("returns the checked value", async () => {
    const file = join(dir(), "good.json");
    await writeFile(file, '{ "version": 1, "name": "rack-4" }');
    await expect(readJsonFile(file, schema, { missing: () => undefined })).resolves.toEqual({
      version: 1,
      name: "rack-4",
    });
  });

  it("an absent file is what `missing` says: a value or a throw", async () => {
    const file = join(dir(), "absent.json");
    await expect(readJsonFile(file, schema, { missing: () => "none" as const })).resolves.toBe("none");
    const refusal = readJsonFile(file, schema, {
      missing: () => {
        throw new UsageError("no state here");
      },
    });
    await expect(refusal).rejects.toThrow("no state here");
  });

  it("not JSON: UsageError naming the file", async () => {
    const file = join(dir(), "torn.json");
    await writeFile(file, '{ "version": 1, "na');
    const error = await readJsonFile(file, schema, { missing: () => undefined }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UsageError);
    expect((error as Error).message).toBe(`${file} is not valid JSON`);
  });

  it("not of the schema: UsageError naming the file, what it should be and the first issue", async () => {
    const file = join(dir(), "foreign.json");
    await writeFile(file, '{ "version": 2, "name": "x" }');
    const named = await readJsonFile(file, schema, { what: "agent state", missing: () => undefined }).catch(
      (e: unknown) => e,
    );
    expect(named).toBeInstanceOf(UsageError);
    expect((named as Error).message).toMatch(new RegExp(`^${file} is not a valid agent state \\(version: `));
    await writeFile(file, "[]");
    const plain = await readJsonFile(file, schema, { missing: () => undefined }).catch((e: unknown) => e);
    expect((plain as Error).message).toMatch(new RegExp(`^${file} is not valid \\(top level: `));
  });

  it("another read failure goes through `unreadable`, or is rethrown as it is", async () => {
    const path = join(dir(), "a-directory");
    await mkdir(path, { recursive: true });
    const raw = await readJsonFile(path, schema, { missing: () => undefined }).catch((e: unknown) => e);
    expect((raw as NodeJS.ErrnoException).code).toBe("EISDIR");
    const wrapped = await readJsonFile(path, schema, {
      missing: () => undefined,
      unreadable: (p, e) => new UsageError(`cannot read ${p}: ${e.code}`),
    }).catch((e: unknown) => e);
    expect(wrapped).toBeInstanceOf(UsageError);
    expect((wrapped as Error).message).toBe(`cannot read ${path}: EISDIR`);
    await chmod(path, 0o755);
  });
});
