/**
 * The station's inventory (issue 14): what was planned, written to which card, carried and
 * onboarded, and the station's journal — behind one small interface with two engines:
 *
 *   - SQLite (better-sqlite3), the embedded default: `<station dir>/inventory.sqlite`, WAL;
 *   - PostgreSQL (`--db postgresql://…` or HSM_ONBOARD_DB), shared by several stations of one owner.
 *
 * Both run the same versioned migrations (migrations.ts) and pass one shared test suite
 * (test/station/inventory.test.ts). Sequence numbers are allocated here: strictly increasing per
 * owner across every station that shares the database, each number recorded once (a primary key on
 * owner and number), so it can never be handed out twice.
 *
 * Fields the card formats do not carry yet (SCP, co-signature k of n) are nullable: recorded when
 * the caller knows them, NULL otherwise.
 */

export type InventoryEngine = "sqlite" | "postgresql";

export interface PlannedHsm {
  readonly serial: string;
  readonly hostname: string;
  /** Addresses in CIDR-less text form, as planned (one per interface and family). */
  readonly addresses: readonly string[];
  /** SHA-256 of the HSM's planned network state (shard.ts networkStateDigest), hex. */
  readonly stateDigest?: string;
}

export interface PlanRecord {
  /** SHA-256 of the plan's canonical form, hex: the plan's identity. */
  readonly digest: string;
  readonly owner: string;
  readonly hsms: readonly PlannedHsm[];
  readonly recordedAt?: Date;
}

export interface WriteRecord {
  /** 16 bytes, hex. */
  readonly configurationId: string;
  readonly owner: string;
  readonly sequence: number;
  readonly planDigest?: string;
  readonly cardSerial?: string;
  readonly cardName?: string;
  readonly officer?: string;
  readonly writtenAt: Date;
  /** "write" for the signing station's write, "cosign" for a co-signature (issue 13). */
  readonly kind?: "write" | "cosign";
  /** This card's place in a card set: k of n (issue 13); absent for a single card. */
  readonly cardIndex?: number;
  readonly cardCount?: number;
  /** The serial range this card carries (a card of a set); absent: the whole plan. */
  readonly firstSerial?: string;
  readonly lastSerial?: string;
  /** HSMs the configuration covers. */
  readonly hsms: number;
  /**
   * The station's channel to the card it wrote ("SCP11a", "SCP11b", "plaintext", "token":
   * channelLabel); absent for rows recorded before schema version 4.
   */
  readonly channel?: string;
}

export interface ReceiptRecord {
  readonly serial?: string;
  readonly hostname?: string;
  readonly configurationId?: string;
  readonly sequence?: number;
  /** SPEC.md §7 exit code the HSM reported. */
  readonly outcome?: number;
  readonly outcomeName?: string;
  readonly verified: boolean;
  readonly authentic: boolean;
  readonly reason?: string;
  readonly addresses: readonly string[];
  /** State digest the HSM reported, hex. */
  readonly networkDigest?: string;
  /** State digest of the HSM's planned entry, hex, when known. */
  readonly planDigest?: string;
  /** true: dry run (nothing applied); false: applied; absent: not known. */
  readonly dryRun?: boolean;
  /** true: carried under SCP11; false: plaintext; absent: not known (issue 11). */
  readonly scp?: boolean;
  /** The channel as the signed receipt names it ("SCP11b", "plaintext"…); absent when it does not say. */
  readonly channel?: string;
  /** Subject of the device certificate that signed the receipt (authentic receipts). */
  readonly deviceSubject?: string;
  /** Who verified it and against what: the station and the chain to its trust anchor. */
  readonly verifiedBy?: string;
  /** When the HSM wrote the receipt. */
  readonly time?: Date;
  readonly cardSerial?: string;
  readonly collectedAt: Date;
}

export interface JournalRecord {
  readonly event: string;
  readonly key: string;
  readonly number: string;
  readonly time: Date;
  readonly station: string;
  /** Free text for people (a CRL's issuer and what it revokes); absent for sequence events. */
  readonly detail?: string;
}

/** One HSM as `station inventory` shows it: the latest of each kind of event. */
export interface HsmState {
  readonly owner: string;
  readonly serial: string;
  readonly hostname: string;
  readonly planDigest: string;
  readonly plannedAt: Date;
  /** The planned addresses ("eth0 198.51.100.11", one per interface and family). */
  readonly addresses: readonly string[];
  /** SHA-256 of the HSM's planned network state (what a receipt must report), hex; absent for plans recorded before it was kept. */
  readonly stateDigest?: string;
  /** Latest configuration written for its plan. */
  readonly written?: {
    readonly configurationId: string;
    readonly sequence: number;
    readonly cardSerial?: string;
    readonly officer?: string;
    readonly at: Date;
  };
  /** Latest receipt collected for this serial. */
  readonly receipt?: {
    readonly outcome?: number;
    readonly outcomeName?: string;
    readonly verified: boolean;
    readonly authentic: boolean;
    readonly reason?: string;
    readonly addresses: readonly string[];
    readonly dryRun?: boolean;
    readonly scp?: boolean;
    readonly channel?: string;
    readonly sequence?: number;
    readonly configurationId?: string;
    /** The network state digest the HSM reported, hex. */
    readonly networkDigest?: string;
    /** The planned digest the verifying station computed from the card's entry, hex. */
    readonly planDigest?: string;
    readonly deviceSubject?: string;
    readonly verifiedBy?: string;
    readonly cardSerial?: string;
    /** When the HSM wrote it (its own clock). */
    readonly time?: Date;
    /** When the station collected it. */
    readonly at: Date;
  };
}

export interface HistoryEntry {
  readonly time: Date;
  readonly kind: "plan" | "write" | "cosign" | "receipt" | "sequence" | "journal" | "crl";
  readonly owner?: string;
  readonly text: string;
}

export interface AllocateOptions {
  /** The lowest acceptable number (a newer configuration already on the card, a journal floor). */
  readonly atLeast?: number;
  readonly station: string;
  readonly now?: Date;
}

export interface Inventory {
  readonly engine: InventoryEngine;
  /** Where it lives, for messages (a file path, or the PostgreSQL URL without its password). */
  readonly location: string;
  /** The schema version in force after migrations. */
  schemaVersion(): Promise<number>;
  /**
   * The owner's next sequence number: above every number handed out before (by any station sharing
   * the database) and at least `atLeast`. Recorded before it is returned; never returned twice.
   */
  allocateSequence(owner: string, options: AllocateOptions): Promise<number>;
  /** Highest number handed out for `owner`; 0 when none. */
  lastSequence(owner: string): Promise<number>;
  /** Raises the owner's counter to at least `last` (migration, resynchronisation); never lowers it. */
  raiseSequence(owner: string, last: number, station: string, now?: Date): Promise<void>;
  recordPlan(plan: PlanRecord): Promise<void>;
  recordWrite(write: WriteRecord): Promise<void>;
  /** Records receipts; one already recorded (same HSM, configuration, time, outcome) is not doubled. Returns how many were new. */
  recordReceipts(receipts: readonly ReceiptRecord[]): Promise<number>;
  appendJournal(entry: JournalRecord): Promise<void>;
  journal(limit?: number): Promise<JournalRecord[]>;
  /** Every planned HSM (of `owner`; only `serial` when given), in owner and natural serial order. */
  inventory(options?: { readonly owner?: string; readonly serial?: string }): Promise<HsmState[]>;
  history(options?: { readonly owner?: string; readonly limit?: number }): Promise<HistoryEntry[]>;
  /** A short text that changes whenever plans, writes, receipts or the journal gain rows (the rack view's live updates). */
  changeMark(): Promise<string>;
  close(): Promise<void>;
}

/** Identity of a receipt for de-duplication (the same receipt collected twice). */
export function receiptKey(r: ReceiptRecord): string {
  return [r.serial ?? "", r.configurationId ?? "", r.time?.toISOString() ?? "", r.outcome ?? ""].join("|");
}
