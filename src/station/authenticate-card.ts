/**
 * Is this the genuine card of one of our officers? (SPEC.md §1 step 254, §4.) Needs no PIN.
 *
 * 1. The 9E (card authentication) certificate chains to the station's trust anchor through the token
 *    CA, with the token CA's CRL (validateChain, card-authentication requirements: EKU tokenAuth).
 * 2. A live challenge: the card signs fresh random bytes with its 9E key, checked against that
 *    certificate. A certificate copied onto another card fails here (exit 11).
 * 3. The 9C (configuration signing) certificate validates for config signing (EKU configSigning),
 *    through the same token CA, for the same owner (subject O).
 *
 * Untrusted chain, foreign PKI, failed challenge: CardNotTrustedError (exit 11). Revoked: exit 12.
 * The 9C key itself cannot be exercised before the PIN; write-card.ts checks the manifest signature
 * against the 9C certificate before anything is written.
 */
import type { X509Certificate, X509Crl } from "@peculiar/x509";
import { CardNotTrustedError } from "../errors.js";
import { bytesEqual, certificateParts } from "../pki/der.js";
import { extractOfficer, extractOwner } from "../pki/ownership.js";
import { VALIDATION_REQUIREMENTS } from "../pki/profiles.js";
import { type ValidatedChain, validateChain } from "../pki/validate-chain.js";
import {
  newChallenge,
  type SecureElement,
  type SecureElementIdentity,
  verifyChallengeProof,
} from "../secure-element/secure-element.js";
import { crlIssuedUnder } from "./trust.js";

/** What the station trusts: its anchor, the current CRLs, and token CAs it already checked. */
export interface StationTrust {
  readonly trustAnchor: X509Certificate;
  readonly crls: readonly X509Crl[];
  /** Token CA certificates kept by the station, offered as intermediates next to the card's own. */
  readonly knownIssuers?: readonly X509Certificate[];
}

export interface AuthenticatedCard {
  /** Subject O of both card certificates. */
  readonly owner: string;
  /** Subject CN of the 9C certificate: the officer, if it names one. */
  readonly officer?: string;
  readonly identity: SecureElementIdentity;
  readonly cardAuthentication: ValidatedChain;
  readonly signing: ValidatedChain;
  /** The CA certificates between the leaves and the anchor, nearest first (the token CA). */
  readonly intermediates: readonly X509Certificate[];
  /** The CRL that cleared the card (the token CA's). */
  readonly crl: X509Crl;
  readonly crlNumber: bigint;
}

export interface AuthenticateCardOptions {
  readonly now?: Date;
  /** Challenge length in bytes (default 32). */
  readonly challengeBytes?: number;
}

export async function authenticateCard(
  element: SecureElement,
  trust: StationTrust,
  options: AuthenticateCardOptions = {},
): Promise<AuthenticatedCard> {
  const now = options.now ?? new Date();
  const identity = await element.identity();
  // A token CA the station already checked may stand in for a missing `certificates` item; only the
  // ones that name-match the leaves' issuers, so a station serving many owners stays within
  // validateChain's bound on intermediates.
  const leafIssuers = [identity.cardAuthentication, identity.signing].flatMap((der) => {
    try {
      return [certificateParts(der).issuer];
    } catch {
      return []; // unreadable: validateChain below says so, as "not trusted"
    }
  });
  const intermediates = [
    ...identity.intermediates,
    ...(trust.knownIssuers ?? [])
      .map((c) => new Uint8Array(c.rawData))
      .filter((der) => !identity.intermediates.some((own) => bytesEqual(own, der)))
      .filter((der) => leafIssuers.some((issuer) => bytesEqual(issuer, certificateParts(der).subject))),
  ];
  const common = { intermediates, trustAnchor: trust.trustAnchor, crls: trust.crls, now, requireCrl: true };

  const cardAuthentication = await validateChain({
    ...common,
    leaf: identity.cardAuthentication,
    ...VALIDATION_REQUIREMENTS.cardAuthentication,
  });

  const challenge = newChallenge(options.challengeBytes ?? 32);
  const proof = await element.proveChallenge(challenge);
  verifyChallengeProof(identity.cardAuthentication, challenge, proof);

  const signing = await validateChain({
    ...common,
    leaf: identity.signing,
    ...VALIDATION_REQUIREMENTS.configSigning,
  });

  const cardCa = cardAuthentication.path.slice(1, -1);
  const signingCa = signing.path.slice(1, -1);
  if (cardCa.length !== signingCa.length || cardCa.some((c, i) => !sameCertificate(c, signingCa[i]!))) {
    throw new CardNotTrustedError("the card's 9E and 9C certificates were issued by different CAs");
  }
  const owner = extractOwner(cardAuthentication.leaf);
  const signingOwner = extractOwner(signing.leaf);
  if (owner !== signingOwner) {
    throw new CardNotTrustedError(
      `the card's certificates name different owners ("${owner}" for 9E, "${signingOwner}" for 9C)`,
    );
  }
  const issuer = cardCa[0];
  const crl = issuer ? trust.crls.find((c) => crlIssuedUnder(c, issuer)) : undefined;
  if (!issuer || !crl || signing.crlNumber === undefined) {
    // validateChain requires the CRL; this is the belt to its braces.
    throw new CardNotTrustedError("the card's token CA has no CRL at this station");
  }
  const officer = extractOfficer(signing.leaf);
  return {
    owner,
    ...(officer === undefined ? {} : { officer }),
    identity,
    cardAuthentication,
    signing,
    intermediates: cardCa,
    crl,
    crlNumber: signing.crlNumber,
  };
}

function sameCertificate(a: X509Certificate, b: X509Certificate): boolean {
  return Buffer.from(a.rawData).equals(Buffer.from(b.rawData));
}
