/**
 * The secure element over a PKCS#11 token (SoftHSM2 in tests; any vendor module). The PIV roles map
 * onto labelled objects, with OpenSC's PIV key ids so other PKCS#11 tools line them up:
 *
 * | PIV | role                 | CKA_LABEL                          | CKA_ID | private key                          |
 * |-----|----------------------|------------------------------------|--------|--------------------------------------|
 * | 9E  | card authentication  | `hsm-onboard card authentication`  | 04     | CKA_PRIVATE false: usable with no PIN |
 * | 9C  | digital signature    | `hsm-onboard digital signature`    | 02     | CKA_PRIVATE, CKA_ALWAYS_AUTHENTICATE |
 *
 * Keys and their certificates share label and id. Items (manifest, shards, crl, receipts, and the
 * intermediate CA `certificates`) are CKO_DATA objects of application `hsm-onboard`, one label per
 * item (SPEC.md §5), public like PIV vendor objects.
 *
 * Differences from a PIV card, on purpose or forced by PKCS#11:
 * - Storage: PKCS#11 has no portable free-space figure, so the element keeps to a budget, by default
 *   the YubiKey's (YUBIKEY_STORAGE), counting items and the two leaf certificates.
 * - Writes need the PIN here too, for the same behaviour as a PIV card whose management key is
 *   PIN-protected. For public objects that is this layer's rule, not the token's: another PKCS#11
 *   application can write them without the PIN.
 * - PIN tries: only the token's flags (see PinStatus), so often -1 (unknown). SoftHSM2 never locks.
 */
import { X509Certificate } from "node:crypto";
import { ecdsaAlgorithmForKey } from "../crypto/ecdsa.js";
import type { Signer } from "../crypto/signer.js";
import { CardNotTrustedError, MalformedError, PinRequiredError } from "../errors.js";
import { CURVES } from "../pkcs11/ec.js";
import {
  DATA_APPLICATION,
  type EcCurve,
  type EcPrivateKey,
  Pkcs11Token,
  type Pkcs11TokenOptions,
} from "../pkcs11/pkcs11-token.js";
import {
  assertChallengeLength,
  assertItemFits,
  type ChallengeProof,
  capacityOf,
  compareItemNames,
  decodeCertificateList,
  encodeCertificateList,
  type ItemInfo,
  parseItemName,
  requireItemName,
  type SecureElement,
  type SecureElementCapacity,
  type SecureElementIdentity,
  type SecureElementInfo,
  YUBIKEY_STORAGE,
} from "./secure-element.js";

export interface Pkcs11Role {
  readonly label: string;
  readonly id: Uint8Array;
}

export interface Pkcs11Roles {
  readonly cardAuthentication: Pkcs11Role;
  readonly signing: Pkcs11Role;
}

export const DEFAULT_PKCS11_ROLES: Pkcs11Roles = {
  cardAuthentication: { label: "hsm-onboard card authentication", id: Uint8Array.of(0x04) },
  signing: { label: "hsm-onboard digital signature", id: Uint8Array.of(0x02) },
};

export interface Pkcs11ElementOptions extends Pkcs11TokenOptions {
  /** Labels and ids of the two keys and certificates (default {@link DEFAULT_PKCS11_ROLES}). */
  readonly roles?: Pkcs11Roles;
  /** Storage budget (default {@link YUBIKEY_STORAGE}). */
  readonly storage?: { readonly totalBytes: number; readonly maxItemBytes: number };
}

const CERTIFICATES_ITEM = "certificates";

export class Pkcs11Element implements SecureElement {
  readonly info: SecureElementInfo;
  /** The underlying token, for personalisation ({@link generateIdentityKeys}) and diagnostics. */
  readonly token: Pkcs11Token;
  readonly #roles: Pkcs11Roles;
  readonly #storage: { readonly totalBytes: number; readonly maxItemBytes: number };

  private constructor(token: Pkcs11Token, options: Omit<Pkcs11ElementOptions, keyof Pkcs11TokenOptions>) {
    this.token = token;
    this.#roles = options.roles ?? DEFAULT_PKCS11_ROLES;
    this.#storage = options.storage ?? YUBIKEY_STORAGE;
    this.info = {
      backend: "pkcs11",
      // The library-to-token channel is the token's business, not ours (SPEC §4).
      channel: { kind: "token" },
      name: token.description.label,
      serial: token.description.serialNumber,
      contactless: false,
    };
  }

  static async open(options: Pkcs11ElementOptions): Promise<Pkcs11Element> {
    return new Pkcs11Element(await Pkcs11Token.open(options), options);
  }

  /** Wraps a token opened by the caller; the element closes it. */
  static fromToken(
    token: Pkcs11Token,
    options: Omit<Pkcs11ElementOptions, keyof Pkcs11TokenOptions> = {},
  ): Pkcs11Element {
    return new Pkcs11Element(token, options);
  }

  async identity(): Promise<SecureElementIdentity> {
    const cardAuthentication = this.token.findCertificate(this.#roles.cardAuthentication.label);
    const signing = this.token.findCertificate(this.#roles.signing.label);
    if (!cardAuthentication || !signing) {
      throw new CardNotTrustedError(
        `token "${this.info.name}" is not personalised: no ${cardAuthentication ? "signing" : "card-authentication"} certificate`,
      );
    }
    const list = this.token.readData(CERTIFICATES_ITEM);
    return { cardAuthentication, signing, intermediates: list ? decodeCertificateList(list) : [] };
  }

  async proveChallenge(challenge: Uint8Array): Promise<ChallengeProof> {
    assertChallengeLength(challenge);
    const key = this.token.findPrivateKey(this.#roles.cardAuthentication.label);
    if (!key) {
      throw new CardNotTrustedError(`token "${this.info.name}" has no PIN-free card-authentication key`);
    }
    return { algorithm: CURVES[key.curve].algorithm, signature: this.token.sign(key, challenge) };
  }

  async pinTriesLeft(): Promise<number> {
    return this.token.pinStatus().triesLeft;
  }

  async verifyPin(pin: string): Promise<void> {
    this.token.login(pin);
  }

  async signer(): Promise<Signer> {
    const { signing, intermediates } = await this.identity();
    const algorithm = ecdsaAlgorithmForKey(new X509Certificate(signing).publicKey);
    if (!algorithm)
      throw new CardNotTrustedError("the signing certificate does not hold a P-256 or P-384 key");
    const label = this.#roles.signing.label;
    const token = this.token;
    let key: EcPrivateKey | undefined;
    return {
      algorithm,
      certificateChain: [signing, ...intermediates],
      async sign(toBeSigned: Uint8Array): Promise<Uint8Array> {
        if (!token.loggedIn) throw new PinRequiredError("signing needs the PIN verified first");
        key ??= token.findPrivateKey(label);
        if (!key) throw new CardNotTrustedError(`token "${token.description.label}" has no signing key`);
        if (CURVES[key.curve].algorithm !== algorithm) {
          throw new CardNotTrustedError(`the signing key is ${key.curve}, its certificate says ${algorithm}`);
        }
        return token.sign(key, toBeSigned);
      },
    };
  }

  async readItem(name: string): Promise<Uint8Array | undefined> {
    requireItemName(name);
    const value = this.token.readData(name);
    if (value && value.length > this.#storage.maxItemBytes) {
      throw new MalformedError(`item ${name} is ${value.length} bytes, more than an item can be`);
    }
    return value;
  }

  async writeItem(name: string, bytes: Uint8Array): Promise<void> {
    requireItemName(name);
    this.#requirePin("writing an item");
    const previous = this.token.listData().find((item) => item.label === name)?.size ?? 0;
    assertItemFits(await this.capacity(), name, bytes.length, previous);
    this.token.writeData(name, bytes);
  }

  async deleteItem(name: string): Promise<boolean> {
    requireItemName(name);
    this.#requirePin("deleting an item");
    return this.token.deleteData(name);
  }

  async listItems(): Promise<ItemInfo[]> {
    return this.token
      .listData()
      .filter((item) => parseItemName(item.label) !== undefined)
      .map((item) => ({ name: item.label, size: item.size }))
      .sort((a, b) => compareItemNames(a.name, b.name));
  }

  async capacity(): Promise<SecureElementCapacity> {
    // Every data object of the application counts, named or not: it takes the same room.
    let used = this.token.listData(DATA_APPLICATION).reduce((sum, item) => sum + item.size, 0);
    for (const role of [this.#roles.cardAuthentication, this.#roles.signing]) {
      used += this.token.findCertificate(role.label)?.length ?? 0;
    }
    return capacityOf(this.#storage.totalBytes, used, this.#storage.maxItemBytes);
  }

  async close(): Promise<void> {
    this.token.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #requirePin(what: string): void {
    if (!this.token.loggedIn) throw new PinRequiredError(`${what} needs the PIN verified first`);
  }
}

// ---- personalisation ----------------------------------------------------------------------------

export interface GenerateIdentityKeysOptions {
  /** Curve of the card-authentication key (default P-256). */
  readonly cardAuthenticationCurve?: EcCurve;
  /** Curve of the signing key (default P-256; P-384 gives ES384 signatures). */
  readonly signingCurve?: EcCurve;
  readonly roles?: Pkcs11Roles;
  /** Replace keys already on the token (default false: a second key with the same label is an error later). */
  readonly replace?: boolean;
}

/**
 * Generates the two identity keys on a token the user is logged in to (the signing key is private),
 * as `card personalize` does on a PIV card. Returns their SubjectPublicKeyInfo DER, to be certified.
 */
export function generateIdentityKeys(
  token: Pkcs11Token,
  options: GenerateIdentityKeysOptions = {},
): { cardAuthentication: Uint8Array; signing: Uint8Array } {
  const roles = options.roles ?? DEFAULT_PKCS11_ROLES;
  if (!token.loggedIn) throw new PinRequiredError("generating keys needs the PIN verified first");
  const cardAuthentication = token.generateEcKeyPair({
    ...roles.cardAuthentication,
    curve: options.cardAuthenticationCurve ?? "P-256",
    requireLogin: false,
    replace: options.replace ?? false,
  });
  const signing = token.generateEcKeyPair({
    ...roles.signing,
    curve: options.signingCurve ?? "P-256",
    requireLogin: true,
    alwaysAuthenticate: true,
    replace: options.replace ?? false,
  });
  return { cardAuthentication: cardAuthentication.spki, signing: signing.spki };
}

/**
 * Stores the identity certificates: the two leaves as certificate objects next to their keys, the
 * intermediates as the `certificates` item. Replaces what was there.
 */
export function installIdentityCertificates(
  token: Pkcs11Token,
  certificates: SecureElementIdentity,
  roles: Pkcs11Roles = DEFAULT_PKCS11_ROLES,
): void {
  if (!token.loggedIn) throw new PinRequiredError("storing certificates needs the PIN verified first");
  token.importCertificate({
    ...roles.cardAuthentication,
    der: certificates.cardAuthentication,
    replace: true,
  });
  token.importCertificate({ ...roles.signing, der: certificates.signing, replace: true });
  if (certificates.intermediates.length > 0) {
    token.writeData(CERTIFICATES_ITEM, encodeCertificateList(certificates.intermediates));
  } else {
    token.deleteData(CERTIFICATES_ITEM);
  }
}
