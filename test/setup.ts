// Tests load @peculiar/x509 the way the product does (src/util/x509.ts: no reflect-metadata polyfill,
// no global left behind), before any test file imports it directly.
import "../src/util/x509.js";

// Sequence marks (src/station/sequence-mark.ts) live outside station directories, by default in the
// user's home. Tests never touch it: every test file (and every child it starts, which inherits the
// environment) keeps its marks in a temporary directory of its own, removed after the file. A value
// the developer's shell set is replaced, not used.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll } from "vitest";

const stateHome = mkdtempSync(join(tmpdir(), "hsm-state-"));
process.env.HSM_ONBOARD_STATE_HOME = stateHome;
afterAll(() => rmSync(stateHome, { recursive: true, force: true }));
