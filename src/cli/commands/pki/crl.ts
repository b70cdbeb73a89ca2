import { extname, resolve } from "node:path";
import { Command, InvalidArgumentError } from "commander";
import { crlNumberOf, encodeCrl } from "../../../pki/crl.js";
import { resignCrl } from "../../../pki/pki-store.js";
import { atomicWriteFile } from "../../../util/fs.js";
import {
  addCaKeyOptions,
  CA_KEY_HELP,
  type CaKeyCliOptions,
  caKeySecrets,
  keyOverride,
} from "../../ca-key-options.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { day, describeCrl } from "./describe.js";

interface CrlOptions extends CaKeyCliOptions {
  tokenCaKey?: string;
  pki: string;
  out: string;
  nextUpdateDays?: number;
  json?: boolean;
}

/** `.der` and `.crl` files get DER (what goes onto a card); anything else PEM. */
export function crlFormatFor(file: string): "der" | "pem" {
  const extension = extname(file).toLowerCase();
  return extension === ".der" || extension === ".crl" ? "der" : "pem";
}

function parseDays(value: string): number {
  const days = Number(value);
  if (!Number.isInteger(days) || days < 1 || days > 3660) {
    throw new InvalidArgumentError("expected a whole number of days from 1 to 3660.");
  }
  return days;
}

export function pkiCrlCommand(ctx: CliContext): Command {
  const command = new Command("crl")
    .description("Sign a fresh CRL of the token CA (next CRL number) and write it")
    .requiredOption("--pki <dir>", "PKI directory written by `pki init`")
    .requiredOption("--out <file>", "where to write the CRL: DER for .der/.crl, PEM otherwise")
    .option("--next-update-days <n>", "days until nextUpdate (default 30, then remembered)", parseDays)
    .option(
      "--token-ca-key <file|pkcs11-uri>",
      "sign with this token CA key instead of the one the PKI directory records",
    )
    .option("--json", "print the result as JSON");
  return addCaKeyOptions(command)
    .addHelpText(
      "after",
      `
Every call signs a new CRL with the next CRL number (agents refuse a CRL older than one they have seen)
and also refreshes token-ca.crl.pem in the PKI directory. It is signed with the token CA key:
token-ca.key.pem, or the pkcs11: key recorded by pki issue-token-ca --token-ca-key.
${CA_KEY_HELP}

Examples:
  $ hsm-onboard pki crl --pki ./pki --out token-ca.crl
  $ hsm-onboard pki crl --pki ./pki --out crl.pem --next-update-days 7`,
    )
    .action(async (options: CrlOptions) => {
      const dir = resolve(ctx.cwd, options.pki);
      const out = resolve(ctx.cwd, options.out);
      const secrets = caKeySecrets(ctx, options, "pki crl");
      let crl: Awaited<ReturnType<typeof resignCrl>>["crl"];
      try {
        ({ crl } = await resignCrl(dir, {
          ...(options.nextUpdateDays !== undefined ? { validityDays: options.nextUpdateDays } : {}),
          secrets,
          ...keyOverride(ctx, options.tokenCaKey),
        }));
      } finally {
        secrets.close();
      }
      const format = crlFormatFor(out);
      await atomicWriteFile(out, encodeCrl(crl, format));
      if (options.json) {
        writeJson(ctx.stdout, { ...describeCrl(crl, out), format });
        return;
      }
      const revoked = crl.entries.length;
      writeLine(
        ctx.stdout,
        `CRL number ${crlNumberOf(crl)} (${revoked} revoked certificate${revoked === 1 ? "" : "s"}, ` +
          `next update ${day(crl.nextUpdate!)}) written to ${out} (${format.toUpperCase()})`,
      );
    });
}
