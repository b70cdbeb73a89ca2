/**
 * Certificates of the SCP11 secure channel (GP Card Specification 2.3 Amendment F §2.4, with X.509
 * as YubiKey 5.7 uses it), kept apart from the onboarding PKI's profiles:
 * - an SCP vendor CA (self-signed, P-256, pathLen 0): the virtual card's stand-in for Yubico's SD
 *   attestation root, which station and agent are given as their SCP trust anchor;
 * - the SD's SCP11 key certificate (keyAgreement), issued by that vendor CA to each card;
 * - the station's OCE certificate for SCP11a (keyAgreement), issued by the owner's token CA (the
 *   card holds that CA's public key as its OCE anchor).
 */
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  type Extension,
  KeyUsageFlags,
  KeyUsagesExtension,
  Name,
  PublicKey,
  SubjectKeyIdentifierExtension,
  X509Certificate,
  X509CertificateGenerator,
} from "../util/x509.js";
import type { IssuerCredentials } from "./issue.js";
import { randomSerialNumber, signingAlgorithmFor } from "./issue.js";
import { type CryptoKey, generateEcKeyPair, nodeCrypto } from "./keys.js";
import { caSubject } from "./profiles.js";

const DAY = 86_400_000;

function ab(b: Uint8Array): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

async function sign(args: {
  subject: Name;
  issuer?: IssuerCredentials;
  selfKey?: CryptoKey;
  spki: Uint8Array;
  ca: boolean;
  keyUsage: KeyUsageFlags;
  years: number;
}): Promise<X509Certificate> {
  const publicKey = new PublicKey(ab(args.spki));
  const signingKey = args.issuer?.privateKey ?? args.selfKey!;
  const now = Date.now();
  const notBefore = new Date(now - DAY);
  let notAfter = new Date(now + args.years * 365 * DAY);
  if (args.issuer && notAfter > args.issuer.certificate.notAfter) notAfter = args.issuer.certificate.notAfter;
  const extensions: Extension[] = [
    new BasicConstraintsExtension(args.ca, args.ca ? 0 : undefined, true),
    new KeyUsagesExtension(args.keyUsage, true),
    await SubjectKeyIdentifierExtension.create(publicKey, false, nodeCrypto),
  ];
  if (args.issuer) {
    // The issuer's own key identifier when it has one (the card lists it under FF33 for SCP11a).
    const ski = args.issuer.certificate.getExtension(SubjectKeyIdentifierExtension);
    extensions.push(
      ski
        ? new AuthorityKeyIdentifierExtension(ski.keyId, false)
        : await AuthorityKeyIdentifierExtension.create(args.issuer.certificate.publicKey, false, nodeCrypto),
    );
  }
  const cert = await X509CertificateGenerator.create(
    {
      serialNumber: randomSerialNumber(),
      subject: args.subject,
      issuer: args.issuer?.certificate.subjectName ?? args.subject,
      notBefore,
      notAfter,
      publicKey,
      signingKey,
      signingAlgorithm: signingAlgorithmFor(signingKey),
      extensions,
    },
    nodeCrypto,
  );
  return new X509Certificate(cert.rawData);
}

/** A self-signed SCP vendor CA (P-256). */
export async function createScpVendorCa(organization: string): Promise<IssuerCredentials> {
  const keys = await generateEcKeyPair("P-256");
  const spki = new Uint8Array(await nodeCrypto.subtle.exportKey("spki", keys.publicKey));
  const certificate = await sign({
    subject: new Name(caSubject(`${organization} SCP CA`, organization)),
    selfKey: keys.privateKey,
    spki,
    ca: true,
    keyUsage: KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign,
    years: 20,
  });
  return { certificate, privateKey: keys.privateKey };
}

/** The SD's SCP11 key certificate (keyAgreement) for the P-256 public key `spki`. */
export function issueScpKeyCertificate(
  issuer: IssuerCredentials,
  spki: Uint8Array,
  commonName: string,
): Promise<X509Certificate> {
  return sign({
    subject: new Name([{ "2.5.4.3": [{ utf8String: commonName }] }]),
    issuer,
    spki,
    ca: false,
    keyUsage: KeyUsageFlags.keyAgreement,
    years: 20,
  });
}

/**
 * The station's OCE certificate for SCP11a, under the owner's token CA: P-256 key, keyUsage
 * keyAgreement only (critical), basicConstraints cA false (critical), no extendedKeyUsage (GP
 * Amendment F's OCE certificate is a key-agreement certificate, as Samsung's SCP11a test OCE is),
 * subject and authority key identifiers. With `owner`, the subject is O = owner, CN = commonName,
 * inside the token CA's name constraints (an X.509 validator such as `openssl verify` checks them).
 */
export function issueOceCertificate(
  tokenCa: IssuerCredentials,
  spki: Uint8Array,
  commonName: string,
  years = 3,
  owner?: string,
): Promise<X509Certificate> {
  return sign({
    subject: new Name(
      owner === undefined ? [{ "2.5.4.3": [{ utf8String: commonName }] }] : caSubject(commonName, owner),
    ),
    issuer: tokenCa,
    spki,
    ca: false,
    keyUsage: KeyUsageFlags.keyAgreement,
    years,
  });
}
