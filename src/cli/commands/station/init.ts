import { resolve } from "node:path";
import { Command } from "commander";
import { UsageError } from "../../../errors.js";
import { installScpTrust, readScpTrust } from "../../../secure-element/channel-policy.js";
import { type CrlUpdate, parseCrlFile, updateStationCrl } from "../../../station/crl-update.js";
import { initStation } from "../../../station/init-station.js";
import { parseCertificates, STATION_FILES } from "../../../station/station-dir.js";
import type { X509Certificate } from "../../../util/x509.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { describeCertificate, describeCrl, fingerprint } from "../pki/describe.js";
import { crlLine, readInput, STATION_DIR_HELP, stationDirOf } from "./common.js";

interface InitOptions {
  readonly trust: string;
  readonly crl?: string;
  readonly issuer?: string;
  readonly stationDir?: string;
  readonly scpTrust?: string;
  readonly force?: boolean;
  readonly json?: boolean;
}

/** `hsm-onboard station init --trust ROOT.pem [--crl FILE --issuer TOKEN-CA.pem] [--station-dir DIR]` (SPEC.md §7). */
export function stationInitCommand(ctx: CliContext): Command {
  return new Command("init")
    .description("Set up the station directory with the manufacturer root as its trust anchor")
    .requiredOption("--trust <file>", "the manufacturer root certificate (self-signed CA, PEM or DER)")
    .option("--crl <file>", "the token CA's current CRL (needs --issuer)")
    .option("--issuer <file>", "the token CA certificate that signed --crl")
    .option("--station-dir <dir>", STATION_DIR_HELP)
    .option(
      "--scp-trust <file>",
      "SCP trust anchors (PEM: card vendors' CAs, e.g. Yubico's SD root); without them every PIV card needs --allow-plaintext",
    )
    .option("--force", "replace a different trust anchor (drops the token CAs and CRLs kept under it)")
    .option("--json", "print the result as JSON")
    .addHelpText(
      "after",
      `
The root must be a self-signed CA certificate in its validity period. Running init again with the
same root changes nothing. A CRL is needed before the first "station write": give it here or later
with "station update-crl". Exit status: 0 ok, 2 bad input, 15 CRL signature wrong, 17 older CRL,
18 CRL out of date.

Examples:
  $ hsm-onboard station init --trust ./pki/root.pem
  $ hsm-onboard station init --trust ./pki/root.pem --crl ./pki/token-ca.crl.pem --issuer ./pki/token-ca.pem
  $ hsm-onboard station init --trust root.pem --station-dir /srv/station --json`,
    )
    .action(async (options: InitOptions) => {
      if (options.crl !== undefined && options.issuer === undefined) {
        throw new UsageError("--crl needs --issuer (the token CA certificate that signed it)");
      }
      if (options.issuer !== undefined && options.crl === undefined) {
        throw new UsageError("--issuer is only used with --crl");
      }
      const dir = stationDirOf(ctx, options.stationDir);
      const anchor = await readSingleCertificate(ctx, options.trust);
      const outcome = await initStation(dir, anchor, { force: options.force === true });
      const scpAnchors =
        options.scpTrust === undefined
          ? (await readScpTrust(dir))?.length
          : await installScpTrust(
              dir,
              Buffer.from(await readInput(ctx, options.scpTrust)).toString("utf8"),
              options.scpTrust,
            );
      let crl: CrlUpdate | undefined;
      if (options.crl !== undefined && options.issuer !== undefined) {
        const issuers = parseCertificates(await readInput(ctx, options.issuer), options.issuer);
        crl = await updateStationCrl(dir, parseCrlFile(await readInput(ctx, options.crl), options.crl), {
          issuers,
        });
      }
      if (options.json) {
        writeJson(ctx.stdout, {
          stationDir: dir,
          outcome,
          trustAnchor: describeCertificate(anchor, resolve(dir, STATION_FILES.trustAnchor)),
          crl: crl ? describeCrl(crl.crl, crl.path) : null,
          scpTrustAnchors: scpAnchors ?? null,
        });
        return;
      }
      const verb =
        outcome === "created"
          ? "initialised"
          : outcome === "replaced"
            ? "re-initialised"
            : "already initialised";
      writeLine(
        ctx.stdout,
        `Station ${verb} in ${dir}: trust anchor "${anchor.subject}" (SHA-256 ${fingerprint(anchor)}, valid until ${anchor.notAfter.toISOString()})`,
      );
      writeLine(
        ctx.stdout,
        scpAnchors !== undefined
          ? `SCP trust: ${scpAnchors} anchor(s) installed; the SCP11 channel is required for every card`
          : "SCP trust: none installed: station commands refuse every PIV card (exit 11) unless --allow-plaintext; --scp-trust FILE installs the card vendors' CAs",
      );
      if (crl) writeLine(ctx.stdout, crlLine(crl));
      else
        writeLine(
          ctx.stdout,
          "No CRL yet: run hsm-onboard station update-crl --crl FILE before the first station write.",
        );
    });
}

async function readSingleCertificate(ctx: CliContext, file: string): Promise<X509Certificate> {
  const certificates = parseCertificates(await readInput(ctx, file), file);
  const [only] = certificates;
  if (!only || certificates.length !== 1) {
    throw new UsageError(`${file} holds ${certificates.length} certificates; give exactly the root`);
  }
  return only;
}
