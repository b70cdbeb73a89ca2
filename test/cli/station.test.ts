/**
 * `hsm-onboard station …` through the CLI, in-process. `station write` and `station receipts` reach
 * the card the way the real CLI does (the opener HSM_ONBOARD_VIRTUAL_CARD injects), pointed at a virtual card state file with
 * HSM_ONBOARD_VIRTUAL_CARD instead of PC/SC; PC/SC itself is the default (see
 * test/station/open-card.test.ts for that path over a substitute binding).
 */
import { copyFile, cp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openVirtualCardFile } from "../../src/card-emulator/open-virtual-card.js";
import { VIRTUAL_CARD_ENV } from "../../src/cli/card-opener.js";
import { findShardFor, type Manifest, verifyManifest } from "../../src/config/manifest.js";
import { appendReceipt, signReceipt } from "../../src/config/receipt.js";
import { decodeShardEntry, networkStateDigest } from "../../src/config/shard.js";
import { createSoftwareSigner } from "../../src/crypto/signer.js";
import { createDeviceIdentity } from "../../src/pki/issue.js";
import { exportPrivateKeyPem } from "../../src/pki/keys.js";
import { type LoadedPki, loadPkiDirectory } from "../../src/pki/pki-store.js";
import { shardItemName } from "../../src/secure-element/card-layout.js";
import type { PivElement } from "../../src/secure-element/piv-element.js";
import { updateStationCrl } from "../../src/station/crl-update.js";
import { markPath } from "../../src/station/sequence-mark.js";
import { loadStationTrust } from "../../src/station/station-dir.js";
import { base32Decode, totp } from "../../src/station/totp.js";
import { configSigningValidator } from "../../src/station/write-card.js";
import { runCliInProcess } from "../helpers/cli.js";
import {
  EXAMPLES,
  otherOwnerPki,
  PIN,
  personaliseCardFile,
  plaintextWrite,
  removeTempDirs,
  stationInitArgs,
  tempDir,
  WRONG_PIN,
} from "../station/fixtures.js";

let root: string;
let pki: LoadedPki;

beforeAll(async () => {
  root = await tempDir("cli");
  const made = await runCliInProcess(["pki", "init", "--out", "pki", "--owner", "ACME Bank"], { cwd: root });
  expect(made.exitCode).toBe(0);
  pki = await loadPkiDirectory(join(root, "pki"));
});
afterAll(removeTempDirs);

const run = (argv: string[], options: { stdin?: string; card?: string } = {}) =>
  runCliInProcess(argv, {
    cwd: root,
    ...(options.stdin === undefined ? {} : { stdin: options.stdin }),
    env: options.card ? { [VIRTUAL_CARD_ENV]: options.card } : {},
  });

let counter = 0;
/** A station directory set up through the CLI, with the token CA's CRL. */
async function station(): Promise<string> {
  const dir = `station-${++counter}`;
  const init = await run(stationInitArgs(dir));
  expect(init.exitCode, init.stderr).toBe(0);
  return dir;
}

/** The manifest on the card, verified against the station's trust as `station write` verifies it. */
async function verifiedManifest(element: PivElement, dir: string): Promise<Manifest> {
  const trust = await loadStationTrust(join(root, dir));
  const { manifest } = await verifyManifest((await element.readItem("manifest"))!, {
    validateChain: configSigningValidator(trust, new Date()),
  });
  return manifest;
}

/**
 * The receipt HSM `serial` signs for the configuration on the card, as the agent does (a device
 * identity issued for it by the device CA), dated 2030-03-17T17:46:40Z.
 */
async function receiptOf(
  element: PivElement,
  manifest: Manifest,
  serial: string,
  options: { dryRun?: boolean } = {},
): Promise<Uint8Array> {
  const ref = findShardFor(manifest, serial);
  const entry = decodeShardEntry((await element.readItem(shardItemName(ref.objectId)))!, ref, serial);
  const device = await createDeviceIdentity({ deviceCa: pki.deviceCa, serial });
  return signReceipt(
    {
      serial,
      configurationId: manifest.configurationId,
      sequence: manifest.sequence,
      stateDigest: networkStateDigest(entry),
      time: 1_900_000_000,
      outcome: 0,
      ...(options.dryRun ? { dryRun: true } : {}),
    },
    createSoftwareSigner({
      privateKey: await exportPrivateKeyPem(device.privateKey),
      certificateChain: [
        new Uint8Array(device.certificate.rawData),
        new Uint8Array(pki.deviceCa.certificate.rawData),
      ],
    }),
  );
}

async function cardFile(options: { owner?: string; officer?: string } = {}): Promise<string> {
  const path = join(root, `card-${++counter}.json`);
  await personaliseCardFile(pki, path, options);
  return path;
}

describe("station init", () => {
  it("sets up the station with the root and the CRL; again with the same root changes nothing", async () => {
    const first = await run(["station", "init", "--trust", "pki/root.pem", "--station-dir", "init-a"]);
    expect(first.exitCode).toBe(0);
    expect(first.stdout).toMatch(
      /^Station initialised in .*init-a: trust anchor "O=hsm-onboard Manufacturer, CN=/,
    );
    expect(first.stdout).toContain("No CRL yet");
    const again = await run([
      "station",
      "init",
      "--trust",
      "pki/root.pem",
      "--station-dir",
      "init-a",
      "--json",
    ]);
    expect(again.exitCode).toBe(0);
    const json = JSON.parse(again.stdout);
    expect(json.outcome).toBe("unchanged");
    expect(json.trustAnchor.sha256).toMatch(/^[0-9A-F:]+$/);
    expect(json.crl).toBeNull();
    const withCrl = await station();
    expect(await readFile(join(root, withCrl, "root.pem"), "utf8")).toBe(
      await readFile(join(root, "pki/root.pem"), "utf8"),
    );
  });

  it("refuses a root that is not self-signed, and --crl without --issuer (exit 2)", async () => {
    const notRoot = await run(["station", "init", "--trust", "pki/token-ca.pem", "--station-dir", "init-b"]);
    expect(notRoot.exitCode).toBe(2);
    expect(notRoot.stderr).toMatch(/not self-signed/);
    const noIssuer = await run([
      "station",
      "init",
      "--trust",
      "pki/root.pem",
      "--crl",
      "pki/token-ca.crl.pem",
      "--station-dir",
      "init-b",
    ]);
    expect(noIssuer.exitCode).toBe(2);
    expect(noIssuer.stderr).toMatch(/--crl needs --issuer/);
  });
});

describe("station update-crl", () => {
  it("takes newer CRLs and refuses an older one (exit 17)", async () => {
    const dir = await station();
    await copyFile(join(root, "pki/token-ca.crl.pem"), join(root, "crl-1.pem"));
    expect((await run(["pki", "crl", "--pki", "pki", "--out", "crl-2.pem"])).exitCode).toBe(0);
    const newer = await run(["station", "update-crl", "--crl", "crl-2.pem", "--station-dir", dir]);
    expect(newer.exitCode, newer.stderr).toBe(0);
    expect(newer.stdout).toMatch(/number 2 \(was 1\), 0 revoked/);
    const older = await run(["station", "update-crl", "--crl", "crl-1.pem", "--station-dir", dir]);
    expect(older.exitCode).toBe(17);
    expect(older.stderr).toMatch(/older than the station's CRL number 2/);
    const json = await run(["station", "update-crl", "--crl", "crl-2.pem", "--station-dir", dir, "--json"]);
    expect(JSON.parse(json.stdout)).toMatchObject({ unchanged: true, crl: { crlNumber: 2 } });
  });

  it("reads the token CA from the card with --from-card", async () => {
    const dir = "update-from-card";
    expect((await run(["station", "init", "--trust", "pki/root.pem", "--station-dir", dir])).exitCode).toBe(
      0,
    );
    const withoutIssuer = await run([
      "station",
      "update-crl",
      "--crl",
      "pki/token-ca.crl.pem",
      "--station-dir",
      dir,
    ]);
    expect(withoutIssuer.exitCode).toBe(2);
    expect(withoutIssuer.stderr).toMatch(/--issuer FILE/);
    const card = await cardFile();
    const fromCard = await run(
      [
        "station",
        "update-crl",
        "--crl",
        "pki/token-ca.crl.pem",
        "--from-card",
        "--allow-plaintext",
        "--station-dir",
        dir,
      ],
      { card },
    );
    expect(fromCard.exitCode, fromCard.stderr).toBe(0);
  });
});

describe("station enroll-totp", () => {
  it("prints a QR code drawn in the terminal and the otpauth URI; --json gives the URI", async () => {
    const dir = await station();
    const text = await run(["station", "enroll-totp", "--officer", "Alice Example", "--station-dir", dir]);
    expect(text.exitCode).toBe(0);
    expect(text.stdout).toMatch(/[▄▀█]{5}/);
    expect(text.stdout).toMatch(
      /otpauth:\/\/totp\/hsm-onboard:Alice%20Example\?secret=[A-Z2-7]{32}&issuer=hsm-onboard/,
    );
    const again = await run(["station", "enroll-totp", "--officer", "Alice Example", "--station-dir", dir]);
    expect(again.exitCode).toBe(2);
    expect(again.stderr).toMatch(/--force/);
    const json = await run(["station", "enroll-totp", "--officer", "Bob", "--station-dir", dir, "--json"]);
    const parsed = JSON.parse(json.stdout);
    expect(parsed.uri).toMatch(/^otpauth:\/\/totp\/hsm-onboard:Bob\?secret=/);
    expect(parsed).toMatchObject({ officer: "Bob", algorithm: "SHA1", digits: 6, periodSeconds: 30 });
  });
});

describe("station write", () => {
  it("requires the secure channel by default: no SCP trust anchor and no --allow-plaintext → exit 11, card untouched", async () => {
    const dir = await station();
    const card = await cardFile();
    const before = await readFile(card);
    const result = await run(
      ["station", "write", "--plan", join(EXAMPLES, "rack-4.yaml"), "--station-dir", dir, "--pin-stdin"],
      { stdin: `${PIN}\n`, card },
    );
    expect(result.exitCode, result.stderr).toBe(11);
    expect(result.stderr).toMatch(/SCP11 secure channel is required and no SCP trust anchor is installed/);
    expect(result.stderr).toMatch(/--allow-plaintext/);
    expect(result.stdout).toBe("");
    // Nothing written: the card file is byte for byte what it was, and it carries no manifest.
    expect(Buffer.compare(await readFile(card), before)).toBe(0);
    const opened = await openVirtualCardFile(card);
    try {
      expect(await opened.element.readItem("manifest")).toBeUndefined();
    } finally {
      await opened.dispose();
    }
  });

  it("writes examples/rack-4.yaml to the card and prints the summary", async () => {
    const dir = await station();
    const card = await cardFile();
    const result = await run(plaintextWrite(dir), { stdin: `${PIN}\n`, card });
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toMatch(
      /^Configuration written and verified on the card in Virtual card card-\d+\.json/,
    );
    expect(result.stdout).toMatch(/sequence\s+1\n/);
    expect(result.stdout).toMatch(/HSMs\s+4 in 1 shard/);
    expect(result.stdout).toMatch(/shard-0\s+1234567 … 1234570\s+4 HSMs/);
    expect(result.stdout).toMatch(/card\s+[\d,]+ bytes used, [\d,]+ free of 50,225/);
    expect(result.stderr).toContain("Card found in Virtual card");
    expect(result.stderr).toMatch(/card authenticated: owner "ACME Bank", officer "Alice Example"/);
    expect(result.stderr).toMatch(/\[\d+\/\d+\] wrote manifest/);
    expect(result.stderr).not.toContain(PIN);
  });

  it("--json gives the same summary as JSON, and the sequence goes up", async () => {
    const dir = await station();
    const card = await cardFile();
    const args = plaintextWrite(dir, join(EXAMPLES, "room-40.yaml"), "--json");
    expect((await run(args, { stdin: `${PIN}\n`, card })).exitCode).toBe(0);
    const second = await run([...args, "--valid-days", "2"], { stdin: `${PIN}\n`, card });
    expect(second.exitCode, second.stderr).toBe(0);
    const json = JSON.parse(second.stdout);
    expect(json).toMatchObject({
      owner: "ACME Bank",
      officer: "Alice Example",
      sequence: 2,
      previousSequence: 1,
      hsms: 40,
      verified: true,
    });
    expect(json.configurationId).toMatch(/^[0-9a-f]{32}$/);
    expect(new Date(json.notAfter).getTime() - new Date(json.issuedAt).getTime()).toBe(2 * 86_400_000);
    expect(json.usedBytes + json.freeBytes).toBe(json.totalBytes);
    expect(json.shards[0]).toMatchObject({ item: "shard-0", objectId: "5FFF20", hsms: 40 });

    // What is on the card verifies independently.
    const opened = await openVirtualCardFile(card);
    try {
      const manifest = await verifiedManifest(opened.element, dir);
      expect(Buffer.from(manifest.configurationId).toString("hex")).toBe(json.configurationId);
    } finally {
      await opened.dispose();
    }
  });

  it("wrong PIN: exit 13 with the tries left", async () => {
    const dir = await station();
    const card = await cardFile();
    const result = await run(plaintextWrite(dir), { stdin: `${WRONG_PIN}\n`, card });
    expect(result.exitCode).toBe(13);
    expect(result.stderr).toContain("hsm-onboard: wrong PIN, 2 tries left");
    expect(result.stdout).toBe("");
  });

  it("asks for the TOTP code of an enrolled officer after the PIN (--pin-stdin: next line)", async () => {
    const dir = await station();
    const card = await cardFile();
    const enrol = await run([
      "station",
      "enroll-totp",
      "--officer",
      "Alice Example",
      "--station-dir",
      dir,
      "--json",
    ]);
    const secret = base32Decode(JSON.parse(enrol.stdout).secret);
    const args = plaintextWrite(dir);
    // Standard input ran out before the code: a usage error, like a missing PIN.
    const missing = await run(args, { stdin: `${PIN}\n`, card });
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toMatch(/ended before the TOTP code/);
    const code = totp(secret, Date.now() / 1000);
    const ok = await run(args, { stdin: `${PIN}\n${code}\n`, card });
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(ok.stderr).toContain('TOTP code of "Alice Example" verified');
    const replay = await run(args, { stdin: `${PIN}\n${code}\n`, card });
    expect(replay.exitCode).toBe(13);
    expect(replay.stderr).toMatch(/already used/);
  });

  it("another owner's card: exit 16; an invalid plan: exit 23 with every problem; no card: exit 10", async () => {
    const dir = await station();
    // A genuine card of another owner under the same root (its own token CA, known to the station).
    const globexPki = await otherOwnerPki(pki, "Globex Corporation");
    const globex = join(root, `card-${++counter}.json`);
    await personaliseCardFile(globexPki, globex, { owner: "Globex Corporation" });
    await updateStationCrl(join(root, dir), globexPki.crl, { issuers: [globexPki.tokenCa.certificate] });
    const plan = join(EXAMPLES, "rack-4.yaml");
    const owner = await run(plaintextWrite(dir, plan), {
      stdin: `${PIN}\n`,
      card: globex,
    });
    expect(owner.exitCode).toBe(16);
    expect(owner.stderr).toMatch(
      /the plan is for owner "ACME Bank" but the card belongs to "Globex Corporation"/,
    );

    const bad = join(root, "bad.yaml");
    await import("node:fs/promises").then((fs) =>
      fs.writeFile(
        bad,
        "owner: ACME Bank\nsubnets:\n  - name: n\n    cidr: 198.51.100.0/24\nhsms:\n  - serial: '1'\n    hostname: a\n    subnet: n\n    ipv4: 203.0.113.5\n  - serial: '1'\n    hostname: b\n    subnet: n\n    ipv4: 198.51.100.6\n",
      ),
    );
    const invalid = await run(plaintextWrite(dir, bad), {
      stdin: `${PIN}\n`,
      card: globex,
    });
    expect(invalid.exitCode).toBe(23);
    expect(invalid.stderr.split("\n").filter((l) => l.startsWith(bad)).length).toBeGreaterThanOrEqual(2);

    const none = await run(plaintextWrite(dir, plan), {
      stdin: `${PIN}\n`,
      card: join(root, "no-such-card.json"),
    });
    expect(none.exitCode).toBe(10);
  });

  it("without --pin-stdin or --pin-fd and no terminal, says so before waiting for a card (exit 2)", async () => {
    const dir = await station();
    const result = await run(
      [
        "station",
        "write",
        "--allow-plaintext",
        "--plan",
        join(EXAMPLES, "rack-4.yaml"),
        "--station-dir",
        dir,
      ],
      {
        card: join(root, "no-such-card.json"),
      },
    );
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toMatch(/no terminal to read the PIN from/);
  });

  it("an uninitialised station says so before waiting for a card (exit 2)", async () => {
    const result = await run(plaintextWrite("nowhere"), {
      stdin: `${PIN}\n`,
      card: join(root, "no-such-card.json"),
    });
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toMatch(/station init/);
  });

  it("a whole station directory restored from a copy taken before two writes goes on above them, with a notice; a damaged sequence mark is exit 17", async () => {
    const dir = await station();
    const backup = `${dir}-backup`;
    await cp(join(root, dir), join(root, backup), { recursive: true }); // cp -a before any write
    const args = () => plaintextWrite(dir, join(EXAMPLES, "rack-4.yaml"), "--json");
    const card = await cardFile();
    for (const expected of [1, 2]) {
      const written = await run(args(), { stdin: `${PIN}\n`, card });
      expect(written.exitCode, written.stderr).toBe(0);
      expect(JSON.parse(written.stdout).sequence).toBe(expected);
      expect(written.stderr).not.toMatch(/resynchronised/);
    }
    await rm(join(root, dir), { recursive: true });
    await cp(join(root, backup), join(root, dir), { recursive: true });
    // A fresh card: nothing on it to start above — only the mark outside the directory knows 2.
    const fresh = await run(args(), { stdin: `${PIN}\n`, card: await cardFile() });
    expect(fresh.exitCode, fresh.stderr).toBe(0);
    expect(JSON.parse(fresh.stdout).sequence).toBe(3);
    expect(fresh.stderr.split("\n").filter((l) => l.includes("resynchronised"))).toEqual([
      expect.stringMatching(
        /^ {2}notice: sequence of "ACME Bank" resynchronised from 0 to 2 \(.*\) — the next number is above 2$/,
      ),
    ]);
    const history = await run(["station", "history", "--station-dir", dir]);
    expect(history.stdout).toMatch(/sequence-resynchronised/);

    const id = (await readFile(join(root, dir, "station-id"), "utf8")).trim();
    await writeFile(markPath(process.env.HSM_ONBOARD_STATE_HOME!, id, "ACME Bank"), "{damaged");
    const refused = await run(args(), { stdin: `${PIN}\n`, card: await cardFile() });
    expect(refused.exitCode).toBe(17);
    expect(
      refused.stderr
        .trim()
        .split("\n")
        .filter((l) => l.includes("sequence mark")),
    ).toHaveLength(1);
    expect(refused.stderr).toMatch(/sequence mark .* is not valid JSON: .*refusing to allocate/);
  });
});

describe("station receipts", () => {
  it("shows the receipts on the card, verified, as a table or as JSON", async () => {
    const dir = await station();
    const card = await cardFile();
    const written = await run(plaintextWrite(dir), { stdin: `${PIN}\n`, card });
    expect(written.exitCode).toBe(0);
    const empty = await run(["station", "receipts", "--allow-plaintext", "--station-dir", dir], { card });
    expect(empty.exitCode).toBe(0);
    expect(empty.stdout).toContain("No receipts on the card yet.");

    // HSM 1234568 onboards and writes its receipt, as the agent does.
    const opened = await openVirtualCardFile(card);
    try {
      const manifest = await verifiedManifest(opened.element, dir);
      const receipt = await receiptOf(opened.element, manifest, "1234568");
      // HSM 1234569 ran the dry-run applier: its receipt says so (issue 12).
      const dryRun = await receiptOf(opened.element, manifest, "1234569", { dryRun: true });
      await opened.element.verifyPin(PIN);
      await opened.element.writeItem(
        "receipt-0",
        appendReceipt(appendReceipt(undefined, receipt, 3063), dryRun, 3063),
      );
    } finally {
      await opened.dispose();
    }

    const table = await run(["station", "receipts", "--allow-plaintext", "--station-dir", dir], { card });
    expect(table.exitCode, table.stderr).toBe(0);
    const lines = table.stdout.split("\n");
    expect(lines[1]).toMatch(/^SERIAL\s+HOSTNAME\s+ADDRESSES APPLIED\s+OUTCOME\s+CHANNEL\s+TIME\s+VERIFIED$/);
    expect(lines[2]).toMatch(
      /^1234568\s+hsm-fra1-a02\s+eth0 198\.51\.100\.12\/24\s+configured \(0\)\s+-\s+2030-03-17T17:46:40Z\s+✓$/,
    );
    expect(lines[3]).toMatch(
      /^1234569\s+hsm-fra1-a03\s+-\s+dry run — nothing applied \(0\)\s+-\s+2030-03-17T17:46:40Z\s+✓$/,
    );
    expect(table.stdout).not.toMatch(/1234569.*configured/);
    expect(table.stdout).toContain("2 receipts, 2 verified");

    const json = JSON.parse(
      (await run(["station", "receipts", "--allow-plaintext", "--station-dir", dir, "--json"], { card }))
        .stdout,
    );
    expect(json.configuration).toMatchObject({ owner: "ACME Bank", sequence: 1 });
    expect(json.receipts).toEqual([
      expect.objectContaining({
        serial: "1234568",
        verified: true,
        authentic: true,
        addresses: ["eth0 198.51.100.12/24"],
        dryRun: false,
        outcomeName: "configured",
      }),
      expect.objectContaining({
        serial: "1234569",
        verified: true,
        addresses: [],
        dryRun: true,
        outcomeName: "dry run — nothing applied",
      }),
    ]);

    // A forged receipt object next to it: shown with ✗, and exit 15.
    const forged = await openVirtualCardFile(card);
    try {
      await forged.element.verifyPin(PIN);
      await forged.element.writeItem("receipt-1", appendReceipt(undefined, Uint8Array.of(0xd2, 0x84), 3063));
    } finally {
      await forged.dispose();
    }
    const withForgery = await run(["station", "receipts", "--allow-plaintext", "--station-dir", dir], {
      card,
    });
    expect(withForgery.exitCode).toBe(15);
    expect(withForgery.stdout).toMatch(/\?\s+-\s+-\s+-\s+-\s+-\s+✗ not authentic/);
    expect(withForgery.stdout).toContain("3 receipts, 2 verified");
  });
});
