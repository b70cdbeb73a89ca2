/**
 * Typed failures of the SCP11 secure channel. Every one of them is an integrity failure (exit 15):
 * a MAC, a receipt, a padding or an ephemeral key that does not check out, or a session that can
 * no longer be trusted. The host never falls back to plaintext after one of them. Defined with every
 * other error in src/errors.ts.
 */
export { ScpIntegrityError, ScpMalformedError, ScpOceRefusedError, ScpRequestError } from "../../errors.js";
