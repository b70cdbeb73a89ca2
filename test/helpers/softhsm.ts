/**
 * SoftHSM2 tokens for tests (TESTBED.md, SoftHSM2): each token lives in its own temporary directory
 * with its own softhsm2.conf, initialised with `softhsm2-util --init-token --free`, and is removed
 * again by `dispose()`.
 *
 * SoftHSM2 reads SOFTHSM2_CONF when the module is initialised (C_Initialize). The module registry
 * finalises the module when its last user closes, so a test that opens its token after creating it
 * and closes everything before the next test gets that test's configuration. Two tokens from two
 * helpers cannot be open in one process at the same time; run such tests in sequence.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** Where Debian, Ubuntu, Fedora and Homebrew put the module; HSM_ONBOARD_SOFTHSM_MODULE overrides. */
const MODULE_CANDIDATES = [
  "/usr/lib/softhsm/libsofthsm2.so",
  "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
  "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
  "/usr/lib64/pkcs11/libsofthsm2.so",
  "/usr/local/lib/softhsm/libsofthsm2.so",
  "/opt/homebrew/lib/softhsm/libsofthsm2.so",
];

export function findSoftHsmModule(): string | undefined {
  const override = process.env.HSM_ONBOARD_SOFTHSM_MODULE;
  if (override) return override;
  return MODULE_CANDIDATES.find((path) => existsSync(path));
}

function onPath(command: string): boolean {
  return (process.env.PATH ?? "")
    .split(":")
    .filter(Boolean)
    .some((dir) => existsSync(join(dir, command)));
}

function pkcs11jsInstalled(): boolean {
  try {
    createRequire(import.meta.url).resolve("pkcs11js");
    return true;
  } catch {
    return false;
  }
}

/** Why SoftHSM2 tests cannot run here, or undefined when they can. */
export function softHsmUnavailableReason(): string | undefined {
  if (!pkcs11jsInstalled()) return "the optional pkcs11js binding is not installed";
  if (!findSoftHsmModule()) return "the SoftHSM2 module (package softhsm2) is not installed";
  if (!onPath("softhsm2-util")) return "softhsm2-util (package softhsm2) is not on PATH";
  return undefined;
}

/** Why OpenSC cross-checks cannot run here, or undefined when they can. */
export function pkcs11ToolUnavailableReason(): string | undefined {
  return onPath("pkcs11-tool") ? undefined : "pkcs11-tool (package opensc) is not on PATH";
}

export interface SoftHsmToken {
  readonly dir: string;
  readonly confPath: string;
  readonly modulePath: string;
  readonly label: string;
  readonly userPin: string;
  readonly soPin: string;
  /** Environment for child processes (softhsm2-util, pkcs11-tool) that must see this token. */
  readonly env: NodeJS.ProcessEnv;
  /** Runs pkcs11-tool against this token (module and token label filled in). */
  pkcs11Tool(args: readonly string[]): Promise<{ stdout: string; stderr: string }>;
  /** Removes the token directory and restores SOFTHSM2_CONF. Close every session first. */
  dispose(): Promise<void>;
}

let counter = 0;

export async function createSoftHsmToken(
  options: { label?: string; userPin?: string; soPin?: string } = {},
): Promise<SoftHsmToken> {
  const modulePath = findSoftHsmModule();
  if (!modulePath) throw new Error("SoftHSM2 module not found");
  const dir = await mkdtemp(join(tmpdir(), "hsm-onboard-softhsm-"));
  const label = options.label ?? `hsm-onboard-test-${process.pid}-${++counter}`;
  const userPin = options.userPin ?? "123456";
  const soPin = options.soPin ?? "12345678";
  const confPath = join(dir, "softhsm2.conf");
  try {
    await mkdir(join(dir, "tokens"));
    await writeFile(
      confPath,
      `directories.tokendir = ${join(dir, "tokens")}\nobjectstore.backend = file\nlog.level = ERROR\n`,
    );
    const env = { ...process.env, SOFTHSM2_CONF: confPath };
    await execFileAsync(
      "softhsm2-util",
      ["--init-token", "--free", "--label", label, "--pin", userPin, "--so-pin", soPin],
      { env },
    );
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  const previousConf = process.env.SOFTHSM2_CONF;
  // The in-process module reads the variable at C_Initialize.
  process.env.SOFTHSM2_CONF = confPath;
  const env = { ...process.env, SOFTHSM2_CONF: confPath };
  let disposed = false;
  return {
    dir,
    confPath,
    modulePath,
    label,
    userPin,
    soPin,
    env,
    async pkcs11Tool(args) {
      const { stdout, stderr } = await execFileAsync(
        "pkcs11-tool",
        ["--module", modulePath, "--token-label", label, ...args],
        { env, encoding: "utf8" },
      );
      return { stdout, stderr };
    },
    async dispose() {
      if (disposed) return;
      disposed = true;
      if (process.env.SOFTHSM2_CONF === confPath) {
        if (previousConf === undefined) delete process.env.SOFTHSM2_CONF;
        else process.env.SOFTHSM2_CONF = previousConf;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
