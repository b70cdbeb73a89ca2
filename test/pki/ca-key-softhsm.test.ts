/**
 * Issue 13, "CA keys in a token": the owner's token CA key lives in a PKCS#11 token (SoftHSM2, real
 * module, its own temporary token directory), never in a file.
 *
 * Through the CLI (in-process, real SoftHSM2 module through pkcs11js):
 * 1. `pki issue-token-ca --token-ca-key pkcs11:…` with a key pkcs11-tool generated on the token, and
 *    `--new-key` where the project generates it: no token-ca.key.pem, the URI (no PIN) in
 *    pki-state.json, the certificate stored on the token next to the key (pkcs11-tool --list-objects),
 *    the chain and the CRL verified by `openssl verify` / `openssl crl -verify`.
 * 2. `card personalize --pki OWNER-DIR` (the key from the state) on a virtual card, the PIN from
 *    --ca-pin-env: the card's certificates verify with openssl under root → token CA; then
 *    `station write` accepts the card and writes a configuration, and `agent run` onboards from it.
 * 3. `pki revoke` and `pki crl` sign with the token key; a wrong token PIN exits 13 with one line.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { ExitCode } from "../../src/errors.js";
import { PivSession } from "../../src/piv/piv-session.js";
import { InProcessTransport } from "../../src/transport/in-process.js";
import { type CliResult, runCliInProcess } from "../helpers/cli.js";
import { requireOrSkipReason } from "../helpers/pcsc-env.js";
import {
  createSoftHsmToken,
  pkcs11ToolUnavailableReason,
  type SoftHsmToken,
  softHsmUnavailableReason,
} from "../helpers/softhsm.js";

const execFileAsync = promisify(execFile);
const unavailable = requireOrSkipReason(softHsmUnavailableReason() ?? pkcs11ToolUnavailableReason());
const OWNER = "ACME Bank";
const CARD_PIN = "24681357";
const CARD_PUK = "97531864";
const VIRTUAL_CARD_ENV = "HSM_ONBOARD_VIRTUAL_CARD";

describe.skipIf(unavailable !== undefined)(
  `token CA key in SoftHSM2${unavailable ? ` — skipped: ${unavailable}` : ""}`,
  () => {
    let work: string;
    let token: SoftHsmToken;
    let uri: string;
    const env = () => ({ TOKEN_PIN: token.userPin });
    const run = (args: string[], options: { stdin?: string; env?: Record<string, string> } = {}) =>
      runCliInProcess(args, {
        cwd: work,
        env: { ...env(), ...options.env },
        ...(options.stdin ? { stdin: options.stdin } : {}),
      });
    const ok = (r: CliResult) => expect(r.exitCode, r.stderr).toBe(ExitCode.ok);
    const openssl = async (args: string[]) =>
      (await execFileAsync("openssl", args, { cwd: work, encoding: "utf8" })).stdout;

    beforeAll(async () => {
      work = await mkdtemp(join(tmpdir(), "hsm-onboard-ca-token-"));
      token = await createSoftHsmToken({ label: "acme-ca" });
      uri = `pkcs11:token=acme-ca;object=token-ca;id=%01?module-path=${token.modulePath}`;
      ok(await run(["pki", "init", "--out", "mfr"]));
      // The token CA's key pair made on the token by OpenSC's pkcs11-tool (an independent tool).
      await token.pkcs11Tool([
        "--login",
        "--pin",
        token.userPin,
        "--keypairgen",
        "--key-type",
        "EC:secp384r1",
        "--label",
        "token-ca",
        "--id",
        "01",
      ]);
    });
    afterAll(async () => {
      await token?.dispose();
      if (work) await rm(work, { recursive: true, force: true });
    });

    it("pki issue-token-ca certifies the key in the token: no key file, URI in the state, certificate on the token, openssl verifies chain and CRL", async () => {
      const result = await run([
        "pki",
        "issue-token-ca",
        "--pki",
        "mfr",
        "--owner",
        OWNER,
        "--out",
        "acme",
        "--token-ca-key",
        uri,
        "--ca-pin-env",
        "TOKEN_PIN",
        "--json",
      ]);
      ok(result);
      const summary = JSON.parse(result.stdout);
      expect(summary.tokenCa.key).toBe(uri);
      await expect(stat(join(work, "acme", "token-ca.key.pem"))).rejects.toThrow();
      const state = JSON.parse(await readFile(join(work, "acme", "pki-state.json"), "utf8"));
      expect(state.keys).toEqual({ tokenCa: uri });
      expect(JSON.stringify(state)).not.toContain(token.userPin);
      // The root's key file is plain: loading it warns (one line), the token key does not.
      expect(result.stderr.trim().split("\n")).toEqual([
        expect.stringMatching(/^pki issue-token-ca: warning: .*root\.key\.pem is an unencrypted private key/),
      ]);

      expect(
        await openssl(["verify", "-x509_strict", "-CAfile", "mfr/root.pem", "acme/token-ca.pem"]),
      ).toMatch(/OK/);
      const crl = await execFileAsync(
        "openssl",
        ["crl", "-in", "acme/token-ca.crl.pem", "-CAfile", "acme/token-ca.pem", "-noout", "-verify"],
        { cwd: work, encoding: "utf8" },
      );
      expect(crl.stdout + crl.stderr).toMatch(/verify OK/);

      const listed = await token.pkcs11Tool(["--login", "--pin", token.userPin, "--list-objects"]);
      expect(listed.stdout).toMatch(/Certificate Object[\s\S]*label:\s+token-ca[\s\S]*ID:\s+01/);
      expect(listed.stdout).toMatch(/Private Key Object; EC[\s\S]*label:\s+token-ca/);
    });

    it("card personalize signs the card's certificates with the token key; station write and agent run accept the card", async () => {
      const card = join(work, "card.json");
      VirtualPivCard.fromFile(card, { serial: 10_000_001 });
      const personalized = await run(
        [
          "card",
          "personalize",
          "--pki",
          "acme",
          "--owner",
          OWNER,
          "--officer",
          "Alice Example",
          "--pin-stdin",
          "--ca-pin-env",
          "TOKEN_PIN",
          "--json",
        ],
        { stdin: `${CARD_PIN}\n${CARD_PUK}\n`, env: { [VIRTUAL_CARD_ENV]: card } },
      );
      ok(personalized);
      expect(personalized.stderr).not.toMatch(/warning/);
      expect(personalized.stdout + personalized.stderr).not.toContain(token.userPin);

      // The certificates on the card, checked by OpenSSL under root → token CA (the key in SoftHSM2).
      const transport = new InProcessTransport(VirtualPivCard.fromFile(card));
      try {
        const session = await PivSession.open(transport);
        for (const slot of ["9E", "9C"] as const) {
          const cert = await session.getCertificate(slot);
          expect(cert, slot).toBeDefined();
          const file = join(work, `card-${slot.toLowerCase()}.der`);
          await writeFile(file, cert!);
          await openssl(["x509", "-inform", "DER", "-in", file, "-out", `${file}.pem`]);
          expect(
            await openssl([
              "verify",
              "-x509_strict",
              "-CAfile",
              "mfr/root.pem",
              "-untrusted",
              "acme/token-ca.pem",
              `${file}.pem`,
            ]),
          ).toMatch(/OK/);
        }
      } finally {
        await transport.close();
      }

      // The station accepts the card (chain, CRL, live challenge, PIN) and writes a configuration.
      ok(
        await run([
          "station",
          "init",
          "--trust",
          "mfr/root.pem",
          "--crl",
          "acme/token-ca.crl.pem",
          "--issuer",
          "acme/token-ca.pem",
          "--station-dir",
          "station",
        ]),
      );
      const plan = join(work, "plan.yaml");
      const example = await readFile(
        fileURLToPath(new URL("../../examples/rack-4.yaml", import.meta.url)),
        "utf8",
      );
      await writeFile(plan, example.replace(/owner:.*$/m, `owner: ${OWNER}`));
      const written = await run(
        ["station", "write", "--allow-plaintext", "--plan", plan, "--station-dir", "station", "--pin-stdin"],
        { stdin: `${CARD_PIN}\n`, env: { [VIRTUAL_CARD_ENV]: card } },
      );
      ok(written);

      // An HSM bound to this owner's token CA onboards from the card.
      const serial = /serial:\s*"?(\d+)"?/.exec(example)?.[1] ?? "1234567";
      ok(await run(["pki", "issue-device", "--pki", "mfr", "--serial", serial, "--out", "device"]));
      ok(
        await run([
          "agent",
          "factory-init",
          "--state-dir",
          "agent",
          "--serial",
          serial,
          "--trust",
          "mfr/root.pem",
          "--owner-ca",
          "acme/token-ca.pem",
          "--device",
          "device",
          "--crl",
          "acme/token-ca.crl.pem",
          "--net",
          "dry-run",
        ]),
      );
      const onboarded = await run(
        ["agent", "run", "--allow-plaintext", "--state-dir", "agent", "--once", "--json", "--pin-stdin"],
        { stdin: `${CARD_PIN}\n`, env: { [VIRTUAL_CARD_ENV]: card } },
      );
      ok(onboarded);
      expect(JSON.parse(onboarded.stdout)).toMatchObject({ ok: true, serial });
    });

    it("pki revoke and pki crl sign with the token key; a wrong token PIN exits 13 in one line", async () => {
      const crl = await run(["pki", "crl", "--pki", "acme", "--out", "crl.pem", "--ca-pin-env", "TOKEN_PIN"]);
      ok(crl);
      expect(crl.stdout).toContain("CRL number 2");
      const verified = await execFileAsync(
        "openssl",
        ["crl", "-in", "crl.pem", "-CAfile", "acme/token-ca.pem", "-noout", "-verify"],
        { cwd: work, encoding: "utf8" },
      );
      expect(verified.stdout + verified.stderr).toMatch(/verify OK/);

      const wrong = await run(
        ["pki", "crl", "--pki", "acme", "--out", "crl3.pem", "--ca-pin-env", "TOKEN_PIN"],
        {
          env: { TOKEN_PIN: "999999" },
        },
      );
      expect(wrong.exitCode).toBe(ExitCode.wrongPin);
      expect(wrong.stderr.trim().split("\n")).toHaveLength(1);
      expect(wrong.stderr).not.toContain("999999");
      await expect(stat(join(work, "crl3.pem"))).rejects.toThrow();

      const noPin = await run(["pki", "crl", "--pki", "acme", "--out", "crl4.pem"]);
      expect(noPin.exitCode).toBe(ExitCode.usage);
      expect(noPin.stderr).toMatch(/--ca-pin-fd N or --ca-pin-env NAME/);

      const revoked = await run([
        "pki",
        "revoke",
        "--pki",
        "acme",
        "--cert",
        join(work, "card-9e.der.pem"),
        "--reason",
        "key-compromise",
        "--ca-pin-env",
        "TOKEN_PIN",
      ]);
      ok(revoked);
      // Number 3: the refused attempts (wrong PIN, no PIN) used none, since the key opens first.
      expect(revoked.stdout).toContain("CRL number 3");

      // A token that keeps no public key object: the key is matched to the certificate by a signature.
      await token.pkcs11Tool([
        "--login",
        "--pin",
        token.userPin,
        "--delete-object",
        "--type",
        "pubkey",
        "--label",
        "token-ca",
      ]);
      const listed = await token.pkcs11Tool([
        "--login",
        "--pin",
        token.userPin,
        "--list-objects",
        "--type",
        "pubkey",
      ]);
      expect(listed.stdout).not.toMatch(/label:\s+token-ca\n/);
      const withoutPublic = await run([
        "pki",
        "crl",
        "--pki",
        "acme",
        "--out",
        "crl5.pem",
        "--ca-pin-env",
        "TOKEN_PIN",
      ]);
      ok(withoutPublic);
      expect(withoutPublic.stdout).toContain("CRL number 4");
      // And a token key that is not the token CA's is refused (--token-ca-key names another key pair).
      await token.pkcs11Tool([
        ...[
          "--login",
          "--pin",
          token.userPin,
          "--keypairgen",
          "--key-type",
          "EC:secp384r1",
          "--label",
          "other",
        ],
      ]);
      const wrongKey = await run([
        ...["pki", "crl", "--pki", "acme", "--out", "crl6.pem", "--ca-pin-env", "TOKEN_PIN"],
        ...["--token-ca-key", `pkcs11:token=acme-ca;object=other?module-path=${token.modulePath}`],
      ]);
      expect(wrongKey.exitCode).toBe(ExitCode.usage);
      expect(wrongKey.stderr).toMatch(
        /object=other.* is not the key of the token CA certificate token-ca\.pem/,
      );
      await expect(stat(join(work, "crl6.pem"))).rejects.toThrow();
    });

    it("--new-key generates the token CA key on the token (P-384, private, not extractable) and refuses to replace one", async () => {
      const newUri = `pkcs11:token=acme-ca;object=token-ca-2?module-path=${token.modulePath}`;
      const args = [
        "pki",
        "issue-token-ca",
        "--pki",
        "mfr",
        "--owner",
        "ACME Bank",
        "--token-ca-key",
        newUri,
        "--new-key",
        "--ca-pin-env",
        "TOKEN_PIN",
      ];
      ok(await run([...args, "--out", "acme-2"]));
      const listed = await token.pkcs11Tool([
        "--login",
        "--pin",
        token.userPin,
        "--list-objects",
        "--type",
        "privkey",
      ]);
      const block = listed.stdout.split(/\n(?=\S)/).find((b) => /label:\s+token-ca-2/.test(b)) ?? "";
      expect(block).toMatch(/EC/);
      expect(block).toMatch(/Access:\s+.*sensitive.*never extractable/);
      expect(await openssl(["verify", "-CAfile", "mfr/root.pem", "acme-2/token-ca.pem"])).toMatch(/OK/);
      const again = await run([...args, "--out", "acme-3"]);
      expect(again.exitCode).toBe(ExitCode.usage);
      expect(again.stderr).toMatch(/already holds a private key labelled "token-ca-2"/);
    });

    it("pki init keeps the root and device CA keys in the token (--new-key); issue-token-ca and issue-device sign there; openssl verifies", async () => {
      const key = (label: string) => `pkcs11:token=acme-ca;object=${label}?module-path=${token.modulePath}`;
      const init = await run(
        [
          ...[
            "pki",
            "init",
            "--out",
            "mfr-token",
            "--root-key",
            key("root"),
            "--device-ca-key",
            key("device-ca"),
          ],
          ...["--new-key", "--ca-pin-env", "TOKEN_PIN", "--encrypt", "--ca-passphrase-env", "TOKEN_CA_PASS"],
        ],
        { env: { TOKEN_CA_PASS: "passphrase of the token CA file" } },
      );
      ok(init);
      expect(init.stdout).toMatch(/key files encrypted \(in PKCS#11 tokens: root, deviceCa\)/);
      for (const gone of ["root.key.pem", "device-ca.key.pem"]) {
        await expect(stat(join(work, "mfr-token", gone))).rejects.toThrow();
      }
      expect(await readFile(join(work, "mfr-token", "token-ca.key.pem"), "utf8")).toMatch(
        /ENCRYPTED PRIVATE KEY/,
      );
      expect(JSON.parse(await readFile(join(work, "mfr-token", "pki-state.json"), "utf8")).keys).toEqual({
        root: key("root"),
        deviceCa: key("device-ca"),
      });
      expect(
        await openssl([
          "verify",
          "-x509_strict",
          "-CAfile",
          "mfr-token/root.pem",
          "mfr-token/device-ca.pem",
          "mfr-token/token-ca.pem",
        ]),
      ).toMatch(/device-ca\.pem: OK\n.*token-ca\.pem: OK/);
      // The root key in the token signs an owner's token CA; the device CA key there signs a device certificate.
      ok(
        await run(
          [
            "pki",
            "issue-token-ca",
            "--pki",
            "mfr-token",
            "--owner",
            "Owner C",
            "--out",
            "owner-c",
            "--ca-pin-env",
            "TOKEN_PIN",
            "--encrypt",
            "--ca-passphrase-env",
            "C_PASS",
          ],
          { env: { C_PASS: "Owner C passphrase" } },
        ),
      );
      ok(
        await run([
          "pki",
          "issue-device",
          "--pki",
          "mfr-token",
          "--serial",
          "7654321",
          "--out",
          "device-7654321",
          "--ca-pin-env",
          "TOKEN_PIN",
        ]),
      );
      expect(
        await openssl(["verify", "-x509_strict", "-CAfile", "mfr-token/root.pem", "owner-c/token-ca.pem"]),
      ).toMatch(/OK/);
      expect(
        await openssl([
          "verify",
          "-x509_strict",
          "-CAfile",
          "mfr-token/root.pem",
          "-untrusted",
          "mfr-token/device-ca.pem",
          "device-7654321/device.pem",
        ]),
      ).toMatch(/OK/);
      const listed = await token.pkcs11Tool([
        "--login",
        "--pin",
        token.userPin,
        "--list-objects",
        "--type",
        "cert",
      ]);
      expect(listed.stdout).toMatch(/label:\s+root/);
      expect(listed.stdout).toMatch(/label:\s+device-ca/);
    });
  },
);
