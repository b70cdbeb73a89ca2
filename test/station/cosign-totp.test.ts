/**
 * `station cosign` with the co-signer enrolled for TOTP (issue 13, dual control), in-process: the
 * library flow the CLI calls (src/station/cosign-card.ts) over two virtual cards. The real-stack
 * cosign e2e (test/e2e/cosign.test.ts) covers the CLI and pcscd without TOTP; this covers the TOTP
 * step: no code or a wrong code → exit 13 with nothing signed and the carrier's manifest unchanged;
 * the right code → two signatures that verify; the same code again is refused (replay).
 */

import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { verifyManifest } from "../../src/config/manifest.js";
import { loadPlanFile } from "../../src/config/plan.js";
import { ExitCode, TotpRejectedError } from "../../src/errors.js";
import { openInProcessCard } from "../../src/secure-element/open-card.js";
import { type CosignOptions, cosignConfiguration, type HeldCard } from "../../src/station/cosign-card.js";
import { loadStationTrust } from "../../src/station/station-dir.js";
import { enrollTotp, totp } from "../../src/station/totp.js";
import { configSigningValidator, writeConfigurationToCard } from "../../src/station/write-card.js";
import {
  EXAMPLES,
  makePki,
  makeStation,
  type PersonalisedCard,
  PIN,
  personaliseCard,
  removeTempDirs,
  type TestPki,
} from "./fixtures.js";

let pki: TestPki;
let station: string;
let carrier: PersonalisedCard;
let signer: PersonalisedCard;
let secret: Uint8Array;

async function held(card: VirtualPivCard): Promise<HeldCard> {
  const opened = await openInProcessCard(card, { readerName: "Station reader" });
  return { element: opened.element, release: () => opened.dispose() };
}

async function manifestOf(card: VirtualPivCard): Promise<Uint8Array> {
  const h = await held(card);
  try {
    const bytes = await h.element.readItem("manifest");
    if (!bytes) throw new Error("no manifest on the carrier");
    return bytes;
  } finally {
    await h.release(false);
  }
}

function cosign(extra: Partial<CosignOptions>): Promise<unknown> {
  return cosignConfiguration({
    stationDir: station,
    openCarrier: () => held(carrier.card),
    openSigner: () => held(signer.card),
    signerPin: PIN,
    carrierPin: PIN,
    ...extra,
  });
}

beforeAll(async () => {
  pki = await makePki();
  station = await makeStation(pki);
  carrier = await personaliseCard(pki, { officer: "Alice Example" });
  signer = await personaliseCard(pki, { officer: "Bob Example" });
  const plan = await loadPlanFile(join(EXAMPLES, "rack-4.yaml"));
  const h = await held(carrier.card);
  try {
    await writeConfigurationToCard({ element: h.element, plan, stationDir: station, pin: PIN, cosigners: 1 });
  } finally {
    await h.release(false);
  }
  ({ secret } = await enrollTotp(station, "Bob Example"));
});
afterAll(removeTempDirs);

describe("station cosign with the co-signer enrolled for TOTP", () => {
  it("without a code, or with a wrong one: exit 13, nothing signed, the carrier's manifest unchanged", async () => {
    const before = await manifestOf(carrier.card);
    const none = await cosign({}).catch((e: unknown) => e);
    expect(none).toBeInstanceOf(TotpRejectedError);
    expect((none as TotpRejectedError).exitCode).toBe(ExitCode.wrongPin);
    expect((none as Error).message).toMatch(
      /officer "Bob Example" is enrolled for TOTP at this station: a code is required/,
    );

    const now = new Date();
    const good = totp(secret, Math.floor(now.getTime() / 1000));
    const wrong = String((Number(good) + 1) % 1_000_000).padStart(6, "0");
    const asked: string[] = [];
    const bad = await cosign({
      now,
      signerTotp: async (request) => {
        asked.push(request.officer);
        return wrong;
      },
    }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(TotpRejectedError);
    expect(asked).toEqual(["Bob Example"]);
    expect(Buffer.compare(Buffer.from(await manifestOf(carrier.card)), Buffer.from(before))).toBe(0);
    const { signers } = await verifyManifest(before, {
      validateChain: configSigningValidator(await loadStationTrust(station), new Date()),
    });
    expect(signers).toHaveLength(1);
  });

  it("with the right code: two signatures that verify; the same code again is refused (replay)", async () => {
    const now = new Date();
    const code = totp(secret, Math.floor(now.getTime() / 1000));
    const result = (await cosign({ now, signerTotp: code })) as {
      signatures: number;
      signerOfficer?: string;
    };
    expect(result).toMatchObject({ signatures: 2, signerOfficer: "Bob Example" });
    const { signers } = await verifyManifest(await manifestOf(carrier.card), {
      validateChain: configSigningValidator(await loadStationTrust(station), new Date()),
    });
    expect(signers).toHaveLength(2);
    // A third officer is not needed to see the replay: Bob's card signed already, and his code is spent.
    const { verifyOfficerTotp } = await import("../../src/station/totp.js");
    await expect(verifyOfficerTotp(station, "Bob Example", code, now)).rejects.toThrow(/already used/);
  });
});
