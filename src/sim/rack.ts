/**
 * `hsm-onboard sim rack`: a rack of simulated HSMs on one Linux box, through the real smart-card
 * stack (pcscd + vpcd, the project's virtual card as a separate process) and real networking
 * (network namespaces, veth, a bridge, iproute2), as root. SPEC.md §7; TESTBED.md;
 * docs/TESTBED-NOTES.md; docs/DEMO.md.
 *
 *   customer LAN: namespace <run>-lan, bridge br0, address .250 in the plan's subnet(s) (+ IPv6 ::250)
 *   station:      namespace <run>-station with its own pcscd and vpcd reader
 *   HSM k:        namespace <run>-hsm<k>: eth0 (veth to br0, left unconfigured), its own pcscd and vpcd
 *                 reader, an agent process (`agent run --net iproute2 --iface eth0 --once`), and once
 *                 configured a TCP service on 1792 bound to the address(es) the agent applied
 *
 * One card state file is the card. It is personalised and the station is set up in this process (no
 * PC/SC here: this process never runs a vpcd bridge or a PC/SC client, see TESTBED-NOTES pitfalls);
 * then `card emulate` processes insert it: into the station's reader for `station write`, then into
 * each HSM's reader in turn (stopping the emulator = pulling the card, starting one against the next
 * HSM's vpcd = inserting it), and back into the station's reader for `station receipts`. Every HSM
 * is then probed by TCP from inside the LAN namespace, and the banner must name its serial.
 *
 * Everything this run creates is recorded, as soon as it exists, in a state file under
 * /run/hsm-onboard-sim (namespaces, process ids with their start times, the work directory), and
 * removed at the end — also on failure and on SIGINT/SIGTERM (the caller's signal). `keep` leaves the
 * namespaces and the TCP services up (pcscd, agents and card emulators are stopped) and the state
 * file in place, for `sim rack --cleanup` (`cleanupKeptRacks`), which also clears what a crashed run
 * left behind.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { factoryInit } from "../agent/factory.js";
import type { OnboardingResult } from "../agent/onboarding.js";
import { createScpVendor, SCP_VENDOR_CA_FILE } from "../card-emulator/scp-provision.js";
import { VirtualPivCard } from "../card-emulator/virtual-piv-card.js";
import { planToYaml } from "../config/plan.js";
import type { NetworkPlan } from "../config/plan-model.js";
import { ExitCode, RackError, UsageError } from "../errors.js";
import { initPkiDirectory, issueDeviceToDirectory, PKI_FILES } from "../pki/index.js";
import { installScpTrust, readScpTrust, secureChannelPolicy } from "../secure-element/channel-policy.js";
import { openInProcessCard } from "../secure-element/open-card.js";
import type { PivElement, SecureChannelPolicy } from "../secure-element/piv-element.js";
import { parseItemName } from "../secure-element/secure-element.js";
import { updateStationCrl } from "../station/crl-update.js";
import { initStation } from "../station/init-station.js";
import { personalizeCard } from "../station/personalize-card.js";
import { STATE_HOME_ENV } from "../station/sequence-mark.js";
import { atomicWriteFile } from "../util/fs.js";
import {
  type CardRoom,
  collectReceipts,
  DEMO_OFFICER,
  DEMO_OWNER,
  demoSecrets,
  inBatches,
  LAN_HOST_OCTET,
  ReceiptSpace,
  rackPlan,
} from "./demo.js";
import {
  addNamespace,
  deleteNamespace,
  enableQuickack,
  inNamespace,
  ip,
  ipIn,
  isSameProcess,
  listNamespaces,
  NamespaceProcess,
  processStartTime,
  setSysctls,
  stopRecordedProcess,
} from "./netns.js";
import { findVpcdDriver, type PrivatePcscd, startPrivatePcscd } from "./pcscd.js";
import { NTLS_PORT, PROBE_SCRIPT, type ProbeResult, type ProbeTarget } from "./tcp-service.js";

export { RackError } from "../errors.js";

export const MAX_RACK_HSMS = 100;
export const DEFAULT_STATE_ROOT = "/run/hsm-onboard-sim";
/** Environment variable naming another state directory (tests keep their runs apart with it). */
export const STATE_ROOT_ENV = "HSM_ONBOARD_SIM_STATE_DIR";
const STATE_FORMAT = "hsm-onboard/sim-rack";

/** Bounds (ms). */
const BOUND = {
  pcscdStart: 8000,
  cardInserted: 10_000,
  cardRemoved: 5000,
  stationCommand: 60_000,
  agentReady: 30_000,
  onboarding: 60_000,
  service: 10_000,
  probeConnect: 3000,
  probeProcess: 15_000,
} as const;
/** Agents wait at most this long for the card (`agent run --timeout`), seconds. */
const AGENT_CARD_TIMEOUT_S = 180;
/** Namespaces, links and pcscd instances set up at once. */
const SETUP_CONCURRENCY = 8;

// ---- preflight ---------------------------------------------------------------------------------

/** What `sim rack` needs of this machine; an empty list when it can run. */
export function rackPrerequisites(cliMain: string): string[] {
  const missing: string[] = [];
  if (process.platform !== "linux") return ["Linux"];
  if (process.getuid?.() !== 0) missing.push("root (network namespaces, a private pcscd per HSM)");
  const onPath = (cmd: string) =>
    (process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin")
      .split(":")
      .some((dir) => dir && existsSync(join(dir, cmd)));
  for (const cmd of ["ip", "pcscd", "unshare", "sysctl"]) if (!onPath(cmd)) missing.push(cmd);
  if (!findVpcdDriver()) missing.push("the vpcd driver (package vsmartcard-vpcd)");
  if (!existsSync(cliMain)) {
    missing.push(`the built CLI (${cliMain}): run \`npm run build\` and start sim rack from the build`);
  }
  try {
    const require = createRequire(cliMain);
    const main = require.resolve("pcsclite");
    if (!existsSync(join(dirname(main), "build", "Release", "pcsclite.node"))) {
      missing.push("the pcsclite native build (libpcsclite-dev, then npm rebuild pcsclite)");
    }
  } catch {
    missing.push("the npm package pcsclite");
  }
  return missing;
}

/** The compiled CLI entry next to this module (dist/cli/main.js when this is dist/sim/rack.js). */
export function defaultCliMain(): string {
  return fileURLToPath(new URL("../cli/main.js", import.meta.url));
}

// ---- the state file ----------------------------------------------------------------------------

interface RecordedProcess {
  readonly pid: number;
  readonly startTime?: string;
  readonly role: string;
}

export interface RackRecord {
  readonly format: typeof STATE_FORMAT;
  readonly version: 1;
  readonly runId: string;
  readonly createdAt: string;
  /** The `sim rack` process that owns the run while it is running. */
  readonly owner: RecordedProcess;
  readonly kept: boolean;
  readonly workDir: string;
  readonly namespaces: readonly string[];
  readonly processes: readonly RecordedProcess[];
  /** For a kept run: what `--keep --json` printed. */
  readonly summary?: { lan: RackNamespaceInfo; hsms: readonly RackHsmInfo[] };
}

export interface RackNamespaceInfo {
  readonly namespace: string;
  readonly addresses: readonly string[];
}

export interface RackHsmInfo {
  readonly serial: string;
  readonly hostname: string;
  readonly namespace: string;
  readonly addresses: readonly string[];
}

/** The run's record on disk, rewritten atomically after each change (writes one at a time, latest wins). */
class StateFile {
  #record: RackRecord;
  #writing: Promise<void> = Promise.resolve();
  constructor(
    readonly path: string,
    record: RackRecord,
  ) {
    this.#record = record;
  }
  get record(): RackRecord {
    return this.#record;
  }
  update(change: (r: RackRecord) => RackRecord): Promise<void> {
    this.#record = change(this.#record);
    // Chained, and each write takes the record as it is when the write begins: concurrent updates
    // can never leave an older record on disk than the newest one.
    const write = this.#writing.then(() =>
      atomicWriteFile(this.path, `${JSON.stringify(this.#record, null, 2)}\n`, 0o600),
    );
    this.#writing = write.catch(() => undefined);
    return write;
  }
  async remove(): Promise<void> {
    await this.#writing;
    await rm(this.path, { force: true });
  }
}

// ---- the run -----------------------------------------------------------------------------------

export type RackStep =
  | "setup"
  | "namespaces"
  | "pcscd"
  | "write"
  | "onboard"
  | "collect"
  | "probe"
  | "receipts"
  | "cleanup";

export interface RackProgress {
  readonly step: RackStep;
  readonly message: string;
  readonly ok: boolean;
  readonly ms: number;
}

export interface RackHsm extends RackHsmInfo {
  /** The agent's exit code (SPEC.md §7): 0 configured. */
  readonly exitCode: number;
  readonly configured: boolean;
  readonly error?: string;
  /** One TCP probe from the LAN per assigned address. */
  readonly reachable: readonly ProbeResult[];
  readonly receipt: { readonly verified: boolean; readonly location?: string; readonly reason?: string };
  /**
   * Card connected to this HSM's vpcd reader → its agent process saw it (pcscd polls), configured the
   * network, wrote the receipt and exited.
   */
  readonly onboardingMs: number;
  /** The agent's own account of its flow: card opened → receipt written (`durationMs`). */
  readonly agentMs: number;
  /** Starting the card emulator until connected, plus pulling the card (emulator stopped). */
  readonly cardMoveMs: number;
}

export interface RackReport {
  readonly ok: boolean;
  readonly exitCode: number;
  readonly problems: readonly string[];
  readonly runId: string;
  /** The HSMs' network applier (`--net`). */
  readonly applier: "iproute2" | "networkd";
  readonly lan: RackNamespaceInfo;
  readonly station: { readonly namespace: string };
  readonly configurationId?: string;
  readonly sequence?: number;
  readonly hsms: readonly RackHsm[];
  readonly receiptCollections: number;
  readonly kept: boolean;
  /** The run's state file (what `sim rack --cleanup` reads) and work directory: both gone unless kept. */
  readonly stateFile: string;
  readonly workDir: string;
  readonly timings: {
    readonly setupMs: number;
    readonly writeMs: number;
    readonly onboardingMs: number;
    readonly probeMs: number;
    readonly receiptsMs: number;
    readonly cleanupMs: number;
    readonly totalMs: number;
  };
}

export interface RackOptions {
  readonly hsms: number;
  /** Leave the namespaces and TCP services up, and the state file for `--cleanup`. */
  readonly keep?: boolean;
  /** Interrupts the run (SIGINT/SIGTERM): everything is still cleaned up, then it rejects. */
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: RackProgress) => void;
  /** The compiled CLI module the child processes run (default: defaultCliMain()). */
  readonly cliMain?: string;
  /** Where state files go (default /run/hsm-onboard-sim). */
  readonly stateRoot?: string;
  /** Parent of the work directory (default: the OS temp dir). */
  readonly tempParent?: string;
  /**
   * The HSMs' network applier (default iproute2). `networkd`: each HSM namespace gets the real
   * systemd-networkd (private mount namespace, its own directory; TESTBED.md), and the agent tells it
   * to apply its files by restarting it (--networkd-reload: there is no D-Bus for networkctl).
   */
  readonly net?: "iproute2" | "networkd";
}

/**
 * "networkctl reload" without D-Bus: restarts systemd-networkd in the current network namespace with
 * a private mount namespace reading $1 (its PID in $2); bounded (5 s to stop, 5 s to start).
 */
export const NETWORKD_RESTART_SCRIPT = `#!/bin/sh
dir="$1"
pidfile="$2"
old=$(cat "$pidfile" 2>/dev/null)
if [ -n "$old" ] && kill "$old" 2>/dev/null; then
  i=0
  while kill -0 "$old" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
fi
unshare -m --propagation private sh -c 'mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && mount --bind "$1" /etc/systemd/network && mount -o remount,bind,ro /sys && exec /lib/systemd/systemd-networkd' sh "$dir" </dev/null >/dev/null 2>&1 &
pid=$!
echo "$pid" > "$pidfile"
i=0
while [ "$i" -lt 50 ]; do
  if [ -n "$(ls "/proc/$pid/root/run/systemd/netif/links" 2>/dev/null)" ]; then exit 0; fi
  sleep 0.1
  i=$((i + 1))
done
echo "systemd-networkd did not start" >&2
exit 1
`;

/** Runs the rack simulation; see the file comment. */
export async function runRack(options: RackOptions): Promise<RackReport> {
  const cliMain = options.cliMain ?? defaultCliMain();
  const hsms = options.hsms;
  if (!Number.isInteger(hsms) || hsms < 1 || hsms > MAX_RACK_HSMS) {
    throw new UsageError(`--hsms must be a whole number from 1 to ${MAX_RACK_HSMS}`);
  }
  const missing = rackPrerequisites(cliMain);
  if (options.net === "networkd" && !existsSync("/lib/systemd/systemd-networkd"))
    missing.push("/lib/systemd/systemd-networkd (package systemd) for --net networkd");
  if (missing.length > 0) throw new UsageError(`sim rack needs ${missing.join(", ")}`);

  const started = performance.now();
  const runId = `hob-${process.pid}-${randomBytes(2).toString("hex")}`;
  const stateRoot = options.stateRoot ?? DEFAULT_STATE_ROOT;
  await mkdir(stateRoot, { recursive: true, mode: 0o700 });
  const workDir = await mkdtemp(join(options.tempParent ?? tmpdir(), "hsm-onboard-sim-"));
  const state = new StateFile(join(stateRoot, `${runId}.json`), {
    format: STATE_FORMAT,
    version: 1,
    runId,
    createdAt: new Date().toISOString(),
    owner: { pid: process.pid, ...(await startTimeOf(process.pid)), role: "sim rack" },
    kept: false,
    workDir,
    namespaces: [],
    processes: [],
  });
  await state.update((r) => r);
  const rack = new Rack(runId, workDir, state, cliMain, options);
  let report: RackReport | undefined;
  let failure: unknown;
  try {
    report = await rack.run(hsms, started);
  } catch (error) {
    failure = error;
  }
  const t = performance.now();
  const keep = options.keep === true && report !== undefined;
  try {
    await rack.cleanup(keep, report);
    rack.progress(
      "cleanup",
      keep ? `kept; recorded in ${state.path}` : "namespaces, processes and files removed",
      t,
    );
  } catch (error) {
    rack.progress("cleanup", (error as Error).message, t, false);
    failure ??= error;
  }
  if (failure !== undefined) throw failure;
  return { ...report!, timings: { ...report!.timings, cleanupMs: performance.now() - t } };
}

async function startTimeOf(pid: number): Promise<{ startTime?: string }> {
  const startTime = await processStartTime(pid);
  return startTime === undefined ? {} : { startTime };
}

interface HsmSlot {
  readonly index: number;
  readonly serial: string;
  readonly hostname: string;
  readonly namespace: string;
  readonly addresses: readonly string[];
  readonly stateDir: string;
  /** networkd applier: its directory and the PID file of the networkd the agent restarts. */
  readonly networkDir: string;
  readonly networkdPid: string;
  pcscd?: PrivatePcscd;
  agent?: NamespaceProcess;
}

/** What step 1 of a rack run leaves for the others. */
interface RackSetup {
  readonly plan: NetworkPlan;
  readonly slots: HsmSlot[];
  readonly stationDir: string;
  readonly cardPath: string;
}

interface RackWrite {
  readonly configurationId?: string;
  readonly sequence?: number;
  readonly ms: number;
}

/** How one HSM's onboarding ended, with its times; `visited` when the card went into its reader. */
interface HsmOutcome {
  readonly result?: OnboardingResult;
  readonly exitCode: number;
  readonly error?: string;
  readonly ms: number;
  readonly moveMs: number;
  readonly agentMs: number;
  readonly visited: boolean;
}

interface ReceiptCollection {
  readonly collection: number;
  readonly rows: Awaited<ReturnType<typeof collectReceipts>>;
}

/** A receipt as `station receipts --json` lists it. */
interface ReceiptRow {
  readonly serial: string | null;
  readonly location: string;
  readonly verified: boolean;
  readonly current: boolean;
  readonly outcome: number | null;
  readonly addresses: string[];
  readonly reason: string | null;
}

/** Arguments of a station command that uses the card in the station's reader, with JSON output. */
function stationCardArgs(stationDir: string, pcscd: PrivatePcscd): string[] {
  return ["--station-dir", stationDir, "--reader", pcscd.readerName, "--timeout", "20", "--json"];
}

/** The problems of a rack run and its exit code: the first problem's. */
function rackVerdict(hsms: readonly RackHsm[]): { problems: string[]; exitCode: number } {
  const problems: string[] = [];
  let exitCode: number = ExitCode.ok;
  const fail = (problem: string, code: number) => {
    problems.push(problem);
    if (exitCode === ExitCode.ok) exitCode = code;
  };
  for (const h of hsms) {
    if (!h.configured)
      fail(`HSM ${h.serial}: not configured (exit ${h.exitCode}): ${h.error}`, h.exitCode || 1);
    else {
      for (const p of h.reachable.filter((r) => !r.ok)) {
        fail(
          `HSM ${h.serial}: ${p.address}:${p.port} not reachable from the LAN: ${p.error}`,
          ExitCode.networkApply,
        );
      }
      if (h.reachable.length !== h.addresses.length) {
        fail(`HSM ${h.serial}: not every address was probed`, ExitCode.networkApply);
      }
      if (!h.receipt.verified)
        fail(`HSM ${h.serial}: receipt not verified: ${h.receipt.reason}`, ExitCode.integrity);
    }
  }
  return { problems, exitCode };
}

class Rack {
  readonly #namespaces: string[] = [];
  readonly #pcscds: PrivatePcscd[] = [];
  /** Card emulators, agents, station commands, probes: stopped at the end whatever happens. */
  readonly #transient = new Set<NamespaceProcess>();
  /** TCP services: kept with `keep`. */
  readonly #services: NamespaceProcess[] = [];
  /** TCP services coming up (each resolves once its service listens). */
  readonly #serviceStarts: Promise<void>[] = [];
  /** Agents by HSM index, started one HSM ahead of the card. */
  readonly #agentStarts = new Map<number, Promise<NamespaceProcess>>();
  readonly #secrets = demoSecrets();
  readonly #pin = this.#secrets.pin;
  readonly #puk = this.#secrets.puk;
  readonly #signal: AbortSignal | undefined;
  readonly lan: string;
  readonly station: string;
  #lanAddresses: string[] = [];
  #entry = "";
  readonly #net: "iproute2" | "networkd";
  #slots: HsmSlot[] = [];
  /** The emulator's SCP vendor CA (certificate and key), created at setup. */
  get #scpVendorDir(): string {
    return join(this.workDir, "scp-vendor");
  }

  constructor(
    readonly runId: string,
    readonly workDir: string,
    readonly state: StateFile,
    readonly cliMain: string,
    readonly options: RackOptions,
  ) {
    this.#signal = options.signal;
    this.#net = options.net ?? "iproute2";
    this.lan = `${runId}-lan`;
    this.station = `${runId}-station`;
  }

  progress(step: RackStep, message: string, since: number, ok = true): void {
    this.options.onProgress?.({ step, message, ok, ms: performance.now() - since });
  }

  #checkAbort(): void {
    if (this.#signal?.aborted) throw new RackError("interrupted", ExitCode.interrupted);
  }

  /**
   * The whole rack, as named steps: set up the station side and the factory, build the namespaces,
   * start the readers, write the card at the station, carry it from HSM to HSM, probe the LAN, read
   * the receipts back at the station, and report.
   */
  async run(count: number, started: number): Promise<RackReport> {
    const setup = await this.#setUp(count);
    await this.#buildNamespaces(setup);
    const stationPcscd = await this.#startReaders(setup);
    const setupMs = performance.now() - started;
    const write = await this.#writeCard(setup, stationPcscd);
    const onboarding = await this.#carryCard(setup);
    const probe = await this.#probeLan(setup.slots, onboarding.outcomes);
    const receipts = await this.#readReceipts(setup, stationPcscd, onboarding.collected);
    return this.#report({
      count,
      slots: setup.slots,
      write,
      outcomes: onboarding.outcomes,
      collections: onboarding.collected.length,
      probes: probe.probes,
      receipts,
      timings: {
        setupMs,
        writeMs: write.ms,
        onboardingMs: onboarding.ms,
        probeMs: probe.ms,
        receiptsMs: receipts.ms,
        cleanupMs: 0,
        totalMs: 0,
      },
      started,
    });
  }

  /** 1. The station side and the factory, in this process: plan, PKI, card, station, HSM states. */
  async #setUp(count: number): Promise<RackSetup> {
    const t = performance.now();
    const plan = rackPlan({ hsms: count, vlan: false, ipv6: true });
    await writeFile(join(this.workDir, "plan.yaml"), planToYaml(plan));
    const pkiDir = join(this.workDir, "pki");
    const { pki, crl } = await initPkiDirectory(pkiDir, { owner: DEMO_OWNER });
    const rootPem = new Uint8Array(await readFile(join(pkiDir, PKI_FILES.rootCert)));
    const cardPath = join(this.workDir, "card.json");
    await withCardFile(cardPath, (element) =>
      personalizeCard({
        element,
        pki: { tokenCa: pki.tokenCa, root: pki.root },
        crl,
        owner: DEMO_OWNER,
        officer: DEMO_OFFICER,
        newPin: this.#pin,
        newPuk: this.#puk,
      }),
    );
    const stationDir = join(this.workDir, "station");
    await initStation(stationDir, pki.root.certificate);
    await updateStationCrl(stationDir, crl, { issuers: [pki.tokenCa.certificate] });
    // The secure channel is required (issue 11): the emulator's vendor CA certifies the card's SCP11b
    // key (`card emulate --scp-vendor`) and is the SCP trust anchor of station and agents.
    const scpVendor = await createScpVendor(this.#scpVendorDir);
    const scpTrustPem = scpVendor.certificate.toString("pem");
    await installScpTrust(stationDir, scpTrustPem, SCP_VENDOR_CA_FILE);
    const slots: HsmSlot[] = plan.hsms.map((hsm, index) => ({
      index,
      serial: hsm.serial,
      hostname: hsm.hostname,
      namespace: `${this.runId}-hsm${index + 1}`,
      addresses: addressesOf(plan, hsm.serial),
      stateDir: join(this.workDir, "hsms", hsm.serial, "state"),
      networkDir: join(this.workDir, "hsms", hsm.serial, "network"),
      networkdPid: join(this.workDir, "hsms", hsm.serial, "networkd.pid"),
    }));
    await inBatches(slots, SETUP_CONCURRENCY, async (slot) => {
      this.#checkAbort();
      const deviceDir = join(this.workDir, "hsms", slot.serial, "device");
      await issueDeviceToDirectory(pkiDir, deviceDir, slot.serial);
      await factoryInit({
        stateDir: slot.stateDir,
        serial: slot.serial,
        root: rootPem,
        device: deviceDir,
        applier: this.#net,
        ...(this.#net === "networkd" ? { networkDir: slot.networkDir } : {}),
      });
      if (this.#net === "networkd") {
        await mkdir(slot.networkDir, { recursive: true });
        await chmod(slot.networkDir, 0o755); // networkd reads it as the systemd-network user
      }
      await installScpTrust(slot.stateDir, scpTrustPem, SCP_VENDOR_CA_FILE);
    });
    this.#slots = slots;
    if (this.#net === "networkd") {
      await writeFile(join(this.workDir, "networkd-restart.sh"), NETWORKD_RESTART_SCRIPT, { mode: 0o755 });
    }
    this.#entry = join(this.workDir, "hsm-onboard.mjs");
    await writeFile(
      this.#entry,
      `import { main } from ${JSON.stringify(pathToFileURL(this.cliMain).href)};\n` +
        "await main(process.argv.slice(2));\n",
    );
    this.progress(
      "setup",
      `PKI, card of "${DEMO_OWNER}" (officer "${DEMO_OFFICER}"), station, plan and ${count} factory-fresh HSM${count === 1 ? "" : "s"} in ${this.workDir}`,
      t,
    );
    this.#checkAbort();
    return { plan, slots, stationDir, cardPath };
  }

  /** 2. Namespaces: the LAN with its bridge, the station, one per HSM with eth0 on the bridge. */
  async #buildNamespaces({ plan, slots }: RackSetup): Promise<void> {
    const t = performance.now();
    await this.#createLan(plan);
    await this.#createNamespace(this.station);
    await inBatches(slots, SETUP_CONCURRENCY, (slot) => this.#createHsmNamespace(slot));
    this.progress(
      "namespaces",
      `LAN ${this.lan} (bridge br0, ${this.#lanAddresses.join(" ")}), station ${this.station}, ` +
        `${slots.length} HSM namespace${slots.length === 1 ? "" : "s"} with eth0 on the bridge`,
      t,
    );
    this.#checkAbort();
  }

  /** 3. A pcscd with a vpcd reader per HSM, and one at the station (returned). */
  async #startReaders({ slots }: RackSetup): Promise<PrivatePcscd> {
    const t = performance.now();
    const stationPcscd = await this.#startPcscd(this.station);
    await inBatches(slots, SETUP_CONCURRENCY, async (slot) => {
      slot.pcscd = await this.#startPcscd(slot.namespace);
    });
    this.progress("pcscd", `${slots.length + 1} private pcscd instances with a vpcd reader each`, t);
    this.#checkAbort();
    return stationPcscd;
  }

  /**
   * 4. The station writes the plan onto the card, through PC/SC. The first HSM's agent starts
   * meanwhile: it waits for the card, as an HSM does once racked and powered.
   */
  async #writeCard({ slots, stationDir }: RackSetup, stationPcscd: PrivatePcscd): Promise<RackWrite> {
    const t = performance.now();
    if (slots[0]) void this.#agentFor(slots[0]).catch(() => undefined);
    const written = await this.#withCardIn(this.station, stationPcscd, () =>
      this.#cli(
        this.station,
        [
          "station",
          "write",
          "--plan",
          join(this.workDir, "plan.yaml"),
          ...stationCardArgs(stationDir, stationPcscd),
          "--pin-stdin",
        ],
        stationPcscd,
        `${this.#pin}\n`,
      ),
    );
    if (written.code !== 0) {
      throw new RackError(
        `station write failed (exit ${written.code}): ${tail(written.stderr)}`,
        (written.code ?? ExitCode.internal) as ExitCode, // the CLI exits only with codes of ExitCode
      );
    }
    const result = parseJson<{
      configurationId?: string;
      sequence?: number;
      configurationBytes?: number;
    }>(written.stdout, "station write --json");
    this.progress(
      "write",
      `station wrote configuration ${result.configurationId?.slice(0, 8)} (sequence ${result.sequence}) ` +
        `for ${slots.length} HSM${slots.length === 1 ? "" : "s"} onto the card through ${stationPcscd.readerName}`,
      t,
    );
    const ms = performance.now() - t;
    this.#checkAbort();
    return { ...result, ms };
  }

  /**
   * 5. The card goes from HSM to HSM; when it is full of receipts, back to the station first. The
   * services of configured HSMs come up while the card moves on; this waits for all of them.
   */
  async #carryCard({ slots, stationDir, cardPath }: RackSetup): Promise<{
    outcomes: HsmOutcome[];
    collected: ReceiptCollection[];
    ms: number;
  }> {
    const started = performance.now();
    const outcomes: HsmOutcome[] = [];
    const collected: ReceiptCollection[] = [];
    const space = new ReceiptSpace(() => cardRoom(cardPath));
    for (const slot of slots) {
      this.#checkAbort();
      if (!(await space.hasRoom())) {
        collected.push(await this.#collectReceipts(cardPath, stationDir, collected.length + 1));
        space.cleared();
      }
      const outcome = await this.#onboardOne(slot, slots[slot.index + 1]);
      outcomes.push(outcome);
      if (outcome.visited) space.visited();
    }
    const ms = performance.now() - started;
    const serviceStarts = await Promise.allSettled(this.#serviceStarts);
    const serviceFailure = serviceStarts.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (serviceFailure) throw serviceFailure.reason;
    this.#checkAbort();
    return { outcomes, collected, ms };
  }

  /** The card is full of receipts: back at the station, they are verified, archived and removed. */
  async #collectReceipts(
    cardPath: string,
    stationDir: string,
    collection: number,
  ): Promise<ReceiptCollection> {
    const t = performance.now();
    const rows = await withCardFile(
      cardPath,
      (element) =>
        collectReceipts(element, {
          stationDir,
          pin: this.#pin,
        }),
      // As the station's CLI opens the card: SCP11b to its SCP trust anchor, no plaintext fallback.
      secureChannelPolicy(await readScpTrust(stationDir), false),
    );
    this.progress(
      "collect",
      `card full of receipts: back at the station, ${rows.filter((r) => r.verified).length} of ${rows.length} verified, archived and removed`,
      t,
    );
    return { collection, rows };
  }

  /**
   * One HSM: its agent waits for the card, the card goes in, the agent onboards and exits, the card
   * comes out. The next HSM's agent starts meanwhile. An agent that ends before the card comes is a
   * failed HSM (the rack goes on); the card did not visit it.
   */
  async #onboardOne(slot: HsmSlot, next: HsmSlot | undefined): Promise<HsmOutcome> {
    let t = performance.now();
    const agent = await this.#agentFor(slot);
    if (next) void this.#agentFor(next).catch(() => undefined); // starts while this one works
    try {
      await agent.waitUntil(
        () => /waiting for a card/.test(agent.stderr),
        `the agent of HSM ${slot.serial} to wait for a card`,
        BOUND.agentReady,
        this.#signal,
      );
    } catch (error) {
      if (agent.running || this.#signal?.aborted) throw error;
      // The agent gave up before the card came (its state, its pcscd…): this HSM failed, the rack goes on.
      await this.#saveLog(`agent-${slot.serial}.log`, agent.stderr);
      this.#transient.delete(agent);
      const outcome = agentOutcome(agent, agent.child.exitCode);
      this.progress(
        "onboard",
        `HSM ${slot.serial}: its agent ended before the card came (exit ${outcome.exitCode}): ${outcome.error}`,
        t,
        false,
      );
      return { ...outcome, ms: 0, moveMs: 0, agentMs: 0, visited: false };
    }
    t = performance.now();
    const emulator = await this.#insertCard(slot.namespace, slot.pcscd!);
    const inserted = performance.now();
    let code: number | null;
    let exited = inserted;
    try {
      code = await agent.exitCode(BOUND.onboarding, this.#signal);
      exited = performance.now();
    } finally {
      await this.#removeCard(emulator);
      await this.#saveLog(`agent-${slot.serial}.log`, agent.stderr);
      await this.#saveLog(`card-emulate-${slot.serial}.log`, emulator.stderr);
    }
    this.#transient.delete(agent);
    const outcome = agentOutcome(agent, code);
    // The service comes up while the card moves on; the probe waits for all of them.
    if (outcome.result?.ok) {
      const start = this.#startService(slot, outcome.result);
      start.catch(() => undefined); // handled after the round (allSettled)
      this.#serviceStarts.push(start);
    }
    this.progress(
      "onboard",
      outcome.result?.ok
        ? `HSM ${slot.serial} ${slot.hostname} in ${slot.namespace} configured ${outcome.result.addresses?.join(" ")} ` +
            `by its agent through pcscd (${this.#net})`
        : `HSM ${slot.serial} in ${slot.namespace} not configured (exit ${outcome.exitCode}): ${outcome.error}`,
      t,
      outcome.result?.ok === true,
    );
    return {
      ...outcome,
      ms: exited - inserted,
      moveMs: performance.now() - t - (exited - inserted),
      agentMs: outcome.result?.durationMs ?? 0,
      visited: true,
    };
  }

  /** 6. Reachability, from inside the LAN namespace: every address of every configured HSM. */
  async #probeLan(
    slots: readonly HsmSlot[],
    outcomes: readonly HsmOutcome[],
  ): Promise<{ probes: ProbeResult[]; ms: number }> {
    const t = performance.now();
    const targets: ProbeTarget[] = slots.flatMap((slot, i) =>
      outcomes[i]?.result?.ok
        ? slot.addresses.map((a) => ({ address: a.split("/")[0]!, port: NTLS_PORT, serial: slot.serial }))
        : [],
    );
    const probes = await this.#probe(targets);
    const reachableCount = probes.filter((p) => p.ok).length;
    this.progress(
      "probe",
      `from the LAN namespace: ${reachableCount} of ${targets.length} addresses answer on TCP ${NTLS_PORT} with their HSM's serial`,
      t,
      reachableCount === targets.length,
    );
    const ms = performance.now() - t;
    this.#checkAbort();
    return { probes, ms };
  }

  /** 7. Back at the station: the receipts, through PC/SC, after those collected on the way. */
  async #readReceipts(
    { stationDir }: RackSetup,
    stationPcscd: PrivatePcscd,
    collected: readonly ReceiptCollection[],
  ): Promise<{ rows: ReceiptRow[]; readerName: string; started: number; ms: number }> {
    const t = performance.now();
    const receipts = await this.#withCardIn(this.station, stationPcscd, () =>
      this.#cli(
        this.station,
        ["station", "receipts", ...stationCardArgs(stationDir, stationPcscd)],
        stationPcscd,
      ),
    );
    const receiptReport = parseJson<{ receipts?: ReceiptRow[] }>(
      receipts.stdout,
      `station receipts --json (exit ${receipts.code}: ${tail(receipts.stderr)})`,
    );
    const rows: ReceiptRow[] = [
      ...collected.flatMap((c) =>
        c.rows.map((r) => ({
          serial: r.serial ?? null,
          location: `${r.location} (collection ${c.collection})`,
          verified: r.verified,
          current: r.current,
          outcome: r.outcome ?? null,
          addresses: [...r.addresses],
          reason: r.reason ?? null,
        })),
      ),
      ...(receiptReport.receipts ?? []),
    ];
    return { rows, readerName: stationPcscd.readerName, started: t, ms: performance.now() - t };
  }

  /** 8. The report: per HSM (configured, reachable, receipt), the problems and the exit code. */
  #report(input: {
    count: number;
    slots: readonly HsmSlot[];
    write: RackWrite;
    outcomes: readonly HsmOutcome[];
    collections: number;
    probes: readonly ProbeResult[];
    receipts: { rows: readonly ReceiptRow[]; readerName: string; started: number };
    timings: RackReport["timings"];
    started: number;
  }): RackReport {
    const { slots, outcomes, probes, write } = input;
    const rows = input.receipts.rows;
    const hsmReports: RackHsm[] = slots.map((slot, i) => {
      const outcome = outcomes[i]!;
      const mine = rows.filter((r) => r.serial === slot.serial);
      const good = mine.find((r) => r.verified && r.current && r.outcome === 0);
      return {
        serial: slot.serial,
        hostname: slot.hostname,
        namespace: slot.namespace,
        addresses: slot.addresses,
        exitCode: outcome.exitCode,
        configured: outcome.result?.ok === true,
        ...(outcome.error ? { error: outcome.error } : {}),
        reachable: probes.filter((p) => p.serial === slot.serial),
        receipt: good
          ? { verified: true, location: good.location }
          : {
              verified: false,
              reason:
                mine.length === 0
                  ? "no receipt for this serial on the card"
                  : mine.map((r) => r.reason ?? `outcome ${r.outcome}`).join("; "),
            },
        onboardingMs: outcome.ms,
        agentMs: outcome.agentMs,
        cardMoveMs: outcome.moveMs,
      };
    });
    const verified = hsmReports.filter((h) => h.receipt.verified).length;
    this.progress(
      "receipts",
      `station read the card through ${input.receipts.readerName}: ${verified} of ${input.count} receipts verified`,
      input.receipts.started,
      verified === input.count,
    );
    const { problems, exitCode } = rackVerdict(hsmReports);
    return {
      ok: problems.length === 0,
      exitCode,
      problems,
      runId: this.runId,
      applier: this.#net,
      lan: { namespace: this.lan, addresses: this.#lanAddresses },
      station: { namespace: this.station },
      ...(write.configurationId ? { configurationId: write.configurationId } : {}),
      ...(write.sequence !== undefined ? { sequence: write.sequence } : {}),
      hsms: hsmReports,
      receiptCollections: input.collections,
      kept: this.options.keep === true,
      stateFile: this.state.path,
      workDir: this.workDir,
      timings: { ...input.timings, totalMs: performance.now() - input.started },
    };
  }

  // ---- namespaces ------------------------------------------------------------------------------

  async #createNamespace(name: string): Promise<void> {
    // Recorded before it exists: a crash in between leaves a record that --cleanup tolerates.
    this.#namespaces.push(name);
    await this.state.update((r) => ({ ...r, namespaces: [...this.#namespaces] }));
    await addNamespace(name);
    await enableQuickack(name);
  }

  async #createLan(plan: NetworkPlan): Promise<void> {
    await this.#createNamespace(this.lan);
    await ipIn(this.lan, ["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
    await ipIn(this.lan, ["link", "set", "br0", "up"]);
    for (const subnet of plan.subnets) {
      if (subnet.cidr) {
        const [network, prefix] = subnet.cidr.split("/") as [string, string];
        const address = `${network.split(".").slice(0, 3).join(".")}.${LAN_HOST_OCTET}/${prefix}`;
        await ipIn(this.lan, ["addr", "add", address, "dev", "br0"]);
        this.#lanAddresses.push(address);
      }
      if (subnet.ipv6Cidr) {
        const [network, prefix] = subnet.ipv6Cidr.split("/") as [string, string];
        const address = `${network}${LAN_HOST_OCTET}/${prefix}`; // "2001:db8:100::" + "250"
        // nodad: usable at once; the HSMs' own DAD still sees it.
        await ipIn(this.lan, ["addr", "add", address, "dev", "br0", "nodad"]);
        this.#lanAddresses.push(address);
      }
    }
  }

  async #createHsmNamespace(slot: HsmSlot): Promise<void> {
    this.#checkAbort();
    await this.#createNamespace(slot.namespace);
    const port = `vh${slot.index + 1}`;
    await ipIn(this.lan, [
      "link",
      "add",
      port,
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      slot.namespace,
    ]);
    await ipIn(this.lan, ["link", "set", port, "master", "br0", "up"]);
    // Faster neighbour discovery on this simulated link: IPv6 DAD and the agent's ARP probe give up
    // after ~0.1-0.3 s instead of 1-3 s. A host that holds the address answers within a millisecond
    // on a veth, so conflicts are still found (docs/DEMO.md).
    await setSysctls(slot.namespace, {
      "net.ipv6.conf.eth0.router_solicitation_delay": 0,
      "net.ipv6.neigh.eth0.retrans_time_ms": 100,
      "net.ipv4.neigh.eth0.retrans_time_ms": 100,
    });
  }

  // ---- processes -------------------------------------------------------------------------------

  async #record(proc: NamespaceProcess, role: string): Promise<void> {
    if (proc.pid === undefined) return;
    const startTime = await proc.startTime();
    await this.state.update((r) => ({
      ...r,
      processes: [...r.processes, { pid: proc.pid!, ...(startTime ? { startTime } : {}), role }],
    }));
  }

  async #unrecord(proc: NamespaceProcess): Promise<void> {
    await this.state.update((r) => ({ ...r, processes: r.processes.filter((p) => p.pid !== proc.pid) }));
  }

  async #startPcscd(namespace: string): Promise<PrivatePcscd> {
    this.#checkAbort();
    const pcscd = await startPrivatePcscd({
      netns: namespace,
      dir: join(this.workDir, "pcscd", namespace),
      readyTimeoutMs: BOUND.pcscdStart,
    });
    this.#pcscds.push(pcscd);
    if (pcscd.pid !== undefined) {
      const startTime = await processStartTime(pcscd.pid);
      await this.state.update((r) => ({
        ...r,
        processes: [
          ...r.processes,
          { pid: pcscd.pid!, ...(startTime ? { startTime } : {}), role: `pcscd ${namespace}` },
        ],
      }));
    }
    return pcscd;
  }

  #spawn(
    namespace: string,
    args: readonly string[],
    env: Record<string, string>,
    input?: string,
  ): NamespaceProcess {
    const proc = new NamespaceProcess(namespace, [process.execPath, this.#entry, ...args], {
      env,
      ...(input !== undefined ? { input } : {}),
    });
    this.#transient.add(proc);
    return proc;
  }

  /** Runs one CLI command inside `namespace` as a client of `pcscd`, to its end (bounded). */
  async #cli(
    namespace: string,
    args: readonly string[],
    pcscd: PrivatePcscd,
    input?: string,
  ): Promise<{ code: number | null; stdout: string; stderr: string }> {
    // The simulated station's sequence marks stay in the work directory, never in the user's home
    // (src/station/sequence-mark.ts): they go with it, like its station directory.
    const env = { ...pcscd.env, [STATE_HOME_ENV]: join(this.workDir, "state") };
    const proc = this.#spawn(namespace, args, env, input);
    await this.#record(proc, `${args.slice(0, 2).join(" ")} ${namespace}`);
    try {
      const code = await proc.exitCode(BOUND.stationCommand, this.#signal);
      return { code, stdout: proc.stdout, stderr: proc.stderr };
    } finally {
      await proc.stop();
      this.#transient.delete(proc);
      await this.#unrecord(proc);
    }
  }

  /** Inserts the card (a `card emulate` process against the reader's vpcd port) and waits for it. */
  async #insertCard(namespace: string, pcscd: PrivatePcscd): Promise<NamespaceProcess> {
    const emulator = await this.#startEmulator(namespace, pcscd);
    try {
      await this.#waitInserted(emulator, pcscd);
    } catch (error) {
      await this.#removeCard(emulator);
      throw error;
    }
    return emulator;
  }

  async #startEmulator(namespace: string, pcscd: PrivatePcscd): Promise<NamespaceProcess> {
    const emulator = this.#spawn(
      namespace,
      [
        "card",
        "emulate",
        "--state",
        join(this.workDir, "card.json"),
        "--vpcd",
        `127.0.0.1:${pcscd.vpcdPort}`,
        "--scp-vendor",
        this.#scpVendorDir,
      ],
      {},
    );
    await this.#record(emulator, `card emulate ${namespace}`);
    return emulator;
  }

  #waitInserted(emulator: NamespaceProcess, pcscd: PrivatePcscd): Promise<void> {
    return emulator.waitUntil(
      () => /inserted: connected/.test(emulator.stderr),
      `the card to be inserted into ${pcscd.readerName} in ${emulator.namespace}`,
      BOUND.cardInserted,
      this.#signal,
    );
  }

  /** Pulls the card: the emulator is stopped (SIGTERM), which saves the card's state and disconnects. */
  async #removeCard(emulator: NamespaceProcess): Promise<void> {
    await emulator.stop(BOUND.cardRemoved);
    this.#transient.delete(emulator);
    await this.#unrecord(emulator);
    if (emulator.child.exitCode !== 0) {
      throw new RackError(
        `the card emulator in ${emulator.namespace} ended with ${emulator.child.exitCode ?? emulator.child.signalCode}: ${tail(emulator.stderr)}`,
      );
    }
  }

  /**
   * The card in the station's reader while `fn` runs. The station command starts together with the
   * card emulator (it waits for the card like an officer's station does): two process start-ups
   * overlap instead of adding up.
   */
  async #withCardIn<T>(namespace: string, pcscd: PrivatePcscd, fn: () => Promise<T>): Promise<T> {
    const emulator = await this.#startEmulator(namespace, pcscd);
    try {
      const [inserted, result] = await Promise.allSettled([this.#waitInserted(emulator, pcscd), fn()]);
      if (inserted.status === "rejected") throw inserted.reason;
      if (result.status === "rejected") throw result.reason;
      return result.value;
    } finally {
      await this.#removeCard(emulator);
    }
  }

  /** The agent of an HSM, started once (it then waits for the card, as on a freshly racked HSM). */
  #agentFor(slot: HsmSlot): Promise<NamespaceProcess> {
    let started = this.#agentStarts.get(slot.index);
    if (!started) {
      started = (async () => {
        this.#checkAbort();
        const agent = this.#spawn(
          slot.namespace,
          [
            "agent",
            "run",
            "--state-dir",
            slot.stateDir,
            "--net",
            this.#net,
            ...(this.#net === "networkd"
              ? [
                  "--network-dir",
                  slot.networkDir,
                  "--networkd-reload",
                  `sh '${join(this.workDir, "networkd-restart.sh")}' '${slot.networkDir}' '${slot.networkdPid}'`,
                ]
              : []),
            "--iface",
            "eth0",
            "--reader",
            slot.pcscd!.readerName,
            "--once",
            "--json",
            "--pin-stdin",
            "--timeout",
            String(AGENT_CARD_TIMEOUT_S),
          ],
          { ...slot.pcscd!.env },
          `${this.#pin}\n`,
        );
        slot.agent = agent;
        await this.#record(agent, `agent ${slot.namespace}`);
        return agent;
      })();
      this.#agentStarts.set(slot.index, started);
    }
    return started;
  }

  async #saveLog(name: string, text: string): Promise<void> {
    const dir = join(this.workDir, "logs");
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, name), text);
  }

  async #startService(slot: HsmSlot, result: OnboardingResult): Promise<void> {
    const addresses = (result.addresses ?? []).map((a) => a.split("/")[0]!);
    const logPath = join(this.workDir, "services", `${slot.serial}.log`);
    await mkdir(dirname(logPath), { recursive: true });
    const log = await open(logPath, "a");
    let service: NamespaceProcess;
    try {
      service = new NamespaceProcess(
        slot.namespace,
        [
          process.execPath,
          this.#entry,
          "sim",
          "serve",
          "--serial",
          slot.serial,
          "--hostname",
          slot.hostname,
          "--port",
          String(NTLS_PORT),
          ...addresses.flatMap((a) => ["--listen", a]),
        ],
        { output: log.fd, detached: this.options.keep === true },
      );
    } finally {
      await log.close();
    }
    this.#services.push(service);
    await this.#record(service, `tcp service ${slot.namespace}`);
    await waitForFile(logPath, /"ev":"listening"/, service, BOUND.service, this.#signal);
  }

  async #probe(targets: readonly ProbeTarget[]): Promise<ProbeResult[]> {
    if (targets.length === 0) return [];
    const proc = new NamespaceProcess(this.lan, [
      process.execPath,
      "-e",
      PROBE_SCRIPT,
      JSON.stringify({ targets, timeoutMs: BOUND.probeConnect }),
    ]);
    this.#transient.add(proc);
    await this.#record(proc, `probe ${this.lan}`);
    try {
      const code = await proc.exitCode(BOUND.probeProcess, this.#signal);
      const results = parseJson<ProbeResult[] | { error: string }>(
        proc.stdout,
        `the LAN probe (exit ${code})`,
      );
      if (!Array.isArray(results)) throw new RackError(`the LAN probe failed: ${results.error}`);
      return results;
    } finally {
      await proc.stop();
      this.#transient.delete(proc);
      await this.#unrecord(proc);
    }
  }

  // ---- the end -----------------------------------------------------------------------------------

  /**
   * All pcscd instances at once: SIGTERM to each (by the PID this run started), a bounded wait until
   * every one has exited, then stop() for the bookkeeping (and SIGKILL for any that did not exit).
   * Waiting here first also means stop() finds them gone and leaves no 3-second timer behind that
   * would keep this process alive after the run.
   */
  /** The networkd processes the agents started (by the PID each one recorded). */
  async #stopNetworkds(): Promise<void> {
    if (this.#net !== "networkd") return;
    for (const slot of this.#slots) {
      const pid = Number(await readFile(slot.networkdPid, "utf8").catch(() => ""));
      if (!(pid > 0)) continue;
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        continue; // already gone
      }
      for (let turn = 0; turn < 50; turn++) {
        try {
          process.kill(pid, 0);
        } catch {
          break;
        }
        await sleep(100);
      }
    }
  }

  async #stopPcscds(): Promise<void> {
    const running = this.#pcscds.filter((p) => p.pid !== undefined);
    for (const pcscd of running) {
      try {
        process.kill(pcscd.pid!, "SIGTERM");
      } catch {
        // already gone
      }
    }
    const deadline = Date.now() + 3000;
    for (let turn = 0; turn < 200 && Date.now() < deadline; turn++) {
      if (running.every((p) => p.pid === undefined)) break;
      await sleep(15);
    }
    const errors: string[] = [];
    for (const pcscd of this.#pcscds.reverse()) {
      await pcscd.stop().catch((error: Error) => errors.push(error.message));
    }
    this.#pcscds.length = 0;
    if (errors.length > 0) throw new Error(errors.join("; "));
  }

  /** Stops and removes everything (or, with `keep`, leaves namespaces and services up and recorded). */
  async cleanup(keep: boolean, report: RackReport | undefined): Promise<void> {
    const errors: string[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (error) {
        errors.push(`${what}: ${(error as Error).message}`);
      }
    };
    // Agents and services still starting must be known before they are stopped.
    await Promise.allSettled([...this.#agentStarts.values(), ...this.#serviceStarts]);
    await Promise.all([...this.#transient].map((proc) => attempt(`stop ${proc.pid}`, () => proc.stop())));
    this.#transient.clear();
    await attempt("stop pcscd", () => this.#stopPcscds());
    await attempt("stop systemd-networkd", () => this.#stopNetworkds());
    if (keep && report) {
      await this.state.update((r) => ({
        ...r,
        kept: true,
        processes: this.#services
          .filter((s) => s.running && s.pid !== undefined)
          .map((s) => ({
            pid: s.pid!,
            role: `tcp service ${s.namespace}`,
            ...(r.processes.find((p) => p.pid === s.pid) ?? {}),
          })),
        summary: {
          lan: report.lan,
          hsms: report.hsms.map((h) => ({
            serial: h.serial,
            hostname: h.hostname,
            namespace: h.namespace,
            addresses: h.addresses,
          })),
        },
      }));
      // The services outlive this process: nothing here may keep it waiting for them.
      for (const s of this.#services) s.child.unref();
      return;
    }
    await Promise.all(this.#services.map((s) => attempt(`stop service ${s.pid}`, () => s.stop())));
    await attempt("delete the namespaces", async () => {
      const existing = new Set(await listNamespaces());
      for (const ns of [...this.#namespaces].reverse()) {
        if (existing.has(ns)) await attempt(`delete ${ns}`, () => ip(["netns", "del", ns]));
      }
    });
    await attempt("remove the work directory", () => rm(this.workDir, { recursive: true, force: true }));
    if (errors.length === 0) await this.state.remove();
    else {
      await this.state.update((r) => ({ ...r, kept: true })).catch(() => undefined);
      throw new RackError(
        `cleanup incomplete (${errors.join("; ")}); run hsm-onboard sim rack --cleanup (state in ${this.state.path})`,
      );
    }
  }
}

// ---- helpers -----------------------------------------------------------------------------------

/** The planned addresses of `serial`, `address/prefix`. */
function addressesOf(plan: NetworkPlan, serial: string): string[] {
  const hsm = plan.hsms.find((h) => h.serial === serial)!;
  const out: string[] = [];
  for (const itf of hsm.interfaces) {
    const subnet = plan.subnets.find((s) => s.name === itf.subnet);
    if (itf.ipv4 && subnet?.cidr) out.push(`${itf.ipv4}/${subnet.cidr.split("/")[1]}`);
    if (itf.ipv6 && subnet?.ipv6Cidr) out.push(`${itf.ipv6}/${subnet.ipv6Cidr.split("/")[1]}`);
  }
  return out;
}

async function withCardFile<T>(
  path: string,
  fn: (element: PivElement) => Promise<T>,
  channel?: SecureChannelPolicy,
): Promise<T> {
  const opened = await openInProcessCard(VirtualPivCard.fromFile(path), {
    readerName: "Station (in-process)",
    ...(channel ? { element: { channel } } : {}),
  });
  try {
    return await fn(opened.element);
  } finally {
    await opened.dispose();
  }
}

/** Free bytes on the card, and what its receipt objects take (in-process; only while no emulator runs). */
async function cardRoom(path: string): Promise<CardRoom> {
  return withCardFile(path, async (element) => {
    const items = await element.listItems();
    const { freeBytes } = await element.capacity();
    return {
      freeBytes,
      receiptBytes: items
        .filter((i) => parseItemName(i.name)?.kind === "receipt")
        .reduce((s, i) => s + i.size, 0),
    };
  });
}

function agentOutcome(
  agent: NamespaceProcess,
  code: number | null,
): { result?: OnboardingResult; exitCode: number; error?: string } {
  let result: OnboardingResult | undefined;
  try {
    result = JSON.parse(agent.stdout) as OnboardingResult;
  } catch {
    result = undefined;
  }
  const exitCode = code ?? ExitCode.internal;
  if (result?.ok && exitCode === 0) return { result, exitCode };
  return {
    ...(result ? { result } : {}),
    exitCode: result?.exitCode ?? exitCode,
    error: result?.error?.message ?? tail(agent.stderr),
  };
}

async function waitForFile(
  path: string,
  pattern: RegExp,
  proc: NamespaceProcess,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let turn = 0; turn < Math.ceil(timeoutMs / 20) + 2; turn++) {
    const text = await readFile(path, "utf8").catch(() => "");
    if (pattern.test(text)) return;
    if (signal?.aborted) throw new RackError("interrupted", ExitCode.interrupted);
    if (!proc.running) throw new RackError(`${path}: the process ended first: ${tail(text)}`);
    if (Date.now() >= deadline) break;
    await sleep(20);
  }
  throw new RackError(`timed out after ${timeoutMs} ms waiting for ${pattern} in ${path}`);
}

function parseJson<T>(text: string, what: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new RackError(`${what} did not print JSON: ${tail(text)}`);
  }
}

function tail(text: string, max = 1200): string {
  const t = text.trim();
  return t.length > max ? `…${t.slice(-max)}` : t || "(no output)";
}

// ---- sim rack --cleanup ------------------------------------------------------------------------

export interface CleanupReport {
  /** Runs whose resources were removed. */
  readonly removed: readonly { runId: string; namespaces: string[]; processes: number; workDir: string }[];
  /** Runs left alone because their `sim rack` process is still running. */
  readonly active: readonly { runId: string; pid: number }[];
  readonly problems: readonly string[];
}

/**
 * Removes what kept (or crashed) runs left, as recorded in their state files: processes (only while
 * they are the very processes recorded), namespaces, work directories, then the state file.
 */
export async function cleanupKeptRacks(stateRoot = DEFAULT_STATE_ROOT): Promise<CleanupReport> {
  if (process.getuid?.() !== 0) throw new UsageError("sim rack --cleanup needs root (network namespaces)");
  let files: string[];
  try {
    files = (await readdir(stateRoot)).filter((f) => /^hob-\d+-[0-9a-f]+\.json$/.test(f));
  } catch {
    files = [];
  }
  const removed: { runId: string; namespaces: string[]; processes: number; workDir: string }[] = [];
  const active: { runId: string; pid: number }[] = [];
  const problems: string[] = [];
  const existing = new Set(await listNamespaces());
  for (const file of files.sort()) {
    const path = join(stateRoot, file);
    let record: RackRecord;
    try {
      record = JSON.parse(await readFile(path, "utf8")) as RackRecord;
      if (record.format !== STATE_FORMAT) throw new Error("not a sim rack state file");
    } catch (error) {
      problems.push(`${path}: ${(error as Error).message}`);
      continue;
    }
    if (!record.kept && (await isSameProcess(record.owner.pid, record.owner.startTime))) {
      active.push({ runId: record.runId, pid: record.owner.pid });
      continue;
    }
    let stopped = 0;
    for (const p of record.processes) {
      if (await stopRecordedProcess(p.pid, p.startTime)) stopped++;
    }
    const namespaces: string[] = [];
    const failures: string[] = [];
    for (const ns of [...record.namespaces].reverse()) {
      if (!ns.startsWith(`${record.runId}-`)) {
        failures.push(`${ns} is not named for run ${record.runId}: left alone`);
        continue;
      }
      if (!existing.has(ns)) continue;
      try {
        await deleteNamespace(ns);
        namespaces.push(ns);
      } catch (error) {
        failures.push(`${ns}: ${(error as Error).message}`);
      }
    }
    if (/\/hsm-onboard-sim-[^/]+$/.test(record.workDir)) {
      await rm(record.workDir, { recursive: true, force: true }).catch((error: Error) =>
        failures.push(`${record.workDir}: ${error.message}`),
      );
    }
    if (failures.length === 0) await rm(path, { force: true });
    problems.push(...failures.map((f) => `${record.runId}: ${f}`));
    removed.push({ runId: record.runId, namespaces, processes: stopped, workDir: record.workDir });
  }
  return { removed, active, problems };
}

/** `sim rack` command lines a human can paste to check a kept rack independently. */
export function reachabilityHint(lan: string, address: string): string {
  return inNamespace(lan, [
    "node",
    "-e",
    `require("net").connect(${NTLS_PORT},"${address}").pipe(process.stdout)`,
  ])
    .map((a) => (/^[\w./:-]+$/.test(a) ? a : `'${a}'`))
    .join(" ");
}
