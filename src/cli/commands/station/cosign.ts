import { Command } from "commander";
import { NoCardError, UsageError, WaitTimeoutError } from "../../../errors.js";
import type { Pkcs11TokenUri } from "../../../pkcs11/uri.js";
import { channelLabel } from "../../../secure-element/secure-element.js";
import { type CosignResult, cosignConfiguration, type HeldCard } from "../../../station/cosign-card.js";
import { parseTokenOption, TOKEN_HELP, usesVirtualCard } from "../../card-opener.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { parseFd, type SecretSource, secretSource } from "../../secrets.js";
import {
  ALLOW_PLAINTEXT_HELP,
  bytes,
  DEFAULT_CARD_TIMEOUT_SECONDS,
  integerIn,
  openStationCard,
  plural,
  SCP11A_HELP,
  STATION_DIR_HELP,
  stationDirOf,
} from "./common.js";
import { DB_HELP, openCommandInventory } from "./inventory.js";

interface CosignOptions {
  readonly reader?: string;
  readonly signerReader?: string;
  readonly token?: Pkcs11TokenUri;
  readonly signerToken?: Pkcs11TokenUri;
  readonly timeout: number;
  readonly stationDir?: string;
  readonly json?: boolean;
  readonly pinStdin?: boolean;
  readonly pinFd?: number;
  readonly totpStdin?: boolean;
  readonly allowPlaintext?: boolean;
  readonly scp11a?: boolean;
  readonly db?: string;
}

const HELP = `
Dual control: a configuration that one officer wrote onto the carrier card (station write
--cosigners N) gets another officer's signature, for HSMs set up with agent factory-init --quorum M.

Steps: the carrier card is authenticated and its configuration verified; the co-signer's card is
authenticated (chain to the manufacturer root, the token CA's CRL, a live challenge); it must belong
to the same owner and must not have signed already (one card, one key, one vote); the co-signed
manifest must fit its 3,063-byte object. Then what is being signed is shown (owner, sequence, HSM
count, validity, configuration digest), the co-signer's PIN (and TOTP code when enrolled) is asked,
card 2 signs; the carrier comes back, its officer's PIN is asked, the manifest is written, read
back and verified.

One reader (--reader only): insert the carrier, then swap cards when told (remove, insert the
co-signer's card, remove, insert the carrier again). Two readers: the carrier in --reader, the
co-signer's card in --signer-reader. PKCS#11 tokens: --token for the carrier, --signer-token for
the co-signer's (each may be mixed with a reader for the other; no swap is asked for a token).

Secrets, one per line with --pin-stdin or --pin-fd N: the co-signer's PIN, its TOTP code when it is
enrolled (or from --totp-stdin), then the carrier officer's PIN.

Exit status: 0 co-signed and verified, 2 usage, 10 no card in time (or a card not removed), 11 card
not trusted, 12 card revoked, 13 wrong PIN or TOTP code, 14 PIN blocked, 15 read-back mismatch or
manifest changed, 16 card of another owner or not the carrier, 18 configuration expired,
19 this card or officer already signed, 22 the co-signed manifest would not fit (nothing signed).

Examples:
  $ hsm-onboard station cosign --reader Yubico
  $ hsm-onboard station cosign --reader "Reader 0" --signer-reader "Reader 1" --pin-stdin --json
  $ hsm-onboard station cosign --token 'pkcs11:token=Alice?module-path=/usr/lib/libeToken.so' \\
      --signer-token 'pkcs11:token=Bob?module-path=/usr/lib/libeToken.so'
`;

/** `hsm-onboard station cosign --reader CARRIER [--signer-reader OTHER]`: a second officer signs. */
export function stationCosignCommand(ctx: CliContext): Command {
  return new Command("cosign")
    .description("Add another officer's signature to the configuration on the carrier card (dual control)")
    .option("--reader <name>", "the reader of the carrier card (and of the co-signer's card with one reader)")
    .option("--signer-reader <name>", "a second reader for the co-signer's card")
    .option("--token <pkcs11-uri>", `the carrier is this token: ${TOKEN_HELP}`, parseTokenOption)
    .option("--signer-token <pkcs11-uri>", "the co-signer's PKCS#11 token (URI as --token)", parseTokenOption)
    .option(
      "--timeout <seconds>",
      "how long to wait for each card (and each removal)",
      integerIn("--timeout", 1, 3600),
      DEFAULT_CARD_TIMEOUT_SECONDS,
    )
    .option("--station-dir <dir>", STATION_DIR_HELP)
    .option("--json", "print the summary as JSON")
    .option("--pin-stdin", "read the PINs (and TOTP code) from standard input, one per line")
    .option("--pin-fd <n>", "read the PINs (and TOTP code) from this file descriptor", parseFd)
    .option("--totp-stdin", "read the TOTP code from standard input")
    .option("--allow-plaintext", ALLOW_PLAINTEXT_HELP)
    .option("--scp11a", SCP11A_HELP)
    .option("--db <url>", DB_HELP)
    .addHelpText("after", HELP)
    .action(async (options: CosignOptions) => {
      const dir = stationDirOf(ctx, options.stationDir);
      const tokens = options.token !== undefined || options.signerToken !== undefined;
      // One virtual card file cannot be two cards; an injected opener (tests) is told each reader.
      if (ctx.openCard === undefined && usesVirtualCard(ctx) && !tokens) {
        throw new UsageError(
          "station cosign needs two cards: it works with readers (PC/SC), not a virtual card file",
        );
      }
      if (options.reader !== undefined && options.token !== undefined) {
        throw new UsageError("use either --reader or --token for the carrier, not both");
      }
      if (options.signerReader !== undefined && options.signerToken !== undefined) {
        throw new UsageError("use either --signer-reader or --signer-token, not both");
      }
      if (options.reader === undefined && options.token === undefined) {
        throw new UsageError("--reader (or --token) is required: the carrier card");
      }
      if (
        options.token !== undefined &&
        options.signerReader === undefined &&
        options.signerToken === undefined
      ) {
        throw new UsageError(
          "the carrier is a token: name the co-signer's with --signer-token or --signer-reader",
        );
      }
      if (!options.pinStdin && options.pinFd === undefined && !(ctx.stdin as { isTTY?: boolean }).isTTY) {
        throw new UsageError("no terminal to read the PINs from: use --pin-stdin or --pin-fd N");
      }
      const carrier: Device =
        options.token !== undefined ? { token: options.token } : { reader: options.reader ?? "" };
      const signer: Device =
        options.signerToken !== undefined
          ? { token: options.signerToken }
          : { reader: options.signerReader ?? options.reader ?? "" };
      // Swaps are asked for only when both cards go through the one reader.
      const oneReader =
        options.token === undefined &&
        options.signerToken === undefined &&
        options.signerReader === undefined;
      const pins = secretSource(ctx, {
        ...(options.pinStdin ? { pinStdin: true } : {}),
        ...(options.pinFd === undefined ? {} : { pinFd: options.pinFd }),
      });
      let totpSource: SecretSource | undefined;
      const timeoutMs = options.timeout * 1000;
      // The channel of the carrier's last opening: the one the co-signed manifest was written through.
      let carrierChannel: string | undefined;
      const hold = async (device: Device, whose: string, removal: string): Promise<HeldCard> => {
        const card = await openStationCard(ctx, {
          ...device,
          timeoutSeconds: options.timeout,
          whose,
          stationDir: dir,
          allowPlaintext: options.allowPlaintext === true,
          scp11a: options.scp11a === true,
        });
        writeLine(ctx.stderr, `Card found in ${card.readerName}`);
        if (device === carrier) carrierChannel = channelLabel(card.element.info.channel);
        return {
          element: card.element,
          release: async (next) => {
            await card.dispose();
            if (next && oneReader && device.reader !== undefined)
              await awaitRemoval(ctx, device.reader, removal, timeoutMs);
          },
        };
      };
      let result: CosignResult;
      try {
        result = await cosignConfiguration({
          stationDir: dir,
          openCarrier: (phase) =>
            hold(
              carrier,
              phase === "read" ? "the carrier card (with the configuration)" : "the carrier card again",
              "Remove the carrier card",
            ),
          openSigner: () => hold(signer, "the co-signing officer's card", "Remove the co-signer's card"),
          signerPin: (request) =>
            pins.read(
              `PIN of co-signer ${request.officer ? `"${request.officer}"` : "card"} (${
                request.triesLeft < 0 ? "tries left unknown" : plural(request.triesLeft, "try", "tries")
              } left)`,
            ),
          signerTotp: (request) => {
            totpSource ??=
              options.totpStdin && !options.pinStdin ? secretSource(ctx, { pinStdin: true }) : pins;
            return totpSource.read(`TOTP code of "${request.officer}"`);
          },
          carrierPin: (request) =>
            pins.read(
              `PIN of the carrier's officer ${request.officer ? `"${request.officer}"` : ""} (${
                request.triesLeft < 0 ? "tries left unknown" : plural(request.triesLeft, "try", "tries")
              } left)`,
            ),
          onSummary: (s) => {
            writeLine(ctx.stderr, "To be co-signed:");
            writeLine(ctx.stderr, `  owner          "${s.owner}"`);
            writeLine(ctx.stderr, `  configuration  ${s.configurationId}, sequence ${s.sequence}`);
            writeLine(ctx.stderr, `  HSMs           ${s.hsms}`);
            writeLine(
              ctx.stderr,
              `  valid          ${s.notBefore.toISOString()} → ${s.notAfter.toISOString()}`,
            );
            writeLine(ctx.stderr, `  digest         sha256 ${s.digest}`);
            writeLine(ctx.stderr, `  signed by      ${s.signedBy.join("; ")}`);
            writeLine(ctx.stderr, `  co-signer      ${s.signer}`);
            writeLine(ctx.stderr, `  manifest       ${bytes(s.bytesBefore)} → ${bytes(s.bytesAfter)} bytes`);
          },
          onProgress: (p) => writeLine(ctx.stderr, `  ${p.message}`),
        });
      } finally {
        pins.close();
        if (totpSource !== pins) totpSource?.close();
      }
      // The co-signature goes into the station's inventory (issue 14: writes of kind "cosign").
      const inventory = await openCommandInventory(ctx, options);
      try {
        await inventory.recordWrite({
          kind: "cosign",
          configurationId: result.configurationId,
          owner: result.owner,
          sequence: result.sequence,
          ...(result.signerOfficer !== undefined ? { officer: result.signerOfficer } : {}),
          ...(result.signerCard.serial !== undefined ? { cardSerial: result.signerCard.serial } : {}),
          cardName: result.signerCard.name,
          writtenAt: new Date(),
          hsms: result.hsms,
          ...(carrierChannel === undefined ? {} : { channel: carrierChannel }),
        });
      } finally {
        await inventory.close();
      }
      if (options.json) {
        writeJson(ctx.stdout, {
          ...result,
          notBefore: result.notBefore.toISOString(),
          notAfter: result.notAfter.toISOString(),
          verified: true,
        });
      } else {
        writeLine(
          ctx.stdout,
          `Co-signed by ${result.signer} and verified: configuration ${result.configurationId} (sequence ${result.sequence}, ` +
            `${plural(result.hsms, "HSM")}) now carries ${plural(result.signatures, "signature")}, manifest ${bytes(result.bytesAfter)} bytes`,
        );
      }
    });
}

/** Where a card is: a PC/SC reader or a PKCS#11 token. */
type Device =
  | { readonly reader: string; readonly token?: undefined }
  | { readonly token: Pkcs11TokenUri; readonly reader?: undefined };

/** One reader: asks for the card to come out and waits (bounded) until the reader is empty. */
export async function awaitRemoval(
  ctx: CliContext,
  reader: string,
  prompt: string,
  timeoutMs: number,
): Promise<void> {
  const { ReaderWatcher } = await import("../../../transport/reader-watcher.js");
  const watcher = await ReaderWatcher.open();
  try {
    if (watcher.present(reader).length === 0) return;
    writeLine(ctx.stderr, `${prompt}… (waiting up to ${Math.round(timeoutMs / 1000)} s)`);
    await watcher.waitForRemoval({ reader, timeoutMs }).catch((error: unknown) => {
      if (error instanceof WaitTimeoutError) {
        // Exit 10, like a card that does not come: the swap did not happen in time.
        throw new NoCardError(
          `${prompt.toLowerCase()}: not removed within ${Math.round(timeoutMs / 1000)} s`,
          {
            cause: error,
          },
        );
      }
      throw error;
    });
  } finally {
    watcher.close();
  }
}
