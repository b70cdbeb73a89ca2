import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { normalizeDeviceSpec } from "../../../agent/device-identity.js";
import { factoryInit } from "../../../agent/factory.js";
import { HOST_SETTINGS_CHOICES, type HostSettingsChoice } from "../../../agent/host-settings.js";
import { UsageError } from "../../../errors.js";
import { installScpTrust } from "../../../secure-element/channel-policy.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { resolveStateDir, STATE_DIR_HELP } from "./state-dir.js";

interface FactoryInitCliOptions {
  stateDir?: string;
  serial: string;
  trust: string;
  device: string;
  crl?: string;
  owner?: string;
  ownerCa?: string;
  quorum?: number;
  net: "iproute2" | "networkd" | "dry-run";
  networkDir?: string;
  hostSettings?: HostSettingsChoice;
  scpTrust?: string;
  force?: boolean;
  json?: boolean;
}

function parseQuorum(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 16) throw new InvalidArgumentError("expected a number 1..16.");
  return n;
}

async function readInput(path: string, what: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (error) {
    throw new UsageError(`cannot read ${what} ${path}: ${(error as NodeJS.ErrnoException).code ?? error}`);
  }
}

export function agentFactoryInitCommand(ctx: CliContext): Command {
  return new Command("factory-init")
    .description("Install an HSM's trust anchor, device identity, serial, owner and quorum (factory step)")
    .option("--state-dir <dir>", STATE_DIR_HELP)
    .requiredOption("--serial <serial>", "this HSM's serial number (must match the device certificate)")
    .requiredOption("--trust <root.pem>", "the manufacturer root certificate: the only trust anchor")
    .requiredOption(
      "--device <dir|pkcs11-uri>",
      "device key: a `pki issue-device` directory, or pkcs11:token=…;object=…?module-path=…&pin-source=file:/path (never pin-value: the reference is stored)",
    )
    .option("--crl <file>", "the token CA's CRL (PEM or DER); its number becomes the replay floor")
    .option(
      "--owner-ca <token-ca.pem>",
      "bind the HSM now to the owner of this token CA, by its key (otherwise the first onboarding pins it)",
    )
    .option(
      "--owner <name>",
      "the owner's name, shown beside --owner-ca (alone it is refused: a name binds nothing)",
    )
    .option("--quorum <m>", "valid co-signatures a configuration needs (default 1)", parseQuorum)
    .addOption(
      new Option(
        "--net <applier>",
        "network applier of this HSM: iproute2 (kernel only, re-applied at start), networkd (files the OS owns), dry-run (changes nothing; said so everywhere)",
      )
        .choices(["iproute2", "networkd", "dry-run"])
        .default("iproute2"),
    )
    .option(
      "--network-dir <dir>",
      "for --net networkd: where the .network/.netdev files go (default /etc/systemd/network)",
    )
    .addOption(
      new Option(
        "--host-settings <how>",
        "how the configuration's hostname (and with iproute2 DNS/NTP) is applied: hostnamed (default; systemd-hostnamed over D-Bus, no CAP_SYS_ADMIN), sethostname (the agent itself: needs CAP_SYS_ADMIN), none (default with dry-run)",
      ).choices([...HOST_SETTINGS_CHOICES]),
    )
    .option(
      "--scp-trust <file>",
      "SCP trust anchors (PEM: card vendors' CAs): the SCP11 channel is required, and without anchors agent run needs --allow-plaintext",
    )
    .option("--force", "replace an agent state that already exists in --state-dir")
    .option("--json", "print the result as JSON")
    .addHelpText(
      "after",
      `
The device certificate must chain to --trust through the device CA and name --serial; it signs
the receipts the agent writes onto cards. The state directory (mode 0700) holds state.json,
root.pem, the CRLs and the audit log.

Examples:
  $ hsm-onboard agent factory-init --state-dir /var/lib/hsm-onboard --serial 1234567 \\
      --trust pki/root.pem --device hsm-1234567 --crl pki/token-ca.crl.pem
  $ hsm-onboard agent factory-init --state-dir ./agent --serial 1234567 --trust root.pem \\
      --device 'pkcs11:token=hsm;object=device?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/hsm-onboard/token.pin' \\
      --owner-ca acme/token-ca.pem --quorum 2

An owner binding pins the owner's token CA key (SPKI SHA-256): under one manufacturer root every
owner has its own token CA, and only cards of this one configure the HSM.`,
    )
    .action(async (options: FactoryInitCliOptions) => {
      const result = await factoryInit({
        stateDir: resolveStateDir(ctx, options.stateDir),
        serial: options.serial,
        root: await readInput(resolve(ctx.cwd, options.trust), "the trust anchor"),
        device: normalizeDeviceSpec(options.device, ctx.cwd),
        ...(options.crl !== undefined
          ? { crl: await readInput(resolve(ctx.cwd, options.crl), "the CRL") }
          : {}),
        ...(options.owner !== undefined ? { owner: options.owner } : {}),
        ...(options.ownerCa !== undefined
          ? { ownerCa: await readInput(resolve(ctx.cwd, options.ownerCa), "the owner's token CA") }
          : {}),
        ...(options.quorum !== undefined ? { quorum: options.quorum } : {}),
        applier: options.net,
        hostSettings: options.hostSettings ?? (options.net === "dry-run" ? "none" : "hostnamed"),
        ...(options.networkDir !== undefined ? { networkDir: resolve(ctx.cwd, options.networkDir) } : {}),
        ...(options.force ? { force: true } : {}),
      });
      const scpAnchors =
        options.scpTrust === undefined
          ? undefined
          : await installScpTrust(
              result.stateDir,
              Buffer.from(
                await readInput(resolve(ctx.cwd, options.scpTrust), "the SCP trust anchors"),
              ).toString("utf8"),
              options.scpTrust,
            );
      if (options.json) {
        writeJson(ctx.stdout, { ...result, scpTrustAnchors: scpAnchors ?? null });
        return;
      }
      writeLine(
        ctx.stdout,
        `HSM ${result.serial} initialised in ${result.stateDir}: trust anchor "${result.rootSubject}" ` +
          `(SHA-256 ${result.rootSha256.slice(0, 16)}…), device "${result.deviceSubject}", ` +
          `network applier ${result.applier}${result.applier === "dry-run" ? " (dry run: nothing will be applied)" : ""}, ` +
          `host settings ${result.hostSettings}, ` +
          `${result.owner !== undefined ? `owner "${result.owner}" (token CA key ${result.ownerCaSpkiSha256?.slice(0, 16)}…)` : "owner pinned at first onboarding"}, quorum ${result.quorum}` +
          (result.crlNumber !== undefined ? `, CRL number ${result.crlNumber}` : ""),
      );
      writeLine(
        ctx.stdout,
        scpAnchors !== undefined
          ? `SCP trust: ${scpAnchors} anchor(s); the SCP11 channel is required for every card`
          : "SCP trust: none installed: agent run refuses every PIV card (exit 11) unless --allow-plaintext; --scp-trust FILE installs the card vendors' CAs",
      );
    });
}
