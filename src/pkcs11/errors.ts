import { Pkcs11Error } from "../errors.js";
import { CKR_NAMES } from "./constants.js";

export { Pkcs11Error, Pkcs11UnavailableError } from "../errors.js";

/**
 * The Pkcs11Error for a failed call: `operation failed: CKR_NAME (detail)`. Carries the function
 * and the CK_RV; never a PIN.
 */
export function pkcs11Failure(
  /** The Cryptoki function, e.g. `C_Sign`, or the operation of this layer. */
  operation: string,
  /** CK_RV, when the module returned one. */
  rv: number | undefined,
  detail?: string,
  options?: { cause?: unknown },
): Pkcs11Error {
  return new Pkcs11Error(
    `${operation} failed` + (rv === undefined ? "" : `: ${rvName(rv)}`) + (detail ? ` (${detail})` : ""),
    operation,
    rv,
    options,
  );
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
