#!/usr/bin/env node
// Independent SCP11a check (issue 11): Yubico's yubikit 5.8.0, run from its source tree, against the
// virtual card over a private pcscd + vpcd, with an OCE certificate issued as `pki issue-oce` does:
//   1. yubikit's SecurityDomainSession: put_key over SCP11b is refused (6985, SCP11b does not
//      authenticate the host); over SCP03 with the factory default keys it installs the owner's token
//      CA key as the OCE CA (put_key KID 10 / KVN 1, store_ca_issuer with its key identifier): the
//      bytes a YubiKey takes, accepted by the virtual card, and yubikit's SCP03 against the card's;
//   2. get_supported_ca_identifiers reads FF33 back (yubikit's parser on our encoding);
//   3. yubikit's PivSession opens SCP11a (PSO with the OCE certificate, MUTUAL AUTHENTICATE) and
//      verifies the PIN inside it;
//   4. the same with another owner's OCE certificate: the card refuses the PSO (6A80).
// Needs root (private pcscd), a built tree (npm run build), Debian's python3-cryptography and
// python3-pyscard, and a yubikey-manager 5.8.0 source tree in YKMAN_SRC (CI cannot fetch it).
//
//   YKMAN_SRC=/path/to/yubikey-manager-5.8.0 node scripts/yubikit-scp11a.mjs
import "reflect-metadata";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseCertificate } from "../dist/pki/fast-x509.js";
import { createPki } from "../dist/pki/issue.js";
import { issueOceCertificate } from "../dist/pki/scp-certificates.js";
import { startPrivatePcscd } from "../dist/sim/pcscd.js";
import { checker, runPython, serveEmulatedCard, ykmanSource } from "./yubikit-common.mjs";

const src = ykmanSource();
const work = mkdtempSync(join(tmpdir(), "yubikit-scp11a-"));

async function oceFiles(owner, prefix) {
  const pki = await createPki({ owner });
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const spki = new Uint8Array(publicKey.export({ format: "der", type: "spki" }));
  const cert = await issueOceCertificate(pki.tokenCa, spki, "Station OCE", 3, owner);
  writeFileSync(join(work, `${prefix}-ca.pem`), pki.tokenCa.certificate.toString("pem"));
  // The token CA's key identifier (cryptography 38 cannot parse the token CA's extensions).
  const ski = parseCertificate(new Uint8Array(pki.tokenCa.certificate.rawData)).subjectKeyId;
  writeFileSync(join(work, `${prefix}-ski.hex`), ski);
  writeFileSync(join(work, `${prefix}-oce.pem`), cert.toString("pem"));
  writeFileSync(join(work, `${prefix}-oce.key.pem`), privateKey.export({ format: "pem", type: "pkcs8" }));
}
await oceFiles("ACME Bank", "acme");
await oceFiles("Other Bank", "other");

const PY = `
import sys
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from smartcard.System import readers
from ykman.pcsc import ScardSmartCardConnection
from yubikit.core.smartcard import ApduError
from yubikit.core.smartcard.scp import KeyRef, Scp03KeyParams, Scp11KeyParams, StaticKeys
from yubikit.securitydomain import SecurityDomainSession
from yubikit.piv import PivSession

work, reader_name = sys.argv[1], sys.argv[2]
def load(prefix):
    ca = x509.load_pem_x509_certificate(open(f"{work}/{prefix}-ca.pem", "rb").read())
    oce = x509.load_pem_x509_certificate(open(f"{work}/{prefix}-oce.pem", "rb").read())
    key = load_pem_private_key(open(f"{work}/{prefix}-oce.key.pem", "rb").read(), None)
    return ca, oce, key
def connect():
    r = [x for x in readers() if reader_name in str(x)][0]
    return ScardSmartCardConnection(r.createConnection())

acme_ca, acme_oce, acme_key = load("acme")
other_ca, other_oce, other_key = load("other")
oce_ref = KeyRef(0x10, 1)

conn = connect()
sd = SecurityDomainSession(conn)
b_certs = sd.get_certificate_bundle(KeyRef(0x13, 1))
sd.authenticate(Scp11KeyParams(KeyRef(0x13, 1), b_certs[-1].public_key()))
try:
    sd.put_key(oce_ref, acme_ca.public_key())
    print("SCP11B_PUT_KEY_ACCEPTED")
except ApduError as e:
    print(f"SCP11B_PUT_KEY_REFUSED sw={e.sw:04X}")
conn.close()

conn = connect()
sd = SecurityDomainSession(conn)
sd.authenticate(Scp03KeyParams(KeyRef(0x01, 0xFF), StaticKeys.default()))
sd.put_key(oce_ref, acme_ca.public_key())
ski = bytes.fromhex(open(f"{work}/acme-ski.hex").read().strip())
sd.store_ca_issuer(oce_ref, ski)
print("INSTALLED put_key 10/01 + store_ca_issuer over SCP03 (default keys)")
conn.close()

conn = connect()
sd = SecurityDomainSession(conn)
ids = sd.get_supported_ca_identifiers(kloc=True)
print("FF33", {f"{k.kid:02x}/{k.kvn:02x}": v.hex() for k, v in ids.items()}, "expected", ski.hex())
assert ids.get(oce_ref) == ski
a_certs = sd.get_certificate_bundle(KeyRef(0x11, 1))
pk_sd = a_certs[-1].public_key()
conn.close()

conn = connect()
piv = PivSession(conn, Scp11KeyParams(KeyRef(0x11, 1), pk_sd, oce_ref, acme_key, [acme_oce]))
piv.verify_pin("123456")
print("SCP11A_OK pin attempts", piv.get_pin_attempts())
conn.close()

conn = connect()
try:
    PivSession(conn, Scp11KeyParams(KeyRef(0x11, 1), pk_sd, oce_ref, other_key, [other_oce]))
    print("OTHER_ACCEPTED")
except ApduError as e:
    print(f"OTHER_REFUSED sw={e.sw:04X}")
conn.close()
`;

const pcscd = await startPrivatePcscd();
const card = await serveEmulatedCard({ work, pcscd, contactless: false });
const { trace } = card;
const { check, failed } = checker();
try {
  const r = await runPython(["-c", PY, work, pcscd.readerName], { src, pcscd, timeout: 120_000 });
  const apdus = trace.filter((l) => l.startsWith("apdu "));
  console.log(`${r.stdout}${r.stderr}python exit ${r.status}`);
  console.log(apdus.map((l) => `  ${l}`).join("\n"));
  check(r.status === 0, "the yubikit script ran to its end");
  check(
    /SCP11B_PUT_KEY_REFUSED sw=6985/.test(r.stdout),
    "yubikit put_key over SCP11b refused by the card (6985)",
  );
  check(
    apdus.some((l) => /^apdu 80 50 FF 00 /.test(l) && / -> 9000 /.test(l)) &&
      apdus.some((l) => /^apdu 84 82 33 00 /.test(l) && / -> 9000 /.test(l)),
    "yubikit opened SCP03 with the default keys (80 50 FF 00, 84 82 33 00 → 9000)",
  );
  check(/INSTALLED/.test(r.stdout), "yubikit put_key + store_ca_issuer accepted in an SCP03 SD session");
  check(
    apdus.some((l) => /^apdu 84 D8 00 10 /.test(l) && / -> 9000 /.test(l)) &&
      apdus.some((l) => /^apdu 04 E2 90 00 /.test(l) && / -> 9000 /.test(l)),
    "PUT KEY (84 D8 00 10) and STORE DATA (04 E2 90 00) went wrapped and were answered 9000",
  );
  check(
    /SCP11A_OK pin attempts 3/.test(r.stdout),
    "yubikit opened SCP11a (PSO + MUTUAL AUTHENTICATE) and verified the PIN inside",
  );
  check(
    apdus.some((l) => /^apdu 80 82 01 11 /.test(l) && / -> 9000 /.test(l)),
    "MUTUAL AUTHENTICATE 80 82 01 11 answered 9000",
  );
  check(/OTHER_REFUSED sw=6A80/.test(r.stdout), "another owner's OCE certificate refused by the card (6A80)");
  const state = JSON.parse(readFileSync(join(work, "card.json"), "utf8"));
  check(
    state.scp?.oceCa?.kid === 16 && typeof state.scp.oceCa.ski === "string",
    "the card state holds the OCE CA and its identifier",
  );
} finally {
  await card.stop();
  await pcscd.stop();
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed() ? 1 : 0);
