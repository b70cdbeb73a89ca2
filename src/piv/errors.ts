/**
 * Errors of the PIV session that carry PIV meaning beyond the status word (yubikit's
 * `InvalidPinError`, `ApplicationNotAvailableError`, …). Defined with every other error in
 * src/errors.ts; re-exported here for the PIV layer's callers. Status words themselves are mapped in
 * src/apdu/status-words.ts; the session only narrows a few of those errors where the command gives
 * them a more precise meaning (a 63Cx on a PUK is a wrong PUK, not a wrong PIN).
 */
export {
  ApplicationNotAvailableError,
  InvalidPinFormatError,
  ManagementKeyError,
  type ManagementKeyFailure,
  PukBlockedError,
  WrongPukError,
} from "../errors.js";
