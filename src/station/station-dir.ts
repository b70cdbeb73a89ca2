/**
 * The station directory (SPEC.md §7): what the officer's station keeps between commands. Default
 * `$XDG_DATA_HOME/hsm-onboard/station`, else `~/.local/share/hsm-onboard/station`.
 *
 *   <dir>/                      mode 0700
 *     station.json              marker: format, version, creation time
 *     station-id                the station's random id (32 hex digits): names its sequence marks
 *                               outside the directory (sequence-mark.ts)
 *     root.pem                  the trust anchor: the self-signed manufacturer root (`station init`)
 *     issuers/<id>.pem          token CA certificates checked against root.pem: the CRL issuers
 *     crls/<id>.pem             the current CRL of each token CA (`station update-crl`)
 *     inventory.sqlite          the station inventory (src/station/inventory, issue 14): plans, writes,
 *                               receipts, journal, and the per-owner sequence counters — unless
 *                               --db/HSM_ONBOARD_DB names a shared PostgreSQL database
 *     sequences.json.imported   the counter file of older releases, once migrated (sequence-store.ts)
 *     journal.log               hash-chained record of sequences and CRLs taken: the high-water mark
 *                               that finds a file put back (station-journal.ts)
 *     totp.json                 officers' TOTP enrolments and last accepted time steps (totp.ts)
 *     oce.key.pem, oce.pem      the station's SCP11a OCE key (0600) and certificate (oce.ts, pki issue-oce)
 *     receipts-archive/         receipts taken off a card when it was rewritten (write-card.ts)
 *     card-sets/<cfg id>.json   a card set being written (plans larger than one card): which of its
 *                               cards are written, for `station write --resume` (card-set-journal.ts)
 *     .<name>.lock              lock files (withStationLock)
 *
 * `<id>` names a token CA by the SHA-256 of its subject name (DER), so a station can serve several
 * owners, each with its own token CA and CRL. Every file is written atomically (temporary file,
 * fsync, rename, fsync of the directory) with mode 0600: TOTP secrets live here, and the rest is
 * nobody else's business either.
 */

import { createHash } from "node:crypto";
import { mkdir, readdir, readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import type { z } from "zod";
import { StationBusyError, UsageError } from "../errors.js";
import { crlNumberOf, crlToPem } from "../pki/crl.js";
import { certificateParts, crlParts } from "../pki/der.js";
import { atomicWriteFile, readJsonFile } from "../util/fs.js";
import { withLockFile } from "../util/lock.js";
import { PemConverter, X509Certificate, X509Crl } from "../util/x509.js";
import { ensureStationId } from "./sequence-mark.js";
import { checkCrlNotRolledBack, readJournal } from "./station-journal.js";

export { StationBusyError } from "../errors.js";

export const STATION_FILES = {
  marker: "station.json",
  trustAnchor: "root.pem",
  issuers: "issuers",
  crls: "crls",
  sequences: "sequences.json",
  totp: "totp.json",
  receiptsArchive: "receipts-archive",
} as const;

export const STATION_FORMAT = "hsm-onboard/station";
export const STATION_VERSION = 1;
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;

/** `$XDG_DATA_HOME/hsm-onboard/station`, else `$HOME/.local/share/hsm-onboard/station`. */
export function defaultStationDir(env: Readonly<Record<string, string | undefined>>): string {
  const xdg = env.XDG_DATA_HOME;
  // XDG Base Directory spec: a relative XDG_DATA_HOME is invalid and must be ignored.
  const base = xdg?.startsWith("/")
    ? xdg
    : join(env.HOME && env.HOME.length > 0 ? env.HOME : homedir(), ".local/share");
  return join(base, "hsm-onboard", "station");
}

/** The station directory a command works on: `--station-dir` (relative to `cwd`) or the default. */
export function resolveStationDir(
  option: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
  cwd: string,
): string {
  return option === undefined ? defaultStationDir(env) : resolve(cwd, option);
}

/** Creates the directory (0700) if needed. */
export async function ensureStationDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: DIR_MODE });
}

/** Writes `data` to `<dir>/<relative>` atomically with mode 0600, creating subdirectories (0700). */
export async function writeStationFile(
  dir: string,
  relative: string,
  data: string | Uint8Array,
): Promise<void> {
  const path = join(dir, relative);
  const parent = join(path, "..");
  if (parent !== dir) await mkdir(parent, { recursive: true, mode: DIR_MODE });
  await atomicWriteFile(path, data, FILE_MODE);
}

/** Reads and validates a JSON file of the station; undefined when it does not exist. */
export async function readStationJson<T>(
  dir: string,
  relative: string,
  schema: z.ZodType<T>,
): Promise<T | undefined> {
  return readJsonFile(join(dir, relative), schema, {
    missing: () => undefined,
    unreadable: (path, error) => new UsageError(`cannot read ${path}: ${error.code ?? String(error)}`),
  });
}

export function jsonText(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

// ---- locks ----------------------------------------------------------------------------------------

export interface LockOptions {
  /** How long to wait for another holder (default 10 s). */
  readonly timeoutMs?: number;
}

/**
 * Runs `fn` holding `<dir>/.<name>.lock` (src/util/lock.ts: born complete, holding the PID; a lock
 * whose process is gone is broken). Waits, with bounded back-off, up to `timeoutMs` for another
 * holder. StationBusyError when the wait runs out.
 */
export async function withStationLock<T>(
  dir: string,
  name: string,
  fn: () => Promise<T>,
  options: LockOptions = {},
): Promise<T> {
  await ensureStationDir(dir);
  const path = join(dir, `.${name}.lock`);
  return withLockFile(
    path,
    {
      waitMs: options.timeoutMs ?? 10_000,
      busy: () =>
        new StationBusyError(
          `${dir} is busy: another hsm-onboard command holds ${path} (remove it if none is running)`,
        ),
    },
    fn,
  );
}

// ---- trust anchor, issuers, CRLs ------------------------------------------------------------------

/** A short stable file name for a CA: SHA-256 of its subject name DER, first 16 bytes, hex. */
export function issuerId(nameDer: Uint8Array): string {
  return createHash("sha256").update(nameDer).digest("hex").slice(0, 32);
}

export function certificateToPem(certificate: X509Certificate): string {
  return `${certificate.toString("pem")}\n`;
}

export async function readTrustAnchorIfAny(dir: string): Promise<X509Certificate | undefined> {
  const path = join(dir, STATION_FILES.trustAnchor);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  try {
    return new X509Certificate(text);
  } catch (cause) {
    throw new UsageError(`${path} is not a readable certificate`, { cause });
  }
}

/** The station's trust anchor; UsageError when the station was not initialised. */
export async function readTrustAnchor(dir: string): Promise<X509Certificate> {
  const anchor = await readTrustAnchorIfAny(dir);
  if (!anchor) {
    throw new UsageError(
      `${dir} is not an initialised station directory (no ${STATION_FILES.trustAnchor}): run hsm-onboard station init --trust ROOT.pem`,
    );
  }
  return anchor;
}

/** Writes the marker and the trust anchor. The caller has checked the anchor (trust.ts). */
export async function writeTrustAnchor(dir: string, anchor: X509Certificate, now: Date): Promise<void> {
  await ensureStationDir(dir);
  await writeStationFile(
    dir,
    STATION_FILES.marker,
    jsonText({ format: STATION_FORMAT, version: STATION_VERSION, createdAt: now.toISOString() }),
  );
  await writeStationFile(dir, STATION_FILES.trustAnchor, certificateToPem(anchor));
  await ensureStationId(dir);
}

/** Token CA certificates the station has checked and kept (issuers of CRLs). */
export async function readIssuers(dir: string): Promise<X509Certificate[]> {
  const out: X509Certificate[] = [];
  for (const file of await listFiles(join(dir, STATION_FILES.issuers), ".pem")) {
    try {
      out.push(new X509Certificate(await readFile(file, "utf8")));
    } catch (cause) {
      throw new UsageError(`${file} is not a readable certificate`, { cause });
    }
  }
  return out;
}

/** Keeps a token CA certificate (already checked against the trust anchor); no-op when it is known. */
export async function storeIssuer(dir: string, certificate: X509Certificate): Promise<void> {
  const relative = join(
    STATION_FILES.issuers,
    `${issuerId(certificateParts(certificate.rawData).subject)}.pem`,
  );
  const pem = certificateToPem(certificate);
  const existing = await readFile(join(dir, relative), "utf8").catch(() => undefined);
  if (existing === pem) return;
  await writeStationFile(dir, relative, pem);
}

export interface StoredCrl {
  readonly crl: X509Crl;
  readonly crlNumber: bigint;
  /** issuerId of the CRL's issuer name. */
  readonly issuer: string;
}

/** The current CRL of every token CA the station knows. */
export async function readCrls(dir: string): Promise<StoredCrl[]> {
  const out: StoredCrl[] = [];
  for (const file of await listFiles(join(dir, STATION_FILES.crls), ".pem")) {
    let crl: X509Crl;
    let crlNumber: bigint | undefined;
    try {
      crl = new X509Crl(await readFile(file, "utf8"));
      crlNumber = crlNumberOf(crl);
    } catch (cause) {
      throw new UsageError(`${file} is not a readable CRL`, { cause });
    }
    if (crlNumber === undefined) throw new UsageError(`${file}: CRL without a CRL number`);
    out.push({ crl, crlNumber, issuer: issuerId(crlParts(crl.rawData).issuer) });
  }
  return out;
}

/** The stored CRL issued under `issuerName` (DER), if any. */
export async function readCrlOf(dir: string, issuerName: Uint8Array): Promise<StoredCrl | undefined> {
  const id = issuerId(issuerName);
  return (await readCrls(dir)).find((c) => c.issuer === id);
}

function crlRelativePath(crl: X509Crl): string {
  return join(STATION_FILES.crls, `${issuerId(crlParts(crl.rawData).issuer)}.pem`);
}

/** Where the station keeps the CRL of this CRL's issuer. */
export function crlPath(dir: string, crl: X509Crl): string {
  return join(dir, crlRelativePath(crl));
}

/** Replaces the stored CRL of the CRL's issuer. The caller has verified it (trust.ts). */
export async function storeCrl(dir: string, crl: X509Crl): Promise<string> {
  await writeStationFile(dir, crlRelativePath(crl), crlToPem(crl));
  return crlPath(dir, crl);
}

/** PEM or DER bytes of a certificate file → certificates (a PEM file may hold several). */
export function parseCertificates(bytes: Uint8Array, shownAs: string): X509Certificate[] {
  const text = Buffer.from(bytes).toString("latin1");
  try {
    if (text.includes("-----BEGIN")) {
      return PemConverter.decode(text).map((der) => new X509Certificate(der));
    }
    return [new X509Certificate(new Uint8Array(bytes).slice().buffer)];
  } catch (cause) {
    throw new UsageError(`${shownAs} is not a readable X.509 certificate`, { cause });
  }
}

async function listFiles(dir: string, suffix: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
  return names
    .filter((n) => n.endsWith(suffix) && !n.startsWith("."))
    .sort()
    .map((n) => join(dir, n));
}

/** Everything the station trusts, read once per command: anchor, current CRLs, known token CAs. */
export async function loadStationTrust(dir: string): Promise<{
  trustAnchor: X509Certificate;
  crls: X509Crl[];
  knownIssuers: X509Certificate[];
}> {
  const trustAnchor = await readTrustAnchor(dir);
  const crls = await readCrls(dir);
  // A CRL file put back (older than one the station took in) is a rollback: 17 (station-journal.ts).
  const journal = await readJournal(dir);
  for (const c of crls) checkCrlNotRolledBack(journal, c.issuer, c.crlNumber, c.crl.issuer);
  return {
    trustAnchor,
    crls: crls.map((c) => c.crl),
    knownIssuers: await readIssuers(dir),
  };
}
