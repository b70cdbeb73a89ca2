import { webcrypto } from "node:crypto";
import { readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ApduMeter, YUBIKEY5_LATENCY } from "../../src/card-emulator/latency-profile.js";
import { MeteredTransport } from "../../src/card-emulator/metered-card.js";
import { CertificateValidationError, MalformedError } from "../../src/errors.js";
import { clearValidationCaches, validationCacheSizes } from "../../src/pki/fast-x509.js";
import { generateEcKeyPair } from "../../src/pki/keys.js";
import { VALIDATION_REQUIREMENTS } from "../../src/pki/profiles.js";
import {
  KEY_USAGE,
  type PathValidationOptions,
  primeTrustAnchor,
  validateChain,
  validateChainView,
  warmUpValidation,
} from "../../src/pki/validate-chain.js";
import { WARM_UP_CHAIN } from "../../src/pki/warm-up-chain.js";
import { PivElement } from "../../src/secure-element/piv-element.js";
import {
  encodeCertificateList,
  newChallenge,
  verifyChallengeProof,
} from "../../src/secure-element/secure-element.js";
import { InProcessTransport } from "../../src/transport/in-process.js";
import { PIN, personalizeCard } from "../agent/fixtures.js";
import { cardName, forge, freshCrl, makeTestPki, NOW, OFFICER, OWNER, type TestPki } from "./fixtures.js";

/**
 * The agent's verification path: validateChainView (no X.509 library loaded), the caches and the
 * remembered signatures that make the second chain of an onboarding cheap, and the card read once.
 */

let pki: TestPki;
beforeAll(async () => {
  pki = await makeTestPki();
});
beforeEach(() => clearValidationCaches());

const der = (c: { rawData: ArrayBuffer }) => new Uint8Array(c.rawData).slice();

/** The agent's two chains, as src/agent/onboarding.ts asks for them (DER from the card). */
function agentOptions(leaf: Uint8Array, slot: "9E" | "9C"): PathValidationOptions {
  return {
    leaf,
    intermediates: [der(pki.tokenCa.certificate)],
    trustAnchor: der(pki.root.certificate),
    crls: [der(pki.crl)],
    now: NOW,
    crlNumberFloor: 1n,
    ...(slot === "9E" ? VALIDATION_REQUIREMENTS.cardAuthentication : VALIDATION_REQUIREMENTS.configSigning),
  };
}

describe("validateChainView", () => {
  it("establishes what validateChain establishes, as read-only views", async () => {
    for (const [leaf, slot] of [
      [pki.card9e, "9E"],
      [pki.card9c, "9C"],
    ] as const) {
      const view = await validateChainView(agentOptions(der(leaf), slot));
      const full = await validateChain(agentOptions(der(leaf), slot));
      expect({ ...view, path: undefined, leaf: undefined }).toEqual({
        ...full,
        path: undefined,
        leaf: undefined,
      });
      expect(view).toMatchObject({ owner: OWNER, officer: OFFICER, crlNumber: 1n });
      expect(view.path.map((c) => c.subject)).toEqual(full.path.map((c) => c.subject));
      expect(view.path.map((c) => c.serialNumber)).toEqual(full.path.map((c) => c.serialNumber));
      expect(view.leaf.equal(leaf)).toBe(true);
      expect(full.leaf.equal(leaf)).toBe(true);
      expect(new Uint8Array(view.path[1]!.rawData)).toEqual(der(pki.tokenCa.certificate));
      expect(view.path[2]!.notAfter.getTime()).toBe(pki.root.certificate.notAfter.getTime());
    }
  });

  it("fails with the same typed errors", async () => {
    const reasons = async (options: PathValidationOptions) => {
      const a = await validateChainView(options).catch((e: unknown) => e);
      const b = await validateChain(options).catch((e: unknown) => e);
      expect(a).toBeInstanceOf(CertificateValidationError);
      expect((a as Error).message).toBe((b as Error).message);
      return (a as CertificateValidationError).reason;
    };
    expect(await reasons({ ...agentOptions(der(pki.card9c), "9E") })).toBe("eku");
    expect(await reasons({ ...agentOptions(der(pki.card9e), "9E"), crls: [] })).toBe("crl-missing");
    expect(await reasons({ ...agentOptions(der(pki.card9e), "9E"), now: new Date(0) })).toBe("not-yet-valid");
  });

  it("returns @peculiar/x509 objects from validateChain only when they are read, and the caller's own", async () => {
    const result = await validateChain({ ...agentOptions(der(pki.card9e), "9E"), leaf: pki.card9e });
    expect(result.leaf).toBe(pki.card9e);
    expect(result.path[1]!.equal(pki.tokenCa.certificate)).toBe(true);
    expect(result.path).toBe(result.path);
  });

  it("accepts KEY_USAGE flags", async () => {
    const options = { ...agentOptions(der(pki.card9e), "9E"), requiredKeyUsage: KEY_USAGE.digitalSignature };
    await expect(validateChainView(options)).resolves.toMatchObject({ owner: OWNER });
    const error = await validateChainView({
      ...options,
      requiredKeyUsage: KEY_USAGE.keyAgreement,
    }).catch((e: unknown) => e);
    expect((error as CertificateValidationError).reason).toBe("key-usage");
  });
});

describe("caches: the second chain of an onboarding verifies only its leaf", () => {
  it("remembers each verified signature once: root, token CA, 9E, CRL, then 9C", async () => {
    await validateChainView(agentOptions(der(pki.card9e), "9E"));
    expect(validationCacheSizes()).toEqual({ certificates: 3, crls: 1, signatures: 4 });
    await validateChainView(agentOptions(der(pki.card9c), "9C"));
    expect(validationCacheSizes()).toEqual({ certificates: 4, crls: 1, signatures: 5 });
    await validateChainView(agentOptions(der(pki.card9e), "9E"));
    expect(validationCacheSizes()).toEqual({ certificates: 4, crls: 1, signatures: 5 });
  });

  it("primes the trust anchor: parsed, its own signature remembered", () => {
    primeTrustAnchor(der(pki.root.certificate));
    expect(validationCacheSizes()).toEqual({ certificates: 1, crls: 0, signatures: 1 });
    expect(() => primeTrustAnchor(new Uint8Array([0x30, 0]))).toThrow(MalformedError);
  });

  it("warms up on a built-in chain (CRL included) and primes the installed anchor", async () => {
    await warmUpValidation(der(pki.root.certificate));
    const sizes = validationCacheSizes();
    expect(sizes).toEqual({ certificates: 4, crls: 1, signatures: 5 });
    // The built-in chain is a complete one, valid for decades, and trusted for nothing else.
    const b64 = (text: string) => new Uint8Array(Buffer.from(text, "base64"));
    const result = await validateChainView({
      leaf: b64(WARM_UP_CHAIN.leaf),
      intermediates: [b64(WARM_UP_CHAIN.tokenCa)],
      trustAnchor: b64(WARM_UP_CHAIN.root),
      crls: [b64(WARM_UP_CHAIN.crl)],
      now: new Date("2099-01-01T00:00:00Z"),
      ...VALIDATION_REQUIREMENTS.cardAuthentication,
    });
    expect(result).toMatchObject({ owner: "hsm-onboard warm-up", crlNumber: 1n });
    const error = await validateChainView({
      ...agentOptions(der(pki.card9e), "9E"),
      trustAnchor: b64(WARM_UP_CHAIN.root),
    }).catch((e: unknown) => e);
    expect((error as CertificateValidationError).reason).toBe("issuer-name");
    await expect(warmUpValidation(new Uint8Array([0x30, 0]))).rejects.toThrow(MalformedError);
  });

  it("is keyed by the bytes: a changed signature after a success fails, even in the same array", async () => {
    const leaf = der(pki.card9e);
    await validateChainView(agentOptions(leaf, "9E"));
    leaf[leaf.length - 1] = leaf[leaf.length - 1]! ^ 0x01; // the last octet of s in the ECDSA signature
    const error = await validateChainView(agentOptions(leaf, "9E")).catch((e: unknown) => e);
    expect((error as CertificateValidationError).reason).toBe("signature");
    // A changed CRL (here: its signature) is not the remembered one either.
    const crl = der(pki.crl);
    crl[crl.length - 1] = crl[crl.length - 1]! ^ 0x01;
    const crlError = await validateChainView({ ...agentOptions(der(pki.card9e), "9E"), crls: [crl] }).catch(
      (e: unknown) => e,
    );
    expect((crlError as CertificateValidationError).reason).toBe("crl-signature");
  });

  it("is bounded", async () => {
    const keys = await generateEcKeyPair("P-256");
    for (let i = 0; i < 70; i++) {
      const leaf = await forge({
        subject: cardName(OWNER, `Leaf ${i}`),
        issuer: pki.tokenCa,
        publicKey: keys.publicKey,
      });
      await validateChainView({ ...agentOptions(der(leaf), "9E"), crls: [], requireCrl: false });
    }
    const sizes = validationCacheSizes();
    expect(sizes.certificates).toBeLessThanOrEqual(64);
    expect(sizes.signatures).toBeLessThanOrEqual(256);
  });
});

describe("another crypto provider (a card, a token) verifies every signature itself", () => {
  function counting() {
    let calls = 0;
    const subtle = webcrypto.subtle;
    const provider = {
      getRandomValues: webcrypto.getRandomValues.bind(webcrypto),
      randomUUID: webcrypto.randomUUID.bind(webcrypto),
      subtle: new Proxy(subtle, {
        get(target, prop) {
          const value = Reflect.get(target, prop) as unknown;
          if (prop === "verify") {
            return (...args: Parameters<typeof subtle.verify>) => {
              calls++;
              return subtle.verify(...args);
            };
          }
          return typeof value === "function" ? value.bind(target) : value;
        },
      }),
    } as unknown as typeof webcrypto;
    return { provider, calls: () => calls };
  }

  it("is asked for the anchor, the token CA, the leaf and the CRL, on every validation", async () => {
    const { provider, calls } = counting();
    const options = { ...agentOptions(der(pki.card9e), "9E"), crypto: provider };
    await expect(validateChainView(options)).resolves.toMatchObject({ owner: OWNER });
    expect(calls()).toBe(4);
    await validateChainView(options);
    expect(calls()).toBe(8);
  });

  it("and its answers count: a bad leaf or CRL signature fails", async () => {
    const { provider } = counting();
    const intruder = await generateEcKeyPair("P-384");
    const leaf = await forge({
      subject: cardName(),
      issuer: pki.tokenCa,
      signingKey: intruder.privateKey,
      publicKey: pki.cardKeys.publicKey,
    });
    const error = await validateChainView({ ...agentOptions(der(leaf), "9E"), crypto: provider }).catch(
      (e: unknown) => e,
    );
    expect((error as CertificateValidationError).reason).toBe("signature");
    const crl = await freshCrl({ certificate: pki.tokenCa.certificate, privateKey: intruder.privateKey }, 2n);
    const crlError = await validateChainView({
      ...agentOptions(der(pki.card9e), "9E"),
      crls: [der(crl)],
      crypto: provider,
    }).catch((e: unknown) => e);
    expect((crlError as CertificateValidationError).reason).toBe("crl-signature");
  });
});

describe("the agent's path loads no X.509 object library", () => {
  const srcPki = resolve(dirname(fileURLToPath(import.meta.url)), "../../src/pki");

  /** Static imports (not `import type`, not `await import(…)`) of a module and what it imports. */
  async function staticImports(file: string, seen = new Set<string>()): Promise<Set<string>> {
    if (seen.has(file)) return seen;
    seen.add(file);
    const text = await readFile(file, "utf8");
    for (const match of text.matchAll(/^(?:import|export)\s+(?!type\b)[^;]*?from\s+"([^"]+)";/gms)) {
      const spec = match[1]!;
      if (spec.startsWith(".")) {
        await staticImports(join(dirname(file), spec.replace(/\.js$/, ".ts")), seen);
      } else {
        seen.add(spec);
      }
    }
    for (const match of text.matchAll(/^import\s+"([^"]+)";/gm)) seen.add(match[1]!);
    return seen;
  }

  // The whole agent's graph, dynamic imports included: test/repo/agent-imports.test.ts.
  it("path-validation.ts, fast-x509.ts and ca-facts.ts import node:crypto and project modules only", async () => {
    for (const entry of ["path-validation.ts", "fast-x509.ts", "ca-facts.ts", "der.ts"]) {
      const imports = [...(await staticImports(join(srcPki, entry)))];
      const packages = imports.filter((i) => !i.startsWith("/"));
      expect(packages.sort()).toEqual(["node:crypto"].filter(() => entry !== "der.ts"));
    }
  });
});

describe("PivElement reads the 9E certificate once per session", () => {
  it("identity() then proveChallenge(): one GET DATA of 9E; copies handed out", async () => {
    const { card } = await personalizeCard(pki.tokenCa);
    const meter = new ApduMeter(YUBIKEY5_LATENCY);
    const element = await PivElement.open(new MeteredTransport(new InProcessTransport(card), meter));
    try {
      const identity = await element.identity();
      const challenge = newChallenge();
      verifyChallengeProof(identity.cardAuthentication, challenge, await element.proveChallenge(challenge));
      expect(meter.objects().get(0x5fc101)?.reads).toBe(1); // 9E certificate
      identity.cardAuthentication.fill(0);
      identity.intermediates[0]!.fill(0);
      const again = await element.identity();
      expect(again.cardAuthentication).not.toEqual(identity.cardAuthentication);
      expect(again.intermediates[0]).toEqual(der(pki.tokenCa.certificate));
      expect(meter.objects().get(0x5fc101)?.reads).toBe(1);
      expect(meter.objects().get(0x5fc10a)?.reads).toBe(1); // 9C certificate
      // Writing the certificates item makes the next identity() read the card again.
      await element.verifyPin(PIN);
      await element.writeItem("certificates", encodeCertificateList([der(pki.deviceCa.certificate)]));
      expect((await element.identity()).intermediates[0]).toEqual(der(pki.deviceCa.certificate));
      expect(meter.objects().get(0x5fc101)?.reads).toBe(2);
    } finally {
      await element.close();
    }
  });
});
