import { createHash, verify as nodeVerify, X509Certificate } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { createPki, type OnboardingPki } from "../../src/pki/issue.js";
import {
  DEFAULT_PKCS11_ROLES,
  generateIdentityKeys,
  installIdentityCertificates,
  Pkcs11Element,
} from "../../src/secure-element/pkcs11-element.js";
import {
  newChallenge,
  type SecureElementIdentity,
  verifyChallengeProof,
} from "../../src/secure-element/secure-element.js";
import { requireOrSkipReason } from "../helpers/pcsc-env.js";
import {
  createSoftHsmToken,
  pkcs11ToolUnavailableReason,
  type SoftHsmToken,
  softHsmUnavailableReason,
} from "../helpers/softhsm.js";
import { issueIdentityCertificates } from "./identity.js";
import { describeSecureElementSuite, type SecureElementFixture } from "./suite.js";

const skip = requireOrSkipReason(softHsmUnavailableReason());
const noTool = requireOrSkipReason(pkcs11ToolUnavailableReason());

let pki: OnboardingPki;
beforeAll(async () => {
  if (!skip) pki = await createPki({ owner: "ACME Bank" });
});

/** A SoftHSM2 token personalised as `card personalize` would: keys made on it, certificates from the token CA. */
async function personalisedToken(signingCurve: "P-256" | "P-384"): Promise<{
  hsm: SoftHsmToken;
  expected: SecureElementIdentity;
  open: () => Promise<Pkcs11Element>;
}> {
  const hsm = await createSoftHsmToken();
  const open = () => Pkcs11Element.open({ modulePath: hsm.modulePath, tokenLabel: hsm.label });
  let element: Pkcs11Element | undefined;
  try {
    element = await open();
    await element.verifyPin(hsm.userPin);
    const keys = generateIdentityKeys(element.token, { signingCurve });
    const expected = await issueIdentityCertificates(pki, keys);
    installIdentityCertificates(element.token, expected);
    return { hsm, expected, open };
  } catch (error) {
    await hsm.dispose();
    throw error;
  } finally {
    await element?.close();
  }
}

describeSecureElementSuite(
  "PKCS#11 (SoftHSM2)",
  async ({ signingCurve }) => {
    const { hsm, expected, open } = await personalisedToken(signingCurve);
    const fixture: SecureElementFixture = {
      // Each test starts from a fresh session: no PIN verified.
      element: await open(),
      pin: hsm.userPin,
      wrongPin: "000000",
      expected,
      capabilities: { pinLock: false, pinRetries: -1 },
      async reopen() {
        await fixture.element.close();
        fixture.element = await open();
      },
      async dispose() {
        await fixture.element.close();
        await hsm.dispose();
      },
    };
    return fixture;
  },
  skip === undefined ? {} : { skip },
);

describe.skipIf(skip !== undefined || noTool !== undefined)(
  "PKCS#11 element seen from OpenSC pkcs11-tool",
  () => {
    let hsm: SoftHsmToken | undefined;
    let element: Pkcs11Element | undefined;
    afterEach(async () => {
      await element?.close();
      await hsm?.dispose();
    });

    it("lists the keys, certificates and items the element wrote, with their labels", async () => {
      const made = await personalisedToken("P-256");
      hsm = made.hsm;
      element = await made.open();
      await element.verifyPin(hsm.userPin);
      await element.writeItem("manifest", new Uint8Array(200).fill(1));
      await element.writeItem("shard-0", new Uint8Array(3063).fill(2));
      await element.writeItem("receipt-3", new Uint8Array(90).fill(3));
      await element.close();

      const { stdout } = await hsm.pkcs11Tool(["-O", "--login", "--pin", hsm.userPin]);
      const labelled = (kind: string, label: string) =>
        stdout.split(/\n(?=\S)/).find((b) => b.startsWith(kind) && b.includes(label));
      for (const role of [DEFAULT_PKCS11_ROLES.cardAuthentication, DEFAULT_PKCS11_ROLES.signing]) {
        const id = Buffer.from(role.id).toString("hex");
        for (const kind of [
          "Private Key Object; EC",
          "Public Key Object; EC",
          "Certificate Object; type = X.509",
        ]) {
          const block = labelled(kind, `label:      ${role.label}\n`);
          expect(block, `${kind} ${role.label}`).toBeDefined();
          expect(block).toContain(`ID:         ${id}`);
        }
      }
      expect(labelled("Private Key Object", DEFAULT_PKCS11_ROLES.signing.label)).toContain(
        "always authenticate",
      );
      for (const item of ["manifest", "shard-0", "receipt-3", "certificates"]) {
        const block = labelled("Data object", `label:          '${item}'`);
        expect(block, item).toContain("application:    'hsm-onboard'");
      }
      // Read one back through OpenSC.
      const out = join(hsm.dir, "shard-0.bin");
      await hsm.pkcs11Tool([
        "--read-object",
        "--type",
        "data",
        "--label",
        "shard-0",
        "--application-label",
        "hsm-onboard",
        "-o",
        out,
      ]);
      expect(new Uint8Array(await readFile(out))).toEqual(new Uint8Array(3063).fill(2));
    });

    it("pkcs11-tool signs with the element's keys; node verifies against the element's certificates", async () => {
      const made = await personalisedToken("P-384");
      hsm = made.hsm;
      const data = Buffer.from("a manifest digest signed through OpenSC");
      for (const [role, hash, certificate] of [
        [DEFAULT_PKCS11_ROLES.signing, "sha384", made.expected.signing],
        [DEFAULT_PKCS11_ROLES.cardAuthentication, "sha256", made.expected.cardAuthentication],
      ] as const) {
        const input = join(hsm.dir, "digest");
        const output = join(hsm.dir, "signature");
        await writeFile(input, createHash(hash).update(data).digest());
        await hsm.pkcs11Tool([
          ...["--login", "--pin", hsm.userPin, "--sign", "--mechanism", "ECDSA"],
          ...["--id", Buffer.from(role.id).toString("hex"), "-i", input, "-o", output],
        ]);
        const key = new X509Certificate(certificate).publicKey;
        expect(
          nodeVerify(hash, data, { key, dsaEncoding: "ieee-p1363" }, await readFile(output)),
          role.label,
        ).toBe(true);
      }
      // And the element's own challenge proof agrees with the same certificate.
      element = await made.open();
      const challenge = newChallenge();
      verifyChallengeProof(
        made.expected.cardAuthentication,
        challenge,
        await element.proveChallenge(challenge),
      );
    });
  },
);
