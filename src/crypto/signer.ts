/**
 * What signs a configuration or a receipt: a key with its certificate chain. The private key may
 * live in software (here), on a PIV card (slot 9C) or behind PKCS#11; COSE code only sees this
 * interface, so every backend signs the same bytes the same way.
 */
import { createPrivateKey, createPublicKey, type KeyObject, X509Certificate } from "node:crypto";
import { UsageError } from "../errors.js";
import { type EcdsaAlgorithm, ecdsaAlgorithmForKey, signEcdsaRaw } from "./ecdsa.js";

export interface Signer {
  readonly algorithm: EcdsaAlgorithm;
  /** DER certificates, leaf (the signing key's certificate) first. */
  readonly certificateChain: readonly Uint8Array[];
  /**
   * Signs `toBeSigned` (the whole message: the signer hashes it with the algorithm's hash) and
   * returns the raw r‖s signature. A backend that produces DER converts with `ecdsaDerToRaw`.
   */
  sign(toBeSigned: Uint8Array): Promise<Uint8Array>;
}

export interface SoftwareSignerOptions {
  /** A node KeyObject, a PEM string, or PKCS#8 DER bytes. P-256 or P-384. */
  readonly privateKey: KeyObject | string | Uint8Array;
  /** DER certificates, leaf first; the leaf must hold the private key's public key. */
  readonly certificateChain: readonly Uint8Array[];
}

function toPrivateKey(key: KeyObject | string | Uint8Array): KeyObject {
  if (typeof key === "string") return createPrivateKey(key);
  if (key instanceof Uint8Array)
    return createPrivateKey({ key: Buffer.from(key), format: "der", type: "pkcs8" });
  return key;
}

function spki(key: KeyObject): Buffer {
  return key.export({ format: "der", type: "spki" });
}

/** A Signer over a key held in this process (tests, the demo, a station without a card). */
export function createSoftwareSigner(options: SoftwareSignerOptions): Signer {
  let privateKey: KeyObject;
  try {
    privateKey = toPrivateKey(options.privateKey);
  } catch (e) {
    throw new UsageError("cannot read the signing key", { cause: e });
  }
  const algorithm = privateKey.type === "private" ? ecdsaAlgorithmForKey(privateKey) : undefined;
  if (algorithm === undefined) throw new UsageError("the signing key must be a P-256 or P-384 private key");
  const leaf = options.certificateChain[0];
  if (leaf === undefined) throw new UsageError("the signer needs its certificate chain (leaf first)");
  let leafKey: KeyObject;
  try {
    leafKey = new X509Certificate(leaf).publicKey;
  } catch (e) {
    throw new UsageError("cannot read the signer's leaf certificate", { cause: e });
  }
  // A key paired with the wrong certificate would produce signatures no verifier accepts.
  if (!spki(leafKey).equals(spki(createPublicKey(privateKey)))) {
    throw new UsageError("the leaf certificate does not hold the signing key's public key");
  }
  const certificateChain = options.certificateChain.map((c) => new Uint8Array(c));
  return {
    algorithm,
    certificateChain,
    async sign(toBeSigned: Uint8Array): Promise<Uint8Array> {
      return signEcdsaRaw(privateKey, algorithm, toBeSigned);
    },
  };
}
