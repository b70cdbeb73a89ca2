import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";
import { MemoryCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { VirtualPivCard, type VirtualPivCardOptions } from "../../src/card-emulator/virtual-piv-card.js";
import { PivSession, type PivSessionOptions } from "../../src/piv/piv-session.js";
import { InProcessTransport } from "../../src/transport/in-process.js";

export const DEFAULT_MGM = new Uint8Array(
  Buffer.from("010203040506070801020304050607080102030405060708", "hex"),
);

export interface TestCard {
  card: VirtualPivCard;
  store: MemoryCardStateStore;
  /** Every response APDU the card gave, in order. */
  responses: Uint8Array[];
  commands: Uint8Array[];
  /** A new session: the card is powered on afresh (security state cleared). */
  open(options?: PivSessionOptions): Promise<PivSession>;
}

export function testCard(options: VirtualPivCardOptions = {}): TestCard {
  const store = new MemoryCardStateStore();
  const responses: Uint8Array[] = [];
  const commands: Uint8Array[] = [];
  const outer = options.intercept;
  const card = new VirtualPivCard({
    serial: 24681357,
    store,
    ...options,
    intercept: (cmd, next) => {
      commands.push(cmd.slice());
      const r = outer ? outer(cmd, next) : next(cmd);
      responses.push(r.slice());
      return r;
    },
  });
  return {
    card,
    store,
    responses,
    commands,
    open: (o) => PivSession.open(new InProcessTransport(card), o),
  };
}

/** A certificate for `spki` (the card's public key) from a throw-away software CA. */
export async function issueCertificate(spki: Uint8Array, subject = "CN=Card Officer"): Promise<Uint8Array> {
  type Provider = Parameters<typeof x509.X509CertificateGenerator.create>[1];
  type Params = Parameters<typeof x509.X509CertificateGenerator.create>[0];
  const subtle = webcrypto.subtle;
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const ca = (await subtle.generateKey(alg, false, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const curve = spki.length > 100 ? "P-384" : "P-256";
  const publicKey = await subtle.importKey("spki", spki, { name: "ECDSA", namedCurve: curve }, true, [
    "verify",
  ]);
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: "0102",
      subject,
      issuer: "CN=Test Token CA",
      notBefore: new Date("2025-01-01T00:00:00Z"),
      notAfter: new Date("2035-01-01T00:00:00Z"),
      publicKey,
      signingKey: ca.privateKey,
      signingAlgorithm: alg,
    } as unknown as Params,
    webcrypto as unknown as Provider,
  );
  return new Uint8Array(cert.rawData);
}

export function indexOfBytes(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
