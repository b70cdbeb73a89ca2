import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ExitCode } from "../../src/errors.js";
import { outputLines, runCliInProcess } from "../helpers/cli.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "hsm-onboard-plan-check-"));
  await writeFile(
    join(work, "bad.yaml"),
    `owner: ACME Bank
subnets:
  - name: hsm-mgmt
    cidr: 198.51.100.0/24
    gateway: 198.51.100.1
hsms:
  - serial: "1234567"
    hostname: hsm-fra1-a01
    subnet: hsm-mgmt
    ipv4: 198.51.100.11
  - serial: "1234567"
    hostname: hsm_fra1_a02
    subnet: hsm-mgmt
    ipv4: 198.51.100.11
`,
  );
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const BAD_PROBLEMS = [
  {
    entry: "hsms[1] (serial 1234567)",
    field: "serial",
    message: 'duplicate serial "1234567": also hsms[0] (serial 1234567).serial',
  },
  {
    entry: "hsms[1] (serial 1234567)",
    field: "hostname",
    message:
      'invalid hostname "hsm_fra1_a02" (RFC 1123): label "hsm_fra1_a02" has a character other than a letter, digit or hyphen',
  },
  {
    entry: "hsms[1] (serial 1234567)",
    field: "ipv4",
    message: "198.51.100.11 is already used by hsms[0] (serial 1234567).ipv4",
  },
];

describe("hsm-onboard plan check", () => {
  it.each(["examples/rack-4.yaml", "examples/rack-4.json"])(
    "exits 0 with a one-line summary for %s",
    async (plan) => {
      const result = await runCliInProcess(["plan", "check", plan], { cwd: ROOT });
      expect(result).toMatchObject({ exitCode: ExitCode.ok, stderr: "" });
      const format = plan.endsWith(".json") ? "JSON" : "YAML";
      expect(outputLines(result.stdout)).toEqual([
        `${plan}: valid ${format} plan for "ACME Bank": 4 HSMs, 1 subnet, 4 interfaces, 4 IPv4 addresses, 0 IPv6 addresses; 1 card`,
      ]);
    },
  );

  it("counts interfaces and addresses of a dual-stack plan", async () => {
    const result = await runCliInProcess(["plan", "check", "examples/room-40.yaml"], { cwd: ROOT });
    expect(result.exitCode).toBe(ExitCode.ok);
    expect(result.stdout).toContain(
      "40 HSMs, 2 subnets, 80 interfaces, 80 IPv4 addresses, 80 IPv6 addresses",
    );
  });

  it("says how many cards a plan needs and the HSMs on each (issue 13): 5,000 HSMs on 3 cards", async () => {
    const lines = ["serial,hostname,interface,ipv4_cidr,gateway"];
    for (let i = 0; i < 5000; i++) {
      const host = 10 + i;
      lines.push(`${1_000_001 + i * 7},hsm-a${i + 1},eth0,10.20.${host >> 8}.${host & 255}/16,10.20.0.1`);
    }
    await writeFile(join(work, "hall-5000.csv"), `${lines.join("\n")}\n`);
    const text = await runCliInProcess(["plan", "check", "hall-5000.csv", "--owner", "ACME Bank"], {
      cwd: work,
    });
    expect(text.exitCode).toBe(ExitCode.ok);
    const [summary, set] = outputLines(text.stdout);
    expect(summary).toMatch(/5000 HSMs, .*; 3 cards \((\d+) \+ (\d+) \+ (\d+) HSMs\)$/);
    expect(set).toMatch(
      /^hall-5000\.csv: card set: card 1 serials 1000001\.\.\d+, card 2 serials \d+\.\.\d+, card 3 serials \d+\.\.1034994$/,
    );
    const json = await runCliInProcess(["plan", "check", "hall-5000.csv", "--owner", "ACME Bank", "--json"], {
      cwd: work,
    });
    const parsed = JSON.parse(json.stdout) as { cards: number; hsmsPerCard: number[]; cardRanges: unknown[] };
    expect(parsed.cards).toBe(3);
    expect(parsed.hsmsPerCard.reduce((a, b) => a + b, 0)).toBe(5000);
    expect(summary).toContain(parsed.hsmsPerCard.join(" + "));
    expect(parsed.cardRanges).toHaveLength(3);
  });

  it("takes the owner of a CSV plan from --owner", async () => {
    const result = await runCliInProcess(["plan", "check", "examples/rack-4.csv", "--owner", "ACME Bank"], {
      cwd: ROOT,
    });
    expect(result).toMatchObject({ exitCode: ExitCode.ok, stderr: "" });
    expect(result.stdout).toContain('valid CSV plan for "ACME Bank": 4 HSMs');
  });

  it("exits 23 for a CSV plan without --owner", async () => {
    const result = await runCliInProcess(["plan", "check", "examples/rack-4.csv"], { cwd: ROOT });
    expect(result.exitCode).toBe(ExitCode.planInvalid);
    expect(outputLines(result.stdout)).toEqual([
      "plan.owner: is required: pass --owner NAME with a CSV plan",
    ]);
  });

  it("exits 23 and prints every problem, one per line, as entry.field: message", async () => {
    const result = await runCliInProcess(["plan", "check", "bad.yaml"], { cwd: work });
    expect(result.exitCode).toBe(ExitCode.planInvalid);
    expect(outputLines(result.stdout)).toEqual(
      BAD_PROBLEMS.map((p) => `${p.entry}.${p.field}: ${p.message}`),
    );
    expect(outputLines(result.stderr)).toEqual(["hsm-onboard: bad.yaml: plan invalid: 3 problems"]);
  });

  it("prints {valid, problems, summary} with --json", async () => {
    const good = await runCliInProcess(["plan", "check", "examples/rack-4.yaml", "--json"], { cwd: ROOT });
    expect(good.exitCode).toBe(ExitCode.ok);
    expect(JSON.parse(good.stdout)).toEqual({
      valid: true,
      format: "yaml",
      problems: [],
      summary: { owner: "ACME Bank", hsms: 4, subnets: 1, interfaces: 4, ipv4Addresses: 4, ipv6Addresses: 0 },
      cards: 1,
      hsmsPerCard: [4],
      cardRanges: [{ firstSerial: "1234567", lastSerial: "1234570" }],
      cardBudgetBytes: 45_110,
    });

    const bad = await runCliInProcess(["plan", "check", "bad.yaml", "--json"], { cwd: work });
    expect(bad.exitCode).toBe(ExitCode.planInvalid);
    expect(JSON.parse(bad.stdout)).toEqual({
      valid: false,
      format: "yaml",
      problems: BAD_PROBLEMS,
      summary: null,
      cards: null,
      hsmsPerCard: null,
      cardRanges: null,
      cardBudgetBytes: 45_110,
    });
  });

  it("reports an unparseable plan as one problem with its line", async () => {
    await writeFile(join(work, "broken.json"), '{\n  "owner": "ACME Bank"\n  "subnets": []\n}\n');
    const result = await runCliInProcess(["plan", "check", "broken.json", "--json"], { cwd: work });
    expect(result.exitCode).toBe(ExitCode.planInvalid);
    const output = JSON.parse(result.stdout) as {
      problems: { entry: string; field: string; message: string }[];
    };
    expect(output.problems).toEqual([
      {
        entry: "plan",
        field: "",
        message: "not valid JSON (line 3, column 3): Expected ',' or '}' after property value",
      },
    ]);
  });

  it("exits 2 with one clear line for a missing file", async () => {
    const result = await runCliInProcess(["plan", "check", "missing.yaml"], { cwd: work });
    expect(result).toEqual({
      exitCode: ExitCode.usage,
      stdout: "",
      stderr: "hsm-onboard: cannot read plan missing.yaml: no such file\n",
    });
  });

  it("exits 2 for a directory, also with --json", async () => {
    const result = await runCliInProcess(["plan", "check", ".", "--json"], { cwd: work });
    expect(result.exitCode).toBe(ExitCode.usage);
    expect(result.stderr).toBe("hsm-onboard: cannot read plan .: it is a directory\n");
    // Under --json the failure is also an object on standard output.
    expect(JSON.parse(result.stdout)).toMatchObject({
      error: { code: "ERR_USAGE", exit: ExitCode.usage, message: "cannot read plan .: it is a directory" },
    });
  });

  it("exits 2 without a plan argument or with an unknown format", async () => {
    const missing = await runCliInProcess(["plan", "check"], { cwd: work });
    expect(missing.exitCode).toBe(ExitCode.usage);
    expect(missing.stderr).toContain("missing required argument 'plan'");
    const format = await runCliInProcess(["plan", "check", "bad.yaml", "--format", "xml"], { cwd: work });
    expect(format.exitCode).toBe(ExitCode.usage);
    expect(format.stderr).toContain("Allowed choices are yaml, json, csv");
  });

  it("reads standard input with -", async () => {
    const csv = "serial,hostname,ipv4_cidr\n1234567,hsm-fra1-a01,198.51.100.11/24\n";
    const result = await runCliInProcess(["plan", "check", "-", "--owner", "ACME Bank"], {
      stdin: csv,
      cwd: work,
    });
    expect(result).toMatchObject({ exitCode: ExitCode.ok, stderr: "" });
    expect(result.stdout).toBe(
      '-: valid CSV plan for "ACME Bank": 1 HSM, 1 subnet, 1 interface, 1 IPv4 address, 0 IPv6 addresses; 1 card\n',
    );
  });

  it("shows examples in its help", async () => {
    const result = await runCliInProcess(["plan", "check", "--help"]);
    expect(result.exitCode).toBe(ExitCode.ok);
    expect(result.stdout).toContain("Usage: hsm-onboard plan check [options] <plan>");
    expect(result.stdout).toContain("Examples:");
    expect(result.stdout).toContain('hsm-onboard plan check examples/rack-4.csv --owner "ACME Bank"');
  });
});
