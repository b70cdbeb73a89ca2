import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import * as constants from "../../src/pkcs11/constants.js";
import { requireOrSkipReason } from "../helpers/pcsc-env.js";

function binding(): Record<string, unknown> | undefined {
  try {
    return createRequire(import.meta.url)("pkcs11js") as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

const pkcs11js = binding();
requireOrSkipReason(pkcs11js ? undefined : "the optional pkcs11js binding is not installed");

describe.skipIf(!pkcs11js)("PKCS#11 constants", () => {
  it("match the values the pkcs11js binding exports", () => {
    const checked: string[] = [];
    for (const [name, value] of Object.entries(constants)) {
      if (typeof value !== "number" || !(name in pkcs11js!)) continue;
      expect(pkcs11js![name], name).toBe(value);
      checked.push(name);
    }
    // Everything but the few the binding does not export (CKS_*, CK_CERTIFICATE_CATEGORY_*).
    expect(checked.length).toBeGreaterThan(60);
  });
});
