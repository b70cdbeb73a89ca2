/**
 * @peculiar/x509, loaded without a global side effect: every module of hsm-onboard imports it from
 * here, never directly (test/repo/library-surface.test.ts checks both). The stand-in Reflect API of
 * reflect-shim.ts exists only while the library is evaluated (imports evaluate in source order).
 */
import { removeReflectShim } from "./reflect-shim.js";

export * from "@peculiar/x509";

removeReflectShim();
