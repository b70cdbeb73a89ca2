import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsageExtension,
  type Extension,
  KeyUsageFlags,
  KeyUsagesExtension,
  Name,
  SubjectKeyIdentifierExtension,
  X509Certificate,
  X509CertificateGenerator,
} from "@peculiar/x509";
import { issueCrl, type RevokedCertificateEntry } from "../../src/pki/crl.js";
import {
  createPki,
  type IssuerCredentials,
  issueCardCertificate,
  issueDeviceCertificate,
  type OnboardingPki,
  randomSerialNumber,
} from "../../src/pki/issue.js";
import { type CryptoKey, type CryptoKeyPair, generateEcKeyPair, nodeCrypto } from "../../src/pki/keys.js";
import { EKU } from "../../src/pki/oids.js";
import { cardSubject } from "../../src/pki/profiles.js";

/** A fixed clock for every test: certificates are issued at ISSUED_AT and validated at NOW. */
export const ISSUED_AT = new Date("2030-01-01T00:00:00Z");
export const NOW = new Date("2030-06-01T00:00:00Z");
export const DAY = 86_400_000;

export const OWNER = "ACME Bank";
export const OFFICER = "Alice Example";

export interface TestPki extends OnboardingPki {
  readonly cardKeys: CryptoKeyPair;
  readonly card9e: X509Certificate;
  readonly card9c: X509Certificate;
  readonly deviceKeys: CryptoKeyPair;
  readonly device: X509Certificate;
  /** Token CA CRL number 1, no entries, valid 30 days from ISSUED_AT + 120 days. */
  readonly crl: Awaited<ReturnType<typeof issueCrl>>;
}

export async function makeTestPki(): Promise<TestPki> {
  const pki = await createPki({ owner: OWNER, now: ISSUED_AT });
  const cardKeys = await generateEcKeyPair("P-256");
  const card9e = await issueCardCertificate({
    tokenCa: pki.tokenCa,
    publicKey: cardKeys.publicKey,
    owner: OWNER,
    officer: OFFICER,
    slot: "9E",
    now: ISSUED_AT,
  });
  const card9c = await issueCardCertificate({
    tokenCa: pki.tokenCa,
    publicKey: cardKeys.publicKey,
    owner: OWNER,
    officer: OFFICER,
    slot: "9C",
    now: ISSUED_AT,
  });
  const deviceKeys = await generateEcKeyPair("P-256");
  const device = await issueDeviceCertificate({
    deviceCa: pki.deviceCa,
    publicKey: deviceKeys.publicKey,
    serial: "1234567",
    now: ISSUED_AT,
  });
  const crl = await freshCrl(pki.tokenCa, 1n);
  return { ...pki, cardKeys, card9e, card9c, deviceKeys, device, crl };
}

/** A CRL that is current at NOW. */
export function freshCrl(
  issuer: IssuerCredentials,
  crlNumber: bigint,
  entries: RevokedCertificateEntry[] = [],
) {
  return issueCrl({ issuer, crlNumber, entries, now: new Date(NOW.getTime() - 5 * DAY) });
}

/**
 * A card subject as the project writes it (O first, UTF8String): a token CA's name constraints
 * permit exactly this prefix.
 */
export function cardName(owner = OWNER, officer = OFFICER): Name {
  return new Name(cardSubject(owner, officer));
}

/** Everything a forged certificate can get wrong, each defaulting to what the real profile does. */
export interface ForgeParams {
  subject: string | Name;
  issuer?: IssuerCredentials;
  /** Overrides the issuer name written into the certificate. */
  issuerName?: string | Name;
  /** Overrides the key that signs (default: the issuer's). */
  signingKey?: CryptoKey;
  publicKey: CryptoKey;
  ca?: boolean;
  pathLength?: number;
  /** null: no basicConstraints at all. */
  basicConstraints?: null;
  keyUsage?: KeyUsageFlags | null;
  eku?: string[] | null;
  notBefore?: Date;
  notAfter?: Date;
  extraExtensions?: Extension[];
}

/** Builds a certificate directly with the @peculiar/x509 generator, bypassing the project's profiles. */
export async function forge(p: ForgeParams): Promise<X509Certificate> {
  const signingKey = p.signingKey ?? p.issuer?.privateKey;
  if (!signingKey) throw new Error("forge needs an issuer or a signing key");
  const ca = p.ca ?? false;
  const extensions: Extension[] = [];
  if (p.basicConstraints !== null) extensions.push(new BasicConstraintsExtension(ca, p.pathLength, true));
  const keyUsage =
    p.keyUsage === undefined
      ? ca
        ? KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign
        : KeyUsageFlags.digitalSignature
      : p.keyUsage;
  if (keyUsage !== null) extensions.push(new KeyUsagesExtension(keyUsage, true));
  const eku = p.eku === undefined ? (ca ? null : [EKU.tokenAuth]) : p.eku;
  if (eku !== null) extensions.push(new ExtendedKeyUsageExtension(eku, false));
  extensions.push(await SubjectKeyIdentifierExtension.create(p.publicKey, false, nodeCrypto));
  if (p.issuer) {
    const ski = p.issuer.certificate.getExtension(SubjectKeyIdentifierExtension);
    if (ski) extensions.push(new AuthorityKeyIdentifierExtension(ski.keyId, false));
  }
  extensions.push(...(p.extraExtensions ?? []));
  const cert = await X509CertificateGenerator.create(
    {
      serialNumber: randomSerialNumber(),
      subject: p.subject,
      issuer: p.issuerName ?? p.issuer?.certificate.subjectName ?? p.subject,
      notBefore: p.notBefore ?? new Date(ISSUED_AT.getTime() - DAY),
      notAfter: p.notAfter ?? new Date(ISSUED_AT.getTime() + 365 * DAY),
      publicKey: p.publicKey,
      signingKey,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-384" },
      extensions,
    },
    nodeCrypto,
  );
  return new X509Certificate(cert.rawData);
}

/** A new CA (key pair + certificate) forged under `issuer`, or self-signed when there is none. */
export async function forgeCa(
  subject: string | Name,
  issuer: IssuerCredentials | undefined,
  overrides: Partial<ForgeParams> = {},
): Promise<IssuerCredentials> {
  const keys = await generateEcKeyPair("P-384");
  const certificate = await forge({
    subject,
    ...(issuer ? { issuer } : { signingKey: keys.privateKey }),
    publicKey: keys.publicKey,
    ca: true,
    ...overrides,
  });
  return { certificate, privateKey: keys.privateKey };
}
