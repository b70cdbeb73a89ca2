/**
 * Every typed error of the project, in one hierarchy and one file, for every layer (apdu, transport,
 * piv, pkcs11, secure-element, config, pki, station, agent, sim). Each class carries a stable
 * literal `code` (the union {@link OnboardErrorCode}: callers switch on it and the compiler checks
 * the cases) and the process exit code of SPEC.md §7, so the CLI maps any failure to its documented
 * exit status in one place (src/cli/main.ts) without knowing the layer that raised it. This module
 * imports nothing: any layer may import it. Layer modules re-export the classes they raise (e.g.
 * src/apdu/status-words.ts, src/piv/errors.ts) so their callers need not know where they live.
 */

export const ExitCode = {
  ok: 0,
  internal: 1,
  usage: 2,
  noCard: 10,
  cardNotTrusted: 11,
  cardRevoked: 12,
  wrongPin: 13,
  pinBlocked: 14,
  integrity: 15,
  notForThisHsm: 16,
  replay: 17,
  validity: 18,
  quorum: 19,
  networkApply: 20,
  addressConflict: 21,
  cardFull: 22,
  planInvalid: 23,
  /** Ended by SIGINT/SIGTERM (128 + 2, the shell's convention). */
  interrupted: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** Every `code` an OnboardError can carry. */
export type OnboardErrorCode =
  | "ERR_INTERNAL"
  | "ERR_SCHEMA"
  | "ERR_USAGE"
  | "ERR_NO_CARD"
  | "ERR_CARD_NOT_TRUSTED"
  | "ERR_SCP_UNAVAILABLE"
  | "ERR_CARD_REVOKED"
  | "ERR_WRONG_PIN"
  | "ERR_WRONG_PASSPHRASE"
  | "ERR_PIN_BLOCKED"
  | IntegrityErrorCode
  | "ERR_NOT_FOR_THIS_HSM"
  | "ERR_REPLAY"
  | "ERR_VALIDITY"
  | "ERR_QUORUM"
  | NetworkApplyErrorCode
  | "ERR_ADDRESS_CONFLICT"
  | "ERR_CARD_FULL"
  | "ERR_PLAN_INVALID"
  | "ERR_PIN_REQUIRED"
  | ApduErrorCode
  | "ERR_PIV_NOT_AVAILABLE"
  | "ERR_PIN_FORMAT"
  | "ERR_MANAGEMENT_KEY"
  | "ERR_PKCS11"
  | "ERR_PKCS11_UNAVAILABLE"
  | "ERR_PCSC_UNAVAILABLE"
  | "ERR_PCSC"
  | "ERR_PCSC_NO_SERVICE"
  | "ERR_CARD_REMOVED"
  | "ERR_TIMEOUT"
  | "ERR_VPCD_CONNECT"
  | "ERR_PERSONALIZATION_REFUSED"
  | "ERR_STATION_BUSY"
  | "ERR_TOTP_REJECTED"
  | RackErrorCode;

export abstract class OnboardError extends Error {
  abstract readonly code: OnboardErrorCode;
  abstract readonly exitCode: ExitCode;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad command-line use or a bad input file that is not a plan (exit 2). */
export class UsageError extends OnboardError {
  readonly code: "ERR_USAGE" = "ERR_USAGE";
  readonly exitCode: ExitCode = ExitCode.usage;
}

/** No card (or no reader) appeared in time (exit 10). */
export class NoCardError extends OnboardError {
  readonly code: "ERR_NO_CARD" = "ERR_NO_CARD";
  readonly exitCode: ExitCode = ExitCode.noCard;
}

/** The card or a certificate in its chain is not trusted (exit 11). */
export class CardNotTrustedError extends OnboardError {
  readonly code: "ERR_CARD_NOT_TRUSTED" | "ERR_SCP_UNAVAILABLE" = "ERR_CARD_NOT_TRUSTED";
  readonly exitCode: ExitCode = ExitCode.cardNotTrusted;
}

/** The card's certificate (or an issuer above it) is on a CRL (exit 12). */
export class CardRevokedError extends OnboardError {
  readonly code: "ERR_CARD_REVOKED" = "ERR_CARD_REVOKED";
  readonly exitCode: ExitCode = ExitCode.cardRevoked;
}

/** Wrong PIN; the card's counter dropped (exit 13). */
export class WrongPinError extends OnboardError {
  readonly code: "ERR_WRONG_PIN" = "ERR_WRONG_PIN";
  readonly exitCode: ExitCode = ExitCode.wrongPin;
  constructor(
    readonly triesLeft: number,
    message = `wrong PIN, ${triesLeft} ${triesLeft === 1 ? "try" : "tries"} left`,
  ) {
    super(message);
  }
}

/**
 * A passphrase-encrypted key file did not open with the passphrase given (exit 13, like a wrong PIN:
 * a secret was wrong). PKCS#8 cannot tell a wrong passphrase from a damaged file; the message says so.
 */
export class WrongPassphraseError extends OnboardError {
  readonly code: "ERR_WRONG_PASSPHRASE" = "ERR_WRONG_PASSPHRASE";
  readonly exitCode: ExitCode = ExitCode.wrongPin;
}

/** The PIN is blocked; the PUK is needed (exit 14). */
export class PinBlockedError extends OnboardError {
  readonly code: "ERR_PIN_BLOCKED" = "ERR_PIN_BLOCKED";
  readonly exitCode: ExitCode = ExitCode.pinBlocked;
}

/** A signature, a hash or an encoding did not check out (exit 15). */
export type IntegrityErrorCode =
  | "ERR_INTEGRITY"
  | "ERR_MALFORMED"
  | "ERR_SCP_INTEGRITY"
  | "ERR_SCP_MALFORMED"
  | "ERR_SCP_OCE_REFUSED"
  | "ERR_UNKNOWN_STATUS";

export class IntegrityError extends OnboardError {
  readonly code: IntegrityErrorCode = "ERR_INTEGRITY";
  readonly exitCode: ExitCode = ExitCode.integrity;
}

/** Malformed bytes (CBOR, COSE, DER, TLV): an integrity failure with its own code. */
export class MalformedError extends IntegrityError {
  override readonly code: "ERR_MALFORMED" | "ERR_SCP_MALFORMED" = "ERR_MALFORMED";
}

/** The configuration does not name this HSM, or comes from another owner (exit 16). */
export class NotForThisHsmError extends OnboardError {
  readonly code: "ERR_NOT_FOR_THIS_HSM" = "ERR_NOT_FOR_THIS_HSM";
  readonly exitCode: ExitCode = ExitCode.notForThisHsm;
}

/** An older sequence number or CRL number: a replay or rollback (exit 17). */
export class ReplayError extends OnboardError {
  readonly code: "ERR_REPLAY" = "ERR_REPLAY";
  readonly exitCode: ExitCode = ExitCode.replay;
}

/** Outside the validity window: expired or not yet valid (exit 18). */
export class ValidityError extends OnboardError {
  readonly code: "ERR_VALIDITY" = "ERR_VALIDITY";
  readonly exitCode: ExitCode = ExitCode.validity;
}

/** Fewer valid signatures than the quorum the HSM demands (exit 19). */
export class QuorumError extends OnboardError {
  readonly code: "ERR_QUORUM" = "ERR_QUORUM";
  readonly exitCode: ExitCode = ExitCode.quorum;
}

/** Applying the network failed and was rolled back (exit 20). */
export type NetworkApplyErrorCode = "ERR_NETWORK_APPLY" | "ERR_ROLLBACK_FAILED";

export class NetworkApplyError extends OnboardError {
  readonly code: NetworkApplyErrorCode = "ERR_NETWORK_APPLY";
  readonly exitCode: ExitCode = ExitCode.networkApply;
}

/** An address is already in use on the link (exit 21). */
export class AddressConflictError extends OnboardError {
  readonly code: "ERR_ADDRESS_CONFLICT" = "ERR_ADDRESS_CONFLICT";
  readonly exitCode: ExitCode = ExitCode.addressConflict;
}

/** The card has no room for what must be written (exit 22). */
export class CardFullError extends OnboardError {
  readonly code: "ERR_CARD_FULL" = "ERR_CARD_FULL";
  readonly exitCode: ExitCode = ExitCode.cardFull;
}

/** One problem found in a network plan: where it is and what is wrong. */
export interface PlanProblem {
  /** e.g. `hsms[3]` or `subnets[hsm-mgmt]`, or `row 7` for CSV */
  entry: string;
  /** e.g. `interfaces[0].ipv4`; empty when the whole entry is concerned */
  field: string;
  message: string;
}

/** A network plan with one or more problems, all of them listed (exit 23). */
export class PlanInvalidError extends OnboardError {
  readonly code: "ERR_PLAN_INVALID" = "ERR_PLAN_INVALID";
  readonly exitCode: ExitCode = ExitCode.planInvalid;
  constructor(readonly problems: readonly PlanProblem[]) {
    super(
      `plan invalid: ${problems.length} problem${problems.length === 1 ? "" : "s"}` +
        (problems[0] ? ` (first: ${formatPlanProblem(problems[0])})` : ""),
    );
  }
}

export function formatPlanProblem(p: PlanProblem): string {
  const where = p.field ? `${p.entry}.${p.field}` : p.entry;
  return `${where}: ${p.message}`;
}

export function isOnboardError(e: unknown): e is OnboardError {
  return e instanceof OnboardError;
}

/** Why a certificate chain was refused (src/pki/validate-chain.ts checks each rule on its own). */
export type CertificateValidationReason =
  | "malformed"
  | "algorithm"
  | "signature"
  | "issuer-name"
  | "not-ca"
  | "path-length"
  | "key-usage"
  | "eku"
  | "name-constraints"
  | "owner-mismatch"
  | "expired"
  | "not-yet-valid"
  | "untrusted-anchor"
  | "critical-extension"
  | "crl-signature"
  | "crl-stale"
  | "crl-missing"
  | "crl-malformed";

/** A certificate in the card's (or device's) chain broke one rule of RFC 5280 path validation (exit 11). */
export class CertificateValidationError extends CardNotTrustedError {
  constructor(
    readonly reason: CertificateValidationReason,
    /** Subject (RFC 4514 string) of the certificate, or issuer of the CRL, that failed. */
    readonly subject: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`certificate not trusted (${reason}): "${subject}": ${detail}`, options);
  }
}

/** The certificate is listed on its issuer's CRL (exit 12). */
export class CertificateRevokedError extends CardRevokedError {
  constructor(
    readonly subject: string,
    /** Hex serial number of the revoked certificate. */
    readonly serialNumber: string,
    readonly revokedAt: Date,
    /** RFC 5280 reason code name, when the CRL gives one. */
    readonly revocationReason?: string,
  ) {
    super(
      `certificate revoked: "${subject}" (serial ${serialNumber}) since ${revokedAt.toISOString()}` +
        (revocationReason ? ` (${revocationReason})` : ""),
    );
  }
}

/**
 * The secure element refused an operation that needs the PIN verified first (PIV 6982 "security
 * status not satisfied", PKCS#11 CKR_USER_NOT_LOGGED_IN): a flow asked for it out of order (exit 1).
 */
export class PinRequiredError extends OnboardError {
  readonly code: "ERR_PIN_REQUIRED" = "ERR_PIN_REQUIRED";
  readonly exitCode: ExitCode = ExitCode.internal;
}

/** A failure that is none of the above: a bug, or an error of a library that was not mapped (exit 1). */
export class InternalError extends OnboardError {
  readonly code: "ERR_INTERNAL" = "ERR_INTERNAL";
  readonly exitCode: ExitCode = ExitCode.internal;

  /** `error` itself when it is an OnboardError, else an InternalError with its message (and it as cause). */
  static from(error: unknown): OnboardError {
    if (error instanceof OnboardError) return error;
    return new InternalError(error instanceof Error ? error.message : String(error), { cause: error });
  }
}

/** A value that does not match a schema of the agent's own files (src/util/schema.ts's `parse`). */
export class SchemaError extends OnboardError {
  readonly code: "ERR_SCHEMA" = "ERR_SCHEMA";
  readonly exitCode: ExitCode = ExitCode.internal;

  constructor(readonly issues: readonly { path: (string | number)[]; message: string }[]) {
    const first = issues[0];
    super(first ? `${first.path.join(".") || "top level"}: ${first.message}` : "invalid");
  }
}

// ---- APDU layer: malformed bytes ---------------------------------------------------------------

/** A command (or response) APDU whose lengths do not add up: wrong Lc/Le encoding or size. */
export class ApduLengthError extends MalformedError {}

/** A BER-TLV structure that does not parse. */
export class TlvError extends MalformedError {}

/** The card's answer does not make sense (too short, wrong structure, bounds exceeded). */
export class BadResponseError extends MalformedError {}

/** The card kept answering 61xx (or 6Cxx) beyond the bounds: a broken or hostile card. */
export class ResponseChainingError extends BadResponseError {}

// ---- APDU layer: status words (src/apdu/status-words.ts maps each SW to one of these) ----------

export type ApduErrorCode =
  | "ERR_APDU"
  | "ERR_SECURITY_STATUS"
  | "ERR_NOT_FOUND"
  | "ERR_REFERENCE_NOT_FOUND"
  | "ERR_WRONG_LENGTH"
  | "ERR_INCORRECT_DATA"
  | "ERR_FUNCTION_NOT_SUPPORTED"
  | "ERR_INCORRECT_P1P2"
  | "ERR_CONDITIONS_NOT_SATISFIED"
  | "ERR_INS_NOT_SUPPORTED"
  | "ERR_CLA_NOT_SUPPORTED"
  | "ERR_UNKNOWN_STATUS";

function swHex(sw: number): string {
  return sw.toString(16).toUpperCase().padStart(4, "0");
}

/**
 * The card refused a command with a status word the protocol knows; `sw` is it. Exit 1: the flow
 * asked for something the card (legitimately) refuses, which is this program's problem to handle.
 */
export class ApduError extends OnboardError {
  readonly code: ApduErrorCode = "ERR_APDU";
  readonly exitCode: ExitCode = ExitCode.internal;
  constructor(
    readonly sw: number,
    message?: string,
  ) {
    super(message ?? `card returned status ${swHex(sw)}`);
  }
}

/** 6982: security status not satisfied (PIN not verified, management key not authenticated, …). */
export class SecurityStatusError extends ApduError {
  override readonly code = "ERR_SECURITY_STATUS";
}
/** 6A82: file, object or application not found. */
export class NotFoundError extends ApduError {
  override readonly code = "ERR_NOT_FOUND";
}
/** 6A88: referenced data (key, PIN reference) not found. */
export class ReferenceNotFoundError extends ApduError {
  override readonly code = "ERR_REFERENCE_NOT_FOUND";
}
/** 6700: wrong length. */
export class WrongLengthError extends ApduError {
  override readonly code = "ERR_WRONG_LENGTH";
}
/** 6A80: incorrect parameters in the data field. */
export class IncorrectDataError extends ApduError {
  override readonly code = "ERR_INCORRECT_DATA";
}
/** 6A81: function not supported. */
export class FunctionNotSupportedError extends ApduError {
  override readonly code = "ERR_FUNCTION_NOT_SUPPORTED";
}
/** 6A86 / 6B00: incorrect P1-P2. */
export class IncorrectParametersError extends ApduError {
  override readonly code = "ERR_INCORRECT_P1P2";
}
/** 6985: conditions of use not satisfied. */
export class ConditionsNotSatisfiedError extends ApduError {
  override readonly code = "ERR_CONDITIONS_NOT_SATISFIED";
}
/** 6D00: instruction not supported (e.g. no Yubico extensions). */
export class InsNotSupportedError extends ApduError {
  override readonly code = "ERR_INS_NOT_SUPPORTED";
}
/** 6E00: class not supported. */
export class ClaNotSupportedError extends ApduError {
  override readonly code = "ERR_CLA_NOT_SUPPORTED";
}
/**
 * A status word the protocol does not give for these commands (6F00 "no precise diagnosis", a
 * vendor code, garbage): the card is broken or hostile, so it is an integrity failure (exit 15),
 * not an internal one.
 */
export class UnknownStatusError extends ApduError {
  override readonly code = "ERR_UNKNOWN_STATUS";
  override readonly exitCode: ExitCode = ExitCode.integrity;
}

// ---- transport ----------------------------------------------------------------------------------

/** The native `pcsclite` module is not installed or does not load (exit 1). */
export class PcscUnavailableError extends OnboardError {
  readonly code: "ERR_PCSC_UNAVAILABLE" = "ERR_PCSC_UNAVAILABLE";
  readonly exitCode: ExitCode = ExitCode.internal;
}

/**
 * A PC/SC call failed. `scardCode` is the SCARD_* return code when the binding gave one. When the
 * PC/SC service itself is gone (`serviceGone`: no service, service stopped, communication error;
 * pcscd not running) it has its own code, ERR_PCSC_NO_SERVICE, and message ("is pcscd running?"),
 * and exit 10: SPEC.md §7 has no status of its own for it, and from the user's side there is no
 * reader to use (1 would say "a bug in hsm-onboard"). Otherwise ERR_PCSC, exit 1.
 */
export class PcscError extends OnboardError {
  readonly code: "ERR_PCSC" | "ERR_PCSC_NO_SERVICE";
  readonly exitCode: ExitCode;
  constructor(
    message: string,
    readonly operation: string,
    readonly scardCode: number | undefined,
    options?: { cause?: unknown; serviceGone?: boolean },
  ) {
    super(message, options);
    this.code = options?.serviceGone ? "ERR_PCSC_NO_SERVICE" : "ERR_PCSC";
    this.exitCode = options?.serviceGone ? ExitCode.noCard : ExitCode.internal;
  }
}

/** The card left the reader (or the reader went away) during a session (exit 10). */
export class CardRemovedError extends OnboardError {
  readonly code: "ERR_CARD_REMOVED" = "ERR_CARD_REMOVED";
  readonly exitCode: ExitCode = ExitCode.noCard;
  constructor(
    message: string,
    readonly readerName: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A wait other than "wait for a card" ran out of time (exit 1). */
export class WaitTimeoutError extends OnboardError {
  readonly code: "ERR_TIMEOUT" = "ERR_TIMEOUT";
  readonly exitCode: ExitCode = ExitCode.internal;
}

// ---- PIV ----------------------------------------------------------------------------------------

/** The card has no PIV application (SELECT answered 6A82): not a card this tool trusts (exit 11). */
export class ApplicationNotAvailableError extends OnboardError {
  readonly code: "ERR_PIV_NOT_AVAILABLE" = "ERR_PIV_NOT_AVAILABLE";
  readonly exitCode: ExitCode = ExitCode.cardNotTrusted;
}

/** Wrong PUK; the PUK counter dropped (exit 13). */
export class WrongPukError extends WrongPinError {
  /** Same `code` as WrongPinError (the base fixes it); tell them apart by class or by this field. */
  readonly credential = "PUK";
  constructor(triesLeft: number) {
    super(triesLeft, `wrong PUK, ${triesLeft} ${triesLeft === 1 ? "try" : "tries"} left`);
  }
}

/** The PUK is blocked: the PIN can no longer be unblocked (only a PIV reset helps) (exit 14). */
export class PukBlockedError extends PinBlockedError {
  readonly credential = "PUK";
}

/** A PIN or PUK that cannot be sent: not 6–8 bytes (PIN), not 8 bytes (PUK), or containing FF (exit 2). */
export class InvalidPinFormatError extends OnboardError {
  readonly code: "ERR_PIN_FORMAT" = "ERR_PIN_FORMAT";
  readonly exitCode: ExitCode = ExitCode.usage;
}

export type ManagementKeyFailure =
  /** the card refused our proof (6982): wrong key or wrong key type */
  | "wrong-key"
  /** the card did not prove knowledge of the key in the mutual authentication */
  | "card-not-authentic"
  /** no PIN-protected management key stored on the card (YubiKey convention) */
  | "not-stored"
  /** bad key length or unsupported algorithm */
  | "invalid-key";

/** Management-key authentication failed (exit 1). */
export class ManagementKeyError extends OnboardError {
  readonly code: "ERR_MANAGEMENT_KEY" = "ERR_MANAGEMENT_KEY";
  readonly exitCode: ExitCode = ExitCode.internal;
  constructor(
    readonly reason: ManagementKeyFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

// ---- PKCS#11 ------------------------------------------------------------------------------------

/**
 * A PKCS#11 call failed with a return value that has no domain meaning of its own (the ones that do
 * become WrongPinError, PinBlockedError, PinRequiredError, NoCardError or CardFullError). Carries the
 * function and the CK_RV; never a PIN. src/pkcs11/errors.ts `pkcs11Failure` builds it with the
 * CKR_ name in the message.
 */
export class Pkcs11Error extends OnboardError {
  readonly code: "ERR_PKCS11" = "ERR_PKCS11";
  readonly exitCode: ExitCode = ExitCode.internal;
  constructor(
    message: string,
    /** The Cryptoki function, e.g. `C_Sign`, or the operation of this layer. */
    readonly operation: string,
    /** CK_RV, when the module returned one. */
    readonly rv: number | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The optional `pkcs11js` binding is not installed, or the PKCS#11 module could not be loaded (exit 1). */
export class Pkcs11UnavailableError extends OnboardError {
  readonly code: "ERR_PKCS11_UNAVAILABLE" = "ERR_PKCS11_UNAVAILABLE";
  readonly exitCode: ExitCode = ExitCode.internal;
}

// ---- card emulator ------------------------------------------------------------------------------

/** vpcd could not be reached, or was lost and could not be reached again (exit 10). */
export class VpcdConnectError extends OnboardError {
  readonly code: "ERR_VPCD_CONNECT" = "ERR_VPCD_CONNECT";
  readonly exitCode: ExitCode = ExitCode.noCard;
}

/** The card refuses to be personalised as asked (wrong assumption about its state): exit 2. */
export class PersonalizationRefusedError extends OnboardError {
  readonly code: "ERR_PERSONALIZATION_REFUSED" = "ERR_PERSONALIZATION_REFUSED";
  readonly exitCode: ExitCode = ExitCode.usage;
}

// ---- station ------------------------------------------------------------------------------------

/** Another command holds a lock of the station directory for longer than we wait (exit 1). */
export class StationBusyError extends OnboardError {
  readonly code: "ERR_STATION_BUSY" = "ERR_STATION_BUSY";
  readonly exitCode: ExitCode = ExitCode.internal;
}

/** The officer's TOTP code was missing, wrong, or already used (exit 13: user authentication failed). */
export class TotpRejectedError extends OnboardError {
  readonly code: "ERR_TOTP_REJECTED" = "ERR_TOTP_REJECTED";
  readonly exitCode: ExitCode = ExitCode.wrongPin;
}

// ---- agent --------------------------------------------------------------------------------------

/** The network could not be restored after a failed apply: the agent keeps `applying` and retries (exit 20). */
export class RollbackFailedError extends NetworkApplyError {
  override readonly code = "ERR_ROLLBACK_FAILED";
  constructor(
    message: string,
    readonly original: OnboardError,
  ) {
    super(message, { cause: original });
  }
}

// ---- secure channel (SCP11, src/apdu/scp11) -----------------------------------------------------

/**
 * A MAC, receipt or padding failed, the session was ended, or the handshake failed on a card that
 * did not show it has no SCP (any answer but the documented "no SCP" ones, and every refusal after
 * its SCP certificate store was read): the channel is closed, nothing is sent in clear (exit 15).
 */
export class ScpIntegrityError extends IntegrityError {
  override readonly code = "ERR_SCP_INTEGRITY";
}

/**
 * SCP11a: the card does not accept the station's OCE certificate (its OCE CA is another owner's, or
 * it has none): mutual authentication failed, exit 15, before any PIN or configuration is sent.
 */
export class ScpOceRefusedError extends IntegrityError {
  override readonly code = "ERR_SCP_OCE_REFUSED";
}

/** Handshake bytes (authenticate data or answer, certificate store) that do not parse (exit 15). */
export class ScpMalformedError extends MalformedError {
  override readonly code = "ERR_SCP_MALFORMED";
}

/** Why a card refuses an authenticate command: its status word (6A80 wrong data). */
export class ScpRequestError extends ScpMalformedError {}

/**
 * The secure channel cannot be used: the card has none (ScpAbsentError), or no SCP trust anchor is
 * installed, or (card personalisation) the security domain refused key management: exit 11.
 */
export class ScpUnavailableError extends CardNotTrustedError {
  override readonly code = "ERR_SCP_UNAVAILABLE";
}

/**
 * The card shows it has no SCP11 at all, by one of the two documented answers and before any SCP
 * certificate was read: SELECT of the issuer security domain answered 6A82 (no security domain),
 * or GET DATA BF21 answered 6A88 or 6A82 (no certificate store: no SCP11 key of that reference).
 * The only error after which `--allow-plaintext` uses the card in clear (exit 11 otherwise).
 * Every other failure of the handshake is a channel failure (exit 15), never softened to plaintext.
 */
export class ScpAbsentError extends ScpUnavailableError {}

// ---- simulation (src/sim) -----------------------------------------------------------------------

export type RackErrorCode = "ERR_RACK" | "ERR_PCSCD_START" | "ERR_NETNS_COMMAND";

/**
 * A failure of the simulation itself (not of an HSM's onboarding): exit 1 by default, or the exit
 * code of the command that failed inside it, or 130 when interrupted.
 */
export class RackError extends OnboardError {
  readonly code: RackErrorCode = "ERR_RACK";
  readonly exitCode: ExitCode;
  constructor(message: string, exitCode: ExitCode = ExitCode.internal, options?: { cause?: unknown }) {
    super(message, options);
    this.exitCode = exitCode;
  }
}

/** The simulation's private pcscd did not start; `log` is its output. */
export class PcscdStartError extends RackError {
  override readonly code = "ERR_PCSCD_START";
  constructor(
    message: string,
    readonly log: string,
  ) {
    super(message);
  }
}

/** An `ip` (or `ip netns exec`) command of the simulation failed; carries its standard error. */
export class NetnsCommandError extends RackError {
  override readonly code = "ERR_NETNS_COMMAND";
  constructor(
    message: string,
    readonly stderr: string,
  ) {
    super(message);
  }
}
