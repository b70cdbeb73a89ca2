import { UsageError } from "../errors.js";
import { KEY_USAGE } from "./fast-x509.js";
import { ATTR, EKU } from "./oids.js";

/**
 * Certificate profiles of the onboarding PKI (SPEC.md §4, docs/PKI.md). One table says what each kind
 * of certificate carries; issuance reads it, and validation requirements are derived from it so the
 * two cannot drift apart.
 */
export interface CertificateProfile {
  readonly ca: boolean;
  /** basicConstraints pathLenConstraint (CAs only). */
  readonly pathLength?: number;
  /** keyUsage bits, numbered as KEY_USAGE (and @peculiar/x509's KeyUsageFlags). */
  readonly keyUsage: number;
  readonly extendedKeyUsage?: readonly string[];
  /** Default lifetime in calendar years. */
  readonly lifetimeYears: number;
}

const CA_KEY_USAGE = KEY_USAGE.keyCertSign | KEY_USAGE.cRLSign;

export const PROFILES = {
  /** Manufacturer root, self-signed. pathLen 1: root → (token | device) CA → end entity, nothing deeper. */
  root: { ca: true, pathLength: 1, keyUsage: CA_KEY_USAGE, lifetimeYears: 20 },
  /**
   * An owner's token CA: issues secure-element certificates and signs the token CRL. CA-level EKU:
   * token-auth and config-signing (and id-PIV-cardAuth, which 9E certificates carry beside
   * token-auth); name constraints: permitted subtree O = its owner (added at issuance).
   */
  tokenCa: {
    ca: true,
    pathLength: 0,
    keyUsage: CA_KEY_USAGE,
    extendedKeyUsage: [EKU.tokenAuth, EKU.configSigning, EKU.pivCardAuth],
    lifetimeYears: 10,
  },
  /** Issues HSM device certificates. CA-level EKU: device only. */
  deviceCa: {
    ca: true,
    pathLength: 0,
    keyUsage: CA_KEY_USAGE,
    extendedKeyUsage: [EKU.deviceReceipt],
    lifetimeYears: 10,
  },
  /** PIV slot 9E, card authentication: answers challenges, PIN-free (SP 800-73-4 §3.1). */
  cardAuthentication: {
    ca: false,
    keyUsage: KEY_USAGE.digitalSignature,
    extendedKeyUsage: [EKU.tokenAuth, EKU.pivCardAuth],
    lifetimeYears: 3,
  },
  /** PIV slot 9C, digital signature: signs customer configurations, PIN always. */
  configSigning: {
    ca: false,
    keyUsage: KEY_USAGE.digitalSignature | KEY_USAGE.nonRepudiation,
    extendedKeyUsage: [EKU.configSigning],
    lifetimeYears: 3,
  },
  /** HSM device identity: signs receipts. */
  device: {
    ca: false,
    keyUsage: KEY_USAGE.digitalSignature,
    extendedKeyUsage: [EKU.deviceReceipt],
    lifetimeYears: 20,
  },
} as const satisfies Record<string, CertificateProfile>;

export type ProfileName = keyof typeof PROFILES;

/** PIV slot → profile of the certificate it holds. */
export const SLOT_PROFILES = { "9E": "cardAuthentication", "9C": "configSigning" } as const;
export type CardSlot = keyof typeof SLOT_PROFILES;

/**
 * What a verifier passes to validateChain for each use of an end-entity certificate. A card
 * certificate's O must be its token CA's O (SPEC.md §4, "Many owners, one root").
 */
export const VALIDATION_REQUIREMENTS = {
  cardAuthentication: {
    requiredEku: EKU.tokenAuth,
    requiredKeyUsage: KEY_USAGE.digitalSignature,
    requireIssuerOrganization: true,
  },
  configSigning: {
    requiredEku: EKU.configSigning,
    requiredKeyUsage: KEY_USAGE.digitalSignature,
    requireIssuerOrganization: true,
  },
  deviceReceipt: { requiredEku: EKU.deviceReceipt, requiredKeyUsage: KEY_USAGE.digitalSignature },
} as const;

/** Clock inputs every issuing function accepts, so tests can make certificates for any moment. */
export interface ValidityOptions {
  /** Issuing time (default: the current time). */
  readonly now?: Date;
  /** How far notBefore lies before `now`, for verifiers whose clocks run behind (default 1 hour). */
  readonly backdateMs?: number;
  /** Explicit notBefore; overrides now − backdate. */
  readonly notBefore?: Date;
  /** Explicit notAfter; overrides notBefore + the profile lifetime (and is not clamped). */
  readonly notAfter?: Date;
}

export const DEFAULT_BACKDATE_MS = 60 * 60 * 1000;

/**
 * The validity window of a new certificate. Without an explicit notAfter, a certificate never outlives
 * its issuer: the profile lifetime is cut at the issuer's notAfter (a longer one could never validate).
 */
export function validityWindow(
  profile: CertificateProfile,
  options: ValidityOptions,
  issuerNotAfter?: Date,
): { notBefore: Date; notAfter: Date } {
  const now = options.now ?? new Date();
  const notBefore =
    options.notBefore ?? new Date(now.getTime() - (options.backdateMs ?? DEFAULT_BACKDATE_MS));
  let notAfter = options.notAfter;
  if (!notAfter) {
    notAfter = new Date(now);
    notAfter.setUTCFullYear(notAfter.getUTCFullYear() + profile.lifetimeYears);
    if (issuerNotAfter && issuerNotAfter < notAfter) notAfter = new Date(issuerNotAfter);
  }
  if (notAfter <= notBefore) throw new UsageError("certificate notAfter must be later than notBefore");
  return { notBefore, notAfter };
}

/** One name attribute, in the order and string type given (UTF8String unless stated). */
type NameAttribute = { readonly type: string; readonly value: string; readonly printable?: boolean };

/** JSON form of a distinguished name for @peculiar/x509, with explicit string types (no escaping rules). */
export type JsonDistinguishedName = Record<string, { utf8String?: string; printableString?: string }[]>[];

export function distinguishedName(attributes: readonly NameAttribute[]): JsonDistinguishedName {
  return attributes.map((a) => ({
    [a.type]: [a.printable ? { printableString: a.value } : { utf8String: a.value }],
  }));
}

/** Names of the CAs: O = the organisation, CN = what the CA is. */
export function caSubject(commonName: string, organization: string): JsonDistinguishedName {
  return distinguishedName([
    { type: ATTR.organization, value: checkNameValue("organization", organization) },
    { type: ATTR.commonName, value: checkNameValue("common name", commonName) },
  ]);
}

/** Card certificates: O = owner (customer organisation), CN = officer, serialNumber = the card's serial. */
export function cardSubject(owner: string, officer?: string, cardSerial?: string): JsonDistinguishedName {
  const attributes: NameAttribute[] = [{ type: ATTR.organization, value: checkNameValue("owner", owner) }];
  if (officer !== undefined)
    attributes.push({ type: ATTR.commonName, value: checkNameValue("officer", officer) });
  if (cardSerial !== undefined) {
    attributes.push({
      type: ATTR.serialNumber,
      value: checkSerial("card serial", cardSerial),
      printable: true,
    });
  }
  return distinguishedName(attributes);
}

/** Device certificates: O = manufacturer, CN and serialNumber = the HSM serial (SPEC.md §4). */
export function deviceSubject(hsmSerial: string, manufacturer: string): JsonDistinguishedName {
  const serial = checkSerial("HSM serial", hsmSerial);
  return distinguishedName([
    { type: ATTR.organization, value: checkNameValue("manufacturer", manufacturer) },
    { type: ATTR.commonName, value: serial },
    { type: ATTR.serialNumber, value: serial, printable: true },
  ]);
}

// X.520 upper bounds: ub-organization-name and ub-common-name are 64, ub-serial-number 64.
const MAX_NAME_LENGTH = 64;

function checkNameValue(what: string, value: string): string {
  if (value.trim() !== value || value.length === 0 || /[\u0000-\u001f\u007f]/.test(value)) {
    throw new UsageError(`${what} must be non-empty, without control characters or surrounding spaces`);
  }
  if ([...value].length > MAX_NAME_LENGTH)
    throw new UsageError(`${what} is longer than ${MAX_NAME_LENGTH} characters`);
  return value;
}

/** Serial numbers are PrintableString (X.520 §6.2.9); this project keeps them to a safe subset. */
export function checkSerial(what: string, value: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9.:-]{0,63}$/.test(value)) {
    throw new UsageError(
      `${what} must be 1-64 characters of A-Z, a-z, 0-9, '.', ':' or '-' (got "${value}")`,
    );
  }
  return value;
}
