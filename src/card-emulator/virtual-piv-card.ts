/**
 * A virtual PIV card that behaves like the PIV applet of a YubiKey 5 (SP 800-73-4 Part 2 card edge,
 * Yubico extensions, YubiKey limits), answering raw APDUs (ApduResponder): the project's own secure
 * element for tests, the demo and — through the vpcd bridge — yubico-piv-tool and OpenSC over pcscd.
 * Card-edge facts follow /work/shared/reference/PIV-NOTES.md; section numbers below refer to it.
 *
 * - Keys (ECDSA/ECDH P-256 and P-384) are generated (or imported) inside and never leave: no command
 *   returns private key material.
 * - State (PIN/PUK and counters, management key, keys, objects) persists through a CardStateStore
 *   before the card answers; the PIN/PUK counter is decremented and saved before comparing.
 * - Responses longer than 256 bytes (short APDUs) come in 256-byte pieces with 61xx + GET RESPONSE;
 *   extended APDUs (Lc up to ~3 KB) and command chaining (CLA 10) are accepted.
 * - Not implemented: RSA, attestation (F9), touch (touch policies are stored and reported, never
 *   waited for), secure messaging and the SP 800-73-4 contactless restrictions (YubiKeys ignore them).
 * - `intercept` lets a test wrap or rewrite what the card answers (a hostile card) without forking it.
 */
import {
  createECDH,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  timingSafeEqual,
} from "node:crypto";
import {
  type DecodedCommandApdu,
  decodeCommandApdu,
  encodeCommandApdu,
  SHORT_MAX_DATA,
} from "../apdu/command.js";
import { GP_INS, PIV_INS } from "../apdu/instructions.js";
import { encodeResponseApdu } from "../apdu/response.js";
import { ISD_AID } from "../apdu/scp11/host.js";
import type { ScpCardChannel } from "../apdu/scp11/secure-messaging.js";
import { SW } from "../apdu/status-words.js";
import { concatBytes, decodeTlv, decodeTlvs, encodeTlv, encodeTlvs, findTlv, type Tlv } from "../apdu/tlv.js";
import { ecdsaRawToDer, signEcdsaDigestRaw } from "../crypto/ecdsa.js";
import {
  DEFAULT_MANAGEMENT_KEY,
  MANAGEMENT_KEY_ALGORITHM,
  type ManagementKeyType,
  managementKeyBlockSize,
  managementKeyCipher,
  managementKeyLength,
  managementKeyTypeFromAlgorithm,
} from "../piv/management-key.js";
import {
  buildCcc,
  buildChuid,
  buildDiscoveryObject,
  curveFromAlgorithm,
  curveSize,
  defaultPinPolicy,
  type EcCurve,
  isPivObjectId,
  isVendorObjectId,
  ObjectId,
  objectIdFromBytes,
  PIN_POLICY,
  PIN_PROTECTED_OBJECTS,
  PIV_AID,
  slotFromReference,
  YUBICO_MANAGEMENT_AID,
  YUBICO_OTP_AID,
} from "../piv/objects.js";
import type { ApduResponder } from "../transport/apdu-responder.js";
import { hex } from "../util/bytes.js";
import {
  CARD_STATE_FORMAT,
  CARD_STATE_VERSION,
  type CardKeyState,
  type CardScpKeyState,
  type CardSecretState,
  type CardState,
  type CardStateStore,
  FileCardStateStore,
  MemoryCardStateStore,
} from "./card-state-store.js";
import { type CardProfile, DEFAULT_CARD_PROFILE } from "./profiles.js";
import {
  authenticate,
  externalAuthenticate,
  initializeUpdate,
  isdFci,
  isdGetData,
  performSecurityOperation,
  putOceCaKey,
  type ScpVolatile,
  storeOceCaIdentifier,
} from "./scp-applet.js";

/** Sees every command before the card and may change, replace or drop the card's answer. */
export type ApduInterceptor = (command: Uint8Array, card: (command: Uint8Array) => Uint8Array) => Uint8Array;

export interface VirtualPivCardOptions {
  /** Where state lives; default: in memory (lost with the object). */
  readonly store?: CardStateStore;
  /** Card model: firmware, limits, ATRs (default YubiKey 5, firmware 5.4.3). */
  readonly profile?: CardProfile;
  /** Answer with the contactless (NFC) ATR instead of the contact (USB) one. */
  readonly contactless?: boolean;
  /** Serial of a freshly initialised card (default: random 8-digit). Ignored when state exists. */
  readonly serial?: number;
  /** Management key algorithm of a freshly initialised card (default: the profile's). */
  readonly managementKeyType?: ManagementKeyType;
  /** Write a CHUID and a CCC when the card is initialised or reset (default true). */
  readonly initialObjects?: boolean;
  /** Test hook for hostile-card scenarios; see ApduInterceptor. */
  readonly intercept?: ApduInterceptor;
}

const PIV_APT = Uint8Array.from([
  // 61 11 {4F 06 <PIX+version>, 79 07 {4F 05 <RID>}}: exactly what a YubiKey answers (§1)
  0x61, 0x11, 0x4f, 0x06, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00, 0x79, 0x07, 0x4f, 0x05, 0xa0, 0x00, 0x00, 0x03,
  0x08,
]);

const DEFAULT_PIN = new TextEncoder().encode("123456");
const DEFAULT_PUK = new TextEncoder().encode("12345678");

const INS = PIV_INS;

const INS_PERFORM_SECURITY_OPERATION = GP_INS.performSecurityOperation;
const INS_MUTUAL_AUTHENTICATE = GP_INS.mutualAuthenticate;
const INS_INTERNAL_AUTHENTICATE = GP_INS.internalAuthenticate;
const INS_GET_DATA_GP = GP_INS.getData;
/** CLA bit b3: secure messaging (84, 04). */
const CLA_SM = 0x04;
/** CLA bit b8: proprietary class (GlobalPlatform 80). */
const CLA_PROPRIETARY = 0x80;

/** Commands a chain (CLA 10) may carry (§7). */
const CHAINABLE: ReadonlySet<number> = new Set([
  INS.putData,
  INS.generalAuthenticate,
  INS.generateKeyPair,
  INS.importKey,
  INS.verify,
  INS.changeReference,
  INS.resetRetryCounter,
  INS.setManagementKey,
  INS_PERFORM_SECURITY_OPERATION,
]);

const REF_PIN = 0x80;
const REF_PUK = 0x81;
const REF_MANAGEMENT = 0x9b;

interface Reply {
  data?: Uint8Array;
  sw: number;
}

const sw = (code: number): Reply => ({ sw: code });
const ok = (data?: Uint8Array): Reply => (data ? { data, sw: SW.ok } : { sw: SW.ok });

interface VolatileState {
  selected: "piv" | "otp" | "management" | "isd" | undefined;
  pinVerified: boolean;
  /** A PIN verified since the last use of a PIN-always key (SP 800-73-4 "PIN always"). */
  pinAlways: boolean;
  managementAuthenticated: boolean;
  managementChallenge?: { kind: "witness" | "challenge"; alg: number; value: Uint8Array };
  chain?: { cla: number; ins: number; p1: number; p2: number; parts: Uint8Array[]; length: number };
  pendingResponse?: Uint8Array;
  /** SCP11 session and OCE chain of this power cycle. */
  scp: ScpVolatile;
}

function freshVolatile(): VolatileState {
  return { selected: "piv", pinVerified: false, pinAlways: false, managementAuthenticated: false, scp: {} };
}

const unhex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));
const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");
const b64d = (s: string) => new Uint8Array(Buffer.from(s, "base64"));
const unb64 = (s: string) => new Uint8Array(Buffer.from(s, "base64"));
const refKey = (ref: number) => ref.toString(16).toUpperCase().padStart(2, "0");
const objectKey = (id: number) =>
  id
    .toString(16)
    .toUpperCase()
    .padStart(id > 0xff ? 6 : 2, "0");

function padSecret(value: Uint8Array): Uint8Array {
  const out = new Uint8Array(8).fill(0xff);
  out.set(value, 0);
  return out;
}

/** A PIN as the card accepts it: 6–8 bytes, padded with FF to 8, no FF inside (§3). */
function isWellFormedPin(block: Uint8Array): boolean {
  if (block.length !== 8) return false;
  const end = block.indexOf(0xff);
  const len = end === -1 ? 8 : end;
  if (len < 6) return false;
  for (let i = len; i < 8; i++) if (block[i] !== 0xff) return false;
  return true;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function isAidPrefix(selected: Uint8Array, aid: Uint8Array, minLength: number): boolean {
  if (selected.length < minLength || selected.length > aid.length) return false;
  return selected.every((b, i) => aid[i] === b);
}

// ---------------------------------------------------------------------------------------------
// EC keys inside the card
// ---------------------------------------------------------------------------------------------

const NODE_CURVE: Record<EcCurve, string> = { "P-256": "prime256v1", "P-384": "secp384r1" };

function bigFromBytes(b: Uint8Array): bigint {
  return b.length === 0 ? 0n : BigInt(`0x${hex(b)}`);
}

function bigToBytes(v: bigint, length: number): Uint8Array {
  return unhex(v.toString(16).padStart(length * 2, "0"));
}

function privateScalar(key: KeyObject, size: number): Uint8Array {
  const d = key.export({ format: "jwk" }).d;
  if (!d) throw new Error("EC private key without d");
  const raw = new Uint8Array(Buffer.from(d, "base64url"));
  return raw.length === size ? raw : bigToBytes(bigFromBytes(raw), size);
}

function publicPoint(key: KeyObject, size: number): Uint8Array {
  const jwk = createPublicKey(key).export({ format: "jwk" });
  const x = new Uint8Array(Buffer.from(jwk.x ?? "", "base64url"));
  const y = new Uint8Array(Buffer.from(jwk.y ?? "", "base64url"));
  return concatBytes(
    Uint8Array.of(0x04),
    bigToBytes(bigFromBytes(x), size),
    bigToBytes(bigFromBytes(y), size),
  );
}

function randomSerial(): number {
  return 10_000_000 + (randomBytes(4).readUInt32BE(0) % 30_000_000);
}

// ---------------------------------------------------------------------------------------------
// The card
// ---------------------------------------------------------------------------------------------

export class VirtualPivCard implements ApduResponder {
  readonly profile: CardProfile;
  readonly contactless: boolean;
  private readonly store: CardStateStore;
  private readonly initialObjects: boolean;
  private readonly intercept: ApduInterceptor | undefined;
  private state: CardState;
  private volatile: VolatileState = freshVolatile();
  private powered = false;
  private readonly keyCache = new Map<string, KeyObject>();
  /**
   * The last command as the applet saw it after SCP unwrapping (header and plain data, CLA without
   * the secure-messaging bit), undefined when the last command was not wrapped or was refused before
   * unwrapping. For metering only (latency-profile.ts): a meter outside the card sees ciphertext.
   */
  lastUnwrapped: Uint8Array | undefined;

  /** Loads the card from `options.store`, or initialises (and saves) a factory-fresh one. */
  constructor(options: VirtualPivCardOptions = {}) {
    this.profile = options.profile ?? DEFAULT_CARD_PROFILE;
    this.contactless = options.contactless ?? false;
    this.store = options.store ?? new MemoryCardStateStore();
    this.initialObjects = options.initialObjects ?? true;
    this.intercept = options.intercept;
    const loaded = this.store.load();
    if (loaded) {
      this.state = loaded;
    } else {
      this.state = this.factoryState(
        options.serial ?? randomSerial(),
        options.managementKeyType ?? this.profile.defaultManagementKeyType,
      );
      this.save();
    }
  }

  /** A card whose state lives in `path` (created with factory defaults when the file does not exist). */
  static fromFile(path: string, options: Omit<VirtualPivCardOptions, "store"> = {}): VirtualPivCard {
    return new VirtualPivCard({ ...options, store: new FileCardStateStore(path) });
  }

  get serial(): number {
    return this.state.serial;
  }

  get atr(): Uint8Array {
    return (this.contactless ? this.profile.atr.contactless : this.profile.atr.contact).slice();
  }

  /** Bytes taken by stored objects, against profile.maxTotalObjectBytes. */
  get usedObjectBytes(): number {
    let n = 0;
    for (const v of Object.values(this.state.objects)) n += Buffer.byteLength(v, "base64");
    return n;
  }

  powerOn(): Uint8Array {
    this.powered = true;
    this.volatile = freshVolatile();
    return this.atr;
  }

  powerOff(): void {
    this.powered = false;
    this.volatile = freshVolatile();
  }

  transmit(command: Uint8Array): Uint8Array {
    this.lastUnwrapped = undefined;
    if (this.intercept) return this.intercept(command.slice(), (c) => this.process(c));
    return this.process(command);
  }

  // ------------------------------------------------------------------------------------------

  private factoryState(serial: number, managementKeyType: ManagementKeyType): CardState {
    const state: CardState = {
      format: CARD_STATE_FORMAT,
      version: CARD_STATE_VERSION,
      serial,
      pin: {
        value: hex(padSecret(DEFAULT_PIN)),
        tries: this.profile.pinTries,
        triesLeft: this.profile.pinTries,
        isDefault: true,
      },
      puk: {
        value: hex(padSecret(DEFAULT_PUK)),
        tries: this.profile.pukTries,
        triesLeft: this.profile.pukTries,
        isDefault: true,
      },
      managementKey: {
        type: managementKeyType,
        key: hex(DEFAULT_MANAGEMENT_KEY.subarray(0, managementKeyLength(managementKeyType))),
        touch: false,
        isDefault: true,
      },
      keys: {},
      objects: {},
    };
    if (this.initialObjects) {
      const expires = new Date(Date.UTC(new Date().getUTCFullYear() + 10, 0, 1));
      state.objects[objectKey(ObjectId.chuid)] = b64(
        buildChuid({ guid: new Uint8Array(randomBytes(16)), expires }),
      );
      state.objects[objectKey(ObjectId.cardCapabilityContainer)] = b64(
        buildCcc(new Uint8Array(randomBytes(14))),
      );
    }
    return state;
  }

  private save(): void {
    this.store.save(this.state);
  }

  private process(raw: Uint8Array): Uint8Array {
    if (!this.powered) return encodeResponseApdu(new Uint8Array(0), SW.noPreciseDiagnosis);
    let cmd: DecodedCommandApdu;
    try {
      cmd = decodeCommandApdu(raw);
    } catch {
      this.volatile.pendingResponse = undefined;
      this.volatile.chain = undefined;
      return encodeResponseApdu(new Uint8Array(0), SW.wrongLength);
    }
    try {
      return this.processDecoded(cmd);
    } catch {
      // A bug or a failed state write must never take the reader down: answer "no precise diagnosis".
      return encodeResponseApdu(new Uint8Array(0), SW.noPreciseDiagnosis);
    }
  }

  private processDecoded(cmd: DecodedCommandApdu): Uint8Array {
    const v = this.volatile;
    const chained = (cmd.cla & 0x10) !== 0;
    const cla = cmd.cla & ~0x10;
    if (cla !== 0x00 && cla !== CLA_SM && cla !== CLA_PROPRIETARY && cla !== (CLA_PROPRIETARY | CLA_SM)) {
      v.pendingResponse = undefined;
      return this.reply(sw(SW.claNotSupported), cmd);
    }
    if (cmd.ins === INS.getResponse && cmd.cla === 0x00) return this.getResponse(cmd);
    v.pendingResponse = undefined;

    if (cmd.extended && cmd.data.length > this.profile.maxExtendedLc) {
      v.chain = undefined;
      return this.reply(sw(SW.wrongLength), cmd);
    }

    // GP chaining of PERFORM SECURITY OPERATION also sets b8 of P1 on all blocks but the last.
    const p1 = cla === CLA_PROPRIETARY && cmd.ins === INS_PERFORM_SECURITY_OPERATION ? cmd.p1 & 0x7f : cmd.p1;

    // Command chaining (ISO/IEC 7816-4 §5.1.1.1): collect, answer 9000 until the last block.
    let data = cmd.data;
    let extended = cmd.extended;
    if (chained) {
      if (!CHAINABLE.has(cmd.ins)) {
        v.chain = undefined;
        return this.reply(sw(SW.chainingNotSupported), cmd);
      }
      const c = v.chain;
      if (!c || c.cla !== cla || c.ins !== cmd.ins || c.p1 !== p1 || c.p2 !== cmd.p2) {
        v.chain = { cla, ins: cmd.ins, p1, p2: cmd.p2, parts: [data], length: data.length };
      } else {
        c.parts.push(data);
        c.length += data.length;
      }
      if (v.chain!.length > this.profile.maxChainedData) {
        v.chain = undefined;
        return this.reply(sw(SW.notEnoughMemory), cmd);
      }
      return this.reply(ok(), cmd);
    }
    if (v.chain) {
      const c = v.chain;
      v.chain = undefined;
      // Another command mid-chain aborts the chain (§7).
      if (c.cla === cla && c.ins === cmd.ins && c.p1 === p1 && c.p2 === cmd.p2) {
        if (c.length + data.length > this.profile.maxChainedData)
          return this.reply(sw(SW.notEnoughMemory), cmd);
        data = concatBytes(...c.parts, data);
        extended = false; // a reassembled command's Lc′ counts in the form its length needs
      }
    }

    // SCP03's EXTERNAL AUTHENTICATE carries CLA 84 before there is a session: it opens one.
    if (
      cla === (CLA_PROPRIETARY | CLA_SM) &&
      cmd.ins === GP_INS.externalAuthenticate &&
      v.selected === "isd" &&
      v.scp.scp03Pending
    ) {
      return this.reply(externalAuthenticate(v.scp, cmd.p1, cmd.p2, data, extended), cmd);
    }
    // SCP11: inside a session only wrapped commands (and a plain SELECT, which ends it) pass.
    const session = v.scp.session;
    let wrapped = false;
    if ((cla & CLA_SM) !== 0) {
      if (!session) return this.reply(sw(SW.securityStatusNotSatisfied), cmd);
      try {
        data = session.unwrapCommand({ cla, ins: cmd.ins, p1: cmd.p1, p2: cmd.p2, data, extended });
      } catch {
        // Bad MAC, replay, reorder, bad padding: the session is dropped with its security state.
        this.endScpSession();
        return this.reply(sw(SW.securityStatusNotSatisfied), cmd);
      }
      wrapped = true;
      this.lastUnwrapped = encodeCommandApdu(
        { cla: cla & ~CLA_SM, ins: cmd.ins, p1: cmd.p1, p2: cmd.p2, data },
        data.length > SHORT_MAX_DATA ? "extended" : "short",
      );
    } else if (session) {
      this.endScpSession();
      if (cmd.ins !== INS.select) return this.reply(sw(SW.securityStatusNotSatisfied), cmd);
    }

    // A pending management-key challenge survives only the next GENERAL AUTHENTICATE on 9B.
    if (!(cmd.ins === INS.generalAuthenticate && cmd.p2 === REF_MANAGEMENT))
      v.managementChallenge = undefined;

    const inner = { ...cmd, cla: cla & ~CLA_SM, p1: cmd.p1, data, extended };
    const r = this.dispatch(inner, wrapped);
    if (wrapped && v.scp.session) {
      if (cmd.ins === INS.select) {
        this.endScpSession();
        return this.reply(r, cmd);
      }
      return this.reply(
        { data: v.scp.session.wrapResponse(r.data ?? new Uint8Array(0), r.sw), sw: r.sw },
        cmd,
      );
    }
    return this.reply(r, cmd);
  }

  /** Ends the SCP11 session and, with it, everything verified inside it. */
  private endScpSession(): void {
    this.volatile.scp = {};
    this.clearSecurityState();
  }

  /**
   * Installs (or replaces) an SD key for SCP11 with its certificate store, leaf last: what a card
   * vendor does at manufacture (scp-provision.ts). Persisted with the card state.
   */
  installScpKey(key: CardScpKeyState): void {
    const scp = this.state.scp ?? { keys: [] };
    scp.keys = [...scp.keys.filter((k) => k.kid !== key.kid), structuredClone(key)];
    this.state.scp = scp;
    this.save();
  }

  /** Installs the OCE CA public key (SCP11a): the owner's token CA, as SPKI DER. */
  installOceCa(kid: number, kvn: number, spki: Uint8Array): void {
    const scp = this.state.scp ?? { keys: [] };
    scp.oceCa = { kid, kvn, spki: b64(spki) };
    this.state.scp = scp;
    this.save();
  }

  /** Key references of the SD keys this card holds (KID, KVN). */
  get scpKeys(): readonly { kid: number; kvn: number }[] {
    return (this.state.scp?.keys ?? []).map((k) => ({ kid: k.kid, kvn: k.kvn }));
  }

  /** True while an SCP11 session is open (tests). */
  get scpSessionOpen(): boolean {
    return this.volatile.scp.session !== undefined;
  }

  /** The card's end of the open SCP11 session: what a hostile card signs its lies with (tests). */
  get scpChannel(): ScpCardChannel | undefined {
    return this.volatile.scp.session;
  }

  /** Sends at most 256 bytes (or Ne of an extended command) and keeps the rest for GET RESPONSE. */
  private reply(r: Reply, cmd: DecodedCommandApdu): Uint8Array {
    const data = r.data ?? new Uint8Array(0);
    // Short commands: 256 bytes whatever Le says (OpenSC probes with Le 08 and takes 61xx, §7).
    const limit = cmd.extended ? (cmd.le ?? 256) : 256;
    if (r.sw !== SW.ok || data.length <= limit) return encodeResponseApdu(data, r.sw);
    const rest = data.subarray(limit);
    this.volatile.pendingResponse = rest;
    return encodeResponseApdu(data.subarray(0, limit), 0x6100 | (Math.min(rest.length, 256) % 256));
  }

  private getResponse(cmd: DecodedCommandApdu): Uint8Array {
    const pending = this.volatile.pendingResponse;
    if (cmd.p1 !== 0 || cmd.p2 !== 0) return encodeResponseApdu(new Uint8Array(0), SW.incorrectP1P2);
    if (!pending) return encodeResponseApdu(new Uint8Array(0), SW.conditionsNotSatisfied);
    const n = Math.min(cmd.le ?? 256, 256);
    const chunk = pending.subarray(0, n);
    const rest = pending.subarray(n);
    if (rest.length === 0) {
      this.volatile.pendingResponse = undefined;
      return encodeResponseApdu(chunk, SW.ok);
    }
    this.volatile.pendingResponse = rest;
    return encodeResponseApdu(chunk, 0x6100 | (Math.min(rest.length, 256) % 256));
  }

  private dispatch(cmd: DecodedCommandApdu, wrapped: boolean): Reply {
    if (cmd.ins === INS.select) return this.select(cmd);
    const v = this.volatile;
    switch (v.selected) {
      case "piv":
        if (cmd.cla === CLA_PROPRIETARY) {
          // Only the GlobalPlatform session commands use the proprietary class in PIV.
          return this.scpSessionCommand(cmd, wrapped, true) ?? sw(SW.claNotSupported);
        }
        if (cmd.ins === INS.verify && this.profile.requireSecureVerify && !wrapped) {
          return sw(SW.conditionsNotSatisfied);
        }
        return this.dispatchPiv(cmd);
      case "isd": {
        const scp = this.state.scp;
        if (cmd.cla === CLA_PROPRIETARY) {
          // The SD's own session (owner administration, as yubikit's SecurityDomainSession does).
          const session = this.scpSessionCommand(cmd, wrapped, false);
          if (session) return session;
          switch (cmd.ins) {
            case GP_INS.initializeUpdate:
              if (wrapped) return sw(SW.conditionsNotSatisfied);
              return initializeUpdate(scp, v.scp, cmd.p1, cmd.p2, cmd.data);
            case GP_INS.putKey: {
              const r = putOceCaKey(scp, v.scp, cmd.p1, cmd.p2, cmd.data);
              if (r.install) this.installOceCa(r.install.kid, r.install.kvn, b64d(r.install.spki));
              return r;
            }
          }
        }
        if (cmd.ins === GP_INS.storeData && (cmd.cla === 0x00 || cmd.cla === CLA_PROPRIETARY)) {
          const r = storeOceCaIdentifier(scp, v.scp, cmd.p1, cmd.p2, cmd.data);
          if (r.ski && scp?.oceCa) {
            scp.oceCa = { ...scp.oceCa, ski: r.ski };
            this.save();
          }
          return r;
        }
        if (cmd.ins === INS_GET_DATA_GP && cmd.cla === 0x00) return isdGetData(scp, cmd.p1, cmd.p2, cmd.data);
        return sw(SW.insNotSupported);
      }
      case "otp":
        // YubiKey OTP application: only the serial request yubico-piv-tool uses (§1).
        if (cmd.ins === INS.otpApiRequest && cmd.p1 === 0x10) {
          const b = Buffer.alloc(4);
          b.writeUInt32BE(this.state.serial);
          return ok(new Uint8Array(b));
        }
        return sw(SW.insNotSupported);
      default:
        return sw(SW.insNotSupported);
    }
  }

  /**
   * PERFORM SECURITY OPERATION and INTERNAL/MUTUAL AUTHENTICATE (opening an SCP11 session), on the
   * PIV applet or the ISD; undefined for any other instruction. Opening one on the PIV applet drops
   * its PIN and management-key state.
   */
  private scpSessionCommand(cmd: DecodedCommandApdu, wrapped: boolean, onPiv: boolean): Reply | undefined {
    const scp = this.state.scp;
    const v = this.volatile;
    switch (cmd.ins) {
      case INS_PERFORM_SECURITY_OPERATION:
        return performSecurityOperation(scp, v.scp, cmd.p1, cmd.p2, cmd.data);
      case INS_INTERNAL_AUTHENTICATE:
      case INS_MUTUAL_AUTHENTICATE:
        if (wrapped) return sw(SW.conditionsNotSatisfied);
        if (onPiv) this.clearSecurityState();
        return authenticate(scp, v.scp, cmd.ins === INS_MUTUAL_AUTHENTICATE, cmd.p1, cmd.p2, cmd.data);
      default:
        return undefined;
    }
  }

  private dispatchPiv(cmd: DecodedCommandApdu): Reply {
    switch (cmd.ins) {
      case INS.verify:
        return this.verify(cmd);
      case INS.changeReference:
        return this.changeReference(cmd);
      case INS.resetRetryCounter:
        return this.resetRetryCounter(cmd);
      case INS.generalAuthenticate:
        return cmd.p2 === REF_MANAGEMENT ? this.authenticateManagement(cmd) : this.generalAuthenticate(cmd);
      case INS.generateKeyPair:
        return this.generateKeyPair(cmd);
      case INS.getData:
        return this.getData(cmd);
      case INS.putData:
        return this.putData(cmd);
      case INS.getVersion:
        return ok(Uint8Array.from(this.profile.firmware));
      case INS.getSerial: {
        const b = Buffer.alloc(4);
        b.writeUInt32BE(this.state.serial);
        return ok(new Uint8Array(b));
      }
      case INS.getMetadata:
        return this.getMetadata(cmd);
      case INS.setManagementKey:
        return this.setManagementKey(cmd);
      case INS.importKey:
        return this.importKey(cmd);
      case INS.reset:
        return this.resetApplication(cmd);
      case INS.setPinRetries:
        return this.setPinRetries(cmd);
      default:
        return sw(SW.insNotSupported);
    }
  }

  // ---- SELECT (§1) --------------------------------------------------------------------------

  private clearSecurityState(): void {
    const v = this.volatile;
    v.pinVerified = false;
    v.pinAlways = false;
    v.managementAuthenticated = false;
    v.managementChallenge = undefined;
  }

  private select(cmd: DecodedCommandApdu): Reply {
    if (cmd.p1 !== 0x04) return sw(SW.incorrectP1P2);
    const aid = cmd.data;
    let target: "piv" | "otp" | "management" | "isd" | undefined;
    const yubico = !this.profile.noYubicoApplets;
    if (isAidPrefix(aid, PIV_AID, 5)) target = "piv";
    else if (yubico && isAidPrefix(aid, YUBICO_OTP_AID, 7)) target = "otp";
    else if (yubico && isAidPrefix(aid, YUBICO_MANAGEMENT_AID, 8)) target = "management";
    else if (this.state.scp && isAidPrefix(aid, ISD_AID, 8)) target = "isd";
    // Unknown AID: 6A82, the current application stays selected with its state (§1, §8).
    if (!target) return sw(SW.fileNotFound);
    if (cmd.p2 !== 0x00 && cmd.p2 !== 0x0c) return sw(SW.incorrectP1P2);
    // Selecting PIV again keeps the security state; any other application clears it.
    if (target !== "piv" || this.volatile.selected !== "piv") this.clearSecurityState();
    this.volatile.selected = target;
    if (cmd.p2 === 0x0c) return ok();
    const [major, minor, patch] = this.profile.firmware;
    switch (target) {
      case "piv":
        return ok(PIV_APT);
      case "otp":
        // OTP status: version, programming sequence, touch level
        return ok(Uint8Array.of(major, minor, patch, 0x01, 0x00, 0x00));
      case "management":
        return ok(new TextEncoder().encode(`Virtual PIV card - FW version ${major}.${minor}.${patch}`));
      case "isd":
        return ok(isdFci(ISD_AID));
    }
  }

  // ---- PIN and PUK (§3) -----------------------------------------------------------------------

  private secret(ref: number): CardSecretState {
    return ref === REF_PUK ? this.state.puk : this.state.pin;
  }

  /**
   * Checks `presented` against a PIN or PUK with the counter decremented and saved first (a card
   * pulled mid-command cannot have given a free try), restored on success.
   */
  private checkSecret(ref: number, presented: Uint8Array): Reply | undefined {
    const s = this.secret(ref);
    if (s.triesLeft === 0) return sw(SW.authMethodBlocked);
    s.triesLeft--;
    this.save();
    if (equalBytes(unhex(s.value), presented)) {
      s.triesLeft = s.tries;
      this.save();
      return undefined;
    }
    if (ref === REF_PIN) {
      this.volatile.pinVerified = false;
      this.volatile.pinAlways = false;
    }
    return sw(SW.retryCounterSw | Math.min(s.triesLeft, 15));
  }

  private verify(cmd: DecodedCommandApdu): Reply {
    if (cmd.p1 !== 0x00 && cmd.p1 !== 0xff) return sw(SW.incorrectP1P2);
    if (cmd.p2 !== REF_PIN) return sw(SW.referenceNotFound);
    const v = this.volatile;
    if (cmd.p1 === 0xff) {
      if (cmd.data.length > 0) return sw(SW.incorrectData);
      v.pinVerified = false;
      v.pinAlways = false;
      return ok();
    }
    const pin = this.state.pin;
    if (cmd.data.length === 0) {
      if (pin.triesLeft === 0) return sw(SW.authMethodBlocked);
      if (v.pinVerified) return ok();
      return sw(SW.retryCounterSw | Math.min(pin.triesLeft, 15));
    }
    if (!isWellFormedPin(cmd.data)) return sw(SW.incorrectData);
    const failed = this.checkSecret(REF_PIN, cmd.data);
    if (failed) return failed;
    v.pinVerified = true;
    v.pinAlways = true;
    return ok();
  }

  private changeReference(cmd: DecodedCommandApdu): Reply {
    if (cmd.p1 !== 0x00) return sw(SW.incorrectP1P2);
    if (cmd.p2 !== REF_PIN && cmd.p2 !== REF_PUK) return sw(SW.referenceNotFound);
    if (cmd.data.length !== 16) return sw(SW.incorrectData);
    const current = cmd.data.subarray(0, 8);
    const next = cmd.data.subarray(8);
    if (cmd.p2 === REF_PIN && (!isWellFormedPin(current) || !isWellFormedPin(next)))
      return sw(SW.incorrectData);
    const failed = this.checkSecret(cmd.p2, current);
    if (failed) return failed;
    const s = this.secret(cmd.p2);
    s.value = hex(next);
    s.isDefault = equalBytes(next, padSecret(cmd.p2 === REF_PIN ? DEFAULT_PIN : DEFAULT_PUK));
    this.save();
    return ok();
  }

  private resetRetryCounter(cmd: DecodedCommandApdu): Reply {
    if (cmd.p1 !== 0x00) return sw(SW.incorrectP1P2);
    if (cmd.p2 !== REF_PIN) return sw(SW.referenceNotFound);
    if (cmd.data.length !== 16) return sw(SW.incorrectData);
    const newPin = cmd.data.subarray(8);
    if (!isWellFormedPin(newPin)) return sw(SW.incorrectData);
    const failed = this.checkSecret(REF_PUK, cmd.data.subarray(0, 8));
    if (failed) return failed;
    const pin = this.state.pin;
    pin.value = hex(newPin);
    pin.triesLeft = pin.tries;
    pin.isDefault = equalBytes(newPin, padSecret(DEFAULT_PIN));
    this.save();
    return ok();
  }

  /** Yubico `00 FA <pin tries> <puk tries>`: needs management key and PIN; PIN/PUK back to defaults. */
  private setPinRetries(cmd: DecodedCommandApdu): Reply {
    const v = this.volatile;
    if (!v.managementAuthenticated || !v.pinVerified) return sw(SW.securityStatusNotSatisfied);
    if (cmd.p1 === 0 || cmd.p2 === 0) return sw(SW.incorrectP1P2);
    this.state.pin = {
      value: hex(padSecret(DEFAULT_PIN)),
      tries: cmd.p1,
      triesLeft: cmd.p1,
      isDefault: true,
    };
    this.state.puk = {
      value: hex(padSecret(DEFAULT_PUK)),
      tries: cmd.p2,
      triesLeft: cmd.p2,
      isDefault: true,
    };
    v.pinVerified = false;
    v.pinAlways = false;
    this.save();
    return ok();
  }

  /** Yubico `00 FB`: factory reset of the PIV application, only with PIN and PUK blocked. */
  private resetApplication(cmd: DecodedCommandApdu): Reply {
    if (cmd.p1 !== 0 || cmd.p2 !== 0) return sw(SW.incorrectP1P2);
    if (this.state.pin.triesLeft !== 0 || this.state.puk.triesLeft !== 0)
      return sw(SW.conditionsNotSatisfied);
    this.state = this.factoryState(this.state.serial, this.profile.defaultManagementKeyType);
    this.keyCache.clear();
    this.clearSecurityState();
    this.save();
    return ok();
  }

  // ---- Management key (§4) ------------------------------------------------------------------

  private managementKey(): { type: ManagementKeyType; key: Uint8Array; alg: number; bs: number } {
    const m = this.state.managementKey;
    return {
      type: m.type,
      key: unhex(m.key),
      alg: MANAGEMENT_KEY_ALGORITHM[m.type],
      bs: managementKeyBlockSize(m.type),
    };
  }

  private authenticateManagement(cmd: DecodedCommandApdu): Reply {
    const v = this.volatile;
    const mk = this.managementKey();
    const pending = v.managementChallenge;
    v.managementChallenge = undefined;
    if (cmd.data.length === 0) return sw(SW.wrongLength);
    // Wrong algorithm (also OpenSC's random-number probe with P1 00): 6A80.
    if (cmd.p1 !== mk.alg) return sw(SW.incorrectData);
    let items: Tlv[];
    try {
      items = decodeTlvs(decodeTlv(cmd.data, 0x7c).value);
    } catch {
      return sw(SW.incorrectData);
    }
    const witness = findTlv(items, 0x80);
    const challenge = findTlv(items, 0x81);
    const response = findTlv(items, 0x82);
    const enc = (b: Uint8Array) => managementKeyCipher(mk.type, mk.key, b, "encrypt");

    // 1a. Host asks for a witness (yubico-piv-tool, yubikit): 7C {80 00} → 7C {80 E(W)}
    if (witness?.length === 0 && !challenge && !response) {
      const w = new Uint8Array(randomBytes(mk.bs));
      v.managementChallenge = { kind: "witness", alg: mk.alg, value: w };
      v.managementAuthenticated = false;
      return ok(encodeTlv(0x7c, encodeTlv(0x80, enc(w))));
    }
    // 1b. Host returns the decrypted witness and its own challenge: 7C {80 W, 81 C} → 7C {82 E(C)}
    if (
      witness &&
      witness.length === mk.bs &&
      challenge &&
      challenge.length === mk.bs &&
      (!response || response.length === 0)
    ) {
      if (pending?.kind !== "witness" || pending.alg !== mk.alg) return sw(SW.conditionsNotSatisfied);
      if (!equalBytes(witness, pending.value)) return sw(SW.securityStatusNotSatisfied);
      v.managementAuthenticated = true;
      return ok(encodeTlv(0x7c, encodeTlv(0x82, enc(challenge))));
    }
    // 2a. One-way form (OpenSC): 7C {81 00} → 7C {81 C}
    if (challenge?.length === 0 && !witness && !response) {
      const c = new Uint8Array(randomBytes(mk.bs));
      v.managementChallenge = { kind: "challenge", alg: mk.alg, value: enc(c) };
      v.managementAuthenticated = false;
      return ok(encodeTlv(0x7c, encodeTlv(0x81, c)));
    }
    // 2b. 7C {82 E(C)} → 9000
    if (response && response.length === mk.bs && !witness && !challenge) {
      if (pending?.kind !== "challenge" || pending.alg !== mk.alg) return sw(SW.conditionsNotSatisfied);
      if (!equalBytes(response, pending.value)) return sw(SW.securityStatusNotSatisfied);
      v.managementAuthenticated = true;
      return ok();
    }
    return sw(SW.incorrectData);
  }

  /** Yubico `00 FF FF FF|FE <alg> 9B <len> <key>`. */
  private setManagementKey(cmd: DecodedCommandApdu): Reply {
    if (cmd.p1 !== 0xff || (cmd.p2 !== 0xff && cmd.p2 !== 0xfe)) return sw(SW.incorrectP1P2);
    if (!this.volatile.managementAuthenticated) return sw(SW.securityStatusNotSatisfied);
    const d = cmd.data;
    if (d.length < 3) return sw(SW.wrongLength);
    const type = managementKeyTypeFromAlgorithm(d[0]!);
    if (!type || d[1] !== REF_MANAGEMENT || d[2] !== managementKeyLength(type) || d.length !== 3 + d[2]) {
      return sw(SW.incorrectData);
    }
    const key = d.subarray(3);
    this.state.managementKey = {
      type,
      key: hex(key),
      touch: cmd.p2 === 0xfe,
      isDefault: equalBytes(key, DEFAULT_MANAGEMENT_KEY.subarray(0, key.length)) && key.length === 24,
    };
    this.save();
    return ok();
  }

  // ---- Keys (§4) ----------------------------------------------------------------------------

  private loadKey(ref: number): { info: CardKeyState; key: KeyObject; curve: EcCurve } | undefined {
    const name = refKey(ref);
    const info = this.state.keys[name];
    if (!info) return undefined;
    const curve = curveFromAlgorithm(info.algorithm)!;
    let key = this.keyCache.get(name);
    if (!key) {
      key = createPrivateKey({ key: Buffer.from(unb64(info.pkcs8)), format: "der", type: "pkcs8" });
      this.keyCache.set(name, key);
    }
    return { info, key, curve };
  }

  private storeKey(
    ref: number,
    key: KeyObject,
    algorithm: 0x11 | 0x14,
    pinPolicy: number,
    touchPolicy: number,
    origin: 1 | 2,
  ): void {
    const slot = slotFromReference(ref)!;
    const name = refKey(ref);
    this.state.keys[name] = {
      algorithm,
      pkcs8: b64(new Uint8Array(key.export({ format: "der", type: "pkcs8" }))),
      pinPolicy: pinPolicy === 0 ? PIN_POLICY[defaultPinPolicy(slot)] : pinPolicy,
      touchPolicy: touchPolicy === 0 ? 1 : touchPolicy,
      origin,
    };
    this.keyCache.set(name, key);
    this.save();
  }

  private parsePolicies(items: Tlv[]): { pin: number; touch: number } | undefined {
    const pin = findTlv(items, 0xaa);
    const touch = findTlv(items, 0xab);
    const p = pin === undefined ? 0 : pin.length === 1 && pin[0]! <= 3 ? pin[0]! : -1;
    const t = touch === undefined ? 0 : touch.length === 1 && touch[0]! <= 3 ? touch[0]! : -1;
    return p < 0 || t < 0 ? undefined : { pin: p, touch: t };
  }

  private generateKeyPair(cmd: DecodedCommandApdu): Reply {
    if (cmd.p1 !== 0x00) return sw(SW.incorrectP1P2);
    if (!slotFromReference(cmd.p2)) return sw(SW.wrongP1P2);
    if (!this.volatile.managementAuthenticated) return sw(SW.securityStatusNotSatisfied);
    if (cmd.data.length === 0) return sw(SW.wrongLength);
    let items: Tlv[];
    try {
      items = decodeTlvs(decodeTlv(cmd.data, 0xac).value);
    } catch {
      return sw(SW.incorrectData);
    }
    const alg = findTlv(items, 0x80);
    const curve = alg?.length === 1 ? curveFromAlgorithm(alg[0]!) : undefined;
    const policies = this.parsePolicies(items);
    if (!curve || !policies) return sw(SW.incorrectData);
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: NODE_CURVE[curve] });
    this.storeKey(cmd.p2, privateKey, alg![0] as 0x11 | 0x14, policies.pin, policies.touch, 1);
    const point = publicPoint(privateKey, curveSize(curve));
    return ok(encodeTlv(0x7f49, encodeTlv(0x86, point)));
  }

  /** Yubico `00 FE <alg> <slot>`: EC private scalar in tag 06 (RSA is not supported here). */
  private importKey(cmd: DecodedCommandApdu): Reply {
    if (!slotFromReference(cmd.p2)) return sw(SW.wrongP1P2);
    if (!this.volatile.managementAuthenticated) return sw(SW.securityStatusNotSatisfied);
    const curve = curveFromAlgorithm(cmd.p1);
    if (!curve) return sw(SW.incorrectData);
    let items: Tlv[];
    try {
      items = decodeTlvs(cmd.data);
    } catch {
      return sw(SW.incorrectData);
    }
    const scalar = findTlv(items, 0x06);
    const policies = this.parsePolicies(items);
    const size = curveSize(curve);
    if (!scalar || scalar.length !== size || !policies) return sw(SW.incorrectData);
    let key: KeyObject;
    try {
      const ecdh = createECDH(NODE_CURVE[curve]);
      ecdh.setPrivateKey(scalar);
      const pub = ecdh.getPublicKey();
      const u = (b: Uint8Array) => Buffer.from(b).toString("base64url");
      key = createPrivateKey({
        key: {
          kty: "EC",
          crv: curve,
          d: u(scalar),
          x: u(pub.subarray(1, 1 + size)),
          y: u(pub.subarray(1 + size)),
        },
        format: "jwk",
      });
    } catch {
      return sw(SW.incorrectData);
    }
    this.storeKey(cmd.p2, key, cmd.p1 as 0x11 | 0x14, policies.pin, policies.touch, 2);
    return ok();
  }

  private generalAuthenticate(cmd: DecodedCommandApdu): Reply {
    if (!slotFromReference(cmd.p2)) return sw(SW.incorrectP1P2);
    if (cmd.data.length === 0) return sw(SW.wrongLength);
    let items: Tlv[];
    try {
      items = decodeTlvs(decodeTlv(cmd.data, 0x7c).value);
    } catch {
      return sw(SW.incorrectData);
    }
    const slot = this.loadKey(cmd.p2);
    if (!slot) return sw(SW.referenceNotFound);
    if (cmd.p1 !== slot.info.algorithm) return sw(SW.incorrectP1P2);
    const response = findTlv(items, 0x82);
    const challenge = findTlv(items, 0x81);
    const peer = findTlv(items, 0x85);
    if (
      response === undefined ||
      response.length !== 0 ||
      (challenge === undefined) === (peer === undefined)
    ) {
      return sw(SW.incorrectData);
    }
    const size = curveSize(slot.curve);
    if (challenge !== undefined && (challenge.length === 0 || challenge.length > size))
      return sw(SW.incorrectData);
    if (peer !== undefined && (peer.length !== 1 + 2 * size || peer[0] !== 0x04)) return sw(SW.incorrectData);

    // PIN policy: never (9E), once (PIN verified in this session), always (9C: verified right before).
    const v = this.volatile;
    const policy = slot.info.pinPolicy;
    if (policy === PIN_POLICY.once && !v.pinVerified) return sw(SW.securityStatusNotSatisfied);
    if (policy === PIN_POLICY.always && !(v.pinVerified && v.pinAlways))
      return sw(SW.securityStatusNotSatisfied);

    let result: Uint8Array;
    if (challenge !== undefined) {
      // ECDSA over the digest the host computed (the card does not hash): src/crypto/ecdsa.ts.
      const algorithm = slot.curve === "P-256" ? "ES256" : "ES384";
      result = ecdsaRawToDer(signEcdsaDigestRaw(slot.key, algorithm, challenge), algorithm);
    } else {
      try {
        const ecdh = createECDH(NODE_CURVE[slot.curve]);
        ecdh.setPrivateKey(privateScalar(slot.key, size));
        result = new Uint8Array(ecdh.computeSecret(peer!));
      } catch {
        return sw(SW.incorrectData);
      }
    }
    if (policy === PIN_POLICY.always) v.pinAlways = false;
    return ok(encodeTlv(0x7c, encodeTlv(0x82, result)));
  }

  /** Yubico `00 F7 00 <ref>` (§5). */
  private getMetadata(cmd: DecodedCommandApdu): Reply {
    if (cmd.p1 !== 0x00) return sw(SW.incorrectP1P2);
    const ref = cmd.p2;
    if (ref === REF_PIN || ref === REF_PUK) {
      const s = this.secret(ref);
      return ok(
        encodeTlvs([
          [0x01, Uint8Array.of(0xff)],
          [0x05, Uint8Array.of(s.isDefault ? 1 : 0)],
          [0x06, Uint8Array.of(s.tries, s.triesLeft)],
        ]),
      );
    }
    if (ref === REF_MANAGEMENT) {
      const m = this.state.managementKey;
      return ok(
        encodeTlvs([
          [0x01, Uint8Array.of(MANAGEMENT_KEY_ALGORITHM[m.type])],
          [0x02, Uint8Array.of(0x00, m.touch ? 0x02 : 0x01)],
          [0x05, Uint8Array.of(m.isDefault ? 1 : 0)],
        ]),
      );
    }
    if (!slotFromReference(ref)) return sw(SW.referenceNotFound);
    const slot = this.loadKey(ref);
    if (!slot) return sw(SW.referenceNotFound);
    const point = publicPoint(slot.key, curveSize(slot.curve));
    return ok(
      encodeTlvs([
        [0x01, Uint8Array.of(slot.info.algorithm)],
        [0x02, Uint8Array.of(slot.info.pinPolicy, slot.info.touchPolicy)],
        [0x03, Uint8Array.of(slot.info.origin)],
        [0x04, encodeTlv(0x86, point)],
      ]),
    );
  }

  // ---- Data objects (§2) --------------------------------------------------------------------

  private parseTagList(data: Uint8Array): number | undefined {
    try {
      const t = decodeTlv(data, 0x5c);
      return objectIdFromBytes(t.value);
    } catch {
      return undefined;
    }
  }

  private getData(cmd: DecodedCommandApdu): Reply {
    if (cmd.p1 !== 0x3f || cmd.p2 !== 0xff) return sw(SW.incorrectP1P2);
    if (cmd.data.length === 0) return sw(SW.wrongLength);
    const id = this.parseTagList(cmd.data);
    if (id === undefined) return sw(SW.incorrectData);
    if (id === ObjectId.discovery) return ok(buildDiscoveryObject());
    if (!isPivObjectId(id) && !isVendorObjectId(id)) return sw(SW.fileNotFound);
    // Access before existence: OpenSC reads PIN-protected objects to learn the login state (§8).
    if (PIN_PROTECTED_OBJECTS.has(id) && !this.volatile.pinVerified) return sw(SW.securityStatusNotSatisfied);
    const stored = this.state.objects[objectKey(id)];
    if (stored === undefined) return sw(SW.fileNotFound);
    return ok(encodeTlv(0x53, unb64(stored)));
  }

  private putData(cmd: DecodedCommandApdu): Reply {
    if (cmd.p1 !== 0x3f || cmd.p2 !== 0xff) return sw(SW.incorrectP1P2);
    if (cmd.data.length === 0) return sw(SW.wrongLength);
    if (!this.volatile.managementAuthenticated) return sw(SW.securityStatusNotSatisfied);
    let items: Tlv[];
    try {
      items = decodeTlvs(cmd.data);
    } catch {
      return sw(SW.incorrectData);
    }
    // The Discovery object is fixed on this card.
    if (items[0]?.tag === 0x7e) return sw(SW.functionNotSupported);
    const [tagList, body] = items;
    if (items.length !== 2 || tagList?.tag !== 0x5c || body?.tag !== 0x53) return sw(SW.incorrectData);
    const id = objectIdFromBytes(tagList.value);
    if (id === undefined || tagList.value.length !== 3 || (!isPivObjectId(id) && !isVendorObjectId(id))) {
      return sw(SW.incorrectData);
    }
    const key = objectKey(id);
    const content = body.value;
    if (content.length === 0) {
      if (this.state.objects[key] !== undefined) {
        delete this.state.objects[key];
        this.save();
      }
      return ok();
    }
    // YubiKey limits (SPEC §5): per object and in total; beyond them the card is full (6A84).
    if (content.length > this.profile.maxObjectSize) return sw(SW.notEnoughMemory);
    const previous = this.state.objects[key];
    const others =
      this.usedObjectBytes - (previous === undefined ? 0 : Buffer.byteLength(previous, "base64"));
    if (others + content.length > this.profile.maxTotalObjectBytes) return sw(SW.notEnoughMemory);
    this.state.objects[key] = b64(content);
    this.save();
    return ok();
  }
}
