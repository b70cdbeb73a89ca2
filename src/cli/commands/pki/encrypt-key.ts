import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { Command } from "commander";
import { UsageError } from "../../../errors.js";
import { decodePrivateKeyPem, encryptPrivateKeyPkcs8, isEncryptedPkcs8Pem } from "../../../pki/key-files.js";
import { atomicWriteFile } from "../../../util/fs.js";
import { addCaKeyOptions, type CaKeyCliOptions, caKeySecrets } from "../../ca-key-options.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";

interface EncryptKeyOptions extends CaKeyCliOptions {
  key: string;
  json?: boolean;
}

/** `pki encrypt-key --key FILE`: a plain CA key file becomes passphrase-encrypted PKCS#8, in place. */
export function pkiEncryptKeyCommand(ctx: CliContext): Command {
  const command = new Command("encrypt-key")
    .description("Encrypt a plain CA key file in place with a passphrase (PKCS#8, scrypt, AES-256-CBC)")
    .requiredOption("--key <file>", "the key file, e.g. ./pki/token-ca.key.pem")
    .option("--json", "print the result as JSON");
  return addCaKeyOptions(command)
    .addHelpText(
      "after",
      `
The new passphrase (at least 12 characters) is asked twice on the terminal, or read from
--ca-passphrase-fd N or the variable named by --ca-passphrase-env NAME. The file is replaced
atomically (mode 0600); OpenSSL reads it too (openssl pkey -in FILE). Commands that sign with the
key then ask for the passphrase instead of warning about a plain key. For CA keys (root, token CA,
device CA); an HSM's device.key.pem stays plain (the agent reads it unattended) or goes into the HSM.

Examples:
  $ hsm-onboard pki encrypt-key --key ./pki/token-ca.key.pem
  $ hsm-onboard pki encrypt-key --key ./pki/root.key.pem --ca-passphrase-fd 3 3<passphrase.txt`,
    )
    .action(async (options: EncryptKeyOptions) => {
      const path = resolve(ctx.cwd, options.key);
      const pem = await readFile(path, "utf8").catch((error: NodeJS.ErrnoException) => {
        throw new UsageError(`cannot read ${path}: ${error.code ?? error.message}`);
      });
      if (isEncryptedPkcs8Pem(pem)) throw new UsageError(`${path} is already encrypted`);
      const decoded = await decodePrivateKeyPem(pem, path, {
        passphrase: async () => {
          throw new UsageError(`${path} is already encrypted`);
        },
        warn: () => {},
      });
      const { createPrivateKey } = await import("node:crypto");
      const pkcs8 = new Uint8Array(createPrivateKey(pem).export({ type: "pkcs8", format: "der" }));
      const secrets = caKeySecrets(ctx, options, "pki encrypt-key");
      let encrypted: string;
      try {
        encrypted = encryptPrivateKeyPkcs8(pkcs8, await secrets.newPassphrase(`new passphrase of ${path}`));
      } finally {
        secrets.close();
        pkcs8.fill(0);
      }
      await atomicWriteFile(path, encrypted, 0o600);
      if (options.json) {
        writeJson(ctx.stdout, { key: path, curve: decoded.curve, encryption: "PBES2 scrypt AES-256-CBC" });
        return;
      }
      writeLine(
        ctx.stdout,
        `${path} (ECDSA ${decoded.curve}) is now encrypted (PKCS#8, scrypt, AES-256-CBC)`,
      );
    });
}
