/**
 * Errors of the PIV session that carry PIV meaning beyond the status word (yubikit's
 * `InvalidPinError`, `ApplicationNotAvailableError`, …). Status words themselves are mapped in
 * src/apdu/status-words.ts; the session only narrows a few of those errors where the command gives
 * them a more precise meaning (a 63Cx on a PUK is a wrong PUK, not a wrong PIN).
 */
import { ExitCode, OnboardError, PinBlockedError, WrongPinError } from "../errors.js";

/** The card has no PIV application (SELECT answered 6A82): not a card this tool trusts (exit 11). */
export class ApplicationNotAvailableError extends OnboardError {
  readonly code = "ERR_PIV_NOT_AVAILABLE";
  readonly exitCode = ExitCode.cardNotTrusted;
}

/** Wrong PUK; the PUK counter dropped. */
export class WrongPukError extends WrongPinError {
  /** Same `code` as WrongPinError (the base fixes it); tell them apart by class or by this field. */
  readonly credential = "PUK";
  constructor(triesLeft: number) {
    super(triesLeft, `wrong PUK, ${triesLeft} ${triesLeft === 1 ? "try" : "tries"} left`);
  }
}

/** The PUK is blocked: the PIN can no longer be unblocked (only a PIV reset helps). */
export class PukBlockedError extends PinBlockedError {
  readonly credential = "PUK";
}

/** A PIN or PUK that cannot be sent: not 6–8 bytes (PIN), not 8 bytes (PUK), or containing FF. */
export class InvalidPinFormatError extends OnboardError {
  readonly code = "ERR_PIN_FORMAT";
  readonly exitCode = ExitCode.usage;
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

export class ManagementKeyError extends OnboardError {
  readonly code = "ERR_MANAGEMENT_KEY";
  readonly exitCode = ExitCode.internal;
  constructor(
    readonly reason: ManagementKeyFailure,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
