/**
 * The agent's onboarding flow (SPEC.md §6, claim steps 352–360 and the receipt), in the manner of an
 * SZTP bootstrap (STYLE.md): `onboard` runs six named steps in order over one typed context
 * (`Onboarding`), each step taking what the earlier ones established and returning what it
 * establishes. Each stage is persisted before the next begins; any failure goes to `failed`, which
 * returns the agent to `waiting-for-card` with a typed error (its exit code is SPEC.md §7's), and
 * the network is either untouched or restored to its snapshot.
 *
 *   waiting-for-card → card-authenticated → user-authenticated → config-verified → applying → configured
 *
 * What each step trusts, and why:
 *  1. authenticate card (authenticateCardView, src/pki/card-authentication.ts, with the agent's policy):
 *     the 9E certificate chains to the installed manufacturer root through the token CA the
 *     card carries (`certificates` item), is not on the token CA's CRL (the card's `crl` item, or the
 *     newest one stored; a CRL number below the highest seen is a replay, 17), and the card answers a
 *     fresh challenge with the 9E key (a copied certificate fails). The owner (subject O) and token
 *     CA must be this HSM's, if it has one (16) — checked before the PIN, so a wrong card costs no try.
 * 1b. recognise the applied configuration (issue 12): a card carrying exactly the configuration this
 *     HSM applied (id and sequence, verified) ends here with exit 0 — no PIN, nothing changed; another
 *     card of the same card set (issue 13) ends here with 16, naming the card that holds this serial.
 *  2. authenticate user: the card PIN (13 with the tries left; 14 when blocked).
 *  3. verify configuration: the manifest's COSE signatures, each signer's chain validated for configuration
 *     signing, same owner and token CA as the card; this card's own 9C among the valid signers;
 *     enough valid signers for the quorum from this HSM's state, never from the configuration (19);
 *     a configured HSM takes only a strictly higher sequence (17); the validity window (18).
 *  4. select own entry: only the shard holding this serial is read (16 when none does; on a card of
 *     a set, the message names the card whose signed range holds the serial), its SHA-256
 *     checked against the signed manifest (15), and this HSM's entry decoded.
 *  5. apply network: a snapshot is persisted with stage `applying` before the first change; apply and
 *     verify, rolled back to the snapshot on any failure (20, 21 for an address in use).
 *  6. issue receipt: signed by the device key, appended to a receipt object on the card (a full card is
 *     logged, not fatal), and an audit record.
 */
import { createHash } from "node:crypto";
import { leafPublicKey } from "../config/cose.js";
import { checkManifestValidity, findShardFor, type Manifest, verifyManifest } from "../config/manifest.js";
import { appendReceipt, type Receipt, type ReceiptChannel, signReceipt } from "../config/receipt.js";
import { decodeShardEntry, type HsmConfig, networkStateDigest } from "../config/shard.js";
import type { Signer } from "../crypto/signer.js";
import {
  ApduError,
  CardFullError,
  CardNotTrustedError,
  ExitCode,
  IntegrityError,
  InternalError,
  MalformedError,
  NotForThisHsmError,
  OnboardError,
  PinBlockedError,
  QuorumError,
  ReplayError,
  ScpIntegrityError,
} from "../errors.js";
import { spkiSha256 } from "../pki/ca-facts.js";
import {
  type AuthenticatedCard,
  authenticateCardView,
  type CardOwnerFacts,
} from "../pki/card-authentication.js";
import { certificateParts } from "../pki/der.js";
import { type CertificateView, readCrl, validateChainView } from "../pki/path-validation.js";
import { VALIDATION_REQUIREMENTS } from "../pki/profiles.js";
import { shardItemName } from "../secure-element/card-layout.js";
import {
  channelLabel,
  MAX_RECEIPTS,
  type SecureElement,
  type SecureElementIdentity,
  YUBIKEY_STORAGE,
} from "../secure-element/secure-element.js";
import { hex } from "../util/bytes.js";
import type { AuditLog } from "./audit-log.js";
import type { DeviceIdentity } from "./device-identity.js";
import type { AgentFaults } from "./faults.js";
import {
  applyWithRollback,
  type HostNetworkConfig,
  hostNetworkConfig,
  type InterfaceMap,
  type NetBackend,
  type NetSnapshot,
  plannedAddresses,
  RollbackFailedError,
} from "./net/net-backend.js";
import {
  type AgentStage,
  type AgentState,
  type AgentStateStore,
  type AppliedConfiguration,
  type CardSummary,
  crlIssuerKey,
} from "./state-store.js";

/** What the HSM was given at the factory and trusts. */
export interface AgentTrust {
  /** The manufacturer root (DER): the only trust anchor. */
  readonly root: Uint8Array;
  /** The HSM's device identity, which signs receipts. */
  readonly device: DeviceIdentity;
}

/** Where the card PIN comes from: the HSM console (echo off), standard input or a file descriptor. */
export interface PinSource {
  /**
   * `card` says which card and officer the PIN is for (asked only once the card is authenticated).
   * `signal` fires when the agent is stopped (SIGTERM) while it waits: the source gives up (a PIN
   * program is killed); the flow then ends before the PIN, nothing changed.
   */
  read(prompt: string, card?: PinRequest, signal?: AbortSignal): Promise<string>;
}

/** What a front panel is told when the PIN is asked for (issue 12): never a secret. */
export interface PinRequest {
  readonly hsmSerial: string;
  readonly owner?: string;
  readonly officer?: string;
  /** Subject of the card-authentication certificate. */
  readonly subject?: string;
  readonly cardSerial?: string;
  readonly triesLeft: number;
}

export interface OnboardOptions {
  /** The card, open and selected; the caller closes it. */
  readonly element: SecureElement;
  readonly state: AgentStateStore;
  readonly trust: AgentTrust;
  readonly pinSource: PinSource;
  readonly net: NetBackend;
  readonly clock: () => Date;
  readonly audit: AuditLog;
  /** One human line per step (the CLI prints them to stderr). Never given a secret. */
  readonly log: (line: string) => void;
  /** Plan interface name → device on this host (`--iface`). */
  readonly interfaces?: InterfaceMap;
  /** Crash points for the fault tests (faults.ts); none by default. */
  readonly faults?: AgentFaults;
  /**
   * The agent is stopping (SIGTERM): before the PIN, the card is let go — nothing was changed; once
   * the PIN is verified, the flow is finished (apply and verify, or roll back; the receipt).
   */
  readonly signal?: AbortSignal;
}

export interface ReceiptOutcome {
  readonly written: boolean;
  /** The card item it went into (`receipt-N`). */
  readonly item?: string;
  /** Why not, when not. */
  readonly reason?: string;
}

export interface OnboardingResult {
  readonly ok: boolean;
  /** SPEC.md §7 exit code: 0 configured, else the failure's. */
  readonly exitCode: number;
  /** Where the agent is now: `configured`, or `waiting-for-card` after a failure (`applying` if a rollback failed). */
  readonly stage: AgentStage;
  /** The stage that was being worked towards when it failed. */
  readonly failedAt?: AgentStage;
  readonly serial: string;
  readonly error?: { readonly code: string; readonly message: string };
  readonly card?: CardSummary & { readonly owner?: string };
  readonly owner?: string;
  readonly configurationId?: string;
  readonly sequence?: number;
  readonly hostname?: string;
  readonly addresses?: readonly string[];
  readonly receipt?: ReceiptOutcome;
  /** The applier was dry-run: the configuration was verified, nothing was applied (issue 12). */
  readonly dryRun?: boolean;
  /**
   * The card carries exactly the configuration this HSM applied (same id and sequence): recognised
   * after the card was authenticated and before the PIN; nothing changed, no receipt written.
   */
  readonly alreadyConfigured?: boolean;
  /**
   * The agent was stopped (SIGTERM) before the PIN: the card was authenticated, nothing else was done
   * (exit 0, `ok` false, the stage as before the card).
   */
  readonly stopped?: boolean;
  readonly durationMs: number;
}

/**
 * The typed context of one onboarding: the options, and what is known so far — all the failure path
 * needs (the stage worked towards, the card, whether the PIN was verified, the manifest, and a
 * network applied but not yet recorded).
 */
interface Onboarding {
  readonly options: OnboardOptions;
  readonly serial: string;
  /** performance.now() at the start, for durationMs. */
  readonly started: number;
  /** The stage being worked towards: where a failure is recorded. */
  target: AgentStage;
  card?: CardSummary & { owner?: string };
  pinVerified: boolean;
  manifest?: Manifest;
  /** Set once the network was changed and verified, until `configured` is on disk. */
  applied?: NetSnapshot;
}

/** Step 1's result: the authenticated card and the revocation data its chain was checked with. */
interface CardStep {
  readonly card: AuthenticatedCard<CertificateView>;
  readonly crls: readonly Uint8Array[];
  readonly crlFloor: string | undefined;
  readonly now: Date;
}

/** Step 3's result: the verified configuration. */
interface ConfigurationStep {
  readonly manifest: Manifest;
  readonly validSigners: number;
}

/** Step 4's result: this HSM's own entry and the host network it becomes. */
interface EntryStep {
  readonly config: HsmConfig;
  readonly network: HostNetworkConfig;
}

/** Step 5's result: what was applied and recorded as `configured`. */
interface ApplyStep {
  readonly digest: Uint8Array;
  readonly appliedAt: Date;
}

/** Runs the whole flow for the card in `options.element`. Never throws for a card or network problem. */
export async function onboard(options: OnboardOptions): Promise<OnboardingResult> {
  const run: Onboarding = {
    options,
    serial: options.state.state.serial,
    started: performance.now(),
    target: "card-authenticated",
    pinVerified: false,
  };
  try {
    const card = await authenticateCardStep(run);
    const again = await recogniseAppliedConfigurationStep(run, card);
    if (again) return again;
    if (!(await authenticateUserStep(run))) return await stoppedBeforePin(run);
    const configuration = await verifyConfigurationStep(run, card);
    const entry = await selectOwnEntryStep(run, configuration);
    const applied = await applyNetworkStep(run, card, configuration, entry);
    return await issueReceiptStep(run, configuration, entry, applied);
  } catch (caught) {
    return failed(run, caught);
  }
}

// ---- the steps ----------------------------------------------------------------------------------

/** 1. The card (354): chain of trust to the manufacturer root, revocation, live challenge, owner. */
async function authenticateCardStep(run: Onboarding): Promise<CardStep> {
  const { element, state, trust, clock, log, faults } = run.options;
  run.target = "card-authenticated";
  faults?.reached("card-inserted");
  // The identity is read once per session (the element keeps it): here for the CRL ratchet's key.
  const identity = await element.identity();
  const cardCrl = await element.readItem("crl");
  const now = clock();
  const leafIssuer = issuerOf(identity.cardAuthentication);
  const crlFloor = state.state.crlNumbers[leafIssuer];
  const crls = cardCrl ? [cardCrl] : await state.storedCrls();
  const card = await authenticateCardView(element, {
    trustAnchor: trust.root,
    crls,
    ...(crlFloor !== undefined ? { crlNumberFloor: BigInt(crlFloor) } : {}),
    clock: () => now,
    // Another owner's card, or the same owner name under another token CA: 16, before the PIN.
    checkOwner: (facts) => {
      run.card = { ...summarizeCard(facts, element), owner: facts.owner };
      checkOwner(state.state, facts.owner, facts.tokenCaSha256, spkiSha256(facts.tokenCa));
    },
  });
  const crlUpdate = await crlRatchet(state, leafIssuer, card.crlNumber, cardCrl);
  await state.setStage("card-authenticated", crlUpdate);
  log(`card authenticated: ${card.owner}${card.officer ? `, officer ${card.officer}` : ""}`);
  return { card, crls, crlFloor, now };
}

/**
 * 1b. The same card again (issue 12): a card whose verified configuration is exactly the one this HSM
 * applied (configuration id and sequence) is recognised before the PIN — exit 0, the stage back to
 * `configured`, an audit record, no receipt. Anything else (no configuration yet, another id or
 * sequence, a configuration that does not verify here) goes on to the PIN and the full flow, which
 * refuses an older sequence (17) as before.
 */
async function recogniseAppliedConfigurationStep(
  run: Onboarding,
  { card, crls, crlFloor, now }: CardStep,
): Promise<OnboardingResult | undefined> {
  const { element, state, trust, log } = run.options;
  const configured = state.state.configured;
  if (!configured) return undefined;
  const manifestBytes = await element.readItem("manifest");
  if (!manifestBytes) return undefined;
  let manifest: Manifest;
  try {
    ({ manifest } = await verifyConfiguration(manifestBytes, card.identity, {
      root: trust.root,
      crls,
      now,
      crlFloor,
      owner: card.owner,
      tokenCaSha256: card.tokenCaSha256,
    }));
  } catch {
    return undefined; // the full flow reports it, after the PIN
  }
  if (
    hex(manifest.configurationId) !== configured.configurationId ||
    manifest.sequence !== configured.sequence
  )
    return undefined;
  // Another card of the set this HSM applied (issue 13): not this HSM's card — say which one is,
  // from the manifest just verified.
  if (manifest.cardSet) findShardFor(manifest, run.serial);
  run.manifest = manifest;
  await state.setStage("configured");
  const dryRun = configured.backend === "dry-run";
  log(
    `already configured with configuration ${configured.configurationId.slice(0, 8)}, sequence ${configured.sequence}` +
      (dryRun ? " (dry run — nothing applied)" : "") +
      ": nothing to do, no PIN needed",
  );
  await appendAudit(run, "already-configured", {
    serial: run.serial,
    card: run.card,
    configurationId: configured.configurationId,
    sequence: configured.sequence,
    ...(dryRun ? { dryRun: true } : {}),
  });
  return {
    ok: true,
    exitCode: ExitCode.ok,
    stage: "configured",
    serial: run.serial,
    ...(run.card ? { card: run.card } : {}),
    owner: configured.owner,
    configurationId: configured.configurationId,
    sequence: configured.sequence,
    hostname: configured.network.hostname,
    addresses: plannedAddresses(configured.network),
    alreadyConfigured: true,
    ...(dryRun ? { dryRun: true } : {}),
    durationMs: performance.now() - run.started,
  };
}

/** 2. The user (356): the card PIN. False when the agent was stopped before a PIN was given. */
async function authenticateUserStep(run: Onboarding): Promise<boolean> {
  const { element, state, pinSource, log, signal } = run.options;
  run.target = "user-authenticated";
  if (signal?.aborted) return false;
  const triesLeft = await element.pinTriesLeft();
  if (triesLeft === 0) {
    throw new PinBlockedError("the card's PIN is blocked; unblock it with the PUK at the station");
  }
  const card = run.card;
  const request: PinRequest = {
    hsmSerial: run.serial,
    triesLeft,
    ...(card?.owner !== undefined ? { owner: card.owner } : {}),
    ...(card?.officer !== undefined ? { officer: card.officer } : {}),
    ...(card?.subject !== undefined ? { subject: card.subject } : {}),
    ...(card?.cardSerial !== undefined ? { cardSerial: card.cardSerial } : {}),
  };
  const pin = await readPinUnlessStopped(pinSource, request, signal);
  if (pin === undefined) return false;
  await element.verifyPin(pin);
  run.pinVerified = true;
  await state.setStage("user-authenticated");
  log("PIN verified");
  return true;
}

/** The PIN, or undefined when `signal` fires first (the source is told, and its outcome ignored). */
async function readPinUnlessStopped(
  pinSource: PinSource,
  request: PinRequest,
  signal: AbortSignal | undefined,
): Promise<string | undefined> {
  if (!signal) return pinSource.read("PIN", request);
  if (signal.aborted) return undefined;
  const reading = pinSource.read("PIN", request, signal);
  let onAbort = () => {};
  const stopped = new Promise<undefined>((resolve) => {
    onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([reading, stopped]);
  } catch (error) {
    // A PIN program killed by the same stop (KillMode=control-group) fails first: still a stop.
    if (signal.aborted) return undefined;
    throw error;
  } finally {
    signal.removeEventListener("abort", onAbort);
    reading.catch(() => undefined);
  }
}

/**
 * Stopped (SIGTERM) before the PIN: the card was authenticated and nothing else done. The stage goes
 * back to what it was before the card (configured, or waiting), an audit record says so; exit 0.
 */
async function stoppedBeforePin(run: Onboarding): Promise<OnboardingResult> {
  const { state, log } = run.options;
  const stage: AgentStage = state.state.configured ? "configured" : "waiting-for-card";
  await state.setStage(stage);
  log("stopping before the PIN: the card was not used, nothing changed");
  await appendAudit(run, "onboarding-stopped", {
    serial: run.serial,
    stage: "user-authenticated",
    ...(run.card ? { card: run.card } : {}),
  });
  return {
    ok: false,
    stopped: true,
    exitCode: ExitCode.ok,
    stage,
    serial: run.serial,
    ...(run.card ? { card: run.card } : {}),
    durationMs: performance.now() - run.started,
  };
}

/** 3. The configuration (358): signatures, owner, quorum, sequence, validity. */
async function verifyConfigurationStep(run: Onboarding, step: CardStep): Promise<ConfigurationStep> {
  const { element, state, trust } = run.options;
  const { card, crls, crlFloor, now } = step;
  run.target = "config-verified";
  const manifestBytes = await element.readItem("manifest");
  if (!manifestBytes) throw new NotForThisHsmError("the card carries no configuration (no manifest)");
  const { manifest, validSigners } = await verifyConfiguration(manifestBytes, card.identity, {
    root: trust.root,
    crls,
    now,
    crlFloor,
    owner: card.owner,
    tokenCaSha256: card.tokenCaSha256,
  });
  run.manifest = manifest;
  if (manifest.owner !== card.owner) {
    throw new NotForThisHsmError(
      `the configuration is for owner "${manifest.owner}", the card is "${card.owner}"`,
    );
  }
  const quorum = state.state.quorum.required;
  if (validSigners < quorum) {
    throw new QuorumError(
      `${validSigners} valid signature(s) on the configuration; this HSM requires ${quorum}`,
    );
  }
  const configured = state.state.configured;
  if (configured && manifest.sequence <= configured.sequence) {
    throw new ReplayError(
      `configuration sequence ${manifest.sequence} is not newer than the applied ${configured.sequence}`,
    );
  }
  checkManifestValidity(manifest, Math.floor(now.getTime() / 1000));
  return { manifest, validSigners };
}

/** 4. This HSM's own entry: only the one shard that holds its serial, checked against the manifest. */
async function selectOwnEntryStep(run: Onboarding, { manifest }: ConfigurationStep): Promise<EntryStep> {
  const { element, state, log } = run.options;
  run.target = "config-verified";
  const shardRef = findShardFor(manifest, run.serial);
  const shardItem = shardItemName(shardRef.objectId);
  const shardBytes = await element.readItem(shardItem);
  if (!shardBytes) throw new IntegrityError(`${shardItem}, named by the signed manifest, is not on the card`);
  const config = decodeShardEntry(shardBytes, shardRef, run.serial);
  const network = hostNetworkConfig(config, run.options.interfaces);
  await state.setStage("config-verified");
  log(
    `configuration ${hex(manifest.configurationId).slice(0, 8)} sequence ${manifest.sequence} verified: ` +
      `${config.hsm.hostname} ${plannedAddresses(network).join(" ")}`,
  );
  return { config, network };
}

/** 5. The network (360): snapshot persisted first, then apply + verify, rolled back on any failure. */
async function applyNetworkStep(
  run: Onboarding,
  { card }: CardStep,
  { manifest }: ConfigurationStep,
  { config, network }: EntryStep,
): Promise<ApplyStep> {
  const { state, net, clock, log, faults } = run.options;
  run.target = "applying";
  const snapshot = await net.snapshot(network);
  await state.setStage("applying", (s) => ({
    ...s,
    applying: {
      startedAt: clock().toISOString(),
      owner: card.owner,
      sequence: manifest.sequence,
      configurationId: hex(manifest.configurationId),
      backend: net.name,
      network,
      snapshot,
    },
  }));
  faults?.reached("after-snapshot");
  log(`applying the network (${net.name})`);
  await applyWithRollback(net, network, snapshot, faults);
  faults?.reached("after-verify-before-persist");
  run.target = "configured";
  run.applied = snapshot;
  const digest = networkStateDigest(config);
  const appliedAt = clock();
  await state.setStage("configured", (s) => {
    const { applying: _done, lastError: _cleared, ...rest } = s;
    return {
      ...rest,
      configured: {
        owner: card.owner,
        sequence: manifest.sequence,
        configurationId: hex(manifest.configurationId),
        appliedAt: appliedAt.toISOString(),
        digest: hex(digest),
        backend: net.name,
        config: structuredClone(config) as AppliedConfiguration["config"],
        network,
        card: omitOwner(run.card!),
      },
      // The first onboarding pins the owner, its token CA and the quorum (SPEC.md §4).
      owner: {
        name: card.owner,
        boundBy: s.owner?.boundBy ?? "first-onboarding",
        tokenCaSha256: card.tokenCaSha256,
        tokenCaSpkiSha256: s.owner?.tokenCaSpkiSha256 ?? spkiSha256(card.tokenCa),
        pinnedAt: s.owner?.pinnedAt ?? appliedAt.toISOString(),
      },
      quorum: { required: s.quorum.required, pinned: true },
    };
  });
  delete run.applied;
  faults?.reached("after-persist-before-receipt");
  log(
    net.name === "dry-run"
      ? `dry run — nothing applied: ${config.hsm.hostname} ${plannedAddresses(network).join(" ")} recorded only`
      : `configured: ${config.hsm.hostname} ${plannedAddresses(network).join(" ")}`,
  );
  return { digest, appliedAt };
}

/**
 * 6. The receipt, signed by the device key, onto the card; then the audit record. The HSM is
 * configured from here on: a card pulled now or a full card costs the receipt, not the result.
 * A secure-channel failure while writing it (a MAC that does not verify, the card's session
 * dropped: ScpIntegrityError) is reported as what it is — exit 15, `lastError` in the state, the
 * audit record saying so — but the network stays applied: everything it was built from was read
 * and verified (R-MAC on every answer, the manifest's signatures) before the channel broke, so
 * undoing it would only hand whoever broke the channel a way to undo a genuine onboarding. The card
 * then carries no receipt for this configuration: `station receipts` shows none for this HSM.
 */
async function issueReceiptStep(
  run: Onboarding,
  { manifest, validSigners }: ConfigurationStep,
  { config, network }: EntryStep,
  { digest, appliedAt }: ApplyStep,
): Promise<OnboardingResult> {
  const { element, trust, log, net, state } = run.options;
  const dryRun = net.name === "dry-run";
  let receipt: ReceiptOutcome;
  let channelFailure: ScpIntegrityError | undefined;
  try {
    receipt = await writeReceipt(element, trust.device.signer, {
      serial: run.serial,
      configurationId: manifest.configurationId,
      sequence: manifest.sequence,
      stateDigest: digest,
      time: Math.floor(appliedAt.getTime() / 1000),
      outcome: ExitCode.ok,
      ...(dryRun ? { dryRun: true } : {}),
      ...receiptChannel(element),
    });
  } catch (receiptError) {
    receipt = { written: false, reason: (receiptError as Error).message };
    if (receiptError instanceof ScpIntegrityError) channelFailure = receiptError;
  }
  log(receipt.written ? `receipt written to ${receipt.item}` : `receipt not written: ${receipt.reason}`);
  if (channelFailure) {
    const failure = channelFailure;
    log(
      `secure channel failed while writing the receipt (exit ${failure.exitCode}); the network stays applied`,
    );
    await state
      .update((s) => ({
        ...s,
        lastError: {
          code: failure.code,
          exitCode: failure.exitCode,
          message: `configured, but no receipt: ${failure.message}`,
          at: run.options.clock().toISOString(),
          stage: "configured",
        },
      }))
      .catch((persistError: unknown) =>
        log(`could not record the failure in the state file: ${(persistError as Error).message}`),
      );
  }
  await appendAudit(run, "configured", {
    serial: run.serial,
    card: run.card,
    configurationId: hex(manifest.configurationId),
    sequence: manifest.sequence,
    signers: validSigners,
    hostname: config.hsm.hostname,
    addresses: plannedAddresses(network),
    digest: hex(digest),
    backend: net.name,
    ...(dryRun ? { dryRun: true } : {}),
    receipt,
    ...(channelFailure
      ? { channelFailure: { code: channelFailure.code, exitCode: channelFailure.exitCode } }
      : {}),
  });
  return {
    ok: channelFailure === undefined,
    exitCode: channelFailure?.exitCode ?? ExitCode.ok,
    ...(channelFailure ? { error: { code: channelFailure.code, message: channelFailure.message } } : {}),
    stage: "configured",
    serial: run.serial,
    card: run.card,
    owner: manifest.owner,
    configurationId: hex(manifest.configurationId),
    sequence: manifest.sequence,
    hostname: config.hsm.hostname,
    addresses: plannedAddresses(network),
    receipt,
    ...(dryRun ? { dryRun: true } : {}),
    durationMs: performance.now() - run.started,
  };
}

// ---- the failure path ---------------------------------------------------------------------------

/**
 * Any failure: the network back to its snapshot if it was changed, the failure recorded in the state
 * (stage `waiting-for-card`, or `applying` when a rollback failed), a failure receipt when one is
 * due, an audit record, and the result.
 */
async function failed(run: Onboarding, caught: unknown): Promise<OnboardingResult> {
  const error = InternalError.from(caught);
  const rollbackFailed = (await rollBackUnrecordedApply(run)) || error instanceof RollbackFailedError;
  // A failed rollback keeps `applying` (and its snapshot): the next start reconciles it again.
  const stage: AgentStage = rollbackFailed ? "applying" : "waiting-for-card";
  run.options.log(`failed (${error.exitCode}): ${error.message}`);
  await recordFailure(run, error, stage);
  const receipt = await failureReceipt(run, error);
  await appendAudit(run, "onboarding-failed", {
    serial: run.serial,
    stage: run.target,
    code: error.code,
    exitCode: error.exitCode,
    message: error.message,
    ...(run.card ? { card: run.card } : {}),
    ...(run.manifest
      ? { configurationId: hex(run.manifest.configurationId), sequence: run.manifest.sequence }
      : {}),
    ...(receipt ? { receipt } : {}),
  });
  return {
    ok: false,
    exitCode: error.exitCode,
    stage,
    failedAt: run.target,
    serial: run.serial,
    error: { code: error.code, message: error.message },
    ...(run.card ? { card: run.card } : {}),
    ...(run.manifest
      ? {
          owner: run.manifest.owner,
          configurationId: hex(run.manifest.configurationId),
          sequence: run.manifest.sequence,
        }
      : {}),
    ...(receipt ? { receipt } : {}),
    durationMs: performance.now() - run.started,
  };
}

/**
 * Applied and verified, but `configured` could not be recorded: the network goes back too, so that
 * state and network agree. True when that rollback failed (then `applying` stays on disk and the
 * next start reconciles).
 */
async function rollBackUnrecordedApply(run: Onboarding): Promise<boolean> {
  if (!run.applied) return false;
  try {
    await run.options.net.rollback(run.applied);
    return false;
  } catch (rollbackError) {
    run.options.log(`rolling the network back failed: ${(rollbackError as Error).message}`);
    return true;
  }
}

async function recordFailure(run: Onboarding, error: OnboardError, stage: AgentStage): Promise<void> {
  const { state, clock, log } = run.options;
  const at = clock().toISOString();
  const lastError = {
    code: error.code,
    exitCode: error.exitCode,
    message: error.message,
    at,
    stage: run.target,
  };
  try {
    await state.setStage(stage, (s) => {
      const next = { ...s, lastError };
      if (stage !== "applying") delete next.applying;
      return next;
    });
  } catch (persistError) {
    log(`could not record the failure in the state file: ${(persistError as Error).message}`);
  }
}

/**
 * A failure receipt when the card is known to be this owner's and its user authenticated — except
 * for the configuration this HSM already applied (its success receipt stands; a card shown twice
 * must not fill up with replays).
 */
async function failureReceipt(run: Onboarding, error: OnboardError): Promise<ReceiptOutcome | undefined> {
  const { state, element, trust, clock, log } = run.options;
  const manifest = run.manifest;
  if (!run.pinVerified || !manifest) return undefined;
  if (state.state.configured?.configurationId === hex(manifest.configurationId)) return undefined;
  const kept = state.state.configured?.digest;
  let receipt: ReceiptOutcome;
  try {
    receipt = await writeReceipt(element, trust.device.signer, {
      serial: run.serial,
      configurationId: manifest.configurationId,
      sequence: manifest.sequence,
      stateDigest: kept ? Buffer.from(kept, "hex") : createHash("sha256").digest(),
      time: Math.floor(clock().getTime() / 1000),
      outcome: error.exitCode,
      ...(run.options.net.name === "dry-run" ? { dryRun: true } : {}),
      ...receiptChannel(element),
    });
  } catch (receiptError) {
    receipt = { written: false, reason: (receiptError as Error).message };
  }
  log(
    receipt.written ? `failure receipt written to ${receipt.item}` : `receipt not written: ${receipt.reason}`,
  );
  return receipt;
}

/** Appends an audit record and remembers its head in the state; a failure to do so is logged, not fatal. */
async function appendAudit(run: Onboarding, event: string, data: Record<string, unknown>): Promise<void> {
  const { audit, state, log } = run.options;
  try {
    const record = await audit.append(event, data);
    await state.update((s) => ({ ...s, auditHead: { seq: record.seq, hash: record.hash } }));
  } catch (auditError) {
    log(`could not write the audit record: ${(auditError as Error).message}`);
  }
}

// ---- checks -------------------------------------------------------------------------------------

/**
 * Another owner's card, or the same owner name under another token CA: not for this HSM (16). The
 * binding is the token CA's key (SPKI SHA-256): under one root every owner has a token CA, and a leaf
 * naming this owner under another owner's token CA is refused here even if it got past the name
 * constraints (issue 10 finding 1).
 */
function checkOwner(
  state: Readonly<AgentState>,
  owner: string,
  tokenCaSha256: string,
  tokenCaSpkiSha256: string,
): void {
  const bound = state.owner;
  if (!bound) return;
  if (bound.tokenCaSpkiSha256 !== undefined && bound.tokenCaSpkiSha256 !== tokenCaSpkiSha256) {
    throw new NotForThisHsmError(
      `the card of "${owner}" comes from a token CA whose key this HSM is not bound to (it belongs to "${bound.name}")`,
    );
  }
  if (bound.name !== owner) {
    throw new NotForThisHsmError(`this HSM belongs to "${bound.name}"; the card is "${owner}"'s`);
  }
  if (
    bound.tokenCaSpkiSha256 === undefined &&
    bound.tokenCaSha256 !== undefined &&
    bound.tokenCaSha256 !== tokenCaSha256
  ) {
    throw new NotForThisHsmError(`the card of "${owner}" comes from a token CA this HSM was not pinned to`);
  }
}

/**
 * Remembers the highest CRL number seen for the card's issuer, and the CRL itself, once the chain
 * (and with it the CRL's signature) validated. Returns the state change to persist with the stage.
 */
async function crlRatchet(
  state: AgentStateStore,
  issuer: string,
  crlNumber: bigint | undefined,
  cardCrl: Uint8Array | undefined,
): Promise<(s: AgentState) => AgentState> {
  const floor = state.state.crlNumbers[issuer];
  if (crlNumber === undefined || (floor !== undefined && crlNumber <= BigInt(floor))) return (s) => s;
  if (cardCrl) await state.storeCrl(issuer, new Uint8Array(readCrl(cardCrl).rawData));
  return (s) => ({ ...s, crlNumbers: { ...s.crlNumbers, [issuer]: crlNumber.toString() } });
}

interface ConfigurationContext {
  readonly root: Uint8Array;
  readonly crls: readonly Uint8Array[];
  readonly now: Date;
  readonly crlFloor: string | undefined;
  readonly owner: string;
  readonly tokenCaSha256: string;
}

/**
 * Verifies the manifest's signatures and every signer's chain (configuration-signing EKU, same owner,
 * same token CA, not revoked). A co-signer that fails does not count towards the quorum; this card's
 * own signing key must be among the valid signers (the PIN just verified is what vouches for the
 * configuration). Returns the manifest and the number of valid signers.
 */
async function verifyConfiguration(
  bytes: Uint8Array,
  identity: SecureElementIdentity,
  ctx: ConfigurationContext,
): Promise<{ manifest: Manifest; validSigners: number }> {
  const valid: Uint8Array[] = [];
  const refused = new Map<string, OnboardError>();
  const { manifest } = await verifyManifest(bytes, {
    // One card signing twice is one vote: counted below by key, refused as a quorum shortfall (19).
    duplicateKeys: "count-once",
    validateChain: async (chain) => {
      const leaf = chain[0];
      if (!leaf) throw new MalformedError("a manifest signature carries no certificate");
      try {
        const validated = await validateChainView({
          leaf,
          // A co-signature may carry its leaf only: its issuer must be the card's token CA anyway
          // (checked below), and the card carries that certificate.
          intermediates: chain.length > 1 ? chain.slice(1) : identity.intermediates,
          trustAnchor: ctx.root,
          crls: ctx.crls,
          now: ctx.now,
          ...(ctx.crlFloor !== undefined ? { crlNumberFloor: BigInt(ctx.crlFloor) } : {}),
          ...VALIDATION_REQUIREMENTS.configSigning,
        });
        if (validated.owner !== ctx.owner) {
          throw new NotForThisHsmError(
            `a signer belongs to "${validated.owner ?? "(no owner)"}", not "${ctx.owner}"`,
          );
        }
        if (sha256Hex(validated.path[1]!.rawData) !== ctx.tokenCaSha256) {
          throw new NotForThisHsmError("a signer's certificate comes from another token CA than the card's");
        }
        valid.push(leaf);
      } catch (error) {
        if (!(error instanceof OnboardError)) throw error;
        refused.set(hex(leaf), error);
      }
    },
  });
  const own = hex(identity.signing);
  const ownRefusal = refused.get(own);
  if (ownRefusal) throw ownRefusal;
  if (!valid.some((leaf) => hex(leaf) === own)) {
    throw new IntegrityError("the configuration is not signed by this card's signing key (9C)");
  }
  // A quorum counts keys, not signatures or certificates.
  const keys = new Set(
    valid.map((leaf) => leafPublicKey([leaf]).export({ format: "der", type: "spki" }).toString("hex")),
  );
  return { manifest, validSigners: keys.size };
}

/**
 * Appends a signed receipt to the first receipt object with room (receipt-0, receipt-1, …). A full
 * card is reported, not thrown; a damaged receipt object is skipped, never overwritten.
 */
export async function writeReceipt(
  element: SecureElement,
  signer: Signer,
  receipt: Receipt,
): Promise<ReceiptOutcome> {
  const signed = await signReceipt(receipt, signer);
  for (let index = 0; index < MAX_RECEIPTS; index++) {
    const item = `receipt-${index}`;
    let current: Uint8Array | undefined;
    try {
      current = await element.readItem(item);
    } catch (error) {
      // An object that cannot be read (oversized, malformed, refused by the card) is skipped like a
      // damaged one: it never stops the receipt (issue 10 finding 5). Losing the card still stops it.
      if (unreadableObject(error)) continue;
      throw error;
    }
    let next: Uint8Array;
    try {
      next = appendReceipt(current, signed, YUBIKEY_STORAGE.maxItemBytes);
    } catch (error) {
      if (error instanceof CardFullError || error instanceof IntegrityError) continue;
      throw error;
    }
    try {
      await element.writeItem(item, next);
    } catch (error) {
      if (error instanceof CardFullError)
        return { written: false, reason: `the card is full (${error.message})` };
      throw error;
    }
    return { written: true, item };
  }
  return { written: false, reason: `all ${MAX_RECEIPTS} receipt objects are full` };
}

// ---- helpers ------------------------------------------------------------------------------------------

/**
 * A read that failed because of the object (its bytes, its size, the card's answer to it), not the
 * card. A secure-channel failure is not one: the channel is closed, every later command would fail
 * the same way, and it must be reported as a channel failure (exit 15), not as objects skipped.
 */
export function unreadableObject(error: unknown): boolean {
  if (error instanceof ScpIntegrityError) return false;
  return error instanceof IntegrityError || error instanceof ApduError;
}

function summarizeCard(card: CardOwnerFacts<CertificateView>, element: SecureElement): CardSummary {
  return {
    subject: card.certificate.subject,
    certificateSerial: card.certificate.serialNumber.toLowerCase(),
    ...(card.officer !== undefined ? { officer: card.officer } : {}),
    ...(element.info.serial !== undefined ? { cardSerial: element.info.serial } : {}),
    channel: channelLabel(element.info.channel),
  };
}

/** The receipt's channel field: PIV cards say how they were reached; a PKCS#11 token has none of ours. */
function receiptChannel(element: SecureElement): { channel?: ReceiptChannel } {
  const c = element.info.channel;
  if (c.kind === "scp11") return { channel: c.protocol };
  if (c.kind === "plaintext") return { channel: "plaintext" };
  return {};
}

function omitOwner(card: CardSummary & { owner?: string }): CardSummary {
  const { owner: _owner, ...rest } = card;
  return rest;
}

/** The CRL-number ratchet's key for the issuer of `der`: SHA-256 of its issuer name (DER), see crlIssuerKey. */
function issuerOf(der: Uint8Array): string {
  try {
    return crlIssuerKey(certificateParts(der).issuer);
  } catch (cause) {
    throw new CardNotTrustedError("the card-authentication certificate cannot be read", { cause });
  }
}

function sha256Hex(bytes: ArrayBuffer | Uint8Array): string {
  return createHash("sha256").update(new Uint8Array(bytes)).digest("hex");
}
