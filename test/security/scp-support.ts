/**
 * The SCP11 card bed the SCP security tests share (scp-hostile-card, scp11a-hostile-card,
 * scp-downgrade): a test PKI (agent fixtures), a card vendor's SCP CA, and card templates cloned
 * from one personalised card (PIN `PIN`) that carries LAB_PLAN (sequence 3, the token CA's CRL 1):
 * without any security domain, with the vendor's SCP11b key, and with SCP11b and SCP11a keys and the
 * owner's token CA as its OCE CA (then also the station's OCE credentials, as `pki issue-oce` makes
 * them). Plus the hooks that make and remove a bed for a test file, and a fresh, possibly hostile,
 * card of a template.
 */
import { afterAll, beforeAll, expect } from "vitest";
import type { OceCredentials } from "../../src/apdu/scp11/host.js";
import type { MemoryCardStateStore } from "../../src/card-emulator/card-state-store.js";
import {
  type HostileCard,
  type HostileMode,
  type HostileOptions,
  hostileCard,
} from "../../src/card-emulator/hostile-card.js";
import { provisionScpKey } from "../../src/card-emulator/scp-provision.js";
import type { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import type { OnboardError } from "../../src/errors.js";
import type { IssuerCredentials } from "../../src/pki/issue.js";
import { createScpVendorCa } from "../../src/pki/scp-certificates.js";
import type { PivElement } from "../../src/secure-element/piv-element.js";
import { installOceCaOnCard, issueStationOce, readStationOce } from "../../src/station/oce.js";
import { InProcessTransport } from "../../src/transport/in-process.js";
import { createTestPki, LAB_PLAN, type TestPki, tempDir } from "../agent/fixtures.js";
import { CardTemplate, expectTypedError, type TransportMeter } from "./support.js";

const INS_VERIFY = 0x20;

export interface ScpCardBed {
  /** The bed's temporary directory (removed by cleanup). */
  readonly dir: string;
  readonly testPki: TestPki;
  /** The token CA's CRL number 1 (the one on the cards). */
  readonly crl1: Uint8Array;
  /** The card vendor's SCP CA (the SCP trust anchor of station and agent). */
  readonly vendor: IssuerCredentials;
  readonly vendorDer: Uint8Array;
  /** The personalised card with LAB_PLAN and no security domain (a YubiKey before 5.7: the "older card"). */
  readonly older: CardTemplate;
  /** The same card with the vendor's SCP11b key only (KID 13): a security domain, no SCP11a key. */
  readonly scp11b: CardTemplate;
  cleanup(): Promise<void>;
}

export interface Scp11aCardBed extends ScpCardBed {
  /** The same card with SCP11b and SCP11a (KID 11) keys and the owner's token CA as its OCE CA. */
  readonly scp11a: CardTemplate;
  /** The station's OCE key and certificate, issued by the token CA. */
  readonly oce: OceCredentials;
}

/** Builds the bed in a temporary directory `hsm-security-<name>-…`; the vendor CA is called `vendorName`. */
export async function scpCardBed(name: string, vendorName: string): Promise<ScpCardBed> {
  const base = await tempDir(`hsm-security-${name}-`);
  try {
    const testPki = await createTestPki(base.dir);
    const crl1 = await testPki.crl(1);
    const vendor = await createScpVendorCa(vendorName);
    const older = await CardTemplate.personalise(testPki.pki.tokenCa, base.dir, "officer");
    await older.write(LAB_PLAN, { crl: crl1, sequence: 3 });
    const scp11b = await older.derive((card) => provisionScpKey(card, vendor));
    return {
      dir: base.dir,
      testPki,
      crl1,
      vendor,
      vendorDer: new Uint8Array(vendor.certificate.rawData),
      older,
      scp11b,
      cleanup: base.cleanup,
    };
  } catch (error) {
    await base.cleanup();
    throw error;
  }
}

/** The bed with the SCP11a card and the station's OCE credentials as well. */
export async function scp11aCardBed(name: string, vendorName: string): Promise<Scp11aCardBed> {
  const bed = await scpCardBed(name, vendorName);
  try {
    const tokenCa = bed.testPki.pki.tokenCa;
    const scp11a = await bed.scp11b.derive(async (card) => {
      await provisionScpKey(card, bed.vendor, { kid: 0x11 });
      card.powerOn();
      await installOceCaOnCard(new InProcessTransport(card), {
        tokenCaCertificate: new Uint8Array(tokenCa.certificate.rawData),
      });
    });
    const stationDir = `${bed.dir}/station`;
    await issueStationOce(stationDir, tokenCa, { owner: "ACME Bank", name: "Station OCE" });
    const oce = await readStationOce(stationDir);
    if (!oce) throw new Error(`no station OCE in ${stationDir}`);
    return { ...bed, scp11a, oce };
  } catch (error) {
    await bed.cleanup();
    throw error;
  }
}

/**
 * The bed of a test file: made by `make` before its tests (beforeAll), removed after them (afterAll).
 * Its fields are there once the file's tests run (not while they are collected).
 */
export function useScpCardBed<T extends ScpCardBed>(make: () => Promise<T>): T {
  const bed = {} as T;
  beforeAll(async () => {
    Object.assign(bed, await make());
  }, 120_000);
  afterAll(async () => {
    await bed.cleanup?.();
  });
  return bed;
}

/**
 * A fresh card of `template` and its state store, hostile when `mode` is given (armed from the start
 * unless `armed: false`). The hostile layer holds the card's end of the SCP session, for the modes
 * where the card itself lies inside the channel.
 */
export function cardOf(
  template: CardTemplate,
  mode?: HostileMode,
  options: HostileOptions & { armed?: boolean } = {},
): { card: VirtualPivCard; store: MemoryCardStateStore; hostile: HostileCard | undefined } {
  let card: VirtualPivCard | undefined;
  const hostile = mode ? hostileCard(mode, { scpChannel: () => card?.scpChannel, ...options }) : undefined;
  const clone = template.clone(hostile?.intercept);
  card = clone.card;
  return { ...clone, hostile };
}

/**
 * Opens the channel (`open`, through `meter`) on a card that lies while it opens, and expects the
 * refusal: the hostile card did lie, the failure is `error` with exit code `exit` and a message
 * matching `reason`, and no VERIFY (no PIN) crossed the transport. A channel that opens anyway is
 * closed, and the expectations fail.
 */
export async function expectRefusedWhileOpening(
  open: () => Promise<PivElement>,
  hostile: HostileCard | undefined,
  meter: TransportMeter,
  expected: {
    readonly error: abstract new (...args: never[]) => OnboardError;
    readonly exit: number;
    readonly reason: RegExp;
  },
): Promise<void> {
  const failure = await open().then(
    async (element) => {
      await element.close();
      return undefined;
    },
    (error: unknown) => error,
  );
  expect(hostile!.lies, "the hostile card was never reached").toBeGreaterThan(0);
  expectTypedError(failure, expected.error, expected.exit);
  expect((failure as Error).message).toMatch(expected.reason);
  expect(meter.instructions, "no VERIFY (no PIN) after a failed handshake").not.toContain(INS_VERIFY);
}
