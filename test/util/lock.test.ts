import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { acquireLockFile, withLockFile } from "../../src/util/lock.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "hsm-onboard-lock-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const busy = (pid: number | undefined) => new Error(`busy ${pid}`);
const deadPid = () =>
  Number(spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout.toString());

describe("lock files (src/util/lock.ts)", () => {
  it("is born complete with PID and nonce, refuses a second taker, and release removes it", async () => {
    const file = join(work, "a.lock");
    const release = await acquireLockFile(file, { busy });
    const content = await readFile(file, "utf8");
    expect(content).toMatch(new RegExp(`^${process.pid} [0-9a-f]{16}\\n$`));
    await expect(acquireLockFile(file, { busy })).rejects.toThrow(`busy ${process.pid}`);
    await release();
    expect(await readdir(work)).not.toContain("a.lock");
    await (await acquireLockFile(file, { busy }))();
  });

  it("waits up to waitMs for a holder in this process, so holders run one after the other", async () => {
    const file = join(work, "b.lock");
    const order: string[] = [];
    const hold = (name: string, ms: number) =>
      withLockFile(file, { busy, waitMs: 5_000 }, async () => {
        order.push(`${name}+`);
        await new Promise((r) => setTimeout(r, ms));
        order.push(`${name}-`);
      });
    await Promise.all([hold("a", 40), hold("b", 0), hold("c", 10)]);
    expect(order).toHaveLength(6);
    for (let i = 0; i < 6; i += 2) expect(order[i + 1]).toBe(order[i]!.replace("+", "-"));
  });

  it("respects a live foreign holder (and leaves its lock), breaks a dead one's", async () => {
    const file = join(work, "c.lock");
    const live = spawn(process.execPath, ["-e", "setTimeout(() => {}, 30000)"], { stdio: "ignore" });
    try {
      await writeFile(file, `${live.pid} feedfacefeedface\n`);
      await expect(acquireLockFile(file, { busy, waitMs: 50 })).rejects.toThrow(`busy ${live.pid}`);
      expect(await readFile(file, "utf8")).toBe(`${live.pid} feedfacefeedface\n`);
    } finally {
      live.kill();
    }
    await writeFile(file, `${deadPid()} feedfacefeedface\n`);
    const release = await acquireLockFile(file, { busy });
    expect(await readFile(file, "utf8")).toMatch(new RegExp(`^${process.pid} `));
    await release();
    expect((await readdir(work)).filter((n) => n.startsWith("c.lock"))).toEqual([]);
  });

  it("does not break a stale lock whose breaker died mid-break: names both files", async () => {
    const file = join(work, "d.lock");
    const held = `${deadPid()} 0000000000000000\n`;
    await writeFile(file, held);
    const claim = `${file}.break-${createHash("sha256").update(held).digest("hex").slice(0, 32)}`;
    await writeFile(claim, `${deadPid()} 1111111111111111\n`);
    const error = await acquireLockFile(file, { busy }).catch((e: unknown) => e);
    expect((error as Error).message).toContain(`remove ${file} and ${claim}`);
    expect(await readFile(file, "utf8")).toBe(held);
  });
});
