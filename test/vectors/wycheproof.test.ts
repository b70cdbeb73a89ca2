// Wycheproof ECDSA vectors (see the README beside them), P-256/SHA-256 and P-384/SHA-384, raw
// (P1363, as COSE carries signatures) and DER (as PIV cards return them). One test per file loops
// over every vector and lists failures by tcId. Every `valid` vector must verify, through both
// encodings (raw → DER and DER → raw conversions must round-trip exactly); every `invalid` one must
// be refused with a typed error, by conversion or by verification.
// `acceptable` vectors: our policy is strict — we accept exactly what verifyEcdsaRaw/verifyEcdsaDer
// accept (minimal DER, r and s in [1, n-1], exact raw length). These files have no acceptable
// vectors; the test asserts that, so a new file with some makes us decide deliberately.
import { createPublicKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  type EcdsaAlgorithm,
  ecdsaDerToRaw,
  ecdsaRawToDer,
  verifyEcdsaDer,
  verifyEcdsaRaw,
} from "../../src/crypto/ecdsa.js";
import { isOnboardError } from "../../src/errors.js";
import { requireVectorsDir } from "./vectors-dir.js";

interface Vector {
  tcId: number;
  comment: string;
  msg: string;
  sig: string;
  result: "valid" | "invalid" | "acceptable";
}
interface VectorFile {
  numberOfTests: number;
  testGroups: { publicKeyDer: string; sha: string; tests: Vector[] }[];
}

const FILES: { file: string; algorithm: EcdsaAlgorithm; sha: string; encoding: "raw" | "der" }[] = [
  { file: "ecdsa_secp256r1_sha256_p1363_test.json", algorithm: "ES256", sha: "SHA-256", encoding: "raw" },
  { file: "ecdsa_secp256r1_sha256_test.json", algorithm: "ES256", sha: "SHA-256", encoding: "der" },
  { file: "ecdsa_secp384r1_sha384_p1363_test.json", algorithm: "ES384", sha: "SHA-384", encoding: "raw" },
  { file: "ecdsa_secp384r1_sha384_test.json", algorithm: "ES384", sha: "SHA-384", encoding: "der" },
];

const bytes = (hex: string) => new Uint8Array(Buffer.from(hex, "hex"));
const equal = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(b);

/** undefined when `run` returns, else why it refused (typed errors only; anything else is reported). */
function refusal(run: () => unknown): string | undefined {
  try {
    run();
    return undefined;
  } catch (e) {
    return isOnboardError(e) ? `${e.name}: ${e.message}` : `untyped error: ${String(e)}`;
  }
}

/**
 * Checks one vector; returns the problems found. The verifier for the file's encoding decides on its
 * own (so a lax parser cannot hide behind a later check); the other encoding, reached by
 * conversion, must decide the same; a valid signature must survive the round trip unchanged.
 */
function check(key: KeyObject, algorithm: EcdsaAlgorithm, encoding: "raw" | "der", t: Vector): string[] {
  const msg = bytes(t.msg);
  const sig = bytes(t.sig);
  const direct =
    encoding === "raw"
      ? refusal(() => verifyEcdsaRaw(key, algorithm, msg, sig))
      : refusal(() => verifyEcdsaDer(key, algorithm, msg, sig));
  const converted =
    encoding === "raw"
      ? refusal(() => verifyEcdsaDer(key, algorithm, msg, ecdsaRawToDer(sig, algorithm)))
      : refusal(() => verifyEcdsaRaw(key, algorithm, msg, ecdsaDerToRaw(sig, algorithm)));
  const problems: string[] = [];
  for (const r of [direct, converted]) if (r?.startsWith("untyped")) problems.push(`tcId ${t.tcId}: ${r}`);
  if (t.result === "valid" && direct !== undefined)
    problems.push(`tcId ${t.tcId} valid but refused: ${direct}`);
  if (t.result === "invalid" && direct === undefined)
    problems.push(`tcId ${t.tcId} invalid but accepted (${t.comment})`);
  if ((direct === undefined) !== (converted === undefined)) {
    problems.push(
      `tcId ${t.tcId}: raw and DER disagree (direct: ${direct ?? "ok"}, converted: ${converted ?? "ok"})`,
    );
  }
  if (t.result === "valid" && direct === undefined) {
    const back =
      encoding === "raw"
        ? ecdsaDerToRaw(ecdsaRawToDer(sig, algorithm), algorithm)
        : ecdsaRawToDer(ecdsaDerToRaw(sig, algorithm), algorithm);
    if (!equal(back, sig)) problems.push(`tcId ${t.tcId}: the round trip changed the signature`);
  }
  return problems;
}

describe("Wycheproof ECDSA", () => {
  for (const { file, algorithm, sha, encoding } of FILES) {
    it(`${file}: valid vectors verify (raw and DER), invalid ones are refused`, () => {
      const data = JSON.parse(
        readFileSync(`${requireVectorsDir("wycheproof")}/${file}`, "utf8"),
      ) as VectorFile;
      const failures: string[] = [];
      const counts = { valid: 0, invalid: 0, acceptable: 0 };
      for (const group of data.testGroups) {
        expect(group.sha).toBe(sha);
        const key = createPublicKey({
          key: Buffer.from(group.publicKeyDer, "hex"),
          format: "der",
          type: "spki",
        });
        for (const t of group.tests) {
          counts[t.result]++;
          failures.push(...check(key, algorithm, encoding, t));
        }
      }
      expect(failures).toEqual([]);
      expect(counts.valid + counts.invalid + counts.acceptable).toBe(data.numberOfTests);
      expect(counts.acceptable).toBe(0);
    });
  }
});
