/**
 * Status words (ISO/IEC 7816-4 §5.6, SP 800-73-4 Part 2 Appendix A) and the ONE place that turns a
 * status word other than 9000 into a typed error: `statusError`, called only by
 * `SmartCardProtocol.sendApdu` (chaining.ts). Errors that the rest of the project already knows
 * (wrong PIN, PIN blocked, card full) are mapped to the shared classes of src/errors.ts; everything
 * else is an `ApduError` carrying the status word: one of the subclasses for the status words the
 * protocol knows (exit 1), else `UnknownStatusError` (exit 15: a broken or hostile card).
 */
import {
  CardFullError,
  ClaNotSupportedError,
  ConditionsNotSatisfiedError,
  FunctionNotSupportedError,
  IncorrectDataError,
  IncorrectParametersError,
  InsNotSupportedError,
  NotFoundError,
  type OnboardError,
  PinBlockedError,
  ReferenceNotFoundError,
  SecurityStatusError,
  UnknownStatusError,
  WrongLengthError,
  WrongPinError,
} from "../errors.js";
import { formatSw } from "./response.js";

export {
  ApduError,
  ClaNotSupportedError,
  ConditionsNotSatisfiedError,
  FunctionNotSupportedError,
  IncorrectDataError,
  IncorrectParametersError,
  InsNotSupportedError,
  NotFoundError,
  ReferenceNotFoundError,
  SecurityStatusError,
  UnknownStatusError,
  WrongLengthError,
} from "../errors.js";

export const SW = {
  ok: 0x9000,
  /** SW1 61: xx more bytes with GET RESPONSE */
  moreDataSw1: 0x61,
  /** SW1 6C: wrong Le, xx is the right one */
  wrongLeSw1: 0x6c,
  verificationFailed: 0x6300,
  /** 63Cx: x tries left */
  retryCounterSw: 0x63c0,
  wrongLength: 0x6700,
  lastCommandOfChainExpected: 0x6883,
  chainingNotSupported: 0x6884,
  securityStatusNotSatisfied: 0x6982,
  authMethodBlocked: 0x6983,
  conditionsNotSatisfied: 0x6985,
  incorrectData: 0x6a80,
  functionNotSupported: 0x6a81,
  fileNotFound: 0x6a82,
  notEnoughMemory: 0x6a84,
  incorrectP1P2: 0x6a86,
  referenceNotFound: 0x6a88,
  wrongP1P2: 0x6b00,
  insNotSupported: 0x6d00,
  claNotSupported: 0x6e00,
  noPreciseDiagnosis: 0x6f00,
} as const;

const MESSAGES: Record<number, string> = {
  [SW.verificationFailed]: "verification failed",
  [SW.wrongLength]: "wrong length",
  [SW.lastCommandOfChainExpected]: "last command of a chain expected",
  [SW.chainingNotSupported]: "command chaining not supported",
  [SW.securityStatusNotSatisfied]: "security status not satisfied",
  [SW.conditionsNotSatisfied]: "conditions of use not satisfied",
  [SW.incorrectData]: "incorrect data",
  [SW.functionNotSupported]: "function not supported",
  [SW.fileNotFound]: "not found",
  [SW.incorrectP1P2]: "incorrect P1-P2",
  [SW.referenceNotFound]: "referenced data not found",
  [SW.wrongP1P2]: "wrong P1-P2",
  [SW.insNotSupported]: "instruction not supported",
  [SW.claNotSupported]: "class not supported",
};

function describe(sw: number): string {
  const m = MESSAGES[sw];
  return m ? `card returned ${formatSw(sw)} (${m})` : `card returned status ${formatSw(sw)}`;
}

/** The typed error for a status word other than 9000. */
export function statusError(sw: number): OnboardError {
  if ((sw & 0xfff0) === SW.retryCounterSw) return new WrongPinError(sw & 0x0f);
  switch (sw) {
    case SW.authMethodBlocked:
      return new PinBlockedError("PIN blocked (card returned 6983)");
    case SW.notEnoughMemory:
      return new CardFullError("card full: not enough memory for the object (card returned 6A84)");
    case SW.securityStatusNotSatisfied:
      return new SecurityStatusError(sw, describe(sw));
    case SW.fileNotFound:
      return new NotFoundError(sw, describe(sw));
    case SW.referenceNotFound:
      return new ReferenceNotFoundError(sw, describe(sw));
    case SW.wrongLength:
      return new WrongLengthError(sw, describe(sw));
    case SW.incorrectData:
      return new IncorrectDataError(sw, describe(sw));
    case SW.functionNotSupported:
      return new FunctionNotSupportedError(sw, describe(sw));
    case SW.incorrectP1P2:
    case SW.wrongP1P2:
      return new IncorrectParametersError(sw, describe(sw));
    case SW.conditionsNotSatisfied:
      return new ConditionsNotSatisfiedError(sw, describe(sw));
    case SW.insNotSupported:
      return new InsNotSupportedError(sw, describe(sw));
    case SW.claNotSupported:
      return new ClaNotSupportedError(sw, describe(sw));
    default:
      return new UnknownStatusError(sw, describe(sw));
  }
}
