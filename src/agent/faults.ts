/**
 * Crash and signal injection for the fault tests (test/security/crash.test.ts, SPEC.md §8 "the process killed
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
 *   card-inserted                 a card was opened; nothing read from it yet
 *
 * HSM_ONBOARD_SIGTERM_AT names a point where the process sends itself SIGTERM instead (issue 12:
 * "SIGTERM finishes or rolls back the step in progress and exits 0"): the signal is delivered as a
 * real one, and its handler runs at the next turn of the event loop — inside the step in progress.
 */

export const CRASH_AT_ENV = "HSM_ONBOARD_CRASH_AT";
export const SIGTERM_AT_ENV = "HSM_ONBOARD_SIGTERM_AT";

export type CrashPoint =
  | "after-snapshot"
  | `mid-apply:${number}`
  | "after-apply-before-verify"
  | "after-verify-before-persist"
  | "after-persist-before-receipt"
  | "card-inserted";

/** Called by the agent at each crash point; does nothing unless a test armed that point. */
export interface AgentFaults {
  reached(point: CrashPoint): void;
}

export const NO_FAULTS: AgentFaults = { reached: () => {} };

/** The faults the environment asks for (HSM_ONBOARD_CRASH_AT, HSM_ONBOARD_SIGTERM_AT), or none. */
export function faultsFromEnv(env: Readonly<Record<string, string | undefined>> = process.env): AgentFaults {
  const crashAt = env[CRASH_AT_ENV];
  const sigtermAt = env[SIGTERM_AT_ENV];
  if (!crashAt && !sigtermAt) return NO_FAULTS;
  let signalled = false;
  return {
    reached(point) {
      if (point === sigtermAt && !signalled) {
        signalled = true;
        process.kill(process.pid, "SIGTERM");
      }
      if (point !== crashAt) return;
      process.kill(process.pid, "SIGKILL");
      process.abort(); // not reached: SIGKILL cannot be caught
    },
  };
}
