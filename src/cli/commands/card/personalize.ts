import { closeSync, readFileSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { PersonalizationRefusedError, UsageError } from "../../../errors.js";
import { ManagementKeyError } from "../../../piv/errors.js";
import type { EcCurve } from "../../../piv/objects.js";
import { encodePin } from "../../../piv/piv-session.js";
import { describeTokenUri, type Pkcs11TokenUri } from "../../../pkcs11/uri.js";
import { tokenCaOwner } from "../../../pki/ca-facts.js";
import {
  assertKeyOfCertificate,
  type CaKeySecrets,
  isPkcs11Uri,
  openCaKey,
  parseCaKeyUri,
} from "../../../pki/ca-key.js";
import { parseCrl } from "../../../pki/crl.js";
import type { IssuerCredentials } from "../../../pki/issue.js";
import { caKeyReference, PKI_FILES, readCertificateFile, readPkiStateIfAny } from "../../../pki/pki-store.js";
import { cardSubject } from "../../../pki/profiles.js";
import { parseScpTrust, secureChannelPolicy } from "../../../secure-element/channel-policy.js";
import { openToken } from "../../../secure-element/open-token.js";
import { DEFAULT_PKCS11_ROLES } from "../../../secure-element/pkcs11-element.js";
import { channelLabel } from "../../../secure-element/secure-element.js";
import { installOceCaOnCard, type OceCaOnCard } from "../../../station/oce.js";
import {
  DEFAULT_PIN,
  DEFAULT_PUK,
  describeManagementKeyType,
  type PersonalizeResult,
  personalizeCard,
} from "../../../station/personalize-card.js";
import { type PersonalizeTokenResult, personalizeToken } from "../../../station/personalize-token.js";
import type { X509Certificate, X509Crl } from "../../../util/x509.js";
import { addCaKeyOptions, CA_KEY_HELP, type CaKeyCliOptions, caKeySecrets } from "../../ca-key-options.js";
import { cardOpener, parseTokenOption, TOKEN_HELP } from "../../card-opener.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { parseFd, type SecretSource, secretSource } from "../../secrets.js";
import { describeCertificate } from "../pki/describe.js";

const EXAMPLES = `
Waits for a card (a card already in a reader counts at once), then: generates the 9E (card
authentication) and 9C (digital signature) keys on the card, issues their certificates from the
token CA in --pki (O = owner, CN = officer, serialNumber = card serial), stores them with the token
CA (item "certificates") and its current CRL (item "crl"), writes CHUID/CCC if missing, sets the
new PIN and PUK, and switches to a random PIN-protected management key (AES-192; 3DES before
firmware 5.4). See docs/CARD.md.

Secrets are read from the terminal (echo off, each asked twice) or, with --pin-stdin / --pin-fd N,
one per line in this order: new PIN, new PUK. With --ask-current the card's current PIN and PUK
come first (default: the factory PIN 123456 and PUK 12345678).

Examples:
  $ hsm-onboard card personalize --pki ./pki --owner "ACME Bank" --officer "Alice Example"
  $ printf '%s\\n' 24681357 97531864 | hsm-onboard card personalize --pki ./pki --owner "ACME Bank" --pin-stdin --json
  $ hsm-onboard card personalize --pki ./pki --owner "ACME Bank" --algorithm P-384 --reader "Yubico"
  $ hsm-onboard card personalize --pki ./pki --owner "ACME Bank" --officer "Alice Example" \\
      --token 'pkcs11:token=Alice?module-path=/usr/lib/libeToken.so'

A PKCS#11 token (--token): the two keys are generated on the token (the card-authentication key
usable without the PIN, the signing key needing the PIN for every signature), their certificates
stored next to them, the token CA and CRL as data objects (docs/CARD.md). Its user PIN is the
token's own (set by the token's initialisation tool): asked once (or one line with --pin-stdin /
--pin-fd), never changed; no PUK or management key.
`;

interface PersonalizeOptions extends CaKeyCliOptions {
  readonly pki: string;
  /** The token CA key: a file or a pkcs11: URI (default: what the PKI directory records). */
  readonly tokenCaKey?: string;
  readonly owner: string;
  readonly officer?: string;
  readonly reader?: string;
  readonly token?: Pkcs11TokenUri;
  readonly algorithm: EcCurve;
  /** Deprecated and refused: a key on the command line is readable by every user (/proc/PID/cmdline). */
  readonly managementKey?: string;
  readonly managementKeyFile?: string;
  readonly managementKeyFd?: number;
  readonly askCurrent?: boolean;
  readonly pinStdin?: boolean;
  readonly pinFd?: number;
  readonly timeout: number;
  readonly json?: boolean;
  readonly scpTrust?: string;
}

/** `hsm-onboard card personalize --pki DIR --owner NAME [--officer NAME] [--reader NAME]` (SPEC.md §7). */
export function cardPersonalizeCommand(ctx: CliContext): Command {
  const command = new Command("personalize")
    .description("Make a PIV card an onboarding secure element: keys on the card, certificates, PIN, PUK")
    .requiredOption("--pki <dir>", "PKI directory written by `pki init` (token CA with its key, root, CRL)")
    .requiredOption("--owner <name>", "customer organisation (subject O of the card certificates)")
    .option(
      "--token-ca-key <file|pkcs11-uri>",
      "the token CA key: a key file or pkcs11:token=…;object=…?module-path=… (default: what --pki records)",
    )
    .option("--officer <name>", "security officer holding the card (subject CN)")
    .option("--reader <name>", "use only readers whose name contains this (case-insensitive)")
    .option("--token <pkcs11-uri>", TOKEN_HELP, parseTokenOption)
    .addOption(
      new Option("--algorithm <curve>", "curve of the 9E and 9C keys")
        .choices(["P-256", "P-384"])
        .default("P-256"),
    )
    .option(
      "--management-key-file <file>",
      "a file holding the card's current management key as hex (default: its PIN-protected key, else the factory key 0102…08)",
    )
    .option(
      "--management-key-fd <n>",
      "read the card's current management key (hex) from file descriptor N",
      parseFd,
    )
    .addOption(
      new Option(
        "--management-key <hex>",
        "refused: a key on the command line is visible to every user",
      ).hideHelp(),
    )
    .option("--ask-current", "the PIN and PUK are not the factory defaults: read the current ones first")
    .option("--pin-stdin", "read the secrets from standard input, one per line")
    .option("--pin-fd <n>", "read the secrets from file descriptor N, one per line", parseFd)
    .option("--timeout <seconds>", "how long to wait for a card", parseSeconds, 60)
    .option(
      "--scp-trust <file>",
      "SCP trust anchors (PEM: card vendors' CAs): personalise inside SCP11b, then install the token CA key as the card's OCE CA (SCP11a)",
    )
    .option("--json", "print the result as JSON");
  return addCaKeyOptions(command)
    .addHelpText("after", EXAMPLES + CA_KEY_HELP)
    .action(async (options: PersonalizeOptions) => {
      cardSubject(options.owner, options.officer); // names checked before anything else
      if (options.token !== undefined) refusePivOptions(options);
      if (options.tokenCaKey !== undefined && isPkcs11Uri(options.tokenCaKey))
        parseCaKeyUri(options.tokenCaKey);
      const managementKey = await readManagementKey(options);
      const dir = resolve(ctx.cwd, options.pki);
      const keySecrets = caKeySecrets(ctx, options, "card personalize");
      let pki: PersonalizationPkiFiles;
      try {
        const override =
          options.tokenCaKey === undefined || isPkcs11Uri(options.tokenCaKey)
            ? options.tokenCaKey
            : resolve(ctx.cwd, options.tokenCaKey);
        pki = await loadPersonalizationPki(dir, options.owner, override, keySecrets);
      } finally {
        keySecrets.close();
      }
      try {
        if (options.token !== undefined) await personalizeTokenWith(ctx, options, pki, options.token);
        else await personalizeWith(ctx, options, pki, managementKey);
      } finally {
        pki.close();
      }
    });
}

async function personalizeWith(
  ctx: CliContext,
  options: PersonalizeOptions,
  pki: PersonalizationPkiFiles,
  managementKey: Uint8Array | undefined,
): Promise<void> {
  const scpAnchors =
    options.scpTrust === undefined
      ? undefined
      : parseScpTrust(
          await readFile(resolve(ctx.cwd, options.scpTrust), "utf8").catch((error: NodeJS.ErrnoException) => {
            throw new UsageError(`cannot read ${options.scpTrust}: ${error.code ?? error.message}`);
          }),
          options.scpTrust,
        );
  const secrets = await readSecrets(ctx, options);
  const say = (line: string) => writeLine(ctx.stderr, `card personalize: ${line}`);
  const card = await cardOpener(ctx)({
    ...(scpAnchors ? { element: { channel: secureChannelPolicy(scpAnchors, false) } } : {}),
    ...(options.reader === undefined ? {} : { reader: options.reader }),
    timeoutMs: options.timeout * 1000,
    onPrompt: ({ readers }) =>
      say(
        `insert the card to personalise${options.reader ? ` into a reader matching "${options.reader}"` : ""}` +
          ` (readers: ${readers.length > 0 ? readers.join(", ") : "none yet"})`,
      ),
  });
  const started = performance.now();
  let result: PersonalizeResult;
  let oceCa: OceCaOnCard | undefined;
  try {
    say(`card ${card.element.info.serial ?? "(no serial)"} in ${card.readerName}`);
    result = await personalizeCard({
      element: card.element,
      pki,
      crl: pki.crl,
      owner: options.owner,
      ...(options.officer === undefined ? {} : { officer: options.officer }),
      newPin: secrets.newPin,
      newPuk: secrets.newPuk,
      ...(secrets.currentPin === undefined ? {} : { currentPin: secrets.currentPin }),
      ...(secrets.currentPuk === undefined ? {} : { currentPuk: secrets.currentPuk }),
      ...(managementKey ? { managementKey } : {}),
      algorithm: options.algorithm,
      onProgress: ({ message }) => say(message),
    });
    if (scpAnchors) {
      // The OCE CA for SCP11a: on the card's security domain, in an SCP03 session (factory keys).
      oceCa = await installOceCaOnCard(card.element.session.protocol.transport, {
        tokenCaCertificate: new Uint8Array(pki.tokenCa.certificate.rawData),
      });
      say(
        `OCE CA (SCP11a): the token CA key ${oceCa.outcome === "installed" ? "installed" : "was already installed"} on the card's security domain (KID ${oceCa.kid.toString(16)}, KVN ${oceCa.kvn}, key identifier ${oceCa.ski})`,
      );
    }
  } catch (error) {
    throw explain(error, options);
  } finally {
    await card.dispose();
  }
  const elapsedMs = Math.round(performance.now() - started);
  const channel = channelLabel(card.element.info.channel);
  if (options.json) {
    writeJson(ctx.stdout, {
      ...summaryJson(result, card.readerName, elapsedMs),
      channel,
      oceCa: oceCa ?? null,
    });
  } else {
    for (const line of summaryLines(result, card.readerName, elapsedMs)) writeLine(ctx.stdout, line);
    if (oceCa) {
      writeLine(
        ctx.stdout,
        `  channel ${channel}; OCE CA for SCP11a: token CA key ${oceCa.outcome} (KID ${oceCa.kid.toString(16)}/KVN ${oceCa.kvn}, key identifier ${oceCa.ski})`,
      );
    }
  }
}

// ---- PKCS#11 token -----------------------------------------------------------------------------------

/** With --token: options that only a PIV card takes are refused before anything is read. */
function refusePivOptions(options: PersonalizeOptions): void {
  for (const [given, name] of [
    [options.reader, "--reader"],
    [options.managementKeyFile ?? options.managementKeyFd ?? options.managementKey, "--management-key-*"],
    [options.askCurrent, "--ask-current"],
    [options.scpTrust, "--scp-trust"],
  ] as const) {
    if (given !== undefined) throw new UsageError(`${name} is for PIV cards, not with --token`);
  }
}

async function personalizeTokenWith(
  ctx: CliContext,
  options: PersonalizeOptions,
  pki: PersonalizationPkiFiles,
  token: Pkcs11TokenUri,
): Promise<void> {
  const source = secretSource(ctx, {
    ...(options.pinStdin ? { pinStdin: true } : {}),
    ...(options.pinFd === undefined ? {} : { pinFd: options.pinFd }),
  });
  let pin: string;
  try {
    pin = await source.read("the token's PIN");
  } finally {
    source.close();
  }
  const say = (line: string) => writeLine(ctx.stderr, `card personalize: ${line}`);
  const card = await openToken(token, {
    timeoutMs: options.timeout * 1000,
    onPrompt: () => say(`plug in the token (${describeTokenUri(token)})`),
  });
  const started = performance.now();
  let result: PersonalizeTokenResult;
  try {
    say(`token "${card.element.info.name}" (serial ${card.element.info.serial ?? "none"})`);
    result = await personalizeToken({
      element: card.element,
      pki,
      crl: pki.crl,
      owner: options.owner,
      ...(options.officer === undefined ? {} : { officer: options.officer }),
      pin,
      algorithm: options.algorithm,
      onProgress: ({ message }) => say(message),
    });
  } finally {
    await card.dispose();
  }
  const elapsedMs = Math.round(performance.now() - started);
  const describe = (c: X509Certificate) => describeCardCertificate(c);
  if (options.json) {
    writeJson(ctx.stdout, {
      backend: "pkcs11",
      token: result.label,
      serial: result.serial ?? null,
      owner: result.owner,
      officer: result.officer ?? null,
      algorithm: result.algorithm,
      keys: {
        cardAuthentication: {
          label: DEFAULT_PKCS11_ROLES.cardAuthentication.label,
          certificate: describe(result.certificates.cardAuthentication),
        },
        signing: {
          label: DEFAULT_PKCS11_ROLES.signing.label,
          certificate: describe(result.certificates.signing),
        },
      },
      intermediates: result.intermediates.map(describe),
      items: result.itemSizes,
      crlNumber: result.crlNumber === undefined ? null : Number(result.crlNumber),
      elapsedMs,
    });
    return;
  }
  writeLine(
    ctx.stdout,
    `Personalised token "${result.label}" (serial ${result.serial ?? "none"}) for "${result.owner}"` +
      `${result.officer ? `, officer "${result.officer}"` : ""} in ${elapsedMs} ms`,
  );
  for (const [role, c] of [
    ["card authentication", result.certificates.cardAuthentication],
    ["digital signature", result.certificates.signing],
  ] as const) {
    const d = describe(c);
    writeLine(ctx.stdout, `  ${role.padEnd(19)} ECC ${result.algorithm}  ${d.subject}  SHA-256 ${d.sha256}`);
  }
  writeLine(
    ctx.stdout,
    `  issued by "${result.intermediates[0]?.subject ?? "?"}" (data object certificates${result.crlNumber === undefined ? "" : `, CRL number ${result.crlNumber}`})`,
  );
}

// ---- inputs ---------------------------------------------------------------------------------------

function parseManagementKey(value: string, from: string): Uint8Array {
  const hex = value.replace(/[\s:]/g, "");
  if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex) || ![32, 48, 64].includes(hex.length)) {
    throw new UsageError(`${from}: expected 32, 48 or 64 hex digits (AES-128, 3DES/AES-192, AES-256)`);
  }
  return new Uint8Array(Buffer.from(hex, "hex"));
}

/**
 * The current management key, from a file or an inherited file descriptor — never from argv
 * (issue 10 finding 5: the command line is world-readable in /proc). `--management-key HEX` is kept
 * only to refuse it with the way to do it instead.
 */
async function readManagementKey(options: PersonalizeOptions): Promise<Uint8Array | undefined> {
  if (options.managementKey !== undefined) {
    throw new UsageError(
      "--management-key puts the key on the command line, where every user can read it: use --management-key-file FILE or --management-key-fd N",
    );
  }
  if (options.managementKeyFile !== undefined && options.managementKeyFd !== undefined) {
    throw new UsageError("use either --management-key-file or --management-key-fd, not both");
  }
  const source = options.managementKeyFile ?? options.managementKeyFd;
  if (source === undefined) return undefined;
  const from =
    typeof source === "number" ? `--management-key-fd ${source}` : `--management-key-file ${source}`;
  let text: string;
  try {
    if (typeof source === "number") {
      try {
        text = readFileSync(source, "utf8");
      } finally {
        closeSync(source);
      }
    } else text = await readFile(source, "utf8");
  } catch (error) {
    throw new UsageError(`${from}: cannot read it (${(error as NodeJS.ErrnoException).code ?? error})`);
  }
  return parseManagementKey(text.split(/\r?\n/, 1)[0] ?? "", from);
}

function parseSeconds(value: string): number {
  const n = Number(value);
  if (!/^\d+(?:\.\d+)?$/.test(value) || !(n > 0) || n > 3600) {
    throw new InvalidArgumentError("expected a number of seconds from 0 to 3600");
  }
  return n;
}

interface Secrets {
  readonly currentPin?: string;
  readonly currentPuk?: string;
  readonly newPin: string;
  readonly newPuk: string;
}

/** Reads (current PIN, current PUK,) new PIN, new PUK — before the card is asked for. */
async function readSecrets(ctx: CliContext, options: PersonalizeOptions): Promise<Secrets> {
  const source = secretSource(ctx, {
    ...(options.pinStdin ? { pinStdin: true } : {}),
    ...(options.pinFd === undefined ? {} : { pinFd: options.pinFd }),
  });
  const terminal = !options.pinStdin && options.pinFd === undefined;
  try {
    let currentPin: string | undefined;
    let currentPuk: string | undefined;
    if (options.askCurrent) {
      currentPin = checked(await source.read("current PIN"), "current PIN");
      currentPuk = checked(await source.read("current PUK"), "current PUK");
    }
    const newPin = await readNew(source, "new PIN", terminal);
    const newPuk = await readNew(source, "new PUK", terminal);
    if (newPin === DEFAULT_PIN) throw new UsageError("the new PIN must not be the factory PIN 123456");
    if (newPuk === DEFAULT_PUK) throw new UsageError("the new PUK must not be the factory PUK 12345678");
    return {
      ...(currentPin === undefined ? {} : { currentPin }),
      ...(currentPuk === undefined ? {} : { currentPuk }),
      newPin,
      newPuk,
    };
  } finally {
    source.close();
  }
}

async function readNew(
  source: SecretSource,
  what: "new PIN" | "new PUK",
  terminal: boolean,
): Promise<string> {
  const value = checked(await source.read(what), what);
  if (terminal && (await source.read(`${what} again`)) !== value) {
    throw new UsageError(`the two ${what}s differ`);
  }
  return value;
}

/** PIN and PUK: 6 to 8 bytes (YubiKey rule, PIV-NOTES §3). The value never appears in a message. */
function checked(value: string, what: string): string {
  try {
    encodePin(value, what.endsWith("PUK") ? "PUK" : "PIN");
  } catch {
    throw new UsageError(`the ${what} must be 6 to 8 characters (bytes)`);
  }
  return value;
}

interface PersonalizationPkiFiles {
  readonly tokenCa: IssuerCredentials;
  readonly root: { readonly certificate: X509Certificate };
  readonly crl: X509Crl;
  /** Closes the token CA key (a PKCS#11 session); a no-op for a key file. */
  close(): void;
}

/**
 * What personalisation needs from the PKI directory: the token CA certificate and key (the key must
 * match the certificate), the root (to check the new certificates against), the token CA's current
 * CRL (valid now, issued by the token CA). The root and device CA keys are not needed. The key is
 * `--token-ca-key` when given, else the pkcs11: key pki-state.json records, else token-ca.key.pem;
 * it is opened (PIN or passphrase asked) only once everything else checked out.
 */
async function loadPersonalizationPki(
  dir: string,
  owner: string,
  keyOverride: string | undefined,
  secrets: CaKeySecrets,
): Promise<PersonalizationPkiFiles> {
  const info = await stat(dir).catch(() => undefined);
  if (!info?.isDirectory()) throw new UsageError(`--pki: ${dir} is not a directory`);
  const file = (name: string) => join(dir, name);
  const state = await readPkiStateIfAny(dir).catch(() => undefined);
  const reference = caKeyReference(dir, state, "tokenCa", keyOverride);
  if (
    keyOverride === undefined &&
    !isPkcs11Uri(reference) &&
    !(await stat(reference).catch(() => undefined))
  ) {
    throw new UsageError(
      `--pki: ${dir} has no token CA key (${PKI_FILES.tokenCaKey}): card certificates are issued with it` +
        " (or give it with --token-ca-key FILE|pkcs11:…)",
    );
  }
  const certificate = await readCertificateFile(file(PKI_FILES.tokenCaCert));
  const root = await readCertificateFile(file(PKI_FILES.rootCert));
  const now = new Date();
  if (certificate.notAfter < now) {
    throw new UsageError(`--pki: the token CA expired on ${certificate.notAfter.toISOString()}`);
  }
  let crl: X509Crl;
  try {
    crl = parseCrl(await readFile(file(PKI_FILES.crl), "utf8"));
  } catch (error) {
    throw new UsageError(
      `--pki: no readable CRL ${PKI_FILES.crl} (run: hsm-onboard pki crl --pki ${dir} --out ${file(PKI_FILES.crl)})`,
      { cause: error },
    );
  }
  if (!crl.nextUpdate || crl.nextUpdate <= now) {
    throw new UsageError(
      `--pki: the CRL is out of date (next update ${crl.nextUpdate?.toISOString() ?? "none"}); ` +
        `sign a fresh one: hsm-onboard pki crl --pki ${dir} --out ${file(PKI_FILES.crl)}`,
    );
  }
  const pkiOwner = state?.owner;
  if (pkiOwner !== undefined && pkiOwner !== owner) {
    throw new UsageError(`--owner "${owner}" is not the owner of this PKI ("${pkiOwner}")`);
  }
  // The token CA's name constraints decide whom it may certify (SPEC.md §4, "Many owners, one root").
  const caOwner = tokenCaOwner(certificate);
  if (caOwner !== undefined && caOwner !== owner) {
    throw new UsageError(
      `--owner "${owner}": this token CA may only certify "${caOwner}" (an owner gets its own: pki issue-token-ca)`,
    );
  }
  const opened = await openCaKey(reference, secrets);
  try {
    await assertKeyOfCertificate(opened, certificate, PKI_FILES.tokenCaCert);
  } catch (error) {
    opened.close();
    throw error;
  }
  return {
    tokenCa: { certificate, privateKey: opened.key },
    root: { certificate: root },
    crl,
    close: () => opened.close(),
  };
}

/** A refused management key is the caller's to fix: say how. */
function explain(error: unknown, options: PersonalizeOptions): unknown {
  if (error instanceof ManagementKeyError && error.reason === "wrong-key") {
    return new PersonalizationRefusedError(
      options.managementKeyFile !== undefined || options.managementKeyFd !== undefined
        ? "the card refused the management key given with --management-key-file/--management-key-fd"
        : "the card refused the factory management key: give the card's key with --management-key-file FILE",
      { cause: error },
    );
  }
  return error;
}

// ---- output ---------------------------------------------------------------------------------------

/**
 * describeCertificate with the X.520 serialNumber attribute named: @peculiar/x509 prints it as its OID
 * (2.5.4.5), which an officer reading a card's subject should not have to decode.
 */
export function describeCardCertificate(
  certificate: X509Certificate,
): ReturnType<typeof describeCertificate> {
  const d = describeCertificate(certificate);
  const named = (name: string) => name.replace(/(^|, )2\.5\.4\.5=/g, "$1serialNumber=");
  return { ...d, subject: named(d.subject), issuer: named(d.issuer) };
}

const SLOT_ROLES = { "9E": "card authentication", "9C": "digital signature" } as const;

function summaryJson(result: PersonalizeResult, reader: string, elapsedMs: number) {
  const slot = (s: "9E" | "9C") => ({
    role: SLOT_ROLES[s],
    algorithm: `ECC ${result.algorithm}`,
    certificate: describeCardCertificate(result.certificates[s]),
  });
  return {
    reader,
    serial: result.serial ?? null,
    version: result.version ?? null,
    owner: result.owner,
    officer: result.officer ?? null,
    algorithm: result.algorithm,
    slots: { "9E": slot("9E"), "9C": slot("9C") },
    intermediates: result.intermediates.map((c) => describeCardCertificate(c)),
    items: {
      certificates: result.itemSizes.certificates,
      ...(result.itemSizes.crl === undefined ? {} : { crl: result.itemSizes.crl }),
    },
    crlNumber: result.crlNumber === undefined ? null : Number(result.crlNumber),
    managementKey: {
      type: result.managementKey.type,
      pinProtected: result.managementKey.pinProtected,
      previous: result.authenticatedWith,
    },
    chuidWritten: result.wroteChuid,
    cccWritten: result.wroteCcc,
    elapsedMs,
  };
}

function summaryLines(result: PersonalizeResult, reader: string, elapsedMs: number): string[] {
  const cert = (s: "9E" | "9C") => {
    const d = describeCardCertificate(result.certificates[s]);
    return `  ${s} ${SLOT_ROLES[s].padEnd(19)} ECC ${result.algorithm}  ${d.subject}  SHA-256 ${d.sha256}`;
  };
  const crl = result.crlNumber === undefined ? "" : `, CRL number ${result.crlNumber}`;
  return [
    `Personalised card ${result.serial ?? "(no serial)"}${result.version ? ` (firmware ${result.version})` : ""} in ${reader} ` +
      `for "${result.owner}"${result.officer ? `, officer "${result.officer}"` : ""} in ${elapsedMs} ms`,
    cert("9E"),
    cert("9C"),
    `  issued by "${result.intermediates[0]?.subject ?? "?"}" (stored in item certificates${crl})`,
    `  new PIN and PUK set; management key: random ${describeManagementKeyType(result.managementKey.type)}, PIN-protected`,
  ];
}

/** For tests and tools that read the JSON summary. */
export type PersonalizeSummary = ReturnType<typeof summaryJson>;
