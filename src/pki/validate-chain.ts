import { X509Certificate, type X509Crl } from "../util/x509.js";
import {
  type DerInput,
  MAX_CRLS,
  MAX_INTERMEDIATES,
  type PathValidationOptions,
  type ValidatedPath,
  validatePath,
} from "./path-validation.js";
import { PEM_LABELS, pemToDer } from "./pem.js";

/**
 * Path validation for the station, the CLI and tests: the same validation as the agent's
 * `validateChainView` (src/pki/path-validation.ts, rule for rule), taking certificates and CRLs as
 * @peculiar/x509 objects, DER or PEM (a certificate's `CERTIFICATE` block, a CRL's `X509 CRL` or
 * `CRL` block; no other text form is guessed), and returning @peculiar/x509 certificates. The agent
 * never loads this module (test/repo/agent-imports.test.ts).
 */
export {
  CertificateView,
  type DerInput,
  KEY_USAGE,
  MAX_CRLS,
  MAX_INTERMEDIATES,
  MAX_PATH_CERTIFICATES,
  type PathValidationOptions,
  primeTrustAnchor,
  type ValidatedChainView,
  type ValidatedPath,
  validateChainView,
  warmUpValidation,
} from "./path-validation.js";

export type CertificateInput = X509Certificate | DerInput | string;
export type CrlInput = X509Crl | DerInput | string;
export type ValidateChainOptions = PathValidationOptions<CertificateInput, CrlInput>;
export type ValidatedChain = ValidatedPath<X509Certificate>;

/**
 * Validates the path and returns @peculiar/x509 certificates (the caller's own objects when it gave
 * some; built when first read — decoding costs milliseconds and many callers only want the facts).
 */
export async function validateChain(options: ValidateChainOptions): Promise<ValidatedChain> {
  const intermediates = options.intermediates ?? [];
  const crls = options.crls ?? [];
  // Over the caps, the core refuses before parsing them: nothing is decoded for them here either.
  const overCaps = intermediates.length > MAX_INTERMEDIATES || crls.length > MAX_CRLS;
  const each = <T>(list: readonly T[], kind: "certificate" | "crl") =>
    list.map((c) => (overCaps ? new Uint8Array() : toDer(c as CertificateInput | CrlInput, kind)));
  return rebuild(
    await validatePath({
      ...options,
      leaf: toDer(options.leaf, "certificate"),
      trustAnchor: toDer(options.trustAnchor, "certificate"),
      intermediates: each(intermediates, "certificate"),
      crls: each(crls, "crl"),
    }),
  );
}

function rebuild(validated: Awaited<ReturnType<typeof validatePath>>): ValidatedChain {
  const { path, ...facts } = validated;
  let certificates: X509Certificate[] | undefined;
  const built = () => {
    certificates ??= path.map((n) =>
      n.source instanceof X509Certificate ? n.source : new X509Certificate(n.cert.der.slice()),
    );
    return certificates;
  };
  const result = { ...facts } as ValidatedChain;
  Object.defineProperties(result, {
    path: { get: built, enumerable: true },
    leaf: { get: () => built()[0]!, enumerable: true },
  });
  return result;
}

/**
 * DER from a library caller's input: an object's DER, DER bytes as given, or the first PEM block
 * with the expected label (src/pki/pem.ts) in text or in bytes holding text. Nothing else is decoded.
 */
function toDer(input: X509Certificate | X509Crl | DerInput | string, kind: "certificate" | "crl"): DerInput {
  if (typeof input === "string") return pemToDer(input, PEM_LABELS[kind]);
  if (!(input instanceof Uint8Array) && !(input instanceof ArrayBuffer)) return input;
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  if (bytes[0] !== 0x2d /* "-": PEM text */) return bytes; // DER, judged by the strict reader
  return pemToDer(
    Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1"),
    PEM_LABELS[kind],
  );
}
