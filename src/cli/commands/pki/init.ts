import { resolve } from "node:path";
import { Command } from "commander";
import { initPkiDirectory, PKI_FILES } from "../../../pki/pki-store.js";
import { addCaKeyOptions, CA_KEY_HELP, type CaKeyCliOptions, caKeySecrets } from "../../ca-key-options.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { describeCertificate, describeCrl, fingerprint } from "./describe.js";

interface InitOptions extends CaKeyCliOptions {
  out: string;
  encrypt?: boolean;
  owner?: string;
  force?: boolean;
  json?: boolean;
}

export function pkiInitCommand(ctx: CliContext): Command {
  const command = new Command("init")
    .description("Create a manufacturer root, a token CA, a device CA and an empty CRL (CRL number 1)")
    .requiredOption("--out <dir>", "directory to write the PKI into (created if missing)")
    .option("--owner <name>", "customer organisation whose token CA this is (subject O of the token CA)")
    .option("--encrypt", "encrypt the three key files with one passphrase (PKCS#8, scrypt, AES-256)")
    .option("--force", "replace a PKI that already exists in --out")
    .option("--json", "print the result as JSON");
  return addCaKeyOptions(command)
    .addHelpText(
      "after",
      `
Writes root.pem, token-ca.pem, device-ca.pem with their keys (*.key.pem, mode 0600),
token-ca.crl.pem and pki-state.json. Without --encrypt the keys are plain PKCS#8 files (a
development and test PKI) and every command that signs with one prints a warning; with --encrypt
they are encrypted with the passphrase asked (twice) or read from --ca-passphrase-fd N /
--ca-passphrase-env NAME, at least 12 characters. A customer's token CA key belongs in a token:
see pki issue-token-ca --token-ca-key.
${CA_KEY_HELP}

Examples:
  $ hsm-onboard pki init --out ./pki --owner "ACME Bank" --encrypt
  $ hsm-onboard pki init --out ./pki --force --json`,
    )
    .action(async (options: InitOptions) => {
      const dir = resolve(ctx.cwd, options.out);
      const secrets = caKeySecrets(ctx, options, "pki init");
      let passphrase: string | undefined;
      try {
        passphrase = options.encrypt
          ? await secrets.newPassphrase("passphrase for the new key files")
          : undefined;
      } finally {
        secrets.close();
      }
      const { pki, crl } = await initPkiDirectory(dir, {
        ...(options.owner !== undefined ? { owner: options.owner } : {}),
        force: options.force === true,
        ...(passphrase !== undefined ? { passphrase } : {}),
      });
      if (options.json) {
        writeJson(ctx.stdout, {
          dir,
          root: describeCertificate(pki.root.certificate, PKI_FILES.rootCert),
          tokenCa: describeCertificate(pki.tokenCa.certificate, PKI_FILES.tokenCaCert),
          deviceCa: describeCertificate(pki.deviceCa.certificate, PKI_FILES.deviceCaCert),
          crl: describeCrl(crl, PKI_FILES.crl),
          keysEncrypted: passphrase !== undefined,
        });
        return;
      }
      writeLine(
        ctx.stdout,
        `PKI created in ${dir}: root "${pki.root.certificate.subject}" (SHA-256 ${fingerprint(pki.root.certificate)}), ` +
          `token CA, device CA, empty CRL number 1; keys ${passphrase !== undefined ? "encrypted" : "unencrypted"}`,
      );
    });
}
