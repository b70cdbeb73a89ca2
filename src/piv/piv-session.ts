/**
 * A PIV session (SP 800-73-4 Part 2, YubiKey-compatible; after yubikit's `PivSession`). It speaks in
 * PIV terms over a SmartCardProtocol and raises typed errors that carry data: WrongPinError
 * (triesLeft), PinBlockedError, WrongPukError, CardFullError, ManagementKeyError, … Status words
 * become errors in src/apdu/status-words.ts only; this file narrows a few of them where the command
 * gives a precise meaning.
 *
 *   const piv = await PivSession.open(transport);
 *   await piv.verifyPin("123456");
 *   const der = await piv.signDigest("9C", "P-256", sha256);
 */
import { createPublicKey, randomBytes } from "node:crypto";
import { SmartCardProtocol, type SmartCardProtocolOptions, YUBIKEY_MAX_APDU_SIZE } from "../apdu/chaining.js";
import { SHORT_MAX_LE } from "../apdu/command.js";
import { PIV_INS } from "../apdu/instructions.js";
import { BadResponseError } from "../apdu/response.js";
import { openScp11, type Scp11HostOptions, type ScpChannelInfo } from "../apdu/scp11/host.js";
import {
  ApduError,
  InsNotSupportedError,
  NotFoundError,
  ReferenceNotFoundError,
} from "../apdu/status-words.js";
import {
  concatBytes,
  decodeTlv,
  decodeTlvs,
  encodeTlv,
  encodeTlvs,
  findTlv,
  requireTlv,
} from "../apdu/tlv.js";
import { type EcdsaAlgorithm, ecdsaDerToRaw, ecdsaRawToDer } from "../crypto/ecdsa.js";
import { PinBlockedError, WrongPinError } from "../errors.js";
import type { CardTransport } from "../transport/card-transport.js";
import {
  ApplicationNotAvailableError,
  InvalidPinFormatError,
  ManagementKeyError,
  PukBlockedError,
  WrongPukError,
} from "./errors.js";
import {
  authenticateManagementKey,
  checkManagementKey,
  MANAGEMENT_KEY_ALGORITHM,
  MANAGEMENT_KEY_REFERENCE,
  type ManagementKeyType,
  managementKeyTypeFromAlgorithm,
} from "./management-key.js";
import {
  buildCcc,
  buildChuid,
  certificateObjectId,
  curveAlgorithm,
  curveFromAlgorithm,
  curveSize,
  decodeCertificateObject,
  type EcCurve,
  encodeCertificateObject,
  encodeObjectTagList,
  encodePivmanData,
  encodePivmanProtectedData,
  type FascN,
  ObjectId,
  PIN_POLICY,
  PIV_AID,
  type PinPolicy,
  type PivmanData,
  PivmanFlag,
  type PivSlot,
  parsePivmanData,
  parsePivmanProtectedData,
  pinPolicyFromByte,
  slotReference,
  TOUCH_POLICY,
  type TouchPolicy,
  touchPolicyFromByte,
  YUBICO_OTP_AID,
} from "./objects.js";

const INS = PIV_INS;

/**
 * Inside SCP11, the command that tells a PIV "security status not satisfied" (6982, session alive)
 * from a channel break (6982, session dropped): GET DATA of the discovery object, readable always,
 * without side effects (SP 800-73-4 Part 1 §3.3.2). See Scp11HostOptions.liveProbe.
 */
const SCP_LIVE_PROBE = {
  cla: 0,
  ins: PIV_INS.getData,
  p1: 0x3f,
  p2: 0xff,
  data: Uint8Array.of(0x5c, 0x01, 0x7e),
  le: 256,
} as const;

const PIN_REFERENCE = 0x80;
const PUK_REFERENCE = 0x81;

export interface FirmwareVersion {
  readonly major: number;
  readonly minor: number;
  readonly patch: number;
}

export function versionAtLeast(v: FirmwareVersion | undefined, major: number, minor = 0, patch = 0): boolean {
  if (!v) return false;
  if (v.major !== major) return v.major > major;
  if (v.minor !== minor) return v.minor > minor;
  return v.patch >= patch;
}

/** Yubico GET METADATA (`00 F7 00 <ref>`), tags 01–06. Fields present as the card reports them. */
export interface PivMetadata {
  readonly reference: number;
  /** 01: algorithm (FF for PIN/PUK) */
  readonly algorithm?: number;
  /** 02: PIN and touch policy */
  readonly pinPolicy?: PinPolicy;
  readonly touchPolicy?: TouchPolicy;
  /** 03: key generated on the card or imported */
  readonly origin?: "generated" | "imported";
  /** 04: public key, as SubjectPublicKeyInfo DER (EC keys) */
  readonly publicKey?: Uint8Array;
  /** 05: the PIN, PUK or management key still has its factory default */
  readonly isDefault?: boolean;
  /** 06: retry counters of PIN/PUK */
  readonly totalAttempts?: number;
  readonly attemptsRemaining?: number;
}

export interface PivSessionOptions extends SmartCardProtocolOptions {
  /**
   * Use extended APDUs when the card allows them, as yubikit does: an ATR whose T0 is Fx (USB
   * YubiKey) and firmware ≥ 4. Default true.
   */
  readonly extendedApdus?: boolean;
  /**
   * Open an SCP11 secure channel first (ISD, certificate store, SELECT PIV, authenticate): every
   * command of the session is then wrapped (src/apdu/scp11/host.ts).
   */
  readonly scp?: Scp11HostOptions;
}

export interface SetManagementKeyOptions {
  /** Yubico: require a touch for each use of the management key. */
  readonly requireTouch?: boolean;
  /**
   * Yubico convention (ykman `--protect`): store the new key in the PIN-protected PRINTED object
   * 5FC109 (`88 {89 key}`) and set bit 02 in ADMIN DATA 5FFF00, so a PIN holder can write objects.
   */
  readonly protect?: boolean;
}

function ecdsaAlgorithm(curve: EcCurve): EcdsaAlgorithm {
  return curve === "P-256" ? "ES256" : "ES384";
}

/** PIN or PUK as sent to the card: 6–8 bytes (UTF-8), padded to 8 with FF (SP 800-73-4 Part 2 §2.4.3). */
export function encodePin(value: string | Uint8Array, what: "PIN" | "PUK" = "PIN"): Uint8Array {
  const bytes = typeof value === "string" ? new TextEncoder().encode(value) : value;
  if (bytes.length < 6 || bytes.length > 8)
    throw new InvalidPinFormatError(`the ${what} must be 6 to 8 bytes`);
  if (bytes.includes(0xff)) throw new InvalidPinFormatError(`the ${what} must not contain byte FF`);
  const out = new Uint8Array(8).fill(0xff);
  out.set(bytes, 0);
  return out;
}

/** SubjectPublicKeyInfo DER of an uncompressed EC point; the point is checked to lie on the curve. */
export function ecPointToSpki(curve: EcCurve, point: Uint8Array): Uint8Array {
  const size = curveSize(curve);
  if (point.length !== 1 + 2 * size || point[0] !== 0x04) {
    throw new BadResponseError(`${curve} public key must be an uncompressed point of ${1 + 2 * size} bytes`);
  }
  const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64url");
  try {
    const key = createPublicKey({
      key: { kty: "EC", crv: curve, x: b64(point.subarray(1, 1 + size)), y: b64(point.subarray(1 + size)) },
      format: "jwk",
    });
    return new Uint8Array(key.export({ format: "der", type: "spki" }));
  } catch (e) {
    throw new BadResponseError(`${curve} public key from the card is not a point on the curve`, { cause: e });
  }
}

export class PivSession {
  /** Firmware version from `00 FD`, when the card answers it (YubiKeys do). */
  version: FirmwareVersion | undefined;
  private managementKeyTypeCache: ManagementKeyType | undefined;
  /** The secure channel the session runs in; undefined for a plaintext session. */
  secureChannel: ScpChannelInfo | undefined;

  constructor(readonly protocol: SmartCardProtocol) {}

  /**
   * Opens a session on a connected card: SELECT PIV, read the version (`00 FD`, tolerated absent),
   * then switch to extended APDUs when the card allows them.
   */
  static async open(transport: CardTransport, options: PivSessionOptions = {}): Promise<PivSession> {
    const session = new PivSession(new SmartCardProtocol(transport, options));
    if (options.scp) {
      const { session: _keys, ...info } = await openScp11(
        session.protocol,
        { liveProbe: SCP_LIVE_PROBE, ...options.scp },
        () => session.select(),
      );
      session.secureChannel = info;
    } else {
      await session.select();
    }
    try {
      session.version = await session.getVersion();
    } catch (e) {
      if (!(e instanceof InsNotSupportedError)) throw e;
    }
    const t0 = transport.atr[1] ?? 0;
    if (
      options.extendedApdus !== false &&
      !transport.contactless &&
      (t0 & 0xf0) === 0xf0 &&
      versionAtLeast(session.version, 4)
    ) {
      session.protocol.configure("extended", options.maxApduSize ?? YUBIKEY_MAX_APDU_SIZE);
    }
    return session;
  }

  private get le(): number {
    return this.protocol.maxLe;
  }

  // ------------------------------------------------------------------------------------------
  // Application
  // ------------------------------------------------------------------------------------------

  /** SELECT the PIV application; the answer must be an APT `61 {4F …}`. */
  async select(): Promise<void> {
    let fci: Uint8Array;
    try {
      fci = await this.protocol.select(PIV_AID);
    } catch (e) {
      if (e instanceof NotFoundError)
        throw new ApplicationNotAvailableError("the card has no PIV application", { cause: e });
      throw e;
    }
    if (fci.length > 0) {
      const apt = decodeTlvs(decodeTlv(fci, 0x61).value);
      requireTlv(apt, 0x4f, "PIV application property template");
    }
  }

  /** Yubico GET VERSION (`00 FD`). */
  async getVersion(): Promise<FirmwareVersion> {
    const data = await this.protocol.sendApdu({
      cla: 0,
      ins: INS.getVersion,
      p1: 0,
      p2: 0,
      le: SHORT_MAX_LE,
    });
    if (data.length !== 3) throw new BadResponseError(`version of ${data.length} bytes, expected 3`);
    return { major: data[0]!, minor: data[1]!, patch: data[2]! };
  }

  /**
   * YubiKey serial number: `00 F8` (firmware 5+); before that through the OTP application
   * (`00 01 10 00`), after which PIV is selected again (its security state is then lost).
   */
  async getSerial(): Promise<number> {
    let data: Uint8Array;
    try {
      data = await this.protocol.sendApdu({ cla: 0, ins: INS.getSerial, p1: 0, p2: 0, le: SHORT_MAX_LE });
    } catch (e) {
      if (!(e instanceof InsNotSupportedError) || versionAtLeast(this.version, 5)) throw e;
      await this.protocol.select(YUBICO_OTP_AID);
      try {
        data = await this.protocol.sendApdu({ cla: 0, ins: 0x01, p1: 0x10, p2: 0, le: SHORT_MAX_LE });
      } finally {
        await this.select();
      }
    }
    if (data.length !== 4) throw new BadResponseError(`serial of ${data.length} bytes, expected 4`);
    return ((data[0]! << 24) >>> 0) + (data[1]! << 16) + (data[2]! << 8) + data[3]!;
  }

  /** Yubico GET METADATA for a key slot, the PIN (80), the PUK (81) or the management key (9B). */
  async getMetadata(reference: number): Promise<PivMetadata> {
    const data = await this.protocol.sendApdu({
      cla: 0,
      ins: INS.getMetadata,
      p1: 0,
      p2: reference,
      le: this.le,
    });
    const items = decodeTlvs(data);
    const out: { -readonly [K in keyof PivMetadata]: PivMetadata[K] } = { reference };
    const alg = findTlv(items, 0x01);
    if (alg && alg.length === 1) out.algorithm = alg[0]!;
    const policy = findTlv(items, 0x02);
    if (policy && policy.length === 2) {
      out.pinPolicy = pinPolicyFromByte(policy[0]!);
      out.touchPolicy = touchPolicyFromByte(policy[1]!);
    }
    const origin = findTlv(items, 0x03);
    if (origin && origin.length === 1) out.origin = origin[0] === 1 ? "generated" : "imported";
    const pub = findTlv(items, 0x04);
    const curve = out.algorithm !== undefined ? curveFromAlgorithm(out.algorithm) : undefined;
    if (pub && curve)
      out.publicKey = ecPointToSpki(curve, requireTlv(decodeTlvs(pub), 0x86, "metadata public key"));
    const isDefault = findTlv(items, 0x05);
    if (isDefault && isDefault.length === 1) out.isDefault = isDefault[0] !== 0;
    const retries = findTlv(items, 0x06);
    if (retries && retries.length === 2) {
      out.totalAttempts = retries[0]!;
      out.attemptsRemaining = retries[1]!;
    }
    return out;
  }

  // ------------------------------------------------------------------------------------------
  // Data objects
  // ------------------------------------------------------------------------------------------

  /**
   * GET DATA: the content of an object (inside its `53` wrapper; Discovery `7E` as its own TLV).
   * Absent: NotFoundError (6A82). PIN-protected before the PIN: SecurityStatusError (6982).
   */
  async getData(objectId: number): Promise<Uint8Array> {
    const data = await this.protocol.sendApdu({
      cla: 0,
      ins: INS.getData,
      p1: 0x3f,
      p2: 0xff,
      data: encodeObjectTagList(objectId),
      le: this.le,
    });
    const expected =
      objectId === ObjectId.discovery ? 0x7e : objectId === ObjectId.biometricGroupTemplate ? 0x7f61 : 0x53;
    return decodeTlv(data, expected).value.slice();
  }

  /** GET DATA, or undefined when the object is absent or empty. */
  async readObject(objectId: number): Promise<Uint8Array | undefined> {
    try {
      const content = await this.getData(objectId);
      return content.length === 0 ? undefined : content;
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  /**
   * PUT DATA (`00 DB 3F FF 5C <id> 53 <content>`). Needs the management key (SecurityStatusError
   * otherwise). Too large for the object or the card: CardFullError (6A84).
   */
  async putData(objectId: number, content: Uint8Array): Promise<void> {
    const data =
      objectId === ObjectId.discovery
        ? encodeTlv(0x7e, content)
        : concatBytes(encodeObjectTagList(objectId), encodeTlv(0x53, content));
    await this.protocol.sendApdu({ cla: 0, ins: INS.putData, p1: 0x3f, p2: 0xff, data });
  }

  /** Empties an object (`53 00`, as yubico-piv-tool deletes a certificate). */
  async deleteData(objectId: number): Promise<void> {
    await this.putData(objectId, new Uint8Array(0));
  }

  /** The DER certificate of a slot, or undefined when none is stored. */
  async getCertificate(slot: PivSlot): Promise<Uint8Array | undefined> {
    const content = await this.readObject(certificateObjectId(slot));
    return content === undefined ? undefined : decodeCertificateObject(content);
  }

  /** Stores a certificate in its slot object (`70 cert 71 00|01 FE 00`); needs the management key. */
  async putCertificate(slot: PivSlot, der: Uint8Array, options: { compress?: boolean } = {}): Promise<void> {
    await this.putData(certificateObjectId(slot), encodeCertificateObject(der, options));
  }

  async deleteCertificate(slot: PivSlot): Promise<void> {
    await this.deleteData(certificateObjectId(slot));
  }

  /** Writes a CHUID (random GUID unless given) — what `yubico-piv-tool -a set-chuid` does. */
  async setChuid(options: { guid?: Uint8Array; expires?: Date; fascn?: FascN } = {}): Promise<void> {
    const expires = options.expires ?? new Date(Date.UTC(new Date().getUTCFullYear() + 10, 0, 1));
    await this.putData(
      ObjectId.chuid,
      buildChuid({
        guid: options.guid ?? new Uint8Array(randomBytes(16)),
        expires,
        ...(options.fascn ? { fascn: options.fascn } : {}),
      }),
    );
  }

  /** Writes a CCC with a random card identifier — what `yubico-piv-tool -a set-ccc` does. */
  async setCcc(unique?: Uint8Array): Promise<void> {
    await this.putData(ObjectId.cardCapabilityContainer, buildCcc(unique ?? new Uint8Array(randomBytes(14))));
  }

  // ------------------------------------------------------------------------------------------
  // PIN and PUK
  // ------------------------------------------------------------------------------------------

  /** VERIFY the PIN. Wrong: WrongPinError(triesLeft). Blocked: PinBlockedError. */
  async verifyPin(pin: string | Uint8Array): Promise<void> {
    await this.protocol.sendApdu({ cla: 0, ins: INS.verify, p1: 0, p2: PIN_REFERENCE, data: encodePin(pin) });
  }

  /**
   * PIN tries left, from an empty VERIFY (`63Cx`, `6983` = 0). When the PIN is already verified
   * the card answers 9000 without a count; then the Yubico metadata is asked, and null returned
   * when the card has none.
   */
  async pinTriesLeft(): Promise<number | null> {
    try {
      await this.protocol.sendApdu({ cla: 0, ins: INS.verify, p1: 0, p2: PIN_REFERENCE });
    } catch (e) {
      if (e instanceof WrongPinError) return e.triesLeft;
      if (e instanceof PinBlockedError) return 0;
      throw e;
    }
    try {
      return (await this.getMetadata(PIN_REFERENCE)).attemptsRemaining ?? null;
    } catch (e) {
      if (e instanceof ApduError) return null;
      throw e;
    }
  }

  /** Forgets the verified PIN (VERIFY with P1 = FF). */
  async logout(): Promise<void> {
    await this.protocol.sendApdu({ cla: 0, ins: INS.verify, p1: 0xff, p2: PIN_REFERENCE });
  }

  /** CHANGE REFERENCE DATA of the PIN. Errors as verifyPin. */
  async changePin(oldPin: string | Uint8Array, newPin: string | Uint8Array): Promise<void> {
    await this.protocol.sendApdu({
      cla: 0,
      ins: INS.changeReference,
      p1: 0,
      p2: PIN_REFERENCE,
      data: concatBytes(encodePin(oldPin), encodePin(newPin)),
    });
  }

  /** CHANGE REFERENCE DATA of the PUK. Wrong: WrongPukError. Blocked: PukBlockedError. */
  async changePuk(oldPuk: string | Uint8Array, newPuk: string | Uint8Array): Promise<void> {
    await this.withPukErrors(() =>
      this.protocol.sendApdu({
        cla: 0,
        ins: INS.changeReference,
        p1: 0,
        p2: PUK_REFERENCE,
        data: concatBytes(encodePin(oldPuk, "PUK"), encodePin(newPuk, "PUK")),
      }),
    );
  }

  /** RESET RETRY COUNTER: sets a new PIN with the PUK. Wrong PUK: WrongPukError; blocked: PukBlockedError. */
  async unblockPin(puk: string | Uint8Array, newPin: string | Uint8Array): Promise<void> {
    await this.withPukErrors(() =>
      this.protocol.sendApdu({
        cla: 0,
        ins: INS.resetRetryCounter,
        p1: 0,
        p2: PIN_REFERENCE,
        data: concatBytes(encodePin(puk, "PUK"), encodePin(newPin)),
      }),
    );
  }

  private async withPukErrors(run: () => Promise<unknown>): Promise<void> {
    try {
      await run();
    } catch (e) {
      if (e instanceof WrongPinError) throw new WrongPukError(e.triesLeft);
      if (e instanceof PinBlockedError)
        throw new PukBlockedError("PUK blocked (card returned 6983)", { cause: e });
      throw e;
    }
  }

  /** Yubico SET PIN RETRIES (`00 FA`): needs management key and PIN; resets PIN and PUK to defaults. */
  async setPinRetries(pinTries: number, pukTries: number): Promise<void> {
    await this.protocol.sendApdu({ cla: 0, ins: INS.setPinRetries, p1: pinTries, p2: pukTries });
  }

  /** Yubico PIV RESET (`00 FB`): only accepted when PIN and PUK are both blocked. */
  async reset(): Promise<void> {
    await this.protocol.sendApdu({ cla: 0, ins: INS.reset, p1: 0, p2: 0 });
    this.managementKeyTypeCache = undefined;
  }

  // ------------------------------------------------------------------------------------------
  // Management key
  // ------------------------------------------------------------------------------------------

  /** The management key algorithm from the Yubico metadata (firmware ≥ 5.3), else 3DES. */
  async getManagementKeyType(): Promise<ManagementKeyType> {
    if (this.managementKeyTypeCache) return this.managementKeyTypeCache;
    let type: ManagementKeyType = "3des";
    if (this.version === undefined || versionAtLeast(this.version, 5, 3)) {
      try {
        const alg = (await this.getMetadata(MANAGEMENT_KEY_REFERENCE)).algorithm;
        type = (alg !== undefined ? managementKeyTypeFromAlgorithm(alg) : undefined) ?? "3des";
      } catch (e) {
        if (!(e instanceof ApduError)) throw e;
      }
    }
    this.managementKeyTypeCache = type;
    return type;
  }

  /**
   * Mutual authentication with the management key (GENERAL AUTHENTICATE on 9B). The key type is read
   * from the card when not given. Wrong key: ManagementKeyError("wrong-key").
   */
  async authenticateManagementKey(key: Uint8Array, type?: ManagementKeyType): Promise<void> {
    const t = type ?? (await this.getManagementKeyType());
    await authenticateManagementKey((cmd) => this.protocol.sendApdu({ ...cmd, le: this.le }), t, key);
  }

  /**
   * Yubico SET MANAGEMENT KEY (`00 FF FF FF|FE 03 9B L key`); needs the current management key.
   * With `protect`, follows the Yubico PIN-protected convention (see SetManagementKeyOptions).
   */
  async setManagementKey(
    key: Uint8Array,
    type: ManagementKeyType,
    options: SetManagementKeyOptions = {},
  ): Promise<void> {
    checkManagementKey(type, key);
    await this.protocol.sendApdu({
      cla: 0,
      ins: INS.setManagementKey,
      p1: 0xff,
      p2: options.requireTouch ? 0xfe : 0xff,
      data: concatBytes(
        Uint8Array.of(MANAGEMENT_KEY_ALGORITHM[type], MANAGEMENT_KEY_REFERENCE, key.length),
        key,
      ),
    });
    this.managementKeyTypeCache = type;
    const admin = await this.getPivmanData();
    if (options.protect) {
      await this.putData(ObjectId.printedInformation, encodePivmanProtectedData(key));
      // The stored key replaces a PIN-derived one: drop its salt.
      await this.putData(
        ObjectId.yubicoAdminData,
        encodePivmanData({
          flags: admin.flags | PivmanFlag.managementKeyStored,
          ...(admin.pinLastChanged ? { pinLastChanged: admin.pinLastChanged } : {}),
        }),
      );
    } else if (admin.flags & PivmanFlag.managementKeyStored) {
      await this.deleteData(ObjectId.printedInformation);
      await this.putData(
        ObjectId.yubicoAdminData,
        encodePivmanData({ ...admin, flags: admin.flags & ~PivmanFlag.managementKeyStored }),
      );
    }
  }

  /** ADMIN DATA 5FFF00 (Yubico); all zero when absent. */
  async getPivmanData(): Promise<PivmanData> {
    const content = await this.readObject(ObjectId.yubicoAdminData);
    return content === undefined ? { flags: 0 } : parsePivmanData(content);
  }

  /**
   * The management key stored under the Yubico PIN-protected convention. Needs the PIN verified
   * (SecurityStatusError otherwise); ManagementKeyError("not-stored") when the card has none.
   */
  async readPinProtectedManagementKey(): Promise<Uint8Array> {
    const admin = await this.getPivmanData();
    if (!(admin.flags & PivmanFlag.managementKeyStored)) {
      throw new ManagementKeyError("not-stored", "the card stores no PIN-protected management key");
    }
    const content = await this.readObject(ObjectId.printedInformation);
    const key = content === undefined ? undefined : parsePivmanProtectedData(content);
    if (key === undefined)
      throw new ManagementKeyError("not-stored", "the PRINTED object holds no management key");
    return key;
  }

  /** Authenticates with the PIN-protected management key (verify the PIN first). */
  async authenticateWithPinProtectedManagementKey(): Promise<void> {
    await this.authenticateManagementKey(await this.readPinProtectedManagementKey());
  }

  // ------------------------------------------------------------------------------------------
  // Keys
  // ------------------------------------------------------------------------------------------

  /**
   * GENERATE ASYMMETRIC KEY PAIR in `slot` (needs the management key). Returns the public key as
   * SubjectPublicKeyInfo DER; the private key never leaves the card.
   */
  async generateKey(
    slot: PivSlot,
    curve: EcCurve,
    pinPolicy: PinPolicy = "default",
    touchPolicy: TouchPolicy = "default",
  ): Promise<Uint8Array> {
    const items: [number, Uint8Array][] = [[0x80, Uint8Array.of(curveAlgorithm(curve))]];
    if (pinPolicy !== "default") items.push([0xaa, Uint8Array.of(PIN_POLICY[pinPolicy])]);
    if (touchPolicy !== "default") items.push([0xab, Uint8Array.of(TOUCH_POLICY[touchPolicy])]);
    const data = await this.protocol.sendApdu({
      cla: 0,
      ins: INS.generateKeyPair,
      p1: 0,
      p2: slotReference(slot),
      data: encodeTlv(0xac, encodeTlvs(items)),
      le: this.le,
    });
    const point = requireTlv(decodeTlvs(decodeTlv(data, 0x7f49).value), 0x86, "generated public key");
    return ecPointToSpki(curve, point);
  }

  /**
   * ECDSA over a digest with the key in `slot`, DER-encoded (as the card returns it, strictly
   * checked). The digest is at most the curve size (32 or 48 bytes); shorter ones are left-padded
   * by the card. 9C needs the PIN verified immediately before each signature (PIN policy always).
   */
  async signDigest(slot: PivSlot, curve: EcCurve, digest: Uint8Array): Promise<Uint8Array> {
    const der = await this.signDigestDer(slot, curve, digest);
    // Re-encoding the parsed value guarantees one canonical DER form reaches the caller.
    return ecdsaRawToDer(ecdsaDerToRaw(der, ecdsaAlgorithm(curve)), ecdsaAlgorithm(curve));
  }

  /** As signDigest, returning raw r‖s (each left-padded to the curve size; COSE's form). */
  async signDigestRaw(slot: PivSlot, curve: EcCurve, digest: Uint8Array): Promise<Uint8Array> {
    return ecdsaDerToRaw(await this.signDigestDer(slot, curve, digest), ecdsaAlgorithm(curve));
  }

  private async signDigestDer(slot: PivSlot, curve: EcCurve, digest: Uint8Array): Promise<Uint8Array> {
    if (digest.length === 0 || digest.length > curveSize(curve)) {
      throw new RangeError(`a ${curve} digest is 1..${curveSize(curve)} bytes, got ${digest.length}`);
    }
    const response = await this.generalAuthenticate(slot, curve, [
      [0x82, new Uint8Array(0)],
      [0x81, digest],
    ]);
    return response;
  }

  /** ECDH with the key in `slot` and a peer's uncompressed point; returns the shared X coordinate. */
  async calculateSecret(slot: PivSlot, curve: EcCurve, peerPoint: Uint8Array): Promise<Uint8Array> {
    return this.generalAuthenticate(slot, curve, [
      [0x82, new Uint8Array(0)],
      [0x85, peerPoint],
    ]);
  }

  private async generalAuthenticate(
    slot: PivSlot,
    curve: EcCurve,
    items: [number, Uint8Array][],
  ): Promise<Uint8Array> {
    const data = await this.protocol.sendApdu({
      cla: 0,
      ins: INS.generalAuthenticate,
      p1: curveAlgorithm(curve),
      p2: slotReference(slot),
      data: encodeTlv(0x7c, encodeTlvs(items)),
      le: this.le,
    });
    return requireTlv(decodeTlvs(decodeTlv(data, 0x7c).value), 0x82, "GENERAL AUTHENTICATE response").slice();
  }

  /** Metadata of a slot, or undefined when the slot holds no key (6A88). */
  async getSlotMetadata(slot: PivSlot): Promise<PivMetadata | undefined> {
    try {
      return await this.getMetadata(slotReference(slot));
    } catch (e) {
      if (e instanceof ReferenceNotFoundError || e instanceof NotFoundError) return undefined;
      throw e;
    }
  }
}
