/**
 * The one card authentication (src/pki/card-authentication.ts) that the station and the agent share:
 * each rule of its policy, on a virtual card personalised as `card personalize` does it.
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CardNotTrustedError,
  CardRevokedError,
  CertificateValidationError,
  NotForThisHsmError,
  ReplayError,
} from "../../src/errors.js";
import type { CardOwnerFacts } from "../../src/pki/card-authentication.js";
import { authenticateCard } from "../../src/pki/card-authentication-x509.js";
import { EKU } from "../../src/pki/oids.js";
import { openInProcessCard } from "../../src/secure-element/open-card.js";
import { stationCardPolicy } from "../../src/station/authenticate-card.js";
import {
  crlOf,
  makePki,
  OFFICER,
  OWNER,
  personaliseCard,
  removeTempDirs,
  type TestPki,
} from "../station/fixtures.js";

let pki: TestPki;
beforeAll(async () => {
  pki = await makePki();
});
afterAll(removeTempDirs);

const der = (c: { rawData: ArrayBuffer }) => new Uint8Array(c.rawData);

async function withCard<T>(
  options: Parameters<typeof personaliseCard>[1],
  run: (opened: Awaited<ReturnType<typeof openInProcessCard>>) => Promise<T>,
): Promise<T> {
  const { card } = await personaliseCard(pki, options);
  const opened = await openInProcessCard(card);
  try {
    return await run(opened);
  } finally {
    await opened.dispose();
  }
}

describe("authenticateCard", () => {
  it("authenticates a genuine card and shows the owner binding who it is and which token CA issued it", async () => {
    const seen: CardOwnerFacts[] = [];
    const card = await withCard({}, ({ element }) =>
      authenticateCard(element, {
        trustAnchor: pki.root.certificate,
        crls: [pki.crl],
        checkOwner: (facts) => {
          seen.push(facts);
        },
      }),
    );
    expect(card.owner).toBe(OWNER);
    expect(card.officer).toBe(OFFICER);
    expect(card.crlNumber).toBe(1n);
    expect(card.signing).toBeUndefined();
    expect(card.intermediates.map(der)).toEqual([der(pki.tokenCa.certificate)]);
    const expected = createHash("sha256").update(der(pki.tokenCa.certificate)).digest("hex");
    expect(card.tokenCaSha256).toBe(expected);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.owner).toBe(OWNER);
    expect(seen[0]!.tokenCaSha256).toBe(expected);
    expect(der(seen[0]!.certificate)).toEqual(card.identity.cardAuthentication);
  });

  it("refuses through the owner binding with its own typed error", async () => {
    await expect(
      withCard({}, ({ element }) =>
        authenticateCard(element, {
          trustAnchor: pki.root.certificate,
          crls: [pki.crl],
          checkOwner: () => {
            throw new NotForThisHsmError("bound to another owner");
          },
        }),
      ),
    ).rejects.toThrow(NotForThisHsmError);
  });

  it("applies the policy's CRLs, floor and EKU", async () => {
    // No CRL for the token CA: refused (fail closed), unless the policy says a CRL is optional.
    await expect(
      withCard({}, ({ element }) =>
        authenticateCard(element, { trustAnchor: pki.root.certificate, crls: [] }),
      ),
    ).rejects.toThrow(CardNotTrustedError);
    await expect(
      withCard({}, ({ element }) =>
        authenticateCard(element, { trustAnchor: pki.root.certificate, crls: [], requireCrl: false }),
      ),
    ).resolves.toMatchObject({ owner: OWNER });
    // An older CRL than the floor: a replay (17).
    await expect(
      withCard({}, ({ element }) =>
        authenticateCard(element, { trustAnchor: pki.root.certificate, crls: [pki.crl], crlNumberFloor: 2n }),
      ),
    ).rejects.toThrow(ReplayError);
    // A revoked card (12).
    const { card, certificates } = await personaliseCard(pki);
    const revoked = await crlOf(pki, 2n, [certificates.cardAuthentication]);
    const opened = await openInProcessCard(card);
    try {
      await expect(
        authenticateCard(opened.element, { trustAnchor: pki.root.certificate, crls: [revoked] }),
      ).rejects.toThrow(CardRevokedError);
    } finally {
      await opened.dispose();
    }
    // A 9E certificate without the EKU the policy demands.
    const error = await withCard({}, ({ element }) =>
      authenticateCard(element, {
        trustAnchor: pki.root.certificate,
        crls: [pki.crl],
        requiredEku: EKU.configSigning,
      }),
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CertificateValidationError);
    expect((error as CertificateValidationError).reason).toBe("eku");
  });

  it("refuses a copied certificate at the challenge (the key is not the certificate's)", async () => {
    const other = await personaliseCard(pki);
    const error = await withCard(
      { installInstead: (own) => ({ ...own, cardAuthentication: other.identity.cardAuthentication }) },
      ({ element }) => authenticateCard(element, { trustAnchor: pki.root.certificate, crls: [pki.crl] }),
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CardNotTrustedError);
    expect((error as Error).message).toMatch(/challenge proof failed/);
  });

  it("station policy: 9C validated too, and a token CA the station knows stands in for a missing certificates item", async () => {
    const trust = {
      trustAnchor: pki.root.certificate,
      crls: [pki.crl],
      knownIssuers: [pki.tokenCa.certificate],
    };
    const card = await withCard({ installInstead: (own) => ({ ...own, intermediates: [] }) }, ({ element }) =>
      authenticateCard(element, stationCardPolicy(trust, new Date())),
    );
    expect(card.signing.owner).toBe(OWNER);
    expect(der(card.signing.leaf)).toEqual(card.identity.signing);
    // Without the known issuer, the same card has no path to the anchor.
    await expect(
      withCard({ installInstead: (own) => ({ ...own, intermediates: [] }) }, ({ element }) =>
        authenticateCard(element, stationCardPolicy({ ...trust, knownIssuers: [] }, new Date())),
      ),
    ).rejects.toThrow(CardNotTrustedError);
  });

  it("station policy: refuses 9E and 9C certificates of different owners", async () => {
    const { identity: mallory } = await personaliseCard(pki, { owner: "Mallory Corp" });
    const error = await withCard(
      { installInstead: (own) => ({ ...own, signing: mallory.signing }) },
      ({ element }) =>
        authenticateCard(
          element,
          stationCardPolicy({ trustAnchor: pki.root.certificate, crls: [pki.crl] }, new Date()),
        ),
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CardNotTrustedError);
    // (with name constraints on the token CA, the 9C chain itself is refused for the foreign O first)
    expect((error as Error).message).toMatch(/different owners|name-constraints|owner-mismatch/);
  });
});
