/**
 * No PIN or PUK ever reaches an output, a trace, a log, an audit record or a state file (SPEC.md §6
 * "PINs are never logged; APDU traces redact VERIFY data").
 *
 * Representative flows run with debugging on (HSM_ONBOARD_DEBUG=1 for every CLI run, an APDU trace
 * on every library session): `card personalize --pin-stdin` (and with --ask-current, once with a
 * wrong current PIN), `station write` (wrong PIN, then the right one), `agent run` (wrong PIN, then
 * the right one), `station receipts`; in the library, the station's write, the agent's onboarding
 * (wrong and right PIN), PUK change and PIN unblock (with a wrong PUK first). Then everything is
 * searched for every PIN and PUK used — as text, as hex (both cases, with and without the spaces
 * the trace puts between bytes), as the 8-byte FF-padded block VERIFY sends, as base64, and as a
 * list of byte values: CLI standard output and error, the trace, the agent's log lines, and every
 * file the flows wrote (station directory, agent state directories with state.json, audit.log and
 * the applier's record, PKI and device directories).
 *
 * Not searched: the virtual card's own state file — it *is* the card's secure storage (a real card
 * keeps its PIN inside the chip), so the PIN is supposed to be there.
 */
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { runAgentOnce } from "../../src/agent/agent.js";
import { DryRunBackend } from "../../src/agent/net/dry-run.js";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { VIRTUAL_CARD_ENV } from "../../src/cli/card-opener.js";
import { planToYaml } from "../../src/config/plan.js";
import { ExitCode, WrongPinError } from "../../src/errors.js";
import { WrongPukError } from "../../src/piv/errors.js";
import { PivSession } from "../../src/piv/piv-session.js";
import { PivElement } from "../../src/secure-element/piv-element.js";
import { writeConfigurationToCard } from "../../src/station/write-card.js";
import { InProcessTransport } from "../../src/transport/in-process.js";
import { LAB_PLAN, tempDir } from "../agent/fixtures.js";
import { type CliResult, runCliInProcess } from "../helpers/cli.js";
import { stationInitArgs } from "../station/fixtures.js";
import { agentOnceArgs } from "./support.js";

// Secrets of 6 and 8 bytes (FF padding shows in the 6-byte ones), none of them made of hex digits
// only, so that no hash or key printed in hex can match one by chance.
const SECRETS = {
  firstPin: "Vq3mXy",
  firstPuk: "Lp8wQz2t",
  wrongPin: "Hj5nRt",
  pin: "Bx4kNs7v",
  puk: "Gc6dTy1u",
  laterPuk: "Wm2eFa9k",
  wrongPuk: "Yr7sDe3b",
  unblockedPin: "Nt8qPz",
} as const;

/** Every form a secret could take in a log or a file. */
function formsOf(secret: string): string[] {
  const bytes = Buffer.from(secret, "utf8");
  const padded = Buffer.alloc(8, 0xff);
  bytes.copy(padded);
  const hexForms = (b: Buffer) => {
    const lower = b.toString("hex");
    const spaced = lower.replace(/(..)(?=.)/g, "$1 ");
    const colons = lower.replace(/(..)(?=.)/g, "$1:");
    return [lower, lower.toUpperCase(), spaced, spaced.toUpperCase(), colons, colons.toUpperCase()];
  };
  return [
    secret,
    ...hexForms(bytes),
    ...hexForms(padded),
    bytes.toString("base64").replace(/=+$/, ""),
    padded.toString("base64").replace(/=+$/, ""),
    [...bytes].join(","),
    [...padded].join(","),
  ];
}

/** Where a secret was found: `what` names the output or the file. */
function findSecrets(what: string, text: string): string[] {
  const found: string[] = [];
  for (const [name, secret] of Object.entries(SECRETS)) {
    for (const form of formsOf(secret)) {
      if (text.includes(form)) found.push(`${what}: ${name} as "${form}"`);
    }
  }
  return found;
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

describe("no PIN or PUK in any output, trace, log, audit record or state file", () => {
  let base: { dir: string; cleanup: () => Promise<void> };
  const outputs: { what: string; text: string }[] = [];
  const trace: string[] = [];
  const agentLog: string[] = [];
  /** Card state files: the card's own secure storage, not searched. */
  const cardFiles = new Set<string>();

  beforeAll(async () => {
    base = await tempDir("hsm-security-secrets-");
  });
  afterAll(async () => {
    await base?.cleanup();
  });

  const env = (card?: string) => ({ HSM_ONBOARD_DEBUG: "1", ...(card ? { [VIRTUAL_CARD_ENV]: card } : {}) });
  async function cli(
    name: string,
    argv: string[],
    options: { stdin?: string; card?: string } = {},
  ): Promise<CliResult> {
    const result = await runCliInProcess(argv, {
      cwd: base.dir,
      env: env(options.card),
      ...(options.stdin === undefined ? {} : { stdin: options.stdin }),
    });
    outputs.push(
      { what: `${name} stdout`, text: result.stdout },
      { what: `${name} stderr`, text: result.stderr },
    );
    return result;
  }
  const sink = { debug: (line: string) => trace.push(line) };
  /** The CLI's card, opened in-process with an APDU trace. */
  function traced(): Promise<PivElement> {
    return PivElement.open(new InProcessTransport(VirtualPivCard.fromFile(join(base.dir, "card.json"))), {
      trace: sink,
    });
  }

  test("representative flows with debugging on leave no secret behind", async () => {
    const { firstPin, firstPuk, wrongPin, pin, puk, laterPuk, wrongPuk, unblockedPin } = SECRETS;
    const ok = (r: CliResult) => expect(r.exitCode, r.stderr).toBe(ExitCode.ok);
    const wrong = (r: CliResult) => expect(r.exitCode, r.stderr).toBe(ExitCode.wrongPin);

    // PKI and a factory-fresh card (its state file is the card itself).
    ok(await cli("pki init", ["pki", "init", "--out", "pki", "--owner", "ACME Bank"]));
    VirtualPivCard.fromFile(join(base.dir, "card.json"), { serial: 20_000_001 });
    cardFiles.add(join(base.dir, "card.json"));
    const personalize = [
      "card",
      "personalize",
      "--pki",
      "pki",
      "--owner",
      "ACME Bank",
      "--officer",
      "Alice Example",
      "--pin-stdin",
    ];
    ok(
      await cli("card personalize", personalize, { stdin: `${firstPin}\n${firstPuk}\n`, card: "card.json" }),
    );
    wrong(
      await cli("card personalize, wrong current PIN", [...personalize, "--ask-current"], {
        stdin: `${wrongPin}\n${firstPuk}\n${pin}\n${puk}\n`,
        card: "card.json",
      }),
    );
    ok(
      await cli("card personalize again", [...personalize, "--ask-current"], {
        stdin: `${firstPin}\n${firstPuk}\n${pin}\n${puk}\n`,
        card: "card.json",
      }),
    );

    // Station: init, a write with a wrong PIN, then the right one.
    ok(await cli("station init", stationInitArgs("station")));
    await writeFile(join(base.dir, "plan.yaml"), planToYaml(LAB_PLAN));
    const write = [
      "station",
      "write",
      "--allow-plaintext",
      "--plan",
      "plan.yaml",
      "--station-dir",
      "station",
      "--pin-stdin",
      "--json",
    ];
    wrong(await cli("station write, wrong PIN", write, { stdin: `${wrongPin}\n`, card: "card.json" }));
    ok(await cli("station write", write, { stdin: `${pin}\n`, card: "card.json" }));

    // Agent: factory, a run with a wrong PIN, then the right one; the officer reads the receipt.
    ok(
      await cli("pki issue-device", [
        "pki",
        "issue-device",
        "--pki",
        "pki",
        "--serial",
        "1234567",
        "--out",
        "device",
      ]),
    );
    const factory = (dir: string) => [
      "agent",
      "factory-init",
      "--state-dir",
      dir,
      "--serial",
      "1234567",
      "--trust",
      "pki/root.pem",
      "--device",
      "device",
      "--crl",
      "pki/token-ca.crl.pem",
      "--net",
      "dry-run",
    ];
    ok(await cli("agent factory-init", factory("agent")));
    const run = agentOnceArgs("agent", "--json");
    wrong(await cli("agent run, wrong PIN", run, { stdin: `${wrongPin}\n`, card: "card.json" }));
    ok(await cli("agent run", run, { stdin: `${pin}\n`, card: "card.json" }));
    ok(
      await cli(
        "station receipts",
        ["station", "receipts", "--allow-plaintext", "--station-dir", "station"],
        {
          card: "card.json",
        },
      ),
    );
    ok(await cli("agent audit", ["agent", "audit", "--state-dir", "agent", "--verify"]));
    ok(await cli("agent status", ["agent", "status", "--state-dir", "agent", "--json"]));

    // The library, with an APDU trace: the station's write, the agent (wrong PIN, right PIN).
    {
      const element = await traced();
      try {
        await writeConfigurationToCard({
          element,
          plan: LAB_PLAN,
          stationDir: join(base.dir, "station"),
          pin,
        });
      } finally {
        await element.close();
      }
    }
    ok(await cli("agent factory-init (2)", factory("agent2")));
    for (const attempt of [wrongPin, pin]) {
      const result = await runAgentOnce({
        stateDir: join(base.dir, "agent2"),
        net: await DryRunBackend.open({ file: join(base.dir, "agent2", "network.dry-run.json") }),
        element: await traced(),
        pinSource: { read: async () => attempt },
        log: (line) => agentLog.push(line),
      });
      expect(result.exitCode).toBe(attempt === pin ? ExitCode.ok : ExitCode.wrongPin);
    }
    // PUK change, a wrong PUK, an unblock: CHANGE REFERENCE DATA and RESET RETRY COUNTER in the trace.
    {
      const transport = new InProcessTransport(VirtualPivCard.fromFile(join(base.dir, "card.json")));
      const session = await PivSession.open(transport, { trace: sink });
      try {
        await expect(session.verifyPin(wrongPin)).rejects.toBeInstanceOf(WrongPinError);
        await session.changePuk(puk, laterPuk);
        await expect(session.unblockPin(wrongPuk, unblockedPin)).rejects.toBeInstanceOf(WrongPukError);
        await session.unblockPin(laterPuk, unblockedPin);
        await session.verifyPin(unblockedPin);
      } finally {
        await transport.close();
      }
    }

    // The trace was on and saw every secret-carrying command: VERIFY, CHANGE REFERENCE DATA (PUK),
    // RESET RETRY COUNTER.
    const traceText = trace.join("\n");
    for (const header of ["00 20 00 80", "00 24 00 81", "00 2C 00 80"]) {
      expect(traceText).toContain(`>> ${header} `);
    }

    // Search everything.
    const problems: string[] = [];
    for (const { what, text } of outputs) problems.push(...findSecrets(what, text));
    problems.push(...findSecrets("APDU trace", traceText));
    problems.push(...findSecrets("agent log", agentLog.join("\n")));
    const searched: string[] = [];
    for (const file of await filesUnder(base.dir)) {
      if (cardFiles.has(file)) continue;
      if ((await stat(file)).size > 16 * 1024 * 1024) continue;
      searched.push(relative(base.dir, file));
      problems.push(...findSecrets(relative(base.dir, file), await readFile(file, "latin1")));
    }
    // What was searched includes every kind of file the flows keep.
    for (const expected of [
      /^agent\/state\.json$/,
      /^agent\/audit\.log$/,
      /^agent\/network\.dry-run\.json$/,
      /^agent2\/state\.json$/,
      /^station\//,
    ]) {
      expect(
        searched.some((f) => expected.test(f)),
        `${expected} searched`,
      ).toBe(true);
    }
    expect(problems).toEqual([]);
    // …and showed them as a header and a byte count.
    expect(traceText).toMatch(/>> 00 20 00 80 \[9 bytes redacted\]/);
  }, 60_000);

  test("the search itself finds a secret in each form it looks for (a planted canary)", () => {
    for (const form of formsOf(SECRETS.firstPin)) {
      expect(findSecrets("canary", `... ${form} ...`)).not.toEqual([]);
    }
    // The FF-padded VERIFY data of a 6-byte PIN, as an unredacted trace would print it.
    const verify = `>> 00 20 00 80 08 ${Buffer.from(`${SECRETS.firstPin}\xff\xff`, "latin1")
      .toString("hex")
      .toUpperCase()
      .replace(/(..)(?=.)/g, "$1 ")}`;
    expect(findSecrets("canary", verify)).not.toEqual([]);
  });
});
