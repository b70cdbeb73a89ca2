import { existsSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { Command, InvalidArgumentError } from "commander";
import {
  type CardProfile,
  YUBIKEY_5_7_FIPS_PROFILE,
  YUBIKEY_5_7_PROFILE,
  YUBIKEY_5_PROFILE,
} from "../../../card-emulator/profiles.js";
import {
  createScpVendor,
  provisionScpKey,
  SCP_VENDOR_CA_FILE,
} from "../../../card-emulator/scp-provision.js";
import { VirtualPivCard } from "../../../card-emulator/virtual-piv-card.js";
import {
  parseVpcdAddress,
  VPCD_DEFAULT_HOST,
  VPCD_DEFAULT_PORT,
  VpcdBridge,
  type VpcdBridgeEvent,
} from "../../../card-emulator/vpcd-bridge.js";
import { UsageError } from "../../../errors.js";
import { hex } from "../../../util/bytes.js";
import { type CliContext, writeLine } from "../../context.js";

const EXAMPLES = `
The card is a TCP client of vpcd (vsmartcard's virtual reader inside pcscd): connecting inserts
it, closing the connection removes it. State (PIN, PUK, keys, objects) is saved to the state file
after every change; a missing file is created with factory defaults (PIN 123456, PUK 12345678,
default management key). One line per event goes to standard error. SIGTERM or SIGINT removes the
card and exits 0; vpcd unreachable (or lost for good) exits 10.

--profile yubikey-5.7 (or yubikey-5.7-fips, which refuses a plaintext VERIFY) with --scp-vendor DIR
gives the card an SCP11 secure channel: SD keys 13/01 (SCP11b) and 11/01 (SCP11a) certified by the
emulator's vendor CA in DIR (created if absent); DIR/${SCP_VENDOR_CA_FILE} is the SCP trust anchor
for station and agent. SCP11a also needs the owner's OCE CA key on the card (card personalize
--scp-trust) and the station's OCE key (pki issue-oce).

Examples:
  $ hsm-onboard card emulate --state card.json
  $ hsm-onboard card emulate --state card.json --profile yubikey-5.7 --scp-vendor ./vendor
  $ hsm-onboard card emulate --state card.json --vpcd 127.0.0.1:35964 --contactless
  $ PCSCLITE_CSOCK_NAME=... yubico-piv-tool -r "Virtual PCD" -a status    # in another shell
`;

interface CardEmulateOptions {
  readonly state: string;
  readonly vpcd?: string;
  readonly contactless?: boolean;
  readonly trace?: boolean;
  readonly reconnect?: number;
  readonly profile?: string;
  readonly scpVendor?: string;
}

/** Card models `--profile` names. */
export const CARD_PROFILES: Readonly<Record<string, CardProfile>> = {
  "yubikey-5": YUBIKEY_5_PROFILE,
  "yubikey-5.7": YUBIKEY_5_7_PROFILE,
  "yubikey-5.7-fips": YUBIKEY_5_7_FIPS_PROFILE,
};

export interface EmulatorOptions {
  /** Path of the card's state file. */
  readonly statePath: string;
  readonly host: string;
  readonly port: number;
  readonly contactless: boolean;
  /** Card model (default YubiKey 5, firmware 5.4.3). */
  readonly profile?: CardProfile;
  /** Directory of the emulator's SCP vendor CA: the card gets an SCP11b key from it if it has none. */
  readonly scpVendorDir?: string;
  /** Log each APDU: header, lengths and status word only, never data. */
  readonly trace: boolean;
  /** Attempts to come back after vpcd dropped the card (pcscd restarting). */
  readonly reconnectAttempts: number;
  /** Fires to remove the card and stop. */
  readonly signal: AbortSignal;
  readonly log: (line: string) => void;
}

/**
 * Runs the virtual card against vpcd until `signal` fires (resolves) or vpcd is lost beyond the
 * retries (rejects with VpcdConnectError, exit 10).
 */
export async function runEmulator(options: EmulatorOptions): Promise<void> {
  const created = !existsSync(options.statePath);
  const card = VirtualPivCard.fromFile(options.statePath, {
    contactless: options.contactless,
    ...(options.profile ? { profile: options.profile } : {}),
  });
  if (options.scpVendorDir) {
    // SCP11b (13/01, as a YubiKey 5.7 ships) and SCP11a (11/01) SD keys, each certified by the vendor.
    for (const [kid, variant] of [
      [0x13, "SCP11b"],
      [0x11, "SCP11a"],
    ] as const) {
      if (card.scpKeys.some((k) => k.kid === kid)) continue;
      const vendor = await createScpVendor(options.scpVendorDir);
      await provisionScpKey(card, vendor, { kid });
      options.log(
        `${variant} key ${kid.toString(16)}/01 provisioned, certified by ${options.scpVendorDir}/${SCP_VENDOR_CA_FILE}`,
      );
    }
  }
  options.log(
    `${created ? "created" : "loaded"} card ${card.serial} (${card.profile.name}, ${options.contactless ? "contactless" : "contact"}) from ${options.statePath}; ATR ${hex(card.atr).toUpperCase()}`,
  );
  const bridge = new VpcdBridge({
    responder: card,
    host: options.host,
    port: options.port,
    atr: card.atr,
    reconnectAttempts: options.reconnectAttempts,
  });
  bridge.on("event", (event) => {
    const line = describeEvent(event, options.trace);
    if (line) options.log(line);
  });
  if (options.signal.aborted) return;
  const onAbort = () => void bridge.stop();
  options.signal.addEventListener("abort", onAbort, { once: true });
  try {
    await bridge.start();
    const end = await bridge.ended;
    if (end.reason === "lost") throw end.error;
  } finally {
    options.signal.removeEventListener("abort", onAbort);
    await bridge.stop();
  }
}

function describeEvent(event: VpcdBridgeEvent, trace: boolean): string | undefined {
  switch (event.type) {
    case "connecting":
      return event.attempt > 1
        ? `connecting to vpcd at ${event.host}:${event.port} (attempt ${event.attempt})`
        : undefined;
    case "connected":
      return `inserted: connected to vpcd at ${event.host}:${event.port}`;
    case "power-on":
      return "power on";
    case "power-off":
      return "power off";
    case "reset":
      return "reset";
    case "apdu":
      return trace ? describeApdu(event.command, event.response, event.elapsedMs) : undefined;
    case "responder-error":
      return `card error: ${event.error instanceof Error ? event.error.message : String(event.error)}`;
    case "disconnected":
      return event.reason === "stopped"
        ? "removed: connection to vpcd closed"
        : `vpcd dropped the connection${event.error ? ` (${event.error.message})` : ""}`;
    case "stopped":
      return event.reason === "stopped" ? "stopped" : undefined;
  }
}

/** `00 A4 04 00 Lc=9 -> 9000 (18 bytes) 0.1 ms`: no command or response data, ever (PINs). */
function describeApdu(command: Uint8Array, response: Uint8Array, elapsedMs: number): string {
  const header = hex(command.subarray(0, 4))
    .toUpperCase()
    .replace(/(..)(?=.)/g, "$1 ");
  const sw = hex(response.subarray(response.length - 2)).toUpperCase();
  return `apdu ${header} (${command.length} bytes) -> ${sw} (${response.length - 2} data bytes) ${elapsedMs.toFixed(1)} ms`;
}

/** `hsm-onboard card emulate --state FILE [--vpcd HOST:PORT] [--contactless]` (SPEC.md §7). */
export function cardEmulateCommand(ctx: CliContext): Command {
  return new Command("emulate")
    .description("Run the virtual PIV card (YubiKey 5 compatible) in a vpcd virtual reader")
    .requiredOption("--state <file>", "card state file (created with factory defaults if absent)")
    .option("--vpcd <host:port>", `vpcd address (default ${VPCD_DEFAULT_HOST}:${VPCD_DEFAULT_PORT})`)
    .option("--contactless", "present the contactless (NFC) ATR")
    .option("--trace", "log every APDU: header, lengths and status word (never data)")
    .option("--reconnect <n>", "attempts to reconnect after vpcd drops the card (default 10)", parseCount)
    .option("--profile <name>", `card model: ${Object.keys(CARD_PROFILES).join(", ")} (default yubikey-5)`)
    .option(
      "--scp-vendor <dir>",
      "SCP vendor CA directory: give the card SCP11b and SCP11a keys certified by it",
    )
    .addHelpText("after", EXAMPLES)
    .action(async (options: CardEmulateOptions) => {
      let address: { host: string; port: number };
      try {
        address = parseVpcdAddress(options.vpcd ?? `${VPCD_DEFAULT_HOST}:${VPCD_DEFAULT_PORT}`);
      } catch (error) {
        throw new UsageError(`--vpcd: ${(error as Error).message}`);
      }
      const statePath = resolve(ctx.cwd, options.state);
      const dir = dirname(statePath);
      if (!existsSync(dir) || !statSync(dir).isDirectory()) {
        throw new UsageError(`--state: directory ${dir} does not exist`);
      }
      const profile = options.profile === undefined ? undefined : CARD_PROFILES[options.profile];
      if (options.profile !== undefined && !profile) {
        throw new UsageError(`--profile: one of ${Object.keys(CARD_PROFILES).join(", ")}`);
      }
      const controller = new AbortController();
      const onSignal = (signal: NodeJS.Signals) => {
        writeLine(ctx.stderr, `card emulate: ${signal}: removing the card`);
        controller.abort();
      };
      process.once("SIGTERM", onSignal);
      process.once("SIGINT", onSignal);
      try {
        await runEmulator({
          statePath,
          host: address.host,
          port: address.port,
          contactless: options.contactless ?? false,
          ...(profile ? { profile } : {}),
          ...(options.scpVendor ? { scpVendorDir: resolve(ctx.cwd, options.scpVendor) } : {}),
          trace: options.trace ?? false,
          reconnectAttempts: options.reconnect ?? 10,
          signal: controller.signal,
          log: (line) => writeLine(ctx.stderr, `card emulate: ${line}`),
        });
      } finally {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
      }
      ctx.exitCode = 0;
    });
}

function parseCount(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 1000) throw new InvalidArgumentError("not a count from 0 to 1000");
  return n;
}
