import { resolve } from "node:path";
import { Command } from "commander";
import { tokenCaOwner } from "../../../pki/ca-facts.js";
import { parseCertificate } from "../../../pki/fast-x509.js";
import { loadTokenCaDirectory, PKI_FILES } from "../../../pki/pki-store.js";
import { issueStationOce, OCE_FILES } from "../../../station/oce.js";
import { addCaKeyOptions, CA_KEY_HELP, type CaKeyCliOptions, caKeySecrets } from "../../ca-key-options.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { STATION_DIR_HELP, stationDirOf } from "../station/common.js";
import { describeCertificate } from "./describe.js";

interface IssueOceOptions extends CaKeyCliOptions {
  pki: string;
  stationDir?: string;
  name?: string;
  force?: boolean;
  json?: boolean;
}

/** `hsm-onboard pki issue-oce --pki DIR [--station-dir DIR] [--name NAME]` (SCP11a, issue 11). */
export function pkiIssueOceCommand(ctx: CliContext): Command {
  const command = new Command("issue-oce")
    .description("Issue a station its SCP11a OCE key and certificate under the owner's token CA")
    .requiredOption("--pki <dir>", `the owner's PKI directory (holds ${PKI_FILES.tokenCaCert} and its key)`)
    .option("--station-dir <dir>", STATION_DIR_HELP)
    .option("--name <name>", 'the station\'s name (certificate CN; default "Station OCE")')
    .option("--force", "replace the station's OCE key and certificate")
    .option("--json", "print the result as JSON");
  return addCaKeyOptions(command)
    .addHelpText(
      "after",
      `
SCP11a (GP Amendment F) makes the card authenticate the station too: the station proves an OCE
certificate issued by the owner's token CA, whose public key the card holds as its OCE CA key
(installed by \`card personalize --scp-trust FILE\`). This command generates a P-256 key in the
station directory (${OCE_FILES.key}, mode 0600) and issues its certificate (${OCE_FILES.cert}:
O = owner, CN = --name; keyUsage keyAgreement; no extendedKeyUsage; 3 years, capped by the token CA).
With them, station write, cosign, receipts and update-crl open SCP11a instead of SCP11b; a card
whose OCE CA is another owner's refuses the station before any PIN is sent (exit 15).
${CA_KEY_HELP}

Examples:
  $ hsm-onboard pki issue-oce --pki ./acme-pki --station-dir ./station --name "Station 1"`,
    )
    .action(async (options: IssueOceOptions) => {
      const pkiDir = resolve(ctx.cwd, options.pki);
      const stationDir = stationDirOf(ctx, options.stationDir);
      const secrets = caKeySecrets(ctx, options, "pki issue-oce");
      let owner: string;
      let issued: Awaited<ReturnType<typeof issueStationOce>>;
      try {
        const loaded = await loadTokenCaDirectory(pkiDir, { secrets });
        try {
          const { tokenCa, state } = loaded;
          owner =
            state.owner ?? tokenCaOwner(new Uint8Array(tokenCa.certificate.rawData)) ?? state.manufacturer;
          issued = await issueStationOce(stationDir, tokenCa, {
            owner,
            name: options.name ?? "Station OCE",
            force: options.force === true,
          });
        } finally {
          await loaded.close();
        }
      } finally {
        secrets.close();
      }
      const parsed = parseCertificate(new Uint8Array(issued.certificate.rawData));
      if (options.json) {
        writeJson(ctx.stdout, {
          stationDir,
          owner,
          oce: {
            ...describeCertificate(issued.certificate, issued.files.cert),
            authorityKeyId: parsed.authorityKeyId ?? null,
          },
          key: issued.files.key,
        });
        return;
      }
      writeLine(
        ctx.stdout,
        `OCE certificate "${issued.certificate.subject}" issued by the token CA of "${owner}" (key identifier ${parsed.authorityKeyId ?? "?"}), valid to ${issued.certificate.notAfter.toISOString()}: ${issued.files.cert}, key ${issued.files.key} (0600)`,
      );
    });
}
