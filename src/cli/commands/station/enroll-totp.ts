import { Command } from "commander";
import QRCode from "qrcode";
import { base32Encode, enrollTotp, TOTP_PROFILE } from "../../../station/totp.js";
import { type CliContext, colourEnabled, writeJson, writeLine } from "../../context.js";
import { STATION_DIR_HELP, stationDirOf } from "./common.js";

interface EnrollTotpOptions {
  readonly officer: string;
  readonly force?: boolean;
  readonly stationDir?: string;
  readonly json?: boolean;
}

/** `hsm-onboard station enroll-totp --officer NAME [--station-dir DIR]` (SPEC.md §7). */
export function stationEnrollTotpCommand(ctx: CliContext): Command {
  return new Command("enroll-totp")
    .description(
      "Enrol an officer for a TOTP second factor at this station (prints an otpauth URI and QR code)",
    )
    .requiredOption("--officer <name>", "the officer, exactly as the CN of the officer's card certificates")
    .option("--force", "replace the officer's existing enrolment with a new secret")
    .option("--station-dir <dir>", STATION_DIR_HELP)
    .option("--json", "print {officer, uri, …} as JSON instead of the QR code")
    .addHelpText(
      "after",
      `
A new random 20-byte secret (RFC 6238: HMAC-SHA-1, 6 digits, 30 s) is kept in the station directory
(mode 0600). From then on "station write" asks this officer for a code after the PIN; a code is
accepted once, within one step of the station's clock. The output holds the secret: show it only to
the officer. Exit status: 0 ok, 2 already enrolled (use --force) or bad name.

Examples:
  $ hsm-onboard station enroll-totp --officer "Alice Example"
  $ hsm-onboard station enroll-totp --officer "Alice Example" --force --json`,
    )
    .action(async (options: EnrollTotpOptions) => {
      const dir = stationDirOf(ctx, options.stationDir);
      const enrolment = await enrollTotp(dir, options.officer, { force: options.force === true });
      if (options.json) {
        writeJson(ctx.stdout, {
          stationDir: dir,
          officer: enrolment.officer,
          uri: enrolment.uri,
          secret: base32Encode(enrolment.secret),
          algorithm: TOTP_PROFILE.algorithm,
          digits: TOTP_PROFILE.digits,
          periodSeconds: TOTP_PROFILE.periodSeconds,
          replaced: enrolment.replaced,
        });
        return;
      }
      // The terminal renderer draws with ANSI colours; to a file, a pipe or under NO_COLOR the same
      // code is drawn with Unicode block characters only.
      const qr = colourEnabled(ctx)
        ? await QRCode.toString(enrolment.uri, { type: "terminal", small: true })
        : await QRCode.toString(enrolment.uri, { type: "utf8" });
      writeLine(
        ctx.stdout,
        `Officer "${enrolment.officer}" ${enrolment.replaced ? "re-enrolled" : "enrolled"} for TOTP at ${dir} ` +
          `(SHA-1, ${TOTP_PROFILE.digits} digits, ${TOTP_PROFILE.periodSeconds} s).`,
      );
      writeLine(ctx.stdout, "Scan this with the officer's authenticator app (the code is shown once):");
      ctx.stdout.write(qr.endsWith("\n") ? qr : `${qr}\n`);
      writeLine(ctx.stdout, enrolment.uri);
      writeLine(
        ctx.stdout,
        `Secret for manual entry: ${base32Encode(enrolment.secret).replace(/(.{4})(?!$)/g, "$1 ")}`,
      );
    });
}
