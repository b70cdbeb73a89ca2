import { cp, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeCommandApdu } from "../../src/apdu/command.js";
import type { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { findShardFor, verifyManifest } from "../../src/config/manifest.js";
import { loadPlanFile } from "../../src/config/plan.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { decodeShardEntry, shardDigest } from "../../src/config/shard.js";
import {
  CardFullError,
  CardNotTrustedError,
  CardRevokedError,
  ExitCode,
  NotForThisHsmError,
  type OnboardError,
  WrongPinError,
} from "../../src/errors.js";
import { SHARD_OBJECT_FIRST, shardItemName } from "../../src/secure-element/card-layout.js";
import { type OpenedCard, openInProcessCard } from "../../src/secure-element/open-card.js";
import { updateStationCrl } from "../../src/station/crl-update.js";
import { lastSequence } from "../../src/station/sequence-store.js";
import { loadStationTrust, readCrls } from "../../src/station/station-dir.js";
import { base32Decode, enrollTotp, TotpRejectedError, totp } from "../../src/station/totp.js";
import {
  configSigningValidator,
  type WriteProgress,
  writeConfigurationToCard,
} from "../../src/station/write-card.js";
import {
  crlOf,
  EXAMPLES,
  generatedPlan,
  makePki,
  makeStation,
  OFFICER,
  otherOwnerPki,
  PIN,
  personaliseCard,
  removeTempDirs,
  type TestPki,
  WRONG_PIN,
} from "./fixtures.js";

let pki: TestPki;
let rack4: NetworkPlan;
let room40: NetworkPlan;
const opened: OpenedCard[] = [];

beforeAll(async () => {
  pki = await makePki();
  rack4 = await loadPlanFile(join(EXAMPLES, "rack-4.yaml"));
  room40 = await loadPlanFile(join(EXAMPLES, "room-40.yaml"));
});
afterAll(async () => {
  for (const card of opened.splice(0)) await card.dispose();
  await removeTempDirs();
});

async function open(card: VirtualPivCard): Promise<OpenedCard> {
  const c = await openInProcessCard(card, { readerName: "Test reader" });
  opened.push(c);
  return c;
}

async function write(
  card: VirtualPivCard,
  stationDir: string,
  plan: NetworkPlan,
  extra: Partial<Parameters<typeof writeConfigurationToCard>[0]> = {},
) {
  const c = await open(card);
  try {
    return await writeConfigurationToCard({ element: c.element, plan, stationDir, pin: PIN, ...extra });
  } finally {
    await c.dispose();
  }
}

async function failure(promise: Promise<unknown>): Promise<OnboardError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(Error);
  return error as OnboardError;
}

/**
 * A PUT DATA of a vendor object (5C 03 5F FF xx): its last id byte in hex, and whether it deletes
 * (53 00). Only the first command of a chain carries the tag list; later pieces give undefined.
 */
function vendorPut(command: Uint8Array): { id: string; empty: boolean } | undefined {
  const apdu = decodeCommandApdu(command);
  const d = apdu.data;
  if (apdu.ins !== 0xdb || d[0] !== 0x5c || d[1] !== 0x03 || d[2] !== 0x5f || d[3] !== 0xff) return undefined;
  return { id: d[4]!.toString(16).toUpperCase(), empty: d[5] === 0x53 && d[6] === 0x00 };
}

/** Everything on the card, as a snapshot to compare. */
async function snapshot(card: VirtualPivCard): Promise<Record<string, string>> {
  const c = await open(card);
  try {
    const out: Record<string, string> = {};
    for (const item of await c.element.listItems()) {
      out[item.name] = Buffer.from((await c.element.readItem(item.name))!).toString("hex");
    }
    return out;
  } finally {
    await c.dispose();
  }
}

/** Reads the card as an HSM would and checks every planned entry is there, verified. */
async function expectCardCarries(card: VirtualPivCard, stationDir: string, plan: NetworkPlan): Promise<void> {
  const c = await open(card);
  try {
    const trust = await loadStationTrust(stationDir);
    const bytes = (await c.element.readItem("manifest"))!;
    const { manifest, signers } = await verifyManifest(bytes, {
      validateChain: configSigningValidator(trust, new Date()),
    });
    expect(manifest.owner).toBe(plan.owner);
    expect(signers).toHaveLength(1);
    const shards = new Map<number, Uint8Array>();
    for (const ref of manifest.shards) {
      const shard = (await c.element.readItem(shardItemName(ref.objectId)))!;
      expect(Buffer.from(shardDigest(shard))).toEqual(Buffer.from(ref.sha256));
      shards.set(ref.objectId, shard);
    }
    for (const hsm of plan.hsms) {
      const ref = findShardFor(manifest, hsm.serial);
      const entry = decodeShardEntry(shards.get(ref.objectId)!, ref, hsm.serial);
      expect(entry.hsm.hostname).toBe(hsm.hostname);
      expect(entry.hsm.interfaces.map((i) => [i.name, i.ipv4, i.ipv6])).toEqual(
        hsm.interfaces.map((i) => [i.name, i.ipv4, i.ipv6]),
      );
    }
  } finally {
    await c.dispose();
  }
}

describe("writeConfigurationToCard: happy paths", () => {
  it("writes examples/rack-4.yaml, reads it back and verifies it", async () => {
    const { card } = await personaliseCard(pki);
    const stationDir = await makeStation(pki);
    const progress: WriteProgress[] = [];
    const result = await write(card, stationDir, rack4, { onProgress: (p) => progress.push(p) });
    expect(result.owner).toBe("ACME Bank");
    expect(result.officer).toBe(OFFICER);
    expect(result.sequence).toBe(1);
    expect(result.hsms).toBe(4);
    expect(result.shards).toHaveLength(1);
    expect(result.shards[0]).toMatchObject({ item: "shard-0", objectId: SHARD_OBJECT_FIRST, hsms: 4 });
    expect(result.configurationId).toMatch(/^[0-9a-f]{32}$/);
    expect(result.notAfter.getTime() - result.issuedAt.getTime()).toBe(14 * 86_400_000);
    expect(result.notBefore.getTime()).toBeLessThan(result.issuedAt.getTime());
    expect(result.capacity.usedBytes + result.capacity.freeBytes).toBe(result.capacity.totalBytes);
    expect(progress.map((p) => p.step)).toEqual(
      expect.arrayContaining([
        "authenticate-card",
        "verify-pin",
        "allocate-sequence",
        "encode",
        "write",
        "verify",
      ]),
    );
    const lastWrite = progress.filter((p) => p.step === "write").at(-1)!;
    expect(lastWrite.message).toContain("manifest");
    expect(lastWrite.done).toBe(lastWrite.total);
    await expectCardCarries(card, stationDir, rack4);
    console.info(
      `rack-4: ${result.durationMs} ms in-process, manifest ${result.manifestBytes} B, configuration ${result.configurationBytes} B, card ${result.capacity.usedBytes}/${result.capacity.totalBytes} B used`,
    );
  });

  it("writes examples/room-40.yaml, reads it back and verifies it", async () => {
    const { card } = await personaliseCard(pki);
    const stationDir = await makeStation(pki);
    const result = await write(card, stationDir, room40, { validDays: 3 });
    expect(result.hsms).toBe(40);
    expect(result.notAfter.getTime() - result.issuedAt.getTime()).toBe(3 * 86_400_000);
    await expectCardCarries(card, stationDir, room40);
    console.info(
      `room-40: ${result.durationMs} ms in-process, ${result.shards.length} shard(s), manifest ${result.manifestBytes} B, configuration ${result.configurationBytes} B, card ${result.capacity.usedBytes}/${result.capacity.totalBytes} B used`,
    );
  });

  it("fills a card with a 900-HSM plan across several shards", async () => {
    const { card } = await personaliseCard(pki);
    const stationDir = await makeStation(pki);
    const plan = generatedPlan(900);
    const result = await write(card, stationDir, plan);
    expect(result.shards.length).toBeGreaterThan(1);
    await expectCardCarries(card, stationDir, plan);
    console.info(
      `900 HSMs: ${result.durationMs} ms, ${result.shards.length} shards, ${result.configurationBytes} B (${(result.configurationBytes / 900).toFixed(1)} B/HSM), card ${result.capacity.usedBytes}/${result.capacity.totalBytes} B used`,
    );
  });
});

describe("writeConfigurationToCard: refusals", () => {
  it("refuses a card certified by another PKI (exit 11) before asking for the PIN", async () => {
    const other = await makePki();
    const { card } = await personaliseCard(other);
    const stationDir = await makeStation(pki);
    let asked = false;
    const error = await failure(
      write(card, stationDir, rack4, {
        pin: async () => {
          asked = true;
          return PIN;
        },
      }),
    );
    expect(error).toBeInstanceOf(CardNotTrustedError);
    expect(error.exitCode).toBe(ExitCode.cardNotTrusted);
    expect(asked).toBe(false);
  });

  it("refuses a revoked card (exit 12)", async () => {
    const { card, certificates } = await personaliseCard(pki);
    const crl = await crlOf(pki, 2n, [certificates.cardAuthentication]);
    const stationDir = await makeStation(pki, crl);
    const error = await failure(write(card, stationDir, rack4));
    expect(error).toBeInstanceOf(CardRevokedError);
    expect(error.exitCode).toBe(ExitCode.cardRevoked);
  });

  it("refuses a card whose 9C certificate alone is revoked (exit 12)", async () => {
    const { card, certificates } = await personaliseCard(pki);
    const stationDir = await makeStation(pki, await crlOf(pki, 2n, [certificates.signing]));
    expect((await failure(write(card, stationDir, rack4))).exitCode).toBe(ExitCode.cardRevoked);
  });

  it("refuses card A's certificates copied onto card B through the live challenge (exit 11)", async () => {
    const a = await personaliseCard(pki);
    const b = await personaliseCard(pki, { installInstead: () => a.identity });
    const stationDir = await makeStation(pki);
    const error = await failure(write(b.card, stationDir, rack4));
    expect(error).toBeInstanceOf(CardNotTrustedError);
    expect(error.message).toMatch(/challenge/);
    // The genuine card A still works.
    expect((await write(a.card, stationDir, rack4)).sequence).toBe(1);
  });

  it("refuses a card whose 9C certificate belongs to another card's key, before writing anything (exit 11)", async () => {
    const a = await personaliseCard(pki);
    const b = await personaliseCard(pki, {
      installInstead: (own) => ({ ...own, signing: a.identity.signing }),
    });
    const stationDir = await makeStation(pki);
    const before = await snapshot(b.card);
    const error = await failure(write(b.card, stationDir, rack4));
    expect(error).toBeInstanceOf(CardNotTrustedError);
    expect(error.message).toMatch(/9C/);
    expect(await snapshot(b.card)).toEqual(before);
  });

  it("a wrong PIN is exit 13 with the tries left, and nothing is written", async () => {
    const { card } = await personaliseCard(pki);
    const stationDir = await makeStation(pki);
    const before = await snapshot(card);
    let triesShown = -2;
    const error = await failure(
      write(card, stationDir, rack4, {
        pin: async (request) => {
          triesShown = request.triesLeft;
          return WRONG_PIN;
        },
      }),
    );
    expect(triesShown).toBe(3);
    expect(error).toBeInstanceOf(WrongPinError);
    expect(error.exitCode).toBe(ExitCode.wrongPin);
    expect((error as WrongPinError).triesLeft).toBe(2);
    expect(error.message).toBe("wrong PIN, 2 tries left");
    expect(await snapshot(card)).toEqual(before);
    expect(await lastSequence(stationDir, "ACME Bank")).toBe(0);
  });

  it("refuses the plan of another owner (exit 16) without spending a PIN try", async () => {
    // A genuine card of another owner under the same root (its own token CA, known to the station).
    const globex = await otherOwnerPki(pki, "Globex Corporation");
    const { card } = await personaliseCard(globex, { owner: "Globex Corporation" });
    const stationDir = await makeStation(pki);
    await updateStationCrl(stationDir, globex.crl, { issuers: [globex.tokenCa.certificate] });
    const error = await failure(write(card, stationDir, rack4));
    expect(error).toBeInstanceOf(NotForThisHsmError);
    expect(error.exitCode).toBe(ExitCode.notForThisHsm);
    expect(error.message).toContain('"ACME Bank"');
    expect(error.message).toContain('"Globex Corporation"');
    const c = await open(card);
    expect(await c.element.pinTriesLeft()).toBe(3);
    await c.dispose();
  });

  it("refuses a plan too big for the card (exit 22) and writes nothing — a configuration already there stays intact", async () => {
    const { card } = await personaliseCard(pki);
    const stationDir = await makeStation(pki);
    await write(card, stationDir, rack4);
    const before = await snapshot(card);
    const error = await failure(write(card, stationDir, generatedPlan(3000)));
    expect(error).toBeInstanceOf(CardFullError);
    expect(error.exitCode).toBe(ExitCode.cardFull);
    expect(error.message).toMatch(/nothing was written/);
    expect(await snapshot(card)).toEqual(before);
    await expectCardCarries(card, stationDir, rack4);
  });
});

describe("sequence numbers", () => {
  it("increase with every write and are never reused, also after failed writes", async () => {
    const { card } = await personaliseCard(pki);
    const stationDir = await makeStation(pki);
    expect((await write(card, stationDir, rack4)).sequence).toBe(1);
    expect((await write(card, stationDir, room40)).sequence).toBe(2);
    // Too big for the card (issue 13): refused before the PIN and before a number is allocated.
    let pinAsked = false;
    const tooBig = await failure(
      write(card, stationDir, generatedPlan(3000), {
        pin: async () => {
          pinAsked = true;
          return PIN;
        },
      }),
    );
    expect(tooBig.message).toMatch(/3000 HSMs need 2 cards .*station write writes them as a card set/);
    expect(pinAsked).toBe(false);
    expect(await lastSequence(stationDir, "ACME Bank")).toBe(2);
    const next = await write(card, stationDir, rack4);
    expect(next.sequence).toBe(3);
    expect(next.previousSequence).toBe(2);
  });

  it("a whole station directory restored from an older backup (SQLite inventory, journal and all) resynchronises from the card: never a repeated number", async () => {
    const { card } = await personaliseCard(pki);
    const stationDir = await makeStation(pki);
    expect((await write(card, stationDir, rack4)).sequence).toBe(1);
    const backup = `${stationDir}.backup`;
    await cp(stationDir, backup, { recursive: true });
    expect((await write(card, stationDir, rack4)).sequence).toBe(2);
    expect((await write(card, stationDir, rack4)).sequence).toBe(3);
    // The backup put back: inventory.sqlite and journal.log both say 1 — nothing local knows 2 and 3.
    await rm(stationDir, { recursive: true });
    await cp(backup, stationDir, { recursive: true });
    expect(await lastSequence(stationDir, "ACME Bank")).toBe(1);
    // The card still carries sequence 3: the write goes above it, and the inventory is raised with it.
    const next = await write(card, stationDir, rack4);
    expect(next.previousSequence).toBe(3);
    expect(next.sequence).toBe(4);
    expect(await lastSequence(stationDir, "ACME Bank")).toBe(4);
  });

  it("go above a verified configuration already on the card (another station of the same owner)", async () => {
    const { card } = await personaliseCard(pki);
    const first = await makeStation(pki);
    for (let i = 0; i < 3; i++) await write(card, first, rack4);
    const second = await makeStation(pki);
    const result = await write(card, second, rack4);
    expect(result.previousSequence).toBe(3);
    expect(result.sequence).toBe(4);
    expect(await lastSequence(second, "ACME Bank")).toBe(4);
  });
});

describe("card writes", () => {
  it("deletes the old manifest first and writes the new one last; stale shards and receipts go, receipts archived", async () => {
    const log: string[] = [];
    const { card } = await personaliseCard(pki, {
      intercept: (command, next) => {
        const put = vendorPut(command);
        if (put) log.push(`${put.empty ? "delete" : "put"} ${put.id}`);
        return next(command);
      },
    });
    const stationDir = await makeStation(pki);
    const big = await write(card, stationDir, generatedPlan(500));
    expect(big.shards.length).toBeGreaterThan(1);
    // An HSM's receipt on the card.
    const c = await open(card);
    await c.element.verifyPin(PIN);
    await c.element.writeItem("receipt-0", Uint8Array.of(0x80));
    await c.dispose();

    log.length = 0;
    const small = await write(card, stationDir, rack4);
    expect(log[0]).toBe("delete 10");
    expect(log.at(-1)).toBe("put 10");
    const shardWrites = log.filter((l) => l.startsWith("put 2"));
    expect(shardWrites).toEqual(["put 20"]);
    expect(log.indexOf("delete 80")).toBeGreaterThan(0);
    expect(small.removed).toEqual(
      expect.arrayContaining(["receipt-0", ...big.shards.slice(1).map((s) => s.item)]),
    );
    const items = Object.keys(await snapshot(card));
    expect(items.filter((n) => n.startsWith("shard-"))).toEqual(["shard-0"]);
    expect(items.filter((n) => n.startsWith("receipt-"))).toEqual([]);
    expect(small.archivedReceipts).toBeDefined();
    const archive = JSON.parse(await readFile(small.archivedReceipts!, "utf8"));
    expect(archive.items["receipt-0"]).toBe(Buffer.from([0x80]).toString("base64"));
    expect(archive.previousConfiguration.sequence).toBe(big.sequence);
    await expectCardCarries(card, stationDir, rack4);
  });

  it("a write that fails midway leaves no manifest at all (never one pointing at other shards)", async () => {
    let failShard = false;
    const { card } = await personaliseCard(pki, {
      intercept: (command, next) => {
        const put = vendorPut(command);
        // A memory failure on the first shard of the new configuration.
        if (failShard && put?.id === "20" && !put.empty) return Uint8Array.of(0x65, 0x81);
        return next(command);
      },
    });
    const stationDir = await makeStation(pki);
    await write(card, stationDir, rack4);
    failShard = true;
    await failure(write(card, stationDir, room40));
    failShard = false;
    const items = await snapshot(card);
    expect(items.manifest).toBeUndefined();
    expect(await lastSequence(stationDir, "ACME Bank")).toBe(2);
    expect((await write(card, stationDir, room40)).sequence).toBe(3);
  });
});

describe("certificates item", () => {
  it("a card without its token CA certificate is completed from the station's known token CAs", async () => {
    const { card } = await personaliseCard(pki, { installInstead: (own) => ({ ...own, intermediates: [] }) });
    const stationDir = await makeStation(pki); // knows the token CA from update-crl
    expect((await snapshot(card)).certificates).toBeUndefined();
    await write(card, stationDir, rack4);
    expect((await snapshot(card)).certificates).toBe(
      Buffer.from(pki.tokenCa.certificate.rawData).toString("hex"),
    );
    await expectCardCarries(card, stationDir, rack4);
  });
});

describe("CRLs between stations", () => {
  it("a station takes in a newer CRL from the card instead of writing its older one over it; an older one on the card is replaced", async () => {
    const { card } = await personaliseCard(pki);
    const behind = await makeStation(pki);
    const ahead = await makeStation(pki, await crlOf(pki, 3n));
    await write(card, ahead, rack4);
    const progress: WriteProgress[] = [];
    await write(card, behind, rack4, { onProgress: (p) => progress.push(p) });
    expect(progress[0]!.message).toMatch(/newer CRL .*CRL 3 \(was 1\)/);
    expect((await readCrls(behind)).map((c) => c.crlNumber)).toEqual([3n]);
    const onCard = await snapshot(card);
    expect(onCard.crl).toBe(Buffer.from((await readCrls(ahead))[0]!.crl.rawData).toString("hex"));

    // The other way round: the station's newer CRL replaces the card's older one.
    const newest = await makeStation(pki, await crlOf(pki, 4n));
    await write(card, newest, rack4);
    expect((await snapshot(card)).crl).toBe(
      Buffer.from((await readCrls(newest))[0]!.crl.rawData).toString("hex"),
    );
  });
});

describe("TOTP second factor", () => {
  it("is required once the officer is enrolled: missing or wrong code is exit 13, a code is accepted once", async () => {
    const { card } = await personaliseCard(pki);
    const stationDir = await makeStation(pki);
    const enrolment = await enrollTotp(stationDir, OFFICER);
    expect(base32Decode(enrolment.uri.match(/secret=([A-Z2-7]+)/)![1]!)).toEqual(enrolment.secret);

    const missing = await failure(write(card, stationDir, rack4));
    expect(missing).toBeInstanceOf(TotpRejectedError);
    expect(missing.exitCode).toBe(13);

    const now = new Date();
    const code = totp(enrolment.secret, Math.floor(now.getTime() / 1000));
    const wrong = code === "000000" ? "111111" : "000000";
    expect((await failure(write(card, stationDir, rack4, { now, totpCode: wrong }))).exitCode).toBe(13);

    let asked = "";
    const ok = await write(card, stationDir, rack4, {
      now,
      totpCode: async (request) => {
        asked = request.officer;
        return code;
      },
    });
    expect(asked).toBe(OFFICER);
    expect(ok.sequence).toBe(1);
    const replay = await failure(write(card, stationDir, rack4, { now, totpCode: code }));
    expect(replay).toBeInstanceOf(TotpRejectedError);
    expect(replay.message).toMatch(/already used/);
  });

  it("is not asked of an officer who is not enrolled", async () => {
    const { card } = await personaliseCard(pki, { officer: "Bob Example" });
    const stationDir = await makeStation(pki);
    await enrollTotp(stationDir, OFFICER);
    const result = await write(card, stationDir, rack4, {
      totpCode: async () => {
        throw new Error("must not be asked");
      },
    });
    expect(result.officer).toBe("Bob Example");
  });
});

describe("station directory after writes", () => {
  it("keeps the token CA learned from the card and files of mode 0600", async () => {
    const { card } = await personaliseCard(pki);
    const stationDir = await makeStation(pki);
    await write(card, stationDir, rack4);
    const { stat } = await import("node:fs/promises");
    for (const name of ["root.pem", "inventory.sqlite", "journal.log", "station.json"]) {
      expect((await stat(join(stationDir, name))).mode & 0o777).toBe(0o600);
    }
    expect(await readdir(join(stationDir, "issuers"))).toHaveLength(1);
    expect((await stat(stationDir)).mode & 0o777).toBe(0o700);
  });
});
