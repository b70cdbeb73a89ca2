import { resolve } from "node:path";
import { Command } from "commander";
import { UsageError } from "../../../errors.js";
import { spkiSha256 } from "../../../pki/ca-facts.js";
import { issueTokenCaToDirectory, PKI_FILES } from "../../../pki/pki-store.js";
import { addCaKeyOptions, CA_KEY_HELP, type CaKeyCliOptions, caKeySecrets } from "../../ca-key-options.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { describeCertificate, describeCrl } from "./describe.js";

interface IssueTokenCaOptions extends CaKeyCliOptions {
  pki: string;
  tokenCaKey?: string;
  newKey?: boolean;
  encrypt?: boolean;
  owner: string;
  out: string;
  force?: boolean;
  json?: boolean;
}

export function pkiIssueTokenCaCommand(ctx: CliContext): Command {
  const command = new Command("issue-token-ca")
    .description("Issue an owner its own token CA under the manufacturer root (the owner's PKI directory)")
    .requiredOption(
      "--pki <dir>",
      "the manufacturer's PKI directory (written by `pki init`; holds the root key)",
    )
    .requiredOption("--owner <name>", "the customer organisation (subject O and the only O it may issue)")
    .requiredOption("--out <dir>", "the owner's new PKI directory (created if missing)")
    .option(
      "--token-ca-key <pkcs11-uri>",
      "keep the token CA key in a PKCS#11 token (pkcs11:token=…;object=…?module-path=…) instead of a file",
    )
    .option("--new-key", "with --token-ca-key: generate the key pair (P-384) on the token first")
    .option("--encrypt", "write token-ca.key.pem encrypted with a passphrase (PKCS#8, scrypt, AES-256)")
    .option("--force", "replace a PKI that already exists in --out")
    .option("--json", "print the result as JSON");
  return addCaKeyOptions(command)
    .addHelpText(
      "after",
      `
The token CA carries name constraints (permitted subtree O = owner) and a CA-level extended key
usage (token-auth, config-signing): it can certify that owner's cards only, never another owner's
and never an HSM. --out receives token-ca.pem, token-ca.key.pem (mode 0600), root.pem (certificate
only), token-ca.crl.pem (empty, CRL number 1) and pki-state.json: no root or device CA key. Use it
with \`card personalize --pki\`, \`pki revoke --pki\` and \`pki crl --pki\`. The printed SPKI SHA-256
is what \`agent factory-init --owner-ca\` pins.

With --token-ca-key pkcs11:… the key stays in the token (SoftHSM2, an HSM, a USB token): no
token-ca.key.pem is written, pki-state.json records the URI (never a PIN), the token receives the
token CA certificate next to the key, and card personalize, pki revoke and pki crl sign there.
--new-key generates the key pair on the token (private, sensitive, never extractable); without it
the token must already hold the private key and its public key object (e.g. from pkcs11-tool
--keypairgen --key-type EC:secp384r1).
${CA_KEY_HELP}

Examples:
  $ hsm-onboard pki issue-token-ca --pki ./manufacturer --owner "ACME Bank" --out ./acme-pki --encrypt
  $ hsm-onboard pki issue-token-ca --pki ./manufacturer --owner "ACME Bank" --out ./acme-pki \\
      --token-ca-key 'pkcs11:token=acme-ca;object=token-ca?module-path=/usr/lib/softhsm/libsofthsm2.so' --new-key`,
    )
    .action(async (options: IssueTokenCaOptions) => {
      const manufacturerDir = resolve(ctx.cwd, options.pki);
      const outDir = resolve(ctx.cwd, options.out);
      if (options.newKey && options.tokenCaKey === undefined) {
        throw new UsageError("--new-key needs --token-ca-key pkcs11:… (where to generate the key)");
      }
      if (options.encrypt && options.tokenCaKey !== undefined) {
        throw new UsageError("--encrypt is for a key file; a key in a token has no file to encrypt");
      }
      const secrets = caKeySecrets(ctx, options, "pki issue-token-ca");
      let result: Awaited<ReturnType<typeof issueTokenCaToDirectory>>;
      try {
        result = await issueTokenCaToDirectory(manufacturerDir, options.owner, outDir, {
          force: options.force === true,
          secrets,
          ...(options.tokenCaKey !== undefined
            ? { tokenCaKey: { reference: options.tokenCaKey, generate: options.newKey === true } }
            : {}),
          ...(options.encrypt
            ? { newPassphrase: () => secrets.newPassphrase("passphrase for the new token-ca.key.pem") }
            : {}),
        });
      } finally {
        secrets.close();
      }
      const { tokenCa, crl, state } = result;
      const keyAt = state.keys?.tokenCa ?? PKI_FILES.tokenCaKey;
      const spki = spkiSha256(tokenCa.certificate);
      if (options.json) {
        writeJson(ctx.stdout, {
          dir: outDir,
          owner: options.owner,
          tokenCa: {
            ...describeCertificate(tokenCa.certificate, PKI_FILES.tokenCaCert),
            spkiSha256: spki,
            key: keyAt,
            keyEncrypted: options.encrypt === true,
          },
          crl: describeCrl(crl, PKI_FILES.crl),
        });
        return;
      }
      writeLine(
        ctx.stdout,
        `token CA for "${options.owner}" written to ${outDir} (SPKI SHA-256 ${spki}); ` +
          `key ${state.keys?.tokenCa ? `in ${keyAt}` : `${keyAt}${options.encrypt ? " (encrypted)" : " (unencrypted)"}`}; empty CRL number 1`,
      );
    });
}
