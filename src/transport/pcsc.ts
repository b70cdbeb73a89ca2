/**
 * CardTransport over PC/SC (pcsc-lite through the optional native `pcsclite` binding).
 *
 * - The binding is loaded lazily with a dynamic import, so the rest of the project (and machines
 *   without libpcsclite) work without it; a missing binding is a typed `PcscUnavailableError`.
 * - `PcscContext` owns one pcsc-lite context: the reader list and each reader's last status. The
 *   reader watcher (reader-watcher.ts) turns its raw status words into insert/remove events.
 * - `PcscTransport` is one connection to one card: SHARED mode, T=0 or T=1, a response buffer large
 *   enough for extended-length APDUs, disconnect with a card reset so that a verified PIN does not
 *   outlive the session.
 *
 * libpcsclite reads PCSCLITE_CSOCK_NAME once per process: one process talks to one pcscd.
 */
import { EventEmitter } from "node:events";
import { ExitCode, NoCardError, OnboardError } from "../errors.js";
import type { CardTransport } from "./card-transport.js";

// ---------------------------------------------------------------------------------------------
// pcsc-lite constants (pcsclite.h; stable ABI values, identical on Linux and macOS)
// ---------------------------------------------------------------------------------------------

export const SCARD_SHARE_EXCLUSIVE = 0x1;
export const SCARD_SHARE_SHARED = 0x2;
export const SCARD_PROTOCOL_T0 = 0x1;
export const SCARD_PROTOCOL_T1 = 0x2;
export const SCARD_LEAVE_CARD = 0x0;
export const SCARD_RESET_CARD = 0x1;
export const SCARD_UNPOWER_CARD = 0x2;

/** Reader state bits (SCARD_STATE_*); the high 16 bits carry pcsc-lite's card event counter. */
export const ReaderState = {
  changed: 0x0002,
  unknown: 0x0004,
  unavailable: 0x0008,
  empty: 0x0010,
  present: 0x0020,
  exclusive: 0x0080,
  inUse: 0x0100,
  mute: 0x0200,
  unpowered: 0x0400,
} as const;

/**
 * pcsc-lite's MAX_BUFFER_SIZE_EXTENDED (4 + 3 + 65536 + 2 + 3): the largest APDU it moves either
 * way. Used as the receive buffer so that an extended-length response (up to 65536 data bytes +
 * SW1 SW2) always fits.
 */
export const PCSC_MAX_BUFFER_EXTENDED = 65548;

/** pcsc-lite return codes the transport reacts to (winscard.h / pcsclite.h). */
export const ScardCode = {
  cancelled: 0x80100002,
  /** The client lost its socket to pcscd (pcscd stopped or restarted). */
  commError: 0x80100013,
  invalidHandle: 0x80100003,
  unknownReader: 0x80100009,
  timeout: 0x8010000a,
  sharingViolation: 0x8010000b,
  noSmartcard: 0x8010000c,
  protoMismatch: 0x8010000f,
  notTransacted: 0x80100016,
  readerUnavailable: 0x80100017,
  noService: 0x8010001d,
  serviceStopped: 0x8010001e,
  noReadersAvailable: 0x8010002e,
  unresponsiveCard: 0x80100066,
  unpoweredCard: 0x80100067,
  resetCard: 0x80100068,
  removedCard: 0x80100069,
} as const;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/** The native `pcsclite` module is not installed or does not load (exit 1). */
export class PcscUnavailableError extends OnboardError {
  readonly code = "ERR_PCSC_UNAVAILABLE";
  readonly exitCode = ExitCode.internal;
}

/**
 * A PC/SC call failed. `scardCode` is pcsc-lite's return code when known. A missing pcscd
 * (`SCARD_E_NO_SERVICE`) maps to exit 10: from the user's side there is no reader to use.
 */
export class PcscError extends OnboardError {
  readonly code = "ERR_PCSC";
  readonly exitCode: ExitCode;
  constructor(
    message: string,
    readonly operation: string,
    readonly scardCode: number | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.exitCode = isServiceGone(scardCode) ? ExitCode.noCard : ExitCode.internal;
  }
}

/** The card left the reader (or the reader went away) during a session (exit 10). */
export class CardRemovedError extends OnboardError {
  readonly code = "ERR_CARD_REMOVED";
  readonly exitCode = ExitCode.noCard;
  constructor(
    message: string,
    readonly readerName: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

function isServiceGone(code: number | undefined): boolean {
  return code === ScardCode.noService || code === ScardCode.serviceStopped || code === ScardCode.commError;
}

/** pcsclite formats failures as `SCardXxx error: <text>(0x8010xxxx)`. */
export function scardCodeOf(error: unknown): number | undefined {
  const message = error instanceof Error ? error.message : typeof error === "string" ? error : "";
  const m = /\(0x([0-9a-f]{1,16})\)\s*$/i.exec(message);
  if (!m?.[1]) return undefined;
  // `LONG` is 64-bit on Linux: keep the low 32 bits.
  return Number(BigInt(`0x${m[1]}`) & 0xffffffffn);
}

const REMOVAL_CODES: ReadonlySet<number> = new Set([
  ScardCode.removedCard,
  ScardCode.noSmartcard,
  ScardCode.unknownReader,
  ScardCode.readerUnavailable,
  ScardCode.invalidHandle,
]);

/** Turns a raw binding error into the typed error callers switch on. */
export function toPcscError(error: unknown, operation: string, readerName?: string): OnboardError {
  const code = scardCodeOf(error);
  const detail = error instanceof Error ? error.message : String(error);
  if (readerName !== undefined && code !== undefined && REMOVAL_CODES.has(code)) {
    return new CardRemovedError(`card removed from reader "${readerName}" (${operation})`, readerName, {
      cause: error,
    });
  }
  if (isServiceGone(code)) {
    return new PcscError(
      `PC/SC service not available (is pcscd running? PCSCLITE_CSOCK_NAME=${process.env.PCSCLITE_CSOCK_NAME ?? "default"})`,
      operation,
      code,
      { cause: error },
    );
  }
  return new PcscError(`${operation} failed: ${detail}`, operation, code, { cause: error });
}

// ---------------------------------------------------------------------------------------------
// The binding, as far as this module uses it (structural: tests substitute a fake)
// ---------------------------------------------------------------------------------------------

type BindingCallbackError = Error | null | undefined;

export interface PcscBindingReaderStatus {
  state: number;
  atr?: Buffer;
}

/** One reader object of the `pcsclite` binding. */
export interface PcscBindingReader {
  readonly name: string;
  on(event: "status", listener: (status: PcscBindingReaderStatus) => void): unknown;
  on(event: "end", listener: () => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  connect(
    options: { share_mode: number; protocol: number },
    callback: (error: BindingCallbackError, protocol: number) => void,
  ): void;
  disconnect(disposition: number, callback: (error: BindingCallbackError) => void): void;
  transmit(
    data: Buffer,
    responseLength: number,
    protocol: number,
    callback: (error: BindingCallbackError, response: Buffer) => void,
  ): void;
  close(): void;
}

/** The object returned by the `pcsclite()` factory. */
export interface PcscBindingContext {
  on(event: "reader", listener: (reader: PcscBindingReader) => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  close(): void;
  /** Internal of pcsclite 1.0.x, called once on the next tick; see PcscContext. */
  start?: (callback: (error: BindingCallbackError, readers: Buffer) => void) => void;
}

export type PcscBindingFactory = () => PcscBindingContext;

let factoryPromise: Promise<PcscBindingFactory> | undefined;

/** Loads the optional `pcsclite` native module once per process. */
export function loadPcscBinding(): Promise<PcscBindingFactory> {
  factoryPromise ??= (async () => {
    try {
      // A variable specifier: the build must not need the optional module's types (it may be absent).
      const specifier = "pcsclite";
      const mod = (await import(specifier)) as unknown as { default?: unknown };
      const factory = (mod.default ?? mod) as unknown;
      if (typeof factory !== "function") throw new TypeError("unexpected export shape");
      return factory as PcscBindingFactory;
    } catch (error) {
      factoryPromise = undefined;
      throw new PcscUnavailableError(
        "PC/SC support is not available: the optional native module 'pcsclite' could not be loaded " +
          "(install libpcsclite-dev and build tools, then reinstall the package)",
        { cause: error },
      );
    }
  })();
  return factoryPromise;
}

// ---------------------------------------------------------------------------------------------
// Reader names and ATRs: contact or contactless?
// ---------------------------------------------------------------------------------------------

/**
 * Reader names that say "contactless": "ACS ACR122U PICC Interface", "OMNIKEY 5x21-CL",
 * "OMNIKEY 5422CL", "Identiv uTrust 3700 F CL Reader", "... Contactless Reader", "... NFC ...".
 * "CL" must stand alone or follow a model number (so "CLASSIC" never matches).
 */
export function isContactlessReaderName(name: string): boolean {
  if (/\b(contactless|picc|nfc)\b/i.test(name)) return true;
  // "5x21-CL", "F CL Reader", "OMNIKEY 5422CL" (a model number followed by CL)
  return /(^|[\s\-_(\d])CL([\s\-_)\]]|$)/.test(name);
}

export type AtrKind = "contact" | "contactless-iso14443-4" | "contactless-storage" | "invalid";

export interface AtrClassification {
  kind: AtrKind;
  contactless: boolean;
  /** Protocols the ATR offers (T=0 when no TDi says otherwise). */
  protocols: readonly number[];
  historicalBytes: Uint8Array;
  /** undefined when no TCK is present (T=0 only). */
  tckValid: boolean | undefined;
}

/** PC/SC registered application provider identifier (RID), PC/SC Part 3 §3.1.3.2.3. */
const PCSC_RID = [0xa0, 0x00, 0x00, 0x03, 0x06] as const;

/**
 * Parses an ATR (ISO/IEC 7816-3 §8.2) and classifies it. PC/SC Part 3 §3.1.3.2.3 makes a
 * contactless reader synthesise `3B 8n 80 01 <n historical bytes> TCK`: T0 announces only TD1,
 * TD1 = 80 (only TD2 follows, T=0), TD2 = 01 (T=1, nothing follows). Storage cards (MIFARE,
 * FeliCa...) carry `80 4F 0C A0 00 00 03 06 SS NN NN ...` in the historical bytes; ISO 14443-4
 * cards carry their ATS historical bytes (type A) or ATQB data (type B).
 */
export function classifyAtr(atr: Uint8Array): AtrClassification {
  const invalid: AtrClassification = {
    kind: "invalid",
    contactless: false,
    protocols: [],
    historicalBytes: new Uint8Array(0),
    tckValid: undefined,
  };
  if (atr.length < 2 || atr.length > 33) return invalid;
  const ts = atr[0];
  if (ts !== 0x3b && ts !== 0x3f) return invalid;
  const t0 = atr[1]!;
  const historicalCount = t0 & 0x0f;
  let y = t0 >> 4;
  let i = 2;
  const interfaceBytes: number[] = [];
  const tds: number[] = [];
  // At most 8 TDi in practice; the ATR length bound (33) already bounds this loop.
  while (y !== 0) {
    for (const bit of [0x1, 0x2, 0x4]) {
      if (y & bit) {
        if (i >= atr.length) return invalid;
        interfaceBytes.push(atr[i++]!);
      }
    }
    if (y & 0x8) {
      if (i >= atr.length) return invalid;
      const td = atr[i++]!;
      tds.push(td);
      interfaceBytes.push(td);
      y = td >> 4;
    } else {
      y = 0;
    }
  }
  const protocols = tds.length === 0 ? [0] : [...new Set(tds.map((td) => td & 0x0f))];
  const needsTck = protocols.some((p) => p !== 0);
  const expectedLength = i + historicalCount + (needsTck ? 1 : 0);
  if (atr.length !== expectedLength) return { ...invalid, protocols };
  const historicalBytes = atr.slice(i, i + historicalCount);
  let tckValid: boolean | undefined;
  if (needsTck) {
    let x = 0;
    for (let k = 1; k < atr.length; k++) x ^= atr[k]!;
    tckValid = x === 0;
  }
  const pcscContactlessShape =
    ts === 0x3b &&
    t0 >> 4 === 0x8 &&
    interfaceBytes.length === 2 &&
    interfaceBytes[0] === 0x80 &&
    interfaceBytes[1] === 0x01;
  const storage = hasPcscRid(historicalBytes);
  // A contact card never announces only "T=0 then T=1 with no parameters"; PC/SC readers make
  // that shape for every contactless card. The RID pattern identifies storage cards on its own.
  const kind: AtrKind = storage
    ? "contactless-storage"
    : pcscContactlessShape
      ? "contactless-iso14443-4"
      : "contact";
  return { kind, contactless: kind !== "contact", protocols, historicalBytes, tckValid };
}

/** `4F 0C A0 00 00 03 06 …`: application identifier presence indicator with the PC/SC RID. */
function hasPcscRid(historical: Uint8Array): boolean {
  for (let k = 0; k + 2 + PCSC_RID.length <= historical.length; k++) {
    if (historical[k] !== 0x4f) continue;
    if (PCSC_RID.every((b, j) => historical[k + 2 + j] === b)) return true;
  }
  return false;
}

/** Contactless if either the reader's name or the ATR says so. */
export function isContactless(readerName: string, atr: Uint8Array): boolean {
  return isContactlessReaderName(readerName) || classifyAtr(atr).contactless;
}

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex").toUpperCase();
}

// ---------------------------------------------------------------------------------------------
// PcscContext: one pcsc-lite context, its readers and their last status
// ---------------------------------------------------------------------------------------------

export interface ReaderStatus {
  readonly name: string;
  /** Raw SCARD_STATE_* word, event counter included; undefined until the first status. */
  readonly state: number | undefined;
  readonly atr: Uint8Array;
}

export interface PcscContextEvents {
  /** The reader list was (re)read; fires for empty lists too. */
  list: [readonly string[]];
  "reader-added": [string];
  /** With the reader's last state word, so a card that went with it can be reported. */
  "reader-removed": [string, number | undefined];
  status: [ReaderStatus, previousState: number | undefined];
  error: [OnboardError];
}

export interface PcscContextOptions {
  /** Substitute binding (tests); the real `pcsclite` module otherwise. */
  binding?: PcscBindingFactory;
  /** Bound on the wait for the first reader list and first statuses (default 3000 ms). */
  readyTimeoutMs?: number;
}

interface TrackedReader {
  reader: PcscBindingReader;
  state: number | undefined;
  atr: Uint8Array;
}

/**
 * One pcsc-lite context. pcsclite 1.0.x announces readers only as "new reader" events, so an
 * empty reader list would be indistinguishable from "not read yet"; the context therefore wraps
 * the binding's own list callback (called on every reader list change, empty lists included) to
 * know when the first list is in. `open()` resolves once that list and each reader's first status
 * have arrived, so a snapshot taken right after is complete.
 */
export class PcscContext extends EventEmitter<PcscContextEvents> {
  private readonly readers = new Map<string, TrackedReader>();
  private closed = false;
  private listSeen = false;

  private constructor(private readonly binding: PcscBindingContext) {
    super();
  }

  static async open(options: PcscContextOptions = {}): Promise<PcscContext> {
    const factory = options.binding ?? (await loadPcscBinding());
    let binding: PcscBindingContext;
    try {
      binding = factory();
    } catch (error) {
      throw toPcscError(error, "SCardEstablishContext");
    }
    const context = new PcscContext(binding);
    context.attach();
    try {
      await context.whenReady(options.readyTimeoutMs ?? 3000);
    } catch (error) {
      context.close();
      throw error;
    }
    return context;
  }

  /** Current readers and their status. */
  snapshot(): ReaderStatus[] {
    return [...this.readers.values()].map((t) => ({ name: t.reader.name, state: t.state, atr: t.atr }));
  }

  /** The binding reader object (for connecting), if the reader is present. */
  bindingReader(name: string): PcscBindingReader | undefined {
    return this.readers.get(name)?.reader;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Stops every status thread of the binding; the process can then exit. Idempotent; no event is
   * emitted afterwards.
   *
   * The native release happens on a later turn of the event loop: pcsclite runs its reader
   * callbacks with that reader's mutex held and `close()` takes the same mutex, so closing from an
   * event handler (a "card inserted" handler that closes the watcher, or the reaction to pcscd
   * going away) would deadlock the main thread if done synchronously.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const readers = [...this.readers.values()].map((t) => t.reader);
    this.readers.clear();
    this.removeAllListeners();
    setImmediate(() => {
      for (const reader of readers) {
        try {
          reader.close();
        } catch {
          // already closed by the binding (reader gone)
        }
      }
      try {
        this.binding.close();
      } catch {
        // the binding's context may already have failed (pcscd gone)
      }
    });
  }

  private attach(): void {
    const b = this.binding;
    const originalStart = b.start;
    if (typeof originalStart === "function") {
      // Called by pcsclite on the next tick; wrap it to see every reader list, empty ones too.
      b.start = (callback) =>
        originalStart.call(b, (error, data) => {
          callback(error, data);
          if (!error && !this.closed) this.onList(parseReaderList(data));
        });
    }
    b.on("reader", (reader) => this.onReader(reader));
    b.on("error", (error) => {
      if (this.closed) return;
      this.fail(toPcscError(error, "SCardGetStatusChange"));
    });
  }

  private onList(names: readonly string[]): void {
    this.listSeen = true;
    // pcsclite itself closes readers that disappeared; their "end" reports the removal.
    this.emit("list", names);
  }

  private onReader(reader: PcscBindingReader): void {
    if (this.closed) {
      reader.close();
      return;
    }
    const tracked: TrackedReader = { reader, state: undefined, atr: new Uint8Array(0) };
    this.readers.set(reader.name, tracked);
    reader.on("status", (status) => {
      if (this.closed || this.readers.get(reader.name) !== tracked) return;
      const previous = tracked.state;
      tracked.state = status.state;
      tracked.atr = status.atr && status.atr.length > 0 ? new Uint8Array(status.atr) : new Uint8Array(0);
      this.emit("status", { name: reader.name, state: tracked.state, atr: tracked.atr }, previous);
    });
    reader.on("error", (error) => {
      // A reader's status thread failed: usually pcscd went away or the reader was unplugged.
      // Its "end" follows and reports the removal; only a lost service is worth an error.
      if (this.closed) return;
      const typed = toPcscError(error, "SCardGetStatusChange");
      if (typed instanceof PcscError && isServiceGone(typed.scardCode)) this.fail(typed);
    });
    reader.on("end", () => {
      if (this.readers.get(reader.name) !== tracked) return;
      this.readers.delete(reader.name);
      if (!this.closed) this.emit("reader-removed", reader.name, tracked.state);
    });
    this.emit("reader-added", reader.name);
  }

  private fail(error: OnboardError): void {
    if (this.listenerCount("error") > 0) this.emit("error", error);
  }

  private isReady(): boolean {
    if (!this.listSeen) return false;
    for (const t of this.readers.values()) if (t.state === undefined) return false;
    return true;
  }

  private whenReady(timeoutMs: number): Promise<void> {
    if (this.isReady()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.isReady()) done();
      };
      const onError = (error: OnboardError) => done(error);
      const timer = setTimeout(
        () =>
          done(
            new PcscError(
              `PC/SC reader list not available after ${timeoutMs} ms`,
              "SCardListReaders",
              ScardCode.timeout,
            ),
          ),
        timeoutMs,
      );
      const done = (error?: OnboardError) => {
        clearTimeout(timer);
        this.off("list", check);
        this.off("status", check);
        this.off("error", onError);
        if (error) reject(error);
        else resolve();
      };
      this.on("list", check);
      this.on("status", check);
      this.on("error", onError);
    });
  }
}

/** pcsc-lite multi-string: `name\0name\0\0`. */
function parseReaderList(data: Buffer | undefined): string[] {
  if (!data || data.length === 0) return [];
  return data
    .toString("utf8")
    .split("\0")
    .filter((s) => s.length > 0);
}

/** Whether a status word says "a card is there and answered its reset". */
export function cardPresent(state: number | undefined): boolean {
  if (state === undefined) return false;
  return (state & ReaderState.present) !== 0 && (state & ReaderState.mute) === 0;
}

/** The card event counter pcsc-lite keeps in the high 16 bits of the state word. */
export function cardEventCount(state: number | undefined): number {
  return state === undefined ? 0 : (state >>> 16) & 0xffff;
}

export function readerMatches(name: string, wanted: string | undefined): boolean {
  return wanted === undefined || name.toLowerCase().includes(wanted.toLowerCase());
}

// ---------------------------------------------------------------------------------------------
// PcscTransport: one connection to one card
// ---------------------------------------------------------------------------------------------

export type PcscProtocol = "T0" | "T1";

export interface PcscConnectOptions {
  /** Exclusive access instead of the default SHARED mode. */
  exclusive?: boolean;
  /** Restrict the protocol; both are offered by default. */
  protocol?: PcscProtocol;
  /**
   * What to do with the card on close. Default "reset": the PIV applet forgets a verified PIN,
   * so the next application (sharing the reader) does not inherit it.
   */
  disposition?: "reset" | "leave" | "unpower";
}

export interface PcscOpenOptions extends PcscConnectOptions, PcscContextOptions {
  /** Case-insensitive substring of the reader name; any reader with a card when absent. */
  reader?: string;
}

/** SP 800-73-4 and ISO 7816-4: the largest command APDU pcsc-lite passes. */
const MAX_COMMAND_LENGTH = PCSC_MAX_BUFFER_EXTENDED;

export class PcscTransport implements CardTransport {
  readonly contactless: boolean;
  private closing: Promise<void> | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly reader: PcscBindingReader,
    readonly protocol: PcscProtocol,
    readonly atr: Uint8Array,
    private readonly disposition: number,
    private readonly onClose: () => void,
  ) {
    this.contactless = isContactless(reader.name, atr);
  }

  get readerName(): string {
    return this.reader.name;
  }

  /**
   * Opens its own PC/SC context, connects to the card in the first reader whose name contains
   * `options.reader` and that holds a card, and closes the context again on `close()`. Does not
   * wait for a card: see ReaderWatcher.waitForCard for that.
   */
  static async open(options: PcscOpenOptions = {}): Promise<PcscTransport> {
    const context = await PcscContext.open(options);
    try {
      return await PcscTransport.connectIn(context, options, () => context.close());
    } catch (error) {
      context.close();
      throw error;
    }
  }

  /**
   * Connects within an existing context (the reader watcher's). `onClose` runs after the card is
   * disconnected.
   */
  static async connectIn(
    context: PcscContext,
    options: PcscOpenOptions,
    onClose: () => void = () => {},
  ): Promise<PcscTransport> {
    const all = context.snapshot();
    const matching = all.filter((r) => readerMatches(r.name, options.reader));
    if (matching.length === 0) {
      const known = all.map((r) => `"${r.name}"`).join(", ") || "none";
      throw new NoCardError(
        options.reader === undefined
          ? "no smart-card reader found"
          : `no reader matching "${options.reader}" (readers: ${known})`,
      );
    }
    const withCard = matching.find((r) => cardPresent(r.state));
    if (!withCard) {
      throw new NoCardError(`no card in ${matching.map((r) => `"${r.name}"`).join(", ")}`);
    }
    const reader = context.bindingReader(withCard.name);
    if (!reader) throw new NoCardError(`reader "${withCard.name}" went away`);
    return PcscTransport.connectReader(reader, withCard.atr, options, onClose);
  }

  /** Connects to the card in `reader` (whose ATR the caller got from its status). */
  static connectReader(
    reader: PcscBindingReader,
    atr: Uint8Array,
    options: PcscConnectOptions = {},
    onClose: () => void = () => {},
  ): Promise<PcscTransport> {
    const protocols =
      options.protocol === "T0"
        ? SCARD_PROTOCOL_T0
        : options.protocol === "T1"
          ? SCARD_PROTOCOL_T1
          : SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1;
    const disposition =
      options.disposition === "leave"
        ? SCARD_LEAVE_CARD
        : options.disposition === "unpower"
          ? SCARD_UNPOWER_CARD
          : SCARD_RESET_CARD;
    const shareMode = options.exclusive ? SCARD_SHARE_EXCLUSIVE : SCARD_SHARE_SHARED;
    return new Promise((resolve, reject) => {
      reader.connect({ share_mode: shareMode, protocol: protocols }, (error, protocol) => {
        if (error) {
          reject(toPcscError(error, "SCardConnect", reader.name));
          return;
        }
        const chosen: PcscProtocol = protocol === SCARD_PROTOCOL_T0 ? "T0" : "T1";
        resolve(new PcscTransport(reader, chosen, atr, disposition, onClose));
      });
    });
  }

  /** One command APDU in, response data ‖ SW1 SW2 out. Calls are serialised in order. */
  transmit(command: Uint8Array): Promise<Uint8Array> {
    const run = () => this.transmitNow(command);
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private transmitNow(command: Uint8Array): Promise<Uint8Array> {
    if (this.closing) return Promise.reject(new PcscError("transport is closed", "SCardTransmit", undefined));
    if (command.length < 4 || command.length > MAX_COMMAND_LENGTH) {
      return Promise.reject(
        new PcscError(`command APDU of ${command.length} bytes is out of range`, "SCardTransmit", undefined),
      );
    }
    const protocol = this.protocol === "T0" ? SCARD_PROTOCOL_T0 : SCARD_PROTOCOL_T1;
    return new Promise((resolve, reject) => {
      this.reader.transmit(Buffer.from(command), PCSC_MAX_BUFFER_EXTENDED, protocol, (error, response) => {
        if (error) {
          reject(toPcscError(error, "SCardTransmit", this.reader.name));
          return;
        }
        if (response.length === 0) {
          // vpcd (and some readers) report a card that went away mid-command as an empty answer.
          reject(
            new CardRemovedError(
              `no answer from the card in "${this.reader.name}" (removed during the command?)`,
              this.reader.name,
            ),
          );
          return;
        }
        if (response.length < 2) {
          reject(
            new PcscError(
              `response of ${response.length} bytes has no status word`,
              "SCardTransmit",
              undefined,
            ),
          );
          return;
        }
        resolve(new Uint8Array(response));
      });
    });
  }

  /** Disconnects (resetting the card by default). Idempotent; never throws for a gone card. */
  close(): Promise<void> {
    this.closing ??= this.queue.then(
      () =>
        new Promise<void>((resolve) => {
          this.reader.disconnect(this.disposition, () => {
            // A card already removed cannot be reset; nothing more to do either way.
            try {
              this.onClose();
            } finally {
              resolve();
            }
          });
        }),
    );
    return this.closing;
  }
}
