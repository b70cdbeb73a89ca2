import { resolve } from "node:path";
import { Command } from "commander";
import { issueDeviceToDirectory } from "../../../pki/pki-store.js";
import { checkSerial } from "../../../pki/profiles.js";
import { addCaKeyOptions, CA_KEY_HELP, type CaKeyCliOptions, caKeySecrets } from "../../ca-key-options.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { day, describeCertificate } from "./describe.js";

interface IssueDeviceOptions extends CaKeyCliOptions {
  pki: string;
  serial: string;
  out: string;
  force?: boolean;
  json?: boolean;
}

export function pkiIssueDeviceCommand(ctx: CliContext): Command {
  const command = new Command("issue-device")
    .description("Create an HSM device key and certificate (subject serialNumber = the HSM serial)")
    .requiredOption("--pki <dir>", "PKI directory written by `pki init`")
    .requiredOption("--serial <serial>", "HSM serial number")
    .requiredOption("--out <dir>", "directory for device.key.pem (mode 0600), device.pem and chain.pem")
    .option("--force", "replace device files that already exist in --out")
    .option("--json", "print the result as JSON");
  return addCaKeyOptions(command)
    .addHelpText(
      "after",
      `
chain.pem holds the device CA and the root, the chain a verifier needs above device.pem.
The output directory is what \`agent factory-init --device DIR\` reads. Only the device CA key is
loaded (its passphrase asked when it is encrypted; a pkcs11: device CA key recorded in
pki-state.json asks the token's PIN).
${CA_KEY_HELP}

Examples:
  $ hsm-onboard pki issue-device --pki ./pki --serial 1234567 --out ./hsm-1234567`,
    )
    .action(async (options: IssueDeviceOptions) => {
      const serial = checkSerial("--serial", options.serial);
      const pkiDir = resolve(ctx.cwd, options.pki);
      const outDir = resolve(ctx.cwd, options.out);
      const secrets = caKeySecrets(ctx, options, "pki issue-device");
      let issued: Awaited<ReturnType<typeof issueDeviceToDirectory>>;
      try {
        issued = await issueDeviceToDirectory(pkiDir, outDir, serial, {
          force: options.force === true,
          secrets,
        });
      } finally {
        secrets.close();
      }
      const { certificate, files } = issued;
      if (options.json) {
        writeJson(ctx.stdout, { serial, certificate: describeCertificate(certificate), files });
        return;
      }
      writeLine(
        ctx.stdout,
        `device certificate for HSM ${serial} written to ${outDir} ` +
          `(serial number ${certificate.serialNumber}, valid until ${day(certificate.notAfter)})`,
      );
    });
}
