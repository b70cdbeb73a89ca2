/**
 * `hsm-onboard card personalize` in-process against the virtual card (HSM_ONBOARD_VIRTUAL_CARD points
 * the command at a card state file), and the library function `personalizeCard` it calls.
 * The same command over pcscd + vpcd, checked with yubico-piv-tool, OpenSC and OpenSSL:
 * test/e2e/piv-interop.test.ts.
 */
import { createHash, X509Certificate as NodeX509Certificate, randomBytes } from "node:crypto";
import { openSync } from "node:fs";
import { cp, mkdtemp, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { X509Certificate } from "@peculiar/x509";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { YUBIKEY_5_7_PROFILE, YUBIKEY_5_PROFILE } from "../../src/card-emulator/profiles.js";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { verifyEcdsaRaw } from "../../src/crypto/ecdsa.js";
import { ExitCode, WrongPinError } from "../../src/errors.js";
import { ManagementKeyError } from "../../src/piv/errors.js";
import { DEFAULT_MANAGEMENT_KEY } from "../../src/piv/management-key.js";
import { PivSession } from "../../src/piv/piv-session.js";
import { crlToPem, issueCrl } from "../../src/pki/crl.js";
import { createPki, type OnboardingPki } from "../../src/pki/issue.js";
import { loadPkiDirectory } from "../../src/pki/pki-store.js";
import { VALIDATION_REQUIREMENTS } from "../../src/pki/profiles.js";
import { validateChain } from "../../src/pki/validate-chain.js";
import { itemObjectId } from "../../src/secure-element/card-layout.js";
import { decodeCertificateList } from "../../src/secure-element/secure-element.js";
import { DEFAULT_PIN, DEFAULT_PUK, personalizeCard } from "../../src/station/personalize-card.js";
import { InProcessTransport } from "../../src/transport/in-process.js";
import { type CliResult, outputLines, runCliInProcess } from "../helpers/cli.js";

const NEW_PIN = "24681357";
const NEW_PUK = "97531864";
const OWNER = "ACME Bank";

let work: string;
let cardCounter = 0;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "hsm-onboard-cli-card-"));
  const init = await runCliInProcess(["pki", "init", "--out", "pki", "--owner", OWNER], { cwd: work });
  expect(init.exitCode, init.stderr).toBe(0);
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** A factory-fresh virtual card in a state file of its own; returns the file name (relative to work). */
function freshCard(options: { serial?: number } = {}): string {
  const name = `card-${++cardCounter}.json`;
  VirtualPivCard.fromFile(join(work, name), { serial: options.serial ?? 10_000_000 + cardCounter });
  return name;
}

function personalize(card: string, args: string[], stdin = `${NEW_PIN}\n${NEW_PUK}\n`): Promise<CliResult> {
  return runCliInProcess(["card", "personalize", ...args], {
    cwd: work,
    env: { HSM_ONBOARD_VIRTUAL_CARD: card },
    stdin,
  });
}

const STANDARD = ["--pki", "pki", "--owner", OWNER, "--officer", "Alice Example", "--pin-stdin"];

/** A PIV session on the card in `file`: a fresh power-on each time. */
async function openSession(file: string): Promise<{ session: PivSession; close: () => Promise<void> }> {
  const transport = new InProcessTransport(VirtualPivCard.fromFile(join(work, file)));
  return { session: await PivSession.open(transport), close: () => transport.close() };
}

/** One line on stderr, prefixed by the program name, and no stack trace. */
function expectOneLineError(result: CliResult, code: number, pattern: RegExp): void {
  expect(result.exitCode).toBe(code);
  expect(result.stdout).toBe("");
  const errors = outputLines(result.stderr).filter((l) => !l.startsWith("card personalize:"));
  expect(errors, result.stderr).toHaveLength(1);
  expect(errors[0]).toMatch(pattern);
  expect(result.stderr).not.toMatch(/\n\s+at /);
}

function expectNoSecrets(result: CliResult, ...secrets: string[]): void {
  for (const s of secrets) {
    expect(result.stdout).not.toContain(s);
    expect(result.stderr).not.toContain(s);
  }
}

describe("card personalize: usage errors (one line, exit 2, card untouched)", () => {
  it.each([
    ["no --pki", ["--owner", OWNER, "--pin-stdin"], /required option '--pki <dir>' not specified/],
    ["no --owner", ["--pki", "pki", "--pin-stdin"], /required option '--owner <name>' not specified/],
    [
      "an unknown algorithm",
      [...STANDARD, "--algorithm", "P-521"],
      /argument 'P-521' is invalid\. Allowed choices are P-256, P-384/,
    ],
    [
      "a management key on the command line (issue 10: argv is world-readable)",
      [...STANDARD, "--management-key", "00".repeat(24)],
      /--management-key puts the key on the command line.*--management-key-file FILE or --management-key-fd N/,
    ],
    [
      "a management key that is not hex",
      [...STANDARD, "--management-key-file", "/dev/null"],
      /--management-key-file \/dev\/null: expected 32, 48 or 64 hex digits/,
    ],
    ["a bad --timeout", [...STANDARD, "--timeout", "soon"], /--timeout.*seconds/],
    [
      "a --management-key-fd that is not a number (the message names that option, not --pin-fd)",
      [...STANDARD, "--management-key-fd", "x"],
      /option '--management-key-fd <n>' argument 'x' is invalid\. expected a file descriptor number/,
    ],
    ["--pin-stdin with --pin-fd", [...STANDARD, "--pin-fd", "3"], /either --pin-stdin or --pin-fd/],
    ["an empty owner", ["--pki", "pki", "--owner", "", "--pin-stdin"], /owner must be non-empty/],
  ])("refuses %s", async (_what, args, pattern) => {
    const card = freshCard();
    const before = await readFile(join(work, card), "utf8");
    expectOneLineError(await personalize(card, args), ExitCode.usage, pattern);
    expect(await readFile(join(work, card), "utf8")).toBe(before);
  });

  it("refuses a PKI directory without the token CA key", async () => {
    await cp(join(work, "pki"), join(work, "pki-no-key"), { recursive: true });
    await unlink(join(work, "pki-no-key", "token-ca.key.pem"));
    const card = freshCard();
    const before = await readFile(join(work, card), "utf8");
    const result = await personalize(card, ["--pki", "pki-no-key", "--owner", OWNER, "--pin-stdin"]);
    expectOneLineError(result, ExitCode.usage, /has no token CA key \(token-ca\.key\.pem\)/);
    expect(await readFile(join(work, card), "utf8")).toBe(before);
  });

  it("refuses a directory that is not a PKI, a key that is not the token CA's, another owner", async () => {
    const card = freshCard();
    expectOneLineError(
      await personalize(card, ["--pki", "nowhere", "--owner", OWNER, "--pin-stdin"]),
      ExitCode.usage,
      /--pki: .*nowhere is not a directory/,
    );
    await cp(join(work, "pki"), join(work, "pki-wrong-key"), { recursive: true });
    await cp(join(work, "pki", "device-ca.key.pem"), join(work, "pki-wrong-key", "token-ca.key.pem"));
    expectOneLineError(
      await personalize(card, ["--pki", "pki-wrong-key", "--owner", OWNER, "--pin-stdin"]),
      ExitCode.usage,
      /token-ca\.key\.pem is not the key of token-ca\.pem/,
    );
    expectOneLineError(
      await personalize(card, ["--pki", "pki", "--owner", "Other Corp", "--pin-stdin"]),
      ExitCode.usage,
      /--owner "Other Corp" is not the owner of this PKI \("ACME Bank"\)/,
    );
  });

  it("refuses an out-of-date CRL and says how to sign a fresh one", async () => {
    await cp(join(work, "pki"), join(work, "pki-stale"), { recursive: true });
    const pki = await loadPkiDirectory(join(work, "pki-stale"));
    const stale = await issueCrl({
      issuer: pki.tokenCa,
      crlNumber: 7n,
      entries: [],
      validityDays: 1,
      now: new Date(Date.now() - 3 * 86_400_000),
    });
    await writeFile(join(work, "pki-stale", "token-ca.crl.pem"), crlToPem(stale));
    const result = await personalize(freshCard(), ["--pki", "pki-stale", "--owner", OWNER, "--pin-stdin"]);
    expectOneLineError(result, ExitCode.usage, /CRL is out of date .*hsm-onboard pki crl --pki/);
  });

  it.each([
    ["a new PIN of 5 digits", "12345\n97531864\n", /new PIN must be 6 to 8/],
    ["a new PUK of 9 digits", "24681357\n123456789\n", /new PUK must be 6 to 8/],
    ["the factory PIN as the new PIN", `${DEFAULT_PIN}\n${NEW_PUK}\n`, /must not be the factory PIN/],
    ["the factory PUK as the new PUK", `${NEW_PIN}\n${DEFAULT_PUK}\n`, /must not be the factory PUK/],
    ["standard input ending after the PIN", `${NEW_PIN}\n`, /standard input ended before the new PUK/],
  ])("refuses %s before touching the card", async (_what, stdin, pattern) => {
    const card = freshCard();
    const before = await readFile(join(work, card), "utf8");
    const result = await personalize(card, STANDARD, stdin);
    expectOneLineError(result, ExitCode.usage, pattern);
    expectNoSecrets(result, "24681357", "97531864");
    expect(await readFile(join(work, card), "utf8")).toBe(before);
  });

  it("asks for the secrets on a terminal only, and says how to give them without one", async () => {
    const card = freshCard();
    const result = await personalize(card, ["--pki", "pki", "--owner", OWNER]);
    expectOneLineError(
      result,
      ExitCode.usage,
      /no terminal to read the new PIN from: use --pin-stdin or --pin-fd N/,
    );
  });

  it("exits 10 with one line when there is no card", async () => {
    const result = await personalize("missing.json", STANDARD);
    expectOneLineError(result, ExitCode.noCard, /no virtual card state at .*missing\.json/);
  });
});

describe("card personalize: a factory-fresh virtual card", () => {
  let card: string;
  let result: CliResult;
  const serial = 31415926;

  beforeAll(async () => {
    card = freshCard({ serial });
    result = await personalize(card, [...STANDARD, "--json"]);
  });

  it("prints a JSON summary: serial, slots, subjects, fingerprints, owner, officer; no secret anywhere", async () => {
    expect(result.exitCode, result.stderr).toBe(0);
    const summary = JSON.parse(result.stdout);
    expect(summary).toMatchObject({
      serial: String(serial),
      version: "5.4.3",
      owner: OWNER,
      officer: "Alice Example",
      algorithm: "P-256",
      crlNumber: 1,
      managementKey: { type: "aes192", pinProtected: true, previous: "default" },
      chuidWritten: false,
      cccWritten: false,
    });
    for (const slot of ["9E", "9C"]) {
      expect(summary.slots[slot].certificate.subject).toBe(
        `O=${OWNER}, CN=Alice Example, serialNumber=${serial}`,
      );
      expect(summary.slots[slot].certificate.issuer).toBe(`O=${OWNER}, CN=${OWNER} Token CA`);
      expect(summary.slots[slot].certificate.sha256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    }
    expect(summary.elapsedMs).toBeGreaterThanOrEqual(0);
    expectNoSecrets(result, NEW_PIN, NEW_PUK);
  });

  it("stores certificates that chain to the root with the CRL, for keys the card holds", async () => {
    const pki = await loadPkiDirectory(join(work, "pki"));
    const crlPem = await readFile(join(work, "pki", "token-ca.crl.pem"), "utf8");
    const { session, close } = await openSession(card);
    try {
      for (const [slot, requirements, policy] of [
        ["9E", VALIDATION_REQUIREMENTS.cardAuthentication, "never"],
        ["9C", VALIDATION_REQUIREMENTS.configSigning, "always"],
      ] as const) {
        const der = await session.getCertificate(slot);
        expect(der).toBeDefined();
        const chain = await validateChain({
          leaf: der!,
          intermediates: [pki.tokenCa.certificate],
          trustAnchor: pki.root.certificate,
          crls: [crlPem],
          ...requirements,
        });
        expect(chain.owner).toBe(OWNER);
        expect(chain.officer).toBe("Alice Example");
        const metadata = await session.getSlotMetadata(slot);
        expect(metadata).toMatchObject({ origin: "generated", pinPolicy: policy, algorithm: 0x11 });
        // The certificate holds the key the card generated.
        expect(Buffer.from(metadata!.publicKey!)).toEqual(
          Buffer.from(new X509Certificate(der!).publicKey.rawData),
        );
      }
      // 9E answers a challenge without the PIN.
      const challenge = randomBytes(32);
      const signature = await session.signDigestRaw(
        "9E",
        "P-256",
        createHash("sha256").update(challenge).digest(),
      );
      const cert = new NodeX509Certificate((await session.getCertificate("9E"))!);
      verifyEcdsaRaw(cert.publicKey, "ES256", challenge, signature);
      // Items: the token CA and the CRL, byte for byte.
      const certificates = await session.readObject(itemObjectId({ kind: "certificates" }));
      expect(decodeCertificateList(certificates!).map((c) => Buffer.from(c))).toEqual([
        Buffer.from(pki.tokenCa.certificate.rawData),
      ]);
      const crl = await session.readObject(itemObjectId({ kind: "crl" }));
      const crlDer = Buffer.from(crlPem.replace(/-----[^-]+-----|\s/g, ""), "base64");
      expect(Buffer.from(crl!)).toEqual(crlDer);
    } finally {
      await close();
    }
  });

  it("sets the new PIN and PUK and a random AES-192 PIN-protected management key", async () => {
    const { session, close } = await openSession(card);
    try {
      await expect(session.verifyPin(DEFAULT_PIN)).rejects.toBeInstanceOf(WrongPinError);
      await session.verifyPin(NEW_PIN);
      expect((await session.getMetadata(0x81)).isDefault).toBe(false);
      await session.changePuk(NEW_PUK, NEW_PUK); // the PUK is the new one
      expect(await session.getManagementKeyType()).toBe("aes192");
      await expect(session.authenticateManagementKey(DEFAULT_MANAGEMENT_KEY)).rejects.toBeInstanceOf(
        ManagementKeyError,
      );
      await session.authenticateWithPinProtectedManagementKey();
      expect((await session.getMetadata(0x9b)).isDefault).toBe(false);
    } finally {
      await close();
    }
  });

  it("refuses to run again assuming factory credentials, without burning a PIN try", async () => {
    const again = await personalize(card, STANDARD);
    expectOneLineError(again, ExitCode.usage, /PIN is not the factory default .*give the current PIN/);
    const { session, close } = await openSession(card);
    try {
      expect(await session.pinTriesLeft()).toBe(3);
    } finally {
      await close();
    }
  });

  it("personalises again with --ask-current (current PIN, current PUK, new PIN, new PUK)", async () => {
    const { session: before, close: closeBefore } = await openSession(card);
    const oldCertificate = await before.getCertificate("9C");
    await closeBefore();
    const again = await personalize(
      card,
      [...STANDARD, "--ask-current", "--algorithm", "P-384", "--json"],
      `${NEW_PIN}\n${NEW_PUK}\n13572468\n86427531\n`,
    );
    expect(again.exitCode, again.stderr).toBe(0);
    const summary = JSON.parse(again.stdout);
    expect(summary).toMatchObject({ algorithm: "P-384", managementKey: { previous: "pin-protected" } });
    const { session, close } = await openSession(card);
    try {
      expect(Buffer.from((await session.getCertificate("9C"))!)).not.toEqual(Buffer.from(oldCertificate!));
      expect((await session.getSlotMetadata("9C"))?.algorithm).toBe(0x14);
      await session.verifyPin("13572468");
    } finally {
      await close();
    }
  });

  it("a wrong current PIN costs one try and changes nothing else (exit 13)", async () => {
    const { session: before, close: closeBefore } = await openSession(card);
    const certificate = await before.getCertificate("9E");
    await closeBefore();
    const wrong = await personalize(
      card,
      [...STANDARD, "--ask-current"],
      `11111111\n86427531\n${NEW_PIN}\n${NEW_PUK}\n`,
    );
    expectOneLineError(wrong, ExitCode.wrongPin, /wrong PIN, 2 tries left/);
    const { session, close } = await openSession(card);
    try {
      expect(await session.pinTriesLeft()).toBe(2);
      expect(Buffer.from((await session.getCertificate("9E"))!)).toEqual(Buffer.from(certificate!));
      await session.verifyPin("13572468");
    } finally {
      await close();
    }
  });

  it("prints a human summary without --json", async () => {
    const other = freshCard({ serial: 27182818 });
    const text = await personalize(other, ["--pki", "pki", "--owner", OWNER, "--pin-stdin"]);
    expect(text.exitCode, text.stderr).toBe(0);
    const lines = outputLines(text.stdout);
    expect(lines[0]).toMatch(
      /^Personalised card 27182818 \(firmware 5\.4\.3\) in Virtual card card-\d+\.json for "ACME Bank" in \d+ ms$/,
    );
    expect(lines[1]).toMatch(
      /^ {2}9E card authentication +ECC P-256 {2}O=ACME Bank, serialNumber=27182818 {2}SHA-256 [0-9A-F:]{95}$/,
    );
    expect(lines[2]).toMatch(/^ {2}9C digital signature +ECC P-256 /);
    expect(lines.slice(3).join("\n")).toMatch(/CRL number 1[\s\S]*random AES-192, PIN-protected/);
    // Progress goes to stderr, one line per step.
    expect(text.stderr).toMatch(/card personalize: generating P-256 keys in 9E and 9C on the card/);
  });

  it("reads the secrets from --pin-fd N, one per line", async () => {
    const other = freshCard();
    const secrets = join(work, "secrets.txt");
    await writeFile(secrets, `${NEW_PIN}\n${NEW_PUK}\n`, { mode: 0o600 });
    const fd = openSync(secrets, "r"); // closed by the command once read
    const result = await personalize(other, ["--pki", "pki", "--owner", OWNER, "--pin-fd", String(fd)], "");
    expect(result.exitCode, result.stderr).toBe(0);
    const { session, close } = await openSession(other);
    try {
      await session.verifyPin(NEW_PIN);
    } finally {
      await close();
    }
  });

  it("takes the current management key from a file or a file descriptor, never from argv", async () => {
    const keyFile = join(work, "factory-key.hex");
    await writeFile(keyFile, `${Buffer.from(DEFAULT_MANAGEMENT_KEY).toString("hex")}\n`, { mode: 0o600 });
    const viaFile = await personalize(freshCard(), [...STANDARD, "--management-key-file", keyFile]);
    expect(viaFile.exitCode, viaFile.stderr).toBe(0);
    const fd = openSync(keyFile, "r");
    const viaFd = await personalize(freshCard(), [...STANDARD, "--management-key-fd", String(fd)]);
    expect(viaFd.exitCode, viaFd.stderr).toBe(0);
  });

  it("says how to give the management key when the card refuses the factory one", async () => {
    const other = freshCard();
    const keyFile = join(work, "management-key.hex");
    await writeFile(keyFile, `${"00".repeat(24)}\n`, { mode: 0o600 });
    const wrong = await personalize(other, [...STANDARD, "--management-key-file", keyFile]);
    expectOneLineError(wrong, ExitCode.usage, /refused the management key given with --management-key-file/);
  });
});

describe("personalizeCard (library)", () => {
  let pki: OnboardingPki;
  beforeAll(async () => {
    pki = await createPki({ owner: OWNER });
  });

  async function personalizeInProcess(
    card: VirtualPivCard,
    extra: Partial<Parameters<typeof personalizeCard>[0]> = {},
  ) {
    const transport = new InProcessTransport(card);
    try {
      const session = await PivSession.open(transport);
      return await personalizeCard({
        session,
        pki,
        owner: OWNER,
        officer: "Bob",
        newPin: NEW_PIN,
        newPuk: NEW_PUK,
        ...extra,
      });
    } finally {
      await transport.close();
    }
  }

  it("uses 3DES for the new management key on firmware without AES (before 5.4)", async () => {
    const card = new VirtualPivCard({ profile: { ...YUBIKEY_5_PROFILE, firmware: [5, 2, 7] } });
    const result = await personalizeInProcess(card);
    expect(result.managementKey.type).toBe("3des");
    expect(result.version).toBe("5.2.7");
  });

  it("opens a firmware 5.7 card with its AES-192 factory key, and writes CHUID/CCC when missing", async () => {
    const card = new VirtualPivCard({ profile: YUBIKEY_5_7_PROFILE, initialObjects: false });
    const result = await personalizeInProcess(card);
    expect(result).toMatchObject({
      wroteChuid: true,
      wroteCcc: true,
      authenticatedWith: "default",
      managementKey: { type: "aes192" },
    });
    expect(result.crlNumber).toBeUndefined();
  });

  it("refuses a certificate the root would not accept before storing anything (other PKI's root)", async () => {
    const other = await createPki({ owner: OWNER });
    const store = new MemoryCardStateStore();
    const card = new VirtualPivCard({ store });
    await expect(
      personalizeInProcess(card, { pki: { tokenCa: pki.tokenCa, root: other.root } }),
    ).rejects.toMatchObject({ exitCode: ExitCode.cardNotTrusted });
    const transport = new InProcessTransport(card);
    try {
      const session = await PivSession.open(transport);
      expect(await session.getCertificate("9E")).toBeUndefined();
      await session.verifyPin(DEFAULT_PIN); // credentials untouched
    } finally {
      await transport.close();
    }
  });

  it("can run again after a card pulled half-way (before the PIN change)", async () => {
    let pulled = false;
    const card = new VirtualPivCard({
      intercept: (command, next) => {
        // CHANGE REFERENCE DATA of the PIN: the first one fails as a pulled card would.
        if (!pulled && command[1] === 0x24 && command[3] === 0x80) {
          pulled = true;
          return Uint8Array.of(0x6f, 0x00);
        }
        return next(command);
      },
    });
    await expect(personalizeInProcess(card)).rejects.toThrow();
    expect(pulled).toBe(true);
    const result = await personalizeInProcess(card);
    expect(result.authenticatedWith).toBe("default");
    const transport = new InProcessTransport(card);
    try {
      await (await PivSession.open(transport)).verifyPin(NEW_PIN);
    } finally {
      await transport.close();
    }
  });

  it("can run again after a card pulled right after the management key switch", async () => {
    const printed = Buffer.from([0x5c, 0x03, 0x5f, 0xc1, 0x09]);
    let switched = false;
    let pulled = false;
    const card = new VirtualPivCard({
      intercept: (command, next) => {
        if (command[1] === 0xff) switched = true; // SET MANAGEMENT KEY
        // The first write after the switch (PRINTED) never arrives: the card was pulled.
        if (switched && !pulled && command[1] === 0xdb && Buffer.from(command).includes(printed)) {
          pulled = true;
          return Uint8Array.of(0x6f, 0x00);
        }
        return next(command);
      },
    });
    await expect(personalizeInProcess(card)).rejects.toThrow();
    expect(pulled).toBe(true);
    // The PIN and PUK were changed before; the new, unflagged management key is found in PRINTED.
    const result = await personalizeInProcess(card, { currentPin: NEW_PIN, currentPuk: NEW_PUK });
    expect(result.authenticatedWith).toBe("pin-protected");
    const transport = new InProcessTransport(card);
    try {
      const session = await PivSession.open(transport);
      await session.verifyPin(NEW_PIN);
      await session.authenticateWithPinProtectedManagementKey();
    } finally {
      await transport.close();
    }
  });

  it("refuses bad inputs before any APDU", async () => {
    const commands: number[] = [];
    const card = new VirtualPivCard({
      intercept: (command, next) => {
        commands.push(command[1]!);
        return next(command);
      },
    });
    const transport = new InProcessTransport(card);
    try {
      const session = await PivSession.open(transport);
      const sent = commands.length;
      await expect(
        personalizeCard({ session, pki, owner: OWNER, newPin: "123", newPuk: NEW_PUK }),
      ).rejects.toMatchObject({ exitCode: ExitCode.usage });
      await expect(
        personalizeCard({ session, pki, owner: " padded ", newPin: NEW_PIN, newPuk: NEW_PUK }),
      ).rejects.toMatchObject({ exitCode: ExitCode.usage });
      expect(commands.length).toBe(sent);
    } finally {
      await transport.close();
    }
  });
});
