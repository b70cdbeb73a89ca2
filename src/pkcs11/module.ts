import { realpathSync } from "node:fs";
import { CKR_CRYPTOKI_ALREADY_INITIALIZED, CKR_CRYPTOKI_NOT_INITIALIZED } from "./constants.js";
import { Pkcs11UnavailableError, pkcs11Failure, returnValueOf } from "./errors.js";

/** A Cryptoki handle (slot, session or object) as the binding passes it: the CK_ULONG's bytes. */
export type Handle = Buffer;

export interface Pkcs11Attribute {
  type: number;
  value?: number | boolean | string | Buffer;
}

export interface Pkcs11TokenInfo {
  label: string;
  manufacturerID: string;
  model: string;
  serialNumber: string;
  flags: number;
}

/**
 * The part of the `pkcs11js` PKCS11 class this layer calls (synchronous forms). Declared here so the
 * layer type-checks without the optional binding, and so tests can drive it with a fake module.
 */
export interface Pkcs11Api {
  load(path: string): void;
  C_Initialize(): void;
  C_Finalize(): void;
  C_GetSlotList(tokenPresent?: boolean): Handle[];
  /**
   * With CKF_DONT_BLOCK: the slot of a pending event, or null (CKR_NO_EVENT). Modules without slot
   * events throw CKR_FUNCTION_NOT_SUPPORTED (SoftHSM2); the blocking form is never used (it would
   * block the event loop).
   */
  C_WaitForSlotEvent?(flags: number): Handle | null;
  C_GetTokenInfo(slot: Handle): Pkcs11TokenInfo;
  C_OpenSession(slot: Handle, flags: number): Handle;
  C_CloseSession(session: Handle): void;
  C_GetSessionInfo(session: Handle): { state: number; flags: number };
  C_Login(session: Handle, userType: number, pin?: string): void;
  C_Logout(session: Handle): void;
  C_CreateObject(session: Handle, template: Pkcs11Attribute[]): Handle;
  C_DestroyObject(session: Handle, object: Handle): void;
  C_FindObjectsInit(session: Handle, template: Pkcs11Attribute[]): void;
  C_FindObjects(session: Handle, maxObjectCount: number): Handle[];
  C_FindObjectsFinal(session: Handle): void;
  C_GetAttributeValue(
    session: Handle,
    object: Handle,
    template: Pkcs11Attribute[],
  ): { type: number; value?: unknown }[];
  C_SetAttributeValue(session: Handle, object: Handle, template: Pkcs11Attribute[]): void;
  C_SignInit(session: Handle, mechanism: { mechanism: number }, key: Handle): void;
  C_Sign(session: Handle, inData: Buffer, outData: Buffer): Buffer;
  C_GenerateKeyPair(
    session: Handle,
    mechanism: { mechanism: number },
    publicKeyTemplate: Pkcs11Attribute[],
    privateKeyTemplate: Pkcs11Attribute[],
  ): { publicKey: Handle; privateKey: Handle };
}

/** Makes an unloaded API object; `load(path)` is called on it next. */
export type Pkcs11ApiFactory = () => Pkcs11Api | Promise<Pkcs11Api>;

let bindingPromise: Promise<new () => Pkcs11Api> | undefined;

/**
 * Imports the optional native binding on first use, so everything else in the project runs (and the
 * PIV backend works) on a machine where it is not installed.
 */
async function pkcs11jsConstructor(): Promise<new () => Pkcs11Api> {
  bindingPromise ??= (async () => {
    const specifier = "pkcs11js";
    let imported: unknown;
    try {
      imported = await import(specifier);
    } catch (cause) {
      throw new Pkcs11UnavailableError(
        "PKCS#11 support needs the optional native package pkcs11js (npm install pkcs11js)",
        { cause },
      );
    }
    // A CommonJS module: its exports object arrives as the default export.
    const exports = ((imported as { default?: unknown }).default ?? imported) as { PKCS11?: unknown };
    if (typeof exports.PKCS11 !== "function") {
      throw new Pkcs11UnavailableError("the installed pkcs11js package has no PKCS11 class");
    }
    return exports.PKCS11 as new () => Pkcs11Api;
  })();
  try {
    return await bindingPromise;
  } catch (error) {
    bindingPromise = undefined;
    throw error;
  }
}

export const pkcs11jsFactory: Pkcs11ApiFactory = async () => new (await pkcs11jsConstructor())();

/** A counted use of an initialised module; release it exactly once. */
export interface Pkcs11ModuleLease {
  readonly api: Pkcs11Api;
  readonly modulePath: string;
  release(): void;
}

interface LoadedModule {
  api: Pkcs11Api;
  refs: number;
  /** False when someone else in this process had already initialised the library: never finalise it. */
  finalizeOnLastRelease: boolean;
  initialized: boolean;
}

/**
 * One loaded PKCS#11 library per real path, initialised once and finalised when its last user
 * releases it. Needed because the dynamic loader hands every `load()` of the same file the same
 * library state: a second C_Initialize fails with CKR_CRYPTOKI_ALREADY_INITIALIZED, and one user's
 * C_Finalize would pull the sessions from under another. The library stays loaded after C_Finalize
 * (unloading SoftHSM and OpenSSL mid-process is not safe); the next lease initialises it again, which
 * also makes SoftHSM2 read SOFTHSM2_CONF afresh.
 */
export class Pkcs11ModuleRegistry {
  readonly #modules = new Map<string, LoadedModule>();
  readonly #factory: Pkcs11ApiFactory;

  constructor(factory: Pkcs11ApiFactory = pkcs11jsFactory) {
    this.#factory = factory;
  }

  async acquire(modulePath: string): Promise<Pkcs11ModuleLease> {
    const key = canonicalModulePath(modulePath);
    let entry = this.#modules.get(key);
    if (!entry) {
      const api = await this.#factory();
      // Another acquire may have raced us through the await.
      entry = this.#modules.get(key);
      if (!entry) {
        try {
          api.load(key);
        } catch (cause) {
          throw new Pkcs11UnavailableError(`cannot load the PKCS#11 module ${modulePath}`, { cause });
        }
        entry = { api, refs: 0, finalizeOnLastRelease: true, initialized: false };
        this.#modules.set(key, entry);
      }
    }
    if (!entry.initialized) {
      try {
        entry.api.C_Initialize();
        entry.finalizeOnLastRelease = true;
      } catch (cause) {
        if (returnValueOf(cause) !== CKR_CRYPTOKI_ALREADY_INITIALIZED) {
          throw pkcs11Failure("C_Initialize", returnValueOf(cause), modulePath, { cause });
        }
        entry.finalizeOnLastRelease = false;
      }
      entry.initialized = true;
    }
    entry.refs += 1;
    const held = entry;
    let released = false;
    return {
      api: held.api,
      modulePath: key,
      release: () => {
        if (released) return;
        released = true;
        held.refs -= 1;
        if (held.refs === 0 && held.initialized) {
          held.initialized = false;
          if (held.finalizeOnLastRelease) {
            try {
              held.api.C_Finalize();
            } catch (cause) {
              if (returnValueOf(cause) !== CKR_CRYPTOKI_NOT_INITIALIZED) throw cause;
            }
          }
        }
      },
    };
  }

  /** Number of leases currently held on a module (for tests: proves nothing leaked). */
  activeLeases(modulePath: string): number {
    return this.#modules.get(canonicalModulePath(modulePath))?.refs ?? 0;
  }
}

export const defaultModuleRegistry = new Pkcs11ModuleRegistry();

function canonicalModulePath(modulePath: string): string {
  try {
    return realpathSync(modulePath);
  } catch {
    // Not a file path we can resolve (a bare library name for the loader, or a fake in tests).
    return modulePath;
  }
}
