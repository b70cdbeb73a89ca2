/**
 * Is this the genuine card of an owner we trust? (SPEC.md §1 steps 254 and 354, §4.) The one card
 * authentication of the project: the station (before it writes a configuration) and the agent
 * (before it asks for the PIN) both call {@link authenticateCard}, each with its
 * {@link CardAuthenticationPolicy}. Needs no PIN.
 *
 * 1. The 9E (card authentication) certificate chains to the policy's trust anchor through the token
 *    CA the card carries (`certificates` item) or the verifier already knows, with the token CA's
 *    CRL (validateChain: the policy's EKU, CRL required by default, a CRL number at or above the
 *    policy's floor — an older one is a replay, 17).
 * 2. A live challenge: the card signs fresh random bytes with its 9E key, checked against that
 *    certificate. A certificate copied onto another card fails here (11).
 * 3. Optionally (`validateSigning`, the station) the 9C (configuration signing) certificate validates
 *    for configuration signing through the same CA path, for the same owner. (The agent validates 9C
 *    as a signer of the manifest it reads.)
 * 4. The owner: subject O, exactly one (11 otherwise); then the policy's owner binding, if any, which
 *    refuses a card of another owner or token CA (typically NotForThisHsmError, 16).
 *
 * Untrusted chain, foreign PKI, failed challenge: CardNotTrustedError (11); revoked: 12. Additions to
 * card authentication (an owner binding by token-CA key, a secure-channel step) belong in the policy,
 * so that station and agent keep one function.
 */
import { createHash } from "node:crypto";
import { CardNotTrustedError, CertificateValidationError } from "../errors.js";
import {
  newChallenge,
  type SecureElement,
  type SecureElementIdentity,
  verifyChallengeProof,
} from "../secure-element/secure-element.js";
import { bytesEqual } from "../util/bytes.js";
import type { X509Certificate } from "../util/x509.js";
import { certificateParts } from "./der.js";
import {
  type CertificateView,
  type PathValidationOptions,
  type ValidatedPath,
  validateChainView,
} from "./path-validation.js";
import { VALIDATION_REQUIREMENTS } from "./profiles.js";
import type { CertificateInput, CrlInput, ValidateChainOptions } from "./validate-chain.js";

/** What a validated path is made of: @peculiar/x509 certificates (station) or read-only views (agent). */
type Certificate = { readonly rawData: ArrayBuffer; readonly subject: string; readonly serialNumber: string };

/** What the owner binding is shown: who the card belongs to and which token CA issued it. */
export interface CardOwnerFacts<C extends Certificate = X509Certificate> {
  /** The validated 9E (card authentication) certificate. */
  readonly certificate: C;
  /** Subject O of the card certificates. */
  readonly owner: string;
  /** Subject CN: the officer, if the certificate names one. */
  readonly officer?: string;
  /** The token CA that issued the card certificates (validated). */
  readonly tokenCa: C;
  /** SHA-256 of the token CA certificate (DER), hex: what an HSM pins at first onboarding. */
  readonly tokenCaSha256: string;
}

/** How a verifier authenticates a card: what it trusts and what it demands. */
export interface CardAuthenticationPolicy<
  C extends Certificate = X509Certificate,
  I = CertificateInput,
  L = CrlInput,
> {
  /** The installed manufacturer root: the only trust anchor. */
  readonly trustAnchor: I;
  /** CRLs to check the card against (the station's current ones; on the HSM the card's own, else stored). */
  readonly crls: readonly L[];
  /** The token CA must have a CRL among `crls` (default true: fail closed). */
  readonly requireCrl?: boolean;
  /** The highest CRL number this verifier has seen for the card's issuer: an older CRL is a replay (17). */
  readonly crlNumberFloor?: bigint;
  /**
   * Token CA certificates (DER) the verifier keeps, offered next to the card's own intermediates —
   * only those that name-match a leaf's issuer, so a station serving many owners stays within
   * validateChain's bound on intermediates.
   */
  readonly knownIssuers?: readonly Uint8Array[];
  /** Extended key usage the 9E certificate must carry (default: the token-authentication EKU). */
  readonly requiredEku?: string;
  /** Also validate the 9C certificate for configuration signing, same CA path and owner (station). */
  readonly validateSigning?: boolean;
  /** Bytes of the live challenge (default 32). */
  readonly challengeBytes?: number;
  /** Validation time (default: the system clock). */
  readonly clock?: () => Date;
  /**
   * Owner binding, after the chain and the challenge: throw a typed error (NotForThisHsmError, 16) to
   * refuse a card of another owner or token CA. Absent: any owner under the trust anchor is accepted.
   */
  readonly checkOwner?: (card: CardOwnerFacts<C>) => void | Promise<void>;
}

/** The agent's policy: DER in (from the card and the agent's state), read-only views out. */
export type CardAuthenticationViewPolicy = CardAuthenticationPolicy<
  CertificateView,
  PathValidationOptions["trustAnchor"],
  NonNullable<PathValidationOptions["crls"]>[number]
>;

export interface AuthenticatedCard<C extends Certificate = X509Certificate> extends CardOwnerFacts<C> {
  readonly identity: SecureElementIdentity;
  /** The validated 9E chain, leaf first, trust anchor last. */
  readonly cardAuthentication: ValidatedPath<C>;
  /** The validated 9C chain, when the policy asked for it (`validateSigning`). */
  readonly signing?: ValidatedPath<C>;
  /** The CA certificates between the leaves and the anchor, nearest first (the token CA). */
  readonly intermediates: readonly C[];
  /** CRL number of the CRL that cleared the 9E certificate, when there was one. */
  readonly crlNumber?: bigint;
  /** The time the card was authenticated at (the policy's clock). */
  readonly at: Date;
}

/**
 * The agent's card authentication: the same steps over the fast path (src/pki/path-validation.ts —
 * DER in, read-only views out, no X.509 library loaded). The station's, with @peculiar/x509
 * certificates, is `authenticateCard` in card-authentication-x509.ts.
 */
export function authenticateCardView(
  element: SecureElement,
  policy: CardAuthenticationViewPolicy,
): Promise<AuthenticatedCard<CertificateView>> {
  return authenticateCardWith(element, policy, validateChainView);
}

/** The validator a variant runs: validateChainView (agent) or validateChain (station). */
export type PathValidator<C extends Certificate, I, L> = (
  options: Omit<ValidateChainOptions, "leaf" | "intermediates" | "trustAnchor" | "crls"> & {
    readonly leaf: Uint8Array;
    readonly intermediates: readonly Uint8Array[];
    readonly trustAnchor: I;
    readonly crls: readonly L[];
  },
) => Promise<ValidatedPath<C>>;

/** Authenticates the card in `element` under `policy` with `validate` (see the file comment). */
export async function authenticateCardWith<C extends Certificate, I, L>(
  element: SecureElement,
  policy: CardAuthenticationPolicy<C, I, L>,
  validate: PathValidator<C, I, L>,
): Promise<AuthenticatedCard<C>> {
  const now = policy.clock?.() ?? new Date();
  const identity = await element.identity();
  const common = {
    intermediates: offeredIntermediates(identity, policy.knownIssuers ?? []),
    trustAnchor: policy.trustAnchor,
    crls: policy.crls,
    now,
    requireCrl: policy.requireCrl ?? true,
    ...(policy.crlNumberFloor !== undefined ? { crlNumberFloor: policy.crlNumberFloor } : {}),
  };

  const cardAuthentication = await validate({
    ...common,
    leaf: identity.cardAuthentication,
    ...VALIDATION_REQUIREMENTS.cardAuthentication,
    ...(policy.requiredEku !== undefined ? { requiredEku: policy.requiredEku } : {}),
  });

  const challenge = newChallenge(policy.challengeBytes ?? 32);
  verifyChallengeProof(identity.cardAuthentication, challenge, await element.proveChallenge(challenge));

  const owner = cardAuthentication.owner;
  if (owner === undefined) {
    throw new CertificateValidationError(
      "malformed",
      cardAuthentication.leaf.subject,
      "subject must name exactly one owner (O)",
    );
  }
  const intermediates = cardAuthentication.path.slice(1, -1);
  const tokenCa = intermediates[0];
  if (!tokenCa)
    throw new CardNotTrustedError("the card certificate is issued by the root itself, not a token CA");

  let signing: ValidatedPath<C> | undefined;
  if (policy.validateSigning) {
    signing = await validate({
      ...common,
      leaf: identity.signing,
      ...VALIDATION_REQUIREMENTS.configSigning,
    });
    const signingCa = signing.path.slice(1, -1);
    if (
      signingCa.length !== intermediates.length ||
      intermediates.some((c, i) => !sameCertificate(c, signingCa[i]!))
    ) {
      throw new CardNotTrustedError("the card's 9E and 9C certificates were issued by different CAs");
    }
    if (signing.owner !== owner) {
      throw new CardNotTrustedError(
        `the card's certificates name different owners ("${owner}" for 9E, "${signing.owner ?? "(none)"}" for 9C)`,
      );
    }
  }

  const officer = signing?.officer ?? cardAuthentication.officer;
  const facts: CardOwnerFacts<C> = {
    certificate: cardAuthentication.leaf,
    owner,
    ...(officer !== undefined ? { officer } : {}),
    tokenCa,
    tokenCaSha256: createHash("sha256").update(new Uint8Array(tokenCa.rawData)).digest("hex"),
  };
  await policy.checkOwner?.(facts);
  return {
    ...facts,
    identity,
    cardAuthentication,
    ...(signing ? { signing } : {}),
    intermediates,
    ...(cardAuthentication.crlNumber !== undefined ? { crlNumber: cardAuthentication.crlNumber } : {}),
    at: now,
  };
}

/** The card's intermediates, plus the known issuers that name-match a leaf's issuer and are not already there. */
function offeredIntermediates(identity: SecureElementIdentity, known: readonly Uint8Array[]): Uint8Array[] {
  if (known.length === 0) return [...identity.intermediates];
  const leafIssuers = [identity.cardAuthentication, identity.signing].flatMap((der) => {
    try {
      return [certificateParts(der).issuer];
    } catch {
      return []; // unreadable: validateChain says so, as "not trusted"
    }
  });
  return [
    ...identity.intermediates,
    ...known
      .filter((der) => !identity.intermediates.some((own) => bytesEqual(own, der)))
      .filter((der) => leafIssuers.some((issuer) => bytesEqual(issuer, certificateParts(der).subject))),
  ];
}

function sameCertificate(a: Certificate, b: Certificate): boolean {
  return bytesEqual(new Uint8Array(a.rawData), new Uint8Array(b.rawData));
}
