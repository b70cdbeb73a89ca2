import { Command } from "commander";
import type { CliContext } from "../../context.js";
import { pkiCrlCommand } from "./crl.js";
import { pkiEncryptKeyCommand } from "./encrypt-key.js";
import { pkiInitCommand } from "./init.js";
import { pkiIssueDeviceCommand } from "./issue-device.js";
import { pkiIssueOceCommand } from "./issue-oce.js";
import { pkiIssueTokenCaCommand } from "./issue-token-ca.js";
import { pkiRevokeCommand } from "./revoke.js";

export function pkiCommand(ctx: CliContext): Command {
  return new Command("pki")
    .description(
      "Development and test PKI: manufacturer root, owners' token CAs, device CA, device certificates, CRL",
    )
    .addCommand(pkiInitCommand(ctx))
    .addCommand(pkiIssueTokenCaCommand(ctx))
    .addCommand(pkiIssueOceCommand(ctx))
    .addCommand(pkiIssueDeviceCommand(ctx))
    .addCommand(pkiRevokeCommand(ctx))
    .addCommand(pkiCrlCommand(ctx))
    .addCommand(pkiEncryptKeyCommand(ctx));
}
