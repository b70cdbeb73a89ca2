/**
 * `hsm-onboard agent …` in-process: factory-init, run (one card, an in-process virtual card given by
 * HSM_ONBOARD_VIRTUAL_CARD, the dry-run applier), status and audit, with their exit codes.
 */
import { closeSync, openSync } from "node:fs";
import { copyFile, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { hostileCard, scpAuthenticate } from "../../src/card-emulator/hostile-card.js";
import { provisionScpKey } from "../../src/card-emulator/scp-provision.js";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { VIRTUAL_CARD_ENV } from "../../src/cli/card-opener.js";
import { resolveStateDir } from "../../src/cli/commands/agent/state-dir.js";
import { runCli } from "../../src/cli/main.js";
import { ExitCode } from "../../src/errors.js";
import { createScpVendorCa } from "../../src/pki/scp-certificates.js";
import { type CardOpener, openInProcessCard } from "../../src/secure-element/open-card.js";
import {
  createTestPki,
  examplePlan,
  PIN,
  personalizeCard,
  type TestPki,
  tempDir,
  WRONG_PIN,
  writeConfig,
} from "../agent/fixtures.js";
import { createTestContext, outputLines, runCliInProcess } from "../helpers/cli.js";

let base: { dir: string; cleanup: () => Promise<void> };
let testPki: TestPki;
let crlFile: string;
let deviceDir: string;
let stateDir: string;
let cardFile: string;

beforeAll(async () => {
  base = await tempDir("hsm-cli-agent-");
  testPki = await createTestPki(base.dir);
  const crl = await testPki.crl(1);
  crlFile = join(base.dir, "token-ca.crl");
  await writeFile(crlFile, crl);
  deviceDir = join(base.dir, "hsm-1234567");
  stateDir = join(base.dir, "agent");
  cardFile = join(base.dir, "card.json");
  const issued = await runCliInProcess([
    "pki",
    "issue-device",
    "--pki",
    testPki.dir,
    "--serial",
    "1234567",
    "--out",
    deviceDir,
  ]);
  expect(issued.exitCode, issued.stderr).toBe(0);
  const { card } = await personalizeCard(testPki.pki.tokenCa, { path: cardFile });
  await writeConfig(card, await examplePlan("rack-4.yaml"), { sequence: 7, crl });
});
afterAll(async () => {
  await base.cleanup();
});

const agentEnv = () => ({ [VIRTUAL_CARD_ENV]: cardFile });

/** `agent factory-init` of HSM `serial` into `dir`: the test PKI's root, the device identity in deviceDir; `more` appended. */
const factoryInitArgs = (dir: string, serial: string, ...more: string[]) => [
  "agent",
  "factory-init",
  "--state-dir",
  dir,
  "--serial",
  serial,
  "--trust",
  join(testPki.dir, "root.pem"),
  "--device",
  deviceDir,
  ...more,
];

describe("agent CLI", () => {
  test("factory-init installs the trust anchor and device identity", async () => {
    const result = await runCliInProcess(
      factoryInitArgs(stateDir, "1234567", "--crl", crlFile, "--net", "dry-run"),
    );
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toMatch(
      /HSM 1234567 initialised .*network applier dry-run \(dry run: nothing will be applied\).* quorum 1, CRL number 1/,
    );
    const again = await runCliInProcess(factoryInitArgs(stateDir, "1234567"));
    expect(again.exitCode).toBe(2);
    expect(again.stderr).toMatch(/already holds an agent state/);
  });

  test("factory-init refuses a device certificate for another serial (exit 2)", async () => {
    const result = await runCliInProcess(factoryInitArgs(join(base.dir, "wrong"), "7654321", "--json"));
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toMatch(/not 7654321/);
  });

  test("status before any card: waiting for the factory stage to end", async () => {
    const result = await runCliInProcess(["agent", "status", "--state-dir", stateDir, "--json"]);
    expect(result.exitCode).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ stage: "factory", serial: "1234567", addresses: [] });
  });

  test("run --once requires the secure channel by default: no SCP trust anchor and no --allow-plaintext → exit 11 before any PIN", async () => {
    const cardBefore = await readFile(cardFile);
    const result = await runCliInProcess(
      ["agent", "run", "--state-dir", stateDir, "--once", "--json", "--pin-stdin"],
      { stdin: `${PIN}\n`, env: agentEnv() },
    );
    expect(result.exitCode, result.stderr).toBe(11);
    expect(result.stderr).toMatch(
      /no SCP trust anchor installed \(agent factory-init --scp-trust FILE\): every PIV card will be refused/,
    );
    expect(JSON.parse(result.stdout)).toMatchObject({ error: { code: "ERR_SCP_UNAVAILABLE", exit: 11 } });
    expect(result.stdout + result.stderr).toMatch(
      /SCP11 secure channel is required and no SCP trust anchor is installed/,
    );
    expect(result.stderr).not.toMatch(/PIN verified/);
    // Nothing applied, nothing written onto the card.
    await expect(readFile(join(stateDir, "network.dry-run.json"), "utf8")).rejects.toThrow();
    expect(Buffer.compare(await readFile(cardFile), cardBefore)).toBe(0);
  });

  test("run --once with a wrong PIN exits 13 and leaves the network alone", async () => {
    const result = await runCliInProcess(
      ["agent", "run", "--allow-plaintext", "--state-dir", stateDir, "--once", "--json", "--pin-stdin"],
      { stdin: `${WRONG_PIN}\n`, env: agentEnv() },
    );
    expect(result.exitCode).toBe(13);
    expect(JSON.parse(result.stdout)).toMatchObject({ ok: false, exitCode: 13, stage: "waiting-for-card" });
    await expect(readFile(join(stateDir, "network.dry-run.json"), "utf8")).rejects.toThrow();
  });

  test("run --once configures the HSM from the card: one status line per step, a JSON result; --pin-fd with --pin-prompt-fd tells the front panel the card and officer", async () => {
    // The front panel's two descriptors: the PIN comes in on one, the prompt goes out on the other.
    const pinFile = join(base.dir, "front-panel-pin");
    const promptFile = join(base.dir, "front-panel-prompt");
    await writeFile(pinFile, `${PIN}\n`, { mode: 0o600 });
    const pinFd = openSync(pinFile, "r"); // closed by the agent's reader
    const promptFd = openSync(promptFile, "w");
    let result: Awaited<ReturnType<typeof runCliInProcess>>;
    try {
      result = await runCliInProcess(
        [
          "agent",
          "run",
          "--allow-plaintext",
          "--state-dir",
          stateDir,
          "--once",
          "--json",
          "--pin-fd",
          String(pinFd),
          "--pin-prompt-fd",
          String(promptFd),
        ],
        { env: agentEnv() },
      );
    } finally {
      closeSync(promptFd);
    }
    expect(result.exitCode, result.stderr).toBe(0);
    const prompts = (await readFile(promptFile, "utf8")).split("\n").filter((l) => l !== "");
    expect(prompts.map((l) => JSON.parse(l))).toEqual([
      {
        for: "PIN",
        hsmSerial: "1234567",
        owner: "ACME Bank",
        officer: "Alice Officer",
        subject: expect.stringContaining("Alice Officer"),
        cardSerial: expect.stringMatching(/^\d+$/),
        triesLeft: 2,
      },
    ]);
    expect(prompts.join("")).not.toContain(PIN);
    const { cardSerial } = JSON.parse(prompts[0]!) as { cardSerial: string };
    expect(outputLines(result.stderr)).toContain(
      `agent: asking for the PIN of Alice Officer (ACME Bank, card serial ${cardSerial}, 2 tries left)`,
    );
    expect(JSON.parse(result.stdout)).toMatchObject({
      dryRun: true,
      ok: true,
      serial: "1234567",
      hostname: "hsm-fra1-a01",
      addresses: ["198.51.100.11/24"],
      sequence: 7,
      receipt: { written: true },
    });
    const steps = outputLines(result.stderr);
    expect(steps).toEqual(
      expect.arrayContaining([
        "agent: card authenticated: ACME Bank, officer Alice Officer",
        "agent: PIN verified",
        "agent: dry run — nothing applied: hsm-fra1-a01 198.51.100.11/24 recorded only",
      ]),
    );
    expect(result.stderr).not.toContain(PIN);
    const record = JSON.parse(await readFile(join(stateDir, "network.dry-run.json"), "utf8"));
    expect(record.operations[0].commands).toContainEqual([
      "ip",
      "addr",
      "add",
      "198.51.100.11/24",
      "dev",
      "eth0.120",
    ]);
  });

  test("run --once again: the same card is recognised before the PIN (exit 0, no PIN on stdin)", async () => {
    const result = await runCliInProcess(
      ["agent", "run", "--allow-plaintext", "--state-dir", stateDir, "--once", "--pin-stdin"],
      {
        stdin: "",
        env: agentEnv(),
      },
    );
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stderr).toMatch(
      /HSM 1234567 already configured with configuration [0-9a-f]{8}, sequence 7 \(dry run — nothing applied\): nothing changed/,
    );
    expect(result.stderr).not.toMatch(/PIN verified/);
    expect(result.stderr).toMatch(/agent: configured network re-applied: 198\.51\.100\.11\/24/);
  });

  test("status shows stage, owner, sequence, addresses and the last error", async () => {
    const human = await runCliInProcess(["agent", "status", "--state-dir", stateDir]);
    expect(human.exitCode).toBe(0);
    expect(human.stdout).toMatch(/^HSM 1234567: configured/);
    expect(human.stdout).toMatch(/owner: ACME Bank \(pinned at first onboarding\); quorum 1/);
    expect(human.stdout).toMatch(/network applier: dry-run/);
    expect(human.stdout).toMatch(/^host settings: none \(dry run: nothing applied\)$/m);
    expect(human.stdout).toMatch(
      /dry run — nothing applied: hsm-fra1-a01 198\.51\.100\.11\/24 recorded only \(sequence 7,/,
    );
    expect(human.stdout).not.toMatch(/^configured:/m);
    expect(human.stdout).not.toMatch(/last error/);
    const json = JSON.parse(
      (await runCliInProcess(["agent", "status", "--state-dir", stateDir, "--json"])).stdout,
    );
    expect(json).toMatchObject({
      stage: "configured",
      dryRun: true,
      applier: "dry-run",
      hostSettings: "none",
      sequence: 7,
      addresses: ["198.51.100.11/24"],
      interfaces: [{ device: "eth0.120", vlan: 120 }],
    });
  });

  test("status shows the host-settings choice factory-init recorded (human, --json, help)", async () => {
    const cases = [
      {
        args: [],
        applier: "iproute2",
        hostSettings: "hostnamed",
        line: "host settings: hostnamed (hostname through systemd-hostnamed; DNS and NTP as files: resolv.conf, timesyncd drop-in)",
      },
      {
        args: ["--net", "networkd", "--host-settings", "sethostname"],
        applier: "networkd",
        hostSettings: "sethostname",
        line: "host settings: sethostname (hostname set by the agent (sethostname, needs CAP_SYS_ADMIN); DNS and NTP in the .network files)",
      },
      {
        args: ["--host-settings", "none"],
        applier: "iproute2",
        hostSettings: "none",
        line: "host settings: none (hostname not applied; DNS and NTP not applied)",
      },
    ];
    for (const [i, c] of cases.entries()) {
      const dir = join(base.dir, `agent-host-settings-${i}`);
      const init = await runCliInProcess(factoryInitArgs(dir, "1234567", ...c.args));
      expect(init.exitCode, init.stderr).toBe(0);
      const human = await runCliInProcess(["agent", "status", "--state-dir", dir]);
      expect(human.exitCode, human.stderr).toBe(0);
      expect(outputLines(human.stdout)).toContain(c.line);
      const json = JSON.parse(
        (await runCliInProcess(["agent", "status", "--state-dir", dir, "--json"])).stdout,
      );
      expect(json).toMatchObject({ stage: "factory", applier: c.applier, hostSettings: c.hostSettings });
      // The networkd applier's directory is shown with it (factory-init's default here).
      const networkDir = c.applier === "networkd" ? "/etc/systemd/network" : null;
      expect(json.networkDir).toBe(networkDir);
      expect(outputLines(human.stdout)).toContain(
        `network applier: ${c.applier}${networkDir ? ` (.network files in ${networkDir})` : ""}`,
      );
      // The choice read is the one in the state file, not a default of the status command.
      const state = JSON.parse(await readFile(join(dir, "state.json"), "utf8"));
      expect(state.hostSettings).toBe(c.hostSettings);
    }
    const help = await runCliInProcess(["agent", "status", "--help"]);
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toMatch(/--host-settings hostnamed\|sethostname\|none/);
    expect(help.stdout).toMatch(/"hostSettings"/);
  });

  test("audit prints the log; --verify checks the chain and exits 15 once a record is edited", async () => {
    const listed = await runCliInProcess(["agent", "audit", "--state-dir", stateDir, "--verify"]);
    expect(listed.exitCode).toBe(0);
    expect(outputLines(listed.stdout).map((l) => l.split(" ")[2])).toEqual(
      expect.arrayContaining([
        "factory-init",
        "onboarding-failed",
        "configured",
        "reapplied",
        "already-configured",
      ]),
    );
    expect(listed.stderr).toMatch(/audit log intact/);
    const file = join(stateDir, "audit.log");
    const text = await readFile(file, "utf8");
    await writeFile(file, text.replace('"sequence":7', '"sequence":8'));
    const broken = await runCliInProcess(["agent", "audit", "--state-dir", stateDir, "--verify"]);
    expect(broken.exitCode).toBe(15);
    expect(broken.stderr).toMatch(/audit log broken: line \d+: content does not match its hash/);
    await writeFile(file, text);
  });

  test("run --once without a card exits 10", async () => {
    const result = await runCliInProcess(
      [
        "agent",
        "run",
        "--allow-plaintext",
        "--state-dir",
        stateDir,
        "--once",
        "--timeout",
        "1",
        "--pin-stdin",
      ],
      {
        env: { [VIRTUAL_CARD_ENV]: join(base.dir, "no-such-card.json") },
      },
    );
    expect(result.exitCode).toBe(10);
  });

  test("without a terminal and without --pin-fd/--pin-command, run refuses before any card is taken (2)", async () => {
    const result = await runCliInProcess(
      ["agent", "run", "--allow-plaintext", "--state-dir", stateDir, "--once"],
      {
        env: agentEnv(),
      },
    );
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toMatch(/no terminal to read the PIN from: use --pin-fd N or --pin-command CMD/);
    expect(result.stderr).not.toMatch(/card authenticated/);
  });

  test("the state directory defaults to /var/lib/hsm-onboard as root (the unit's StateDirectory=); others must name one", () => {
    const ctx = { cwd: base.dir } as Parameters<typeof resolveStateDir>[0];
    if (process.getuid?.() === 0) expect(resolveStateDir(ctx, undefined)).toBe("/var/lib/hsm-onboard");
    else expect(() => resolveStateDir(ctx, undefined)).toThrow(/--state-dir is required/);
    expect(resolveStateDir(ctx, "agent")).toBe(join(base.dir, "agent"));
  });

  test("--pin-prompt-fd without --pin-fd or --pin-stdin is a usage error (2)", async () => {
    const result = await runCliInProcess(
      ["agent", "run", "--state-dir", stateDir, "--once", "--pin-command", "true", "--pin-prompt-fd", "1"],
      { env: agentEnv() },
    );
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toMatch(/--pin-prompt-fd goes with --pin-fd or --pin-stdin/);
  });

  test("a state directory that was never initialised is a usage error", async () => {
    const result = await runCliInProcess(["agent", "status", "--state-dir", join(base.dir, "nothing")]);
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toMatch(/agent factory-init/);
  });
});

describe("agent run --allow-plaintext: a card that has shown SCP is never read in clear (docs/DECISIONS.md)", () => {
  test("INTERNAL AUTHENTICATE refused (6985) after the card's valid SCP11b chain: exit 15 before any PIN, nothing in clear after it, nothing applied", async () => {
    const vendor = await createScpVendorCa("Agent CLI Downgrade Test Vendor");
    const vendorPem = join(base.dir, "scp-vendor.pem");
    await writeFile(vendorPem, vendor.certificate.toString("pem"));
    const scpState = join(base.dir, "agent-scp");
    const scpCard = join(base.dir, "card-scp.json");
    await copyFile(cardFile, scpCard);
    await provisionScpKey(VirtualPivCard.fromFile(scpCard), vendor);
    const init = await runCliInProcess(
      factoryInitArgs(scpState, "1234567", "--crl", crlFile, "--net", "dry-run", "--scp-trust", vendorPem),
    );
    expect(init.exitCode, init.stderr).toBe(0);

    const hostile = hostileCard("bad-status-word", { when: scpAuthenticate, statusWord: 0x6985 });
    const wire: number[] = [];
    const openCard: CardOpener = (options) =>
      openInProcessCard(
        VirtualPivCard.fromFile(scpCard, {
          intercept: (command, card) => {
            wire.push(command[1]!);
            return hostile.intercept(command, card);
          },
        }),
        { ...(options.element ? { element: options.element } : {}) },
      );
    const cardBefore = await readFile(scpCard);
    const t = createTestContext({ stdin: `${PIN}\n` });
    const exitCode = await runCli(
      ["agent", "run", "--allow-plaintext", "--state-dir", scpState, "--once", "--json", "--pin-stdin"],
      { ...t.ctx, openCard },
    );
    await t.settle();
    expect(exitCode, t.stderr()).toBe(ExitCode.integrity);
    expect(hostile.lies).toBe(1);
    expect(JSON.parse(t.stdout())).toMatchObject({ error: { code: "ERR_SCP_INTEGRITY", exit: 15 } });
    expect(t.stdout() + t.stderr()).toMatch(
      /refused to open SCP11b \(authenticate answered 6985\).*not an older card/,
    );
    expect(t.stderr()).not.toMatch(/PIN verified/);
    // INTERNAL AUTHENTICATE is the last command the card saw: no plaintext SELECT PIV, GET DATA, VERIFY.
    expect(wire.at(-1)).toBe(0x88);
    expect(wire).not.toContain(0x20);
    expect(wire).not.toContain(0xcb);
    await expect(readFile(join(scpState, "network.dry-run.json"), "utf8")).rejects.toThrow();
    expect(Buffer.compare(await readFile(scpCard), cardBefore)).toBe(0);
  });
});
