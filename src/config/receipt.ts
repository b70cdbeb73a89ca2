/**
 * Receipts (SPEC.md §5): what an HSM did with a configuration, signed by the HSM's device key and
 * written back to the card, so the station can show, verified, which HSM came up with which
 * addresses. A COSE_Sign1 (tag 18) over a compact CBOR array; CDDL in docs/FORMATS.md.
 *
 * Profile: protected header exactly {1: alg, 33: x5chain} (the device certificate, optionally
 * with its CA: the offline station holds only the root), unprotected header empty.
 *
 * On the card, receipts are kept in the receipt objects (0x5FFF12..0x5FFF1F) as a CBOR array of
 * byte strings, each holding one receipt exactly as signed.
 */

import type { EcdsaAlgorithm } from "../crypto/ecdsa.js";
import type { Signer } from "../crypto/signer.js";
import { CardFullError, ExitCode, MalformedError, UsageError } from "../errors.js";
import { bytesEqual } from "../util/bytes.js";
import {
  cborUint,
  decodeCborStrict,
  encodeCbor,
  expectArray,
  expectBytes,
  expectUint,
  MAX_UNTRUSTED_INPUT_BYTES,
  malformedUnlessTyped,
} from "./cbor.js";
import { CoseHeader, leafPublicKey, signCoseSign1, verifyCoseSign1, withoutSelfSignedRoot } from "./cose.js";
import { CONFIGURATION_ID_BYTES } from "./manifest.js";
import { serialFromCbor, serialToCbor } from "./shard.js";

export const RECEIPT_FORMAT_VERSION = 1;

export interface Receipt {
  readonly serial: string;
  readonly configurationId: Uint8Array;
  readonly sequence: number;
  /** SHA-256 of the network state the HSM applied (`networkStateDigest`), or of what it kept. */
  readonly stateDigest: Uint8Array;
  /** Epoch seconds. */
  readonly time: number;
  /** SPEC.md §7 exit code of the onboarding: 0 configured, 15 integrity failure, 21 address conflict... */
  readonly outcome: ExitCode;
  /**
   * The HSM ran a dry-run applier: it verified the configuration but changed nothing (issue 12). A
   * receipt with this set never means "configured". Encoded as an optional eighth element, the flags
   * word (bit 0), present only when a flag is set: receipts without it (every receipt written before)
   * keep their exact encoding.
   */
  readonly dryRun?: boolean;
  /** The channel the card was read through (see RECEIPT_CHANNELS). */
  readonly channel?: ReceiptChannel;
}

/** Bits of the receipt's optional flags word (eighth element, present only when non-zero). */
export const RECEIPT_FLAGS = { dryRun: 1 } as const;
const KNOWN_FLAGS = RECEIPT_FLAGS.dryRun;

/**
 * How the card talked to the HSM (SPEC §4, Secure channel): "SCP11a"/"SCP11b" or "plaintext"
 * (allowed explicitly). Encoded as an optional ninth element (after the flags word, then present
 * even when zero); absent in receipts from before the field existed and for PKCS#11 tokens.
 */
export const RECEIPT_CHANNELS = ["plaintext", "SCP11b", "SCP11a", "SCP11c"] as const;
export type ReceiptChannel = (typeof RECEIPT_CHANNELS)[number];

const OUTCOMES: ReadonlySet<number> = new Set(Object.values(ExitCode));

/** The receipt payload in its one canonical encoding. */
export function encodeReceiptPayload(receipt: Receipt): Uint8Array {
  const fail = (message: string): never => {
    throw new UsageError(`receipt: ${message}`);
  };
  if (receipt.configurationId.length !== CONFIGURATION_ID_BYTES)
    fail(`configuration id must be ${CONFIGURATION_ID_BYTES} bytes`);
  if (receipt.stateDigest.length !== 32) fail("state digest must be 32 bytes (SHA-256)");
  for (const [name, value] of Object.entries({ sequence: receipt.sequence, time: receipt.time })) {
    if (!Number.isSafeInteger(value) || value < 0) fail(`${name} must be a non-negative integer`);
  }
  if (!OUTCOMES.has(receipt.outcome)) fail(`unknown outcome ${receipt.outcome}`);
  const serialBytes = Buffer.byteLength(receipt.serial, "utf8");
  if (serialBytes < 1 || serialBytes > 64) fail("serial must be 1..64 bytes");
  const fields: unknown[] = [
    RECEIPT_FORMAT_VERSION,
    serialToCbor(receipt.serial),
    receipt.configurationId,
    cborUint(receipt.sequence),
    receipt.stateDigest,
    cborUint(receipt.time),
    receipt.outcome,
  ];
  if (receipt.channel !== undefined) {
    const code = RECEIPT_CHANNELS.indexOf(receipt.channel);
    if (code < 0) fail(`unknown channel ${String(receipt.channel)}`);
    fields.push(receipt.dryRun ? RECEIPT_FLAGS.dryRun : 0, code);
  } else if (receipt.dryRun) {
    fields.push(RECEIPT_FLAGS.dryRun);
  }
  return encodeCbor(fields);
}

/** Decodes a receipt payload strictly (shape, ranges, canonical encoding). */
export function decodeReceiptPayload(bytes: Uint8Array): Receipt {
  const what = "receipt payload";
  const { value } = decodeCborStrict(bytes, { what, maxBytes: 1024 });
  return malformedUnlessTyped(what, () => {
    const [version, serial, configurationId, sequence, stateDigest, time, outcome, flags, channel] =
      expectArray(value, what, 7, 9);
    if (expectUint(version, `${what} version`) !== RECEIPT_FORMAT_VERSION) {
      throw new MalformedError(`${what}: unsupported format version ${String(version)}`);
    }
    const outcomeCode = expectUint(outcome, `${what} outcome`);
    if (!OUTCOMES.has(outcomeCode)) throw new MalformedError(`${what}: unknown outcome ${outcomeCode}`);
    const flagBits = flags === undefined ? 0 : expectUint(flags, `${what} flags`);
    if ((flagBits & ~KNOWN_FLAGS) !== 0 || flagBits > KNOWN_FLAGS)
      throw new MalformedError(`${what}: unknown flags ${flagBits}`);
    const receipt: Receipt = {
      serial: serialFromCbor(serial, `${what} serial`),
      configurationId: expectBytes(configurationId, `${what} configuration id`, CONFIGURATION_ID_BYTES),
      sequence: expectUint(sequence, `${what} sequence`),
      stateDigest: expectBytes(stateDigest, `${what} state digest`, 32),
      time: expectUint(time, `${what} time`),
      outcome: outcomeCode as ExitCode,
      ...((flagBits & RECEIPT_FLAGS.dryRun) !== 0 ? { dryRun: true } : {}),
      ...(channel === undefined ? {} : { channel: channelOf(expectUint(channel, `${what} channel`), what) }),
    };
    if (!bytesEqual(encodeReceiptPayload(receipt), bytes))
      throw new MalformedError(`${what}: not in canonical form`);
    return receipt;
  });
}

function channelOf(code: number, what: string): ReceiptChannel {
  const channel = RECEIPT_CHANNELS[code];
  if (channel === undefined) throw new MalformedError(`${what}: unknown channel ${code}`);
  return channel;
}

export interface SignReceiptOptions {
  /**
   * What x5chain carries: the device chain without its self-signed root (default; the station pins
   * the root), only the device certificate (smallest), or the chain as the signer has it.
   */
  readonly chain?: "without-root" | "leaf" | "full";
}

/** Signs a receipt with the HSM's device key. */
export async function signReceipt(
  receipt: Receipt,
  signer: Signer,
  options: SignReceiptOptions = {},
): Promise<Uint8Array> {
  if (signer.certificateChain.length === 0)
    throw new UsageError("a receipt carries the device certificate: the signer has none");
  const chain = signer.certificateChain;
  const x5chain =
    options.chain === "leaf"
      ? chain.slice(0, 1)
      : options.chain === "full"
        ? chain
        : withoutSelfSignedRoot(chain);
  return signCoseSign1(encodeReceiptPayload(receipt), signer, { x5chain });
}

export interface VerifiedReceipt {
  readonly receipt: Receipt;
  readonly algorithm: EcdsaAlgorithm;
  /** x5chain as carried, leaf (the device certificate) first. */
  readonly certificateChain: readonly Uint8Array[];
}

export interface VerifyReceiptOptions {
  /**
   * Validates the device chain up to the manufacturer root (device CA, EKU, revocation) AND that the
   * leaf certificate names `serial` (subject serialNumber). Must throw a typed error to refuse.
   * Called only once the signature verified, with the serial from the signed payload.
   */
  readonly validateDevice: (chain: readonly Uint8Array[], serial: string) => void | Promise<void>;
}

/** Station side: verifies a receipt's signature with its x5chain leaf key, then the device binding. */
export async function verifyReceipt(
  bytes: Uint8Array,
  options: VerifyReceiptOptions,
): Promise<VerifiedReceipt> {
  const { payload, signer } = await verifyCoseSign1(bytes, {
    maxBytes: MAX_UNTRUSTED_INPUT_BYTES,
    keyFor: (s) => {
      const labels = s.protectedHeader;
      if (labels.size !== 2 || !labels.has(CoseHeader.alg) || !labels.has(CoseHeader.x5chain)) {
        throw new MalformedError("receipt: protected header must hold exactly alg and x5chain");
      }
      if (s.unprotectedHeader.size !== 0)
        throw new MalformedError("receipt: unprotected header must be empty");
      return leafPublicKey(s.x5chain);
    },
  });
  const receipt = decodeReceiptPayload(payload);
  await options.validateDevice(signer.x5chain, receipt.serial);
  return { receipt, algorithm: signer.algorithm, certificateChain: signer.x5chain };
}

// Receipt objects on the card -------------------------------------------------------------------------

/** A receipt object: CBOR array of byte strings, each one signed receipt. */
export function encodeReceiptLog(receipts: readonly Uint8Array[]): Uint8Array {
  return encodeCbor([...receipts]);
}

/** The receipts of one receipt object, each still to be verified with verifyReceipt. */
export function decodeReceiptLog(bytes: Uint8Array): Uint8Array[] {
  const what = "receipt object";
  const { value } = decodeCborStrict(bytes, { what, maxBytes: MAX_UNTRUSTED_INPUT_BYTES });
  const receipts = malformedUnlessTyped(what, () =>
    expectArray(value, what).map((r, i) => expectBytes(r, `${what}[${i}]`)),
  );
  if (!bytesEqual(encodeReceiptLog(receipts), bytes))
    throw new MalformedError(`${what}: not in canonical form`);
  return receipts;
}

/**
 * The receipt object with `receipt` appended (a missing or empty object starts a new log), or
 * CardFullError when it would exceed `maxObjectBytes`: the agent then tries the next receipt object.
 */
export function appendReceipt(
  log: Uint8Array | undefined,
  receipt: Uint8Array,
  maxObjectBytes: number,
): Uint8Array {
  const receipts = log === undefined || log.length === 0 ? [] : decodeReceiptLog(log);
  const bytes = encodeReceiptLog([...receipts, receipt]);
  if (bytes.length > maxObjectBytes) {
    throw new CardFullError(
      `receipt object would be ${bytes.length} bytes; a PIV object holds at most ${maxObjectBytes}`,
    );
  }
  return bytes;
}
