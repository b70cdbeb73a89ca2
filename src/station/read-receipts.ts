/**
 * The station closes the loop (SPEC.md §1 step 3): the receipts HSMs wrote back onto the card, each
 * verified, matched to the configuration the card carries now. Needs no PIN (reading is free).
 *
 * Each receipt (src/config/receipt.ts) is a COSE_Sign1 by an HSM's device key whose protected
 * x5chain carries the device certificate (and normally its device CA). It counts as verified only if
 *   - its signature verifies with the x5chain leaf key,
 *   - the device chain validates to the station's trust anchor for device receipts (EKU
 *     deviceReceipt) and the device certificate names the receipt's serial (subject serialNumber),
 *   - it is for the card's current configuration (configuration id and sequence of the verified
 *     manifest) and that configuration names the serial,
 *   - for a successful outcome, its state digest equals the digest of the HSM's planned entry
 *     (networkStateDigest): the HSM applied exactly what was planned, so the addresses shown are
 *     the ones it applied.
 * Anything else is shown with ✗ and the reason; one bad receipt never hides the others.
 */

import { findShardFor, type Manifest, verifyManifest } from "../config/manifest.js";
import { decodeReceiptLog, verifyReceipt } from "../config/receipt.js";
import { decodeShardEntry, type HsmConfig, networkStateDigest } from "../config/shard.js";
import {
  ApduError,
  CardRevokedError,
  CertificateValidationError,
  ExitCode,
  IntegrityError,
  isOnboardError,
} from "../errors.js";
import { isDeviceCa } from "../pki/ca-facts.js";
import { VALIDATION_REQUIREMENTS } from "../pki/profiles.js";
import { validateChain } from "../pki/validate-chain.js";
import { shardItemName } from "../secure-element/card-layout.js";
import {
  MAX_RECEIPTS,
  type SecureElement,
  type SecureElementInfo,
} from "../secure-element/secure-element.js";
import { bytesEqual } from "../util/bytes.js";
import type { StationTrust } from "./authenticate-card.js";
import { loadStationTrust } from "./station-dir.js";
import { configSigningValidator } from "./write-card.js";

export interface CurrentConfiguration {
  readonly owner: string;
  /** hex */
  readonly configurationId: string;
  readonly sequence: number;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly hsms?: number;
}

export interface ReceiptRow {
  /** The card item and the position in it, e.g. `receipt-0[2]`. */
  readonly location: string;
  readonly serial?: string;
  readonly hostname?: string;
  /** Addresses the HSM applied (CIDR form, per interface), known when the digest matched the plan. */
  readonly addresses: readonly string[];
  /** SPEC.md §7 exit code the HSM reported (0: configured). */
  readonly outcome?: number;
  readonly outcomeName?: string;
  /** How the HSM talked to the card ("SCP11b", "plaintext"…), as its signed receipt says. */
  readonly channel?: string;
  readonly time?: Date;
  /** hex */
  readonly configurationId?: string;
  readonly sequence?: number;
  /** The HSM ran a dry-run applier: nothing was applied, whatever the outcome (issue 12). */
  readonly dryRun?: boolean;
  /** Signature, device chain and serial binding verified. */
  readonly authentic: boolean;
  /** For the card's current configuration. */
  readonly current: boolean;
  /** authentic, current, and (for outcome 0) the applied state is the planned one. */
  readonly verified: boolean;
  /** Why not verified. */
  readonly reason?: string;
  /** The device certificate is revoked by its device CA's CRL (`station update-crl --device`). */
  readonly revoked?: boolean;
  /** The network state digest the HSM reported, hex (authentic receipts). */
  readonly stateDigest?: string;
  /** The digest of the HSM's planned entry on the card, hex, when it was found (inventory, issue 14). */
  readonly plannedDigest?: string;
  /** Subject of the device certificate whose chain validated (authentic receipts; inventory, issue 14). */
  readonly deviceSubject?: string;
  /** Subject of the device CA that issued it. */
  readonly deviceCa?: string;
}

export interface ReceiptReport {
  readonly card: SecureElementInfo;
  /** The card's verified configuration; absent when there is none or it does not verify. */
  readonly configuration?: CurrentConfiguration;
  /** Why there is no configuration to match receipts against. */
  readonly configurationProblem?: string;
  readonly receipts: readonly ReceiptRow[];
  /** Subject of the station's trust anchor that receipts were validated against. */
  readonly trustAnchor?: string;
}

export interface ReadReceiptsOptions {
  readonly element: SecureElement;
  readonly stationDir: string;
  readonly now?: Date;
}

const OUTCOME_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(ExitCode).map(([name, code]) => [code, name === "ok" ? "configured" : kebab(name)]),
);

function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** What the station shows for a dry-run receipt with outcome 0: never "configured". */
export const DRY_RUN_OUTCOME = "dry run — nothing applied";

export function outcomeName(code: number, dryRun = false): string {
  if (dryRun && code === ExitCode.ok) return DRY_RUN_OUTCOME;
  const name = OUTCOME_NAMES.get(code) ?? `exit ${code}`;
  return dryRun ? `${name} (dry run)` : name;
}

export async function readReceipts(options: ReadReceiptsOptions): Promise<ReceiptReport> {
  const { element } = options;
  const now = options.now ?? new Date();
  const trust = await loadStationTrust(options.stationDir);

  let manifest: Manifest | undefined;
  let configurationProblem: string | undefined;
  const manifestBytes = await element.readItem("manifest");
  if (!manifestBytes) {
    configurationProblem = "the card carries no configuration";
  } else {
    try {
      ({ manifest } = await verifyManifest(manifestBytes, {
        validateChain: configSigningValidator(trust, now),
      }));
    } catch (error) {
      configurationProblem = `the card's configuration does not verify: ${messageOf(error)}`;
    }
  }

  const shardCache = new Map<string, Uint8Array | undefined>();
  const readShard = async (name: string) => {
    if (!shardCache.has(name)) shardCache.set(name, await element.readItem(name));
    return shardCache.get(name);
  };

  const rows: ReceiptRow[] = [];
  // Agents fill receipt-0, receipt-1, … in order (and a station write clears them all), so reading
  // stops at the first absent object: a few reads instead of a scan of the whole card.
  for (let index = 0; index < MAX_RECEIPTS; index++) {
    const name = `receipt-${index}`;
    let bytes: Uint8Array | undefined;
    try {
      bytes = await element.readItem(name);
    } catch (error) {
      // One object that cannot be read never hides the others (issue 10 finding 5).
      if (!(error instanceof IntegrityError || error instanceof ApduError)) throw error;
      rows.push(unreadable(name, `cannot be read: ${messageOf(error)}`));
      continue;
    }
    if (!bytes) break;
    let receipts: Uint8Array[];
    try {
      receipts = decodeReceiptLog(bytes);
    } catch (error) {
      rows.push(unreadable(name, `not a receipt object: ${messageOf(error)}`));
      continue;
    }
    for (const [i, receipt] of receipts.entries()) {
      rows.push(await checkReceipt(`${name}[${i}]`, receipt, { trust, now, manifest, readShard }));
    }
  }
  return {
    card: element.info,
    ...(manifest
      ? {
          configuration: {
            owner: manifest.owner,
            configurationId: Buffer.from(manifest.configurationId).toString("hex"),
            sequence: manifest.sequence,
            notBefore: new Date(manifest.notBefore * 1000),
            notAfter: new Date(manifest.notAfter * 1000),
          },
        }
      : {}),
    ...(configurationProblem ? { configurationProblem } : {}),
    receipts: rows,
    trustAnchor: trust.trustAnchor.subject,
  };
}

interface ReceiptContext {
  readonly trust: StationTrust;
  readonly now: Date;
  readonly manifest: Manifest | undefined;
  readonly readShard: (name: string) => Promise<Uint8Array | undefined>;
}

async function checkReceipt(
  location: string,
  bytes: Uint8Array,
  context: ReceiptContext,
): Promise<ReceiptRow> {
  let verified: Awaited<ReturnType<typeof verifyReceipt>>;
  const device: DeviceSeen = {};
  try {
    verified = await verifyReceipt(bytes, {
      validateDevice: deviceValidator(context.trust, context.now, device),
    });
  } catch (error) {
    if (error instanceof CardRevokedError) {
      return { ...unreadable(location, `revoked: ${messageOf(error)}`), revoked: true };
    }
    return unreadable(location, `not authentic: ${messageOf(error)}`);
  }
  const { receipt } = verified;
  const base = {
    location,
    serial: receipt.serial,
    outcome: receipt.outcome,
    outcomeName: outcomeName(receipt.outcome, receipt.dryRun === true),
    ...(receipt.dryRun ? { dryRun: true } : {}),
    ...(receipt.channel === undefined ? {} : { channel: receipt.channel }),
    time: new Date(receipt.time * 1000),
    configurationId: Buffer.from(receipt.configurationId).toString("hex"),
    sequence: receipt.sequence,
    authentic: true,
    stateDigest: Buffer.from(receipt.stateDigest).toString("hex"),
    ...(device.subject === undefined ? {} : { deviceSubject: device.subject }),
    ...(device.ca === undefined ? {} : { deviceCa: device.ca }),
  };
  const { manifest } = context;
  if (!manifest) {
    return {
      ...base,
      addresses: [],
      current: false,
      verified: false,
      reason: "no verified configuration on the card to match",
    };
  }
  if (
    !bytesEqual(receipt.configurationId, manifest.configurationId) ||
    receipt.sequence !== manifest.sequence
  ) {
    return {
      ...base,
      addresses: [],
      current: false,
      verified: false,
      reason: `for another configuration (sequence ${receipt.sequence}; the card holds sequence ${manifest.sequence})`,
    };
  }
  let planned: HsmConfig;
  try {
    const ref = findShardFor(manifest, receipt.serial);
    const name = shardItemName(ref.objectId);
    const shard = await context.readShard(name);
    if (!shard) throw new Error(`${name} is missing from the card`);
    planned = decodeShardEntry(shard, ref, receipt.serial);
  } catch (error) {
    return {
      ...base,
      addresses: [],
      current: true,
      verified: false,
      reason: `not in the configuration: ${messageOf(error)}`,
    };
  }
  const hostname = planned.hsm.hostname;
  const plannedDigest = Buffer.from(networkStateDigest(planned)).toString("hex");
  if (receipt.outcome !== ExitCode.ok) {
    // The HSM says it did not apply the configuration; the receipt is genuine, the outcome is the news.
    return { ...base, plannedDigest, hostname, addresses: [], current: true, verified: true };
  }
  if (!bytesEqual(receipt.stateDigest, networkStateDigest(planned))) {
    return {
      ...base,
      plannedDigest,
      hostname,
      addresses: [],
      current: true,
      verified: false,
      reason: "the state the HSM applied differs from its planned entry",
    };
  }
  if (receipt.dryRun) {
    // Genuine and for the planned state, but nothing was applied: no addresses to show as applied.
    return { ...base, plannedDigest, hostname, addresses: [], current: true, verified: true };
  }
  return { ...base, plannedDigest, hostname, addresses: addressesOf(planned), current: true, verified: true };
}

function unreadable(location: string, reason: string): ReceiptRow {
  return { location, addresses: [], authentic: false, current: false, verified: false, reason };
}

/** What the device validator saw of a chain that validated (for the inventory's receipt detail). */
interface DeviceSeen {
  subject?: string;
  ca?: string;
}

/** Device chain to the trust anchor for receipts, and the certificate names the receipt's serial. */
function deviceValidator(trust: StationTrust, now: Date, seen: DeviceSeen) {
  return async (chain: readonly Uint8Array[], serial: string): Promise<void> => {
    const [leaf, ...intermediates] = chain;
    if (!leaf)
      throw new CertificateValidationError(
        "malformed",
        "(none)",
        "the receipt carries no device certificate",
      );
    const validated = await validateChain({
      leaf,
      intermediates,
      trustAnchor: trust.trustAnchor,
      // Device CRLs (`station update-crl --device`) are checked when the station holds one for the
      // device's CA; without one a receipt still verifies (devices are revoked rarely).
      crls: trust.crls,
      now,
      requireCrl: false,
      ...VALIDATION_REQUIREMENTS.deviceReceipt,
    });
    // Only a device CA speaks for an HSM (issue 10 finding 2): a certificate with the device usage
    // and the right serialNumber under any other CA (an owner's token CA) is not a device.
    const issuer = validated.path[1];
    if (!issuer || !isDeviceCa(issuer)) {
      throw new CertificateValidationError(
        "eku",
        validated.leaf.subject,
        `its issuer "${issuer?.subject ?? "(none)"}" is not a device CA (CA-level extendedKeyUsage device only)`,
      );
    }
    if (validated.subjectSerialNumber !== serial) {
      throw new CertificateValidationError(
        "malformed",
        validated.leaf.subject,
        `the device certificate is for serial ${validated.subjectSerialNumber ?? "(none)"}, the receipt for ${serial}`,
      );
    }
    seen.subject = validated.leaf.subject;
    seen.ca = issuer.subject;
  };
}

function addressesOf(config: HsmConfig): string[] {
  const prefix = (cidr: string | undefined) => (cidr ? cidr.slice(cidr.indexOf("/")) : "");
  const out: string[] = [];
  for (const itf of config.hsm.interfaces) {
    const subnet = config.subnets.find((s) => s.name === itf.subnet);
    if (itf.ipv4 !== undefined) out.push(`${itf.name} ${itf.ipv4}${prefix(subnet?.cidr)}`);
    if (itf.ipv6 !== undefined) out.push(`${itf.name} ${itf.ipv6}${prefix(subnet?.ipv6Cidr)}`);
  }
  return out;
}

function messageOf(error: unknown): string {
  if (isOnboardError(error) || error instanceof Error) return error.message;
  return String(error);
}
