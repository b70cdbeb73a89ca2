import { Command } from "commander";
import { UsageError } from "../../../errors.js";
import type { Pkcs11TokenUri } from "../../../pkcs11/uri.js";
import { parseCrlFile, updateStationCrl } from "../../../station/crl-update.js";
import { parseCertificates } from "../../../station/station-dir.js";
import { X509Certificate } from "../../../util/x509.js";
import { parseTokenOption, TOKEN_HELP } from "../../card-opener.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { describeCertificate, describeCrl } from "../pki/describe.js";
import {
  ALLOW_PLAINTEXT_HELP,
  crlLine,
  DEFAULT_CARD_TIMEOUT_SECONDS,
  integerIn,
  openStationCard,
  readInput,
  SCP11A_HELP,
  STATION_DIR_HELP,
  stationDirOf,
} from "./common.js";
import { DB_HELP, openCommandInventory } from "./inventory.js";

interface UpdateCrlOptions {
  readonly allowPlaintext?: boolean;
  readonly scp11a?: boolean;
  readonly crl: string;
  readonly issuer?: string;
  readonly fromCard?: boolean;
  readonly device?: boolean;
  readonly reader?: string;
  readonly token?: Pkcs11TokenUri;
  readonly timeout: number;
  readonly stationDir?: string;
  readonly db?: string;
  readonly json?: boolean;
}

/** `hsm-onboard station update-crl --crl FILE [--issuer FILE | --from-card] [--station-dir DIR]` (SPEC.md §7). */
export function stationUpdateCrlCommand(ctx: CliContext): Command {
  return new Command("update-crl")
    .description("Take in the token CA's current CRL, after checking it chains to the trust anchor")
    .requiredOption("--crl <file>", "the CRL (PEM or DER), e.g. what `pki crl` wrote")
    .option("--issuer <file>", "the token CA certificate that signed it (else: one the station knows)")
    .option("--from-card", "read the token CA certificate from the officer's card")
    .option(
      "--device",
      "a device CA's CRL (--issuer: the device CA): receipts of the devices it revokes show as revoked",
    )
    .option("--reader <name>", "reader for --from-card (substring of its name; implies --from-card)")
    .option("--token <pkcs11-uri>", `${TOKEN_HELP} (implies --from-card)`, parseTokenOption)
    .option(
      "--timeout <seconds>",
      "how long to wait for the card with --from-card",
      integerIn("--timeout", 1, 3600),
      DEFAULT_CARD_TIMEOUT_SECONDS,
    )
    .option("--station-dir <dir>", STATION_DIR_HELP)
    .option("--db <url>", DB_HELP)
    .option("--allow-plaintext", ALLOW_PLAINTEXT_HELP)
    .option("--scp11a", SCP11A_HELP)
    .option("--json", "print the result as JSON")
    .addHelpText(
      "after",
      `
The CRL must be signed by a token CA that the station's trust anchor issued, be current, and carry
a CRL number at least as high as the CRL the station holds for that token CA. The token CA
certificate comes from --issuer, from those the station kept (every card it wrote shows its own), or
from the card (--from-card). Exit status: 0 ok, 2 bad input or unknown issuer, 10 no card,
15 signature wrong or token CA not under the trust anchor, 17 older CRL number, 18 CRL out of date.

Examples:
  $ hsm-onboard station update-crl --crl ./pki/token-ca.crl.pem
  $ hsm-onboard station update-crl --crl token-ca.crl --issuer token-ca.pem --json
  $ hsm-onboard station update-crl --crl token-ca.crl --from-card --reader "Yubico"
  $ hsm-onboard station update-crl --crl token-ca.crl --token 'pkcs11:token=Officer%201?module-path=/usr/lib/softhsm/libsofthsm2.so'
  $ hsm-onboard station update-crl --device --crl device-ca.crl --issuer device-ca.pem`,
    )
    .action(async (options: UpdateCrlOptions) => {
      const dir = stationDirOf(ctx, options.stationDir);
      const crl = parseCrlFile(await readInput(ctx, options.crl), options.crl);
      const issuers: X509Certificate[] = [];
      if (options.issuer !== undefined) {
        issuers.push(...parseCertificates(await readInput(ctx, options.issuer), options.issuer));
      }
      const fromCard = options.fromCard || options.reader !== undefined || options.token !== undefined;
      if (options.device && fromCard) {
        throw new UsageError("--device takes the device CA with --issuer, not from a card");
      }
      if (fromCard) {
        const card = await openStationCard(ctx, {
          ...(options.reader === undefined ? {} : { reader: options.reader }),
          ...(options.token === undefined ? {} : { token: options.token }),
          timeoutSeconds: options.timeout,
          whose: "the officer's card",
          stationDir: dir,
          allowPlaintext: options.allowPlaintext === true,
          scp11a: options.scp11a === true,
        });
        try {
          const identity = await card.element.identity();
          issuers.push(...identity.intermediates.map((der) => new X509Certificate(der)));
        } finally {
          await card.dispose();
        }
      }
      // The CRL event goes into the inventory's journal too (station history shows it).
      const inventory = await openCommandInventory(ctx, options);
      let update: Awaited<ReturnType<typeof updateStationCrl>>;
      try {
        update = await updateStationCrl(dir, crl, {
          issuers,
          inventory,
          ...(options.device ? { device: true } : {}),
        });
      } finally {
        await inventory.close();
      }
      if (options.json) {
        writeJson(ctx.stdout, {
          stationDir: dir,
          unchanged: update.unchanged,
          previousCrlNumber: update.previousNumber === undefined ? null : Number(update.previousNumber),
          crl: describeCrl(update.crl, update.path),
          issuer: describeCertificate(update.issuer),
        });
        return;
      }
      writeLine(ctx.stdout, crlLine(update));
    });
}
