/**
 * The options every command that signs with a CA key shares (pki init/issue-token-ca/issue-device/
 * revoke/crl, card personalize): where the PIN of a `pkcs11:` key and the passphrase of an encrypted
 * key file come from. Never argv: a file descriptor (`--ca-pin-fd N`, `--ca-passphrase-fd N`, one
 * secret per line in the order asked), an environment variable named on the command line
 * (`--ca-pin-env NAME`: its value is the secret), or the terminal (echo off). A plain key file's
 * warning goes to stderr, one line each time a key is loaded.
 */

import { resolve } from "node:path";
import { type Command, Option } from "commander";
import { UsageError } from "../errors.js";
import { type CaKeySecrets, isPkcs11Uri, parseCaKeyUri } from "../pki/ca-key.js";
import { checkNewPassphrase } from "../pki/key-files.js";
import { type CliContext, writeLine } from "./context.js";
import { parseFd, type SecretSource, secretSource } from "./secrets.js";

export interface CaKeyCliOptions {
  readonly caPinFd?: number;
  readonly caPinEnv?: string;
  readonly caPassphraseFd?: number;
  readonly caPassphraseEnv?: string;
}

function parseEnvName(value: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(value))
    throw new UsageError(`not an environment variable name: ${value}`);
  return value;
}

/** Adds --ca-pin-fd/--ca-pin-env/--ca-passphrase-fd/--ca-passphrase-env to a command. */
export function addCaKeyOptions(command: Command): Command {
  return command
    .addOption(
      new Option(
        "--ca-pin-fd <n>",
        "read the PIN of a pkcs11: CA key's token from file descriptor N",
      ).argParser(parseFd),
    )
    .addOption(
      new Option(
        "--ca-pin-env <name>",
        "read the PIN of a pkcs11: CA key's token from environment variable NAME",
      ).argParser(parseEnvName),
    )
    .addOption(
      new Option(
        "--ca-passphrase-fd <n>",
        "read key-file passphrases from file descriptor N (one per line, in the order asked)",
      ).argParser(parseFd),
    )
    .addOption(
      new Option(
        "--ca-passphrase-env <name>",
        "read the key-file passphrase from environment variable NAME",
      ).argParser(parseEnvName),
    );
}

export const CA_KEY_HELP = `
CA keys: a key file (PKCS#8 PEM; encrypted with a passphrase, or plain, which prints a warning each
time it is loaded) or a key in a PKCS#11 token, named by an RFC 7512 URI such as
  'pkcs11:token=ACME%20CA;object=token-ca?module-path=/usr/lib/softhsm/libsofthsm2.so'
The token's PIN and a file's passphrase are never command-line arguments: they are asked on the
terminal, or read from --ca-pin-fd N / --ca-passphrase-fd N, or from the environment variable named
by --ca-pin-env NAME / --ca-passphrase-env NAME. A wrong PIN or passphrase exits with 13.`;

/** One secret kind (PIN or passphrase) from its fd, its variable or the terminal. */
class SecretChannel {
  #fd: SecretSource | undefined;
  #terminal: SecretSource | undefined;
  constructor(
    private readonly ctx: CliContext,
    private readonly fd: number | undefined,
    private readonly env: string | undefined,
    private readonly fdOption: string,
    private readonly envOption: string,
  ) {
    if (fd !== undefined && env !== undefined)
      throw new UsageError(`use either ${fdOption} or ${envOption}, not both`);
  }

  async read(prompt: string, confirm = false): Promise<string> {
    if (this.env !== undefined) {
      const value = this.ctx.env[this.env];
      if (value === undefined || value === "") {
        throw new UsageError(`${this.envOption} ${this.env}: the variable is not set`);
      }
      return value;
    }
    if (this.fd !== undefined) {
      this.#fd ??= secretSource(this.ctx, { pinFd: this.fd });
      return this.#fd.read(prompt);
    }
    const stdin = this.ctx.stdin as { isTTY?: boolean };
    if (!stdin.isTTY) {
      throw new UsageError(
        `no terminal to ask the ${prompt}: use ${this.fdOption} N or ${this.envOption} NAME`,
      );
    }
    this.#terminal ??= secretSource(this.ctx, {});
    const value = await this.#terminal.read(prompt);
    if (confirm && (await this.#terminal.read(`${prompt} (again)`)) !== value) {
      throw new UsageError(`the two entries of the ${prompt} differ`);
    }
    return value;
  }

  close(): void {
    this.#fd?.close();
    this.#terminal?.close();
  }
}

export interface CaKeyCliSecrets extends CaKeySecrets {
  /** A passphrase for a new key file (asked twice on a terminal, checked for length). */
  newPassphrase(what: string): Promise<string>;
  close(): void;
}

/** The secrets a command's CA key options give; close it when the command is done. */
export function caKeySecrets(ctx: CliContext, options: CaKeyCliOptions, command: string): CaKeyCliSecrets {
  const pin = new SecretChannel(ctx, options.caPinFd, options.caPinEnv, "--ca-pin-fd", "--ca-pin-env");
  const passphrase = new SecretChannel(
    ctx,
    options.caPassphraseFd,
    options.caPassphraseEnv,
    "--ca-passphrase-fd",
    "--ca-passphrase-env",
  );
  // One token holding several CA keys (pki init --root-key … --token-ca-key …) is asked once.
  const pins = new Map<string, Promise<string>>();
  return {
    pin: (what) => {
      let asked = pins.get(what);
      if (!asked) {
        asked = pin.read(what);
        pins.set(what, asked);
      }
      return asked;
    },
    passphrase: (what) => passphrase.read(what),
    warn: (line) => writeLine(ctx.stderr, `${command}: ${line}`),
    async newPassphrase(what) {
      const value = await passphrase.read(what, true);
      checkNewPassphrase(value);
      return value;
    },
    close() {
      pin.close();
      passphrase.close();
    },
  };
}

/**
 * `--token-ca-key FILE|pkcs11:…` as a load option: a file made absolute, a URI checked (no PIN in it)
 * before anything is read.
 */
export function keyOverride(
  ctx: CliContext,
  reference: string | undefined,
): { keyOverride?: { tokenCa: string } } {
  if (reference === undefined) return {};
  if (isPkcs11Uri(reference)) {
    parseCaKeyUri(reference);
    return { keyOverride: { tokenCa: reference } };
  }
  return { keyOverride: { tokenCa: resolve(ctx.cwd, reference) } };
}
