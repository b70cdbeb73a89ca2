import { MalformedError } from "../errors.js";

/**
 * RFC 7468 PEM, strictly: the first block with one of the expected labels, its base64 body (line
 * breaks and spaces allowed, nothing else), decoded. No other text form — hex, bare base64 — is
 * guessed. Loads no X.509 library.
 */

/** PEM text larger than this is refused before it is searched. */
export const MAX_PEM_CHARS = 8 * 1024 * 1024;

export const PEM_LABELS = {
  certificate: ["CERTIFICATE"],
  /** RFC 7468 §5 says "X509 CRL"; @peculiar/x509 writes "CRL". */
  crl: ["X509 CRL", "CRL"],
} as const;

export function pemToDer(text: string, labels: readonly string[]): Uint8Array {
  if (text.length > MAX_PEM_CHARS) throw new MalformedError("PEM text too large");
  for (const label of labels) {
    const begin = `-----BEGIN ${label}-----`;
    const start = text.indexOf(begin);
    if (start < 0) continue;
    const end = text.indexOf(`-----END ${label}-----`, start + begin.length);
    if (end < 0) break;
    const body = text.slice(start + begin.length, end).replace(/\s+/g, "");
    if (body.length === 0 || body.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(body)) break;
    return new Uint8Array(Buffer.from(body, "base64"));
  }
  throw new MalformedError(`not a PEM ${labels[0]} block`);
}
