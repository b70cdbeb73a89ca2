/**
 * The officer's optional second factor at the station (SPEC.md §1, step 256): a time-based one-time
 * password (RFC 6238 over HOTP, RFC 4226) from any authenticator app.
 *
 * - Profile: HMAC-SHA-1, 6 digits, 30-second steps from the Unix epoch — what every authenticator
 *   app understands from an `otpauth://` URI. A code is accepted for the current step and one step
 *   either side (clock drift, RFC 6238 §5.2).
 * - Replay protection: the station remembers the last step accepted for each officer and accepts only
 *   a later one, so a code seen over a shoulder cannot be used again, not even within its window.
 * - Enrolments live in the station directory (`totp.json`, mode 0600) with a fresh 20-byte secret
 *   (RFC 4226 §4 recommends 160 bits).
 *
 * A rejected or missing code is TotpRejectedError, exit 13: the same "user authentication failed"
 * status as a wrong PIN, without a tries-left count (the station does not lock TOTP).
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { TotpRejectedError, UsageError } from "../errors.js";
import {
  jsonText,
  type LockOptions,
  readStationJson,
  STATION_FILES,
  withStationLock,
  writeStationFile,
} from "./station-dir.js";

export { TotpRejectedError } from "../errors.js";

export type TotpAlgorithm = "SHA1" | "SHA256" | "SHA512";

export interface TotpParameters {
  readonly algorithm: TotpAlgorithm;
  readonly digits: number;
  readonly periodSeconds: number;
}

/** The one profile the station enrols (what authenticator apps assume). */
export const TOTP_PROFILE: TotpParameters = { algorithm: "SHA1", digits: 6, periodSeconds: 30 };
/** Steps accepted either side of the current one. */
export const TOTP_WINDOW = 1;
export const TOTP_SECRET_BYTES = 20;
export const TOTP_ISSUER = "hsm-onboard";

// ---- RFC 4226 / RFC 6238 ---------------------------------------------------------------------------

const HMAC_NAMES: Record<TotpAlgorithm, string> = { SHA1: "sha1", SHA256: "sha256", SHA512: "sha512" };

/** HOTP (RFC 4226 §5.3): HMAC over the 8-byte big-endian counter, dynamic truncation, `digits` digits. */
export function hotp(
  secret: Uint8Array,
  counter: number,
  digits = 6,
  algorithm: TotpAlgorithm = "SHA1",
): string {
  if (!Number.isSafeInteger(counter) || counter < 0)
    throw new RangeError("HOTP counter must be a non-negative integer");
  if (!Number.isInteger(digits) || digits < 6 || digits > 10)
    throw new RangeError("HOTP codes have 6 to 10 digits");
  const message = Buffer.alloc(8);
  message.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac(HMAC_NAMES[algorithm], secret).update(message).digest();
  const offset = mac[mac.length - 1]! & 0x0f;
  const binary = (mac.readUInt32BE(offset) & 0x7fffffff) >>> 0;
  return (BigInt(binary) % 10n ** BigInt(digits)).toString().padStart(digits, "0");
}

/** The RFC 6238 time step T of `timeSeconds` (T0 = 0). */
export function totpStep(timeSeconds: number, periodSeconds = TOTP_PROFILE.periodSeconds): number {
  return Math.floor(timeSeconds / periodSeconds);
}

/** The TOTP code at `timeSeconds` (Unix time). */
export function totp(
  secret: Uint8Array,
  timeSeconds: number,
  parameters: TotpParameters = TOTP_PROFILE,
): string {
  return hotp(
    secret,
    totpStep(timeSeconds, parameters.periodSeconds),
    parameters.digits,
    parameters.algorithm,
  );
}

/**
 * The time step whose code `code` is, searching the current step and `window` steps either side,
 * latest first; undefined when none matches. Compares in constant time.
 */
export function matchTotp(
  secret: Uint8Array,
  code: string,
  timeSeconds: number,
  parameters: TotpParameters = TOTP_PROFILE,
  window = TOTP_WINDOW,
): number | undefined {
  const normalized = code.replace(/\s+/g, "");
  if (normalized.length !== parameters.digits || !/^[0-9]+$/.test(normalized)) return undefined;
  const given = Buffer.from(normalized);
  const current = totpStep(timeSeconds, parameters.periodSeconds);
  let found: number | undefined;
  // Every candidate is computed and compared, so timing does not say which step matched.
  for (let step = current + window; step >= current - window; step--) {
    if (step < 0) continue;
    const expected = Buffer.from(hotp(secret, step, parameters.digits, parameters.algorithm));
    if (timingSafeEqual(expected, given) && found === undefined) found = step;
  }
  return found;
}

// ---- base32 and otpauth URIs ----------------------------------------------------------------------

const BASE32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/** RFC 4648 §6 base32; without `=` padding when `pad` is false (as otpauth URIs want). */
export function base32Encode(bytes: Uint8Array, pad = false): string {
  let out = "";
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32_ALPHABET[(buffer >>> (bits - 5)) & 31];
      bits -= 5;
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32_ALPHABET[(buffer << (5 - bits)) & 31];
  if (pad) while (out.length % 8 !== 0) out += "=";
  return out;
}

/** RFC 4648 §6 base32, case-insensitive, padding optional; RangeError for anything else. */
export function base32Decode(text: string): Uint8Array {
  const clean = text.replace(/=+$/, "").toUpperCase();
  const out: number[] = [];
  let buffer = 0;
  let bits = 0;
  for (const ch of clean) {
    const value = BASE32_ALPHABET.indexOf(ch);
    if (value < 0) throw new RangeError(`not base32: ${JSON.stringify(ch)}`);
    buffer = (buffer << 5) | value;
    bits += 5;
    if (bits >= 8) {
      out.push((buffer >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
    buffer &= (1 << bits) - 1;
  }
  return Uint8Array.from(out);
}

/**
 * The Key URI an authenticator app scans: `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
 */
export function otpauthUri(options: {
  readonly secret: Uint8Array;
  readonly account: string;
  readonly issuer?: string;
  readonly parameters?: TotpParameters;
}): string {
  const issuer = options.issuer ?? TOTP_ISSUER;
  const p = options.parameters ?? TOTP_PROFILE;
  const label = `${encodeURIComponent(issuer)}:${encodeURIComponent(options.account)}`;
  const query = [
    `secret=${base32Encode(options.secret)}`,
    `issuer=${encodeURIComponent(issuer)}`,
    `algorithm=${p.algorithm}`,
    `digits=${p.digits}`,
    `period=${p.periodSeconds}`,
  ].join("&");
  return `otpauth://totp/${label}?${query}`;
}

// ---- enrolments in the station directory ---------------------------------------------------------

const FORMAT = "hsm-onboard/station-totp";

const enrolmentSchema = z.object({
  secret: z.string().regex(/^[A-Z2-7]+$/),
  algorithm: z.literal("SHA1"),
  digits: z.literal(6),
  periodSeconds: z.literal(30),
  enrolledAt: z.iso.datetime(),
  /** Last time step accepted: only later steps are accepted (replay protection). */
  lastStep: z.int().nonnegative().optional(),
});
const totpFileSchema = z.object({
  format: z.literal(FORMAT),
  version: z.literal(1),
  officers: z.record(z.string().min(1), enrolmentSchema),
});
type TotpFile = z.infer<typeof totpFileSchema>;
type Enrolment = z.infer<typeof enrolmentSchema>;

const MAX_OFFICER_LENGTH = 64;

export interface TotpEnrolment {
  readonly officer: string;
  readonly secret: Uint8Array;
  readonly uri: string;
  readonly parameters: TotpParameters;
  /** An earlier enrolment of this officer was replaced (`force`). */
  readonly replaced: boolean;
}

async function readTotpFile(stationDir: string): Promise<TotpFile> {
  return (
    (await readStationJson(stationDir, STATION_FILES.totp, totpFileSchema)) ?? {
      format: FORMAT,
      version: 1,
      officers: {},
    }
  );
}

function enrolmentOf(file: TotpFile, officer: string): Enrolment | undefined {
  return Object.hasOwn(file.officers, officer) ? file.officers[officer] : undefined;
}

/**
 * Enrols `officer` (the CN of the officer's card certificates) with a new random secret. Refuses to
 * replace an existing enrolment unless `force`.
 */
export async function enrollTotp(
  stationDir: string,
  officer: string,
  options: LockOptions & { readonly force?: boolean; readonly now?: Date } = {},
): Promise<TotpEnrolment> {
  if (officer.length === 0 || officer.length > MAX_OFFICER_LENGTH || officer.trim() !== officer) {
    throw new UsageError(
      `officer name must be 1-${MAX_OFFICER_LENGTH} characters without surrounding spaces`,
    );
  }
  return withStationLock(
    stationDir,
    "totp",
    async () => {
      const file = await readTotpFile(stationDir);
      const replaced = enrolmentOf(file, officer) !== undefined;
      if (replaced && !options.force) {
        throw new UsageError(`officer "${officer}" is already enrolled; pass --force to replace the secret`);
      }
      const secret = new Uint8Array(randomBytes(TOTP_SECRET_BYTES));
      const enrolment: Enrolment = {
        secret: base32Encode(secret),
        algorithm: "SHA1",
        digits: 6,
        periodSeconds: 30,
        enrolledAt: (options.now ?? new Date()).toISOString(),
      };
      const next: TotpFile = { ...file, officers: { ...file.officers, [officer]: enrolment } };
      await writeStationFile(stationDir, STATION_FILES.totp, jsonText(next));
      return {
        officer,
        secret,
        uri: otpauthUri({ secret, account: officer }),
        parameters: TOTP_PROFILE,
        replaced,
      };
    },
    options,
  );
}

/** Whether `officer` must give a TOTP code at this station. */
export async function isTotpEnrolled(stationDir: string, officer: string): Promise<boolean> {
  return enrolmentOf(await readTotpFile(stationDir), officer) !== undefined;
}

/**
 * Checks `code` for `officer` at `now` and records its time step, so neither it nor an earlier code
 * is accepted again. TotpRejectedError when the officer is not enrolled, the code does not match, or
 * it was already used.
 */
export async function verifyOfficerTotp(
  stationDir: string,
  officer: string,
  code: string,
  now: Date = new Date(),
  options: LockOptions = {},
): Promise<void> {
  await withStationLock(
    stationDir,
    "totp",
    async () => {
      const file = await readTotpFile(stationDir);
      const enrolment = enrolmentOf(file, officer);
      if (!enrolment)
        throw new TotpRejectedError(`officer "${officer}" is not enrolled for TOTP at this station`);
      const step = matchTotp(base32Decode(enrolment.secret), code, Math.floor(now.getTime() / 1000));
      if (step === undefined) throw new TotpRejectedError(`wrong TOTP code for officer "${officer}"`);
      if (enrolment.lastStep !== undefined && step <= enrolment.lastStep) {
        throw new TotpRejectedError(
          `TOTP code for officer "${officer}" was already used: wait for the next one`,
        );
      }
      const next: TotpFile = {
        ...file,
        officers: { ...file.officers, [officer]: { ...enrolment, lastStep: step } },
      };
      await writeStationFile(stationDir, STATION_FILES.totp, jsonText(next));
    },
    options,
  );
}
