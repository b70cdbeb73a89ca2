// cose-wg/Examples (see the README beside the vectors): every pass case verifies, every fail case
// is refused with a typed error, and the ToBeSigned bytes we rebuild from each message are the
// ones the examples list. The profile is ES256/ES384; the ES512 examples are out of it: our
// verifier must refuse them as unsupported, and their signatures are checked with node:crypto over
// the ToBeSigned bytes we rebuilt, so the pass cases are still shown to be right.
import { createPublicKey, type JsonWebKey, verify } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { decodeCborStrict } from "../../src/config/cbor.js";
import {
  coseSign1ToBeSigned,
  coseSignToBeSigned,
  verifyCoseSign,
  verifyCoseSign1,
} from "../../src/config/cose.js";
import { IntegrityError } from "../../src/errors.js";
import { requireVectorsDir } from "./vectors-dir.js";

interface SignerInput {
  key: JsonWebKey;
  protected?: { alg?: string };
  unprotected?: { alg?: string };
  alg?: string;
  external?: string;
}

interface Example {
  title: string;
  fail?: boolean;
  input: { plaintext: string; sign?: { signers: SignerInput[] }; sign0?: SignerInput };
  intermediates: { ToBeSign_hex?: string; signers?: { ToBeSign_hex: string }[] };
  output: { cbor: string };
}

const hex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));
const IN_PROFILE = new Set(["ES256", "ES384"]);
const HASH: Record<string, string> = { ES256: "sha256", ES384: "sha384", ES512: "sha512" };

function algOf(signer: SignerInput): string {
  return signer.protected?.alg ?? signer.unprotected?.alg ?? signer.alg ?? "?";
}

/** Why each kind of cose-wg fail case must be refused. */
function expectedReason(title: string): RegExp {
  if (/Wrong CBOR Tag/i.test(title)) return /wrong CBOR tag/;
  if (/Change Sign Algorithm/i.test(title)) return /unsupported algorithm/;
  if (/Change signature|protected attribute/i.test(title)) return /does not verify/;
  throw new Error(`no expected reason for fail case "${title}"`);
}

const cases = ["sign-tests", "sign1-tests", "ecdsa-examples"].flatMap((dir) => {
  const path = requireVectorsDir(`cose-wg/${dir}`);
  return readdirSync(path)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((file) => ({
      name: `${dir}/${file}`,
      example: JSON.parse(readFileSync(`${path}/${file}`, "utf8")) as Example,
    }));
});

describe("cose-wg examples", () => {
  it("are all there", () => {
    expect(cases.length).toBe(27);
  });

  for (const { name, example } of cases) {
    const isSign1 = example.input.sign0 !== undefined;
    const signers = isSign1 ? [example.input.sign0!] : example.input.sign!.signers;
    const algs = signers.map(algOf);
    const inProfile = algs.every((a) => IN_PROFILE.has(a));
    const label = example.fail
      ? "fail case: refused with a typed error"
      : inProfile
        ? `pass case (${algs.join(", ")}): verifies, ToBeSigned reproduced`
        : `pass case (${algs.join(", ")}, out of profile): refused as unsupported; ToBeSigned reproduced and its signature checked with node:crypto`;

    it(`${name} — ${example.title} — ${label}`, async () => {
      const bytes = hex(example.output.cbor);
      const keys = signers.map((s) => createPublicKey({ key: s.key, format: "jwk" }));
      const externalAad = signers[0]!.external ? hex(signers[0]!.external) : undefined;
      const options = { externalAad, allowUntagged: true };
      const keyFor = ({ index }: { index: number }) => keys[index]!;
      const verifyIt = () =>
        isSign1
          ? verifyCoseSign1(bytes, { ...options, keyFor })
          : verifyCoseSign(bytes, { ...options, keyFor });

      if (example.fail) {
        await expect(verifyIt()).rejects.toBeInstanceOf(IntegrityError);
        await expect(verifyIt()).rejects.toThrow(expectedReason(example.title));
        return;
      }

      const expectedTbs = isSign1
        ? [example.intermediates.ToBeSign_hex!]
        : example.intermediates.signers!.map((s) => s.ToBeSign_hex);
      const tbs = isSign1 ? [coseSign1ToBeSigned(bytes, options)] : coseSignToBeSigned(bytes, options);
      expect(tbs.map((b) => Buffer.from(b).toString("hex").toUpperCase())).toEqual(expectedTbs);

      if (inProfile) {
        const result = await verifyIt();
        expect(Buffer.from(result.payload).toString("utf8")).toBe(example.input.plaintext);
      } else {
        await expect(verifyIt()).rejects.toThrow(/unsupported algorithm/);
        for (const [i, signer] of signers.entries()) {
          const message = decodeCborStrict(bytes, {
            what: name,
            maxBytes: bytes.length,
            allowTopLevelTag: true,
          }).value as unknown[];
          const signature = (isSign1 ? message[3] : (message[3] as unknown[][])[i]![2]) as Uint8Array;
          const ok = verify(
            HASH[algOf(signer)]!,
            tbs[i]!,
            { key: keys[i]!, dsaEncoding: "ieee-p1363" },
            signature,
          );
          expect(ok, `signature ${i} over the rebuilt ToBeSigned`).toBe(true);
        }
      }
    });
  }
});
