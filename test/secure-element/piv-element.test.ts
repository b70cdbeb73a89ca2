import { randomBytes } from "node:crypto";
import { beforeAll } from "vitest";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { DEFAULT_MANAGEMENT_KEY, managementKeyLength } from "../../src/piv/management-key.js";
import { PivSession } from "../../src/piv/piv-session.js";
import { createPki, type OnboardingPki } from "../../src/pki/issue.js";
import {
  generatePivIdentityKeys,
  installPivIdentityCertificates,
  PivElement,
} from "../../src/secure-element/piv-element.js";
import { InProcessTransport } from "../../src/transport/in-process.js";
import { issueIdentityCertificates } from "./identity.js";
import { describeSecureElementSuite, type SecureElementFixture } from "./suite.js";

let pki: OnboardingPki;
beforeAll(async () => {
  pki = await createPki({ owner: "ACME Bank" });
});

const PIN = "123456";

/** A virtual YubiKey personalised as `card personalize` does it. */
async function personalisedCard(signingCurve: "P-256" | "P-384") {
  const card = new VirtualPivCard();
  const transport = new InProcessTransport(card);
  try {
    const session = await PivSession.open(transport);
    await session.authenticateManagementKey(DEFAULT_MANAGEMENT_KEY);
    const keys = await generatePivIdentityKeys(session, { signingCurve });
    const expected = await issueIdentityCertificates(pki, keys);
    await installPivIdentityCertificates(session, expected);
    // A random management key, kept PIN-protected on the card (ykman --protect).
    const type = await session.getManagementKeyType();
    await session.setManagementKey(new Uint8Array(randomBytes(managementKeyLength(type))), type, {
      protect: true,
    });
    return { card, expected };
  } finally {
    await transport.close();
  }
}

describeSecureElementSuite("PIV (in-process virtual YubiKey 5)", async ({ signingCurve }) => {
  const { card, expected } = await personalisedCard(signingCurve);
  // Each open is a fresh power-on: nothing verified.
  const open = () => PivElement.open(new InProcessTransport(card, { readerName: "Virtual PIV card" }));
  const fixture: SecureElementFixture = {
    element: await open(),
    pin: PIN,
    wrongPin: "000000",
    expected,
    capabilities: { pinLock: true, pinRetries: 3 },
    async reopen() {
      await fixture.element.close();
      fixture.element = await open();
    },
    async dispose() {
      await fixture.element.close();
    },
  };
  return fixture;
});
