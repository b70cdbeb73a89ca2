/**
 * The embedded demo (`hsm-onboard demo`): the whole trusted flow of SPEC.md §1 in one process, with
 * no root and no hardware, in a temporary directory.
 *
 *   1. PKI: manufacturer root, token CA of "ACME Bank", device CA, CRL 1 (src/pki, as `pki init`).
 *   2. The officer's card: the project's virtual YubiKey, personalised for owner "ACME Bank", officer
 *      "Alice" (keys generated on the card, certificates from the token CA, a PIN made up for this
 *      run that is never printed nor stored).
 *   3. The station: its directory trusts the root and holds the CRL (as `station init`/`update-crl`).
 *   4. The plan: N HSMs like examples/rack-4.yaml (exactly that plan for N = 4), generated for others.
 *   5. The factory: each HSM gets a device identity from the device CA and an agent state directory
 *      (as `pki issue-device` + `agent factory-init`).
 *   6. The station writes the signed configuration onto the card (writeConfigurationToCard).
 *   7. The card "moves" from HSM to HSM: for each one the card is opened afresh (a power-on, as an
 *      insertion is) and that HSM's agent onboards with the dry-run network applier.
 *   8. Back at the station the receipts are read and verified (readReceipts); each HSM counts only
 *      when its agent configured it AND its receipt verified with the addresses it applied.
 *
 * A card holds the receipts of about thirty HSMs (each carries the device certificate and device CA).
 * For a larger room the officer takes the card back to the station when it cannot take another
 * receipt: the receipts there are read, verified, archived in the work directory and removed from
 * the card (with the PIN), and the round continues (`collectReceipts`).
 *
 * The card is metered (APDU count, bytes, and the time a YubiKey 5 would take, modelled by
 * src/card-emulator/latency-profile.ts) per onboarding.
 */
import { randomInt } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runAgentOnce } from "../agent/agent.js";
import { factoryInit } from "../agent/factory.js";
import type { OnboardingResult } from "../agent/onboarding.js";
import { ApduMeter, type MeterTotals, YUBIKEY5_LATENCY } from "../card-emulator/latency-profile.js";
import {
  createScpVendor,
  loadScpVendor,
  provisionScpKey,
  SCP_VENDOR_CA_FILE,
} from "../card-emulator/scp-provision.js";
import { VirtualPivCard } from "../card-emulator/virtual-piv-card.js";
import { parsePlan, planToYaml } from "../config/plan.js";
import type { NetworkPlan } from "../config/plan-model.js";
import { ExitCode, isOnboardError, UsageError } from "../errors.js";
import { initPkiDirectory, issueDeviceToDirectory, PKI_FILES } from "../pki/index.js";
import { installScpTrust, readScpTrust, secureChannelPolicy } from "../secure-element/channel-policy.js";
import { openInProcessCard } from "../secure-element/open-card.js";
import type { PivElement, SecureChannelPolicy } from "../secure-element/piv-element.js";
import { parseItemName, type SecureElement } from "../secure-element/secure-element.js";
import { collectReceiptsToStation } from "../station/collect-receipts.js";
import { updateStationCrl } from "../station/crl-update.js";
import { initStation } from "../station/init-station.js";
import { recordReceiptReport } from "../station/inventory/record.js";
import { personalizeCard } from "../station/personalize-card.js";
import { type ReceiptRow, readReceipts } from "../station/read-receipts.js";
import { writeConfigurationToCard } from "../station/write-card.js";

export const DEMO_OWNER = "ACME Bank";
export const DEMO_OFFICER = "Alice";
export const DEFAULT_DEMO_HSMS = 4;

// ---- the plan ----------------------------------------------------------------------------------

/** The first serial of a generated rack (examples/rack-4.yaml's). */
export const FIRST_SERIAL = 1_234_567;
/** Host octets a generated plan never gives an HSM: gateway, DNS, NTP, and the simulated LAN's own. */
export const RESERVED_HOST_OCTETS: readonly number[] = [1, 53, 123, 250];
/** The simulated customer LAN (sim rack) takes this host address in every subnet. */
export const LAN_HOST_OCTET = 250;
const FIRST_HOST_OCTET = 11;
const LAST_HOST_OCTET = 249;
const UNITS_PER_RACK = 40;

/** The documentation networks a generated plan uses (RFC 5737, RFC 3849), one subnet each. */
const RACK_SUBNETS = [
  { prefix: "198.51.100", name: "net-198.51.100.0-24", vlan: 120, ipv6: "2001:db8:100" },
  { prefix: "203.0.113", name: "net-203.0.113.0-24", vlan: 130, ipv6: "2001:db8:113" },
] as const;

function hostOctets(): number[] {
  const out: number[] = [];
  for (let o = FIRST_HOST_OCTET; o <= LAST_HOST_OCTET; o++)
    if (!RESERVED_HOST_OCTETS.includes(o)) out.push(o);
  return out;
}

/** The largest rack a generated plan can address (two documentation /24s). */
export function maxRackHsms(): number {
  return hostOctets().length * RACK_SUBNETS.length;
}

export interface RackPlanOptions {
  readonly hsms: number;
  readonly owner?: string;
  /** Tag each subnet with a VLAN (120, 130) as examples/rack-4.yaml does (default true). */
  readonly vlan?: boolean;
  /** Give every HSM an IPv6 address too (2001:db8:100::/64, 2001:db8:113::/64; default false). */
  readonly ipv6?: boolean;
}

/**
 * A validated plan of `hsms` HSMs: serials from 1234567, hostnames hsm-fra1-a01… (40 units per rack,
 * racks a, b, …), addresses from .11 in 198.51.100.0/24 and then 203.0.113.0/24, skipping the
 * gateway (.1), DNS (.53), NTP (.123) and the simulated LAN's .250. For 4 HSMs with VLANs it is
 * exactly examples/rack-4.yaml.
 */
export function rackPlan(options: RackPlanOptions): NetworkPlan {
  const { hsms } = options;
  const max = maxRackHsms();
  if (!Number.isInteger(hsms) || hsms < 1 || hsms > max) {
    throw new UsageError(`the number of HSMs must be a whole number from 1 to ${max}`);
  }
  const vlan = options.vlan ?? true;
  const ipv6 = options.ipv6 ?? false;
  const octets = hostOctets();
  const used = RACK_SUBNETS.slice(0, Math.ceil(hsms / octets.length));
  const document = {
    owner: options.owner ?? DEMO_OWNER,
    subnets: used.map((s) => ({
      name: s.name,
      cidr: `${s.prefix}.0/24`,
      gateway: `${s.prefix}.1`,
      dns: [`${s.prefix}.53`],
      ntp: [`${s.prefix}.123`],
      ...(vlan ? { vlan: s.vlan } : {}),
      mtu: 1500,
      ...(ipv6 ? { ipv6_cidr: `${s.ipv6}::/64`, ipv6_gateway: `${s.ipv6}::1` } : {}),
    })),
    hsms: Array.from({ length: hsms }, (_, i) => {
      const subnet = RACK_SUBNETS[Math.floor(i / octets.length)]!;
      const octet = octets[i % octets.length]!;
      const rack = String.fromCharCode(0x61 + Math.floor(i / UNITS_PER_RACK));
      const unit = String((i % UNITS_PER_RACK) + 1).padStart(2, "0");
      return {
        serial: String(FIRST_SERIAL + i),
        hostname: `hsm-fra1-${rack}${unit}`,
        interfaces: [
          {
            name: "eth0",
            subnet: subnet.name,
            ipv4: `${subnet.prefix}.${octet}`,
            ...(ipv6 ? { ipv6: `${subnet.ipv6}::${octet}` } : {}),
          },
        ],
      };
    }),
  };
  return parsePlan(JSON.stringify(document), "json");
}

// ---- the run -----------------------------------------------------------------------------------

export type DemoStep =
  | "pki"
  | "card"
  | "station"
  | "plan"
  | "factory"
  | "write"
  | "onboard"
  | "collect"
  | "receipts";

export interface DemoProgress {
  readonly step: DemoStep;
  /** One line for a human, without the ✓/✗ mark. */
  readonly message: string;
  readonly ok: boolean;
  readonly ms: number;
}

export interface CardIo {
  readonly apdus: number;
  /** Command bytes, host → card. */
  readonly bytesOut: number;
  /** Response bytes (status words included), card → host. */
  readonly bytesIn: number;
  /** What a YubiKey 5 would take for this exchange (latency-profile.ts), in ms. */
  readonly modeledCardMs: number;
}

export interface DemoHsm {
  readonly serial: string;
  readonly hostname: string;
  /** As the agent applied them (address/prefix). */
  readonly addresses: readonly string[];
  readonly configured: boolean;
  /** The agent's exit code (SPEC.md §7): 0 configured. */
  readonly exitCode: number;
  readonly error?: string;
  readonly receipt: {
    readonly written: boolean;
    /** Where the station found it, e.g. `receipt-0[1]` (of collection 2). */
    readonly location?: string;
    readonly verified: boolean;
    readonly reason?: string;
  };
  /** Wall time of this HSM's onboarding: agent start, card, PIN, verification, apply, receipt. */
  readonly onboardingMs: number;
  readonly card: CardIo;
}

export interface DemoReport {
  /** Every HSM configured and every receipt verified. */
  readonly ok: boolean;
  /** 0, else the SPEC.md §7 code of the first problem (15 for a receipt that does not verify). */
  readonly exitCode: number;
  /** One line per problem. */
  readonly problems: readonly string[];
  readonly owner: string;
  readonly officer: string;
  readonly cardSerial?: string;
  readonly configurationId?: string;
  readonly sequence?: number;
  readonly hsms: readonly DemoHsm[];
  /** Trips back to the station to empty a card full of receipts. */
  readonly receiptCollections: number;
  readonly dir: string;
  readonly kept: boolean;
  readonly timings: {
    readonly setupMs: number;
    readonly writeMs: number;
    readonly onboardingMs: number;
    readonly receiptsMs: number;
    readonly totalMs: number;
  };
}

export interface DemoOptions {
  readonly hsms?: number;
  /** Work in this directory and keep it (created if absent; must be empty). Default: a temporary one, removed. */
  readonly keepDir?: string;
  /** Stops the run between steps; the work directory is still removed. */
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: DemoProgress) => void;
  /**
   * Test hook: called after the station wrote the card and before the first HSM, with the card open
   * and its PIN verified (a tampering attacker, a damaged card…).
   */
  readonly afterStationWrite?: (element: SecureElement) => Promise<void>;
  /** Parent of the temporary work directory (default: the OS temp dir). */
  readonly tempParent?: string;
}

/** Room a receipt needs on the card before the first one has been seen (device cert + device CA). */
const INITIAL_RECEIPT_ESTIMATE = 2048;
/** Beyond the largest receipt seen: the CBOR array head of a receipt object, and a margin. */
const RECEIPT_SLACK_BYTES = 64;
/** HSMs factory-initialised at once (key generation and certificate signing overlap on the thread pool). */
const FACTORY_CONCURRENCY = 8;

/** Runs the demo; never leaves the temporary directory behind (unless keepDir). */
export async function runDemo(options: DemoOptions = {}): Promise<DemoReport> {
  const hsmCount = options.hsms ?? DEFAULT_DEMO_HSMS;
  const plan = rackPlan({ hsms: hsmCount });
  const started = performance.now();
  const dir = options.keepDir ?? (await mkdtemp(join(options.tempParent ?? tmpdir(), "hsm-onboard-demo-")));
  if (options.keepDir) await prepareKeepDir(options.keepDir);
  try {
    return await runIn(dir, plan, options, started);
  } finally {
    if (!options.keepDir) await rm(dir, { recursive: true, force: true });
  }
}

async function prepareKeepDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const entries = await readdir(dir);
  if (entries.length > 0) throw new UsageError(`--keep: ${dir} is not empty; give a new or empty directory`);
}

async function runIn(
  dir: string,
  plan: NetworkPlan,
  options: DemoOptions,
  started: number,
): Promise<DemoReport> {
  return new DemoRun(dir, plan, options).run(started);
}

type DemoPki = Awaited<ReturnType<typeof initPkiDirectory>>;
type Written = Awaited<ReturnType<typeof writeConfigurationToCard>>;
type CollectedRow = { readonly collection: number; readonly row: ReceiptRow };
type HsmRun = { readonly result: OnboardingResult; readonly ms: number; readonly io: CardIo };

/**
 * One demo run, as named steps: PKI, the officer's card, the station, the plan, the factory, the
 * station writes the card, the card goes from HSM to HSM, and back at the station the receipts.
 */
class DemoRun {
  readonly #signal: AbortSignal | undefined;
  // Made up for this run; only the card, the station and the agents ever see it.
  readonly #secrets = demoSecrets();
  readonly #pkiDir: string;
  readonly #stationDir: string;
  /** The emulator's SCP vendor CA (certificate and key): the card vendor of the demo. */
  get #scpVendorDir(): string {
    return join(this.dir, "scp-vendor");
  }

  async #scpTrustPem(): Promise<string> {
    return (await loadScpVendor(this.#scpVendorDir)).certificate.toString("pem");
  }
  /** Set while an HSM has the card: what it exchanges with the card. */
  #meter: ApduMeter | undefined;

  constructor(
    readonly dir: string,
    readonly plan: NetworkPlan,
    readonly options: DemoOptions,
  ) {
    this.#signal = options.signal;
    this.#pkiDir = join(dir, "pki");
    this.#stationDir = join(dir, "station");
  }

  #progress(step: DemoStep, message: string, since: number, ok = true): void {
    this.options.onProgress?.({ step, message, ok, ms: performance.now() - since });
  }

  #checkAbort(): void {
    if (this.#signal?.aborted) throw new UsageError("the demo was interrupted");
  }

  #hsmDir(serial: string): string {
    return join(this.dir, "hsms", serial);
  }

  async run(started: number): Promise<DemoReport> {
    const pki = await this.#createPki();
    const card = await this.#personaliseCard(pki);
    await this.#setUpStation(pki);
    await this.#writePlan();
    await this.#factory();
    const setupMs = performance.now() - started;
    const write = await this.#writeCard(card);
    const onboarding = await this.#carryCard(card);
    const receipts = await this.#readReceipts(card, onboarding);
    const { problems, exitCode } = demoVerdict(receipts.hsms);
    return {
      ok: problems.length === 0,
      exitCode,
      problems,
      owner: DEMO_OWNER,
      officer: DEMO_OFFICER,
      cardSerial: String(card.serial),
      configurationId: write.written.configurationId,
      sequence: write.written.sequence,
      hsms: receipts.hsms,
      receiptCollections: onboarding.collections,
      dir: this.dir,
      kept: this.options.keepDir !== undefined,
      timings: {
        setupMs,
        writeMs: write.ms,
        onboardingMs: onboarding.ms,
        receiptsMs: receipts.ms,
        totalMs: performance.now() - started,
      },
    };
  }

  /** 1. PKI: manufacturer root, token CA, device CA, CRL. */
  async #createPki(): Promise<DemoPki> {
    const t = performance.now();
    const created = await initPkiDirectory(this.#pkiDir, { owner: DEMO_OWNER });
    this.#progress(
      "pki",
      `PKI: manufacturer root, token CA "${created.pki.tokenCa.certificate.subject}", device CA, CRL 1`,
      t,
    );
    this.#checkAbort();
    return created;
  }

  /** 2. The officer's card, metered (the meter counts only while an HSM has it). */
  async #personaliseCard({ pki, crl }: DemoPki): Promise<VirtualPivCard> {
    const t = performance.now();
    const card = VirtualPivCard.fromFile(join(this.dir, "card.json"), {
      intercept: (command, answer) => {
        const begun = performance.now();
        const response = answer(command);
        this.#meter?.record(command, response, performance.now() - begun);
        return response;
      },
    });
    // The card vendor's step (a YubiKey 5.7 ships so): an SCP11b key certified by the emulator's vendor
    // CA, which station and agents are given as their SCP trust anchor (the channel is required).
    await provisionScpKey(card, await createScpVendor(this.#scpVendorDir));
    await withCard(card, "Officer's reader", async (element) => {
      await personalizeCard({
        element,
        pki: { tokenCa: pki.tokenCa, root: pki.root },
        crl,
        owner: DEMO_OWNER,
        officer: DEMO_OFFICER,
        newPin: this.#secrets.pin,
        newPuk: this.#secrets.puk,
      });
    });
    this.#progress(
      "card",
      `card ${card.serial} personalised for "${DEMO_OWNER}", officer "${DEMO_OFFICER}": keys generated on the card, PIN set, SCP11b key from the card vendor's CA`,
      t,
    );
    this.#checkAbort();
    return card;
  }

  /** 3. The station trusts the root and holds the token CA's CRL. */
  async #setUpStation({ pki, crl }: DemoPki): Promise<void> {
    const t = performance.now();
    await initStation(this.#stationDir, pki.root.certificate);
    await updateStationCrl(this.#stationDir, crl, { issuers: [pki.tokenCa.certificate] });
    await installScpTrust(this.#stationDir, await this.#scpTrustPem(), SCP_VENDOR_CA_FILE);
    this.#progress(
      "station",
      "station trusts the manufacturer root, holds the token CA's CRL and requires SCP11b to the card vendor's CA",
      t,
    );
  }

  /** 4. The plan, as the officer would write it. */
  async #writePlan(): Promise<void> {
    const t = performance.now();
    await writeFile(join(this.dir, "plan.yaml"), planToYaml(this.plan));
    const subnets = this.plan.subnets.map((s) => s.cidr).join(", ");
    const n = this.plan.hsms.length;
    this.#progress("plan", `plan: ${n} HSM${n === 1 ? "" : "s"} on ${subnets}`, t);
    this.#checkAbort();
  }

  /** 5. The factory: a device identity per HSM from the device CA, its agent initialised. */
  async #factory(): Promise<void> {
    const t = performance.now();
    const rootPem = new Uint8Array(await readFile(join(this.#pkiDir, PKI_FILES.rootCert)));
    const scpTrust = await this.#scpTrustPem();
    await inBatches(this.plan.hsms, FACTORY_CONCURRENCY, async (hsm) => {
      this.#checkAbort();
      const deviceDir = join(this.#hsmDir(hsm.serial), "device");
      await issueDeviceToDirectory(this.#pkiDir, deviceDir, hsm.serial);
      await factoryInit({
        stateDir: join(this.#hsmDir(hsm.serial), "state"),
        serial: hsm.serial,
        root: rootPem,
        device: deviceDir,
        // The demo runs without root: its HSMs record what they would do (asked for, and said so).
        applier: "dry-run",
      });
      await installScpTrust(join(this.#hsmDir(hsm.serial), "state"), scpTrust, SCP_VENDOR_CA_FILE);
    });
    const n = this.plan.hsms.length;
    this.#progress(
      "factory",
      `factory: ${n} device identit${n === 1 ? "y" : "ies"} from the device CA, agents initialised`,
      t,
    );
    this.#checkAbort();
  }

  /** 6. The station writes the card (then the test hook, with the card open and its PIN verified). */
  async #writeCard(card: VirtualPivCard): Promise<{ written: Written; ms: number }> {
    const t = performance.now();
    const { pin } = this.#secrets;
    const written = await withCard(
      card,
      "Officer's reader",
      (element) =>
        writeConfigurationToCard({
          element,
          plan: this.plan,
          stationDir: this.#stationDir,
          pin,
          // The demo station's sequence marks stay with it, never in the user's home.
          stateHome: join(this.dir, "state"),
        }),
      await requiredChannel(this.#stationDir),
    );
    this.#progress(
      "write",
      `station wrote configuration ${written.configurationId.slice(0, 8)} (sequence ${written.sequence}): ` +
        `${written.hsms} HSMs, ${written.configurationBytes.toLocaleString("en-US")} bytes, signed by the card, read back and verified`,
      t,
    );
    const ms = performance.now() - t;
    const hook = this.options.afterStationWrite;
    if (hook) {
      await withCard(card, "Officer's reader", async (element) => {
        await element.verifyPin(pin);
        await hook(element);
      });
    }
    this.#checkAbort();
    return { written, ms };
  }

  /** 7. The card goes from HSM to HSM; when it is full of receipts, back to the station first. */
  async #carryCard(
    card: VirtualPivCard,
  ): Promise<{ results: HsmRun[]; collected: CollectedRow[]; collections: number; ms: number }> {
    const started = performance.now();
    const results: HsmRun[] = [];
    const collected: CollectedRow[] = [];
    let collections = 0;
    const space = new ReceiptSpace(() => cardRoom(card));
    for (const hsm of this.plan.hsms) {
      this.#checkAbort();
      if (!(await space.hasRoom())) {
        collections++;
        const rows = await this.#collectReceipts(card);
        for (const row of rows) collected.push({ collection: collections, row });
        space.cleared();
      }
      results.push(await this.#onboard(card, hsm.serial));
      space.visited();
    }
    const ms = performance.now() - started;
    this.#checkAbort();
    return { results, collected, collections, ms };
  }

  /** The card is full of receipts: the station verifies, archives and removes them. */
  async #collectReceipts(card: VirtualPivCard): Promise<ReceiptRow[]> {
    const t = performance.now();
    const rows = await withCard(
      card,
      "Station reader",
      (element) =>
        collectReceipts(element, {
          stationDir: this.#stationDir,
          pin: this.#secrets.pin,
        }),
      await requiredChannel(this.#stationDir),
    );
    this.#progress(
      "collect",
      `card full of receipts: back at the station, ${rows.length} verified, archived in the station directory ` +
        "and removed from the card",
      t,
    );
    return rows;
  }

  /** One HSM's agent onboards with the card in its reader (dry-run network), metered. */
  async #onboard(card: VirtualPivCard, serial: string): Promise<HsmRun> {
    const t = performance.now();
    this.#meter = new ApduMeter(YUBIKEY5_LATENCY);
    const stateDir = join(this.#hsmDir(serial), "state");
    const result = await withCard(
      card,
      `HSM ${serial} reader`,
      (element) =>
        runAgentOnce({
          stateDir,
          net: "dry-run",
          element,
          pinSource: { read: async () => this.#secrets.pin },
          keepElementOpen: true,
        }),
      await requiredChannel(stateDir),
    );
    const io = cardIo(this.#meter.totals);
    this.#meter = undefined;
    const ms = performance.now() - t;
    this.#progress(
      "onboard",
      result.ok
        ? `HSM ${serial} ${result.hostname} configured ${result.addresses?.join(" ")} (${io.apdus} APDUs, ` +
            `${(io.bytesIn + io.bytesOut).toLocaleString("en-US")} bytes; receipt ${result.receipt?.written ? "on the card" : `not written: ${result.receipt?.reason}`})`
        : `HSM ${serial} not configured (exit ${result.exitCode}): ${result.error?.message}`,
      t,
      result.ok,
    );
    return { result, ms, io };
  }

  /** 8. Back at the station: the receipts on the card and those collected on the way, per HSM. */
  async #readReceipts(
    card: VirtualPivCard,
    {
      results,
      collected,
      collections,
    }: { results: HsmRun[]; collected: CollectedRow[]; collections: number },
  ): Promise<{ hsms: DemoHsm[]; ms: number }> {
    const t = performance.now();
    const report = await withCard(
      card,
      "Station reader",
      (element) => readReceipts({ element, stationDir: this.#stationDir }),
      await requiredChannel(this.#stationDir),
    );
    await recordReceiptReport(this.#stationDir, report); // the station's inventory (issue 14)
    const rows = [...collected, ...report.receipts.map((row) => ({ collection: 0, row }))];
    const hsms = this.plan.hsms.map((hsm, i): DemoHsm => {
      const { result, ms, io } = results[i]!;
      return describeHsm(hsm.serial, hsm.hostname, result, ms, io, rows, collections);
    });
    const verified = hsms.filter((h) => h.receipt.verified).length;
    this.#progress(
      "receipts",
      `station read ${rows.length} receipt${rows.length === 1 ? "" : "s"}: ${verified} of ${hsms.length} HSMs verified` +
        (report.configurationProblem ? ` (${report.configurationProblem})` : ""),
      t,
      verified === hsms.length,
    );
    return { hsms, ms: performance.now() - t };
  }
}

/** The problems of a demo run and its exit code: the first problem's (15 for a receipt that does not verify). */
function demoVerdict(hsms: readonly DemoHsm[]): { problems: string[]; exitCode: number } {
  const problems: string[] = [];
  let exitCode: number = ExitCode.ok;
  for (const h of hsms) {
    if (!h.configured) {
      problems.push(`HSM ${h.serial}: not configured (exit ${h.exitCode}): ${h.error}`);
      if (exitCode === ExitCode.ok) exitCode = h.exitCode;
    } else if (!h.receipt.verified) {
      problems.push(`HSM ${h.serial}: receipt not verified: ${h.receipt.reason}`);
      if (exitCode === ExitCode.ok) exitCode = ExitCode.integrity;
    }
  }
  return { problems, exitCode };
}

function describeHsm(
  serial: string,
  hostname: string,
  result: OnboardingResult,
  ms: number,
  io: CardIo,
  rows: readonly { collection: number; row: ReceiptRow }[],
  collections: number,
): DemoHsm {
  const applied = result.addresses ?? [];
  const mine = rows.filter((r) => r.row.serial === serial);
  const good = mine.find(
    (r) =>
      r.row.verified &&
      r.row.current &&
      r.row.outcome === ExitCode.ok &&
      // A dry-run HSM's receipt says so and claims no address (issue 12); a live one's shows them.
      (r.row.dryRun === true ? result.dryRun === true : sameAddresses(r.row.addresses, applied)),
  );
  const where = (r: { collection: number; row: ReceiptRow }) =>
    collections > 0
      ? `${r.row.location} (${r.collection === 0 ? "final read" : `collection ${r.collection}`})`
      : r.row.location;
  const receipt = good
    ? { written: true, location: where(good), verified: true }
    : {
        written: result.receipt?.written ?? false,
        verified: false,
        reason:
          mine.length === 0
            ? result.receipt?.written === false
              ? `not written: ${result.receipt.reason}`
              : "no receipt for this serial on the card"
            : (mine.map((r) => r.row.reason ?? `outcome ${r.row.outcomeName}`).join("; ") ?? "not verified"),
        ...(mine[0] ? { location: where(mine[0]) } : {}),
      };
  return {
    serial,
    hostname: result.hostname ?? hostname,
    addresses: applied,
    configured: result.ok,
    exitCode: result.exitCode,
    ...(result.error ? { error: result.error.message } : {}),
    receipt,
    onboardingMs: ms,
    card: io,
  };
}

/** The station shows "eth0 198.51.100.11/24"; the agent reports "198.51.100.11/24". */
function sameAddresses(station: readonly string[], agent: readonly string[]): boolean {
  const a = station.map((s) => s.split(" ").at(-1)).sort();
  const b = [...agent].sort();
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function cardIo(t: MeterTotals): CardIo {
  return { apdus: t.apdus, bytesOut: t.bytesOut, bytesIn: t.bytesIn, modeledCardMs: t.modeledMs };
}

export interface CardRoom {
  readonly freeBytes: number;
  /** Bytes the receipt objects take. */
  readonly receiptBytes: number;
}

/**
 * Whether the card can take one more receipt, measured as rarely as possible: a measurement scans
 * every object on the card, so between two of them the free space is estimated from the receipts
 * written since (each as large as the largest average seen, at first INITIAL_RECEIPT_ESTIMATE).
 */
export class ReceiptSpace {
  #perReceipt = INITIAL_RECEIPT_ESTIMATE;
  #measured: CardRoom | undefined;
  #visitsSince = 0;

  constructor(private readonly measure: () => Promise<CardRoom>) {}

  async hasRoom(): Promise<boolean> {
    const m = this.#measured;
    if (m && m.freeBytes - (this.#visitsSince + 1) * this.#perReceipt >= 0) return true;
    const now = await this.measure();
    if (m && this.#visitsSince > 0) {
      const average = Math.ceil((now.receiptBytes - m.receiptBytes) / this.#visitsSince);
      if (average > 0) this.#perReceipt = average + RECEIPT_SLACK_BYTES;
    }
    this.#measured = now;
    this.#visitsSince = 0;
    return now.freeBytes >= this.#perReceipt;
  }

  /** The card visited one HSM (which may have written a receipt). */
  visited(): void {
    this.#visitsSince++;
  }

  /** The receipts were taken off the card. */
  cleared(): void {
    this.#measured = undefined;
    this.#visitsSince = 0;
  }
}

/** Free bytes on the card, and the bytes its receipt objects take (not metered: not part of an onboarding). */
async function cardRoom(card: VirtualPivCard): Promise<CardRoom> {
  return withCard(card, "Officer's reader", async (element) => {
    const items = await element.listItems();
    const { freeBytes } = await element.capacity();
    const receiptBytes = items
      .filter((i) => parseItemName(i.name)?.kind === "receipt")
      .reduce((sum, i) => sum + i.size, 0);
    return { freeBytes, receiptBytes };
  });
}

/**
 * The channel policy of the station or agent directory `dir`, as their CLI applies it: SCP11b to the
 * installed SCP trust anchors, no plaintext fallback.
 */
async function requiredChannel(dir: string): Promise<SecureChannelPolicy> {
  return secureChannelPolicy(await readScpTrust(dir), false);
}

/**
 * Opens the in-process card (a fresh power-on: an insertion), runs `fn`, and closes it again; with
 * `channel`, as station and agent open it (SCP11b first). Personalisation and the card's room are
 * looked at as the card's issuer does, without the channel.
 */
async function withCard<T>(
  card: VirtualPivCard,
  readerName: string,
  fn: (element: PivElement) => Promise<T>,
  channel?: SecureChannelPolicy,
): Promise<T> {
  const opened = await openInProcessCard(card, { readerName, ...(channel ? { element: { channel } } : {}) });
  try {
    return await fn(opened.element);
  } finally {
    await opened.dispose();
  }
}

export interface CollectReceiptsOptions {
  readonly stationDir: string;
  readonly pin: string;
}

/**
 * The station takes the receipts off a card that has no room for more, through the station's own
 * `station receipts --collect` path (src/station/collect-receipts.ts): every receipt read and
 * verified, the verified objects archived durably in the station directory (fsync, read back and
 * compared), only then deleted with the PIN, each only if unchanged; an object holding a receipt that
 * does not verify stays on the card. The report goes into the station's inventory. Returns the rows
 * of the receipts that left the card (the others are read again at the end of the round).
 */
export async function collectReceipts(
  element: SecureElement,
  options: CollectReceiptsOptions,
): Promise<ReceiptRow[]> {
  const result = await collectReceiptsToStation({
    element,
    stationDir: options.stationDir,
    pin: options.pin,
  });
  await recordReceiptReport(options.stationDir, result.report); // the station's inventory (issue 14)
  const cleared = new Set(result.cleared);
  return result.report.receipts.filter((row) => cleared.has(row.location.replace(/\[.*$/, "")));
}

/**
 * A PIN and PUK for one run: 8 random digits each (PIV allows 6 to 8), so neither can be a factory
 * default (123456, 12345678).
 */
export function demoSecrets(): { pin: string; puk: string } {
  const digits = () => {
    // One draw in 10^8 hits the default PUK: a second draw is all it takes.
    for (let draw = 0; draw < 8; draw++) {
      const value = String(randomInt(0, 100_000_000)).padStart(8, "0");
      if (value !== "12345678") return value;
    }
    throw new Error("the random source keeps returning 12345678");
  };
  return { pin: digits(), puk: digits() };
}

/** Runs `fn` over `items`, at most `width` at a time; the first failure is thrown after the batch. */
export async function inBatches<T>(
  items: readonly T[],
  width: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  for (let i = 0; i < items.length; i += width) {
    const results = await Promise.allSettled(items.slice(i, i + width).map(fn));
    const failure = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failure) throw failure.reason;
  }
}

/** A failure of the demo itself (not of an HSM): its exit code, for the CLI. */
export function demoErrorExitCode(error: unknown): number {
  return isOnboardError(error) ? error.exitCode : ExitCode.internal;
}
