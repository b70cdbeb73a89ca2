import { resolve } from "node:path";
import { Command, InvalidArgumentError } from "commander";
import { CRL_REASONS, type CrlReasonName, crlNumberOf } from "../../../pki/crl.js";
import { PKI_FILES, revokeInPki } from "../../../pki/pki-store.js";
import {
  addCaKeyOptions,
  CA_KEY_HELP,
  type CaKeyCliOptions,
  caKeySecrets,
  keyOverride,
} from "../../ca-key-options.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";

interface RevokeOptions extends CaKeyCliOptions {
  tokenCaKey?: string;
  pki: string;
  cert: string;
  reason: CrlReasonName;
  json?: boolean;
}

/** Accepts the RFC 5280 names in any case, with or without dashes: key-compromise, keyCompromise. */
export function parseCrlReason(value: string): CrlReasonName {
  const wanted = value.replace(/[-_\s]/g, "").toLowerCase();
  const reason = CRL_REASONS.find((r) => r.toLowerCase() === wanted);
  if (!reason) throw new InvalidArgumentError(`expected one of ${CRL_REASONS.join(", ")}.`);
  return reason;
}

export function pkiRevokeCommand(ctx: CliContext): Command {
  const command = new Command("revoke")
    .description("Revoke a secure-element certificate of the token CA and sign a new CRL")
    .requiredOption("--pki <dir>", "PKI directory written by `pki init`")
    .requiredOption("--cert <file>", "the certificate to revoke (PEM or DER), issued by this token CA")
    .option("--reason <reason>", `RFC 5280 reason: ${CRL_REASONS.join(", ")}`, parseCrlReason, "unspecified")
    .option(
      "--token-ca-key <file|pkcs11-uri>",
      "sign with this token CA key instead of the one the PKI directory records",
    )
    .option("--json", "print the result as JSON");
  return addCaKeyOptions(command)
    .addHelpText(
      "after",
      `
The new CRL replaces token-ca.crl.pem in the PKI directory with the next CRL number; put it on the
cards (and on the stations) so agents refuse the revoked card. The CRL is signed with the token CA
key: token-ca.key.pem, or the pkcs11: key recorded by pki issue-token-ca --token-ca-key.
${CA_KEY_HELP}

Examples:
  $ hsm-onboard pki revoke --pki ./pki --cert alice-9e.pem --reason key-compromise`,
    )
    .action(async (options: RevokeOptions) => {
      const dir = resolve(ctx.cwd, options.pki);
      const secrets = caKeySecrets(ctx, options, "pki revoke");
      let result: Awaited<ReturnType<typeof revokeInPki>>;
      try {
        result = await revokeInPki(dir, resolve(ctx.cwd, options.cert), options.reason, {
          secrets,
          ...keyOverride(ctx, options.tokenCaKey),
        });
      } finally {
        secrets.close();
      }
      const crlNumber = result.crl ? Number(crlNumberOf(result.crl)) : undefined;
      const crlFile = resolve(dir, PKI_FILES.crl);
      if (options.json) {
        writeJson(ctx.stdout, {
          subject: result.record.subject,
          serialNumber: result.record.serialNumber,
          reason: result.record.reason,
          revokedAt: result.record.revokedAt,
          alreadyRevoked: result.alreadyRevoked,
          ...(crlNumber !== undefined ? { crlNumber, crlFile } : {}),
        });
        return;
      }
      writeLine(
        ctx.stdout,
        result.alreadyRevoked
          ? `"${result.record.subject}" (serial ${result.record.serialNumber}) was already revoked on ${result.record.revokedAt}; CRL unchanged`
          : `revoked "${result.record.subject}" (serial ${result.record.serialNumber}, ${result.record.reason}); ` +
              `CRL number ${crlNumber} written to ${crlFile}`,
      );
    });
}
