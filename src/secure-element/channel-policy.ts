/**
 * The secure-channel policy of station and agent (SPEC §4, Secure channel; issue 11):
 * - the SCP trust anchors (card vendors' CAs: Yubico's SD root for real YubiKeys, the emulator's
 *   vendor CA for the virtual card) are installed once, with `station init --scp-trust FILE` or
 *   `agent factory-init --scp-trust FILE`, as `scp-trust.pem` in the station or agent directory;
 * - with anchors installed, every PIV card must open SCP11b to one of them: a card that shows it has
 *   no SCP at all (SELECT ISD 6A82, or GET DATA BF21 6A88/6A82: ScpAbsentError) is refused (exit 11)
 *   unless the run passes `--allow-plaintext`, which is then recorded (audit log, agent status,
 *   receipt, station output);
 * - any other handshake failure (an odd status word, a refusal once the card's SCP certificate
 *   store was read, unknown vendor, bad receipt, invalid point) is never softened to plaintext, with
 *   or without `--allow-plaintext` (exit 15; 11 for an untrusted SCP chain).
 * The channel is required by default: without anchors installed every PIV card is refused (exit 11)
 * unless the run passes `--allow-plaintext` (then recorded in the same places). PKCS#11 tokens are
 * not concerned (their channel is the token's business).
 */
import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { DEFAULT_SCP11B_KVN, type OceCredentials } from "../apdu/scp11/host.js";
import { UsageError } from "../errors.js";
import { atomicWriteFile } from "../util/fs.js";
import type { SecureChannelPolicy } from "./piv-element.js";

export const SCP_TRUST_FILE = "scp-trust.pem";
const MAX_SCP_ANCHORS = 8;

/** Parses PEM text holding one or more CA certificates; UsageError for anything else. */
export function parseScpTrust(text: string, shownAs: string): Uint8Array[] {
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0 || blocks.length > MAX_SCP_ANCHORS) {
    throw new UsageError(`${shownAs}: expected 1 to ${MAX_SCP_ANCHORS} PEM certificates (SCP trust anchors)`);
  }
  return blocks.map((pem, i) => {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(pem);
    } catch (cause) {
      throw new UsageError(`${shownAs}: certificate ${i + 1} does not parse`, { cause });
    }
    if (!cert.ca) throw new UsageError(`${shownAs}: "${cert.subject}" is not a CA certificate`);
    return new Uint8Array(cert.raw);
  });
}

/** Installs the SCP trust anchors into `dir` (station or agent directory). */
export async function installScpTrust(dir: string, text: string, shownAs: string): Promise<number> {
  const anchors = parseScpTrust(text, shownAs);
  await atomicWriteFile(join(dir, SCP_TRUST_FILE), text.endsWith("\n") ? text : `${text}\n`);
  return anchors.length;
}

/** The installed SCP trust anchors, or undefined when none are installed. */
export async function readScpTrust(dir: string): Promise<Uint8Array[] | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, SCP_TRUST_FILE), "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  return parseScpTrust(text, join(dir, SCP_TRUST_FILE));
}

/**
 * The policy a run applies: SCP11b to the installed anchors — SCP11a when the run has OCE
 * credentials (a station after `pki issue-oce`) — plaintext only if allowed.
 */
export function secureChannelPolicy(
  anchors: readonly Uint8Array[] | undefined,
  allowPlaintext: boolean,
  oce?: OceCredentials,
): SecureChannelPolicy {
  // No anchors installed: no channel can be opened, so a PIV card is used only when plaintext is
  // explicitly allowed (required by default, issue 11).
  if (!anchors) return { allowPlaintext };
  if (oce) return { scp: { variant: "a", kvn: DEFAULT_SCP11B_KVN, trust: { anchors }, oce }, allowPlaintext };
  return { scp: { variant: "b", kvn: DEFAULT_SCP11B_KVN, trust: { anchors } }, allowPlaintext };
}
