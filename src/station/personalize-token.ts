/**
 * Personalisation of a PKCS#11 token (an eToken; SoftHSM2 in tests) as an onboarding secure
 * element: what `card personalize --token` does, the token counterpart of personalize-card.ts.
 *
 *  1. Inputs checked (owner/officer names) before the token is touched; the token's user PIN
 *     verified (C_Login). The PIN itself is the token's: set by its own initialisation tool
 *     (SafeNet Authentication Client, softhsm2-util); this flow neither sets nor changes it.
 *  2. Keys generated on the token (pkcs11-element.ts `generateIdentityKeys`): the card-authentication
 *     key usable without the PIN (CKA_PRIVATE false, as PIV 9E), the signing key CKA_PRIVATE and
 *     CKA_ALWAYS_AUTHENTICATE (PIN policy "always", as PIV 9C); both CKA_SENSITIVE, never
 *     extractable. Keys of an earlier personalisation are replaced once the new pair exists.
 *  3. Certificates issued by the token CA (O = owner, CN = officer, serialNumber = token serial) and
 *     validated as a verifier will (chain to the root, EKU, CRL) before anything is stored.
 *  4. Certificates next to their keys, the `certificates` item (the token CA), the `crl` item.
 *  5. Self-test as the station will use the token: a live challenge on the card-authentication key
 *     checked against its new certificate, a signature by the signing key; then logout.
 */

import { X509Certificate as NodeX509Certificate, randomBytes } from "node:crypto";
import { verifyEcdsaRaw } from "../crypto/ecdsa.js";
import { IntegrityError } from "../errors.js";
import type { EcCurve } from "../pkcs11/ec.js";
import { crlNumberOf, parseCrl } from "../pki/crl.js";
import { cardSubject } from "../pki/profiles.js";
import {
  generateIdentityKeys,
  installIdentityCertificates,
  type Pkcs11Element,
} from "../secure-element/pkcs11-element.js";
import { newChallenge, verifyChallengeProof } from "../secure-element/secure-element.js";
import type { X509Certificate, X509Crl } from "../util/x509.js";
import {
  issueValidatedCardCertificates,
  type PersonalizationPki,
  type PersonalizeProgress,
} from "./personalize-card.js";

export interface PersonalizeTokenOptions {
  readonly element: Pkcs11Element;
  readonly pki: PersonalizationPki;
  /** The token CA's current CRL, stored in the `crl` item. */
  readonly crl?: X509Crl | Uint8Array | string;
  readonly owner: string;
  readonly officer?: string;
  /** The token's user PIN (never stored, never in a message). */
  readonly pin: string;
  /** Curve of both keys (default P-256). */
  readonly algorithm?: EcCurve;
  readonly now?: Date;
  readonly onProgress?: (progress: PersonalizeProgress) => void;
}

export interface PersonalizeTokenResult {
  readonly label: string;
  readonly serial?: string;
  readonly algorithm: EcCurve;
  readonly owner: string;
  readonly officer?: string;
  readonly certificates: { readonly cardAuthentication: X509Certificate; readonly signing: X509Certificate };
  readonly intermediates: readonly X509Certificate[];
  readonly crlNumber?: bigint;
  readonly itemSizes: { readonly certificates: number; readonly crl?: number };
}

export async function personalizeToken(options: PersonalizeTokenOptions): Promise<PersonalizeTokenResult> {
  const { element, owner, officer } = options;
  const progress = (step: PersonalizeProgress["step"], message: string) =>
    options.onProgress?.({ step, message });
  cardSubject(owner, officer);
  const algorithm = options.algorithm ?? "P-256";
  const crl = options.crl === undefined ? undefined : parseCrl(options.crl);
  const tokenCa = options.pki.tokenCa;
  const serial = element.info.serial || undefined;

  progress("check-credentials", "verifying the token's PIN");
  await element.verifyPin(options.pin);

  progress("generate-keys", `generating ${algorithm} keys on the token (card authentication, signing)`);
  const keys = generateIdentityKeys(element.token, {
    cardAuthenticationCurve: algorithm,
    signingCurve: algorithm,
    replace: true,
  });

  progress("issue-certificates", `issuing certificates from "${tokenCa.certificate.subject}"`);
  const { cardAuthentication, signing } = await issueValidatedCardCertificates({
    pki: options.pki,
    crl,
    owner,
    ...(officer === undefined ? {} : { officer }),
    ...(serial === undefined ? {} : { serial }),
    ...(options.now ? { now: options.now } : {}),
    keys,
  });

  progress("store-certificates", "storing the certificates, the token CA and the CRL");
  const der = (c: X509Certificate) => new Uint8Array(c.rawData);
  installIdentityCertificates(element.token, {
    cardAuthentication: der(cardAuthentication),
    signing: der(signing),
    intermediates: [der(tokenCa.certificate)],
  });
  const crlBytes = crl ? new Uint8Array(crl.rawData) : undefined;
  if (crlBytes) await element.writeItem("crl", crlBytes);

  progress(
    "self-test",
    "self-test: live challenge on the card-authentication key, a signature after the PIN",
  );
  const challenge = newChallenge();
  verifyChallengeProof(der(cardAuthentication), challenge, await element.proveChallenge(challenge));
  const signer = await element.signer();
  const data = new Uint8Array(randomBytes(32));
  try {
    verifyEcdsaRaw(
      new NodeX509Certificate(der(signing)).publicKey,
      signer.algorithm,
      data,
      await signer.sign(data),
    );
  } catch (cause) {
    throw new IntegrityError("self-test: the token's signing key does not match its new certificate", {
      cause,
    });
  }
  element.token.logout();

  return {
    label: element.info.name,
    ...(serial === undefined ? {} : { serial }),
    algorithm,
    owner,
    ...(officer === undefined ? {} : { officer }),
    certificates: { cardAuthentication, signing },
    intermediates: [tokenCa.certificate],
    ...(crl ? { crlNumber: crlNumberOf(crl) } : {}),
    itemSizes: {
      certificates: tokenCa.certificate.rawData.byteLength,
      ...(crlBytes ? { crl: crlBytes.length } : {}),
    },
  };
}
