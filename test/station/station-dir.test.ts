import { spawn, spawnSync } from "node:child_process";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ExitCode, IntegrityError, ReplayError, UsageError, ValidityError } from "../../src/errors.js";
import { issueCrl } from "../../src/pki/crl.js";
import { updateStationCrl } from "../../src/station/crl-update.js";
import { initStation } from "../../src/station/init-station.js";
import { openInventory } from "../../src/station/inventory/open.js";
import { allocateSequence, lastSequence } from "../../src/station/sequence-store.js";
import {
  defaultStationDir,
  readCrls,
  readIssuers,
  readTrustAnchor,
  StationBusyError,
  withStationLock,
} from "../../src/station/station-dir.js";
import { outputLines, runCliInProcess } from "../helpers/cli.js";
import { crlOf, makePki, removeTempDirs, type TestPki, tempDir } from "./fixtures.js";

let pki: TestPki;
beforeAll(async () => {
  pki = await makePki();
});
afterAll(removeTempDirs);

describe("station directory", () => {
  it("defaults to $XDG_DATA_HOME/hsm-onboard/station, else ~/.local/share/hsm-onboard/station", () => {
    expect(defaultStationDir({ XDG_DATA_HOME: "/data" })).toBe("/data/hsm-onboard/station");
    expect(defaultStationDir({ HOME: "/home/alice" })).toBe("/home/alice/.local/share/hsm-onboard/station");
    // A relative XDG_DATA_HOME is invalid (XDG Base Directory spec) and ignored.
    expect(defaultStationDir({ XDG_DATA_HOME: "data", HOME: "/h" })).toBe(
      "/h/.local/share/hsm-onboard/station",
    );
  });

  it("init stores the root (0600 in a 0700 directory); the same root again changes nothing; another needs force", async () => {
    const dir = join(await tempDir(), "s");
    expect(await initStation(dir, pki.root.certificate)).toBe("created");
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await stat(join(dir, "root.pem"))).mode & 0o777).toBe(0o600);
    expect((await readTrustAnchor(dir)).subject).toBe(pki.root.certificate.subject);
    expect(await initStation(dir, pki.root.certificate)).toBe("unchanged");
    await updateStationCrl(dir, pki.crl, { issuers: [pki.tokenCa.certificate] });
    const other = await makePki();
    await expect(initStation(dir, other.root.certificate)).rejects.toThrow(/--force/);
    expect(await initStation(dir, other.root.certificate, { force: true })).toBe("replaced");
    // CRLs and token CAs of the old root are gone.
    expect(await readCrls(dir)).toEqual([]);
    expect(await readIssuers(dir)).toEqual([]);
  });

  it("refuses a trust anchor that is not a self-signed CA", async () => {
    const dir = join(await tempDir(), "s");
    await expect(initStation(dir, pki.tokenCa.certificate)).rejects.toThrow(/not self-signed/);
    await expect(readTrustAnchor(dir)).rejects.toThrow(/station init/);
  });

  it("locks: waits for a holder, removes a lock whose process is gone, gives up after the timeout", async () => {
    const dir = await tempDir();
    const order: string[] = [];
    await Promise.all([
      withStationLock(dir, "x", async () => {
        order.push("a+");
        await new Promise((r) => setTimeout(r, 50));
        order.push("a-");
      }),
      withStationLock(dir, "x", async () => {
        order.push("b+");
        order.push("b-");
      }),
    ]);
    expect(order.join(" ")).toMatch(/^(a\+ a- b\+ b-|b\+ b- a\+ a-)$/);

    // A lock left by a process that exited.
    const dead = spawnSync(process.execPath, [
      "-e",
      "process.stdout.write(String(process.pid))",
    ]).stdout.toString();
    await writeFile(join(dir, ".x.lock"), `${dead}\n`);
    expect(await withStationLock(dir, "x", async () => "ran")).toBe("ran");

    // A lock held by a live process (a child that stays up meanwhile) is respected, and left in place.
    const live = spawn(process.execPath, ["-e", "setTimeout(() => {}, 30000)"], { stdio: "ignore" });
    try {
      await writeFile(join(dir, ".x.lock"), `${live.pid} 0123456789abcdef\n`);
      const error = await withStationLock(dir, "x", async () => "ran", { timeoutMs: 100 }).catch(
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(StationBusyError);
      expect(await readFile(join(dir, ".x.lock"), "utf8")).toBe(`${live.pid} 0123456789abcdef\n`);
    } finally {
      live.kill();
    }

    // This process's own PID on a lock it does not hold is a leftover (PID reuse): broken.
    await writeFile(join(dir, ".x.lock"), `${process.pid}\n`);
    expect(await withStationLock(dir, "x", async () => "ran")).toBe("ran");
    expect(await readdir(dir)).not.toContain(".x.lock");
  });
});

describe("sequence store", () => {
  it("hands out 1, 2, 3 … per owner, persisted", async () => {
    const dir = await tempDir();
    expect(await lastSequence(dir, "ACME Bank")).toBe(0);
    expect(await allocateSequence(dir, "ACME Bank")).toBe(1);
    expect(await allocateSequence(dir, "ACME Bank")).toBe(2);
    expect(await allocateSequence(dir, "Globex")).toBe(1);
    expect(await allocateSequence(dir, "__proto__")).toBe(1);
    expect(await lastSequence(dir, "ACME Bank")).toBe(2);
    // Kept in the station's inventory (issue 14), not in a sequences.json any more.
    const inventory = await openInventory({ stationDir: dir });
    expect(await inventory.lastSequence("ACME Bank")).toBe(2);
    await inventory.close();
    expect((await stat(join(dir, "inventory.sqlite"))).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).not.toContain("sequences.json");
  });

  it("never hands out a number twice under concurrency", async () => {
    const dir = await tempDir();
    const numbers = await Promise.all(Array.from({ length: 25 }, () => allocateSequence(dir, "ACME Bank")));
    expect(new Set(numbers).size).toBe(25);
    expect([...numbers].sort((a, b) => a - b)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
  });

  it("jumps to atLeast, never back", async () => {
    const dir = await tempDir();
    expect(await allocateSequence(dir, "ACME Bank", { atLeast: 10 })).toBe(10);
    expect(await allocateSequence(dir, "ACME Bank", { atLeast: 3 })).toBe(11);
  });

  it("refuses a damaged counter file instead of starting again at 1", async () => {
    const dir = await tempDir();
    await allocateSequence(dir, "ACME Bank");
    await writeFile(join(dir, "sequences.json"), "{ not json");
    await expect(allocateSequence(dir, "ACME Bank")).rejects.toBeInstanceOf(UsageError);
  });
});

describe("CRL updates", () => {
  async function station(): Promise<string> {
    const dir = join(await tempDir(), "s");
    await initStation(dir, pki.root.certificate);
    return dir;
  }

  it("takes a CRL signed by a token CA under the anchor, then only newer ones (older: exit 17)", async () => {
    const dir = await station();
    const first = await updateStationCrl(dir, pki.crl, { issuers: [pki.tokenCa.certificate] });
    expect(first.crlNumber).toBe(1n);
    expect(first.unchanged).toBe(false);
    // The token CA is now known: no --issuer needed.
    const again = await updateStationCrl(dir, pki.crl);
    expect(again.unchanged).toBe(true);
    const newer = await updateStationCrl(dir, await crlOf(pki, 5n));
    expect(newer).toMatchObject({ crlNumber: 5n, previousNumber: 1n, unchanged: false });
    const older = await updateStationCrl(dir, await crlOf(pki, 4n)).catch((e: unknown) => e);
    expect(older).toBeInstanceOf(ReplayError);
    expect((older as ReplayError).exitCode).toBe(ExitCode.replay);
    // Same number, other content: refused too.
    await expect(updateStationCrl(dir, await crlOf(pki, 5n))).rejects.toBeInstanceOf(ReplayError);
    expect((await readCrls(dir)).map((c) => c.crlNumber)).toEqual([5n]);
    expect(await readdir(join(dir, "crls"))).toHaveLength(1);
  });

  it("records every CRL taken in as an event of the inventory's journal; station history shows what it revokes", async () => {
    const dir = await station();
    const files = await tempDir();
    const write = async (name: string, pem: string) => {
      await writeFile(join(files, name), pem);
      return join(files, name);
    };
    const issuer = await write("token-ca.pem", pki.tokenCa.certificate.toString("pem"));
    const first = await write("crl-1.pem", pki.crl.toString("pem"));
    const revoked = pki.deviceCa.certificate; // any certificate of the PKI: its serial is what the CRL lists
    const second = await write("crl-2.pem", (await crlOf(pki, 2n, [revoked])).toString("pem"));
    for (const crl of [first, second, second]) {
      const r = await runCliInProcess([
        "station",
        "update-crl",
        "--crl",
        crl,
        "--issuer",
        issuer,
        "--station-dir",
        dir,
      ]);
      expect(r.exitCode, r.stderr).toBe(0);
    }
    const inventory = await openInventory({ stationDir: dir });
    const events = (await inventory.journal()).filter((j) => j.event === "crl");
    await inventory.close();
    // The same CRL again (unchanged) is not a new event.
    expect(events.map((e) => e.number)).toEqual(["1", "2"]);
    expect(events[0]?.detail).toBe(`"${pki.tokenCa.certificate.subject}" revokes nothing`);
    expect(events[1]?.detail).toBe(
      `"${pki.tokenCa.certificate.subject}" revokes 1 certificate (serial ${revoked.serialNumber.toLowerCase()}), replacing CRL number 1`,
    );
    const history = await runCliInProcess(["station", "history", "--station-dir", dir]);
    expect(history.exitCode, history.stderr).toBe(0);
    const lines = outputLines(history.stdout).filter((l) => / crl +/.test(l));
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(
      new RegExp(
        `crl +token CA CRL number 2 taken in: ".*" revokes 1 certificate \\(serial ${revoked.serialNumber.toLowerCase()}\\), replacing CRL number 1 \\(station `,
      ),
    );
  });

  it("a device CA's CRL (--device) is a crl-device event naming the devices it revokes", async () => {
    const dir = await station();
    const device = { certificate: pki.tokenCa.certificate }; // any serial number will do for the list
    const crl = await issueCrl({
      issuer: pki.deviceCa,
      crlNumber: 3n,
      entries: [{ serialNumber: device.certificate.serialNumber, revokedAt: new Date(Date.now() - 60_000) }],
    });
    await updateStationCrl(dir, crl, { device: true, issuers: [pki.deviceCa.certificate] });
    const inventory = await openInventory({ stationDir: dir });
    const [event] = (await inventory.journal()).filter((j) => j.event === "crl-device");
    const history = await inventory.history();
    await inventory.close();
    expect(event).toMatchObject({
      number: "3",
      detail: `"${pki.deviceCa.certificate.subject}" revokes 1 certificate (serial ${device.certificate.serialNumber.toLowerCase()})`,
    });
    expect(history.find((h) => h.kind === "crl")?.text).toMatch(/^device CA CRL number 3 taken in: /);
  });

  it("refuses a CRL whose token CA is unknown, not under the anchor, or that is out of date", async () => {
    const dir = await station();
    await expect(updateStationCrl(dir, pki.crl)).rejects.toThrow(/--issuer/);
    const other = await makePki();
    const foreign = await updateStationCrl(dir, other.crl, { issuers: [other.tokenCa.certificate] }).catch(
      (e: unknown) => e,
    );
    expect(foreign).toBeInstanceOf(IntegrityError);
    const stale = await crlOf(pki, 2n, [], { now: new Date(Date.now() - 40 * 86_400_000) });
    const error = await updateStationCrl(dir, stale, { issuers: [pki.tokenCa.certificate] }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ValidityError);
    expect(await readCrls(dir)).toEqual([]);
  });

  it("refuses a CRL with a flipped byte (exit 15)", async () => {
    const dir = await station();
    const bytes = new Uint8Array(pki.crl.rawData);
    bytes[bytes.length - 5]! ^= 0x01;
    const { X509Crl } = await import("@peculiar/x509");
    const tampered = new X509Crl(bytes);
    const error = await updateStationCrl(dir, tampered, { issuers: [pki.tokenCa.certificate] }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(IntegrityError);
    expect((error as IntegrityError).exitCode).toBe(15);
  });
});
