/**
 * What each process exit status means (SPEC.md §7), for `--help` and for the JSON error object
 * printed under `--json`. The numbers are ExitCode's (src/errors.ts); this adds the words.
 */
import { ExitCode } from "../errors.js";

export const EXIT_CODE_MEANINGS: Readonly<Record<ExitCode, string>> = {
  [ExitCode.ok]: "ok",
  [ExitCode.internal]: "internal error",
  [ExitCode.usage]: "usage (bad arguments or input file)",
  [ExitCode.noCard]: "no card (also: no reader, or pcscd not running — its own message and code)",
  [ExitCode.cardNotTrusted]: "card not trusted",
  [ExitCode.cardRevoked]: "card revoked",
  [ExitCode.wrongPin]: "wrong PIN (the card's counter dropped) or wrong key passphrase",
  [ExitCode.pinBlocked]: "PIN blocked",
  [ExitCode.integrity]: "signature or integrity failure",
  [ExitCode.notForThisHsm]: "not for this HSM (serial or owner)",
  [ExitCode.replay]: "replay or rollback",
  [ExitCode.validity]: "expired or not yet valid",
  [ExitCode.quorum]: "quorum not met",
  [ExitCode.networkApply]: "network apply failed (rolled back)",
  [ExitCode.addressConflict]: "address conflict",
  [ExitCode.cardFull]: "card full",
  [ExitCode.planInvalid]: "plan invalid",
  [ExitCode.interrupted]: "interrupted (SIGINT or SIGTERM)",
};

/** The table `hsm-onboard --help` ends with. */
export function exitCodeHelp(): string {
  const rows = Object.entries(EXIT_CODE_MEANINGS)
    .map(([code, meaning]) => ({ code: Number(code), meaning }))
    .sort((a, b) => a.code - b.code)
    .map(({ code, meaning }) => `  ${String(code).padStart(3)}  ${meaning}`);
  return [
    "",
    "Exit status of every command:",
    ...rows,
    "",
    'With --json a failure also prints {"error": {"code", "exit", "message"}} on standard output.',
    "Documentation: the docs/ folder of the package (DECISIONS, FORMATS, PKI, CARD, SECURITY, DEMO).",
  ].join("\n");
}
