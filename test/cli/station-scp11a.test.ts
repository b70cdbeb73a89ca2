/**
 * SCP11a through the CLI in-process (issue 11), with the virtual card named by
 * HSM_ONBOARD_VIRTUAL_CARD: `card personalize --scp-trust` installs the OCE CA, `pki issue-oce`
 * equips the station, and the station commands that open the officer's card (receipts, write) open
 * SCP11a by default; `--scp11a` without an OCE key is a usage error naming `pki issue-oce`.
 * `receipts --collect` and `update-crl --from-card` open SCP11a too; a card whose OCE CA is another
 * owner's is refused by every one of them (exit 15, from the card's FF33 answer) before any PIN.
 * `station cosign` (two cards: an injected opener per reader) opens each card over SCP11a.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runAgentOnce } from "../../src/agent/agent.js";
import { hostileCard, scpOceCaIdentifiersRequest } from "../../src/card-emulator/hostile-card.js";
import { virtualCardOpener } from "../../src/card-emulator/open-virtual-card.js";
import { provisionScpKey } from "../../src/card-emulator/scp-provision.js";
import { type ApduInterceptor, VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { runCli } from "../../src/cli/main.js";
import { planToYaml } from "../../src/config/plan.js";
import { ExitCode } from "../../src/errors.js";
import { loadPkiDirectory } from "../../src/pki/pki-store.js";
import { createScpVendorCa } from "../../src/pki/scp-certificates.js";
import { type CardOpener, openInProcessCard } from "../../src/secure-element/open-card.js";
import { PivElement } from "../../src/secure-element/piv-element.js";
import { openInventory } from "../../src/station/inventory/open.js";
import { InProcessTransport } from "../../src/transport/in-process.js";
import { initAgent, LAB_PLAN, pins } from "../agent/fixtures.js";
import { createTestContext, runCliInProcess } from "../helpers/cli.js";
import { dryRunIn } from "../security/support.js";
import { stationInitArgs } from "../station/fixtures.js";

const PIN = "24681357";
let work: string;
let vendorDer: Uint8Array;
let vendorCa: Awaited<ReturnType<typeof createScpVendorCa>>;
const env = { HSM_ONBOARD_VIRTUAL_CARD: "card.json" };

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "hsm-onboard-cli-scp11a-"));
  const init = await runCliInProcess(["pki", "init", "--out", "pki", "--owner", "ACME Bank"], { cwd: work });
  expect(init.exitCode, init.stderr).toBe(0);
  const vendor = await createScpVendorCa("CLI Test Card Vendor");
  vendorCa = vendor;
  vendorDer = new Uint8Array(vendor.certificate.rawData);
  await writeFile(join(work, "vendor.pem"), vendor.certificate.toString("pem"));
  const card = VirtualPivCard.fromFile(join(work, "card.json"), { serial: 31_000_011 });
  await provisionScpKey(card, vendor);
  await provisionScpKey(card, vendor, { kid: 0x11 });
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("SCP11a through the station commands (in-process virtual card)", () => {
  it("personalize installs the OCE CA; receipts and write open SCP11a; --scp11a needs the OCE key", async () => {
    const personalize = await runCliInProcess(
      [
        "card",
        "personalize",
        "--pki",
        "pki",
        "--owner",
        "ACME Bank",
        "--officer",
        "Alice",
        "--pin-stdin",
        "--scp-trust",
        "vendor.pem",
      ],
      { cwd: work, env, stdin: `${PIN}\n97531864\n` },
    );
    expect(personalize.exitCode, personalize.stderr).toBe(0);
    expect(personalize.stdout).toMatch(
      /channel SCP11b; OCE CA for SCP11a: token CA key installed \(KID 10\/KVN 1/,
    );
    const state = JSON.parse(await readFile(join(work, "card.json"), "utf8"));
    expect(state.scp.oceCa).toMatchObject({ kid: 0x10, kvn: 1 });

    const init = await runCliInProcess(stationInitArgs("station", "--scp-trust", "vendor.pem"), {
      cwd: work,
    });
    expect(init.exitCode, init.stderr).toBe(0);

    const noKey = await runCliInProcess(["station", "receipts", "--station-dir", "station", "--scp11a"], {
      cwd: work,
      env,
    });
    expect(noKey.exitCode).toBe(ExitCode.usage);
    expect(noKey.stderr).toMatch(/--scp11a: the station has no OCE key .*pki issue-oce/);

    const issue = await runCliInProcess(["pki", "issue-oce", "--pki", "pki", "--station-dir", "station"], {
      cwd: work,
    });
    expect(issue.exitCode, issue.stderr).toBe(0);
    expect(issue.stdout).toMatch(
      /OCE certificate "O=ACME Bank, CN=Station OCE" issued by the token CA of "ACME Bank"/,
    );

    const receipts = await runCliInProcess(["station", "receipts", "--station-dir", "station", "--json"], {
      cwd: work,
      env,
    });
    expect(receipts.exitCode, receipts.stderr).toBe(0);
    expect(receipts.stderr).toMatch(/Secure channel: SCP11a .*accepted the station's OCE certificate/);

    await writeFile(join(work, "lab.yaml"), planToYaml(LAB_PLAN));
    const write = await runCliInProcess(
      [
        "station",
        "write",
        "--plan",
        "lab.yaml",
        "--station-dir",
        "station",
        "--pin-stdin",
        "--scp11a",
        "--json",
      ],
      { cwd: work, env, stdin: `${PIN}\n` },
    );
    expect(write.exitCode, write.stderr).toBe(0);
    expect(JSON.parse(write.stdout).channel).toBe("SCP11a");
  });
});

/** What a PIN try or a write would change on a virtual card file: PIN, PUK (values and counters), objects. */
async function persistent(file: string): Promise<unknown> {
  const s = JSON.parse(await readFile(join(work, file), "utf8"));
  return { pin: s.pin, puk: s.puk, objects: s.objects };
}

describe("station write --allow-plaintext: a card that has shown SCP is never written in clear (docs/DECISIONS.md)", () => {
  /** `station write --allow-plaintext` on card.json answered through `intercept`; every APDU recorded. */
  async function writeThrough(intercept: ApduInterceptor) {
    const wire: { ins: number; cla: number; sw: number }[] = [];
    const openCard: CardOpener = (options) =>
      openInProcessCard(
        VirtualPivCard.fromFile(join(work, "card.json"), {
          intercept: (command, card) => {
            const answer = intercept(command, card);
            wire.push({ cla: command[0]!, ins: command[1]!, sw: (answer.at(-2)! << 8) | answer.at(-1)! });
            return answer;
          },
        }),
        { ...(options.element ? { element: options.element } : {}) },
      );
    const t = createTestContext({ cwd: work, stdin: `${PIN}\n` });
    const argv = ["station", "write", "--plan", "lab.yaml", "--station-dir", "station", "--pin-stdin"];
    const exitCode = await runCli([...argv, "--allow-plaintext", "--json"], { ...t.ctx, openCard });
    await t.settle();
    return { exitCode, stdout: t.stdout(), stderr: t.stderr(), wire };
  }

  const cases: [string, ApduInterceptor, RegExp, number][] = [
    [
      "FF33 (OCE CA identifiers) answered 6F00 after the card's valid SCP chain",
      hostileCard("bad-status-word", { when: scpOceCaIdentifiersRequest, statusWord: 0x6f00 }).intercept,
      /OCE CA identifiers: card answered 6F00.*channel failure, not an older card/,
      0xca,
    ],
    [
      "PSO answered 9000 unseen, then MUTUAL AUTHENTICATE refused (6985)",
      hostileCard("scp-pso-swallowed").intercept,
      /refused to open SCP11a \(authenticate answered 6985\).*not an older card/,
      0x82,
    ],
  ];
  for (const [name, intercept, reason, last] of cases)
    it(`${name}: exit 15, no PIN, nothing sent after it, the card unchanged`, async () => {
      const before = await persistent("card.json");
      const r = await writeThrough(intercept);
      expect(r.exitCode, r.stderr).toBe(ExitCode.integrity);
      expect(r.stdout + r.stderr).toMatch(reason);
      expect(r.stderr).not.toMatch(/PIN of|plaintext, recorded|WARNING/);
      // The command that failed is the last one the card saw: no plaintext SELECT PIV, GET DATA or VERIFY.
      expect(r.wire.at(-1)!.ins).toBe(last);
      expect(r.wire.map((a) => a.ins)).not.toContain(0x20);
      expect(r.wire.map((a) => a.ins)).not.toContain(0xcb);
      expect(await persistent("card.json")).toEqual(before);
    });
});

describe("receipts --collect and update-crl --from-card under SCP11a; another owner's card refused", () => {
  it("an agent's receipt on the card is collected over SCP11a (PIN inside the channel), then cleared", async () => {
    // One HSM of LAB_PLAN onboards from the card written above (its own SCP11b; dry-run applier).
    const pkiDir = join(work, "pki");
    const testPki = {
      dir: pkiDir,
      pki: await loadPkiDirectory(pkiDir),
      rootPem: new Uint8Array(await readFile(join(pkiDir, "root.pem"))),
      crl: async () => new Uint8Array(),
    };
    const crl = new Uint8Array(await readFile(join(pkiDir, "token-ca.crl.pem")));
    const { stateDir } = await initAgent(work, testPki, { crl, name: "hsm-a" });
    const element = await PivElement.open(
      new InProcessTransport(VirtualPivCard.fromFile(join(work, "card.json")), { readerName: "Virtual" }),
      { channel: { scp: { variant: "b", kvn: 1, trust: { anchors: [vendorDer] } }, allowPlaintext: false } },
    );
    const onboarded = await runAgentOnce({
      stateDir,
      net: await dryRunIn(stateDir),
      element,
      pinSource: pins(PIN),
    });
    expect(onboarded, JSON.stringify(onboarded.error)).toMatchObject({
      ok: true,
      receipt: { written: true },
    });

    const collect = await runCliInProcess(
      ["station", "receipts", "--station-dir", "station", "--collect", "--pin-stdin", "--json"],
      { cwd: work, env, stdin: `${PIN}\n` },
    );
    expect(collect.exitCode, collect.stderr).toBe(0);
    expect(collect.stderr).toMatch(/Secure channel: SCP11a .*accepted the station's OCE certificate/);
    const report = JSON.parse(collect.stdout);
    expect(report.receipts).toHaveLength(1);
    expect(report.receipts[0]).toMatchObject({ serial: "1234567", verified: true, channel: "SCP11b" });
    expect(report.collected.receiptsArchived).toBe(1);
    expect(report.collected.cleared.length).toBeGreaterThan(0);

    const after = await runCliInProcess(["station", "receipts", "--station-dir", "station", "--json"], {
      cwd: work,
      env,
    });
    expect(after.exitCode, after.stderr).toBe(0);
    expect(JSON.parse(after.stdout).receipts).toEqual([]);
  });

  it("update-crl --from-card reads the token CA over SCP11a", async () => {
    const update = await runCliInProcess(
      [
        "station",
        "update-crl",
        "--crl",
        "pki/token-ca.crl.pem",
        "--from-card",
        "--station-dir",
        "station",
        "--json",
      ],
      { cwd: work, env },
    );
    expect(update.exitCode, update.stderr).toBe(0);
    expect(update.stderr).toMatch(/Secure channel: SCP11a .*accepted the station's OCE certificate/);
    expect(JSON.parse(update.stdout).crl).toBeDefined();
  });

  it("a card whose OCE CA is another owner's: write, receipts --collect and update-crl --from-card all exit 15 before any PIN", async () => {
    const init = await runCliInProcess(["pki", "init", "--out", "pki-other", "--owner", "Other Bank"], {
      cwd: work,
    });
    expect(init.exitCode, init.stderr).toBe(0);
    const other = VirtualPivCard.fromFile(join(work, "other.json"), { serial: 31_000_012 });
    await provisionScpKey(other, vendorCa);
    await provisionScpKey(other, vendorCa, { kid: 0x11 });
    const otherEnv = { HSM_ONBOARD_VIRTUAL_CARD: "other.json" };
    const personalize = await runCliInProcess(
      [
        "card",
        "personalize",
        "--pki",
        "pki-other",
        "--owner",
        "Other Bank",
        "--officer",
        "Mallory",
        "--pin-stdin",
        "--scp-trust",
        "vendor.pem",
      ],
      { cwd: work, env: otherEnv, stdin: `${PIN}\n97531864\n` },
    );
    expect(personalize.exitCode, personalize.stderr).toBe(0);
    expect(personalize.stdout).toMatch(/OCE CA for SCP11a: token CA key installed/);

    // A wrong PIN on stdin: had any VERIFY reached the card, its retry counter would have dropped.
    const runs: [string, string[]][] = [
      ["write", ["station", "write", "--plan", "lab.yaml", "--station-dir", "station", "--pin-stdin"]],
      ["receipts --collect", ["station", "receipts", "--station-dir", "station", "--collect", "--pin-stdin"]],
      [
        "update-crl --from-card",
        ["station", "update-crl", "--crl", "pki/token-ca.crl.pem", "--from-card", "--station-dir", "station"],
      ],
    ];
    for (const [what, argv] of runs) {
      const before = await persistent("other.json");
      const r = await runCliInProcess(argv, { cwd: work, env: otherEnv, stdin: "00000000\n" });
      expect(r.exitCode, `${what}: ${r.stderr}`).toBe(ExitCode.integrity);
      expect(r.stderr, what).toMatch(
        /SCP11a: the card's OCE CA \(key identifier [0-9a-f]+\) is not the station's .*another owner's card/i,
      );
      expect(r.stderr, what).not.toMatch(/PIN of/);
      expect(await persistent("other.json"), what).toEqual(before);
    }
  });
});

describe("station cosign under SCP11a (two in-process cards, one per reader)", () => {
  /** `station cosign --reader carrier --signer-reader signer` with each reader an in-process card file. */
  async function cosign(signerFile: string, stdin: string) {
    const t = createTestContext({ cwd: work, stdin });
    const files: Record<string, string> = { carrier: "card.json", signer: signerFile };
    const openCard: CardOpener = async (options) => {
      const file = files[options.reader ?? ""];
      if (!file) throw new Error(`no card behind reader ${options.reader}`);
      return virtualCardOpener(join(work, file))(options);
    };
    const exitCode = await runCli(
      [
        "station",
        "cosign",
        "--reader",
        "carrier",
        "--signer-reader",
        "signer",
        "--station-dir",
        "station",
        "--pin-stdin",
        "--json",
      ],
      { ...t.ctx, openCard },
    );
    await t.settle();
    return { exitCode, stdout: t.stdout(), stderr: t.stderr() };
  }

  it("a co-signer's card of another owner is refused (exit 15) before any PIN; the owner's co-signer signs over SCP11a", async () => {
    const write = await runCliInProcess(
      [
        "station",
        "write",
        "--plan",
        "lab.yaml",
        "--station-dir",
        "station",
        "--pin-stdin",
        "--cosigners",
        "2",
        "--json",
      ],
      { cwd: work, env, stdin: `${PIN}\n` },
    );
    expect(write.exitCode, write.stderr).toBe(0);
    expect(JSON.parse(write.stdout).channel).toBe("SCP11a");

    // other.json: personalised by "Other Bank" (its token CA is the card's OCE CA) in the test above.
    const carrierBefore = await persistent("card.json");
    const otherBefore = await persistent("other.json");
    const refused = await cosign("other.json", "00000000\n00000000\n");
    expect(refused.exitCode, refused.stderr).toBe(ExitCode.integrity);
    expect(refused.stderr).toMatch(/SCP11a: the card's OCE CA .*another owner's card/);
    expect(refused.stderr).not.toMatch(/PIN of/);
    expect(await persistent("other.json")).toEqual(otherBefore);
    expect(await persistent("card.json")).toEqual(carrierBefore);

    const bob = VirtualPivCard.fromFile(join(work, "bob.json"), { serial: 31_000_013 });
    await provisionScpKey(bob, vendorCa);
    await provisionScpKey(bob, vendorCa, { kid: 0x11 });
    const personalize = await runCliInProcess(
      [
        "card",
        "personalize",
        "--pki",
        "pki",
        "--owner",
        "ACME Bank",
        "--officer",
        "Bob",
        "--pin-stdin",
        "--scp-trust",
        "vendor.pem",
      ],
      { cwd: work, env: { HSM_ONBOARD_VIRTUAL_CARD: "bob.json" }, stdin: `${PIN}\n97531864\n` },
    );
    expect(personalize.exitCode, personalize.stderr).toBe(0);

    const signed = await cosign("bob.json", `${PIN}\n${PIN}\n`);
    expect(signed.exitCode, signed.stderr).toBe(0);
    // The carrier (read), the co-signer, the carrier again (write): each over SCP11a.
    expect(
      signed.stderr.match(/Secure channel: SCP11a .*accepted the station's OCE certificate/g),
    ).toHaveLength(3);
    expect(signed.stderr).not.toMatch(/SCP11b|no secure channel/);
    const result = JSON.parse(signed.stdout);
    expect(result).toMatchObject({ signatures: 2, verified: true });

    // The station's inventory keeps the channel of each write and co-signature.
    const inventory = await openInventory({ stationDir: join(work, "station") });
    try {
      const texts = (await inventory.history({ limit: 100 })).map((h) => h.text);
      expect(texts.filter((t) => /^written: .* over SCP11a$/.test(t)).length).toBeGreaterThanOrEqual(2);
      expect(texts.filter((t) => /^co-signed: .* by "Bob" over SCP11a$/.test(t))).toHaveLength(1);
      expect(texts.filter((t) => /^(written|co-signed): /.test(t) && !/ over SCP11a$/.test(t))).toEqual([]);
    } finally {
      await inventory.close();
    }
  });
});
