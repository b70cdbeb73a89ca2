import { MalformedError, UsageError } from "../errors.js";
import {
  AuthorityKeyIdentifierExtension,
  Extension,
  PemConverter,
  SubjectKeyIdentifierExtension,
  X509Crl,
  X509CrlGenerator,
  X509CrlReason,
} from "../util/x509.js";
import { encodeCrlNumber } from "./der.js";
import { crlNumberOfParsed, parseCrlDer } from "./fast-x509.js";
import type { IssuerCredentials } from "./issue.js";
import { signingAlgorithmFor } from "./issue.js";
import { type CryptoProvider, cryptoForKey, nodeCrypto } from "./keys.js";
import { EXT } from "./oids.js";
import { DEFAULT_BACKDATE_MS } from "./profiles.js";

/**
 * CRLs of the token CA (RFC 5280 §5): v2, with a CRL number (monotonic, so an agent can refuse an
 * older CRL) and an authority key identifier, a nextUpdate, and one entry per revoked certificate.
 */

/** Reason codes a token-CA CRL may carry (RFC 5280 §5.3.1), by their ASN.1 names. */
export const CRL_REASONS = [
  "unspecified",
  "keyCompromise",
  "affiliationChanged",
  "superseded",
  "cessationOfOperation",
  "certificateHold",
  "privilegeWithdrawn",
] as const;
export type CrlReasonName = (typeof CRL_REASONS)[number];

export interface RevokedCertificateEntry {
  /** Certificate serial number, hex. */
  readonly serialNumber: string;
  readonly revokedAt: Date;
  /** Omitted from the CRL when unspecified, as RFC 5280 §5.3.1 asks. */
  readonly reason?: CrlReasonName;
}

export const DEFAULT_CRL_VALIDITY_DAYS = 30;

export interface IssueCrlParams {
  readonly issuer: IssuerCredentials;
  /** Must grow with every CRL this issuer signs. */
  readonly crlNumber: bigint;
  readonly entries?: readonly RevokedCertificateEntry[];
  /** Signing time (default: now). thisUpdate is backdated by `backdateMs` like certificates' notBefore. */
  readonly now?: Date;
  readonly backdateMs?: number;
  readonly thisUpdate?: Date;
  /** Explicit nextUpdate; otherwise now + `validityDays` (default 30). */
  readonly nextUpdate?: Date;
  readonly validityDays?: number;
  readonly crypto?: CryptoProvider;
}

export async function issueCrl(params: IssueCrlParams): Promise<X509Crl> {
  const crypto = params.crypto ?? nodeCrypto;
  const now = params.now ?? new Date();
  const thisUpdate =
    params.thisUpdate ?? new Date(now.getTime() - (params.backdateMs ?? DEFAULT_BACKDATE_MS));
  const validityDays = params.validityDays ?? DEFAULT_CRL_VALIDITY_DAYS;
  if (!(validityDays > 0)) throw new UsageError("CRL validity must be a positive number of days");
  const nextUpdate = params.nextUpdate ?? new Date(now.getTime() + validityDays * 86_400_000);
  if (nextUpdate <= thisUpdate) throw new UsageError("CRL nextUpdate must be later than thisUpdate");

  const ski = params.issuer.certificate.getExtension(SubjectKeyIdentifierExtension);
  const extensions: Extension[] = [
    new Extension(EXT.crlNumber, false, encodeCrlNumber(params.crlNumber)),
    ski
      ? new AuthorityKeyIdentifierExtension(ski.keyId, false)
      : await AuthorityKeyIdentifierExtension.create(params.issuer.certificate.publicKey, false, crypto),
  ];
  const crl = await X509CrlGenerator.create(
    {
      issuer: params.issuer.certificate.subjectName,
      thisUpdate,
      nextUpdate,
      extensions,
      entries: (params.entries ?? []).map((e) => ({
        serialNumber: e.serialNumber,
        revocationDate: e.revokedAt,
        ...(e.reason && e.reason !== "unspecified" ? { reason: X509CrlReason[e.reason] } : {}),
      })),
      signingKey: params.issuer.privateKey,
      signingAlgorithm: signingAlgorithmFor(params.issuer.privateKey),
    },
    cryptoForKey(params.issuer.privateKey, crypto),
  );
  return new X509Crl(crl.rawData);
}

/**
 * The CRL number of a CRL (an X509Crl, or anything with its DER as `rawData`), or undefined when it
 * has none. MalformedError when it carries two, or the CRL is not well-formed DER.
 */
export function crlNumberOf(crl: { readonly rawData: ArrayBuffer }): bigint | undefined {
  return crlNumberOfParsed(parseCrlDer(new Uint8Array(crl.rawData)));
}

/** Parses a CRL given as DER bytes or PEM text. */
export function parseCrl(input: X509Crl | Uint8Array | ArrayBuffer | string): X509Crl {
  if (input instanceof X509Crl) return input;
  try {
    return new X509Crl(input instanceof Uint8Array ? toArrayBuffer(input) : input);
  } catch (error) {
    throw new MalformedError("not a readable CRL", { cause: error });
  }
}

/** PEM uses the RFC 7468 §5 label "X509 CRL" (OpenSSL reads no other; @peculiar/x509 writes "CRL"). */
export function crlToPem(crl: X509Crl): string {
  return `${PemConverter.encode(crl.rawData, "X509 CRL")}\n`;
}

export function encodeCrl(crl: X509Crl, format: "pem" | "der"): Uint8Array {
  return format === "der" ? new Uint8Array(crl.rawData) : new TextEncoder().encode(crlToPem(crl));
}

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}
