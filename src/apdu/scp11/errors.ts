/**
 * Typed failures of the SCP11 secure channel. Every one of them is an integrity failure (exit 15):
 * a MAC, a receipt, a padding or an ephemeral key that does not check out, or a session that can
 * no longer be trusted. The host never falls back to plaintext after one of them.
 */
import { IntegrityError, MalformedError } from "../../errors.js";

/** A MAC, receipt or padding failed, or the session was ended: the channel is closed (exit 15). */
export class ScpIntegrityError extends IntegrityError {
  override readonly code: string = "ERR_SCP_INTEGRITY";
}

/** Handshake bytes (authenticate data or answer, certificate store) that do not parse (exit 15). */
export class ScpMalformedError extends MalformedError {
  override readonly code: string = "ERR_SCP_MALFORMED";
}
