/**
 * What the station and the agent need from a secure element, whatever its backend (SPEC.md §3,
 * layer `secure-element`): a PIV card through PC/SC or in-process (piv-element.ts), or a PKCS#11
 * token (pkcs11-element.ts). The flows see only this interface; test/secure-element/suite.ts runs
 * one behaviour suite against every backend.
 */
import { type KeyObject, randomBytes, X509Certificate } from "node:crypto";
import { type EcdsaAlgorithm, ecdsaAlgorithmForKey, verifyEcdsaRaw } from "../crypto/ecdsa.js";
import type { Signer } from "../crypto/signer.js";
import { CardFullError, CardNotTrustedError, MalformedError } from "../errors.js";

export type { Signer } from "../crypto/signer.js";

/** The certificates a secure element carries (SPEC.md §4). DER throughout. */
export interface SecureElementIdentity {
  /**
   * Certificate of the card-authentication key (PIV slot 9E): the card's identity, proven live by
   * {@link SecureElement.proveChallenge} without a PIN.
   */
  readonly cardAuthentication: Uint8Array;
  /** Certificate of the digital-signature key (PIV slot 9C) that signs configurations. */
  readonly signing: Uint8Array;
  /**
   * CA certificates above the two leaves, nearest first (the token CA), as stored on the card. The
   * manufacturer root is not among them: the verifier has its own copy and trusts only that.
   */
  readonly intermediates: readonly Uint8Array[];
}

/** A signature by the card-authentication key over a verifier's challenge. */
export interface ChallengeProof {
  /** ES256 for a P-256 key, ES384 for P-384: the hash applied to the challenge. */
  readonly algorithm: EcdsaAlgorithm;
  /** ECDSA over the challenge, raw r‖s. */
  readonly signature: Uint8Array;
}

export interface SecureElementCapacity {
  /** The storage budget for items and the identity certificates. */
  readonly totalBytes: number;
  /** Bytes taken by items and identity certificates. */
  readonly usedBytes: number;
  readonly freeBytes: number;
  /** The largest single item the element stores. */
  readonly maxItemBytes: number;
}

/**
 * How commands reach the secure element (SPEC §4, Secure channel):
 * - `scp11`: a GlobalPlatform SCP11 channel the host opened and checked (PIV cards, YubiKey 5.7+);
 * - `plaintext`: a PIV card without the channel, used only because the operator allowed it;
 * - `token`: a PKCS#11 token: the channel between library and token is the token's business (its
 *   vendor's driver and transport); this project neither opens nor claims one.
 */
export type SecureChannelInfo =
  | {
      readonly kind: "scp11";
      readonly protocol: "SCP11a" | "SCP11b" | "SCP11c";
      readonly chain: readonly string[];
    }
  | { readonly kind: "plaintext" }
  | { readonly kind: "token" };

/** One word for logs, status and receipts: "SCP11b", "SCP11a", "plaintext", "token". */
export function channelLabel(channel: SecureChannelInfo): string {
  return channel.kind === "scp11" ? channel.protocol : channel.kind;
}

export interface SecureElementInfo {
  readonly backend: "piv" | "pkcs11";
  /** The channel commands travel in (the capability: "token" for PKCS#11). */
  readonly channel: SecureChannelInfo;
  /** Reader name (PIV) or token label (PKCS#11), for messages and the audit log. */
  readonly name: string;
  /** The element's serial number when it reports one (YubiKey serial, PKCS#11 token serial). */
  readonly serial?: string;
  /** Reached over a contactless (NFC) interface. */
  readonly contactless: boolean;
}

export interface ItemInfo {
  readonly name: string;
  readonly size: number;
}

/**
 * One open secure element. Methods reject with the project's typed errors: WrongPinError(triesLeft),
 * PinBlockedError, PinRequiredError (an operation that needs the PIN before verifyPin), CardFullError,
 * NoCardError (the element went away), CardNotTrustedError (not personalised as an onboarding card).
 * No method puts a PIN in a message, a log line or an error.
 */
export interface SecureElement extends AsyncDisposable {
  readonly info: SecureElementInfo;

  /** The identity certificates. Needs no PIN. */
  identity(): Promise<SecureElementIdentity>;

  /**
   * Signs `challenge` with the card-authentication key (PIV 9E), without a PIN. The caller draws a
   * fresh random challenge ({@link newChallenge}) and checks the answer against the card-authentication
   * certificate with {@link verifyChallengeProof}: a certificate copied onto another card fails there.
   */
  proveChallenge(challenge: Uint8Array): Promise<ChallengeProof>;

  /**
   * PIN tries left before the PIN blocks: 0 when blocked, -1 when the element does not tell (a
   * PKCS#11 token reports only "count low" / "final try" / "locked" flags; a PIV card that has the
   * PIN verified answers the empty VERIFY with 9000 and no count).
   */
  pinTriesLeft(): Promise<number>;

  /**
   * Verifies the PIN and keeps the element unlocked for this session: writes and the signer need it.
   * Wrong: WrongPinError(triesLeft, -1 when unknown). Blocked: PinBlockedError.
   */
  verifyPin(pin: string): Promise<void>;

  /**
   * The configuration signer: the digital-signature key (PIV 9C, PIN policy "always") with its
   * certificate chain (leaf, then {@link SecureElementIdentity.intermediates}). Its `sign` rejects with
   * PinRequiredError until {@link verifyPin} succeeded.
   */
  signer(): Promise<Signer>;

  /** The bytes of item `name`, or undefined when it is not on the element. Needs no PIN. */
  readItem(name: string): Promise<Uint8Array | undefined>;

  /**
   * Stores item `name` (1..maxItemBytes bytes), replacing any previous value. Atomic for readers where
   * the backend allows: one PIV PUT DATA; on PKCS#11 a create-then-swap (pkcs11-token.ts). Needs the
   * PIN (PinRequiredError). CardFullError when it exceeds maxItemBytes or the free budget; nothing
   * is written then.
   */
  writeItem(name: string, bytes: Uint8Array): Promise<void>;

  /** Removes item `name`; false when it was not there. Needs the PIN. */
  deleteItem(name: string): Promise<boolean>;

  /** The items on the element, in {@link compareItemNames} order. Needs no PIN. */
  listItems(): Promise<ItemInfo[]>;

  capacity(): Promise<SecureElementCapacity>;

  /**
   * Ends the session and forgets the PIN. PKCS#11: logout, close the session, release (and with the
   * last user finalise) the module. PIV: power the card off by closing the transport, or, when the
   * element was opened with `ownsTransport: false`, log the PIN out and leave the transport open.
   * Idempotent; also `await using element = …`.
   */
  close(): Promise<void>;
}

// ---- items ------------------------------------------------------------------------------------

// The item names and where each lives: card-layout.ts, the one table.
export {
  compareItemNames,
  formatItemName,
  type ItemName,
  MAX_RECEIPTS,
  MAX_SHARDS,
  parseItemName,
  requireItemName,
  YUBIKEY_STORAGE,
} from "./card-layout.js";

// ---- capacity ---------------------------------------------------------------------------------

export function capacityOf(
  totalBytes: number,
  usedBytes: number,
  maxItemBytes: number,
): SecureElementCapacity {
  return { totalBytes, usedBytes, freeBytes: Math.max(0, totalBytes - usedBytes), maxItemBytes };
}

/**
 * Throws CardFullError when writing `size` bytes as `name` (replacing `previousSize` bytes, 0 if new)
 * does not fit. Empty items are refused: on a PIV card an empty object is a deleted one.
 */
export function assertItemFits(
  capacity: SecureElementCapacity,
  name: string,
  size: number,
  previousSize: number,
): void {
  if (size === 0) throw new RangeError(`item ${name} is empty; delete it instead`);
  if (size > capacity.maxItemBytes) {
    throw new CardFullError(
      `item ${name} is ${size} bytes; the card stores at most ${capacity.maxItemBytes} bytes per item`,
    );
  }
  const needed = size - previousSize;
  if (needed > capacity.freeBytes) {
    throw new CardFullError(
      `item ${name} needs ${needed} more bytes; the card has ${capacity.freeBytes} of ${capacity.totalBytes} free`,
    );
  }
}

// ---- certificates item ------------------------------------------------------------------------

/**
 * The `certificates` item: the intermediate CA certificates, concatenated DER (each is a
 * self-delimiting SEQUENCE, so `openssl x509 -inform DER` reads the first and a split is exact).
 */
export function encodeCertificateList(certificates: readonly Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(certificates.map((c) => Buffer.from(c))));
}

/** Splits the `certificates` item back into DER certificates; MalformedError when it is not that. */
export function decodeCertificateList(bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    const length = derElementLength(bytes, pos);
    if (length === undefined || pos + length > bytes.length) {
      throw new MalformedError(`certificates item: malformed DER at offset ${pos}`);
    }
    out.push(bytes.slice(pos, pos + length));
    pos += length;
  }
  return out;
}

/** Total length (header + content) of the DER SEQUENCE at `pos`, or undefined if it is not one. */
function derElementLength(bytes: Uint8Array, pos: number): number | undefined {
  if (bytes[pos] !== 0x30) return undefined;
  const first = bytes[pos + 1];
  if (first === undefined) return undefined;
  if (first < 0x80) return 2 + first;
  const count = first & 0x7f;
  if (count === 0 || count > 3 || pos + 2 + count > bytes.length) return undefined;
  let length = 0;
  for (let i = 0; i < count; i++) length = length * 256 + (bytes[pos + 2 + i] ?? 0);
  return 2 + count + length;
}

// ---- challenge --------------------------------------------------------------------------------

/** Shortest challenge an element signs: anything shorter could be replayed or guessed. */
export const MIN_CHALLENGE_BYTES = 16;
/** Longest challenge an element signs. */
export const MAX_CHALLENGE_BYTES = 1024;

/** A fresh random challenge for {@link SecureElement.proveChallenge}. */
export function newChallenge(bytes = 32): Uint8Array {
  if (bytes < MIN_CHALLENGE_BYTES)
    throw new RangeError(`a challenge needs at least ${MIN_CHALLENGE_BYTES} bytes`);
  return new Uint8Array(randomBytes(bytes));
}

export function assertChallengeLength(challenge: Uint8Array): void {
  if (challenge.length < MIN_CHALLENGE_BYTES || challenge.length > MAX_CHALLENGE_BYTES) {
    throw new RangeError(
      `a challenge must be ${MIN_CHALLENGE_BYTES}..${MAX_CHALLENGE_BYTES} bytes, got ${challenge.length}`,
    );
  }
}

/**
 * Checks a challenge proof against the card-authentication certificate: the card holds the private
 * key of the certificate it presents. Throws CardNotTrustedError (with the reason as `cause`) when it
 * does not; returns nothing when it does. Validating the certificate itself is the pki layer's job.
 */
export function verifyChallengeProof(
  cardAuthenticationCertificate: Uint8Array,
  challenge: Uint8Array,
  proof: ChallengeProof,
): void {
  let publicKey: KeyObject;
  try {
    publicKey = new X509Certificate(cardAuthenticationCertificate).publicKey;
  } catch (cause) {
    throw new CardNotTrustedError("the card-authentication certificate cannot be read", { cause });
  }
  const algorithm = ecdsaAlgorithmForKey(publicKey);
  if (algorithm !== proof.algorithm) {
    throw new CardNotTrustedError(
      `the card answered the challenge with ${proof.algorithm}, its certificate holds a ${algorithm ?? "non-ECDSA"} key`,
    );
  }
  try {
    verifyEcdsaRaw(publicKey, algorithm, challenge, proof.signature);
  } catch (cause) {
    throw new CardNotTrustedError(
      "the card does not hold the private key of its card-authentication certificate (challenge proof failed)",
      { cause },
    );
  }
}
