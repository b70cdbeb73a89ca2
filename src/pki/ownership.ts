import { CertificateValidationError } from "../errors.js";
import type { X509Certificate } from "../util/x509.js";
import { ATTR } from "./oids.js";

/**
 * Who a certificate speaks for. A card certificate's subject carries the owner (the customer
 * organisation, O) and the officer (CN); a device certificate's carries the HSM serial (serialNumber).
 * Binding an HSM to an owner is the agent's job; this only reads the names, and refuses ambiguity.
 */
export interface CertificateOwnership {
  readonly owner?: string;
  readonly officer?: string;
  readonly serialNumber?: string;
}

/** Reads O, CN and serialNumber; an attribute that appears more than once is left out as ambiguous. */
export function readOwnership(cert: X509Certificate): CertificateOwnership {
  const owner = only(cert, ATTR.organization);
  const officer = only(cert, ATTR.commonName);
  const serialNumber = only(cert, ATTR.serialNumber);
  return {
    ...(owner !== undefined ? { owner } : {}),
    ...(officer !== undefined ? { officer } : {}),
    ...(serialNumber !== undefined ? { serialNumber } : {}),
  };
}

/** The owner of a card certificate: exactly one O in its subject, else the card is not trusted. */
export function extractOwner(cert: X509Certificate): string {
  const values = cert.subjectName.getField(ATTR.organization);
  const [owner] = values;
  if (values.length !== 1 || owner === undefined || owner.length === 0) {
    throw new CertificateValidationError(
      "malformed",
      cert.subject,
      `subject must name exactly one owner (O); found ${values.length}`,
    );
  }
  return owner;
}

/** The officer of a card certificate (its CN), if it names one. */
export function extractOfficer(cert: X509Certificate): string | undefined {
  return only(cert, ATTR.commonName);
}

function only(cert: X509Certificate, type: string): string | undefined {
  const values = cert.subjectName.getField(type);
  return values.length === 1 ? values[0] : undefined;
}
