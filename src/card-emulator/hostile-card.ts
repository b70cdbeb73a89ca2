/**
 * Hostile card behaviour for the virtual PIV card (SPEC.md §8: "a hostile card that answers with
 * wrong lengths, endless 61xx chaining or huge objects"). Each mode is an ApduInterceptor (the
 * VirtualPivCard `intercept` option): it lets the genuine card answer, then lies about what it
 * answered — or answers without asking the card at all — for the commands a matcher selects.
 *
 *   const hostile = hostileCard("endless-chaining", { when: getDataOf(PivObject.manifest) });
 *   const card = new VirtualPivCard({ store, intercept: hostile.intercept });
 *   hostile.armed = true;   // honest until armed, so a session can be opened first
 *
 * What a hostile card can do is only what a reader lets through: a response is at most
 * MAX_READER_RESPONSE_BYTES (PC/SC's extended buffer, docs/TESTBED-NOTES.md), so "megabytes" come
 * the only way a real card could send them — in pieces, with 61xx and GET RESPONSE — unless a
 * mode says otherwise. The `scp-*` modes lie to the SCP11 decoders (certificate store, handshake
 * answer, wrapped answers; for SCP11a also the OCE CA identifiers (GET DATA FF33) and PERFORM
 * SECURITY OPERATION); those that lie inside the channel with a valid R-MAC are given the
 * card's end of the session (`scpChannel: () => card.scpChannel`), as a hostile card holds its keys.
 * Test-only code: nothing in the product imports it.
 */
import { randomBytes } from "node:crypto";
import { gzipSync } from "node:zlib";
import { decodeCommandApdu } from "../apdu/command.js";
import { GP_INS, PIV_INS } from "../apdu/instructions.js";
import { generateP256, p256Point } from "../apdu/scp11/handshake.js";
import type { ScpCardChannel } from "../apdu/scp11/secure-messaging.js";
import { concatBytes, encodeLength, encodeTlv, readTlv } from "../apdu/tlv.js";
import type { ApduInterceptor } from "./virtual-piv-card.js";

/** Largest response APDU pcsc-lite hands to a client: 65,536 data bytes + SW (MAX_BUFFER_SIZE_EXTENDED − 10). */
export const MAX_READER_RESPONSE_BYTES = 65_538;

/** Selects the commands a hostile mode lies about. */
export type CommandMatcher = (command: Uint8Array) => boolean;

function decoded(command: Uint8Array) {
  try {
    return decodeCommandApdu(command);
  } catch {
    return undefined;
  }
}

/** Every command. */
export const anyCommand: CommandMatcher = () => true;

/**
 * GET DATA (`00 CB 3F FF … 5C <tag>`), of the object `objectId` when given (e.g. 0x5FC101 for the
 * 9E certificate, 0x5FFF10 for the manifest), of any object otherwise.
 */
export function getDataOf(objectId?: number): CommandMatcher {
  return dataObjectCommand(PIV_INS.getData, objectId);
}

/** PUT DATA (`00 DB 3F FF … 5C <tag> 53 …`) of `objectId`, or of any object. */
export function putDataOf(objectId?: number): CommandMatcher {
  return dataObjectCommand(PIV_INS.putData, objectId);
}

function dataObjectCommand(ins: number, objectId: number | undefined): CommandMatcher {
  return (command) => {
    if (command[1] !== ins) return false;
    if (objectId === undefined) return true;
    // The tag list `5C len id` opens the data field (SP 800-73-4 Part 2 §3.1.2, §3.3.2).
    const data = decoded(command)?.data;
    if (data?.[0] !== 0x5c) return false;
    let id = 0;
    for (const b of data.subarray(2, 2 + (data[1] ?? 0))) id = id * 256 + b;
    return id === objectId;
  };
}

/** GET DATA BF21 in the issuer security domain: the SCP certificate store (`xx CA BF 21`). */
export const scpCertificateStoreRequest: CommandMatcher = (command) =>
  command[1] === GP_INS.getData && command[2] === 0xbf && command[3] === 0x21;

/** INTERNAL AUTHENTICATE (`80 88`, SCP11b) or MUTUAL AUTHENTICATE (`80 82`, SCP11a/c). */
export const scpAuthenticate: CommandMatcher = (command) =>
  (command[0] === 0x80 || command[0] === 0x84) &&
  (command[1] === GP_INS.internalAuthenticate || command[1] === GP_INS.mutualAuthenticate);

/** GET DATA FF33 in the issuer security domain: the OCE CA identifiers (SCP11a, `00 CA FF 33`). */
export const scpOceCaIdentifiersRequest: CommandMatcher = (command) =>
  command[1] === GP_INS.getData && command[2] === 0xff && command[3] === 0x33;

/** PERFORM SECURITY OPERATION (`80 2A`, `90 2A` while chained): the station's OCE certificate (SCP11a). */
export const scpPerformSecurityOperation: CommandMatcher = (command) =>
  ((command[0] ?? 0) & 0x80) !== 0 && command[1] === GP_INS.performSecurityOperation;

/** MUTUAL AUTHENTICATE (`80 82`, SCP11a/c). */
export const scpMutualAuthenticate: CommandMatcher = (command) =>
  command[0] === 0x80 && command[1] === GP_INS.mutualAuthenticate;

/** A command wrapped in the secure channel (CLA b3 set), GET RESPONSE excepted. */
export const scpWrappedCommand: CommandMatcher = (command) =>
  ((command[0] ?? 0) & 0x04) !== 0 && command[1] !== PIV_INS.getResponse;

/** GENERAL AUTHENTICATE with the key in `slot` (P2: 0x9E, 0x9C, …), any slot when not given. */
export function generalAuthenticateWith(slot?: number): CommandMatcher {
  return (command) =>
    command[1] === PIV_INS.generalAuthenticate && (slot === undefined || command[3] === slot);
}

// ---------------------------------------------------------------------------------------------
// Response surgery

const sw = (code: number) => Uint8Array.of((code >> 8) & 0xff, code & 0xff);
const dataOf = (response: Uint8Array) => response.subarray(0, Math.max(0, response.length - 2));
const swOf = (response: Uint8Array) => response.subarray(Math.max(0, response.length - 2));
const isOk = (response: Uint8Array) =>
  response.length >= 2 && response[response.length - 2] === 0x90 && response[response.length - 1] === 0x00;

/**
 * The card's whole answer to `command`: its 61xx pieces fetched with GET RESPONSE (bounded) and
 * joined, so that a lie can change its end (an R-MAC) and send it back as one response.
 */
function wholeAnswer(command: Uint8Array, card: (command: Uint8Array) => Uint8Array): Uint8Array {
  let r = card(command);
  const parts: Uint8Array[] = [];
  for (let i = 0; i < 1024 && r.length >= 2 && r[r.length - 2] === 0x61; i++) {
    parts.push(dataOf(r));
    r = card(Uint8Array.of(0x00, PIV_INS.getResponse, 0x00, 0x00, r[r.length - 1]!));
  }
  parts.push(dataOf(r));
  return concatBytes(...parts, swOf(r));
}

/** `count` bytes of a recognisable filler. */
function filler(count: number, byte = 0x00): Uint8Array {
  return new Uint8Array(count).fill(byte);
}

/** Header (tag + length field) and value of the first TLV of `data`, when it parses. */
function splitTlv(data: Uint8Array): { tag: Uint8Array; value: Uint8Array } | undefined {
  try {
    const { tlv } = readTlv(data, 0);
    const tagLength = tlv.tag > 0xffff ? 3 : tlv.tag > 0xff ? 2 : 1;
    return { tag: data.subarray(0, tagLength), value: tlv.value };
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Modes

/** Everything a hostile mode may be told. */
export interface HostileOptions {
  /** Which commands to lie about (default: every GET DATA). */
  readonly when?: CommandMatcher;
  /** Bytes for modes that send data of their own (sizes, payloads). */
  readonly bytes?: number;
  /** A status word, for `bad-status-word` and `wrong-le-forever` (SW2 taken as the Le named). */
  readonly statusWord?: number;
  /** Replacement object content (inside 53), for `copied-certificate`. */
  readonly content?: Uint8Array;
  /** A command whose genuine answer is given instead, for `answer-to-other-command`. */
  readonly otherCommand?: Uint8Array;
  /** Signed challenge answer to replay (`7C … 82 …` ‖ 9000), for `replayed-signature`; recorded when absent. */
  readonly recorded?: Uint8Array;
  /**
   * The card's end of its SCP11 session (VirtualPivCard.scpChannel), for the modes where the card
   * itself lies inside the channel: it holds the session keys, so its lies carry a valid R-MAC.
   */
  readonly scpChannel?: () => ScpCardChannel | undefined;
}

/** The genuine card and the command; returns what the hostile card answers instead. */
type Lie = (
  command: Uint8Array,
  card: (command: Uint8Array) => Uint8Array,
  state: LieState,
  options: HostileOptions,
) => Uint8Array;

interface LieState {
  /** For modes that keep going through GET RESPONSE. */
  chaining: boolean;
  /** INS of a command chain (CLA 10) the hostile card is lying about: its next blocks are too. */
  commandChain?: number;
  previous?: Uint8Array;
  recorded?: Uint8Array;
}

export const HOSTILE_MODES = {
  /** A response without a status word: one byte. */
  "no-status-word": {
    describe: "answers with a single byte (no SW1 SW2)",
    lie: () => Uint8Array.of(0x90),
  },
  /** The outer TLV length says more than is sent (the value cut short after a few bytes). */
  "truncated-tlv": {
    describe: "the 53 object's length field announces the full object, 8 bytes of it follow",
    lie: (command, card) => {
      const r = card(command);
      const split = splitTlv(dataOf(r));
      if (!split) return r;
      return concatBytes(split.tag, encodeLength(split.value.length), split.value.subarray(0, 8), sw(0x9000));
    },
  },
  /** The outer TLV length disagrees with the bytes sent (shorter: bytes left over). */
  "wrong-tlv-length": {
    describe: "the 53 object's length field is 5 bytes short of what follows",
    lie: (command, card) => {
      const r = card(command);
      const split = splitTlv(dataOf(r));
      if (!split || split.value.length < 5) return r;
      return concatBytes(split.tag, encodeLength(split.value.length - 5), split.value, sw(0x9000));
    },
  },
  /** A length field of four bytes announcing 4 GiB (`53 84 FF FF FF FF`), then a few bytes. */
  "huge-length-field": {
    describe: "GET DATA answered `53 84 FF FF FF FF` + 16 bytes: a 4 GiB object announced",
    lie: () => concatBytes(Uint8Array.of(0x53, 0x84, 0xff, 0xff, 0xff, 0xff), filler(16, 0x41), sw(0x9000)),
  },
  /** `53 83 FF FF FF` (16 MiB announced, the most three length bytes say), then a few bytes. */
  "huge-object-declared": {
    describe: "GET DATA answered `53 83 FF FF FF` + 16 bytes: 16 MiB announced",
    lie: () => concatBytes(Uint8Array.of(0x53, 0x83, 0xff, 0xff, 0xff), filler(16, 0x41), sw(0x9000)),
  },
  /** A well-formed 53 object far larger than any PIV object, in one extended response. */
  "oversized-object": {
    describe: "GET DATA answered with a well-formed 53 object of `bytes` (default 60,000) in one APDU",
    lie: (_command, _card, _state, options: HostileOptions) => {
      const size = Math.min(options.bytes ?? 60_000, MAX_READER_RESPONSE_BYTES - 2 - 4);
      return concatBytes(encodeTlv(0x53, filler(size, 0x41)), sw(0x9000));
    },
  },
  /** The largest response a reader passes, filled with junk and 9000. */
  "max-size-response": {
    describe: "answers with 65,536 bytes of junk + 9000 (the most one PC/SC response holds)",
    lie: () => concatBytes(filler(MAX_READER_RESPONSE_BYTES - 2, 0x41), sw(0x9000)),
  },
  /** Megabytes through response chaining: 256 bytes and 61 00, forever, GET RESPONSE included. */
  "endless-chaining": {
    describe: "answers 256 bytes + 61 00 forever, GET RESPONSE included: megabytes in pieces",
    lie: (_command, _card, state) => {
      state.chaining = true;
      return concatBytes(filler(256, 0x41), sw(0x6100));
    },
  },
  /** Tiny pieces: one byte and 61 01, forever (a round-trip bound, not a byte bound, stops it). */
  "endless-chaining-tiny": {
    describe: "answers 1 byte + 61 01 forever, GET RESPONSE included",
    lie: (_command, _card, state) => {
      state.chaining = true;
      return concatBytes(Uint8Array.of(0x41), sw(0x6101));
    },
  },
  /** 6Cxx ("wrong Le, use xx") to every retry. */
  "wrong-le-forever": {
    describe: "answers 6C 10 (wrong Le, use 16) to the command and to every retry",
    lie: (_command, _card, _state, options: HostileOptions) => sw(options.statusWord ?? 0x6c10),
  },
  /** Nested constructed TLVs inside the object, as deep as fits. */
  "nested-tlv": {
    describe: "GET DATA answered 53 { 7F49 { 7F49 { … } } }, nested about 1,000 deep",
    lie: (_command, _card, _state, options: HostileOptions) => {
      let inner: Uint8Array = Uint8Array.of(0x86, 0x00);
      const depth = options.bytes ?? 1000;
      for (let i = 0; i < depth; i++) inner = encodeTlv(0x7f49, inner);
      return concatBytes(encodeTlv(0x53, inner), sw(0x9000));
    },
  },
  /** A certificate object whose 70 holds DER nested as deep as fits (SEQUENCE in SEQUENCE …). */
  "nested-der-certificate": {
    describe: "certificate object whose certificate is SEQUENCE { SEQUENCE { … } } nested 6,000 deep",
    lie: (_command, _card, _state, options: HostileOptions) => {
      // 6,000 levels: 24 KB, under the host's 32 KB response bound, so the DER parser meets it.
      const depth = options.bytes ?? 6000;
      const der = new Uint8Array(depth * 4);
      for (let i = 0; i < depth; i++) der.set([0x30, 0x80], i * 2); // indefinite lengths…
      // …closed by end-of-contents octets (already zero).
      return concatBytes(
        encodeTlv(0x53, concatBytes(encodeTlv(0x70, der), encodeTlv(0x71, Uint8Array.of(0)))),
        sw(0x9000),
      );
    },
  },
  /** A certificate object marked gzip-compressed whose data inflates to 64 MiB of zeros. */
  "gzip-bomb-certificate": {
    describe: "certificate object `70 gzip(16 MiB of zeros) 71 01`: a decompression bomb",
    lie: () =>
      concatBytes(
        encodeTlv(0x53, concatBytes(encodeTlv(0x70, GZIP_BOMB()), encodeTlv(0x71, Uint8Array.of(1)))),
        sw(0x9000),
      ),
  },
  /** The genuine answer, then junk the command never asked for. */
  "extra-bytes": {
    describe: "the genuine answer with 32 extra bytes after it (before the status word)",
    lie: (command, card) => {
      const r = card(command);
      if (!isOk(r)) return r;
      return concatBytes(dataOf(r), filler(32, 0xa5), swOf(r));
    },
  },
  /** The genuine answer to another command (GET VERSION by default) instead of this one's. */
  "answer-to-other-command": {
    describe: "answers with what the card answers to another command (GET VERSION by default)",
    lie: (_command, card, _state, options: HostileOptions) =>
      card(options.otherCommand ?? Uint8Array.of(0x00, 0xfd, 0x00, 0x00, 0x00)),
  },
  /** Every answer is the one the card gave to the previous command: out of step. */
  "stale-responses": {
    describe: "every answer is the one the card gave to the previous command (out of step by one)",
    lie: (command, card, state) => {
      const now = card(command);
      const answer = state.previous ?? sw(0x9000);
      state.previous = now;
      return answer;
    },
  },
  /** Says 9000 to a write it never makes (a card that loses or ignores PUT DATA). */
  "swallowed-write": {
    describe: "answers 9000 to the command without passing it to the card (a write that never happens)",
    lie: () => sw(0x9000),
  },
  /** A status word no flow expects (6F 00 by default). */
  "bad-status-word": {
    describe: "answers a bare status word (6F 00 by default)",
    lie: (_command, _card, _state, options: HostileOptions) => sw(options.statusWord ?? 0x6f00),
  },
  /** The 9E certificate object of another card: a genuine certificate without its private key. */
  "copied-certificate": {
    describe: "GET DATA of the 9E certificate answered with another card's (a copied certificate)",
    lie: (command, card, _state, options: HostileOptions) => {
      if (!options.content) return card(command);
      return concatBytes(encodeTlv(0x53, options.content), sw(0x9000));
    },
  },
  /** Answers every card-authentication challenge with one recorded genuine signature. */
  "replayed-signature": {
    describe: "answers every 9E challenge with the signature recorded for an earlier one",
    lie: (command, card, state) => {
      if (state.recorded) return state.recorded.slice();
      const genuine = card(command);
      if (isOk(genuine)) state.recorded = genuine.slice();
      return genuine;
    },
  },
  // ---- SCP11 (issue 11): the certificate store (GET DATA BF21) ---------------------------------
  /** The first certificate's DER length one byte short: a byte is left over after it. */
  "scp-store-wrong-length": {
    describe: "certificate store whose first certificate's length field is 1 byte short",
    lie: (command, card) => storeLie(command, card, (store) => adjustFirstLength(store, -1)),
  },
  /** The first certificate's DER length 16 bytes longer than what follows. */
  "scp-store-length-overrun": {
    describe: "certificate store whose first certificate's length announces 16 bytes more than are sent",
    lie: (command, card) => storeLie(command, card, (store) => adjustFirstLength(store, 16)),
  },
  /** `BF21 84 FF FF FF FF` and a few bytes: a 4 GiB store announced. */
  "scp-store-huge-length": {
    describe: "certificate store `BF21 84 FF FF FF FF` + 16 bytes: 4 GiB announced",
    lie: () =>
      concatBytes(Uint8Array.of(0xbf, 0x21, 0x84, 0xff, 0xff, 0xff, 0xff), filler(16, 0x30), sw(0x9000)),
  },
  /** A well-formed store of SEQUENCEs larger than any genuine one (20 KB). */
  "scp-store-oversized": {
    describe: "certificate store of well-formed SEQUENCEs, `bytes` long (default 20,000) in one answer",
    lie: (_command, _card, _state, options: HostileOptions) => {
      const size = options.bytes ?? 20_000;
      const one = encodeTlv(0x30, filler(996, 0x41));
      const count = Math.ceil(size / one.length);
      return concatBytes(
        encodeTlv(0xbf21, concatBytes(...Array.from({ length: count }, () => one))),
        sw(0x9000),
      );
    },
  },
  /** The certificates' SEQUENCE tag (30) changed to SET (31). */
  "scp-store-wrong-tag": {
    describe: "certificate store whose certificates are tagged 31 (SET) instead of 30",
    lie: (command, card) =>
      storeLie(command, card, (store) => {
        const out = store.slice();
        out[0] = 0x31;
        return out;
      }),
  },
  /** The leaf first, then another certificate (`content`, e.g. the vendor CA): not leaf-last. */
  "scp-store-leaf-first": {
    describe: "certificate store with the leaf first and a CA certificate (`content`) after it",
    lie: (command, card, _state, options: HostileOptions) =>
      storeLie(command, card, (store) => concatBytes(store, options.content ?? store)),
  },
  /** The store in a BF21 template (as Samsung's test card sends it): genuine, to be accepted. */
  "scp-store-wrapped": {
    describe: "the genuine certificate store inside a BF21 template (a valid form)",
    lie: (command, card) => storeLie(command, card, (store) => encodeTlv(0xbf21, store)),
  },
  /** BF21 { BF21 { store } }. */
  "scp-store-wrapper-duplicated": {
    describe: "the genuine certificate store inside two BF21 templates",
    lie: (command, card) => storeLie(command, card, (store) => encodeTlv(0xbf21, encodeTlv(0xbf21, store))),
  },
  /** BF21 { store } followed by a second BF21 { store }. */
  "scp-store-wrapper-repeated": {
    describe: "the genuine certificate store twice, each in its own BF21 template",
    lie: (command, card) =>
      storeLie(command, card, (store) => concatBytes(encodeTlv(0xbf21, store), encodeTlv(0xbf21, store))),
  },

  // ---- SCP11: the card's authenticate answer (5F49 ePK.SD ‖ 86 receipt) ----------------------
  /** ePK.SD with one bit of Y flipped: 65 bytes, uncompressed, not on P-256. */
  "scp-epk-off-curve": {
    describe: "authenticate answer whose ePK.SD has a bit of Y flipped (off the curve)",
    lie: (command, card) =>
      answerLie(command, card, (epk, receipt) => {
        const bad = epk.slice();
        bad[64]! ^= 0x01;
        return concatBytes(encodeTlv(0x5f49, bad), encodeTlv(0x86, receipt));
      }),
  },
  /** ePK.SD the point at infinity (SEC 1 encoding: one 00 byte). */
  "scp-epk-identity": {
    describe: "authenticate answer whose ePK.SD is the point at infinity (`5F49 01 00`)",
    lie: (command, card) =>
      answerLie(command, card, (_epk, receipt) =>
        concatBytes(encodeTlv(0x5f49, Uint8Array.of(0)), encodeTlv(0x86, receipt)),
      ),
  },
  /** ePK.SD `04 ‖ 0…0 ‖ 0…0`: 65 bytes, the "zero point" some decoders take for the identity. */
  "scp-epk-zero": {
    describe: "authenticate answer whose ePK.SD is 04 followed by 64 zero bytes",
    lie: (command, card) =>
      answerLie(command, card, (_epk, receipt) =>
        concatBytes(encodeTlv(0x5f49, concatBytes(Uint8Array.of(4), filler(64))), encodeTlv(0x86, receipt)),
      ),
  },
  /** ePK.SD one byte short (64 bytes). */
  "scp-epk-wrong-length": {
    describe: "authenticate answer whose ePK.SD is 64 bytes (its last byte cut)",
    lie: (command, card) =>
      answerLie(command, card, (epk, receipt) =>
        concatBytes(encodeTlv(0x5f49, epk.subarray(0, 64)), encodeTlv(0x86, receipt)),
      ),
  },
  /** 5F49 only: no receipt. */
  "scp-receipt-missing": {
    describe: "authenticate answer without its receipt (5F49 only)",
    lie: (command, card) => answerLie(command, card, (epk) => encodeTlv(0x5f49, epk)),
  },
  /** 5F49 ‖ 86 ‖ 86: the receipt twice. */
  "scp-receipt-duplicated": {
    describe: "authenticate answer with the receipt twice (5F49 ‖ 86 ‖ 86)",
    lie: (command, card) =>
      answerLie(command, card, (epk, receipt) =>
        concatBytes(encodeTlv(0x5f49, epk), encodeTlv(0x86, receipt), encodeTlv(0x86, receipt)),
      ),
  },
  /** The receipt with one bit flipped: a card that does not hold SK.SD (or a tampered handshake). */
  "scp-receipt-wrong": {
    describe: "authenticate answer whose receipt has one bit flipped",
    lie: (command, card) =>
      answerLie(command, card, (epk, receipt) => {
        const bad = receipt.slice();
        bad[15]! ^= 0x01;
        return concatBytes(encodeTlv(0x5f49, epk), encodeTlv(0x86, bad));
      }),
  },

  // ---- SCP11a: the OCE CA identifiers (GET DATA FF33: `42 <SKI> 83 02 <KID KVN>` pairs) --------
  /** The SKI's tag 42 changed to 43. */
  "scp-oce-ids-wrong-tag": {
    describe: "OCE CA identifiers whose key identifier is tagged 43 instead of 42",
    lie: (command, card) =>
      oceIdsLie(command, card, (ids) => {
        const out = ids.slice();
        out[0] = 0x43;
        return out;
      }),
  },
  /** The key reference `83 03 <KID KVN 00>`: three bytes instead of two. */
  "scp-oce-ids-wrong-length": {
    describe: "OCE CA identifiers whose key reference (83) is 3 bytes",
    lie: (command, card) =>
      oceIdsLie(command, card, (ids) => {
        const ski = readTlv(ids, 0);
        const ref = readTlv(ids, ski.end);
        return concatBytes(
          ids.subarray(0, ski.end),
          encodeTlv(0x83, concatBytes(ref.tlv.value, Uint8Array.of(0))),
        );
      }),
  },
  /** The key identifier alone, its key reference left out. */
  "scp-oce-ids-unpaired": {
    describe: "OCE CA identifiers: a 42 key identifier without its 83 key reference",
    lie: (command, card) => oceIdsLie(command, card, (ids) => ids.subarray(0, readTlv(ids, 0).end)),
  },
  /** The SKI's length field announcing 200 bytes more than are sent. */
  "scp-oce-ids-length-overrun": {
    describe: "OCE CA identifiers whose 42 length announces 200 bytes more than are sent",
    lie: (command, card) =>
      oceIdsLie(command, card, (ids) => {
        const ski = readTlv(ids, 0).tlv.value;
        return concatBytes(Uint8Array.of(0x42, 0x81, ski.length + 200), ski, ids.subarray(2 + ski.length));
      }),
  },
  /** A 33-byte key identifier (more than any SKI: SHA-1 is 20, SHA-256 32). */
  "scp-oce-ids-long-ski": {
    describe: "OCE CA identifiers with a 33-byte key identifier",
    lie: () =>
      concatBytes(encodeTlv(0x42, filler(33, 0x5a)), encodeTlv(0x83, Uint8Array.of(0x10, 0x01)), sw(0x9000)),
  },
  /** Far more identifiers than a card holds: `bytes` pairs (default 2,000, ~56 KB in one answer). */
  "scp-oce-ids-huge": {
    describe: "OCE CA identifiers: `bytes` (default 2,000) well-formed pairs in one answer",
    lie: (_command, _card, _state, options: HostileOptions) => {
      const pair = concatBytes(encodeTlv(0x42, filler(20, 0x5a)), encodeTlv(0x83, Uint8Array.of(0x10, 0x01)));
      const count = Math.min(
        options.bytes ?? 2000,
        Math.floor((MAX_READER_RESPONSE_BYTES - 2) / pair.length),
      );
      return concatBytes(...Array.from({ length: count }, () => pair), sw(0x9000));
    },
  },
  /** FF33 answered with a 4 GiB length field (`42 84 FF FF FF FF`) and a few bytes. */
  "scp-oce-ids-huge-length": {
    describe: "OCE CA identifiers `42 84 FF FF FF FF` + 16 bytes: 4 GiB announced",
    lie: () => concatBytes(Uint8Array.of(0x42, 0x84, 0xff, 0xff, 0xff, 0xff), filler(16, 0x5a), sw(0x9000)),
  },

  // ---- SCP11a: PERFORM SECURITY OPERATION and MUTUAL AUTHENTICATE ------------------------------
  /**
   * The card "accepts" any OCE certificate: PSO is answered 9000 without reaching the card, and
   * MUTUAL AUTHENTICATE with a fresh (valid) ePK.SD and a receipt the card cannot compute (it never
   * took the OCE key in): the host's receipt check must fail.
   */
  "scp-oce-accepted-blindly": {
    describe:
      "PSO answered 9000 unseen by the card; MUTUAL AUTHENTICATE with a valid ePK.SD and a made-up receipt",
    lie: (command) => {
      if (command[1] === GP_INS.performSecurityOperation) return sw(0x9000);
      return concatBytes(
        encodeTlv(0x5f49, p256Point(generateP256())),
        encodeTlv(0x86, new Uint8Array(randomBytes(16))),
        sw(0x9000),
      );
    },
  },
  /** PSO answered 9000 without reaching the card (which therefore holds no OCE key). */
  "scp-pso-swallowed": {
    describe: "PERFORM SECURITY OPERATION answered 9000 without reaching the card",
    lie: () => sw(0x9000),
  },

  // ---- SCP11: wrapped answers ----------------------------------------------------------------
  /** The last bit of the R-MAC flipped. */
  "scp-rmac-flipped": {
    describe: "wrapped answer whose R-MAC has one bit flipped",
    lie: (command, card) => {
      const r = wholeAnswer(command, card);
      const data = dataOf(r).slice();
      if (data.length > 0) data[data.length - 1]! ^= 0x01;
      return concatBytes(data, swOf(r));
    },
  },
  /** The wrapped answer cut in half (R-MAC gone, blocks cut). */
  "scp-response-truncated": {
    describe: "wrapped answer cut to half its length",
    lie: (command, card) => {
      const r = wholeAnswer(command, card);
      const data = dataOf(r);
      return concatBytes(data.subarray(0, Math.floor(data.length / 2)), swOf(r));
    },
  },
  /** 9000 with no data: the R-MAC left out. */
  "scp-response-no-rmac": {
    describe: "answers a bare 9000 to a wrapped command (no R-MAC)",
    lie: (command, card) => {
      wholeAnswer(command, card);
      return sw(0x9000);
    },
  },
  /** An error status word with data (errors come back bare in SCP). */
  "scp-error-with-data": {
    describe: "answers 6A82 with 16 bytes of data to a wrapped command",
    lie: (command, card) => {
      wholeAnswer(command, card);
      return concatBytes(filler(16, 0x41), sw(0x6a82));
    },
  },
  /** The card (it holds the keys) encrypts a block without `80 00…` padding and MACs it correctly. */
  "scp-response-bad-padding": {
    describe: "wrapped answer, correctly MACed by the card, whose decrypted block has no 80 padding",
    lie: (command, card, _state, options: HostileOptions) => {
      wholeAnswer(command, card);
      const channel = options.scpChannel?.();
      if (!channel) throw new Error("scp-response-bad-padding needs the card's SCP channel");
      return concatBytes(
        channel.wrapResponse(filler(16, 0x41), 0x9000, (d) => d),
        sw(0x9000),
      );
    },
  },
  /** The card wraps (validly) an answer larger than any PIV object: 40 KB in one response. */
  "scp-response-oversized": {
    describe: "wrapped answer of `bytes` (default 40,000) bytes, correctly MACed by the card",
    lie: (command, card, _state, options: HostileOptions) => {
      wholeAnswer(command, card);
      const channel = options.scpChannel?.();
      if (!channel) throw new Error("scp-response-oversized needs the card's SCP channel");
      const plain = encodeTlv(0x53, filler(options.bytes ?? 40_000, 0x41));
      return concatBytes(channel.wrapResponse(plain, 0x9000), sw(0x9000));
    },
  },
} satisfies Record<string, { describe: string; lie: Lie }>;

// ---------------------------------------------------------------------------------------------
// SCP11 surgery

/** The certificate store (bare, as the virtual card sends it) changed by `change`; errors pass. */
function storeLie(
  command: Uint8Array,
  card: (command: Uint8Array) => Uint8Array,
  change: (store: Uint8Array) => Uint8Array,
): Uint8Array {
  const r = wholeAnswer(command, card);
  if (!isOk(r)) return r;
  return concatBytes(change(dataOf(r)), sw(0x9000));
}

/** `store` with its first TLV's length field (1, 2 or 3 bytes after 81/82/83) changed by `delta`. */
function adjustFirstLength(store: Uint8Array, delta: number): Uint8Array {
  const out = store.slice();
  const first = out[1] ?? 0;
  const n = first & 0x80 ? first & 0x7f : 0;
  let length = 0;
  for (let i = 0; i < (n || 1); i++) length = length * 256 + (n ? out[2 + i]! : first);
  length = Math.max(0, length + delta);
  if (n === 0) out[1] = Math.min(length, 0x7f);
  else for (let i = n - 1; i >= 0; i--, length = Math.floor(length / 256)) out[2 + i] = length & 0xff;
  return out;
}

/** The card's FF33 answer changed by `change`; errors (6A88: none listed) pass. */
function oceIdsLie(
  command: Uint8Array,
  card: (command: Uint8Array) => Uint8Array,
  change: (ids: Uint8Array) => Uint8Array,
): Uint8Array {
  const r = wholeAnswer(command, card);
  if (!isOk(r)) return r;
  return concatBytes(change(dataOf(r)), sw(0x9000));
}

/** The authenticate answer rebuilt from its ePK.SD and receipt by `rebuild`; errors pass. */
function answerLie(
  command: Uint8Array,
  card: (command: Uint8Array) => Uint8Array,
  rebuild: (epk: Uint8Array, receipt: Uint8Array) => Uint8Array,
): Uint8Array {
  const r = wholeAnswer(command, card);
  if (!isOk(r)) return r;
  const data = dataOf(r);
  const epk = readTlv(data, 0);
  const receipt = readTlv(data, epk.end);
  return concatBytes(rebuild(epk.tlv.value, receipt.tlv.value), sw(0x9000));
}

export type HostileMode = keyof typeof HOSTILE_MODES;

/** Default matcher of each mode: what it is most naturally aimed at. */
const DEFAULT_TARGET: Partial<Record<HostileMode, CommandMatcher>> = {
  "copied-certificate": getDataOf(0x5fc101),
  "replayed-signature": generalAuthenticateWith(0x9e),
  "nested-der-certificate": getDataOf(0x5fc101),
  "gzip-bomb-certificate": getDataOf(0x5fc101),
  "stale-responses": (command) => command[1] !== PIV_INS.select,
  "swallowed-write": putDataOf(),
  "scp-store-wrong-length": scpCertificateStoreRequest,
  "scp-store-length-overrun": scpCertificateStoreRequest,
  "scp-store-huge-length": scpCertificateStoreRequest,
  "scp-store-oversized": scpCertificateStoreRequest,
  "scp-store-wrong-tag": scpCertificateStoreRequest,
  "scp-store-leaf-first": scpCertificateStoreRequest,
  "scp-store-wrapped": scpCertificateStoreRequest,
  "scp-store-wrapper-duplicated": scpCertificateStoreRequest,
  "scp-store-wrapper-repeated": scpCertificateStoreRequest,
  "scp-epk-off-curve": scpAuthenticate,
  "scp-epk-identity": scpAuthenticate,
  "scp-epk-zero": scpAuthenticate,
  "scp-epk-wrong-length": scpAuthenticate,
  "scp-receipt-missing": scpAuthenticate,
  "scp-receipt-duplicated": scpAuthenticate,
  "scp-receipt-wrong": scpAuthenticate,
  "scp-oce-ids-wrong-tag": scpOceCaIdentifiersRequest,
  "scp-oce-ids-wrong-length": scpOceCaIdentifiersRequest,
  "scp-oce-ids-unpaired": scpOceCaIdentifiersRequest,
  "scp-oce-ids-length-overrun": scpOceCaIdentifiersRequest,
  "scp-oce-ids-long-ski": scpOceCaIdentifiersRequest,
  "scp-oce-ids-huge": scpOceCaIdentifiersRequest,
  "scp-oce-ids-huge-length": scpOceCaIdentifiersRequest,
  "scp-oce-accepted-blindly": (command) =>
    scpPerformSecurityOperation(command) || scpMutualAuthenticate(command),
  "scp-pso-swallowed": scpPerformSecurityOperation,
  "scp-rmac-flipped": scpWrappedCommand,
  "scp-response-truncated": scpWrappedCommand,
  "scp-response-no-rmac": scpWrappedCommand,
  "scp-error-with-data": scpWrappedCommand,
  "scp-response-bad-padding": scpWrappedCommand,
  "scp-response-oversized": scpWrappedCommand,
};

let bomb: Uint8Array | undefined;
/** 16 MiB of zeros, gzip-compressed (~16 KiB: under the host's response bound; made once). */
function GZIP_BOMB(): Uint8Array {
  bomb ??= new Uint8Array(gzipSync(new Uint8Array(16 * 1024 * 1024), { level: 9 }));
  return bomb;
}

/** A hostile card: its interceptor, whether it lies yet, and how often it did. */
export interface HostileCard {
  readonly mode: HostileMode;
  readonly intercept: ApduInterceptor;
  /** Honest while false (default true): arm it once the session it should disturb is open. */
  armed: boolean;
  /** Commands answered with a lie so far. */
  readonly lies: number;
}

/** Makes the interceptor of one hostile mode. */
export function hostileCard(
  mode: HostileMode,
  options: HostileOptions & { armed?: boolean } = {},
): HostileCard {
  const when = options.when ?? DEFAULT_TARGET[mode] ?? getDataOf();
  const lie: Lie = HOSTILE_MODES[mode].lie;
  const state: LieState = { chaining: false, ...(options.recorded ? { recorded: options.recorded } : {}) };
  let lies = 0;
  const hostile: HostileCard = {
    mode,
    armed: options.armed ?? true,
    get lies() {
      return lies;
    },
    intercept: (command, card) => {
      // A lie goes on through GET RESPONSE (response chaining) and through the following blocks of
      // a command chain (ISO/IEC 7816-4 §5.1.1.1: CLA b5 set on every block but the last).
      const continuing =
        (state.chaining && command[1] === PIV_INS.getResponse) ||
        (state.commandChain !== undefined && command[1] === state.commandChain);
      if (!hostile.armed || (!continuing && !when(command))) {
        if (command[1] !== PIV_INS.getResponse) state.chaining = false;
        state.commandChain = undefined;
        return card(command);
      }
      lies++;
      state.commandChain = ((command[0] ?? 0) & 0x10) !== 0 ? command[1] : undefined;
      return lie(command, card, state, options);
    },
  };
  return hostile;
}
