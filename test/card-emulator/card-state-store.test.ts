import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  FileCardStateStore,
  MemoryCardStateStore,
  parseCardState,
} from "../../src/card-emulator/card-state-store.js";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { MalformedError } from "../../src/errors.js";
import { atomicWriteFileSync } from "../../src/util/fs.js";

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "card-state-"));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("card state store", () => {
  it("initialises a factory-fresh card into the file and loads it back", () => {
    const path = join(tmp(), "card.json");
    const card = VirtualPivCard.fromFile(path, { serial: 7654321 });
    const saved = new FileCardStateStore(path).load()!;
    expect(saved.serial).toBe(7654321);
    expect(saved.pin).toEqual({ value: "313233343536ffff", tries: 3, triesLeft: 3, isDefault: true });
    expect(saved.puk.value).toBe(Buffer.from("12345678").toString("hex"));
    expect(saved.managementKey).toMatchObject({
      type: "3des",
      key: "010203040506070801020304050607080102030405060708",
    });
    expect(Object.keys(saved.objects).sort()).toEqual(["5FC102", "5FC107"]);
    expect(card.serial).toBe(7654321);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it("replaces the file atomically and leaves no temporary file", () => {
    const dir = tmp();
    const path = join(dir, "state.json");
    atomicWriteFileSync(path, "one");
    atomicWriteFileSync(path, "two");
    expect(readFileSync(path, "utf8")).toBe("two");
    expect(readdirSync(dir)).toEqual(["state.json"]);
  });

  it("cleans up and throws when the rename cannot happen", () => {
    const dir = tmp();
    const path = join(dir, "state.json");
    mkdirSync(path); // a directory where the file should go: rename fails
    expect(() => atomicWriteFileSync(path, "new")).toThrow();
    expect(readdirSync(dir)).toEqual(["state.json"]);
  });

  it("refuses a corrupt or foreign state file with MalformedError", () => {
    const dir = tmp();
    const path = join(dir, "bad.json");
    writeFileSync(path, "{not json");
    expect(() => new FileCardStateStore(path).load()).toThrow(MalformedError);
    writeFileSync(path, JSON.stringify({ format: "something-else" }));
    expect(() => VirtualPivCard.fromFile(path)).toThrow(MalformedError);
    expect(() => parseCardState({})).toThrow(MalformedError);
    expect(new FileCardStateStore(join(dir, "absent.json")).load()).toBeUndefined();
  });

  it("memory store hands out copies", () => {
    const store = new MemoryCardStateStore();
    new VirtualPivCard({ store });
    const a = store.load()!;
    a.pin.triesLeft = 0;
    expect(store.load()!.pin.triesLeft).toBe(3);
  });
});
