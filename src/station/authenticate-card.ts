/**
 * The station's card-authentication policy (SPEC.md §1 step 254): the card is authenticated by the
 * project's one function, src/pki/card-authentication.ts `authenticateCard`, with
 *
 * - the station's trust anchor and its current CRLs (a CRL of the card's token CA is required),
 * - the token CAs the station already checked, offered when the card lacks its `certificates` item,
 * - the 9C (configuration signing) certificate validated too, through the same token CA, same owner:
 *   the station is about to have the card sign with it. (The 9C key itself cannot be exercised before
 *   the PIN; write-card.ts checks the manifest signature against the 9C certificate before anything
 *   is written.)
 *
 * Any owner under the anchor is accepted here: write-card.ts then requires the plan's owner.
 */

import { CardNotTrustedError } from "../errors.js";
import type { AuthenticatedCard, CardAuthenticationPolicy } from "../pki/card-authentication.js";
import type { X509Certificate, X509Crl } from "../util/x509.js";
import { crlIssuedUnder } from "./trust.js";

/** What the station trusts: its anchor, the current CRLs, and token CAs it already checked. */
export interface StationTrust {
  readonly trustAnchor: X509Certificate;
  readonly crls: readonly X509Crl[];
  /** Token CA certificates kept by the station, offered as intermediates next to the card's own. */
  readonly knownIssuers?: readonly X509Certificate[];
}

/** The station's policy for authenticateCard at time `now`. */
export function stationCardPolicy(
  trust: StationTrust,
  now: Date,
): CardAuthenticationPolicy & { readonly validateSigning: true } {
  return {
    trustAnchor: trust.trustAnchor,
    crls: trust.crls,
    requireCrl: true,
    knownIssuers: (trust.knownIssuers ?? []).map((c) => new Uint8Array(c.rawData)),
    validateSigning: true,
    clock: () => now,
  };
}

/** The station's CRL that cleared the card (its token CA's), to write onto the card with its number. */
export function stationCrlFor(
  card: AuthenticatedCard,
  trust: StationTrust,
): { readonly crl: X509Crl; readonly crlNumber: bigint } {
  const crl = trust.crls.find((c) => crlIssuedUnder(c, card.tokenCa));
  if (!crl || card.crlNumber === undefined) {
    // authenticateCard requires the CRL; this is the belt to its braces.
    throw new CardNotTrustedError("the card's token CA has no CRL at this station");
  }
  return { crl, crlNumber: card.crlNumber };
}
