#!/usr/bin/env node
// The README's test command (`npm test`). Does every set-up step the tests need on a fresh
// Debian 12 machine, then runs typecheck, lint and the whole suite:
//  1. system packages (TESTBED.md): installed with apt when running as root; otherwise listed,
//     with the tests that are left out without them;
//  2. native bindings (pcsclite, pkcs11js): reinstalled from the lockfile when `npm ci` dropped them
//     (an optional package whose build failed is left out), rebuilt when present but not loading;
//  3. build (the e2e tests run the compiled CLI in child processes), typecheck, lint;
//  4. vitest, closing with one plain "N passed, N failed, N skipped" line.
// Under CI=true a missing package or a skipped test is a failure: CI must run everything.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const SYSTEM_PACKAGES = [
  { pkg: "openssl", for: "openssl cross-checks of certificates, CRLs and CMS" },
  { pkg: "build-essential", for: "building the native pcsclite and pkcs11js bindings" },
  { pkg: "python3", for: "building the native bindings (node-gyp)" },
  { pkg: "libpcsclite-dev", for: "the pcsclite binding (PC/SC tests)" },
  { pkg: "pcscd", for: "end-to-end tests over a real PC/SC stack" },
  { pkg: "vsmartcard-vpcd", for: "the virtual reader the virtual card is inserted into" },
  { pkg: "pcsc-tools", for: "independent PC/SC checks" },
  { pkg: "opensc", for: "OpenSC pkcs11-tool/opensc-tool interoperability tests" },
  { pkg: "yubico-piv-tool", for: "yubico-piv-tool interoperability tests" },
  { pkg: "softhsm2", for: "PKCS#11 tests against SoftHSM2" },
  { pkg: "iproute2", for: "network tests in namespaces" },
  {
    pkg: "systemd",
    for: "systemd-analyze verify of the unit file, systemd-notify, systemd-networkd in a namespace",
  },
  {
    pkg: "dbus-daemon",
    for: "a private D-Bus system bus for systemd-hostnamed and networkctl in a namespace",
  },
  { pkg: "postgresql", for: "the station inventory's PostgreSQL engine (tests start their own server)" },
  { pkg: "chromium", for: "the rack view (station serve) driven in a real browser by playwright-core" },
  { pkg: "curl", for: "the rack view over HTTPS beyond loopback, as an independent client in a namespace" },
];

// Paths below (node_modules, package-lock.json) are the project's, wherever this is started from.
process.chdir(join(dirname(fileURLToPath(import.meta.url)), ".."));

const isCi = process.env.CI === "true";
const isRoot = process.getuid?.() === 0;

function log(line) {
  process.stdout.write(`[test] ${line}\n`);
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: "inherit", ...opts });
  if (r.status !== 0) {
    log(`${cmd} ${args.join(" ")} failed (exit ${r.status ?? r.signal})`);
    process.exit(r.status || 1);
  }
}

// dpkg-query's own ${field} syntax, spelled so it is not mistaken for a template literal.
const DPKG_STATUS_FORMAT = "-f=$" + "{Status}";

function installed(pkg) {
  try {
    const out = execFileSync("dpkg-query", ["-W", DPKG_STATUS_FORMAT, pkg], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    return out.toString().includes("install ok installed");
  } catch {
    return false;
  }
}

function ensureSystemPackages() {
  let missing = SYSTEM_PACKAGES.filter((p) => !installed(p.pkg));
  if (missing.length > 0 && isRoot) {
    log(`installing system packages: ${missing.map((p) => p.pkg).join(" ")}`);
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    run("apt-get", ["update", "-qq"], { env });
    run("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing.map((p) => p.pkg)], {
      env,
    });
    missing = SYSTEM_PACKAGES.filter((p) => !installed(p.pkg));
  }
  if (missing.length > 0) {
    log("missing system packages (run the tests as root to install them):");
    for (const p of missing) log(`  ${p.pkg}: needed for ${p.for}; those tests are skipped`);
    if (isCi) {
      log("CI=true: every test must run; failing.");
      process.exit(1);
    }
  }
}

const NATIVE_MODULES = ["pcsclite", "pkcs11js", "better-sqlite3"];
/** better-sqlite3 opens its binding only when a database is opened. */
const PROBES = { "better-sqlite3": "new (require('better-sqlite3'))(':memory:').close()" };

/** Loads in a fresh node (a failed load is not cached there, and the binding is really opened). */
function loads(name) {
  const probe = PROBES[name] ?? `require(${JSON.stringify(name)})`;
  const r = spawnSync(process.execPath, ["-e", probe], { stdio: "ignore" });
  return r.status === 0;
}

function presentInNodeModules(name) {
  return existsSync(join("node_modules", name, "package.json"));
}

function lockedVersion(name) {
  const lock = JSON.parse(readFileSync("package-lock.json", "utf8"));
  return lock.packages?.[`node_modules/${name}`]?.version;
}

// `npm ci` drops an optional package whose build failed (no libpcsclite-dev or build tools yet),
// and `npm rebuild` cannot bring back a package that is not there: now that the system packages
// are installed, put the dropped ones back at their lockfile versions (package.json and the
// lockfile are left unchanged), and rebuild the ones that are there but do not load.
function ensureNativeBindings() {
  const broken = NATIVE_MODULES.filter((name) => !loads(name));
  const absent = broken.filter((name) => !presentInNodeModules(name));
  const unbuilt = broken.filter((name) => presentInNodeModules(name));
  if (absent.length > 0) {
    const specs = absent.map((name) => `${name}@${lockedVersion(name) ?? "latest"}`);
    log(
      `reinstalling optional native modules from the lockfile: ${specs.join(" ")} ` +
        "(npm ci left them out: their build failed before the system packages were installed)",
    );
    spawnSync("npm", ["install", "--no-save", "--no-audit", "--no-fund", ...specs], { stdio: "inherit" });
  }
  for (const name of unbuilt) {
    log(`rebuilding native module ${name}`);
    spawnSync("npm", ["rebuild", name], { stdio: "inherit" });
  }
  const still = NATIVE_MODULES.filter((name) => !loads(name));
  for (const name of broken) {
    if (!still.includes(name)) log(`native module ${name}: loads now`);
  }
  if (still.length > 0) {
    log(`native modules that do not load: ${still.join(", ")}; the tests needing them are skipped`);
    if (isCi) {
      log("CI=true: every test must run; failing.");
      process.exit(1);
    }
  }
}

ensureSystemPackages();
ensureNativeBindings();
log("build");
run("npm", ["run", "--silent", "build"]);
log("typecheck");
run("npm", ["run", "--silent", "typecheck"]);
log("lint");
run("npx", ["biome", "check", "."]);

const outDir = mkdtempSync(join(tmpdir(), "hsm-onboard-test-"));
const jsonReport = join(outDir, "vitest.json");
const vitest = spawnSync(
  "npx",
  [
    "vitest",
    "run",
    "--reporter=default",
    "--reporter=json",
    `--outputFile.json=${jsonReport}`,
    ...process.argv.slice(2),
  ],
  { stdio: "inherit", env: { ...process.env, HSM_ONBOARD_REQUIRE_ALL: isCi ? "1" : "" } },
);
let summary;
try {
  const report = JSON.parse(readFileSync(jsonReport, "utf8"));
  summary = {
    passed: report.numPassedTests,
    failed: report.numFailedTests,
    skipped: report.numPendingTests + report.numTodoTests,
  };
} catch {
  summary = undefined;
}
rmSync(outDir, { recursive: true, force: true });
if (!summary) {
  log("vitest wrote no report");
  process.exit(vitest.status || 1);
}
process.stdout.write(
  `tests: ${summary.passed} passed, ${summary.failed} failed, ${summary.skipped} skipped\n`,
);
if (isCi && summary.skipped > 0) {
  log("CI=true: a skipped test means a missing capability; failing.");
  process.exit(1);
}
process.exit(vitest.status ?? 1);
