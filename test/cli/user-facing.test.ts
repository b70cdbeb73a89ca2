/**
 * What a user meets at the command line, run as a real child process (a private build of src/, see
 * test/helpers/pcsc-env.ts) where the process matters — pipes, terminals, files, environment — and
 * in-process for the help texts of every command:
 * - output into a pipe whose reader has gone (`demo | head -1`): no EPIPE stack trace, exit 0;
 * - colours only on a terminal and never under NO_COLOR (`station enroll-totp`);
 * - `version` and `--version`; `--help` without doubled defaults, with the exit-code table, citing
 *   only documents the package ships;
 * - under `--json` a failure is also a JSON object on standard output;
 * - pcscd not running is its own message and code, not "no card".
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Command } from "commander";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildProgram, loadCommandGroups } from "../../src/cli/main.js";
import { ExitCode } from "../../src/errors.js";
import { createTestContext, runCliInProcess } from "../helpers/cli.js";
import {
  buildForChildren,
  cliLauncher,
  PROJECT_ROOT,
  type PrivateBuild,
  requireOrSkipReason,
  toolAvailable,
} from "../helpers/pcsc-env.js";

const ESC = "\u001b[";
const PACKAGE = JSON.parse(readFileSync(join(PROJECT_ROOT, "package.json"), "utf8")) as {
  version: string;
  files: string[];
};

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

let build: PrivateBuild;
let launcher: string;
let scratch: string;
beforeAll(async () => {
  build = await buildForChildren(["cli/main.js"]);
  launcher = await cliLauncher(build);
  scratch = await mkdtemp(join(tmpdir(), "hsm-onboard-cli-"));
}, 180_000);
afterAll(async () => {
  await build?.cleanup();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** The CLI as a child process; `env` replaces the environment but for PATH and HOME. */
function cli(args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [launcher, ...args], {
      env: { PATH: process.env.PATH ?? "", HOME: scratch, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("output into a pipe whose reader has gone", () => {
  it("`demo --hsms 40 | head -1`: the first line arrives, then exit 0 and no stack trace", async () => {
    const child = spawn(process.execPath, [launcher, "demo", "--hsms", "40"], {
      env: { PATH: process.env.PATH ?? "", HOME: scratch },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    // Read the first chunk, then close our end of the pipe, as `head -1` does.
    const first = await new Promise<string>((resolve) =>
      child.stdout.once("data", (c: Buffer) => resolve(c.toString())),
    );
    child.stdout.destroy();
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    expect(first).toMatch(/^hsm-onboard demo: 40 HSMs/);
    expect(stderr).not.toMatch(/EPIPE|Error|at .*\.js:\d+/);
    expect(code).toBe(0);
  }, 120_000);

  it("the shell pipeline `demo | head -1` exits 0 on both sides", () => {
    const r = spawnSync(
      "sh",
      ["-c", `"${process.execPath}" "${launcher}" demo | head -1; echo "status $?"`],
      {
        encoding: "utf8",
        env: { PATH: process.env.PATH ?? "", HOME: scratch },
        timeout: 120_000,
      },
    );
    expect(r.stdout.split("\n")[0]).toMatch(/^hsm-onboard demo: 4 HSMs/);
    expect(r.stdout).toContain("status 0");
    expect(r.stderr).toBe("");
  }, 120_000);
});

describe("station enroll-totp colours", () => {
  it("into a file or a pipe: no ANSI escape sequences, the QR code drawn in plain characters", async () => {
    const r = await cli([
      "station",
      "enroll-totp",
      "--officer",
      "Alice",
      "--station-dir",
      join(scratch, "st1"),
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain(ESC);
    expect(r.stdout).toMatch(/[█▀▄]/);
    expect(r.stdout).toMatch(/^otpauth:\/\/totp\//m);
  });

  const noScript = requireOrSkipReason(
    toolAvailable("script") ? undefined : "script (util-linux) is not on PATH",
  );
  it.skipIf(noScript !== undefined)("on a terminal: colours, unless NO_COLOR is set", () => {
    // script(1) gives the child a pseudo-terminal as standard output.
    const onTerminal = (officer: string, env: Record<string, string>) =>
      spawnSync(
        "script",
        [
          "-qec",
          `"${process.execPath}" "${launcher}" station enroll-totp --officer ${officer} --station-dir "${join(scratch, "st2")}"`,
          "/dev/null",
        ],
        { encoding: "utf8", env: { PATH: process.env.PATH ?? "", HOME: scratch, TERM: "xterm", ...env } },
      );
    const coloured = onTerminal("Bob", {});
    expect(coloured.status).toBe(0);
    expect(coloured.stdout).toContain(ESC);
    const plain = onTerminal("Carol", { NO_COLOR: "1" });
    expect(plain.status).toBe(0);
    expect(plain.stdout).toMatch(/Carol/);
    expect(plain.stdout).not.toContain(ESC);
  });
});

describe("version", () => {
  it("`version` and `--version` print the package's version", async () => {
    // In-process: the private build is not inside the package, so it cannot see package.json.
    for (const argv of [["version"], ["--version"]]) {
      const r = await runCliInProcess(argv);
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toBe(`${PACKAGE.version}\n`);
    }
    const json = await runCliInProcess(["version", "--json"]);
    expect(JSON.parse(json.stdout)).toEqual({
      name: "hsm-onboard",
      version: PACKAGE.version,
      node: process.versions.node,
    });
  });

  it("as a process: `version` exits 0 with one line", async () => {
    const r = await cli(["version"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^\S+\n$/);
  });
});

const allGroups = await loadCommandGroups();

describe("help texts", () => {
  function allCommands(cmd: Command, path: string[] = []): { path: string; command: Command }[] {
    const here = { path: [...path, cmd.name()].join(" "), command: cmd };
    return [here, ...cmd.commands.flatMap((c) => allCommands(c, [...path, cmd.name()]))];
  }
  const commands = allCommands(buildProgram(createTestContext().ctx, allGroups));

  it("no option states its default twice", () => {
    expect(commands.length).toBeGreaterThan(20);
    for (const { path, command } of commands) {
      for (const option of command.options) {
        if (option.defaultValue === undefined) continue;
        expect(option.description, `${path} ${option.flags}`).not.toMatch(/\(default[ :]/);
      }
      // Unwrapped, as commander would print it at any width.
      const help = command.helpInformation().replace(/\s+/g, " ");
      expect(help, path).not.toMatch(/\(default[^)]*\) \(default/);
    }
  });

  it("cite no document the package does not ship; the exit codes are in hsm-onboard --help", async () => {
    for (const { path } of commands) {
      const r = await runCliInProcess([...path.split(" ").slice(1), "--help"]);
      expect(r.exitCode, path).toBe(0);
      expect(r.stdout, path).not.toContain("SPEC.md");
      for (const doc of r.stdout.match(/docs\/[A-Z_]+\.md/g) ?? []) {
        expect(existsSync(join(PROJECT_ROOT, doc)), `${path} cites ${doc}`).toBe(true);
      }
    }
    const root = await runCliInProcess(["--help"]);
    for (const code of Object.values(ExitCode))
      expect(root.stdout).toMatch(new RegExp(`^ +${code}  \\S`, "m"));
    expect(PACKAGE.files).toContain("docs");
  });
});

describe("failures under --json", () => {
  it("a usage error: one-line message on standard error, {error} object on standard output", async () => {
    const r = await cli(["station", "write", "--json"]);
    expect(r.code).toBe(ExitCode.usage);
    expect(r.stderr).toMatch(/required option '--plan <file>' not specified/);
    expect(JSON.parse(r.stdout)).toMatchObject({
      error: { code: "ERR_USAGE", exit: 2, message: "required option '--plan <file>' not specified" },
    });
  });

  it("a typed error from a command: its code, exit status and message", async () => {
    const missing = join(scratch, "no-such-plan.yaml");
    const r = await cli(["plan", "check", missing, "--json"]);
    expect(r.code).toBe(ExitCode.usage);
    const { error } = JSON.parse(r.stdout) as { error: { code: string; exit: number; message: string } };
    expect(error).toMatchObject({ code: "ERR_USAGE", exit: 2 });
    expect(error.message).toContain(missing);
    expect(r.stderr).toBe(`hsm-onboard: ${error.message}\n`);
  });

  it("without --json, nothing on standard output", async () => {
    const r = await cli(["station", "write"]);
    expect(r.code).toBe(ExitCode.usage);
    expect(r.stdout).toBe("");
  });
});

describe("pcscd not running", () => {
  const noBinding = requireOrSkipReason(
    spawnSync(process.execPath, ["-e", "require('pcsclite')"], { cwd: PROJECT_ROOT }).status === 0
      ? undefined
      : "the optional pcsclite binding does not load",
  );
  it.skipIf(noBinding !== undefined)(
    "card status: its own message and code (ERR_PCSC_NO_SERVICE), exit 10, not a card missing",
    async () => {
      const socket = join(scratch, "no-pcscd", "pcscd.comm");
      const r = await cli(["card", "status", "--json"], { PCSCLITE_CSOCK_NAME: socket });
      expect(r.code).toBe(ExitCode.noCard);
      expect(r.stderr).toMatch(/PC\/SC service not available \(is pcscd running\?/);
      expect(r.stderr).not.toMatch(/no card/i);
      expect(JSON.parse(r.stdout)).toMatchObject({ error: { code: "ERR_PCSC_NO_SERVICE", exit: 10 } });
    },
  );
});

describe("the package ships what the help cites", () => {
  it("docs/ exists with the documents the root help names", async () => {
    const root = await runCliInProcess(["--help"]);
    const named = /Documentation: .*\(([^)]+)\)/.exec(root.stdout)?.[1]?.split(", ") ?? [];
    expect(named.length).toBeGreaterThan(3);
    for (const name of named)
      expect(await readFile(join(PROJECT_ROOT, "docs", `${name}.md`), "utf8")).not.toBe("");
  });
});

describe("docs/DEMO.md states what the demo prints", () => {
  it("the first HSM's card I/O row: APDUs exactly, bytes and YubiKey 5 time as rounded", async () => {
    const doc = readFileSync(join(PROJECT_ROOT, "docs", "DEMO.md"), "utf8");
    const row = /^\| first HSM \(k = 0\) +\| (\d+) +\| ~([\d.]+) kB[^|]*\| ~(\d+) ms/m.exec(doc);
    expect(row, "the first-HSM row of the card I/O table").not.toBeNull();
    const [apdus, kB, ms] = [Number(row![1]), Number(row![2]), Number(row![3])];
    const r = await cli(["demo", "--json"]);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as {
      hsms: { card: { apdus: number; bytesOut: number; bytesIn: number; modeledCardMs: number } }[];
    };
    const first = report.hsms[0]!.card;
    expect(first.apdus).toBe(apdus);
    expect(Math.abs((first.bytesOut + first.bytesIn) / 1000 - kB)).toBeLessThan(0.1);
    expect(Math.abs(first.modeledCardMs - ms)).toBeLessThanOrEqual(2);
  }, 120_000);
});
