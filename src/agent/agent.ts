/**
 * The agent around the flow: opens a state directory (its lock, trust anchor, device identity, audit
 * log, network applier), reconciles at start, and runs onboard() for each card: `serve` is the
 * wait/onboard/remove loop over a CardSource (card-source.ts: PC/SC cards, or an opener the caller
 * injects) that `agent run` drives; tests and the demo may also hand in one open card
 * (runAgentOnce({ element })).
 *
 * At start:
 * - `factory` becomes `waiting-for-card`;
 * - an interrupted `applying` is ROLLED BACK to the snapshot persisted with it (state-store.ts says
 *   why), recorded as the last error and in the audit log;
 * - a configured HSM re-applies its configuration (idempotent: nothing changes when it is in place;
 *   after a reboot it brings the network back), with the same probe, verification and rollback.
 * Neither depends on the audit log (issue 10 finding 3): a torn last line is recovered when the log
 * opens (audit-log.ts); any other damage leaves the log untouched, the network is still reconciled
 * and re-applied, and then start() refuses to go on (IntegrityError, exit 15): no card is onboarded
 * on top of a log that cannot say what happened before.
 */
import { setTimeout as sleep } from "node:timers/promises";
import {
  ExitCode,
  IntegrityError,
  isOnboardError,
  NetworkApplyError,
  PcscError,
  UsageError,
} from "../errors.js";
import { primeTrustAnchor } from "../pki/path-validation.js";
import type { SecureElement } from "../secure-element/secure-element.js";
import { AuditLog } from "./audit-log.js";
import type { CardSource } from "./card-source.js";
import { type DeviceIdentity, loadDeviceIdentity } from "./device-identity.js";
import { DEFAULT_NETWORKD_DIR, readTrustAnchor } from "./factory.js";
import { type AgentFaults, faultsFromEnv } from "./faults.js";
import { HostSettings, type HostSettingsOptions, withHostSettings } from "./host-settings.js";
import { DryRunBackend } from "./net/dry-run.js";
import { Iproute2Backend } from "./net/iproute2.js";
import {
  applyWithRollback,
  type InterfaceMap,
  messageOf,
  type NetBackend,
  plannedAddresses,
} from "./net/net-backend.js";
import { NetworkdBackend } from "./net/networkd.js";
import { type AgentTrust, type OnboardingResult, onboard, type PinSource } from "./onboarding.js";
import { backoffMs } from "./service.js";
import { type AgentStage, AgentStateStore } from "./state-store.js";
import { warmUpAtStart } from "./warm-up.js";

export type NetBackendChoice = "dry-run" | "iproute2" | "networkd";

/** The appliers a state can name (factory-init --net). */
export const NET_BACKEND_CHOICES: readonly NetBackendChoice[] = ["iproute2", "networkd", "dry-run"];

export interface OpenAgentOptions {
  readonly stateDir: string;
  /**
   * A backend, or which one to make. Default: the applier chosen at the factory (state `applier`);
   * a state without one refuses to start (issue 12: never a silent dry run).
   */
  readonly net?: NetBackend | NetBackendChoice;
  /**
   * Also apply the hostname (and, with iproute2, DNS and NTP files) from the configuration, under
   * the same contract (host-settings.ts). Off by default.
   */
  readonly host?: HostSettingsOptions;
  /** For `networkd`: the directory of its files (default: the state's, else /etc/systemd/network). */
  readonly networkDir?: string;
  /** For `networkd`: how networkd is told to apply the files (default: networkctl reload + reconfigure). */
  readonly networkdReload?: (devices: readonly string[]) => Promise<void>;
  /** For `iproute2` and `networkd`: run `ip` in this network namespace (`ip -n NS`). */
  readonly netns?: string;
  /** Plan interface name → device on this host. */
  readonly interfaces?: InterfaceMap;
  readonly clock?: () => Date;
  /** One human line per step. */
  readonly log?: (line: string) => void;
  /** Crash points for the fault tests (faults.ts); default: HSM_ONBOARD_CRASH_AT, else none. */
  readonly faults?: AgentFaults;
  /**
   * Run the onboarding path once over a built-in configuration at start (warm-up.ts), so that the
   * first card does not pay first-use costs. Default true; the benchmark turns it off to measure a
   * truly cold onboarding.
   */
  readonly warmUp?: boolean;
}

export interface StartReport {
  /** The stage the agent waits in. */
  readonly stage: AgentStage;
  /** An interrupted apply was found and rolled back (or could not be). */
  readonly reconciled?: "rolled-back" | "rollback-failed";
  /** The configured network was re-applied (true) or re-applying failed (false). */
  readonly reapplied?: boolean;
  readonly error?: string;
}

export class Agent {
  readonly store: AgentStateStore;
  readonly trust: AgentTrust;
  readonly audit: AuditLog;
  readonly net: NetBackend;
  readonly #interfaces: InterfaceMap;
  readonly #clock: () => Date;
  readonly #log: (line: string) => void;
  readonly #unlock: () => Promise<void>;
  readonly #faults: AgentFaults;
  #closed = false;

  private constructor(parts: {
    store: AgentStateStore;
    trust: AgentTrust;
    audit: AuditLog;
    net: NetBackend;
    interfaces: InterfaceMap;
    clock: () => Date;
    log: (line: string) => void;
    unlock: () => Promise<void>;
    faults: AgentFaults;
  }) {
    this.store = parts.store;
    this.trust = parts.trust;
    this.audit = parts.audit;
    this.net = parts.net;
    this.#interfaces = parts.interfaces;
    this.#clock = parts.clock;
    this.#log = parts.log;
    this.#unlock = parts.unlock;
    this.#faults = parts.faults;
  }

  /** Opens the state directory for this process (its lock is held until close()). */
  static async open(options: OpenAgentOptions): Promise<Agent> {
    const clock = options.clock ?? (() => new Date());
    const faults = options.faults ?? faultsFromEnv();
    const store = await AgentStateStore.open(options.stateDir, { clock });
    const unlock = await store.lock();
    let device: DeviceIdentity | undefined;
    try {
      const root = await readTrustAnchor(options.stateDir);
      // First-use costs (compiling the validator and the decoders, OpenSSL's first use of each curve,
      // the root parsed and its signature checked) are paid here, before any card: docs/PERFORMANCE.md.
      const log = options.log ?? (() => {});
      if (options.warmUp === false) {
        primeTrustAnchor(root);
      } else {
        // The real onboard() over a built-in world, on an in-memory card, in a private scratch state,
        // then one SCP11b round trip (warm-up.ts): the agent's real state, audit log, device key and
        // applier are not given to it. A failure is only logged.
        await warmUpAtStart(root, log);
      }
      device = await loadDeviceIdentity(store.state.device);
      const audit = await AuditLog.open(store.path("audit"), {
        clock,
        recoverTornTail: true,
        ...(store.state.auditHead ? { expectedHead: store.state.auditHead } : {}),
      }).catch((error: unknown) => {
        if (!(error instanceof IntegrityError)) throw error;
        return AuditLog.damaged(store.path("audit"), error.message);
      });
      const recovered = audit.recovered;
      if (recovered) {
        await store.update((s) => ({
          ...s,
          auditHead: { seq: recovered.record.seq, hash: recovered.record.hash },
        }));
        log(
          `the audit log ended in a torn line (${recovered.bytes} bytes): kept aside in ${recovered.keptAs}, recorded as audit record ${recovered.record.seq}`,
        );
      }
      if (audit.damage) log(`${audit.damage}; the network is reconciled, no card is onboarded`);
      const choice = options.net ?? store.state.applier;
      if (choice === undefined) {
        throw new UsageError(
          `no network applier chosen for ${options.stateDir}: run factory-init with --net iproute2|networkd|dry-run, or agent run with --net`,
        );
      }
      const backend =
        typeof choice === "object"
          ? choice
          : choice === "iproute2"
            ? new Iproute2Backend({ ...(options.netns ? { netns: options.netns } : {}), faults })
            : choice === "dry-run"
              ? await DryRunBackend.open({ file: store.path("dryRun"), clock })
              : new NetworkdBackend({
                  dir: options.networkDir ?? store.state.networkDir ?? DEFAULT_NETWORKD_DIR,
                  ...(options.netns ? { netns: options.netns } : {}),
                  ...(options.networkdReload ? { reload: options.networkdReload } : {}),
                  faults,
                });
      const net = options.host ? withHostSettings(backend, new HostSettings(options.host)) : backend;
      return new Agent({
        store,
        trust: { root, device },
        audit,
        net,
        interfaces: options.interfaces ?? {},
        clock,
        log,
        unlock,
        faults,
      });
    } catch (error) {
      await device?.close();
      await unlock();
      throw error;
    }
  }

  /** Reconciles an interrupted apply and re-applies the configured network (see the file comment). */
  async start(): Promise<StartReport> {
    const state = this.store.state;
    let reconciled: StartReport["reconciled"];
    let reapplied: boolean | undefined;
    let error: string | undefined;
    if (state.applying) {
      const applying = state.applying;
      if (applying.backend !== this.net.name) {
        throw new UsageError(
          `an apply made with the ${applying.backend} applier was interrupted; run the agent with --net ${applying.backend} to roll it back`,
        );
      }
      try {
        await this.net.rollback(applying.snapshot);
        reconciled = "rolled-back";
        this.#log("an interrupted apply was found: the network was rolled back to its state before it");
        await this.#record("interrupted-apply-rolled-back", {
          sequence: applying.sequence,
          configurationId: applying.configurationId,
        });
        await this.store.update((s) => {
          const { applying: _gone, ...rest } = s;
          return {
            ...rest,
            lastError: {
              code: "ERR_INTERRUPTED_APPLY",
              exitCode: new NetworkApplyError("").exitCode,
              message: `applying configuration sequence ${applying.sequence} was interrupted; the network was rolled back`,
              at: this.#clock().toISOString(),
              stage: "applying",
            },
          };
        });
      } catch (rollbackError) {
        reconciled = "rollback-failed";
        error = messageOf(rollbackError);
        this.#log(`an interrupted apply could not be rolled back: ${error}`);
        await this.#record("interrupted-apply-rollback-failed", { message: error });
        // `applying` and its snapshot stay for the next start; a damaged log still refuses here.
        this.#refuseOnDamagedAudit();
        return { stage: "applying", reconciled, error };
      }
    }
    const configured = this.store.state.configured;
    if (configured) {
      try {
        const snapshot = await this.net.snapshot(configured.network);
        await applyWithRollback(this.net, configured.network, snapshot);
        reapplied = true;
        this.#log(`configured network re-applied: ${plannedAddresses(configured.network).join(" ")}`);
        await this.#record("reapplied", {
          sequence: configured.sequence,
          addresses: plannedAddresses(configured.network),
        });
      } catch (reapplyError) {
        reapplied = false;
        error = messageOf(reapplyError);
        this.#log(`re-applying the configured network failed: ${error}`);
        await this.#record("reapply-failed", { sequence: configured.sequence, message: error });
      }
    }
    const stage: AgentStage = configured ? "configured" : "waiting-for-card";
    if (this.store.state.stage !== stage) await this.store.setStage(stage);
    this.#refuseOnDamagedAudit();
    return {
      stage,
      ...(reconciled ? { reconciled } : {}),
      ...(reapplied !== undefined ? { reapplied } : {}),
      ...(error ? { error } : {}),
    };
  }

  /**
   * Runs the onboarding flow for one open card. The caller closes the card. `signal` (SIGTERM): a
   * card not yet past the PIN is let go, one past it is finished (onboarding.ts).
   */
  onboard(element: SecureElement, pinSource: PinSource, signal?: AbortSignal): Promise<OnboardingResult> {
    if (this.#closed) throw new UsageError("the agent is closed");
    return onboard({
      element,
      state: this.store,
      trust: this.trust,
      pinSource,
      net: this.net,
      clock: this.#clock,
      audit: this.audit,
      log: this.#log,
      interfaces: this.#interfaces,
      faults: this.#faults,
      ...(signal ? { signal } : {}),
    });
  }

  /**
   * The agent's loop (SPEC.md §6): wait for a card (one already inserted counts), onboard it, release
   * it, and with `once` return; otherwise wait for the card to be removed and for the next one, until
   * `signal`. A card that cannot be opened is reported and must be removed (with `once`, its error is
   * thrown); a wait that runs out (NoCardError, 10) is thrown. The PC/SC service going away is thrown
   * with `once`; without it, it is waited out (bounded backoff, issue 12) and the wait begins again.
   * A card in progress when `signal` fires is let go if its PIN was not yet given (nothing changed,
   * onboarding.ts), else finished (or rolled back by its own failure path).
   * Returns the last result (none when stopped before a card came). Never closes the agent.
   */
  async serve(options: ServeOptions): Promise<OnboardingResult | undefined> {
    const { source, signal } = options;
    const timeoutMs = options.timeoutMs ?? Number.POSITIVE_INFINITY;
    const status = options.onStatus ?? (() => {});
    let last: OnboardingResult | undefined;
    // Without `once`, the PC/SC service going away is waited out (issue 12): a backoff bounded by
    // its cap (a service lives as long as the HSM, so the number of waits is not), then the wait for
    // a card begins again. SIGTERM (`signal`) ends any wait at once.
    let serviceGone = 0;
    const serviceWait = async (error: PcscError): Promise<void> => {
      const ms = backoffMs(serviceGone++, options.backoff?.maxMs, options.backoff?.firstMs);
      this.#log(`PC/SC service gone (${error.message}); waiting ${Math.round(ms / 100) / 10} s for it`);
      status(`waiting for the PC/SC service (pcscd)`);
      await sleep(ms, undefined, signal ? { signal } : {}).catch(() => undefined);
    };
    try {
      while (!signal?.aborted) {
        this.#log(`HSM ${this.store.state.serial} waiting for a card`);
        status(this.store.state.configured ? "configured; waiting for a card" : "waiting for a card");
        let element: SecureElement;
        try {
          element = await source.nextCard({ timeoutMs, ...(signal ? { signal } : {}) });
        } catch (error) {
          if (signal?.aborted) break;
          if (!options.once && pcscServiceGone(error)) {
            await source.release().catch(() => undefined);
            await serviceWait(error);
            continue;
          }
          if (options.once || !isOnboardError(error) || error.exitCode === ExitCode.noCard) throw error;
          this.#log(`cannot use this card: ${error.message}; remove it`);
          await source.release().catch(() => undefined);
          await this.#waitForRemoval(source, options, serviceWait);
          continue;
        }
        serviceGone = 0;
        status("card: onboarding");
        try {
          last = await this.onboard(element, options.pinSource, signal);
        } finally {
          await source.release().catch(() => undefined);
        }
        options.onResult?.(last);
        status(
          last.ok
            ? `${last.dryRun ? "dry run — nothing applied" : "configured"}: ${last.hostname} sequence ${last.sequence}; remove the card`
            : last.stopped
              ? "stopped before the PIN: nothing changed"
              : last.stage === "configured" && last.hostname !== undefined
                ? `configured: ${last.hostname} sequence ${last.sequence}; no receipt (exit ${last.exitCode}); remove the card`
                : `card refused (exit ${last.exitCode}); remove the card`,
        );
        if (options.once) break;
        this.#log("remove the card");
        await this.#waitForRemoval(source, options, serviceWait);
      }
    } finally {
      await source.release().catch(() => undefined);
    }
    return last;
  }

  /** Waits for the card to go; the PC/SC service going away meanwhile is waited out (not with once). */
  async #waitForRemoval(
    source: CardSource,
    options: ServeOptions,
    serviceWait: (error: PcscError) => Promise<void>,
  ): Promise<void> {
    try {
      await source.waitForRemoval(options.signal ? { signal: options.signal } : {});
    } catch (error) {
      if (options.once || !pcscServiceGone(error)) throw error;
      await serviceWait(error);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.trust.device.close();
    } finally {
      await this.#unlock();
    }
  }

  /** Every way out of start() ends here: no card is onboarded on top of a damaged audit log. */
  #refuseOnDamagedAudit(): void {
    if (this.audit.damage) {
      throw new IntegrityError(`${this.audit.damage}; network reconciled, onboarding refused`);
    }
  }

  async #record(event: string, data: Record<string, unknown>): Promise<void> {
    if (this.audit.damage) return; // start() refuses once the network is reconciled
    const record = await this.audit.append(event, { serial: this.store.state.serial, ...data });
    await this.store.update((s) => ({ ...s, auditHead: { seq: record.seq, hash: record.hash } }));
  }
}

export interface ServeOptions {
  /** Where the cards come from (card-source.ts: PC/SC, or an injected opener). */
  readonly source: CardSource;
  /** Where each card's PIN comes from. */
  readonly pinSource: PinSource;
  /** Process one card and return its result (`agent run --once`). */
  readonly once?: boolean;
  /** Bound on each wait for a card (default: none); NoCardError (10) when it runs out. */
  readonly timeoutMs?: number;
  /** Stops the loop (SIGINT/SIGTERM in `agent run`): between cards, or while waiting for one. */
  readonly signal?: AbortSignal;
  /** Each result, as soon as it is known (the CLI prints it). */
  readonly onResult?: (result: OnboardingResult) => void;
  /** One short status per phase (waiting / card / configured): sd_notify STATUS= in `agent run`. */
  readonly onStatus?: (status: string) => void;
  /** Backoff while the PC/SC service is gone (default 1 s doubling to 30 s). */
  readonly backoff?: { readonly firstMs?: number; readonly maxMs?: number };
}

/**
 * The PC/SC service itself is gone (pcscd stopped or restarting), not a card problem: "no service",
 * or any refusal to give the agent a context at all — pcscd coming back can answer
 * SCardEstablishContext with another code for a moment (seen: SCARD_E_NO_ACCESS while it restarts).
 */
export function pcscServiceGone(error: unknown): error is PcscError {
  return (
    error instanceof PcscError &&
    (error.code === "ERR_PCSC_NO_SERVICE" || error.operation === "SCardEstablishContext")
  );
}

export interface RunAgentOnceOptions extends OpenAgentOptions {
  /** The card, already open (e.g. a PivElement over an in-process virtual card); closed afterwards. */
  readonly element: SecureElement;
  readonly pinSource: PinSource;
  /** Leave the card open (default: close it). */
  readonly keepElementOpen?: boolean;
}

/** Opens the agent, reconciles, onboards the given card once, and closes everything. */
export async function runAgentOnce(options: RunAgentOnceOptions): Promise<OnboardingResult> {
  const agent = await Agent.open(options);
  try {
    await agent.start();
    return await agent.onboard(options.element, options.pinSource);
  } finally {
    await agent.close();
    if (!options.keepElementOpen) await options.element.close();
  }
}
