/**
 * File names of a `pki issue-device` directory, which `agent factory-init --device DIR` reads. In a
 * module of its own so that the agent can name them without loading pki-store.ts (and with it
 * @peculiar/x509).
 */
export const DEVICE_FILES = { key: "device.key.pem", cert: "device.pem", chain: "chain.pem" } as const;
