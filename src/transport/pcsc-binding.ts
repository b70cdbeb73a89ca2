/**
 * The optional native `pcsclite` binding, as far as the PC/SC transport uses it: pcsc-lite constants,
 * the typed errors a pcsc-lite failure becomes, and the lazy loader.
 *
 * The binding is loaded lazily with a dynamic import, so the rest of the project (and machines
 * without libpcsclite) work without it; a missing binding is a typed `PcscUnavailableError`. The
 * interfaces are structural: tests substitute a fake.
 *
 * libpcsclite reads PCSCLITE_CSOCK_NAME once per process: one process talks to one pcscd.
 */
import { CardRemovedError, type OnboardError, PcscError, PcscUnavailableError } from "../errors.js";

export { CardRemovedError, PcscError, PcscUnavailableError } from "../errors.js";

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
  /**
   * SCARD_W_SECURITY_VIOLATION, "Access denied": what a client gets from a pcscd that does not know
   * its context or card handle, seen when pcscd restarted under an open session (and also a
   * polkit refusal). Either way the session is gone and nothing more can be sent on it.
   */
  securityViolation: 0x8010006a,
} as const;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

export function isServiceGone(code: number | undefined): boolean {
  return (
    code === ScardCode.noService ||
    code === ScardCode.serviceStopped ||
    code === ScardCode.commError ||
    code === ScardCode.securityViolation
  );
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
  if (code === ScardCode.securityViolation) {
    return new PcscError(
      `PC/SC access denied during ${operation} (pcscd restarted under the session, or its polkit policy refuses this user)`,
      operation,
      code,
      { cause: error, serviceGone: true },
    );
  }
  if (isServiceGone(code)) {
    return new PcscError(
      `PC/SC service not available (is pcscd running? PCSCLITE_CSOCK_NAME=${process.env.PCSCLITE_CSOCK_NAME ?? "default"})`,
      operation,
      code,
      { cause: error, serviceGone: true },
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
