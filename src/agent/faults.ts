/**
 * Crash injection for the fault tests (test/security/crash.test.ts, SPEC.md §8 "the process killed
 * mid-apply"): a named point at each step of an apply where the agent process can be made to die at
 * once — SIGKILL to itself, no handler, no flush — so that a test can start it again and check that
 * the state store and the network are reconciled.
 *
 * Inert unless the environment variable HSM_ONBOARD_CRASH_AT names one of the points:
 *
 *   after-snapshot                the snapshot is persisted with stage `applying`; nothing changed yet
 *   mid-apply:N                   right after the N-th changing `ip` command of the apply (iproute2)
 *   after-apply-before-verify     the apply returned; the verification has not run
 *   after-verify-before-persist   verified; `configured` not yet persisted
 *   after-persist-before-receipt  `configured` persisted; no receipt written yet
 */

export const CRASH_AT_ENV = "HSM_ONBOARD_CRASH_AT";

export type CrashPoint =
  | "after-snapshot"
  | `mid-apply:${number}`
  | "after-apply-before-verify"
  | "after-verify-before-persist"
  | "after-persist-before-receipt";

/** Called by the agent at each crash point; does nothing unless a test armed that point. */
export interface AgentFaults {
  reached(point: CrashPoint): void;
}

export const NO_FAULTS: AgentFaults = { reached: () => {} };

/** The faults the environment asks for (HSM_ONBOARD_CRASH_AT), or none. */
export function faultsFromEnv(env: Readonly<Record<string, string | undefined>> = process.env): AgentFaults {
  const armed = env[CRASH_AT_ENV];
  if (!armed) return NO_FAULTS;
  return {
    reached(point) {
      if (point !== armed) return;
      process.kill(process.pid, "SIGKILL");
      process.abort(); // not reached: SIGKILL cannot be caught
    },
  };
}
