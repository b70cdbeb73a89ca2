/**
 * The agent's warm-up at start (src/agent/warm-up.ts): it runs the host-side onboarding path over its
 * built-in world, end to end, and trusts nothing by it. Its effect on CPU is a benchmark
 * (`npm run bench`, docs/PERFORMANCE.md), not a timed test.
 */
import { describe, expect, it } from "vitest";
import { warmUpOnboarding } from "../../src/agent/warm-up.js";
import { WARM_UP_WORLD } from "../../src/agent/warm-up-world.js";
import { validateChainView } from "../../src/pki/path-validation.js";
import { VALIDATION_REQUIREMENTS } from "../../src/pki/profiles.js";

const der = (b64: string) => new Uint8Array(Buffer.from(b64, "base64"));

describe("agent warm-up at start", () => {
  it("goes through every step of the host-side path over the built-in world", async () => {
    const summary = await warmUpOnboarding();
    expect(summary).toEqual({
      owner: "hsm-onboard warm-up",
      hostname: "hsm-fra1-a0001",
      addresses: ["198.51.100.11/24"],
      validSigners: 1,
      receiptBytes: expect.any(Number),
      scpAnswer: 4,
      // CRL, manifest and the full shard came through the PIV host stack; receipt-0 is absent.
      pivBytesRead: der(WARM_UP_WORLD.crl).length + 3063 + 3063,
    });
    expect(summary.receiptBytes).toBeGreaterThan(500);
    // Twice in a row gives the same (nothing it holds changes).
    expect(await warmUpOnboarding()).toEqual({ ...summary, receiptBytes: expect.any(Number) });
  });

  it("carries a full shard, so the first card's decoder runs warmed over as many entries", () => {
    expect(der(WARM_UP_WORLD.shard).length).toBe(3063);
    expect(der(WARM_UP_WORLD.manifest).length).toBe(3063);
  });

  it("is trusted for nothing: its card chain does not validate to any other root", async () => {
    // The warm-up's own root is the only anchor its chain reaches; the world's root is not a valid
    // anchor for a chain of another PKI either (a real agent's anchor comes from factory-init).
    const other = await import("../../src/pki/warm-up-chain.js");
    await expect(
      validateChainView({
        leaf: der(WARM_UP_WORLD.cardAuthentication),
        intermediates: [der(WARM_UP_WORLD.tokenCa)],
        trustAnchor: der(other.WARM_UP_CHAIN.root),
        crls: [der(WARM_UP_WORLD.crl)],
        now: new Date(WARM_UP_WORLD.time),
        ...VALIDATION_REQUIREMENTS.cardAuthentication,
      }),
    ).rejects.toThrow();
  });
});
