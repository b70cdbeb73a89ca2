// Tests load @peculiar/x509 the way the product does (src/util/x509.ts: no reflect-metadata polyfill,
// no global left behind), before any test file imports it directly.
import "../src/util/x509.js";
