/**
 * Test support for the agent: a PKI on disk (`pki init` + `pki issue-device`), personalised in-process
 * virtual PIV cards (keys generated on the card, certificates from a token CA, PIN-protected
 * management key, a non-default PIN), configurations written onto them with encodeConfig (manifest
 * last), an initialised agent state directory, and a counting transport for the APDU budget.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { X509Crl } from "@peculiar/x509";
import { afterAll, beforeAll } from "vitest";
import { Agent } from "../../src/agent/agent.js";
import { factoryInit } from "../../src/agent/factory.js";
import type { NetBackend } from "../../src/agent/net/net-backend.js";
import type { PinSource } from "../../src/agent/onboarding.js";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { type EncodedConfig, encodeConfig } from "../../src/config/encode-config.js";
import { loadPlanFile } from "../../src/config/plan.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import type { Signer } from "../../src/crypto/signer.js";
import { NoCardError } from "../../src/errors.js";
import { DEFAULT_MANAGEMENT_KEY, managementKeyLength } from "../../src/piv/management-key.js";
import { PivSession } from "../../src/piv/piv-session.js";
import { encodeCrl, issueCrl, type RevokedCertificateEntry } from "../../src/pki/crl.js";
import { type IssuerCredentials, issueCaCertificate, issueCardCertificate } from "../../src/pki/issue.js";
import {
  initPkiDirectory,
  issueDeviceToDirectory,
  type LoadedPki,
  loadPkiDirectory,
} from "../../src/pki/pki-store.js";
import { shardItemName } from "../../src/secure-element/card-layout.js";
import {
  generatePivIdentityKeys,
  installPivIdentityCertificates,
  PivElement,
} from "../../src/secure-element/piv-element.js";
import type { CardTransport } from "../../src/transport/card-transport.js";
import { InProcessTransport } from "../../src/transport/in-process.js";

export const OWNER = "ACME Bank";
/** Not hex, not a default: it can be searched for in logs without false positives. */
export const PIN = "Zq7xKw";
export const WRONG_PIN = "Zq7xKv";
export const EXAMPLES = resolve(dirname(fileURLToPath(import.meta.url)), "../../examples");

/** Dual stack, MTU, gateways; no VLAN, so the iproute2 variant runs on kernels without 8021q too. */
export const LAB_PLAN: NetworkPlan = {
  owner: OWNER,
  subnets: [
    {
      name: "lab",
      cidr: "198.51.100.0/24",
      gateway: "198.51.100.1",
      dns: ["198.51.100.53"],
      ntp: ["198.51.100.123"],
      mtu: 1400,
      ipv6Cidr: "2001:db8:120::/64",
      ipv6Gateway: "2001:db8:120::1",
    },
  ],
  hsms: [
    {
      serial: "1234567",
      hostname: "hsm-lab-01",
      interfaces: [{ name: "eth0", subnet: "lab", ipv4: "198.51.100.11", ipv6: "2001:db8:120::11" }],
    },
    {
      serial: "1234568",
      hostname: "hsm-lab-02",
      interfaces: [{ name: "eth0", subnet: "lab", ipv4: "198.51.100.12", ipv6: "2001:db8:120::12" }],
    },
  ],
};

export async function examplePlan(name: "rack-4.yaml" | "room-40.yaml"): Promise<NetworkPlan> {
  return loadPlanFile(join(EXAMPLES, name));
}

/** A temporary directory removed by the returned cleanup (call it in afterEach/afterAll). */
export async function tempDir(prefix = "hsm-agent-"): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** A test PKI in a temporary directory of its own, for the tests of one file. */
export interface PkiBed {
  /** The temporary directory (the PKI in pki/, and whatever the tests put next to it). */
  readonly dir: string;
  readonly testPki: TestPki;
  /** The token CA's CRL number 1. */
  readonly crl1: Uint8Array;
}

/**
 * Makes the file's PkiBed before its tests (beforeAll) and removes it after them (afterAll). Its
 * fields are there once the tests run (not while they are collected).
 */
export function useTestPki(prefix?: string): PkiBed {
  const bed = {} as { -readonly [K in keyof PkiBed]: PkiBed[K] } & { cleanup?: () => Promise<void> };
  beforeAll(async () => {
    const base = await tempDir(prefix);
    bed.cleanup = base.cleanup;
    bed.dir = base.dir;
    bed.testPki = await createTestPki(base.dir);
    bed.crl1 = await bed.testPki.crl(1);
  });
  afterAll(async () => {
    await bed.cleanup?.();
  });
  return bed;
}

export interface TestPki {
  readonly dir: string;
  readonly pki: LoadedPki;
  readonly rootPem: Uint8Array;
  /** Issues a CRL of the token CA with the given number and revoked serials, DER. */
  crl(
    number: number,
    revoked?: readonly RevokedCertificateEntry[],
    options?: { nextUpdate?: Date },
  ): Promise<Uint8Array>;
}

export async function createTestPki(baseDir: string, owner = OWNER): Promise<TestPki> {
  const dir = join(baseDir, "pki");
  await initPkiDirectory(dir, { owner });
  const pki = await loadPkiDirectory(dir);
  return {
    dir,
    pki,
    rootPem: new Uint8Array(await readFile(join(dir, "root.pem"))),
    crl: async (number, revoked = [], options = {}) =>
      der(
        await issueCrl({
          issuer: pki.tokenCa,
          crlNumber: BigInt(number),
          entries: revoked,
          ...(options.nextUpdate ? { nextUpdate: options.nextUpdate } : {}),
        }),
      ),
  };
}

/** A CRL (DER) of any token CA. */
export async function crlOf(tokenCa: IssuerCredentials, number: number): Promise<Uint8Array> {
  return der(await issueCrl({ issuer: tokenCa, crlNumber: BigInt(number) }));
}

function der(crl: X509Crl): Uint8Array {
  return encodeCrl(crl, "der");
}

/** Another owner's token CA under the same manufacturer root. */
export async function otherOwnerTokenCa(pki: LoadedPki, owner: string): Promise<IssuerCredentials> {
  return issueCaCertificate({
    issuer: pki.root,
    kind: "tokenCa",
    organization: owner,
    commonName: `${owner} Token CA`,
  });
}

export interface TestCard {
  readonly card: VirtualPivCard;
  /** Certificate serial numbers (hex), for revocation. */
  readonly cardAuthenticationSerial: string;
  readonly signingSerial: string;
}

/** A virtual YubiKey personalised as `card personalize` does it, with PIN {@link PIN}. */
export async function personalizeCard(
  tokenCa: IssuerCredentials,
  options: {
    owner?: string;
    officer?: string /** Keep the card's state in this file. */;
    path?: string;
  } = {},
): Promise<TestCard> {
  const card = options.path ? VirtualPivCard.fromFile(options.path) : new VirtualPivCard();
  const transport = new InProcessTransport(card);
  try {
    const session = await PivSession.open(transport);
    await session.authenticateManagementKey(DEFAULT_MANAGEMENT_KEY);
    const keys = await generatePivIdentityKeys(session);
    const common = { tokenCa, owner: options.owner ?? OWNER, officer: options.officer ?? "Alice Officer" };
    const cardAuthentication = await issueCardCertificate({
      ...common,
      publicKey: keys.cardAuthentication,
      slot: "9E",
    });
    const signing = await issueCardCertificate({ ...common, publicKey: keys.signing, slot: "9C" });
    await installPivIdentityCertificates(session, {
      cardAuthentication: new Uint8Array(cardAuthentication.rawData),
      signing: new Uint8Array(signing.rawData),
      intermediates: [new Uint8Array(tokenCa.certificate.rawData)],
    });
    const type = await session.getManagementKeyType();
    await session.setManagementKey(new Uint8Array(randomBytes(managementKeyLength(type))), type, {
      protect: true,
    });
    await session.changePin("123456", PIN);
    return {
      card,
      cardAuthenticationSerial: cardAuthentication.serialNumber,
      signingSerial: signing.serialNumber,
    };
  } finally {
    await transport.close();
  }
}

/** Opens the card as a station or agent would (a fresh power-on), optionally counting APDUs. */
export async function openElement(card: VirtualPivCard, counter?: ApduCounter): Promise<PivElement> {
  const transport = new InProcessTransport(card, { readerName: "Virtual PIV card" });
  return PivElement.open(counter ? counter.wrap(transport) : transport);
}

export interface ConfigOptions {
  readonly sequence?: number;
  /** Epoch seconds; default now − 1 h and now + 14 days. */
  readonly notBefore?: number;
  readonly notAfter?: number;
  /** The token CA's CRL (DER) to put on the card as the `crl` item. */
  readonly crl?: Uint8Array;
  /** Signers besides the card's own 9C (co-signatures, or other cards). */
  readonly coSigners?: readonly Signer[];
  /** Leave out the card's own signature (only the co-signers sign). */
  readonly withoutOwnSignature?: boolean;
}

/** Writes a signed configuration for `plan` onto the card: CRL, shards, manifest last. */
export async function writeConfig(
  card: VirtualPivCard,
  plan: NetworkPlan,
  options: ConfigOptions = {},
): Promise<EncodedConfig> {
  const element = await openElement(card);
  try {
    await element.verifyPin(PIN);
    const now = Math.floor(Date.now() / 1000);
    const own = await element.signer();
    const signers = [...(options.withoutOwnSignature ? [] : [own]), ...(options.coSigners ?? [])];
    const encoded = await encodeConfig(
      plan,
      {
        configurationId: new Uint8Array(randomBytes(16)),
        sequence: options.sequence ?? 1,
        issuedAt: now,
        notBefore: options.notBefore ?? now - 3600,
        notAfter: options.notAfter ?? now + 14 * 86_400,
      },
      signers,
    );
    if (options.crl) await element.writeItem("crl", options.crl);
    for (const shard of encoded.shards) {
      await element.writeItem(shardItemName(shard.objectId), shard.bytes);
    }
    await element.writeItem("manifest", encoded.manifest);
    return encoded;
  } finally {
    await element.close();
  }
}

/** The co-signer of another card (PIN verified; keep the element open while signing). */
export async function cardSigner(
  card: VirtualPivCard,
): Promise<{ signer: Signer; close: () => Promise<void> }> {
  const element = await openElement(card);
  await element.verifyPin(PIN);
  return { signer: await element.signer(), close: () => element.close() };
}

/** Reads item `name`, flips one bit of byte `offset` (negative: from the end), writes it back. */
export async function flipByte(card: VirtualPivCard, name: string, offset: number): Promise<void> {
  const element = await openElement(card);
  try {
    await element.verifyPin(PIN);
    const bytes = await element.readItem(name);
    if (!bytes) throw new Error(`no item ${name}`);
    const at = offset < 0 ? bytes.length + offset : offset;
    bytes[at] = (bytes[at] ?? 0) ^ 0x01;
    await element.writeItem(name, bytes);
  } finally {
    await element.close();
  }
}

export async function readItem(card: VirtualPivCard, name: string): Promise<Uint8Array | undefined> {
  const element = await openElement(card);
  try {
    return await element.readItem(name);
  } finally {
    await element.close();
  }
}

/** Initialises an agent state directory for `serial` (device key from the test PKI). */
export async function initAgent(
  baseDir: string,
  testPki: TestPki,
  options: {
    serial?: string;
    owner?: string;
    quorum?: number;
    crl?: Uint8Array;
    name?: string;
    /** Default dry-run: these agents are handed their applier anyway (startAgent). */
    applier?: "iproute2" | "networkd" | "dry-run";
  } = {},
): Promise<{ stateDir: string; serial: string; deviceDir: string }> {
  const serial = options.serial ?? "1234567";
  const name = options.name ?? `hsm-${serial}`;
  const deviceDir = join(baseDir, `${name}-device`);
  await issueDeviceToDirectory(testPki.dir, deviceDir, serial);
  const stateDir = join(baseDir, `${name}-state`);
  await factoryInit({
    stateDir,
    serial,
    root: testPki.rootPem,
    device: deviceDir,
    ...(options.crl ? { crl: options.crl } : {}),
    // An owner binding is by the token CA's key (issue 10): this PKI's token CA, named `owner`.
    ...(options.owner !== undefined
      ? { owner: options.owner, ownerCa: new Uint8Array(testPki.pki.tokenCa.certificate.rawData) }
      : {}),
    ...(options.quorum !== undefined ? { quorum: options.quorum } : {}),
    applier: options.applier ?? "dry-run",
  });
  return { stateDir, serial, deviceDir };
}

/** Opens and starts the agent of `stateDir` over `net`. */
export async function startAgent(stateDir: string, net: NetBackend, log: string[] = []): Promise<Agent> {
  const agent = await Agent.open({ stateDir, net, log: (line) => log.push(line) });
  try {
    await agent.start();
  } catch (error) {
    await agent.close();
    throw error;
  }
  return agent;
}

/** A PIN source that answers with the given PINs in order and records each prompt. */
export function pins(...values: string[]): PinSource & { prompts: string[] } {
  const prompts: string[] = [];
  return {
    prompts,
    async read(prompt) {
      prompts.push(prompt);
      const next = values.shift();
      if (next === undefined) throw new Error("no more PINs");
      return next;
    },
  };
}

/** Counts the APDUs and the bytes a session exchanges (response data without the status word). */
export class ApduCounter {
  /** Simulates a card pulled out: every command after this many fails with NoCardError. */
  pullAfter: number | undefined;
  commands = 0;
  bytesSent = 0;
  bytesReceived = 0;
  /** Time spent inside the card (the emulator), to subtract from host CPU measurements. */
  cardCpuMicros = 0;
  /** Every exchange in order: instruction byte and response data length (status word excluded). */
  exchanges: { ins: number; received: number }[] = [];

  wrap(inner: CardTransport): CardTransport {
    return {
      atr: inner.atr,
      contactless: inner.contactless,
      readerName: inner.readerName,
      transmit: async (command) => {
        this.commands++;
        if (this.pullAfter !== undefined && this.commands > this.pullAfter) {
          throw new NoCardError(`${inner.readerName}: the card was removed`);
        }
        this.bytesSent += command.length;
        const before = process.cpuUsage();
        const response = await inner.transmit(command);
        const used = process.cpuUsage(before);
        this.cardCpuMicros += used.user + used.system;
        this.bytesReceived += Math.max(0, response.length - 2);
        this.exchanges.push({ ins: command[1] ?? -1, received: Math.max(0, response.length - 2) });
        return response;
      },
      close: () => inner.close(),
    };
  }

  reset(): void {
    this.commands = 0;
    this.bytesSent = 0;
    this.bytesReceived = 0;
    this.cardCpuMicros = 0;
    this.exchanges = [];
  }
}
