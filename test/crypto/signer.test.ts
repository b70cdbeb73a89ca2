import { createPublicKey, generateKeyPairSync } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { verifyEcdsaRaw } from "../../src/crypto/ecdsa.js";
import { createSoftwareSigner } from "../../src/crypto/signer.js";
import { UsageError } from "../../src/errors.js";
import { createTestIdentity, type TestIdentity } from "../config/signing-fixtures.js";

describe("createSoftwareSigner", () => {
  let p256: TestIdentity;
  let p384: TestIdentity;
  beforeAll(async () => {
    p256 = await createTestIdentity({ curve: "P-256" });
    p384 = await createTestIdentity({ curve: "P-384" });
  });

  it("takes the algorithm from the key and signs raw r‖s its certificate verifies", async () => {
    for (const [identity, algorithm] of [
      [p256, "ES256"],
      [p384, "ES384"],
    ] as const) {
      const data = new TextEncoder().encode("to be signed");
      expect(identity.signer.algorithm).toBe(algorithm);
      const signature = await identity.signer.sign(data);
      verifyEcdsaRaw(createPublicKey(identity.privateKey), algorithm, data, signature);
    }
  });

  it("reads the key as KeyObject, PEM or PKCS#8 DER", async () => {
    const pem = p256.privateKey.export({ format: "pem", type: "pkcs8" }) as string;
    const der = new Uint8Array(p256.privateKey.export({ format: "der", type: "pkcs8" }));
    for (const privateKey of [p256.privateKey, pem, der]) {
      const signer = createSoftwareSigner({ privateKey, certificateChain: p256.chain });
      expect(signer.certificateChain).toEqual(p256.chain);
      expect((await signer.sign(new Uint8Array(1))).length).toBe(64);
    }
  });

  it("refuses a key that is not its leaf certificate's, a missing chain, other key types", () => {
    expect(() => createSoftwareSigner({ privateKey: p256.privateKey, certificateChain: p384.chain })).toThrow(
      UsageError,
    );
    expect(() => createSoftwareSigner({ privateKey: p256.privateKey, certificateChain: [] })).toThrow(
      UsageError,
    );
    const ed = generateKeyPairSync("ed25519").privateKey;
    expect(() => createSoftwareSigner({ privateKey: ed, certificateChain: p256.chain })).toThrow(
      /P-256 or P-384/,
    );
    const p521 = generateKeyPairSync("ec", { namedCurve: "P-521" }).privateKey;
    expect(() => createSoftwareSigner({ privateKey: p521, certificateChain: p256.chain })).toThrow(
      UsageError,
    );
    expect(() => createSoftwareSigner({ privateKey: "not a key", certificateChain: p256.chain })).toThrow(
      UsageError,
    );
    expect(() =>
      createSoftwareSigner({ privateKey: p256.privateKey, certificateChain: [new Uint8Array([0x30, 0])] }),
    ).toThrow(UsageError);
  });
});
