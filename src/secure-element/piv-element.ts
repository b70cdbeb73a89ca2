/**
 * The secure element over a PIV card (SP 800-73-4; YubiKey 5 compatible): a YubiKey through PC/SC, or
 * the project's virtual card in-process or through vpcd. Built on PivSession (src/piv/piv-session.ts).
 *
 * - Identity: certificates of slot 9E (card authentication, PIN policy never) and 9C (digital
 *   signature, PIN policy always); the intermediates in the `certificates` item.
 * - Items live in the vendor objects of the card layout (card-layout.ts, the one table:
 *   manifest 5FFF10, certificates 5FFF11, crl 5FFF12, shards 5FFF20–7F, receipts 5FFF80–FF).
 *   An object holds the item's bytes as they are (inside the `53` wrapper); an empty object is an
 *   absent item (`53 00` deletes, as yubico-piv-tool does). One PUT DATA writes a whole item, so the
 *   card replaces it atomically.
 * - Writes use the management key the YubiKey convention keeps PIN-protected (PRINTED 5FC109, ykman
 *   `--protect`): once the PIN is verified the element reads it and authenticates, so the agent can
 *   write its receipt with nothing but the PIN.
 * - The verified PIN stays in memory (a private field) for the rest of the session: slot 9C asks for
 *   it again before every signature (PIN policy always). close() forgets it.
 * - Capacity is the card's own accounting (YubiKey 5: 50,225 bytes of object contents, 3,063 per
 *   object), read by scanning the objects once per session (about 290 GET DATA; ~0.4 s on a real
 *   YubiKey, so only station-side commands ask for it). Writes do not need it: the card answers a
 *   write that does not fit with 6A84, which is CardFullError, and stores nothing.
 */
import { createHash, X509Certificate } from "node:crypto";
import type { Scp11HostOptions } from "../apdu/scp11/host.js";
import { NotFoundError, SecurityStatusError } from "../apdu/status-words.js";
import { ECDSA_PROFILES, type EcdsaAlgorithm, ecdsaAlgorithmForKey } from "../crypto/ecdsa.js";
import type { Signer } from "../crypto/signer.js";
import {
  CardNotTrustedError,
  IntegrityError,
  MalformedError,
  PinRequiredError,
  ScpAbsentError,
  ScpUnavailableError,
} from "../errors.js";
import {
  type EcCurve,
  PIN_PROTECTED_OBJECTS,
  PIV_OBJECT_MAX,
  PIV_OBJECT_MIN,
  VENDOR_OBJECT_MAX,
  VENDOR_OBJECT_MIN,
} from "../piv/objects.js";
import { PivSession, type PivSessionOptions } from "../piv/piv-session.js";
import type { CardTransport } from "../transport/card-transport.js";
import { allItems, itemObjectId } from "./card-layout.js";
import {
  assertChallengeLength,
  assertItemFits,
  type ChallengeProof,
  capacityOf,
  compareItemNames,
  decodeCertificateList,
  encodeCertificateList,
  formatItemName,
  type ItemInfo,
  requireItemName,
  type SecureChannelInfo,
  type SecureElement,
  type SecureElementCapacity,
  type SecureElementIdentity,
  type SecureElementInfo,
  YUBIKEY_STORAGE,
} from "./secure-element.js";

/**
 * The channel policy of station and agent (SPEC §4): SCP11 with these options, required unless
 * `allowPlaintext` (then a card that does not offer the channel is used in clear, and says so).
 */
export interface SecureChannelPolicy {
  /** SCP11 parameters (trust anchors, variant); undefined when no SCP trust anchor is configured. */
  readonly scp?: Scp11HostOptions;
  /** Explicit operator choice for older cards (`--allow-plaintext`). */
  readonly allowPlaintext: boolean;
}

export interface PivElementOptions extends PivSessionOptions {
  /** Open SCP11 first, per this policy (station and agent always pass one). */
  readonly channel?: SecureChannelPolicy;
  /** Close the transport in close() (default true). Otherwise close() only logs the PIN out. */
  readonly ownsTransport?: boolean;
  /** The card's storage (default YUBIKEY_STORAGE: the YubiKey 5 limits the virtual card also has). */
  readonly storage?: { readonly totalBytes: number; readonly maxItemBytes: number };
}

export class PivElement implements SecureElement {
  readonly info: SecureElementInfo;
  /** The PIV session, for personalisation and diagnostics. */
  readonly session: PivSession;
  readonly #transport: CardTransport;
  readonly #ownsTransport: boolean;
  readonly #storage: { readonly totalBytes: number; readonly maxItemBytes: number };
  /** See the file comment; never logged, never in an error. */
  #pin: string | undefined;
  #managementAuthenticated = false;
  #closed = false;
  /** Sizes of the stored objects, by id, once scanned; kept up to date by this element's writes. */
  #objectSizes: Map<number, number> | undefined;
  /** PIN-protected objects the scan could not read (no PIN yet). */
  #unreadObjects = new Set<number>();
  #cardAuthenticationCurve: EcCurve | undefined;
  /**
   * The identity certificates as first read in this session: the agent needs the 9E certificate
   * twice (identity, then the challenge's curve), and reading it again costs an APDU and 0.5 KB.
   * Forgotten when this element writes the `certificates` item, and on close(); certificates put
   * through `session` directly (personalisation) are seen by the next session.
   */
  #identity: SecureElementIdentity | undefined;

  private constructor(
    session: PivSession,
    transport: CardTransport,
    info: SecureElementInfo,
    options: PivElementOptions,
  ) {
    this.session = session;
    this.#transport = transport;
    this.info = info;
    this.#ownsTransport = options.ownsTransport ?? true;
    this.#storage = options.storage ?? YUBIKEY_STORAGE;
  }

  /** Selects PIV on a connected card and reads its serial (when it has one). */
  static async open(transport: CardTransport, options: PivElementOptions = {}): Promise<PivElement> {
    const session = await openSession(transport, options);
    let serial: string | undefined;
    try {
      serial = String(await session.getSerial());
    } catch (error) {
      // A broken secure channel is never shrugged off.
      if (error instanceof IntegrityError) throw error;
      // Not a YubiKey: no serial command. The certificates still identify the card.
    }
    const channel: SecureChannelInfo = session.secureChannel
      ? { kind: "scp11", protocol: session.secureChannel.protocol, chain: session.secureChannel.chain }
      : { kind: "plaintext" };
    const info: SecureElementInfo = {
      backend: "piv",
      channel,
      name: transport.readerName,
      ...(serial === undefined ? {} : { serial }),
      contactless: transport.contactless,
    };
    return new PivElement(session, transport, info, options);
  }

  async identity(): Promise<SecureElementIdentity> {
    this.#checkOpen();
    if (!this.#identity) {
      const cardAuthentication = await this.session.getCertificate("9E");
      const signing = await this.session.getCertificate("9C");
      if (!cardAuthentication || !signing) {
        throw new CardNotTrustedError(
          `the card in ${this.info.name} is not personalised: no ${cardAuthentication ? "9C" : "9E"} certificate`,
        );
      }
      const list = await this.#readObject(itemObjectId({ kind: "certificates" }));
      this.#identity = {
        cardAuthentication,
        signing,
        intermediates: list ? decodeCertificateList(list) : [],
      };
    }
    // Copies: what a caller does with them must not change what this session remembers.
    const { cardAuthentication, signing, intermediates } = this.#identity;
    return {
      cardAuthentication: cardAuthentication.slice(),
      signing: signing.slice(),
      intermediates: intermediates.map((c) => c.slice()),
    };
  }

  async proveChallenge(challenge: Uint8Array): Promise<ChallengeProof> {
    this.#checkOpen();
    assertChallengeLength(challenge);
    if (!this.#cardAuthenticationCurve) {
      // The 9E certificate identity() read (and the caller validated), else read now.
      const certificate = this.#identity?.cardAuthentication ?? (await this.session.getCertificate("9E"));
      if (!certificate) throw new CardNotTrustedError(`the card in ${this.info.name} has no 9E certificate`);
      this.#cardAuthenticationCurve = curveOfCertificate(certificate);
    }
    const curve = this.#cardAuthenticationCurve;
    const algorithm = algorithmOf(curve);
    const digest = createHash(ECDSA_PROFILES[algorithm].hash).update(challenge).digest();
    return { algorithm, signature: await this.session.signDigestRaw("9E", curve, digest) };
  }

  async pinTriesLeft(): Promise<number> {
    this.#checkOpen();
    return (await this.session.pinTriesLeft()) ?? -1;
  }

  async verifyPin(pin: string): Promise<void> {
    this.#checkOpen();
    this.#pin = undefined;
    this.#managementAuthenticated = false;
    await this.session.verifyPin(pin);
    this.#pin = pin;
  }

  async signer(): Promise<Signer> {
    const { signing, intermediates } = await this.identity();
    const curve = curveOfCertificate(signing);
    const algorithm = algorithmOf(curve);
    return {
      algorithm,
      certificateChain: [signing, ...intermediates],
      sign: async (toBeSigned: Uint8Array): Promise<Uint8Array> => {
        this.#checkOpen();
        const pin = this.#pin;
        if (pin === undefined) throw new PinRequiredError("signing needs the PIN verified first");
        const digest = createHash(ECDSA_PROFILES[algorithm].hash).update(toBeSigned).digest();
        // 9C has PIN policy "always": the card wants a VERIFY right before each signature.
        await this.session.verifyPin(pin);
        return this.session.signDigestRaw("9C", curve, digest);
      },
    };
  }

  async readItem(name: string): Promise<Uint8Array | undefined> {
    this.#checkOpen();
    return this.#readObject(itemObjectId(requireItemName(name)));
  }

  async writeItem(name: string, bytes: Uint8Array): Promise<void> {
    this.#checkOpen();
    const id = itemObjectId(requireItemName(name));
    if (this.#pin === undefined) throw new PinRequiredError("writing an item needs the PIN verified first");
    const previous = this.#objectSizes?.get(id) ?? 0;
    // Without a scan the free space is the card's to judge (6A84 → CardFullError).
    let capacity = capacityOf(Number.POSITIVE_INFINITY, 0, this.#storage.maxItemBytes);
    if (this.#objectSizes) {
      await this.#scan(); // only re-reads PIN-protected objects missed before the PIN
      capacity = this.#capacityFromScan();
    }
    assertItemFits(capacity, name, bytes.length, previous);
    await this.#authenticateForWrite("writing an item");
    if (id === itemObjectId({ kind: "certificates" })) this.#identity = undefined;
    await this.session.putData(id, bytes);
    this.#objectSizes?.set(id, bytes.length);
  }

  async deleteItem(name: string): Promise<boolean> {
    this.#checkOpen();
    const id = itemObjectId(requireItemName(name));
    if (this.#pin === undefined) throw new PinRequiredError("deleting an item needs the PIN verified first");
    const present = (await this.#readObject(id)) !== undefined;
    if (!present) return false;
    await this.#authenticateForWrite("deleting an item");
    if (id === itemObjectId({ kind: "certificates" })) this.#identity = undefined;
    await this.session.deleteData(id);
    this.#objectSizes?.delete(id);
    return true;
  }

  async listItems(): Promise<ItemInfo[]> {
    this.#checkOpen();
    const sizes = await this.#scan();
    return allItems()
      .map((item) => ({ name: formatItemName(item), size: sizes.get(itemObjectId(item)) ?? 0 }))
      .filter((item) => item.size > 0)
      .sort((a, b) => compareItemNames(a.name, b.name));
  }

  async capacity(): Promise<SecureElementCapacity> {
    this.#checkOpen();
    await this.#scan();
    return this.#capacityFromScan();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#pin = undefined;
    this.#identity = undefined;
    this.#managementAuthenticated = false;
    if (this.#ownsTransport) {
      // Powering the card off drops its security state.
      await this.#transport.close();
    } else {
      try {
        await this.session.logout();
      } catch {
        // Card gone: its state went with it.
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- internals ---------------------------------------------------------------------------------

  #checkOpen(): void {
    if (this.#closed) throw new CardNotTrustedError(`the session with ${this.info.name} is closed`);
  }

  async #readObject(id: number): Promise<Uint8Array | undefined> {
    const content = await this.session.readObject(id);
    if (content && content.length > this.#storage.maxItemBytes) {
      // A genuine card never stores more; a hostile one is not believed.
      throw new MalformedError(
        `object ${id.toString(16).toUpperCase()} holds ${content.length} bytes, more than an item can`,
      );
    }
    return content;
  }

  async #authenticateForWrite(what: string): Promise<void> {
    if (this.#pin === undefined) throw new PinRequiredError(`${what} needs the PIN verified first`);
    if (this.#managementAuthenticated) return;
    try {
      await this.session.authenticateWithPinProtectedManagementKey();
    } catch (error) {
      // The PIN state was lost (another application, a reset): say so, not "security status".
      if (error instanceof SecurityStatusError) {
        throw new PinRequiredError(`${what} needs the PIN verified again`, { cause: error });
      }
      throw error;
    }
    this.#managementAuthenticated = true;
  }

  /**
   * Sizes of every stored object the card counts against its total (PIV 5FC101–5FC123, vendor
   * 5FFF00–5FFFFF): all of them the first time, then only the PIN-protected ones that could not be
   * read before the PIN.
   */
  async #scan(): Promise<Map<number, number>> {
    let ids: number[];
    if (this.#objectSizes === undefined) {
      ids = [];
      for (let id = PIV_OBJECT_MIN; id <= PIV_OBJECT_MAX; id++) ids.push(id);
      for (let id = VENDOR_OBJECT_MIN; id <= VENDOR_OBJECT_MAX; id++) ids.push(id);
    } else {
      ids = this.#pin === undefined ? [] : [...this.#unreadObjects];
    }
    const sizes = this.#objectSizes ?? new Map<number, number>();
    for (const id of ids) {
      // A PIN-protected object is not asked for before the PIN: the card would answer 6982, which
      // inside SCP11 costs a probe to tell from a failed C-MAC (ScpProcessor, docs/SECURITY.md §9.1).
      if (this.#pin === undefined && PIN_PROTECTED_OBJECTS.has(id)) {
        this.#unreadObjects.add(id);
        continue;
      }
      try {
        const content = await this.session.getData(id);
        if (content.length > 0) sizes.set(id, content.length);
        else sizes.delete(id);
        this.#unreadObjects.delete(id);
      } catch (error) {
        if (error instanceof NotFoundError) {
          sizes.delete(id);
          this.#unreadObjects.delete(id);
        } else if (error instanceof SecurityStatusError && PIN_PROTECTED_OBJECTS.has(id)) {
          this.#unreadObjects.add(id);
        } else {
          throw error;
        }
      }
    }
    this.#objectSizes = sizes;
    return sizes;
  }

  #capacityFromScan(): SecureElementCapacity {
    let used = 0;
    for (const size of this.#objectSizes?.values() ?? []) used += size;
    return capacityOf(this.#storage.totalBytes, used, this.#storage.maxItemBytes);
  }
}

function curveOfCertificate(der: Uint8Array): EcCurve {
  let algorithm: EcdsaAlgorithm | undefined;
  try {
    algorithm = ecdsaAlgorithmForKey(new X509Certificate(der).publicKey);
  } catch (cause) {
    throw new CardNotTrustedError("a certificate on the card cannot be read", { cause });
  }
  if (!algorithm)
    throw new CardNotTrustedError("a certificate on the card does not hold a P-256 or P-384 key");
  return ECDSA_PROFILES[algorithm].curve;
}

function algorithmOf(curve: EcCurve): EcdsaAlgorithm {
  return curve === "P-256" ? "ES256" : "ES384";
}

// ---- personalisation ----------------------------------------------------------------------------

/**
 * Generates the identity keys on the card (management key authenticated by the caller): 9E with PIN
 * policy never (card authentication), 9C with PIN policy always (signing). Returns their SPKI DER.
 */
export async function generatePivIdentityKeys(
  session: PivSession,
  options: { cardAuthenticationCurve?: EcCurve; signingCurve?: EcCurve } = {},
): Promise<{ cardAuthentication: Uint8Array; signing: Uint8Array }> {
  const cardAuthentication = await session.generateKey(
    "9E",
    options.cardAuthenticationCurve ?? "P-256",
    "never",
  );
  const signing = await session.generateKey("9C", options.signingCurve ?? "P-256", "always");
  return { cardAuthentication, signing };
}

/** Stores the identity certificates (management key authenticated by the caller). */
export async function installPivIdentityCertificates(
  session: PivSession,
  certificates: SecureElementIdentity,
): Promise<void> {
  await session.putCertificate("9E", certificates.cardAuthentication);
  await session.putCertificate("9C", certificates.signing);
  const id = itemObjectId({ kind: "certificates" });
  if (certificates.intermediates.length > 0) {
    await session.putData(id, encodeCertificateList(certificates.intermediates));
  } else {
    await session.deleteData(id);
  }
}

/**
 * Opens the PIV session under the channel policy: SCP11 when configured; a card that shows it has
 * no SCP at all (ScpAbsentError: SELECT ISD 6A82, or GET DATA BF21 6A88/6A82, see host.ts) is used
 * in clear only when plaintext is allowed. Any other failure of the handshake (an odd status word,
 * a refusal after the card's SCP certificate store was read, a bad receipt, an untrusted SCP
 * certificate) never falls back to plaintext: it propagates, and nothing more is sent.
 */
async function openSession(transport: CardTransport, options: PivElementOptions): Promise<PivSession> {
  const { channel, ...rest } = options;
  if (!channel) return PivSession.open(transport, rest);
  if (!channel.scp) {
    if (channel.allowPlaintext) return PivSession.open(transport, rest);
    throw new ScpUnavailableError(
      "the SCP11 secure channel is required and no SCP trust anchor is installed (station init / agent factory-init --scp-trust FILE): card refused; --allow-plaintext would use it in clear (recorded)",
    );
  }
  try {
    return await PivSession.open(transport, { ...rest, scp: channel.scp });
  } catch (error) {
    if (!(error instanceof ScpAbsentError)) throw error;
    if (!channel.allowPlaintext) {
      throw new ScpUnavailableError(
        `${error.message}; the card cannot open a secure channel (older card?): refused; --allow-plaintext would accept it`,
        { cause: error },
      );
    }
    return PivSession.open(transport, rest);
  }
}
