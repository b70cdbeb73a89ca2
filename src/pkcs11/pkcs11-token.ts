import { createHash } from "node:crypto";
import { ECDSA_PROFILES, ecdsaRawToDer } from "../crypto/ecdsa.js";
import {
  CardFullError,
  MalformedError,
  NoCardError,
  PinBlockedError,
  PinRequiredError,
  Pkcs11Error,
  WrongPinError,
} from "../errors.js";
import { type CertificateNames, certificateNames } from "./certificate-names.js";
import {
  CK_CERTIFICATE_CATEGORY_AUTHORITY,
  CK_CERTIFICATE_CATEGORY_TOKEN_USER,
  CKA_ALWAYS_AUTHENTICATE,
  CKA_APPLICATION,
  CKA_CERTIFICATE_CATEGORY,
  CKA_CERTIFICATE_TYPE,
  CKA_CLASS,
  CKA_DECRYPT,
  CKA_DERIVE,
  CKA_EC_PARAMS,
  CKA_EC_POINT,
  CKA_ENCRYPT,
  CKA_EXTRACTABLE,
  CKA_ID,
  CKA_ISSUER,
  CKA_KEY_TYPE,
  CKA_LABEL,
  CKA_MODIFIABLE,
  CKA_PRIVATE,
  CKA_SENSITIVE,
  CKA_SERIAL_NUMBER,
  CKA_SIGN,
  CKA_SUBJECT,
  CKA_TOKEN,
  CKA_UNWRAP,
  CKA_VALUE,
  CKA_VERIFY,
  CKA_WRAP,
  CKC_X_509,
  CKF_RW_SESSION,
  CKF_SERIAL_SESSION,
  CKF_USER_PIN_COUNT_LOW,
  CKF_USER_PIN_FINAL_TRY,
  CKF_USER_PIN_LOCKED,
  CKF_USER_PIN_TO_BE_CHANGED,
  CKK_EC,
  CKM_EC_KEY_PAIR_GEN,
  CKM_ECDSA,
  CKO_CERTIFICATE,
  CKO_DATA,
  CKO_PRIVATE_KEY,
  CKO_PUBLIC_KEY,
  CKR_DEVICE_MEMORY,
  CKR_DEVICE_REMOVED,
  CKR_PIN_INCORRECT,
  CKR_PIN_INVALID,
  CKR_PIN_LEN_RANGE,
  CKR_PIN_LOCKED,
  CKR_SESSION_CLOSED,
  CKR_SESSION_HANDLE_INVALID,
  CKR_TOKEN_NOT_PRESENT,
  CKR_TOKEN_NOT_RECOGNIZED,
  CKR_USER_NOT_LOGGED_IN,
  CKS_RO_USER_FUNCTIONS,
  CKS_RW_USER_FUNCTIONS,
  CKU_CONTEXT_SPECIFIC,
  CKU_USER,
} from "./constants.js";
import { CURVES, curveOfEcParams, type EcCurve, ecPointFromAttribute, spkiFromEcPoint } from "./ec.js";
import { pkcs11Failure, returnValueOf } from "./errors.js";
import {
  defaultModuleRegistry,
  type Handle,
  type Pkcs11Api,
  type Pkcs11Attribute,
  type Pkcs11ModuleLease,
  type Pkcs11ModuleRegistry,
} from "./module.js";

export type { EcCurve } from "./ec.js";

/** CKA_APPLICATION of the data objects this project writes (SPEC.md §5). */
export const DATA_APPLICATION = "hsm-onboard";

/**
 * Label suffix of a data object being replaced (see {@link Pkcs11Token.writeData}). Callers must not
 * use labels ending in it.
 */
export const PENDING_SUFFIX = "~pending";

/** A token answering with more objects than this for one search is treated as broken, not trusted. */
const MAX_SEARCH_RESULTS = 4096;

export interface Pkcs11TokenOptions {
  /** Path of the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so). */
  readonly modulePath: string;
  /**
   * The token's label (CK_TOKEN_INFO.label, blank padding ignored). Slots are found by label or serial,
   * never by slot id: ids change when a token is initialised (SoftHSM2 reassigns them).
   */
  readonly tokenLabel?: string;
  /** The token's serial number (CK_TOKEN_INFO.serialNumber), instead of or as well as the label. */
  readonly tokenSerial?: string;
  /** CK_TOKEN_INFO.manufacturerID and .model, to narrow the match further (RFC 7512 URIs carry them). */
  readonly tokenManufacturer?: string;
  readonly tokenModel?: string;
  /** The slot id, as well as label or serial (RFC 7512 slot-id; ids can change, so never alone). */
  readonly slotId?: bigint;
  /** Open a read-only session (for write-protected tokens). Default: read/write. */
  readonly readOnly?: boolean;
  /** Where loaded modules are shared; tests pass one built over a fake module. */
  readonly registry?: Pkcs11ModuleRegistry;
}

export interface Pkcs11TokenDescription {
  readonly label: string;
  readonly serialNumber: string;
  readonly manufacturer: string;
  readonly model: string;
  readonly modulePath: string;
}

/**
 * What the token says about the user PIN. PKCS#11 has no retry counter in its interface, only the
 * flags CKF_USER_PIN_COUNT_LOW / _FINAL_TRY / _LOCKED (v2.40 §5.5.1, CK_TOKEN_INFO), so `triesLeft`
 * is an estimate: 0 when locked, 1 on the final try, otherwise -1 (unknown). SoftHSM2 2.6 never locks
 * a PIN: it only raises COUNT_LOW after a failure and clears it after a success.
 */
export interface PinStatus {
  readonly triesLeft: number;
  readonly locked: boolean;
  readonly finalTry: boolean;
  readonly countLow: boolean;
  readonly mustChange: boolean;
}

/** An object named by CKA_LABEL, CKA_ID or both (RFC 7512 `object=` and `id=`). */
export interface ObjectSelector {
  readonly label?: string;
  readonly id?: Uint8Array;
}

/** A private EC key on the token. */
export interface EcPrivateKey {
  readonly handle: Handle;
  readonly label: string;
  readonly id: Uint8Array;
  readonly curve: EcCurve;
  /** CKA_PRIVATE: usable only after C_Login. */
  readonly requiresLogin: boolean;
  /** CKA_ALWAYS_AUTHENTICATE: a context-specific login before every signature. */
  readonly alwaysAuthenticate: boolean;
}

export interface GenerateEcKeyPairOptions {
  readonly label: string;
  /** CKA_ID shared by the key pair and its certificate (OpenSC's PIV mapping: 02 = 9C, 04 = 9E). */
  readonly id?: Uint8Array;
  readonly curve: EcCurve;
  /**
   * CKA_PRIVATE of the private key. True (default): usable only after the PIN (PIV 9C). False: usable
   * without the PIN, like the PIV card-authentication key 9E. Either way it is CKA_SENSITIVE and not
   * CKA_EXTRACTABLE: it never leaves the token.
   */
  readonly requireLogin?: boolean;
  /** CKA_ALWAYS_AUTHENTICATE: the PIN is presented again for each signature (PIV PIN policy "always"). */
  readonly alwaysAuthenticate?: boolean;
  /** Replace keys with the same label; the old ones are destroyed only once the new pair exists. */
  readonly replace?: boolean;
}

export interface GeneratedEcKeyPair {
  /** SubjectPublicKeyInfo DER of the new key, from CKA_EC_POINT. */
  readonly spki: Uint8Array;
  readonly privateKey: EcPrivateKey;
}

export interface ImportCertificateOptions {
  readonly label: string;
  readonly der: Uint8Array;
  readonly id?: Uint8Array;
  /** CKA_CERTIFICATE_CATEGORY authority (a CA) instead of token user (the key holder's own). */
  readonly authority?: boolean;
  /** Replace certificates with the same label (destroyed after the new one is stored). */
  readonly replace?: boolean;
}

export interface TokenCertificate {
  readonly label: string;
  readonly id: Uint8Array;
  readonly der: Uint8Array;
}

export interface DataObjectInfo {
  readonly label: string;
  readonly size: number;
}

/**
 * One open session on one PKCS#11 token: the secure-element operations over any PKCS#11 module
 * (SPEC.md §3, layer `pkcs11`). Synchronous underneath (the binding's calls block; a token answers in
 * milliseconds), and always closed: `close()` (or `using`) logs out, closes the session and releases
 * the module, which is finalised with its last user.
 */
export class Pkcs11Token implements Disposable {
  readonly description: Pkcs11TokenDescription;
  readonly #api: Pkcs11Api;
  readonly #lease: Pkcs11ModuleLease;
  readonly #slot: Handle;
  readonly #sessionFlags: number;
  #session: Handle | undefined;
  /**
   * The verified PIN, kept only for context-specific logins (CKA_ALWAYS_AUTHENTICATE keys) and
   * dropped on logout/close. A private field: not enumerable, not serialised, never in a message.
   */
  #pin: string | undefined;

  private constructor(
    lease: Pkcs11ModuleLease,
    slot: Handle,
    description: Pkcs11TokenDescription,
    flags: number,
  ) {
    this.#lease = lease;
    this.#api = lease.api;
    this.#slot = slot;
    this.description = description;
    this.#sessionFlags = flags;
  }

  static async open(options: Pkcs11TokenOptions): Promise<Pkcs11Token> {
    if (options.tokenLabel === undefined && options.tokenSerial === undefined) {
      throw new TypeError("Pkcs11Token.open needs a tokenLabel or a tokenSerial");
    }
    const registry = options.registry ?? defaultModuleRegistry;
    const lease = await registry.acquire(options.modulePath);
    try {
      const { slot, info } = findSlot(lease.api, options);
      const flags = CKF_SERIAL_SESSION | (options.readOnly ? 0 : CKF_RW_SESSION);
      const token = new Pkcs11Token(
        lease,
        slot,
        {
          label: info.label.trimEnd(),
          serialNumber: info.serialNumber.trimEnd(),
          manufacturer: info.manufacturerID.trimEnd(),
          model: info.model.trimEnd(),
          modulePath: lease.modulePath,
        },
        flags,
      );
      token.#session = call("C_OpenSession", () => lease.api.C_OpenSession(slot, flags));
      return token;
    } catch (error) {
      lease.release();
      throw error;
    }
  }

  get closed(): boolean {
    return this.#session === undefined;
  }

  // ---- PIN ---------------------------------------------------------------------------------------

  pinStatus(): PinStatus {
    const flags = call("C_GetTokenInfo", () => this.#api.C_GetTokenInfo(this.#slot)).flags;
    const locked = (flags & CKF_USER_PIN_LOCKED) !== 0;
    const finalTry = (flags & CKF_USER_PIN_FINAL_TRY) !== 0;
    return {
      triesLeft: locked ? 0 : finalTry ? 1 : -1,
      locked,
      finalTry,
      countLow: (flags & CKF_USER_PIN_COUNT_LOW) !== 0,
      mustChange: (flags & CKF_USER_PIN_TO_BE_CHANGED) !== 0,
    };
  }

  /** True while the user is logged in (the login state is the application's, shared by its sessions). */
  get loggedIn(): boolean {
    const state = call("C_GetSessionInfo", () => this.#api.C_GetSessionInfo(this.#openSession())).state;
    return state === CKS_RW_USER_FUNCTIONS || state === CKS_RO_USER_FUNCTIONS;
  }

  /**
   * C_Login as CKU_USER. A wrong PIN throws WrongPinError with {@link PinStatus.triesLeft} read after
   * the failure (-1: the token does not say); a locked PIN throws PinBlockedError. An existing login
   * is dropped first, so this always checks the PIN given.
   */
  login(pin: string): void {
    const session = this.#openSession();
    this.logout();
    try {
      this.#api.C_Login(session, CKU_USER, pin);
    } catch (cause) {
      throw this.#pinError("C_Login", cause);
    }
    this.#pin = pin;
  }

  logout(): void {
    this.#pin = undefined;
    const session = this.#session;
    if (session === undefined) return;
    try {
      this.#api.C_Logout(session);
    } catch {
      // CKR_USER_NOT_LOGGED_IN: nothing to undo.
    }
  }

  // ---- keys --------------------------------------------------------------------------------------

  /**
   * The EC private key labelled `label`, or undefined. A key with CKA_PRIVATE set is invisible until
   * the user is logged in (PKCS#11 v2.40 §4.4), so "not found" before login may mean "PIN needed".
   */
  findPrivateKey(selector: string | ObjectSelector): EcPrivateKey | undefined {
    const handle = this.#findOne("private key", [
      { type: CKA_CLASS, value: CKO_PRIVATE_KEY },
      { type: CKA_KEY_TYPE, value: CKK_EC },
      ...selectorTemplate(selector),
    ]);
    if (!handle) return undefined;
    const label =
      typeof selector === "string"
        ? selector
        : (this.#optionalAttribute(handle, CKA_LABEL)?.toString("utf8") ?? selector.label ?? "");
    let ecParams = this.#optionalAttribute(handle, CKA_EC_PARAMS);
    if (!ecParams) {
      // Some modules keep CKA_EC_PARAMS only on the public half.
      const pub = this.#findOne("public key", [
        { type: CKA_CLASS, value: CKO_PUBLIC_KEY },
        ...selectorTemplate(selector),
      ]);
      ecParams = pub && this.#optionalAttribute(pub, CKA_EC_PARAMS);
    }
    const curve = ecParams && curveOfEcParams(ecParams);
    if (!curve) throw pkcs11Failure("find private key", undefined, `key "${label}" is not on P-256 or P-384`);
    return {
      handle,
      label,
      id: new Uint8Array(this.#optionalAttribute(handle, CKA_ID) ?? []),
      curve,
      requiresLogin: decodeBool(this.#optionalAttribute(handle, CKA_PRIVATE)) ?? true,
      alwaysAuthenticate: decodeBool(this.#optionalAttribute(handle, CKA_ALWAYS_AUTHENTICATE)) ?? false,
    };
  }

  /** SubjectPublicKeyInfo DER of the EC public key object labelled `label`, or undefined. */
  publicKeySpki(selector: string | ObjectSelector): Uint8Array | undefined {
    const handle = this.#findOne("public key", [
      { type: CKA_CLASS, value: CKO_PUBLIC_KEY },
      { type: CKA_KEY_TYPE, value: CKK_EC },
      ...selectorTemplate(selector),
    ]);
    return (
      handle && this.#spkiOf(handle, typeof selector === "string" ? selector : describeSelector(selector))
    );
  }

  /**
   * Generates an EC key pair on the token: CKA_TOKEN, private half CKA_SENSITIVE and not
   * CKA_EXTRACTABLE, so the private key never exists outside it. Returns the public key as SPKI DER.
   */
  generateEcKeyPair(options: GenerateEcKeyPairOptions): GeneratedEcKeyPair {
    const session = this.#openSession();
    const { label, curve } = options;
    const requireLogin = options.requireLogin ?? true;
    const alwaysAuthenticate = options.alwaysAuthenticate ?? false;
    const id = Buffer.from(options.id ?? []);
    const previous = options.replace
      ? [CKO_PRIVATE_KEY, CKO_PUBLIC_KEY].flatMap((cls) =>
          this.#find([
            { type: CKA_CLASS, value: cls },
            { type: CKA_LABEL, value: label },
          ]),
        )
      : [];
    const common: Pkcs11Attribute[] = [
      { type: CKA_KEY_TYPE, value: CKK_EC },
      { type: CKA_TOKEN, value: true },
      { type: CKA_LABEL, value: label },
      { type: CKA_ID, value: id },
    ];
    const publicTemplate: Pkcs11Attribute[] = [
      { type: CKA_CLASS, value: CKO_PUBLIC_KEY },
      ...common,
      { type: CKA_PRIVATE, value: false },
      { type: CKA_EC_PARAMS, value: CURVES[curve].ecParams },
      // A signature key only (PIV keys in 9E/9C are signature keys).
      { type: CKA_VERIFY, value: true },
      { type: CKA_ENCRYPT, value: false },
      { type: CKA_WRAP, value: false },
    ];
    const privateTemplate: Pkcs11Attribute[] = [
      { type: CKA_CLASS, value: CKO_PRIVATE_KEY },
      ...common,
      { type: CKA_PRIVATE, value: requireLogin },
      { type: CKA_SENSITIVE, value: true },
      { type: CKA_EXTRACTABLE, value: false },
      { type: CKA_SIGN, value: true },
      { type: CKA_DECRYPT, value: false },
      { type: CKA_UNWRAP, value: false },
      { type: CKA_DERIVE, value: false },
      // Only set when wanted: some modules reject the attribute outright.
      ...(alwaysAuthenticate ? [{ type: CKA_ALWAYS_AUTHENTICATE, value: true }] : []),
    ];
    const pair = call("C_GenerateKeyPair", () =>
      this.#api.C_GenerateKeyPair(
        session,
        { mechanism: CKM_EC_KEY_PAIR_GEN },
        publicTemplate,
        privateTemplate,
      ),
    );
    for (const old of previous) this.#destroy(old);
    return {
      spki: this.#spkiOf(pair.publicKey, label),
      privateKey: {
        handle: pair.privateKey,
        label,
        id: new Uint8Array(id),
        curve,
        requiresLogin: requireLogin,
        alwaysAuthenticate,
      },
    };
  }

  /**
   * Raw CKM_ECDSA over a digest computed by the caller: r‖s, each half the field size (PKCS#11 v2.40
   * §2.3.1). For a CKA_ALWAYS_AUTHENTICATE key the verified PIN is presented again (CKU_CONTEXT_SPECIFIC)
   * right after C_SignInit, as the standard requires.
   */
  signDigest(key: EcPrivateKey, digest: Uint8Array): Uint8Array {
    if (key.alwaysAuthenticate && this.#pin === undefined) {
      throw new PinRequiredError(`key "${key.label}" needs the PIN before each signature`);
    }
    const session = this.#openSession();
    const size = 2 * CURVES[key.curve].fieldBytes;
    call("C_SignInit", () => this.#api.C_SignInit(session, { mechanism: CKM_ECDSA }, key.handle));
    let signature: Buffer;
    try {
      if (key.alwaysAuthenticate) {
        try {
          this.#api.C_Login(session, CKU_CONTEXT_SPECIFIC, this.#pin);
        } catch (cause) {
          throw this.#pinError("C_Login (context specific)", cause);
        }
      }
      signature = call("C_Sign", () =>
        this.#api.C_Sign(session, Buffer.from(digest), Buffer.alloc(size + 16)),
      );
    } catch (error) {
      // An operation left active (a failed context login) would block every later C_SignInit: start
      // over on a fresh session. The new one opens first, so the user stays logged in.
      this.#replaceSession();
      throw error;
    }
    if (signature.length !== size) {
      throw new MalformedError(
        `C_Sign returned ${signature.length} bytes, expected ${size} for ${key.curve}`,
      );
    }
    return new Uint8Array(signature);
  }

  /** Hashes `data` in software (SHA-256 for P-256, SHA-384 for P-384) and signs the digest: r‖s. */
  sign(key: EcPrivateKey, data: Uint8Array): Uint8Array {
    const { hash } = ECDSA_PROFILES[CURVES[key.curve].algorithm];
    return this.signDigest(key, createHash(hash).update(data).digest());
  }

  /** As {@link sign}, as a DER Ecdsa-Sig-Value (what OpenSSL and X.509 carry). */
  signDer(key: EcPrivateKey, data: Uint8Array): Uint8Array {
    return ecdsaRawToDer(this.sign(key, data), CURVES[key.curve].algorithm);
  }

  // ---- certificates ------------------------------------------------------------------------------

  /** DER of the X.509 certificate labelled `label`, or undefined. */
  findCertificate(label: string): Uint8Array | undefined {
    const handle = this.#findOne("certificate", [
      { type: CKA_CLASS, value: CKO_CERTIFICATE },
      { type: CKA_CERTIFICATE_TYPE, value: CKC_X_509 },
      { type: CKA_LABEL, value: label },
    ]);
    return handle && new Uint8Array(this.#attribute(handle, CKA_VALUE));
  }

  /** Every X.509 certificate object on the token that the session can see. */
  listCertificates(): TokenCertificate[] {
    return this.#find([
      { type: CKA_CLASS, value: CKO_CERTIFICATE },
      { type: CKA_CERTIFICATE_TYPE, value: CKC_X_509 },
    ]).map((handle) => ({
      label: (this.#optionalAttribute(handle, CKA_LABEL) ?? Buffer.alloc(0)).toString("utf8"),
      id: new Uint8Array(this.#optionalAttribute(handle, CKA_ID) ?? []),
      der: new Uint8Array(this.#attribute(handle, CKA_VALUE)),
    }));
  }

  /**
   * Stores an X.509 certificate object (CKO_CERTIFICATE, CKC_X_509, public, on the token) with the
   * subject, issuer and serial number attributes other PKCS#11 applications search by.
   */
  importCertificate(options: ImportCertificateOptions): void {
    const session = this.#openSession();
    let certificate: CertificateNames;
    try {
      certificate = certificateNames(options.der);
    } catch (cause) {
      throw new MalformedError(`certificate "${options.label}" is not a DER X.509 certificate`, { cause });
    }
    const previous = options.replace
      ? this.#find([
          { type: CKA_CLASS, value: CKO_CERTIFICATE },
          { type: CKA_LABEL, value: options.label },
        ])
      : [];
    const template: Pkcs11Attribute[] = [
      { type: CKA_CLASS, value: CKO_CERTIFICATE },
      { type: CKA_CERTIFICATE_TYPE, value: CKC_X_509 },
      { type: CKA_TOKEN, value: true },
      { type: CKA_PRIVATE, value: false },
      { type: CKA_LABEL, value: options.label },
      { type: CKA_ID, value: Buffer.from(options.id ?? []) },
      { type: CKA_SUBJECT, value: Buffer.from(certificate.subject) },
      { type: CKA_ISSUER, value: Buffer.from(certificate.issuer) },
      { type: CKA_SERIAL_NUMBER, value: Buffer.from(certificate.serialNumber) },
      {
        type: CKA_CERTIFICATE_CATEGORY,
        value: options.authority ? CK_CERTIFICATE_CATEGORY_AUTHORITY : CK_CERTIFICATE_CATEGORY_TOKEN_USER,
      },
      { type: CKA_VALUE, value: Buffer.from(options.der) },
    ];
    call("C_CreateObject", () => this.#api.C_CreateObject(session, template));
    for (const old of previous) this.#destroy(old);
  }

  /** Destroys every object of `objectClass` labelled `label`; returns how many there were. */
  destroyObjects(objectClass: number, label: string): number {
    const handles = this.#find([
      { type: CKA_CLASS, value: objectClass },
      { type: CKA_LABEL, value: label },
    ]);
    for (const handle of handles) this.#destroy(handle);
    return handles.length;
  }

  // ---- data objects ------------------------------------------------------------------------------

  /** CKA_VALUE of the data object `label` of `application`, or undefined. */
  readData(label: string, application = DATA_APPLICATION): Uint8Array | undefined {
    const handle =
      this.#findData(label, application) ?? this.#findData(label + PENDING_SUFFIX, application, "pending");
    return handle && new Uint8Array(this.#attribute(handle, CKA_VALUE));
  }

  /** The data objects of `application`: label and size in bytes. */
  listData(application = DATA_APPLICATION): DataObjectInfo[] {
    const found = new Map<string, DataObjectInfo>();
    const pending = new Map<string, DataObjectInfo>();
    for (const handle of this.#find(dataTemplate(application))) {
      const label = (this.#optionalAttribute(handle, CKA_LABEL) ?? Buffer.alloc(0)).toString("utf8");
      const size = this.#attribute(handle, CKA_VALUE).length;
      if (label.endsWith(PENDING_SUFFIX)) {
        const base = label.slice(0, -PENDING_SUFFIX.length);
        pending.set(base, { label: base, size });
      } else {
        found.set(label, { label, size });
      }
    }
    // A pending object whose original is gone is a replacement interrupted after its commit point.
    for (const [base, info] of pending) if (!found.has(base)) found.set(base, info);
    return [...found.values()].sort((a, b) => (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
  }

  /**
   * Stores `value` as the data object `label` (CKO_DATA, public, on the token, CKA_APPLICATION
   * `application`). A new label is one C_CreateObject. Replacing an existing one is made atomic for
   * readers of this layer: the new value is created as `label~pending`, the old object destroyed (the
   * commit point), then the new one renamed. Interrupted before the commit, readers still see the old
   * value and the next write discards the leftover; after it, readers see the pending (new) value.
   */
  writeData(label: string, value: Uint8Array, application = DATA_APPLICATION): void {
    if (label.endsWith(PENDING_SUFFIX))
      throw new TypeError(`data labels must not end in "${PENDING_SUFFIX}"`);
    const session = this.#openSession();
    const current = this.#find(dataTemplate(application, label));
    const pendingLabel = label + PENDING_SUFFIX;
    const leftovers = this.#find(dataTemplate(application, pendingLabel));
    if (current.length === 0) {
      // Nothing to replace; a leftover pending object is the committed value being overwritten now.
      call("C_CreateObject", () => this.#api.C_CreateObject(session, dataObject(application, label, value)));
      for (const handle of leftovers) this.#destroy(handle);
      return;
    }
    for (const handle of leftovers) this.#destroy(handle);
    const replacement = call("C_CreateObject", () =>
      this.#api.C_CreateObject(session, dataObject(application, pendingLabel, value)),
    );
    for (const handle of current) this.#destroy(handle);
    try {
      this.#api.C_SetAttributeValue(session, replacement, [{ type: CKA_LABEL, value: label }]);
    } catch {
      // A module that will not relabel: store a copy under the final label, then drop the pending one.
      call("C_CreateObject", () => this.#api.C_CreateObject(session, dataObject(application, label, value)));
      this.#destroy(replacement);
    }
  }

  /** Deletes the data object `label` (and any interrupted replacement); false when there was none. */
  deleteData(label: string, application = DATA_APPLICATION): boolean {
    const handles = [
      ...this.#find(dataTemplate(application, label)),
      ...this.#find(dataTemplate(application, label + PENDING_SUFFIX)),
    ];
    for (const handle of handles) this.#destroy(handle);
    return handles.length > 0;
  }

  // ---- lifetime ----------------------------------------------------------------------------------

  /** Logs out, closes the session and releases the module. Safe to call twice. */
  close(): void {
    const session = this.#session;
    if (session === undefined) return;
    this.logout();
    this.#session = undefined;
    try {
      this.#api.C_CloseSession(session);
    } catch {
      // Token removed or session already gone: nothing left to close.
    } finally {
      this.#lease.release();
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ---- internals ---------------------------------------------------------------------------------

  #openSession(): Handle {
    if (this.#session === undefined) throw pkcs11Failure("token", undefined, "the session is closed");
    return this.#session;
  }

  #replaceSession(): void {
    const old = this.#openSession();
    try {
      this.#session = this.#api.C_OpenSession(this.#slot, this.#sessionFlags);
    } catch {
      return; // Keep the old one: the caller's error is the one to report.
    }
    try {
      this.#api.C_CloseSession(old);
    } catch {
      // Already gone.
    }
  }

  #pinError(operation: string, cause: unknown): Error {
    const rv = returnValueOf(cause);
    if (rv === CKR_PIN_INCORRECT || rv === CKR_PIN_INVALID || rv === CKR_PIN_LEN_RANGE) {
      const status = this.pinStatus();
      if (rv !== CKR_PIN_INCORRECT) {
        return new WrongPinError(
          status.triesLeft,
          "the PIN has a length or characters the token does not accept",
        );
      }
      if (status.triesLeft >= 0) return new WrongPinError(status.triesLeft);
      return new WrongPinError(
        -1,
        status.countLow
          ? "wrong PIN; the token reports few tries left but not how many"
          : "wrong PIN; the token does not report how many tries are left",
      );
    }
    return mapError(operation, cause);
  }

  #find(template: Pkcs11Attribute[]): Handle[] {
    const session = this.#openSession();
    call("C_FindObjectsInit", () => this.#api.C_FindObjectsInit(session, template));
    try {
      const handles: Handle[] = [];
      for (;;) {
        const batch = call("C_FindObjects", () => this.#api.C_FindObjects(session, 64));
        if (batch.length === 0) return handles;
        handles.push(...batch);
        if (handles.length > MAX_SEARCH_RESULTS) {
          throw pkcs11Failure("C_FindObjects", undefined, `more than ${MAX_SEARCH_RESULTS} objects`);
        }
      }
    } finally {
      try {
        this.#api.C_FindObjectsFinal(session);
      } catch {
        // Reported by the call that failed, if any.
      }
    }
  }

  #findOne(what: string, template: Pkcs11Attribute[]): Handle | undefined {
    const handles = this.#find(template);
    if (handles.length > 1) {
      const label = template.find((a) => a.type === CKA_LABEL)?.value;
      const id = template.find((a) => a.type === CKA_ID)?.value;
      const named =
        label !== undefined ? `"${String(label)}"` : `id ${Buffer.from(id as Buffer).toString("hex")}`;
      throw pkcs11Failure("find object", undefined, `${handles.length} objects match ${what} ${named}`);
    }
    return handles[0];
  }

  #findData(label: string, application: string, what = "data object"): Handle | undefined {
    return this.#findOne(what, dataTemplate(application, label));
  }

  #attribute(handle: Handle, type: number): Buffer {
    const session = this.#openSession();
    const [result] = call("C_GetAttributeValue", () =>
      this.#api.C_GetAttributeValue(session, handle, [{ type }]),
    );
    const value = result?.value;
    if (!Buffer.isBuffer(value)) {
      throw pkcs11Failure("C_GetAttributeValue", undefined, `attribute 0x${type.toString(16)} has no value`);
    }
    return value;
  }

  #optionalAttribute(handle: Handle, type: number): Buffer | undefined {
    try {
      return this.#attribute(handle, type);
    } catch (error) {
      if (error instanceof Pkcs11Error) return undefined; // CKR_ATTRIBUTE_TYPE_INVALID, _SENSITIVE, …
      throw error;
    }
  }

  #spkiOf(publicKey: Handle, label: string): Uint8Array {
    const curve = curveOfEcParams(this.#attribute(publicKey, CKA_EC_PARAMS));
    if (!curve) throw pkcs11Failure("read public key", undefined, `key "${label}" is not on P-256 or P-384`);
    return spkiFromEcPoint(ecPointFromAttribute(this.#attribute(publicKey, CKA_EC_POINT), curve), curve);
  }

  #destroy(handle: Handle): void {
    const session = this.#openSession();
    call("C_DestroyObject", () => this.#api.C_DestroyObject(session, handle));
  }
}

export type TokenFilter = Pick<
  Pkcs11TokenOptions,
  "tokenLabel" | "tokenSerial" | "tokenManufacturer" | "tokenModel" | "slotId"
>;

/** The slots whose present token matches `filter` (every field given must match). */
export function matchingTokenSlots(
  api: Pkcs11Api,
  filter: TokenFilter,
): { slot: Handle; info: ReturnType<Pkcs11Api["C_GetTokenInfo"]> }[] {
  const matches: { slot: Handle; info: ReturnType<Pkcs11Api["C_GetTokenInfo"]> }[] = [];
  for (const slot of call("C_GetSlotList", () => api.C_GetSlotList(true))) {
    if (filter.slotId !== undefined && slotIdOf(slot) !== filter.slotId) continue;
    let info: ReturnType<Pkcs11Api["C_GetTokenInfo"]>;
    try {
      info = api.C_GetTokenInfo(slot);
    } catch {
      continue; // Token pulled between the two calls.
    }
    if (filter.tokenLabel !== undefined && info.label.trimEnd() !== filter.tokenLabel) continue;
    if (filter.tokenSerial !== undefined && info.serialNumber.trimEnd() !== filter.tokenSerial) continue;
    if (filter.tokenManufacturer !== undefined && info.manufacturerID.trimEnd() !== filter.tokenManufacturer)
      continue;
    if (filter.tokenModel !== undefined && info.model.trimEnd() !== filter.tokenModel) continue;
    matches.push({ slot, info });
  }
  return matches;
}

/** A slot handle's CK_SLOT_ID (the binding passes the CK_ULONG's bytes, host order: little-endian here). */
export function slotIdOf(slot: Handle): bigint {
  return slot.length === 8 ? slot.readBigUInt64LE(0) : BigInt(slot.readUInt32LE(0));
}

/** For messages: `label "X" and serial "Y"`. */
export function describeTokenFilter(filter: TokenFilter): string {
  return [
    filter.tokenLabel !== undefined ? `label "${filter.tokenLabel}"` : "",
    filter.tokenSerial !== undefined ? `serial "${filter.tokenSerial}"` : "",
    filter.tokenManufacturer !== undefined ? `manufacturer "${filter.tokenManufacturer}"` : "",
    filter.tokenModel !== undefined ? `model "${filter.tokenModel}"` : "",
    filter.slotId !== undefined ? `slot id ${filter.slotId}` : "",
  ]
    .filter(Boolean)
    .join(" and ");
}

function findSlot(api: Pkcs11Api, options: Pkcs11TokenOptions) {
  const matches = matchingTokenSlots(api, options);
  const wanted = describeTokenFilter(options);
  const [first, second] = matches;
  if (!first) throw new NoCardError(`no PKCS#11 token with ${wanted} in ${options.modulePath}`);
  if (second) throw pkcs11Failure("find token", undefined, `${matches.length} tokens with ${wanted}`);
  return first;
}

/** Runs one Cryptoki call, turning a failure into this project's typed errors. */
function call<T>(operation: string, fn: () => T): T {
  try {
    return fn();
  } catch (cause) {
    throw mapError(operation, cause);
  }
}

function mapError(operation: string, cause: unknown): Error {
  const rv = returnValueOf(cause);
  switch (rv) {
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SESSION_CLOSED:
    case CKR_SESSION_HANDLE_INVALID:
      return new NoCardError(`the PKCS#11 token went away during ${operation}`, { cause });
    case CKR_DEVICE_MEMORY:
      return new CardFullError(`the PKCS#11 token has no memory left (${operation})`, { cause });
    case CKR_USER_NOT_LOGGED_IN:
      return new PinRequiredError(`${operation} needs the PIN verified first`, { cause });
    case CKR_PIN_LOCKED:
      return new PinBlockedError("the PIN is blocked; the token's security officer must unblock it", {
        cause,
      });
    default:
      return pkcs11Failure(
        operation,
        rv,
        rv === undefined && cause instanceof Error ? cause.message : undefined,
        { cause },
      );
  }
}

function dataTemplate(application: string, label?: string): Pkcs11Attribute[] {
  return [
    { type: CKA_CLASS, value: CKO_DATA },
    { type: CKA_TOKEN, value: true },
    { type: CKA_APPLICATION, value: application },
    ...(label === undefined ? [] : [{ type: CKA_LABEL, value: label }]),
  ];
}

function dataObject(application: string, label: string, value: Uint8Array): Pkcs11Attribute[] {
  return [
    ...dataTemplate(application, label),
    // Public like the PIV vendor objects: readable before the PIN; writes are gated above this layer.
    { type: CKA_PRIVATE, value: false },
    { type: CKA_MODIFIABLE, value: true },
    { type: CKA_VALUE, value: Buffer.from(value) },
  ];
}

/** Search attributes for an object named by label (CKA_LABEL), id (CKA_ID) or both. */
function selectorTemplate(selector: string | ObjectSelector): Pkcs11Attribute[] {
  if (typeof selector === "string") return [{ type: CKA_LABEL, value: selector }];
  if (selector.label === undefined && selector.id === undefined) {
    throw new TypeError("an object selector needs a label or an id");
  }
  return [
    ...(selector.label === undefined ? [] : [{ type: CKA_LABEL, value: selector.label }]),
    ...(selector.id === undefined ? [] : [{ type: CKA_ID, value: Buffer.from(selector.id) }]),
  ];
}

function describeSelector(selector: ObjectSelector): string {
  return selector.label ?? `id ${Buffer.from(selector.id ?? []).toString("hex")}`;
}

function decodeBool(value: Buffer | undefined): boolean | undefined {
  return value === undefined || value.length === 0 ? undefined : value[0] !== 0;
}
