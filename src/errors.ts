/**
 * Typed errors shared by every layer. Each class carries a stable `code` (switch on it) and the
 * process exit code of SPEC.md §7, so the CLI maps any failure to its documented exit status in one
 * place (src/cli/exit-codes.ts) without knowing the layer that raised it.
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
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export abstract class OnboardError extends Error {
  abstract readonly code: string;
  abstract readonly exitCode: ExitCode;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad command-line use or a bad input file that is not a plan (exit 2). */
export class UsageError extends OnboardError {
  readonly code: string = "ERR_USAGE";
  readonly exitCode: ExitCode = ExitCode.usage;
}

/** No card (or no reader) appeared in time (exit 10). */
export class NoCardError extends OnboardError {
  readonly code: string = "ERR_NO_CARD";
  readonly exitCode: ExitCode = ExitCode.noCard;
}

/** The card or a certificate in its chain is not trusted (exit 11). */
export class CardNotTrustedError extends OnboardError {
  readonly code: string = "ERR_CARD_NOT_TRUSTED";
  readonly exitCode: ExitCode = ExitCode.cardNotTrusted;
}

/** The card's certificate (or an issuer above it) is on a CRL (exit 12). */
export class CardRevokedError extends OnboardError {
  readonly code: string = "ERR_CARD_REVOKED";
  readonly exitCode: ExitCode = ExitCode.cardRevoked;
}

/** Wrong PIN; the card's counter dropped (exit 13). */
export class WrongPinError extends OnboardError {
  readonly code: string = "ERR_WRONG_PIN";
  readonly exitCode: ExitCode = ExitCode.wrongPin;
  constructor(
    readonly triesLeft: number,
    message = `wrong PIN, ${triesLeft} ${triesLeft === 1 ? "try" : "tries"} left`,
  ) {
    super(message);
  }
}

/** The PIN is blocked; the PUK is needed (exit 14). */
export class PinBlockedError extends OnboardError {
  readonly code: string = "ERR_PIN_BLOCKED";
  readonly exitCode: ExitCode = ExitCode.pinBlocked;
}

/** A signature, a hash or an encoding did not check out (exit 15). */
export class IntegrityError extends OnboardError {
  readonly code: string = "ERR_INTEGRITY";
  readonly exitCode: ExitCode = ExitCode.integrity;
}

/** Malformed bytes (CBOR, COSE, DER, TLV): an integrity failure with its own code. */
export class MalformedError extends IntegrityError {
  override readonly code: string = "ERR_MALFORMED";
}

/** The configuration does not name this HSM, or comes from another owner (exit 16). */
export class NotForThisHsmError extends OnboardError {
  readonly code: string = "ERR_NOT_FOR_THIS_HSM";
  readonly exitCode: ExitCode = ExitCode.notForThisHsm;
}

/** An older sequence number or CRL number: a replay or rollback (exit 17). */
export class ReplayError extends OnboardError {
  readonly code: string = "ERR_REPLAY";
  readonly exitCode: ExitCode = ExitCode.replay;
}

/** Outside the validity window: expired or not yet valid (exit 18). */
export class ValidityError extends OnboardError {
  readonly code: string = "ERR_VALIDITY";
  readonly exitCode: ExitCode = ExitCode.validity;
}

/** Fewer valid signatures than the quorum the HSM demands (exit 19). */
export class QuorumError extends OnboardError {
  readonly code: string = "ERR_QUORUM";
  readonly exitCode: ExitCode = ExitCode.quorum;
}

/** Applying the network failed and was rolled back (exit 20). */
export class NetworkApplyError extends OnboardError {
  readonly code: string = "ERR_NETWORK_APPLY";
  readonly exitCode: ExitCode = ExitCode.networkApply;
}

/** An address is already in use on the link (exit 21). */
export class AddressConflictError extends OnboardError {
  readonly code: string = "ERR_ADDRESS_CONFLICT";
  readonly exitCode: ExitCode = ExitCode.addressConflict;
}

/** The card has no room for what must be written (exit 22). */
export class CardFullError extends OnboardError {
  readonly code: string = "ERR_CARD_FULL";
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
  readonly code: string = "ERR_PLAN_INVALID";
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
  readonly code: string = "ERR_PIN_REQUIRED";
  readonly exitCode: ExitCode = ExitCode.internal;
}
