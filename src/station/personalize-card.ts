/**
 * Personalisation of a PIV card as an onboarding secure element (SPEC.md §4, §5; docs/CARD.md): what
 * `hsm-onboard card personalize` does, for the virtual card and a real YubiKey alike, in-process or
 * through PC/SC. The CLI, the demo and the tests call this one function.
 *
 * Order, chosen so that a card pulled half-way can be personalised again with the same command:
 *
 *  1. Inputs checked (PIN/PUK format, owner/officer names) before the card is touched.
 *  2. Current credentials checked, nothing changed yet: the PIN (VERIFY) and the PUK (CHANGE
 *     REFERENCE DATA to itself). On a YubiKey a PIN or PUK that is no longer the factory default is
 *     refused up front when the caller assumed the defaults, so no try is burnt on a guess.
 *  3. Management key: the one given, else the PIN-protected one the card stores (a card personalised
 *     before), else the factory default.
 *  4. CHUID and CCC written when missing (OpenSC and Windows want them).
 *  5. Keys generated on the card: 9E (PIN never), 9C (PIN always). The private keys never leave it.
 *  6. Certificates issued by the token CA (O = owner, CN = officer, serialNumber = card serial) and,
 *     when the root is given, validated as a verifier will (chain, EKU, CRL) before anything is stored.
 *  7. Certificates, the `certificates` item (the token CA) and the `crl` item stored.
 *  8. New PIN, then new PUK.
 *  9. A random management key (AES-192, or 3DES on firmware before 5.4) stored PIN-protected
 *     (Yubico convention, PivSession.setManagementKey `protect`): the last change, so that until here
 *     the old management key still works. On a first personalisation the new key is written to
 *     PRINTED before the card switches to it: an interruption cannot leave an unknown key.
 * 10. Self-test: 9E signs a challenge without PIN, 9C signs after the new PIN, the stored management
 *     key reads back; then the PIN is logged out.
 *
 * An officer-side flow (station layer): it only speaks PIV through a PivSession, so nothing here
 * depends on the card being virtual, and it needs the PKI (issuance, validation) above the emulator.
 */
import { createHash, X509Certificate as NodeX509Certificate, randomBytes } from "node:crypto";
import { ApduError } from "../apdu/status-words.js";
import {
  ECDSA_PROFILES,
  type EcdsaAlgorithm,
  ecdsaAlgorithmForKey,
  verifyEcdsaRaw,
} from "../crypto/ecdsa.js";
import { IntegrityError, PersonalizationRefusedError } from "../errors.js";
import { ManagementKeyError } from "../piv/errors.js";
import {
  DEFAULT_MANAGEMENT_KEY,
  type ManagementKeyType,
  managementKeyLength,
} from "../piv/management-key.js";
import {
  type EcCurve,
  encodePivmanProtectedData,
  ObjectId,
  PivmanFlag,
  parsePivmanProtectedData,
} from "../piv/objects.js";
import { encodePin, type PivSession, versionAtLeast } from "../piv/piv-session.js";
import { crlNumberOf, parseCrl } from "../pki/crl.js";
import { type IssuerCredentials, issueCardCertificate } from "../pki/issue.js";
import { cardSubject, VALIDATION_REQUIREMENTS } from "../pki/profiles.js";
import { validateChain } from "../pki/validate-chain.js";
import { itemObjectId } from "../secure-element/card-layout.js";
import {
  generatePivIdentityKeys,
  installPivIdentityCertificates,
  type PivElement,
} from "../secure-element/piv-element.js";
import type { X509Certificate, X509Crl } from "../util/x509.js";

export { PersonalizationRefusedError } from "../errors.js";

/** YubiKey factory PIN and PUK (PIV-NOTES §3). */
export const DEFAULT_PIN = "123456";
export const DEFAULT_PUK = "12345678";

export type PersonalizeStep =
  | "check-credentials"
  | "management-key"
  | "card-objects"
  | "generate-keys"
  | "issue-certificates"
  | "store-certificates"
  | "change-pin"
  | "new-management-key"
  | "self-test";

export interface PersonalizeProgress {
  readonly step: PersonalizeStep;
  readonly message: string;
}

/** What personalisation needs of a PKI: the token CA with its key, and the root to self-check against. */
export interface PersonalizationPki {
  readonly tokenCa: IssuerCredentials;
  /** The manufacturer root: when given, the new certificates are validated against it before they are stored. */
  readonly root?: { readonly certificate: X509Certificate };
}

export interface PersonalizeCardOptions {
  /** The PIV session of the card (one of session or element). */
  readonly session?: PivSession;
  /** Or an open element; its session is used. Reopen the element afterwards: its caches are stale. */
  readonly element?: PivElement;
  readonly pki: PersonalizationPki;
  /** The token CA's current CRL, stored in the `crl` item (DER or PEM, or parsed). */
  readonly crl?: X509Crl | Uint8Array | string;
  /** Customer organisation: subject O of both card certificates. */
  readonly owner: string;
  /** Security officer holding the card: subject CN. */
  readonly officer?: string;
  readonly newPin: string;
  readonly newPuk: string;
  /** The card's current PIN; default the factory PIN 123456. */
  readonly currentPin?: string;
  /** The card's current PUK; default the factory PUK 12345678. */
  readonly currentPuk?: string;
  /**
   * The card's current management key. Default: the PIN-protected key the card stores (a card
   * personalised before), else the factory default 0102…08.
   */
  readonly managementKey?: Uint8Array;
  /** Curve of both identity keys (default P-256). */
  readonly algorithm?: EcCurve;
  /** Type of the new management key: default AES-192 from firmware 5.4 on, 3DES before. */
  readonly newManagementKeyType?: ManagementKeyType;
  /** The card's serial for subject serialNumber; default what the card reports (YubiKey `00 F8`). */
  readonly serial?: string;
  /** Issuing and validation time (tests). */
  readonly now?: Date;
  readonly onProgress?: (progress: PersonalizeProgress) => void;
}

export interface PersonalizeResult {
  /** The card serial written into the certificates, when the card has one. */
  readonly serial?: string;
  /** Firmware version, "5.4.3", when the card reports one. */
  readonly version?: string;
  readonly algorithm: EcCurve;
  readonly owner: string;
  readonly officer?: string;
  /** The certificates now in slots 9E (card authentication) and 9C (digital signature). */
  readonly certificates: { readonly "9E": X509Certificate; readonly "9C": X509Certificate };
  /** The `certificates` item: the token CA. */
  readonly intermediates: readonly X509Certificate[];
  /** CRL number of the `crl` item, when a CRL was stored. */
  readonly crlNumber?: bigint;
  /** Byte sizes of what was stored in the items. */
  readonly itemSizes: { readonly certificates: number; readonly crl?: number };
  readonly managementKey: { readonly type: ManagementKeyType; readonly pinProtected: true };
  /** CHUID / CCC were missing and have been written. */
  readonly wroteChuid: boolean;
  readonly wroteCcc: boolean;
  /** Which management key opened the card. */
  readonly authenticatedWith: "given" | "pin-protected" | "default";
}

/** Personalises the card; see the file comment for the order of the steps. */
export async function personalizeCard(options: PersonalizeCardOptions): Promise<PersonalizeResult> {
  const p = checkInputs(options);
  const version = p.session.version;
  const serial = options.serial ?? options.element?.info.serial ?? (await readSerial(p.session));
  await checkCurrentCredentials(p);
  const management = await authenticateManagementKey(p);
  const cardObjects = await writeMissingCardObjects(p);
  const keys = await generateKeys(p);
  const certificates = await issueCertificates(p, keys, serial);
  const crlBytes = await storeCertificatesAndItems(p, certificates);
  await changePinAndPuk(p);
  const newKey = await switchManagementKey(p, version, management.keyStoredBefore);
  await selfTestCard(p, certificates, newKey.key);
  return {
    ...(serial === undefined ? {} : { serial }),
    ...(version ? { version: `${version.major}.${version.minor}.${version.patch}` } : {}),
    algorithm: p.algorithm,
    owner: options.owner,
    ...(options.officer === undefined ? {} : { officer: options.officer }),
    certificates,
    intermediates: [p.tokenCa.certificate],
    ...(p.crl ? { crlNumber: crlNumberOf(p.crl) } : {}),
    itemSizes: {
      certificates: p.tokenCa.certificate.rawData.byteLength,
      ...(crlBytes ? { crl: crlBytes.length } : {}),
    },
    managementKey: { type: newKey.type, pinProtected: true },
    ...cardObjects,
    authenticatedWith: management.authenticatedWith,
  };
}

/** What every step works with: the checked inputs and the session. */
interface Personalization {
  readonly options: PersonalizeCardOptions;
  readonly session: PivSession;
  readonly progress: (step: PersonalizeStep, message: string) => void;
  readonly algorithm: EcCurve;
  readonly currentPin: string;
  readonly currentPuk: string;
  readonly crl: X509Crl | undefined;
  readonly tokenCa: IssuerCredentials;
}

type CardCertificates = PersonalizeResult["certificates"];

/** 1. Inputs, before the card is touched. */
function checkInputs(options: PersonalizeCardOptions): Personalization {
  const session = options.session ?? options.element?.session;
  if (!session) throw new TypeError("personalizeCard needs a session or an element");
  const currentPin = options.currentPin ?? DEFAULT_PIN;
  const currentPuk = options.currentPuk ?? DEFAULT_PUK;
  encodePin(options.newPin, "PIN");
  encodePin(options.newPuk, "PUK");
  encodePin(currentPin, "PIN");
  encodePin(currentPuk, "PUK");
  cardSubject(options.owner, options.officer);
  return {
    options,
    session,
    progress: (step, message) => options.onProgress?.({ step, message }),
    algorithm: options.algorithm ?? "P-256",
    currentPin,
    currentPuk,
    crl: options.crl === undefined ? undefined : parseCrl(options.crl),
    tokenCa: options.pki.tokenCa,
  };
}

/** 2. Current credentials: checked, not changed. */
async function checkCurrentCredentials({
  options,
  session,
  progress,
  currentPin,
  currentPuk,
}: Personalization) {
  progress("check-credentials", "checking the current PIN and PUK");
  if (options.currentPin === undefined) await refuseIfNotDefault(session, 0x80, "PIN");
  if (options.currentPuk === undefined) await refuseIfNotDefault(session, 0x81, "PUK");
  // CHANGE REFERENCE DATA to the same value proves the PUK without changing anything.
  await session.changePuk(currentPuk, currentPuk);
  await session.verifyPin(currentPin);
}

/** 3. Management key: the one given, else the PIN-protected one stored, else the factory default. */
async function authenticateManagementKey({ options, session, progress }: Personalization): Promise<{
  keyStoredBefore: boolean;
  authenticatedWith: PersonalizeResult["authenticatedWith"];
}> {
  const keyStoredBefore = ((await session.getPivmanData()).flags & PivmanFlag.managementKeyStored) !== 0;
  let authenticatedWith: PersonalizeResult["authenticatedWith"];
  if (options.managementKey) {
    await session.authenticateManagementKey(options.managementKey);
    authenticatedWith = "given";
  } else if (keyStoredBefore) {
    await session.authenticateWithPinProtectedManagementKey();
    authenticatedWith = "pin-protected";
  } else {
    authenticatedWith = await authenticateDefaultOrInterrupted(session);
  }
  progress("management-key", `management key accepted (${authenticatedWith})`);
  return { keyStoredBefore, authenticatedWith };
}

/** 4. CHUID and CCC, when missing. */
async function writeMissingCardObjects({
  session,
  progress,
}: Personalization): Promise<{ wroteChuid: boolean; wroteCcc: boolean }> {
  const wroteChuid = (await session.readObject(ObjectId.chuid)) === undefined;
  if (wroteChuid) await session.setChuid();
  const wroteCcc = (await session.readObject(ObjectId.cardCapabilityContainer)) === undefined;
  if (wroteCcc) await session.setCcc();
  if (wroteChuid || wroteCcc) {
    progress(
      "card-objects",
      `wrote ${[wroteChuid && "CHUID", wroteCcc && "CCC"].filter(Boolean).join(" and ")}`,
    );
  }
  return { wroteChuid, wroteCcc };
}

/** 5. Keys, on the card. */
function generateKeys({ session, progress, algorithm }: Personalization) {
  progress("generate-keys", `generating ${algorithm} keys in 9E and 9C on the card`);
  return generatePivIdentityKeys(session, { cardAuthenticationCurve: algorithm, signingCurve: algorithm });
}

/** 6. Certificates, checked as a verifier will check them before they go onto the card. */
async function issueCertificates(
  { options, progress, tokenCa, crl }: Personalization,
  keys: Awaited<ReturnType<typeof generatePivIdentityKeys>>,
  serial: string | undefined,
): Promise<CardCertificates> {
  progress("issue-certificates", `issuing certificates from "${tokenCa.certificate.subject}"`);
  const issued = await issueValidatedCardCertificates({
    pki: options.pki,
    crl,
    owner: options.owner,
    ...(options.officer === undefined ? {} : { officer: options.officer }),
    ...(serial === undefined ? {} : { serial }),
    ...(options.now ? { now: options.now } : {}),
    keys,
  });
  return { "9E": issued.cardAuthentication, "9C": issued.signing };
}

/**
 * The 9E and 9C certificates of a secure element (PIV card or PKCS#11 token) issued by the token CA
 * (O = owner, CN = officer, serialNumber = the element's serial) and, when the root is given,
 * validated as a verifier will (chain, EKU, CRL) before anything is stored.
 */
export async function issueValidatedCardCertificates(input: {
  readonly pki: PersonalizationPki;
  readonly crl: X509Crl | undefined;
  readonly owner: string;
  readonly officer?: string;
  readonly serial?: string;
  readonly now?: Date;
  readonly keys: { readonly cardAuthentication: Uint8Array; readonly signing: Uint8Array };
}): Promise<{ readonly cardAuthentication: X509Certificate; readonly signing: X509Certificate }> {
  const { pki, crl, keys } = input;
  const tokenCa = pki.tokenCa;
  const issue = (slot: "9E" | "9C", publicKey: Uint8Array) =>
    issueCardCertificate({
      tokenCa,
      publicKey,
      owner: input.owner,
      ...(input.officer === undefined ? {} : { officer: input.officer }),
      slot,
      ...(input.serial === undefined ? {} : { serial: input.serial }),
      ...(input.now ? { now: input.now } : {}),
    });
  const cardAuthentication = await issue("9E", keys.cardAuthentication);
  const signing = await issue("9C", keys.signing);
  if (pki.root) {
    for (const [leaf, requirements] of [
      [cardAuthentication, VALIDATION_REQUIREMENTS.cardAuthentication],
      [signing, VALIDATION_REQUIREMENTS.configSigning],
    ] as const) {
      await validateChain({
        leaf,
        intermediates: [tokenCa.certificate],
        trustAnchor: pki.root.certificate,
        crls: crl ? [crl] : [],
        requireCrl: crl !== undefined,
        ...(input.now ? { now: input.now } : {}),
        ...requirements,
      });
    }
  }
  return { cardAuthentication, signing };
}

/** 7. Certificates and the `certificates` and `crl` items; returns the CRL bytes stored. */
async function storeCertificatesAndItems(
  { session, progress, tokenCa, crl }: Personalization,
  certificates: CardCertificates,
): Promise<Uint8Array | undefined> {
  progress("store-certificates", "storing the certificates, the token CA and the CRL");
  const der = (c: X509Certificate) => new Uint8Array(c.rawData);
  await installPivIdentityCertificates(session, {
    cardAuthentication: der(certificates["9E"]),
    signing: der(certificates["9C"]),
    intermediates: [der(tokenCa.certificate)],
  });
  const crlBytes = crl ? new Uint8Array(crl.rawData) : undefined;
  if (crlBytes) await session.putData(itemObjectId({ kind: "crl" }), crlBytes);
  return crlBytes;
}

/** 8. PIN, then PUK. */
async function changePinAndPuk({ options, session, progress, currentPin, currentPuk }: Personalization) {
  progress("change-pin", "setting the new PIN and PUK");
  await session.changePin(currentPin, options.newPin);
  await session.changePuk(currentPuk, options.newPuk);
}

/** 9. A fresh management key, kept PIN-protected on the card (returned for the self-test). */
async function switchManagementKey(
  { options, session, progress }: Personalization,
  version: PivSession["version"],
  keyStoredBefore: boolean,
): Promise<{ type: ManagementKeyType; key: Uint8Array }> {
  const type = options.newManagementKeyType ?? (versionAtLeast(version, 5, 4) ? "aes192" : "3des");
  progress(
    "new-management-key",
    `switching to a random ${describeManagementKeyType(type)} PIN-protected management key`,
  );
  const key = new Uint8Array(randomBytes(managementKeyLength(type)));
  // On a first personalisation the key goes into PRINTED before the card switches to it, so a card
  // pulled between the switch and the ADMIN DATA flag still holds its key (see
  // authenticateDefaultOrInterrupted). Not when PRINTED already holds the current key: overwriting it
  // first would lose that one instead.
  if (!keyStoredBefore) {
    await session.putData(ObjectId.printedInformation, encodePivmanProtectedData(key));
  }
  await session.setManagementKey(key, type, { protect: true });
  return { type, key };
}

/** 10. Self-test, as the station and the agent will use the card; then the PIN is logged out. */
async function selfTestCard(
  { options, session, progress, algorithm }: Personalization,
  certificates: CardCertificates,
  managementKey: Uint8Array,
): Promise<void> {
  progress("self-test", "self-test: 9E challenge, 9C signature after the PIN, stored management key");
  await selfTest(session, "9E", algorithm, certificates["9E"]);
  await session.verifyPin(options.newPin);
  await selfTest(session, "9C", algorithm, certificates["9C"]);
  const stored = await session.readPinProtectedManagementKey();
  if (Buffer.compare(Buffer.from(stored), Buffer.from(managementKey)) !== 0) {
    throw new IntegrityError(
      "self-test: the management key read back from the card differs from the one set",
    );
  }
  managementKey.fill(0);
  await session.logout();
}

export function describeManagementKeyType(type: ManagementKeyType): string {
  return type === "3des" ? "3DES" : `AES-${type.slice(3)}`;
}

/**
 * The factory management key; failing that, a key a personalisation interrupted in step 9 left in
 * PRINTED (the PIN is verified by now, so PRINTED is readable) before the ADMIN DATA flag was set.
 */
async function authenticateDefaultOrInterrupted(session: PivSession): Promise<"default" | "pin-protected"> {
  try {
    await session.authenticateManagementKey(DEFAULT_MANAGEMENT_KEY);
    return "default";
  } catch (error) {
    if (!(error instanceof ManagementKeyError) || error.reason !== "wrong-key") throw error;
    const printed = await session.readObject(ObjectId.printedInformation).catch(() => undefined);
    let stored: Uint8Array | undefined;
    try {
      stored = printed === undefined ? undefined : parsePivmanProtectedData(printed);
    } catch {
      stored = undefined; // PRINTED used for something else: not ours to interpret
    }
    if (stored === undefined) throw error;
    try {
      await session.authenticateManagementKey(stored);
    } catch {
      throw error;
    }
    return "pin-protected";
  }
}

async function readSerial(session: PivSession): Promise<string | undefined> {
  try {
    return String(await session.getSerial());
  } catch (error) {
    if (error instanceof ApduError) return undefined; // not a YubiKey: no serial command
    throw error;
  }
}

/**
 * YubiKey metadata (`00 F7 00 80|81`, firmware 5.3+) says whether the PIN or PUK is still the
 * factory value. When it is not, trying the default would only burn a try.
 */
async function refuseIfNotDefault(session: PivSession, reference: 0x80 | 0x81, what: "PIN" | "PUK") {
  let isDefault: boolean | undefined;
  try {
    isDefault = (await session.getMetadata(reference)).isDefault;
  } catch (error) {
    if (!(error instanceof ApduError)) throw error;
  }
  if (isDefault === false) {
    throw new PersonalizationRefusedError(
      `the card's ${what} is not the factory default (personalised before?): give the current ${what}`,
    );
  }
}

/** The key in `slot` signs fresh random bytes; the signature verifies with the new certificate. */
async function selfTest(
  session: PivSession,
  slot: "9E" | "9C",
  curve: EcCurve,
  certificate: X509Certificate,
): Promise<void> {
  const publicKey = new NodeX509Certificate(new Uint8Array(certificate.rawData)).publicKey;
  const algorithm: EcdsaAlgorithm | undefined = ecdsaAlgorithmForKey(publicKey);
  if (algorithm === undefined || ECDSA_PROFILES[algorithm].curve !== curve) {
    throw new IntegrityError(`self-test: the ${slot} certificate does not hold a ${curve} key`);
  }
  const data = new Uint8Array(randomBytes(32));
  const digest = createHash(ECDSA_PROFILES[algorithm].hash).update(data).digest();
  const signature = await session.signDigestRaw(slot, curve, digest);
  verifyEcdsaRaw(publicKey, algorithm, data, signature);
}
