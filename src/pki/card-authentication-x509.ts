import type { SecureElement } from "../secure-element/secure-element.js";
import type { X509Certificate } from "../util/x509.js";
import {
  type AuthenticatedCard,
  authenticateCardWith,
  type CardAuthenticationPolicy,
} from "./card-authentication.js";
import { type ValidatedChain, validateChain } from "./validate-chain.js";

/**
 * The station's card authentication (src/pki/card-authentication.ts, the project's one function):
 * validated with `validateChain`, so the results are @peculiar/x509 certificates the station stores
 * and re-encodes. The agent calls `authenticateCardView` and never loads this module.
 */
export async function authenticateCard(
  element: SecureElement,
  policy: CardAuthenticationPolicy & { readonly validateSigning: true },
): Promise<AuthenticatedCard & { readonly signing: ValidatedChain }>;
export async function authenticateCard(
  element: SecureElement,
  policy: CardAuthenticationPolicy,
): Promise<AuthenticatedCard>;
export async function authenticateCard(
  element: SecureElement,
  policy: CardAuthenticationPolicy,
): Promise<AuthenticatedCard<X509Certificate>> {
  return authenticateCardWith(element, policy, validateChain);
}
