import { resolve } from "node:path";
import { Command } from "commander";
import { initPkiDirectory, PKI_FILES } from "../../../pki/pki-store.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { describeCertificate, describeCrl, fingerprint } from "./describe.js";

interface InitOptions {
  out: string;
  owner?: string;
  force?: boolean;
  json?: boolean;
}

export function pkiInitCommand(ctx: CliContext): Command {
  return new Command("init")
    .description("Create a manufacturer root, a token CA, a device CA and an empty CRL (CRL number 1)")
    .requiredOption("--out <dir>", "directory to write the PKI into (created if missing)")
    .option("--owner <name>", "customer organisation whose token CA this is (subject O of the token CA)")
    .option("--force", "replace a PKI that already exists in --out")
    .option("--json", "print the result as JSON")
    .addHelpText(
      "after",
      `
Writes root.pem, token-ca.pem, device-ca.pem with their keys (*.key.pem, mode 0600),
token-ca.crl.pem and pki-state.json. The keys are unencrypted: this is a development and test PKI.

Examples:
  $ hsm-onboard pki init --out ./pki --owner "ACME Bank"
  $ hsm-onboard pki init --out ./pki --force --json`,
    )
    .action(async (options: InitOptions) => {
      const dir = resolve(ctx.cwd, options.out);
      const { pki, crl } = await initPkiDirectory(dir, {
        ...(options.owner !== undefined ? { owner: options.owner } : {}),
        force: options.force === true,
      });
      if (options.json) {
        writeJson(ctx.stdout, {
          dir,
          root: describeCertificate(pki.root.certificate, PKI_FILES.rootCert),
          tokenCa: describeCertificate(pki.tokenCa.certificate, PKI_FILES.tokenCaCert),
          deviceCa: describeCertificate(pki.deviceCa.certificate, PKI_FILES.deviceCaCert),
          crl: describeCrl(crl, PKI_FILES.crl),
        });
        return;
      }
      writeLine(
        ctx.stdout,
        `PKI created in ${dir}: root "${pki.root.certificate.subject}" (SHA-256 ${fingerprint(pki.root.certificate)}), ` +
          `token CA, device CA, empty CRL number 1`,
      );
    });
}
