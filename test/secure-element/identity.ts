/**
 * Certificates for a test secure element: the two leaves issued by a test token CA over keys that
 * were generated on the element, as `card personalize` does (src/pki/issue.ts).
 */
import { issueCardCertificate, type OnboardingPki } from "../../src/pki/issue.js";
import type { SecureElementIdentity } from "../../src/secure-element/secure-element.js";

export async function issueIdentityCertificates(
  pki: OnboardingPki,
  publicKeys: { cardAuthentication: Uint8Array; signing: Uint8Array },
  owner = "ACME Bank",
): Promise<SecureElementIdentity> {
  const cardAuthentication = await issueCardCertificate({
    tokenCa: pki.tokenCa,
    publicKey: publicKeys.cardAuthentication,
    owner,
    officer: "Test Officer",
    slot: "9E",
  });
  const signing = await issueCardCertificate({
    tokenCa: pki.tokenCa,
    publicKey: publicKeys.signing,
    owner,
    officer: "Test Officer",
    slot: "9C",
  });
  return {
    cardAuthentication: new Uint8Array(cardAuthentication.rawData),
    signing: new Uint8Array(signing.rawData),
    intermediates: [new Uint8Array(pki.tokenCa.certificate.rawData)],
  };
}
