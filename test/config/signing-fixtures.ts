// Test support for the config/COSE tests: software signers over certificates issued by the
// project's own PKI (src/pki: manufacturer root P-384 → token CA / device CA P-384 → card 9C or
// device certificate), and generated plans.
import { KeyObject } from "node:crypto";
import { formatIpv4, ipv4ToUint32, parseCidr, uint32ToIpv4 } from "../../src/config/address-codec.js";
import type { HsmEntry, NetworkPlan, Subnet } from "../../src/config/plan-model.js";
import { createSoftwareSigner, type Signer } from "../../src/crypto/signer.js";
import {
  createPki,
  issueCardCertificate,
  issueDeviceCertificate,
  type OnboardingPki,
} from "../../src/pki/issue.js";
import { generateEcKeyPair, type NamedCurve } from "../../src/pki/keys.js";

/** Certificates are issued at ISSUED_AT; validate them at a time inside their validity. */
export const ISSUED_AT = new Date("2030-01-01T00:00:00Z");
export const OWNER = "ACME Bank";

export interface TestIdentity {
  readonly signer: Signer;
  /** DER, leaf first, root last. */
  readonly chain: Uint8Array[];
  readonly privateKey: KeyObject;
}

let pkiPromise: Promise<OnboardingPki> | undefined;

/** One onboarding PKI per test process. */
export function testPki(): Promise<OnboardingPki> {
  pkiPromise ??= createPki({ owner: OWNER, now: ISSUED_AT });
  return pkiPromise;
}

const der = (c: { rawData: ArrayBuffer }) => new Uint8Array(c.rawData);

/**
 * An officer card's 9C (configuration signing) identity, or with `device` an HSM's device identity,
 * with its full chain (leaf, CA, root: ~1.5 KB) for x5chain.
 */
export async function createTestIdentity(
  options: { curve?: NamedCurve; officer?: string; device?: string } = {},
): Promise<TestIdentity> {
  const pki = await testPki();
  const keys = await generateEcKeyPair(options.curve ?? "P-256");
  const leaf =
    options.device === undefined
      ? await issueCardCertificate({
          tokenCa: pki.tokenCa,
          publicKey: keys.publicKey,
          owner: OWNER,
          officer: options.officer ?? "Alice Example",
          slot: "9C",
          now: ISSUED_AT,
        })
      : await issueDeviceCertificate({
          deviceCa: pki.deviceCa,
          publicKey: keys.publicKey,
          serial: options.device,
          now: ISSUED_AT,
        });
  const ca = options.device === undefined ? pki.tokenCa : pki.deviceCa;
  const chain = [der(leaf), der(ca.certificate), der(pki.root.certificate)];
  const privateKey = KeyObject.from(keys.privateKey);
  return { signer: createSoftwareSigner({ privateKey, certificateChain: chain }), chain, privateKey };
}

export const TEST_SUBNET: Subnet = {
  name: "hsm-mgmt",
  cidr: "198.51.100.0/22",
  gateway: "198.51.100.1",
  dns: ["198.51.100.53"],
  ntp: ["198.51.100.123"],
};

/** Room for 10,000+ HSMs. */
export const LARGE_SUBNET: Subnet = {
  name: "hsm-fleet",
  cidr: "10.20.0.0/16",
  gateway: "10.20.0.1",
  dns: ["10.20.0.53"],
  ntp: [],
};

/**
 * The SPEC.md §9 density plan: `count` HSMs with distinct 7-digit serials (not in plan order),
 * hostnames `hsm-fra1-a0001`..., one IPv4 address each in one shared subnet.
 */
export function generatePlan(
  count: number,
  subnet: Subnet = count > 1000 ? LARGE_SUBNET : TEST_SUBNET,
): NetworkPlan {
  const network = parseCidr(subnet.cidr!, 4)!;
  const base = ipv4ToUint32(network.address) + 10; // past the gateway and DNS/NTP hosts
  const hsms: HsmEntry[] = [];
  for (let i = 0; i < count; i++) {
    hsms.push({
      serial: String(1_000_000 + ((i * 7919) % 9_000_000)),
      hostname: `hsm-fra1-a${String(i + 1).padStart(4, "0")}`,
      interfaces: [{ name: "eth0", subnet: subnet.name, ipv4: formatIpv4(uint32ToIpv4(base + i)) }],
    });
  }
  return { owner: "ACME Bank", subnets: [subnet], hsms };
}

export function randomConfigurationId(seed = 1): Uint8Array {
  return Uint8Array.from({ length: 16 }, (_, i) => (seed * 31 + i * 17) & 0xff);
}

export const METADATA = {
  configurationId: randomConfigurationId(),
  sequence: 7,
  issuedAt: 1_750_000_000,
  notBefore: 1_750_000_000,
  notAfter: 1_750_000_000 + 30 * 86_400,
} as const;
