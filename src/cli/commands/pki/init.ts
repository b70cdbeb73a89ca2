import { resolve } from "node:path";
import { Command } from "commander";
import { UsageError } from "../../../errors.js";
import { initPkiDirectory, PKI_FILES } from "../../../pki/pki-store.js";
import { addCaKeyOptions, CA_KEY_HELP, type CaKeyCliOptions, caKeySecrets } from "../../ca-key-options.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { describeCertificate, describeCrl, fingerprint } from "./describe.js";

interface InitOptions extends CaKeyCliOptions {
  out: string;
  encrypt?: boolean;
  rootKey?: string;
  tokenCaKey?: string;
  deviceCaKey?: string;
  newKey?: boolean;
  owner?: string;
  force?: boolean;
  json?: boolean;
}

export function pkiInitCommand(ctx: CliContext): Command {
  const command = new Command("init")
    .description("Create a manufacturer root, a token CA, a device CA and an empty CRL (CRL number 1)")
    .requiredOption("--out <dir>", "directory to write the PKI into (created if missing)")
    .option("--owner <name>", "customer organisation whose token CA this is (subject O of the token CA)")
    .option("--encrypt", "encrypt the key files with one passphrase (PKCS#8, scrypt, AES-256)")
    .option(
      "--root-key <pkcs11-uri>",
      "keep the root key in a PKCS#11 token (pkcs11:token=…;object=…?module-path=…)",
    )
    .option("--token-ca-key <pkcs11-uri>", "keep the token CA key in a PKCS#11 token")
    .option("--device-ca-key <pkcs11-uri>", "keep the device CA key in a PKCS#11 token")
    .option(
      "--new-key",
      "generate the keys named by --root-key/--token-ca-key/--device-ca-key on their tokens (P-384)",
    )
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
--ca-passphrase-env NAME, at least 12 characters. --root-key, --token-ca-key, --device-ca-key
pkcs11:… keep that CA's key in a PKCS#11 token instead (an existing key pair, or one --new-key
generates there): no key file is written, pki-state.json records the URI, the token receives the
certificate next to the key. A customer's own token CA: pki issue-token-ca --token-ca-key.
${CA_KEY_HELP}

Examples:
  $ hsm-onboard pki init --out ./pki --owner "ACME Bank" --encrypt
  $ hsm-onboard pki init --out ./pki --force --json`,
    )
    .action(async (options: InitOptions) => {
      const dir = resolve(ctx.cwd, options.out);
      const secrets = caKeySecrets(ctx, options, "pki init");
      const tokenKeys = {
        ...(options.rootKey !== undefined ? { root: options.rootKey } : {}),
        ...(options.tokenCaKey !== undefined ? { tokenCa: options.tokenCaKey } : {}),
        ...(options.deviceCaKey !== undefined ? { deviceCa: options.deviceCaKey } : {}),
      };
      if (options.newKey && Object.keys(tokenKeys).length === 0) {
        throw new UsageError(
          "--new-key needs --root-key, --token-ca-key or --device-ca-key (where to generate)",
        );
      }
      if (options.encrypt && Object.keys(tokenKeys).length === 3) {
        throw new UsageError("--encrypt: every key is in a token, there is no key file to encrypt");
      }
      let passphrase: string | undefined;
      let result: Awaited<ReturnType<typeof initPkiDirectory>>;
      try {
        passphrase = options.encrypt
          ? await secrets.newPassphrase("passphrase for the new key files")
          : undefined;
        result = await initPkiDirectory(dir, {
          ...(options.owner !== undefined ? { owner: options.owner } : {}),
          force: options.force === true,
          ...(passphrase !== undefined ? { passphrase } : {}),
          tokenKeys,
          generateKeys: options.newKey === true,
          secrets,
        });
      } finally {
        secrets.close();
      }
      const { pki, crl, state } = result;
      const inToken = Object.keys(state.keys ?? {});
      if (options.json) {
        writeJson(ctx.stdout, {
          dir,
          root: describeCertificate(pki.root.certificate, PKI_FILES.rootCert),
          tokenCa: describeCertificate(pki.tokenCa.certificate, PKI_FILES.tokenCaCert),
          deviceCa: describeCertificate(pki.deviceCa.certificate, PKI_FILES.deviceCaCert),
          crl: describeCrl(crl, PKI_FILES.crl),
          keysEncrypted: passphrase !== undefined,
          keysInTokens: state.keys ?? {},
        });
        return;
      }
      writeLine(
        ctx.stdout,
        `PKI created in ${dir}: root "${pki.root.certificate.subject}" (SHA-256 ${fingerprint(pki.root.certificate)}), ` +
          `token CA, device CA, empty CRL number 1; ` +
          (inToken.length === 3
            ? "keys in PKCS#11 tokens"
            : `key files ${passphrase !== undefined ? "encrypted" : "unencrypted"}` +
              (inToken.length > 0 ? ` (in PKCS#11 tokens: ${inToken.join(", ")})` : "")),
      );
    });
}
