import { createPublicKey } from "node:crypto";
import { Command, InvalidArgumentError } from "commander";
import { ApduError } from "../../../apdu/status-words.js";
import { TlvError } from "../../../apdu/tlv.js";
import { UsageError } from "../../../errors.js";
import { MANAGEMENT_KEY_REFERENCE } from "../../../piv/management-key.js";
import {
  curveFromAlgorithm,
  ObjectId,
  type PinPolicy,
  PivmanFlag,
  type PivSlot,
  type TouchPolicy,
} from "../../../piv/objects.js";
import type { PivMetadata, PivSession } from "../../../piv/piv-session.js";
import { describeTokenUri, type Pkcs11TokenUri } from "../../../pkcs11/uri.js";
import { openToken } from "../../../secure-element/open-token.js";
import type { PivElement } from "../../../secure-element/piv-element.js";
import { DEFAULT_PKCS11_ROLES, type Pkcs11Element } from "../../../secure-element/pkcs11-element.js";
import { channelLabel } from "../../../secure-element/secure-element.js";
import { describeManagementKeyType } from "../../../station/personalize-card.js";
import { X509Certificate } from "../../../util/x509.js";
import { cardOpener, parseTokenOption, TOKEN_HELP } from "../../card-opener.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { describeCardCertificate } from "./personalize.js";

const EXAMPLES = `
Needs no PIN. Reads the card the way yubico-piv-tool -a status does, plus the Yubico metadata
(algorithm, PIN policy, PUK tries, management key type) and every object, to list the hsm-onboard
items and the storage used (of the YubiKey's 50,225 bytes). PIN-protected objects (PRINTED, which
holds a PIN-protected management key) cannot be read without the PIN and are not counted.

Examples:
  $ hsm-onboard card status
  $ hsm-onboard card status --reader "Virtual PCD" --json
  $ hsm-onboard card status --token 'pkcs11:token=Alice?module-path=/usr/lib/libeToken.so'

A PKCS#11 token (--token) shows its label, serial, manufacturer and model, the PIN flags it reports
(no retry counter in PKCS#11), the two onboarding keys and certificates, the items and the storage
budget; its channel is the token's own ("token").
`;

interface StatusOptions {
  readonly reader?: string;
  readonly token?: Pkcs11TokenUri;
  readonly timeout: number;
  readonly json?: boolean;
}

const SLOTS: readonly { slot: PivSlot; role: string }[] = [
  { slot: "9A", role: "authentication" },
  { slot: "9C", role: "digital signature" },
  { slot: "9D", role: "key management" },
  { slot: "9E", role: "card authentication" },
];

/** `hsm-onboard card status [--reader NAME] [--json]` (SPEC.md §7). */
export function cardStatusCommand(ctx: CliContext): Command {
  return new Command("status")
    .description("Show a PIV card: slots and certificates, PIN/PUK tries, management key, items, storage")
    .option("--reader <name>", "use only readers whose name contains this (case-insensitive)")
    .option("--token <pkcs11-uri>", TOKEN_HELP, parseTokenOption)
    .option("--timeout <seconds>", "how long to wait for a card", parseSeconds, 10)
    .option("--json", "print the status as JSON")
    .addHelpText("after", EXAMPLES)
    .action(async (options: StatusOptions) => {
      if (options.token !== undefined) {
        if (options.reader !== undefined) throw new UsageError("use either --reader or --token, not both");
        const token = options.token;
        const card = await openToken(token, {
          timeoutMs: options.timeout * 1000,
          onPrompt: () =>
            writeLine(ctx.stderr, `card status: plug in the token (${describeTokenUri(token)})`),
        });
        let status: TokenStatus;
        try {
          status = await readTokenStatus(card.element);
        } finally {
          await card.dispose();
        }
        if (options.json) writeJson(ctx.stdout, status);
        else for (const line of tokenStatusLines(status)) writeLine(ctx.stdout, line);
        return;
      }
      const card = await cardOpener(ctx)({
        ...(options.reader === undefined ? {} : { reader: options.reader }),
        timeoutMs: options.timeout * 1000,
        onPrompt: () => writeLine(ctx.stderr, "card status: insert a card"),
      });
      let status: CardStatus;
      try {
        status = await readCardStatus(card.element, card.readerName);
      } finally {
        await card.dispose();
      }
      if (options.json) writeJson(ctx.stdout, status);
      else for (const line of statusLines(status)) writeLine(ctx.stdout, line);
    });
}

function parseSeconds(value: string): number {
  const n = Number(value);
  if (!/^\d+(?:\.\d+)?$/.test(value) || !(n > 0) || n > 3600) {
    throw new InvalidArgumentError("expected a number of seconds from 0 to 3600");
  }
  return n;
}

// ---- reading ----------------------------------------------------------------------------------------

export interface SlotStatus {
  readonly slot: PivSlot;
  readonly role: string;
  /** "ECC P-256", "RSA 2048", … or null for an empty slot. */
  readonly algorithm: string | null;
  readonly pinPolicy: PinPolicy | null;
  readonly touchPolicy: TouchPolicy | null;
  readonly origin: "generated" | "imported" | null;
  readonly certificate: ReturnType<typeof describeCardCertificate> | null;
  /** Why the certificate object could not be read, when it could not. */
  readonly certificateError?: string;
}

export interface CardStatus {
  readonly reader: string;
  readonly serial: string | null;
  readonly version: string | null;
  readonly slots: readonly SlotStatus[];
  readonly pin: {
    readonly triesLeft: number | null;
    readonly tries: number | null;
    readonly isDefault: boolean | null;
  };
  readonly puk: {
    readonly triesLeft: number | null;
    readonly tries: number | null;
    readonly isDefault: boolean | null;
  };
  readonly managementKey: {
    readonly type: string;
    readonly isDefault: boolean | null;
    /** Yubico convention: stored on the card in PRINTED, readable after the PIN. */
    readonly pinProtected: boolean;
    /** Deprecated Yubico convention: derived from the PIN with the salt in ADMIN DATA. */
    readonly pinDerived: boolean;
  };
  readonly chuid: boolean;
  readonly ccc: boolean;
  /** The hsm-onboard items on the card (manifest, certificates, crl, shard-N, receipt-N) and their sizes. */
  readonly items: readonly { readonly name: string; readonly size: number }[];
  readonly storage: {
    readonly totalBytes: number;
    readonly usedBytes: number;
    readonly freeBytes: number;
    readonly maxItemBytes: number;
  };
}

/** Everything `card status` shows, without the PIN. */
export async function readCardStatus(element: PivElement, reader: string): Promise<CardStatus> {
  const session = element.session;
  const slots: SlotStatus[] = [];
  for (const { slot, role } of SLOTS) slots.push(await readSlot(session, slot, role));
  const pinTriesLeft = await session.pinTriesLeft();
  const pinMetadata = await metadata(session, 0x80);
  const pukMetadata = await metadata(session, 0x81);
  const managementMetadata = await metadata(session, MANAGEMENT_KEY_REFERENCE);
  const type = await session.getManagementKeyType();
  const admin = await session.getPivmanData();
  const chuid = (await session.readObject(ObjectId.chuid)) !== undefined;
  const ccc = (await session.readObject(ObjectId.cardCapabilityContainer)) !== undefined;
  const items = await element.listItems();
  const capacity = await element.capacity();
  const v = session.version;
  return {
    reader,
    serial: element.info.serial ?? null,
    version: v ? `${v.major}.${v.minor}.${v.patch}` : null,
    slots,
    pin: {
      triesLeft: pinTriesLeft ?? pinMetadata?.attemptsRemaining ?? null,
      tries: pinMetadata?.totalAttempts ?? null,
      isDefault: pinMetadata?.isDefault ?? null,
    },
    puk: {
      triesLeft: pukMetadata?.attemptsRemaining ?? null,
      tries: pukMetadata?.totalAttempts ?? null,
      isDefault: pukMetadata?.isDefault ?? null,
    },
    managementKey: {
      type: describeManagementKeyType(type),
      isDefault: managementMetadata?.isDefault ?? null,
      pinProtected: (admin.flags & PivmanFlag.managementKeyStored) !== 0,
      pinDerived: admin.salt !== undefined,
    },
    chuid,
    ccc,
    items,
    storage: {
      totalBytes: capacity.totalBytes,
      usedBytes: capacity.usedBytes,
      freeBytes: capacity.freeBytes,
      maxItemBytes: capacity.maxItemBytes,
    },
  };
}

/** Yubico metadata, or undefined on a card without it (status words, not a failure). */
async function metadata(session: PivSession, reference: number): Promise<PivMetadata | undefined> {
  try {
    return await session.getMetadata(reference);
  } catch (error) {
    if (error instanceof ApduError) return undefined;
    throw error;
  }
}

async function readSlot(session: PivSession, slot: PivSlot, role: string): Promise<SlotStatus> {
  let meta: PivMetadata | undefined;
  try {
    meta = await session.getSlotMetadata(slot);
  } catch (error) {
    if (!(error instanceof ApduError)) throw error;
  }
  let certificate: X509Certificate | undefined;
  let certificateError: string | undefined;
  try {
    const der = await session.getCertificate(slot);
    if (der) certificate = new X509Certificate(der);
  } catch (error) {
    if (error instanceof ApduError) throw error;
    // A malformed certificate object is something to show, not a reason to stop.
    certificateError = error instanceof TlvError ? error.message : "not a readable X.509 certificate";
  }
  const algorithm =
    meta?.algorithm !== undefined
      ? algorithmName(meta.algorithm)
      : certificate
        ? certificateAlgorithm(certificate)
        : null;
  return {
    slot,
    role,
    algorithm,
    pinPolicy: meta?.pinPolicy ?? null,
    touchPolicy: meta?.touchPolicy ?? null,
    origin: meta?.origin ?? null,
    certificate: certificate ? describeCardCertificate(certificate) : null,
    ...(certificateError ? { certificateError } : {}),
  };
}

function algorithmName(alg: number): string {
  const curve = curveFromAlgorithm(alg);
  if (curve) return `ECC ${curve}`;
  if (alg === 0x06) return "RSA 1024";
  if (alg === 0x07) return "RSA 2048";
  return `algorithm 0x${alg.toString(16).padStart(2, "0")}`;
}

function certificateAlgorithm(certificate: X509Certificate): string {
  const algorithm = certificate.publicKey.algorithm as { name?: string; namedCurve?: string };
  return algorithm.namedCurve ? `ECC ${algorithm.namedCurve}` : (algorithm.name ?? "unknown");
}

// ---- PKCS#11 token ----------------------------------------------------------------------------------

export interface TokenStatus {
  readonly backend: "pkcs11";
  readonly token: string;
  readonly serial: string | null;
  readonly manufacturer: string;
  readonly model: string;
  readonly module: string;
  /** The token's channel: always "token" (its own business; SCP11 does not apply). */
  readonly channel: string;
  readonly pin: {
    readonly triesLeft: number | null;
    readonly countLow: boolean;
    readonly finalTry: boolean;
    readonly locked: boolean;
  };
  readonly keys: readonly {
    readonly role: string;
    readonly label: string;
    readonly algorithm: string | null;
    readonly certificate: ReturnType<typeof describeCardCertificate> | null;
  }[];
  readonly items: readonly { readonly name: string; readonly size: number }[];
  readonly storage: CardStatus["storage"];
}

/** What `card status --token` shows, without the PIN (the signing key itself is then invisible). */
export async function readTokenStatus(element: Pkcs11Element): Promise<TokenStatus> {
  const token = element.token;
  const pin = token.pinStatus();
  const keys = [
    { role: "card authentication", label: DEFAULT_PKCS11_ROLES.cardAuthentication.label },
    { role: "digital signature", label: DEFAULT_PKCS11_ROLES.signing.label },
  ].map(({ role, label }) => {
    const der = token.findCertificate(label);
    const spki = token.publicKeySpki(label);
    let certificate: ReturnType<typeof describeCardCertificate> | null = null;
    let algorithm: string | null = null;
    if (der) {
      const parsed = new X509Certificate(der);
      certificate = describeCardCertificate(parsed);
      algorithm = certificateAlgorithm(parsed);
    }
    if (!algorithm && spki) {
      const key = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
      const curve = key.asymmetricKeyDetails?.namedCurve;
      algorithm = `ECC ${curve === "prime256v1" ? "P-256" : curve === "secp384r1" ? "P-384" : (curve ?? "?")}`;
    }
    return { role, label, algorithm, certificate };
  });
  const capacity = await element.capacity();
  return {
    backend: "pkcs11",
    token: token.description.label,
    serial: token.description.serialNumber || null,
    manufacturer: token.description.manufacturer,
    model: token.description.model,
    module: token.description.modulePath,
    channel: channelLabel(element.info.channel),
    pin: {
      triesLeft: pin.triesLeft < 0 ? null : pin.triesLeft,
      countLow: pin.countLow,
      finalTry: pin.finalTry,
      locked: pin.locked,
    },
    keys,
    items: await element.listItems(),
    storage: {
      totalBytes: capacity.totalBytes,
      usedBytes: capacity.usedBytes,
      freeBytes: capacity.freeBytes,
      maxItemBytes: capacity.maxItemBytes,
    },
  };
}

function tokenStatusLines(s: TokenStatus): string[] {
  const lines = [
    `Token "${s.token}" (serial ${s.serial ?? "none"}, ${s.manufacturer} ${s.model}) through ${s.module}; channel: ${s.channel}`,
  ];
  for (const key of s.keys) {
    lines.push(`  ${key.role} ("${key.label}"): ${key.algorithm ?? "no key"}`);
    if (key.certificate) {
      lines.push(`    Subject:  ${key.certificate.subject}`);
      lines.push(`    Issuer:   ${key.certificate.issuer}`);
      lines.push(`    Validity: ${key.certificate.notBefore} to ${key.certificate.notAfter}`);
      lines.push(`    SHA-256:  ${key.certificate.sha256}`);
    } else lines.push("    Certificate: none");
  }
  const flags = [
    s.pin.locked && "locked",
    s.pin.finalTry && "final try",
    s.pin.countLow && "count low",
  ].filter(Boolean);
  lines.push(
    `  PIN: ${s.pin.locked ? "blocked" : s.pin.triesLeft === null ? "tries left not reported" : `${s.pin.triesLeft} tries left`}${flags.length > 0 ? ` (${flags.join(", ")})` : ""}`,
  );
  lines.push(
    `  Items: ${s.items.length === 0 ? "none" : s.items.map((i) => `${i.name} (${i.size} B)`).join(", ")}`,
  );
  lines.push(
    `  Storage: ${s.storage.usedBytes} of ${s.storage.totalBytes} bytes used (budget), ${s.storage.freeBytes} free`,
  );
  return lines;
}

// ---- output -----------------------------------------------------------------------------------------

function statusLines(s: CardStatus): string[] {
  const lines = [
    `Card ${s.serial ?? "(no serial)"}${s.version ? ` (firmware ${s.version})` : ""} in ${s.reader}`,
  ];
  for (const slot of s.slots) {
    if (!slot.algorithm && !slot.certificate && !slot.certificateError) {
      lines.push(`  Slot ${slot.slot} (${slot.role}): empty`);
      continue;
    }
    const policy = slot.pinPolicy ? `, PIN ${slot.pinPolicy}` : "";
    const origin = slot.origin ? `, ${slot.origin}` : "";
    lines.push(`  Slot ${slot.slot} (${slot.role}): ${slot.algorithm ?? "no key"}${policy}${origin}`);
    if (slot.certificate) {
      const c = slot.certificate;
      lines.push(`    Subject:  ${c.subject}`);
      lines.push(`    Issuer:   ${c.issuer}`);
      lines.push(`    Validity: ${c.notBefore} to ${c.notAfter}`);
      lines.push(`    SHA-256:  ${c.sha256}`);
    } else {
      lines.push(`    Certificate: ${slot.certificateError ?? "none"}`);
    }
  }
  const tries = (t: { triesLeft: number | null; tries: number | null; isDefault: boolean | null }) =>
    `${t.triesLeft ?? "?"}${t.tries === null ? "" : ` of ${t.tries}`}${t.isDefault ? " (factory default)" : ""}`;
  lines.push(`  PIN tries left: ${tries(s.pin)}; PUK tries left: ${tries(s.puk)}`);
  const m = s.managementKey;
  lines.push(
    `  Management key: ${m.type}${m.isDefault ? " (factory default)" : ""}` +
      (m.pinProtected ? ", PIN-protected" : m.pinDerived ? ", PIN-derived" : ", not PIN-protected"),
  );
  lines.push(`  CHUID: ${s.chuid ? "present" : "absent"}; CCC: ${s.ccc ? "present" : "absent"}`);
  lines.push(
    `  Items: ${s.items.length === 0 ? "none" : s.items.map((i) => `${i.name} (${i.size} bytes)`).join(", ")}`,
  );
  const n = (x: number) => x.toLocaleString("en-US");
  lines.push(
    `  Storage: ${n(s.storage.usedBytes)} of ${n(s.storage.totalBytes)} bytes used, ${n(s.storage.freeBytes)} free`,
  );
  return lines;
}
