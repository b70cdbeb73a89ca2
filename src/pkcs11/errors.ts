import { ExitCode, OnboardError } from "../errors.js";
import { CKR_NAMES } from "./constants.js";

/**
 * A PKCS#11 call failed with a return value that has no domain meaning of its own (the ones that do
 * become WrongPinError, PinBlockedError, PinRequiredError, NoCardError or CardFullError). Carries the
 * function and the CK_RV; never a PIN.
 */
export class Pkcs11Error extends OnboardError {
  readonly code = "ERR_PKCS11";
  readonly exitCode = ExitCode.internal;
  constructor(
    /** The Cryptoki function, e.g. `C_Sign`, or the operation of this layer. */
    readonly operation: string,
    /** CK_RV, when the module returned one. */
    readonly rv: number | undefined,
    detail?: string,
    options?: { cause?: unknown },
  ) {
    super(
      `${operation} failed` + (rv === undefined ? "" : `: ${rvName(rv)}`) + (detail ? ` (${detail})` : ""),
      options,
    );
  }
}

/** The optional `pkcs11js` binding is not installed, or the PKCS#11 module could not be loaded. */
export class Pkcs11UnavailableError extends OnboardError {
  readonly code = "ERR_PKCS11_UNAVAILABLE";
  readonly exitCode = ExitCode.internal;
}

export function rvName(rv: number): string {
  return CKR_NAMES[rv] ?? `CKR_0x${rv.toString(16).padStart(8, "0")}`;
}

/**
 * The CK_RV carried by an error from the `pkcs11js` binding (its Pkcs11Error has a numeric `code`
 * and a `CKR_…` message), or undefined for any other error.
 */
export function returnValueOf(error: unknown): number | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const { code, message } = error as { code?: unknown; message?: unknown };
  if (typeof code === "number" && code > 0 && typeof message === "string" && message.startsWith("CKR_")) {
    return code;
  }
  return undefined;
}
