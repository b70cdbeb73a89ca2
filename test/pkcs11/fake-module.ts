/**
 * An in-memory stand-in for the pkcs11js binding, for the error paths SoftHSM2 cannot produce (a
 * locked PIN, a full or removed token) and for the module registry's bookkeeping. Only the calls
 * the tests reach are modelled; objects are not.
 */
import type { Handle, Pkcs11Api, Pkcs11Attribute, Pkcs11TokenInfo } from "../../src/pkcs11/module.js";

/** Thrown like pkcs11js's Pkcs11Error: message `CKR_…`, numeric `code`. */
export class FakeCkError extends Error {
  constructor(
    name: string,
    readonly code: number,
  ) {
    super(name);
  }
}

export interface FakeToken {
  label: string;
  serialNumber: string;
  flags: number;
  /** What C_Login does with a PIN: nothing (success) or throw. */
  onLogin: (pin: string | undefined, userType: number) => void;
  /** Thrown by C_CreateObject when set. */
  createError?: FakeCkError;
}

export class FakePkcs11 implements Pkcs11Api {
  loadedPath: string | undefined;
  initializeCalls = 0;
  finalizeCalls = 0;
  /** Make C_Initialize answer CKR_CRYPTOKI_ALREADY_INITIALIZED (someone else in the process did it). */
  alreadyInitialized = false;
  openSessions = new Set<string>();
  loggedIn = false;
  failOpenSession?: FakeCkError;
  #nextSession = 1;

  constructor(readonly tokens: FakeToken[]) {}

  load(path: string): void {
    if (path.includes("missing")) throw new Error(`dlopen ${path}: cannot open shared object file`);
    this.loadedPath = path;
  }
  C_Initialize(): void {
    if (this.alreadyInitialized) throw new FakeCkError("CKR_CRYPTOKI_ALREADY_INITIALIZED", 0x191);
    this.initializeCalls++;
  }
  C_Finalize(): void {
    this.finalizeCalls++;
  }
  C_GetSlotList(): Handle[] {
    return this.tokens.map((_, i) => Buffer.of(i, 0, 0, 0, 0, 0, 0, 0));
  }
  C_GetTokenInfo(slot: Handle): Pkcs11TokenInfo {
    const token = this.#token(slot);
    return {
      label: token.label.padEnd(32, " "),
      serialNumber: token.serialNumber.padEnd(16, " "),
      manufacturerID: "Fake".padEnd(32, " "),
      model: "Fake".padEnd(16, " "),
      flags: token.flags,
    };
  }
  C_OpenSession(slot: Handle): Handle {
    this.#token(slot);
    if (this.failOpenSession) throw this.failOpenSession;
    const id = this.#nextSession++;
    const handle = Buffer.of(id, slot[0] ?? 0, 0, 0, 0, 0, 0, 0);
    this.openSessions.add(handle.toString("hex"));
    return handle;
  }
  C_CloseSession(session: Handle): void {
    this.openSessions.delete(session.toString("hex"));
    if (this.openSessions.size === 0) this.loggedIn = false;
  }
  C_GetSessionInfo(): { state: number; flags: number } {
    return { state: this.loggedIn ? 3 : 2, flags: 6 };
  }
  C_Login(session: Handle, userType: number, pin?: string): void {
    this.#sessionToken(session).onLogin(pin, userType);
    this.loggedIn = true;
  }
  C_Logout(): void {
    if (!this.loggedIn) throw new FakeCkError("CKR_USER_NOT_LOGGED_IN", 0x101);
    this.loggedIn = false;
  }
  C_CreateObject(session: Handle, _template: Pkcs11Attribute[]): Handle {
    const token = this.#sessionToken(session);
    if (token.createError) throw token.createError;
    return Buffer.alloc(8, 1);
  }
  C_DestroyObject(): void {}
  C_FindObjectsInit(): void {}
  C_FindObjects(): Handle[] {
    return [];
  }
  C_FindObjectsFinal(): void {}
  C_GetAttributeValue(): { type: number; value?: unknown }[] {
    throw new FakeCkError("CKR_OBJECT_HANDLE_INVALID", 0x82);
  }
  C_SetAttributeValue(): void {}
  C_SignInit(): void {}
  C_Sign(): Buffer {
    throw new FakeCkError("CKR_DEVICE_REMOVED", 0x32);
  }
  C_GenerateKeyPair(): { publicKey: Handle; privateKey: Handle } {
    throw new FakeCkError("CKR_USER_NOT_LOGGED_IN", 0x101);
  }

  #token(slot: Handle): FakeToken {
    const token = this.tokens[slot[0] ?? -1];
    if (!token) throw new FakeCkError("CKR_SLOT_ID_INVALID", 0x3);
    return token;
  }
  #sessionToken(session: Handle): FakeToken {
    if (!this.openSessions.has(session.toString("hex"))) {
      throw new FakeCkError("CKR_SESSION_HANDLE_INVALID", 0xb3);
    }
    return this.#token(session.subarray(1));
  }
}
