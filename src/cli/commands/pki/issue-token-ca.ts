import { resolve } from "node:path";
import { Command } from "commander";
import { spkiSha256 } from "../../../pki/ca-facts.js";
import { issueTokenCaToDirectory, PKI_FILES } from "../../../pki/pki-store.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { describeCertificate, describeCrl } from "./describe.js";

interface IssueTokenCaOptions {
  pki: string;
  owner: string;
  out: string;
  force?: boolean;
  json?: boolean;
}

export function pkiIssueTokenCaCommand(ctx: CliContext): Command {
  return new Command("issue-token-ca")
    .description("Issue an owner its own token CA under the manufacturer root (the owner's PKI directory)")
    .requiredOption(
      "--pki <dir>",
      "the manufacturer's PKI directory (written by `pki init`; holds the root key)",
    )
    .requiredOption("--owner <name>", "the customer organisation (subject O and the only O it may issue)")
    .requiredOption("--out <dir>", "the owner's new PKI directory (created if missing)")
    .option("--force", "replace a PKI that already exists in --out")
    .option("--json", "print the result as JSON")
    .addHelpText(
      "after",
      `
The token CA carries name constraints (permitted subtree O = owner) and a CA-level extended key
usage (token-auth, config-signing): it can certify that owner's cards only, never another owner's
and never an HSM. --out receives token-ca.pem, token-ca.key.pem (mode 0600), root.pem (certificate
only), token-ca.crl.pem (empty, CRL number 1) and pki-state.json: no root or device CA key. Use it
with \`card personalize --pki\`, \`pki revoke --pki\` and \`pki crl --pki\`. The printed SPKI SHA-256
is what \`agent factory-init --owner-ca\` pins.

Examples:
  $ hsm-onboard pki issue-token-ca --pki ./manufacturer --owner "ACME Bank" --out ./acme-pki`,
    )
    .action(async (options: IssueTokenCaOptions) => {
      const manufacturerDir = resolve(ctx.cwd, options.pki);
      const outDir = resolve(ctx.cwd, options.out);
      const { tokenCa, crl } = await issueTokenCaToDirectory(manufacturerDir, options.owner, outDir, {
        force: options.force === true,
      });
      const spki = spkiSha256(tokenCa.certificate);
      if (options.json) {
        writeJson(ctx.stdout, {
          dir: outDir,
          owner: options.owner,
          tokenCa: { ...describeCertificate(tokenCa.certificate, PKI_FILES.tokenCaCert), spkiSha256: spki },
          crl: describeCrl(crl, PKI_FILES.crl),
        });
        return;
      }
      writeLine(
        ctx.stdout,
        `token CA for "${options.owner}" written to ${outDir} (SPKI SHA-256 ${spki}); empty CRL number 1`,
      );
    });
}
