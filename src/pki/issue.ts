import { UsageError } from "../errors.js";
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsageExtension,
  Extension,
  KeyUsagesExtension,
  Name,
  PublicKey,
  SubjectKeyIdentifierExtension,
  X509Certificate,
  X509CertificateGenerator,
} from "../util/x509.js";
import { encodeDirectoryNameConstraints } from "./constraints.js";
import {
  type CryptoKey,
  type CryptoProvider,
  cryptoForKey,
  generateEcKeyPair,
  hashForCurve,
  type NamedCurve,
  nodeCrypto,
  type PublicKeyInput,
  toSpki,
} from "./keys.js";
import { ATTR, EXT } from "./oids.js";
import {
  type CardSlot,
  type CertificateProfile,
  cardSubject,
  caSubject,
  deviceSubject,
  distinguishedName,
  type JsonDistinguishedName,
  PROFILES,
  SLOT_PROFILES,
  type ValidityOptions,
  validityWindow,
} from "./profiles.js";

/** A CA certificate with the private key that signs for it. */
export interface IssuerCredentials {
  readonly certificate: X509Certificate;
  readonly privateKey: CryptoKey;
}

/** The three CAs of an onboarding PKI (SPEC.md §4). */
export interface OnboardingPki {
  readonly root: IssuerCredentials;
  readonly tokenCa: IssuerCredentials;
  readonly deviceCa: IssuerCredentials;
}

/** Options every issuing function accepts. */
export interface IssueOptions extends ValidityOptions {
  /** Certificate serial number as hex (default: 16 random bytes, positive). For tests. */
  readonly certificateSerial?: string;
  readonly crypto?: CryptoProvider;
}

export const DEFAULT_MANUFACTURER = "hsm-onboard Manufacturer";

/**
 * A random positive 16-byte serial number (RFC 5280 §4.1.2.2: positive, at most 20 octets, unique).
 * The first octet is 0x01–0x7F so the DER INTEGER is exactly 16 octets with no sign padding.
 */
export function randomSerialNumber(crypto: CryptoProvider = nodeCrypto): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = ((bytes[0] ?? 0) % 0x7f) + 1;
  return Buffer.from(bytes).toString("hex");
}

/** Creates the self-signed manufacturer root (ECDSA P-384). */
export async function createRootCa(
  options: IssueOptions & { organization?: string; commonName?: string; keys?: CryptoKeyPairLike } = {},
): Promise<IssuerCredentials> {
  const crypto = options.crypto ?? nodeCrypto;
  const organization = options.organization ?? DEFAULT_MANUFACTURER;
  const keys = options.keys ?? (await generateEcKeyPair("P-384", crypto));
  const spki = await toSpki(keys.publicKey, crypto);
  const subject = caSubject(options.commonName ?? `${organization} Root CA`, organization);
  const certificate = await signCertificate({
    profile: PROFILES.root,
    subject,
    issuerName: subject,
    spki,
    signingKey: keys.privateKey,
    options,
  });
  return { certificate, privateKey: keys.privateKey };
}

/** Issues a CA (token CA or device CA: pathLen 0, ECDSA P-384) under `issuer`. */
export async function issueCaCertificate(
  params: IssueOptions & {
    issuer: IssuerCredentials;
    kind: "tokenCa" | "deviceCa";
    commonName: string;
    organization: string;
    keys?: CryptoKeyPairLike;
  },
): Promise<IssuerCredentials> {
  const crypto = params.crypto ?? nodeCrypto;
  const keys = params.keys ?? (await generateEcKeyPair("P-384", crypto));
  const subject = caSubject(params.commonName, params.organization);
  const certificate = await signCertificate({
    profile: PROFILES[params.kind],
    subject,
    spki: await toSpki(keys.publicKey, crypto),
    issuer: params.issuer,
    options: params,
    // A token CA speaks for its owner only: permitted subtree O = owner (RFC 5280 §4.2.1.10, critical).
    ...(params.kind === "tokenCa"
      ? {
          extraExtensions: [
            new Extension(
              EXT.nameConstraints,
              true,
              toArrayBuffer(encodeDirectoryNameConstraints([organizationName(params.organization)])),
            ),
          ],
        }
      : {}),
  });
  return { certificate, privateKey: keys.privateKey };
}

/** The DER of the Name "O = organization", encoded exactly as subjects encode O (UTF8String). */
function organizationName(organization: string): Uint8Array {
  return new Uint8Array(
    new Name(distinguishedName([{ type: ATTR.organization, value: organization }])).toArrayBuffer(),
  );
}

/**
 * Creates a complete onboarding PKI: the manufacturer root, a token CA and a device CA. With an
 * `owner`, the token CA is that owner's (O = owner), since an HSM pins its owner together with the
 * token CA it came from (SPEC.md §4, Ownership).
 */
export async function createPki(
  options: IssueOptions & { owner?: string; manufacturer?: string } = {},
): Promise<OnboardingPki> {
  const { certificateSerial: _ignored, ...common } = options;
  const manufacturer = options.manufacturer ?? DEFAULT_MANUFACTURER;
  const root = await createRootCa({ ...common, organization: manufacturer });
  const tokenOrganization = options.owner ?? manufacturer;
  const tokenCa = await issueCaCertificate({
    ...common,
    issuer: root,
    kind: "tokenCa",
    organization: tokenOrganization,
    commonName: `${tokenOrganization} Token CA`,
  });
  const deviceCa = await issueCaCertificate({
    ...common,
    issuer: root,
    kind: "deviceCa",
    organization: manufacturer,
    commonName: `${manufacturer} Device CA`,
  });
  return { root, tokenCa, deviceCa };
}

export interface IssueCardCertificateParams extends IssueOptions {
  readonly tokenCa: IssuerCredentials;
  /** The key generated on the card: SubjectPublicKeyInfo DER, a KeyObject or a CryptoKey (P-256/P-384). */
  readonly publicKey: PublicKeyInput;
  /** The customer organisation (subject O). */
  readonly owner: string;
  /** The security officer holding the card (subject CN). */
  readonly officer?: string;
  /** 9E: card authentication; 9C: configuration signing. */
  readonly slot: CardSlot;
  /** The secure element's own serial number (subject serialNumber), if known. */
  readonly serial?: string;
}

/** Issues the certificate for a key generated in PIV slot 9E or 9C of a secure element. */
export async function issueCardCertificate(params: IssueCardCertificateParams): Promise<X509Certificate> {
  const profileName = SLOT_PROFILES[params.slot];
  if (!profileName) throw new UsageError(`unsupported PIV slot ${String(params.slot)} (expected 9E or 9C)`);
  const crypto = params.crypto ?? nodeCrypto;
  return signCertificate({
    profile: PROFILES[profileName],
    subject: cardSubject(params.owner, params.officer, params.serial),
    spki: await toSpki(params.publicKey, crypto),
    issuer: params.tokenCa,
    options: params,
  });
}

export interface IssueDeviceCertificateParams extends IssueOptions {
  readonly deviceCa: IssuerCredentials;
  readonly publicKey: PublicKeyInput;
  /** The HSM serial number (subject serialNumber and CN). */
  readonly serial: string;
  /** Subject O (default: the device CA's organisation). */
  readonly manufacturer?: string;
}

/** Issues an HSM device certificate. */
export async function issueDeviceCertificate(params: IssueDeviceCertificateParams): Promise<X509Certificate> {
  const crypto = params.crypto ?? nodeCrypto;
  const manufacturer =
    params.manufacturer ?? params.deviceCa.certificate.subjectName.getField("O")[0] ?? DEFAULT_MANUFACTURER;
  return signCertificate({
    profile: PROFILES.device,
    subject: deviceSubject(params.serial, manufacturer),
    spki: await toSpki(params.publicKey, crypto),
    issuer: params.deviceCa,
    options: params,
  });
}

/** Device keys are P-256: receipts (COSE ES256) stay small on the card, and P-256 is what most HSMs offer. */
export const DEVICE_KEY_CURVE: NamedCurve = "P-256";

/** Generates a device key pair and its certificate (the simulation's stand-in for a key made in the HSM). */
export async function createDeviceIdentity(
  params: Omit<IssueDeviceCertificateParams, "publicKey">,
): Promise<{ certificate: X509Certificate; privateKey: CryptoKey }> {
  const keys = await generateEcKeyPair(DEVICE_KEY_CURVE, params.crypto ?? nodeCrypto);
  const certificate = await issueDeviceCertificate({ ...params, publicKey: keys.publicKey });
  return { certificate, privateKey: keys.privateKey };
}

/** Both halves of a key pair; only the private half must be able to sign. */
export interface CryptoKeyPairLike {
  readonly publicKey: CryptoKey;
  readonly privateKey: CryptoKey;
}

/** The curve of a CA's signing key decides the signature hash (P-384 → SHA-384). */
export function signingAlgorithmFor(issuerKey: CryptoKey): { name: "ECDSA"; hash: "SHA-256" | "SHA-384" } {
  const curve = (issuerKey.algorithm as { namedCurve?: string }).namedCurve;
  if (issuerKey.algorithm.name !== "ECDSA" || (curve !== "P-256" && curve !== "P-384")) {
    throw new UsageError("issuing key must be an ECDSA P-256 or P-384 key");
  }
  return { name: "ECDSA", hash: hashForCurve(curve) };
}

async function signCertificate(args: {
  profile: CertificateProfile;
  subject: JsonDistinguishedName;
  spki: Uint8Array;
  options: IssueOptions;
  /** Signed by this CA, or self-signed with `signingKey` under `issuerName`. */
  issuer?: IssuerCredentials;
  issuerName?: JsonDistinguishedName;
  signingKey?: CryptoKey;
  /** Extensions beyond the profile's (a token CA's name constraints). */
  extraExtensions?: readonly Extension[];
}): Promise<X509Certificate> {
  const { profile, spki, options } = args;
  const crypto = options.crypto ?? nodeCrypto;
  const signingKey = args.issuer?.privateKey ?? args.signingKey;
  const issuerName = args.issuer?.certificate.subjectName ?? (args.issuerName && new Name(args.issuerName));
  if (!signingKey || !issuerName)
    throw new TypeError("signCertificate needs an issuer or a self-signing key");
  const { notBefore, notAfter } = validityWindow(profile, options, args.issuer?.certificate.notAfter);

  const subjectKey = new PublicKey(toArrayBuffer(spki));
  const extensions: Extension[] = [
    new BasicConstraintsExtension(profile.ca, profile.ca ? profile.pathLength : undefined, true),
    new KeyUsagesExtension(profile.keyUsage, true),
  ];
  if (profile.extendedKeyUsage)
    extensions.push(new ExtendedKeyUsageExtension([...profile.extendedKeyUsage], false));
  extensions.push(await SubjectKeyIdentifierExtension.create(subjectKey, false, crypto));
  extensions.push(...(args.extraExtensions ?? []));
  if (args.issuer) {
    const issuerSki = args.issuer.certificate.getExtension(SubjectKeyIdentifierExtension);
    extensions.push(
      issuerSki
        ? new AuthorityKeyIdentifierExtension(issuerSki.keyId, false)
        : await AuthorityKeyIdentifierExtension.create(args.issuer.certificate.publicKey, false, crypto),
    );
  }

  const certificate = await X509CertificateGenerator.create(
    {
      serialNumber: options.certificateSerial ?? randomSerialNumber(crypto),
      subject: new Name(args.subject),
      issuer: issuerName,
      notBefore,
      notAfter,
      publicKey: subjectKey,
      signingKey,
      signingAlgorithm: signingAlgorithmFor(signingKey),
      extensions,
    },
    // A key on a PKCS#11 token signs through its own provider (keys.ts, externalSigningKey).
    cryptoForKey(signingKey, crypto),
  );
  // Re-parse from DER so callers hold exactly what a verifier will see.
  return new X509Certificate(certificate.rawData);
}

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}
