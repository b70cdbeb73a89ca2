/**
 * The station's write flow (SPEC.md §1 steps 252–262, §5): a validated network plan becomes a signed
 * configuration on the officer's card. Independent of the CLI: `station write` and the demo call it
 * with any open SecureElement.
 *
 *   1. authenticate the card (authenticate-card.ts: chain + CRL, live 9E challenge, 9C certificate)
 *   2. the plan's owner must be the card's owner (NotForThisHsmError, exit 16) — before the PIN, so a
 *      doomed write costs no PIN try
 *  2b. what fits (issue 13), still before the PIN and before a sequence number: the card's budget,
 *      the plan split across a card set when it is larger than the card (planCardSet; refused with
 *      exit 22 unless `allowCardSet`), this card's part laid out with the card's signer (sizes only);
 *      a card of a set being continued: the set's journal, the plan's digest, a card already
 *      holding a card of the set refused (CardFullError, exit 22; UsageError, exit 2)
 *   3. the officer's PIN (WrongPinError with tries left, exit 13; PinBlockedError, exit 14), then the
 *      officer's TOTP code if the officer is enrolled at this station (TotpRejectedError, exit 13)
 *   4. allocate the owner's next sequence number (persisted first: never reused, even if this fails);
 *      a card set allocates once, with card 1, and records the set in its journal before writing
 *   5. encode and sign this card's part with the card's 9C key; verify that signature against the
 *      9C certificate — all before the first write
 *   6. write: delete the old manifest FIRST (a half-written card then has no manifest, never one that
 *      points at mismatching shards), delete the previous configuration's shards and receipts (the
 *      receipts are archived in the station directory first), write the certificates and CRL items,
 *      the shards, and the manifest LAST (the commit point)
 *   7. read everything back and verify it: the manifest with verifyManifest, every shard's SHA-256 and
 *      strict decoding, the CRL and certificates items byte for byte (IntegrityError, exit 15)
 *   8. a card of a set: marked written in the set's journal; 9. the inventory (card k of n)
 */
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { type CardPart, type CardSetPlan, partManifest, planCardSet } from "../config/card-set.js";
import { type ConfigMetadata, type EncodedConfig, encodeCardPart } from "../config/encode-config.js";
import {
  type CardRange,
  CONFIGURATION_ID_BYTES,
  cosignatureBytes,
  type Manifest,
  prepareManifest,
  verifyManifest,
} from "../config/manifest.js";
import type { NetworkPlan } from "../config/plan-model.js";
import { decodeShard, shardDigest } from "../config/shard.js";
import type { Signer } from "../crypto/signer.js";
import {
  CardFullError,
  CardNotTrustedError,
  IntegrityError,
  MalformedError,
  NotForThisHsmError,
  PinBlockedError,
  UsageError,
} from "../errors.js";
import type { AuthenticatedCard } from "../pki/card-authentication.js";
import { authenticateCard } from "../pki/card-authentication-x509.js";
import { crlNumberOf } from "../pki/crl.js";
import { crlParts } from "../pki/der.js";
import { VALIDATION_REQUIREMENTS } from "../pki/profiles.js";
import { type ValidatedChain, validateChain } from "../pki/validate-chain.js";
import { shardItemName } from "../secure-element/card-layout.js";
import {
  channelLabel,
  encodeCertificateList,
  parseItemName,
  type SecureElement,
  type SecureElementCapacity,
  type SecureElementInfo,
} from "../secure-element/secure-element.js";
import { bytesEqual } from "../util/bytes.js";
import { X509Certificate, X509Crl } from "../util/x509.js";
import { type StationTrust, stationCardPolicy, stationCrlFor } from "./authenticate-card.js";
import {
  type CardSetJournal,
  journalPart,
  journalRanges,
  newCardSetJournal,
  recordCardWritten,
  remainingCards,
  saveCardSetJournal,
} from "./card-set-journal.js";
import { type CrlUpdate, updateStationCrl } from "./crl-update.js";
import type { Inventory } from "./inventory/inventory.js";
import { planDigest, planRecordOf, writeRecordOf } from "./inventory/record.js";
import { allocateSequence, withInventory } from "./sequence-store.js";
import {
  jsonText,
  loadStationTrust,
  readCrlOf,
  STATION_FILES,
  storeIssuer,
  writeStationFile,
} from "./station-dir.js";
import { isTotpEnrolled, TotpRejectedError, verifyOfficerTotp } from "./totp.js";

export const DEFAULT_VALID_DAYS = 14;
export const MAX_VALID_DAYS = 366;
/**
 * notBefore lies this far before issuedAt: an HSM fresh from the factory may have a clock that runs
 * a little behind the station's (the PKI backdates certificates the same way).
 */
export const NOT_BEFORE_BACKDATE_SECONDS = 3600;
/**
 * Room kept free for receipts (one PIV object's worth by default): a card filled to the last byte
 * by the configuration could not carry any HSM's receipt back.
 */
export const DEFAULT_RECEIPT_RESERVE_BYTES = 3063;

export type WriteStep =
  | "authenticate-card"
  | "verify-pin"
  | "verify-totp"
  | "allocate-sequence"
  | "encode"
  | "write"
  | "verify";

export interface WriteProgress {
  readonly step: WriteStep;
  /** One line for a human, e.g. `card authenticated: "ACME Bank", officer "Alice"`. */
  readonly message: string;
  /** For `write`: items written so far and in all. */
  readonly done?: number;
  readonly total?: number;
}

export interface PinRequest {
  readonly owner: string;
  readonly officer?: string;
  /** Tries left before the PIN blocks; -1 when the card does not tell. */
  readonly triesLeft: number;
}

export interface TotpRequest {
  readonly officer: string;
}

/** A secret given up front, or asked for when the flow needs it (after the card is authenticated). */
export type SecretInput<R> = string | ((request: R) => Promise<string>);

export interface WriteConfigurationOptions {
  readonly element: SecureElement;
  /** A validated plan (src/config/plan.ts parsePlan / loadPlanFile). */
  readonly plan: NetworkPlan;
  readonly stationDir: string;
  /** Days the configuration stays valid from `now` (default 14, at most 366). */
  readonly validDays?: number;
  readonly now?: Date;
  readonly pin: SecretInput<PinRequest>;
  /** Asked for only when the officer is enrolled for TOTP at this station. */
  readonly totpCode?: SecretInput<TotpRequest>;
  readonly onProgress?: (progress: WriteProgress) => void;
  /** Bytes kept free for receipts (default one PIV object, 3,063). */
  readonly receiptReserveBytes?: number;
  /** Allocates the sequence and records the plan and the write (default: the station's SQLite inventory). */
  readonly inventory?: Inventory;
  /** Where the station's sequence marks live (sequence-mark.ts; default $HSM_ONBOARD_STATE_HOME, …). */
  readonly stateHome?: string;
  /**
   * Co-signatures still to come (`station cosign`, dual control): the manifest leaves room for
   * each in its object and on the card (default 0).
   */
  readonly cosigners?: number;
  /**
   * A plan larger than this card (issue 13): `true` lets the write start a card set (this card is
   * card 1 of n; the result's `cardSet.journal` continues it); otherwise such a plan is refused with
   * exit 22 naming the cards it needs. Nothing is asked or allocated before that check.
   */
  readonly allowCardSet?: boolean;
  /**
   * Continue a card set: this card gets the next card of the journal not yet written, with the
   * set's configuration id, sequence and validity (no new sequence number). The plan must be the
   * one the set was made from (its digest is checked before the card is asked for anything).
   */
  readonly cardSet?: CardSetJournal;
}

/** Room kept per expected co-signer beyond what the writer's own signature takes (longer names). */
export const COSIGNER_MARGIN_BYTES = 128;

export interface WrittenShard {
  readonly item: string;
  readonly objectId: number;
  readonly firstSerial: string;
  readonly lastSerial: string;
  readonly hsms: number;
  readonly bytes: number;
  readonly sha256: string;
}

export interface WriteResult {
  readonly owner: string;
  readonly officer?: string;
  readonly card: SecureElementInfo;
  /** 16 bytes, hex. */
  readonly configurationId: string;
  readonly sequence: number;
  readonly issuedAt: Date;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly hsms: number;
  readonly shards: readonly WrittenShard[];
  readonly manifestBytes: number;
  /** Manifest plus shards. */
  readonly configurationBytes: number;
  readonly crlBytes: number;
  readonly crlNumber: bigint;
  readonly certificatesBytes: number;
  /** The card after the write. */
  readonly capacity: SecureElementCapacity;
  /** Items of the previous configuration that were deleted. */
  readonly removed: readonly string[];
  /** Where the previous receipts were archived, when there were any. */
  readonly archivedReceipts?: string;
  /** Sequence of the verified configuration that was on the card before, if any. */
  readonly previousSequence?: number;
  /** Co-signatures the manifest keeps room for. */
  readonly cosigners: number;
  /** A card of a set: its place, every card's range, and the set's journal as it stands now. */
  readonly cardSet?: {
    readonly index: number;
    readonly count: number;
    readonly ranges: readonly CardRange[];
    /** HSMs in the whole plan. */
    readonly planHsms: number;
    readonly journal: CardSetJournal;
    /** Cards still to write, in order. */
    readonly remaining: readonly number[];
  };
  readonly durationMs: number;
}

/**
 * Items a configuration write replaces or removes (manifest, certificates, crl, shards, receipts):
 * everything else on the card (identity certificates, CHUID, CCC…) stays.
 */
function isConfigurationItem(name: string): boolean {
  return parseItemName(name) !== undefined;
}

export async function writeConfigurationToCard(options: WriteConfigurationOptions): Promise<WriteResult> {
  const started = performance.now();
  const { element, plan, stationDir } = options;
  const now = options.now ?? new Date();
  const validDays = options.validDays ?? DEFAULT_VALID_DAYS;
  if (!Number.isInteger(validDays) || validDays < 1 || validDays > MAX_VALID_DAYS) {
    throw new UsageError(`validity must be 1..${MAX_VALID_DAYS} whole days, got ${validDays}`);
  }
  const reserve = options.receiptReserveBytes ?? DEFAULT_RECEIPT_RESERVE_BYTES;
  const cosigners = options.cosigners ?? 0;
  if (!Number.isInteger(cosigners) || cosigners < 0 || cosigners > 15) {
    throw new UsageError(`co-signers must be 0..15, got ${cosigners}`);
  }
  const progress = (p: WriteProgress) => options.onProgress?.(p);

  // 1. The card.
  const adopted = await adoptNewerCrlFromCard(element, stationDir, now, options.inventory);
  if (adopted) {
    progress({
      step: "authenticate-card",
      message: `the card carries a newer CRL of "${adopted.issuer.subject}": the station now uses CRL ${adopted.crlNumber} (was ${adopted.previousNumber})`,
    });
  }
  const trust = await loadStationTrust(stationDir);
  if (trust.crls.length === 0) {
    throw new UsageError(
      `the station has no CRL: run hsm-onboard station update-crl --crl FILE (the token CA's current CRL)`,
    );
  }
  const card = await authenticateCard(element, stationCardPolicy(trust, now));
  const { crl, crlNumber } = stationCrlFor(card, trust);
  for (const issuer of card.intermediates) await storeIssuer(stationDir, issuer);
  progress({
    step: "authenticate-card",
    message:
      `card authenticated: owner "${card.owner}"${card.officer ? `, officer "${card.officer}"` : ""}` +
      ` (chain to "${trust.trustAnchor.subject}", CRL ${crlNumber}, live challenge)`,
  });

  // 2. The plan is for this card's owner.
  if (plan.owner !== card.owner) {
    throw new NotForThisHsmError(
      `the plan is for owner "${plan.owner}" but the card belongs to "${card.owner}": use a card of "${plan.owner}"`,
    );
  }

  // 2b. What is on the card and what fits it: before the PIN and before a sequence number.
  const setJournal = options.cardSet;
  const digest = planDigest(plan);
  if (setJournal && (setJournal.planDigest !== digest || setJournal.owner !== plan.owner)) {
    throw new UsageError(
      `the plan is not the one card set ${setJournal.configurationId} was made from (its digest differs): ` +
        "resume it with the same plan file, or write the new plan as a new set",
    );
  }
  const items = await element.listItems();
  const capacity = await element.capacity();
  const previous = await readPreviousConfiguration(element, trust, now);
  const crlBytes = new Uint8Array(crl.rawData);
  const certificatesBytes = encodeCertificateList(card.intermediates.map((c) => new Uint8Array(c.rawData)));
  for (const [name, bytes] of [
    ["crl", crlBytes],
    ["certificates", certificatesBytes],
  ] as const) {
    if (bytes.length > capacity.maxItemBytes) {
      throw new CardFullError(
        `the ${name} item is ${bytes.length} bytes; the card stores at most ${capacity.maxItemBytes} per item`,
      );
    }
  }
  const replacedBytes = items.filter((i) => isConfigurationItem(i.name)).reduce((sum, i) => sum + i.size, 0);
  const keptBytes = capacity.usedBytes - replacedBytes;
  const budget = capacity.totalBytes - keptBytes - crlBytes.length - certificatesBytes.length - reserve;
  const budgetText =
    `card ${capacity.totalBytes} bytes: ${keptBytes} kept (identity certificates and other objects), ` +
    `CRL ${crlBytes.length}, certificates ${certificatesBytes.length}, receipt reserve ${reserve}`;
  if (budget <= 0) throw new CardFullError(`no room for a configuration (${budgetText})`);

  const signer = validatedSigner(await element.signer(), card);
  const cosignRoom = cosigners * (cosignatureBytes(signer) + COSIGNER_MARGIN_BYTES);
  const cosignText =
    cosigners > 0 ? `, room for ${cosigners} co-signature${cosigners === 1 ? "" : "s"}: ${cosignRoom}` : "";
  // With co-signers to come, every x5chain is the leaf alone (the card carries the token CA):
  // ~650 bytes more for shards in the manifest object, which three officers' signatures share.
  const chain = cosigners > 0 ? ("leaf" as const) : undefined;
  const manifestSize = capacity.maxItemBytes - (cosigners > 0 ? cosignRoom : 0);
  const cardBudget = budget - cosignRoom;
  const doesNotFit = (error: CardFullError) =>
    new CardFullError(
      `the plan does not fit the card: ${error.message} (${budgetText}${cosignText}); nothing was written`,
      { cause: error },
    );
  let part: CardPart;
  let ranges: readonly CardRange[];
  let newSet: CardSetPlan | undefined;
  try {
    if (setJournal) {
      const next = remainingCards(setJournal)[0];
      if (next === undefined) {
        throw new UsageError(`every card of set ${setJournal.configurationId} is written and verified`);
      }
      // A card holding another card of this set is refused; one holding card `next` itself (written,
      // but the journal not updated: the station stopped in between) is written again, same content.
      if (previous?.configurationId === setJournal.configurationId && previous.cardIndex !== next) {
        throw new UsageError(
          `this card already holds card ${previous.cardIndex ?? "?"} of ${setJournal.cards.length} of this set: ` +
            `insert a card for card ${next} of ${setJournal.cards.length} (nothing was written)`,
        );
      }
      if (setJournal.cosigners !== cosigners) {
        throw new UsageError(
          `card set ${setJournal.configurationId} keeps room for ${setJournal.cosigners} co-signature(s): resume it with --cosigners ${setJournal.cosigners}`,
        );
      }
      part = journalPart(setJournal, plan, next);
      ranges = journalRanges(setJournal);
    } else {
      newSet = planCardSet(plan, {
        budgetBytes: cardBudget,
        shardBytes: capacity.maxItemBytes,
        manifestBytes: manifestSize,
        manifestLength: (m) => prepareManifest(m, [signer], chain ? { chain } : {}).length,
      });
      if (newSet.cards.length > 1 && options.allowCardSet !== true) {
        throw new CardFullError(
          `${plan.hsms.length} HSMs need ${newSet.cards.length} cards (${newSet.cards.map((c) => c.hsms).join(" + ")} HSMs): ` +
            "station write writes them as a card set",
        );
      }
      part = newSet.cards[0]!;
      ranges = newSet.cards.map((c) => c.range);
    }
    // This card's part, laid out for this card's signer, before anything is asked or allocated.
    const laidOut = prepareManifest(partManifest(plan.owner, part, ranges, capacity.maxItemBytes), [signer], {
      ...(chain ? { chain } : {}),
      size: manifestSize,
    });
    const needed = laidOut.length + part.shards.length * capacity.maxItemBytes;
    if (needed > cardBudget) {
      throw new CardFullError(
        `${part.hsms} HSMs need ${needed} bytes (manifest ${laidOut.length}, shards ${part.shards.length} × ${capacity.maxItemBytes}); the card has room for ${cardBudget}`,
      );
    }
  } catch (error) {
    if (error instanceof CardFullError) throw doesNotFit(error);
    throw error;
  }
  const count = ranges.length;
  const ofSet = count > 1 ? ` (card ${part.index} of ${count})` : "";

  // 3. The officer.
  const triesLeft = await element.pinTriesLeft();
  if (triesLeft === 0) throw new PinBlockedError("the card's PIN is blocked: unblock it with the PUK first");
  const pin =
    typeof options.pin === "string"
      ? options.pin
      : await options.pin({
          owner: card.owner,
          ...(card.officer ? { officer: card.officer } : {}),
          triesLeft,
        });
  await element.verifyPin(pin);
  progress({ step: "verify-pin", message: "PIN verified" });
  if (card.officer !== undefined && (await isTotpEnrolled(stationDir, card.officer))) {
    const input = options.totpCode;
    if (input === undefined) {
      throw new TotpRejectedError(
        `officer "${card.officer}" is enrolled for TOTP at this station: a code is required`,
      );
    }
    const code = typeof input === "string" ? input : await input({ officer: card.officer });
    await verifyOfficerTotp(stationDir, card.officer, code, now);
    progress({ step: "verify-totp", message: `TOTP code of "${card.officer}" verified` });
  }

  // 4. The sequence number: persisted before it is used; one for every card of a set.
  let metadata: ConfigMetadata;
  let journal: CardSetJournal | undefined = setJournal;
  if (setJournal) {
    metadata = {
      configurationId: new Uint8Array(Buffer.from(setJournal.configurationId, "hex")),
      sequence: setJournal.sequence,
      issuedAt: setJournal.issuedAt,
      notBefore: setJournal.notBefore,
      notAfter: setJournal.notAfter,
    };
    progress({
      step: "allocate-sequence",
      message: `card ${part.index} of ${count} of set ${setJournal.configurationId.slice(0, 8)}: sequence ${metadata.sequence} (allocated with card 1)`,
    });
  } else {
    const sequence = await allocateSequence(stationDir, plan.owner, {
      ...(previous && previous.owner === plan.owner ? { atLeast: previous.sequence + 1 } : {}),
      now,
      ...(options.inventory ? { inventory: options.inventory } : {}),
      ...(options.stateHome === undefined ? {} : { stateHome: options.stateHome }),
      notice: (line) => progress({ step: "allocate-sequence", message: line }),
    });
    progress({
      step: "allocate-sequence",
      message: `sequence ${sequence} allocated for "${plan.owner}"${count > 1 ? ` (for all ${count} cards of the set)` : ""}`,
    });
    const issuedAt = Math.floor(now.getTime() / 1000);
    metadata = {
      configurationId: new Uint8Array(randomBytes(CONFIGURATION_ID_BYTES)),
      sequence,
      issuedAt,
      notBefore: issuedAt - NOT_BEFORE_BACKDATE_SECONDS,
      notAfter: issuedAt + validDays * 86_400,
    };
    if (newSet && count > 1) {
      // The set is fixed before its first card is written: an interruption resumes it (--resume).
      journal = newCardSetJournal({
        owner: plan.owner,
        planDigest: digest,
        ...metadata,
        set: newSet,
        cosigners,
      });
      await saveCardSetJournal(stationDir, journal);
    }
  }
  const sequence = metadata.sequence;

  // 5. Encode, sign, check — nothing written yet.
  let encoded: EncodedConfig;
  try {
    encoded = await encodeCardPart(plan.owner, part, ranges, metadata, signer, {
      maxObjectBytes: capacity.maxItemBytes,
      cardCapacityBytes: cardBudget,
      ...(cosigners > 0 ? { maxManifestBytes: manifestSize, chain: "leaf" as const } : {}),
    });
  } catch (error) {
    if (isSignatureFailure(error)) throw keyMismatch(error);
    if (error instanceof CardFullError) throw doesNotFit(error);
    throw error;
  }
  const validator = configSigningValidator(trust, now);
  try {
    await verifyManifest(encoded.manifest, { validateChain: validator });
  } catch (error) {
    throw isSignatureFailure(error) ? keyMismatch(error) : error;
  }
  progress({
    step: "encode",
    message:
      `${part.hsms} HSMs${ofSet} encoded in ${encoded.shards.length} shard${encoded.shards.length === 1 ? "" : "s"}, ` +
      `${encoded.totalBytes} bytes with the manifest, signed ${signer.algorithm} by the card`,
  });

  // 6. Write: old manifest first, new manifest last.
  // The old manifest goes first: from then on the card holds no configuration until the new one commits.
  const removals = items
    .map((i) => i.name)
    .filter((name) => {
      const kind = parseItemName(name)?.kind;
      return kind === "manifest" || kind === "shard" || kind === "receipt";
    })
    .sort((a, b) => Number(b === "manifest") - Number(a === "manifest"));
  const receipts = removals.filter((name) => parseItemName(name)?.kind === "receipt");
  const archivedReceipts =
    receipts.length > 0 ? await archiveReceipts(element, receipts, stationDir, previous, now) : undefined;
  const writeCertificates = !bytesEqualOrAbsent(await element.readItem("certificates"), certificatesBytes);
  const writeCrl = !bytesEqualOrAbsent(await element.readItem("crl"), crlBytes);
  const shardItems = encoded.shards.map((s) => ({ name: shardItemName(s.objectId), bytes: s.bytes }));
  const total = removals.length + (writeCertificates ? 1 : 0) + (writeCrl ? 1 : 0) + shardItems.length + 1;
  let done = 0;
  const step = (message: string) => progress({ step: "write", message, done: ++done, total });

  for (const name of removals) {
    await element.deleteItem(name);
    step(`deleted ${name}`);
  }
  if (writeCertificates) {
    await element.writeItem("certificates", certificatesBytes);
    step(`wrote certificates (${certificatesBytes.length} bytes)`);
  }
  if (writeCrl) {
    await element.writeItem("crl", crlBytes);
    step(`wrote crl (${crlBytes.length} bytes, CRL number ${crlNumber})`);
  }
  for (const shard of shardItems) {
    await element.writeItem(shard.name, shard.bytes);
    step(`wrote ${shard.name} (${shard.bytes.length} bytes)`);
  }
  await element.writeItem("manifest", encoded.manifest);
  step(`wrote manifest (${encoded.manifest.length} bytes): committed`);

  // 7. Read back and verify.
  await verifyWrittenCard(element, encoded, shardItems, { crlBytes, certificatesBytes, validator });
  const after = await element.capacity();
  progress({
    step: "verify",
    message: `read back: manifest signature and chain, ${shardItems.length} shard hash${shardItems.length === 1 ? "" : "es"}, CRL and certificates verified`,
  });

  const content = encoded.manifestContent;
  const result: WriteResult = {
    owner: card.owner,
    ...(card.officer ? { officer: card.officer } : {}),
    card: element.info,
    configurationId: Buffer.from(content.configurationId).toString("hex"),
    sequence,
    issuedAt: new Date(content.issuedAt * 1000),
    notBefore: new Date(content.notBefore * 1000),
    notAfter: new Date(content.notAfter * 1000),
    hsms: part.hsms,
    shards: encoded.shards.map((s, i) => ({
      item: shardItems[i]!.name,
      objectId: s.objectId,
      firstSerial: s.firstSerial,
      lastSerial: s.lastSerial,
      hsms: s.entries,
      bytes: s.bytes.length,
      sha256: Buffer.from(content.shards[i]!.sha256).toString("hex"),
    })),
    manifestBytes: encoded.manifest.length,
    configurationBytes: encoded.totalBytes,
    crlBytes: crlBytes.length,
    crlNumber,
    certificatesBytes: certificatesBytes.length,
    capacity: after,
    removed: removals.filter((name) => !shardItems.some((s) => s.name === name) && name !== "manifest"),
    ...(archivedReceipts ? { archivedReceipts } : {}),
    ...(previous ? { previousSequence: previous.sequence } : {}),
    cosigners,
    durationMs: Math.round(performance.now() - started),
  };
  // 8. The set's journal: this card is written and verified.
  let finished = result;
  if (journal) {
    // Read, modified and written back under the set's lock: another station write on the same set
    // may have recorded a card since this one read the journal.
    journal = await recordCardWritten(stationDir, journal.configurationId, {
      index: part.index,
      cardName: element.info.name,
      ...(element.info.serial === undefined ? {} : { cardSerial: element.info.serial }),
      ...(card.officer === undefined ? {} : { officer: card.officer }),
      writtenAt: now.toISOString(),
    });
    finished = {
      ...result,
      cardSet: {
        index: part.index,
        count,
        ranges,
        planHsms: plan.hsms.length,
        journal,
        remaining: remainingCards(journal),
      },
    };
  }
  // 9. The inventory: the plan and the write (issue 14), card k of n for a set.
  await withInventory(stationDir, options.inventory, async (inventory) => {
    const planRecord = planRecordOf(plan, now);
    await inventory.recordPlan(planRecord);
    await inventory.recordWrite({
      ...writeRecordOf(finished, planRecord.digest),
      channel: channelLabel(element.info.channel),
      ...(count > 1
        ? {
            cardIndex: part.index,
            cardCount: count,
            firstSerial: part.range.firstSerial,
            lastSerial: part.range.lastSerial,
          }
        : {}),
    });
  });
  return finished;
}

/** A signature that does not verify (not a malformed encoding). */
function isSignatureFailure(error: unknown): boolean {
  return error instanceof IntegrityError && !(error instanceof MalformedError);
}

/** The card signed with a 9C key that is not the one its 9C certificate holds (a copied certificate). */
function keyMismatch(cause: unknown): CardNotTrustedError {
  return new CardNotTrustedError(
    "the card's 9C key does not match its 9C certificate: its signature does not verify (nothing was written)",
    { cause },
  );
}

/**
 * The card's signer, with the certificate chain the station validated (9C leaf, then the token CA)
 * instead of whatever the card's `certificates` item holds.
 */
export function validatedSigner(
  signer: Signer,
  card: AuthenticatedCard & { readonly signing: ValidatedChain },
): Signer {
  const leaf = new Uint8Array(card.signing.leaf.rawData);
  if (!bytesEqual(signer.certificateChain[0] ?? new Uint8Array(), leaf)) {
    throw new CardNotTrustedError("the card's signer is not the 9C certificate that was validated");
  }
  return {
    algorithm: signer.algorithm,
    certificateChain: [leaf, ...card.intermediates.map((c: X509Certificate) => new Uint8Array(c.rawData))],
    sign: (toBeSigned) => signer.sign(toBeSigned),
  };
}

/** validateChain for a manifest signer: configuration signing, the station's anchor and CRLs. */
export function configSigningValidator(
  trust: StationTrust,
  now: Date,
): (chain: readonly Uint8Array[]) => Promise<void> {
  // A co-signer's x5chain may carry its leaf only (prepareManifestCosignature): the token CAs this
  // station already checked are offered next to whatever the chain carries.
  const known = (trust.knownIssuers ?? []).map((c) => new Uint8Array(c.rawData));
  return async (chain) => {
    const [leaf, ...carried] = chain;
    if (!leaf) throw new MalformedError("manifest signer without a certificate");
    const intermediates = [...carried, ...known.filter((k) => !carried.some((c) => bytesEqual(c, k)))];
    await validateChain({
      leaf,
      intermediates,
      trustAnchor: trust.trustAnchor,
      crls: trust.crls,
      now,
      ...VALIDATION_REQUIREMENTS.configSigning,
    });
  };
}

/**
 * A card written by another station of the same owner may carry a newer CRL of its token CA than this
 * station holds. Writing the older one over it would make agents that saw the newer one refuse the
 * card (CRL rollback), and the newer one may revoke more: so the station takes it in first — only
 * when it already holds a CRL of that token CA (a card never bootstraps the station's revocation
 * data) and only after the same checks as `station update-crl` (token CA under the trust anchor,
 * signature, current, higher CRL number). Anything else on the card is ignored here.
 */
async function adoptNewerCrlFromCard(
  element: SecureElement,
  stationDir: string,
  now: Date,
  inventory: Inventory | undefined,
): Promise<CrlUpdate | undefined> {
  const bytes = await element.readItem("crl");
  if (!bytes) return undefined;
  let crl: X509Crl;
  try {
    crl = new X509Crl(bytes.slice().buffer);
    const stored = await readCrlOf(stationDir, crlParts(crl.rawData).issuer);
    if (!stored || (crlNumberOf(crl) ?? 0n) <= stored.crlNumber) return undefined;
    const { intermediates } = await element.identity();
    const update = await updateStationCrl(stationDir, crl, {
      issuers: intermediates.map((der) => new X509Certificate(der.slice().buffer)),
      now,
      ...(inventory === undefined ? {} : { inventory }),
    });
    return update.unchanged ? undefined : update;
  } catch {
    return undefined;
  }
}

interface PreviousConfiguration {
  readonly owner: string;
  readonly sequence: number;
  readonly configurationId: string;
  /** Card k of a set. */
  readonly cardIndex?: number;
}

/** The configuration on the card before this write, when it verifies (otherwise it is ignored). */
async function readPreviousConfiguration(
  element: SecureElement,
  trust: StationTrust,
  now: Date,
): Promise<PreviousConfiguration | undefined> {
  const bytes = await element.readItem("manifest");
  if (!bytes) return undefined;
  try {
    const { manifest } = await verifyManifest(bytes, { validateChain: configSigningValidator(trust, now) });
    return describePrevious(manifest);
  } catch {
    // Not ours, expired chain, tampered: it is about to be replaced; it just does not count.
    return undefined;
  }
}

function describePrevious(manifest: Manifest): PreviousConfiguration {
  return {
    owner: manifest.owner,
    sequence: manifest.sequence,
    configurationId: Buffer.from(manifest.configurationId).toString("hex"),
    ...(manifest.cardSet ? { cardIndex: manifest.cardSet.index } : {}),
  };
}

/** Saves the receipt items about to be deleted (auditors want them even after a card is reused). */
async function archiveReceipts(
  element: SecureElement,
  names: readonly string[],
  stationDir: string,
  previous: PreviousConfiguration | undefined,
  now: Date,
): Promise<string> {
  const archived: Record<string, string> = {};
  for (const name of names) {
    const bytes = await element.readItem(name);
    if (bytes) archived[name] = Buffer.from(bytes).toString("base64");
  }
  const stamp = now.toISOString().replace(/[:.]/g, "-");
  const relative = join(
    STATION_FILES.receiptsArchive,
    `${stamp}-${previous?.configurationId ?? "unverified"}-${randomBytes(4).toString("hex")}.json`,
  );
  await writeStationFile(
    stationDir,
    relative,
    jsonText({
      format: "hsm-onboard/receipts-archive",
      version: 1,
      archivedAt: now.toISOString(),
      card: element.info,
      previousConfiguration: previous ?? null,
      items: archived,
    }),
  );
  return join(stationDir, relative);
}

function bytesEqualOrAbsent(current: Uint8Array | undefined, wanted: Uint8Array): boolean {
  return current !== undefined && bytesEqual(current, wanted);
}

async function verifyWrittenCard(
  element: SecureElement,
  encoded: EncodedConfig,
  shardItems: readonly { name: string; bytes: Uint8Array }[],
  expected: {
    crlBytes: Uint8Array;
    certificatesBytes: Uint8Array;
    validator: (chain: readonly Uint8Array[]) => Promise<void>;
  },
): Promise<void> {
  const manifestBytes = await element.readItem("manifest");
  if (!manifestBytes || !bytesEqual(manifestBytes, encoded.manifest)) {
    throw new IntegrityError("read-back: the manifest on the card differs from the one written");
  }
  const { manifest } = await verifyManifest(manifestBytes, { validateChain: expected.validator });
  if (
    !bytesEqual(manifest.configurationId, encoded.manifestContent.configurationId) ||
    manifest.sequence !== encoded.manifestContent.sequence ||
    manifest.shards.length !== shardItems.length
  ) {
    throw new IntegrityError("read-back: the manifest does not describe the configuration written");
  }
  let entries = 0;
  for (const [i, ref] of manifest.shards.entries()) {
    const name = shardItemName(ref.objectId);
    if (name !== shardItems[i]?.name)
      throw new IntegrityError(`read-back: shard ${i} is not where it was written`);
    const bytes = await element.readItem(name);
    if (!bytes) throw new IntegrityError(`read-back: ${name} is missing`);
    if (!bytesEqual(shardDigest(bytes), ref.sha256)) {
      throw new IntegrityError(`read-back: ${name} does not match the SHA-256 in the manifest`);
    }
    const content = decodeShard(bytes, { what: name });
    if (content.hsms[0]?.serial !== ref.firstSerial || content.hsms.at(-1)?.serial !== ref.lastSerial) {
      throw new IntegrityError(`read-back: ${name} holds other serials than the manifest says`);
    }
    entries += content.hsms.length;
  }
  const planned = encoded.shards.reduce((sum, s) => sum + s.entries, 0);
  if (entries !== planned)
    throw new IntegrityError(`read-back: ${entries} HSM entries on the card, ${planned} written`);
  for (const [name, bytes] of [
    ["crl", expected.crlBytes],
    ["certificates", expected.certificatesBytes],
  ] as const) {
    const back = await element.readItem(name);
    if (!back || !bytesEqual(back, bytes))
      throw new IntegrityError(`read-back: the ${name} item differs from the one written`);
  }
}
