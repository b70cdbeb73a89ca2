/**
 * Station test fixtures: a development PKI (src/pki), virtual PIV cards personalised the way
 * `card personalize` does it (keys generated on the card, certificates from the token CA, a random
 * PIN-protected management key, a non-default PIN), and station directories.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { X509Certificate, X509Crl } from "@peculiar/x509";
import { type CardStateStore, FileCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { type ApduInterceptor, VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { parsePlan } from "../../src/config/plan.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { DEFAULT_MANAGEMENT_KEY, managementKeyLength } from "../../src/piv/management-key.js";
import { PivSession } from "../../src/piv/piv-session.js";
import { issueCrl, type RevokedCertificateEntry } from "../../src/pki/crl.js";
import {
  createPki,
  issueCaCertificate,
  issueCardCertificate,
  type OnboardingPki,
} from "../../src/pki/issue.js";
import {
  generatePivIdentityKeys,
  installPivIdentityCertificates,
} from "../../src/secure-element/piv-element.js";
import type { SecureElementIdentity } from "../../src/secure-element/secure-element.js";
import { updateStationCrl } from "../../src/station/crl-update.js";
import { initStation } from "../../src/station/init-station.js";
import { InProcessTransport } from "../../src/transport/in-process.js";

export const OWNER = "ACME Bank";
export const OFFICER = "Alice Example";
export const PIN = "246810";
export const WRONG_PIN = "999999";
export const EXAMPLES = join(import.meta.dirname, "../../examples");

/** Temporary directories, removed by `removeTempDirs` (afterAll). */
const temps: string[] = [];
export async function tempDir(prefix = "station"): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `hsm-onboard-${prefix}-`));
  temps.push(dir);
  return dir;
}
export async function removeTempDirs(): Promise<void> {
  for (const dir of temps.splice(0)) await rm(dir, { recursive: true, force: true });
}

export interface TestPki extends OnboardingPki {
  /** CRL number 1, nothing revoked. */
  readonly crl: X509Crl;
}

export async function makePki(owner = OWNER): Promise<TestPki> {
  const pki = await createPki({ owner });
  return { ...pki, crl: await crlOf(pki, 1n) };
}

/**
 * Another owner under the same manufacturer root, as `pki issue-token-ca` makes one: its own token CA
 * (name constraints O = owner) and CRL number 1; root and device CA shared with `pki`.
 */
export async function otherOwnerPki(pki: OnboardingPki, owner: string): Promise<TestPki> {
  const tokenCa = await issueCaCertificate({
    issuer: pki.root,
    kind: "tokenCa",
    organization: owner,
    commonName: `${owner} Token CA`,
  });
  const other = { ...pki, tokenCa };
  return { ...other, crl: await crlOf(other, 1n) };
}

export function crlOf(
  pki: OnboardingPki,
  crlNumber: bigint,
  revoked: readonly X509Certificate[] = [],
  options: { now?: Date; validityDays?: number } = {},
): Promise<X509Crl> {
  const entries: RevokedCertificateEntry[] = revoked.map((c) => ({
    serialNumber: c.serialNumber,
    revokedAt: new Date(Date.now() - 60_000),
    reason: "keyCompromise",
  }));
  return issueCrl({ issuer: pki.tokenCa, crlNumber, entries, ...options });
}

export interface PersonalisedCard {
  readonly card: VirtualPivCard;
  readonly certificates: { cardAuthentication: X509Certificate; signing: X509Certificate };
  /** What was installed on the card. */
  readonly identity: SecureElementIdentity;
}

export interface PersonaliseOptions {
  readonly owner?: string;
  readonly officer?: string;
  /** Where the card keeps its state (default: memory). */
  readonly store?: CardStateStore;
  /** Install these certificates instead of the ones issued for the card's own keys (a copied identity). */
  readonly installInstead?: (own: SecureElementIdentity) => SecureElementIdentity;
  readonly intercept?: ApduInterceptor;
}

/** A virtual YubiKey 5 personalised as an officer's card of `pki`. */
export async function personaliseCard(
  pki: OnboardingPki,
  options: PersonaliseOptions = {},
): Promise<PersonalisedCard> {
  const card = new VirtualPivCard({
    ...(options.store ? { store: options.store } : {}),
    ...(options.intercept ? { intercept: options.intercept } : {}),
  });
  const transport = new InProcessTransport(card);
  try {
    const session = await PivSession.open(transport);
    await session.authenticateManagementKey(DEFAULT_MANAGEMENT_KEY);
    const keys = await generatePivIdentityKeys(session);
    const owner = options.owner ?? OWNER;
    const officer = options.officer ?? OFFICER;
    const cardAuthentication = await issueCardCertificate({
      tokenCa: pki.tokenCa,
      publicKey: keys.cardAuthentication,
      owner,
      officer,
      slot: "9E",
    });
    const signing = await issueCardCertificate({
      tokenCa: pki.tokenCa,
      publicKey: keys.signing,
      owner,
      officer,
      slot: "9C",
    });
    const own: SecureElementIdentity = {
      cardAuthentication: new Uint8Array(cardAuthentication.rawData),
      signing: new Uint8Array(signing.rawData),
      intermediates: [new Uint8Array(pki.tokenCa.certificate.rawData)],
    };
    const identity = options.installInstead ? options.installInstead(own) : own;
    await installPivIdentityCertificates(session, identity);
    const type = await session.getManagementKeyType();
    await session.setManagementKey(new Uint8Array(randomBytes(managementKeyLength(type))), type, {
      protect: true,
    });
    await session.changePin("123456", PIN);
    return { card, certificates: { cardAuthentication, signing }, identity };
  } finally {
    await transport.close();
  }
}

/** A card whose state lives in `path`, for CLI runs through HSM_ONBOARD_VIRTUAL_CARD. */
export function personaliseCardFile(pki: OnboardingPki, path: string, options: PersonaliseOptions = {}) {
  return personaliseCard(pki, { ...options, store: new FileCardStateStore(path) });
}

/** A station directory trusting `pki`'s root, with its CRL. */
export async function makeStation(pki: TestPki, crl: X509Crl = pki.crl): Promise<string> {
  const dir = join(await tempDir("station"), "station");
  await initStation(dir, pki.root.certificate);
  await updateStationCrl(dir, crl, { issuers: [pki.tokenCa.certificate] });
  return dir;
}

/**
 * The arguments of `station init` for the PKI that `pki init --out pki` made in the working
 * directory: its root as the trust anchor, its token CA's CRL with the token CA as its issuer;
 * `more` options go before `--station-dir`.
 */
export function stationInitArgs(stationDir: string, ...more: string[]): string[] {
  return [
    "station",
    "init",
    "--trust",
    "pki/root.pem",
    "--crl",
    "pki/token-ca.crl.pem",
    "--issuer",
    "pki/token-ca.pem",
    ...more,
    "--station-dir",
    stationDir,
  ];
}

/**
 * The arguments of `station write --allow-plaintext` of `plan` (default examples/rack-4.yaml) with
 * the station directory `stationDir`, the PIN on standard input; `more` appended.
 */
export function plaintextWrite(
  stationDir: string,
  plan = join(EXAMPLES, "rack-4.yaml"),
  ...more: string[]
): string[] {
  return [
    "station",
    "write",
    "--allow-plaintext",
    "--plan",
    plan,
    "--station-dir",
    stationDir,
    "--pin-stdin",
    ...more,
  ];
}

/** A valid plan of `count` HSMs on one /16 (for capacity tests). */
export function generatedPlan(count: number, owner = OWNER): NetworkPlan {
  const lines = [
    `owner: ${owner}`,
    "subnets:",
    "  - name: big",
    "    cidr: 10.20.0.0/16",
    "    gateway: 10.20.0.1",
    "    dns: [10.20.0.53]",
    "    ntp: [10.20.0.123]",
    "hsms:",
  ];
  for (let i = 0; i < count; i++) {
    const host = i + 10;
    lines.push(
      `  - serial: "${7_000_000 + i}"`,
      `    hostname: hsm-gen-${String(i).padStart(5, "0")}`,
      "    subnet: big",
      `    ipv4: 10.20.${host >> 8}.${host & 0xff}`,
    );
  }
  return parsePlan(lines.join("\n"), "yaml");
}
