/**
 * Issue 14: `station serve` beyond loopback — HTTPS and an access token — tested honestly: the CLI
 * (a private build) listens on an address of a veth pair between two network namespaces this test
 * creates, and independent clients (curl, openssl s_client) connect from the other namespace. No
 * traffic leaves these namespaces. Without the token or with a wrong one: 401; with it: the page
 * and the inventory; the login form's cookie is Secure and logout ends it. The generated token file is 0600; plain HTTP to the TLS port gets no page; plain
 * HTTP beyond loopback is refused at start (exit 2).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openInventory } from "../../src/station/inventory/open.js";
import { TOKEN_ENV, TOKEN_FILE } from "../../src/station/serve/token.js";
import { runCliInProcess } from "../helpers/cli.js";
import {
  buildForChildren,
  cliLauncher,
  NodeChild,
  type PrivateBuild,
  requireOrSkipReason,
  runTool,
  toolAvailable,
} from "../helpers/pcsc-env.js";

function unavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (network namespaces)";
  for (const tool of ["ip", "curl", "openssl"]) if (!toolAvailable(tool)) return `needs ${tool}`;
  return undefined;
}
const missing = requireOrSkipReason(unavailable());

const ip = (...args: string[]) => execFileSync("ip", args, { stdio: "ignore", timeout: 10_000 });

describe.skipIf(missing !== undefined)(
  `station serve beyond loopback: TLS and a token, across a veth pair${missing ? ` — skipped: ${missing}` : ""}`,
  () => {
    const tag = `hsv-${process.pid}`;
    const serverNs = `${tag}-srv`;
    const clientNs = `${tag}-cli`;
    // A private /24 from the pid: two test processes never share one.
    const net = `10.${100 + (process.pid % 100)}.${process.pid % 250}`;
    const serverIp = `${net}.1`;
    let scratch: string;
    let stationDir: string;
    let build: PrivateBuild;
    let server: NodeChild | undefined;
    let url: string;
    let certFile: string;
    let keyFile: string;
    let cli: string;

    beforeAll(async () => {
      scratch = await mkdtemp(join(tmpdir(), "hsm-serve-tls-"));
      ip("netns", "add", serverNs);
      ip("netns", "add", clientNs);
      ip(
        "link",
        "add",
        `${tag}s`,
        "netns",
        serverNs,
        "type",
        "veth",
        "peer",
        "name",
        `${tag}c`,
        "netns",
        clientNs,
      );
      ip("-n", serverNs, "addr", "add", `${serverIp}/24`, "dev", `${tag}s`);
      ip("-n", clientNs, "addr", "add", `${net}.2/24`, "dev", `${tag}c`);
      for (const [ns, dev] of [
        [serverNs, `${tag}s`],
        [clientNs, `${tag}c`],
      ] as const) {
        ip("-n", ns, "link", "set", dev, "up");
        ip("-n", ns, "link", "set", "lo", "up");
      }
      // A certificate for the view's address (openssl, as an operator would make one).
      certFile = join(scratch, "view.crt");
      keyFile = join(scratch, "view.key");
      execFileSync(
        "openssl",
        [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:P-256",
          "-nodes",
          "-days",
          "1",
          "-subj",
          "/CN=hsm-onboard rack view",
          "-addext",
          `subjectAltName=IP:${serverIp}`,
          "-keyout",
          keyFile,
          "-out",
          certFile,
        ],
        { stdio: "ignore", timeout: 20_000 },
      );
      stationDir = join(scratch, "station");
      await mkdir(stationDir, { mode: 0o700 });
      const inventory = await openInventory({ stationDir });
      await inventory.recordPlan({
        digest: "ab".repeat(32),
        owner: "ACME Bank",
        hsms: ["11", "12", "13"].map((n) => ({ serial: `10${n}`, hostname: `hsm-${n}`, addresses: [] })),
      });
      await inventory.close();
      build = await buildForChildren(["cli/main.js"]);
      cli = await cliLauncher(build);
      server = new NodeChild(
        cli,
        {},
        {
          netns: serverNs,
          args: [
            "station",
            "serve",
            "--listen",
            `${serverIp}:8443`,
            "--tls-cert",
            certFile,
            "--tls-key",
            keyFile,
            "--station-dir",
            stationDir,
          ],
        },
      );
      const { message } = await server.waitFor(
        (m) => m.ev === "text" && /rack view on/.test(String(m.text)),
        30_000,
      );
      url = /rack view on (\S+)/.exec(String(message.text))![1]!;
      expect(String(message.text)).toBe(
        `rack view on https://${serverIp}:8443/ (access token in ${join(stationDir, TOKEN_FILE)} (created, mode 0600); Ctrl-C to stop)`,
      );
    }, 120_000);

    afterAll(async () => {
      await server?.stop();
      await build?.cleanup();
      spawnSync("ip", ["netns", "del", serverNs]);
      spawnSync("ip", ["netns", "del", clientNs]);
      await rm(scratch, { recursive: true, force: true });
    });

    /** curl from the client namespace; the token (if any) goes in a header file, not curl's argv. */
    async function curl(path: string, token?: string, extra: string[] = []) {
      const args = [
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        certFile,
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        ...extra,
      ];
      if (token !== undefined) {
        const headers = join(scratch, `h-${Math.random().toString(36).slice(2)}`);
        await writeFile(headers, `Authorization: Bearer ${token}\n`, { mode: 0o600 });
        args.push("-H", `@${headers}`);
      }
      const r = await runTool(
        "ip",
        ["netns", "exec", clientNs, "curl", ...args, new URL(path, url).href],
        {},
        20_000,
      );
      const lines = r.stdout.split("\n");
      return { code: r.code, status: Number(lines.pop()), body: lines.join("\n"), stderr: r.stderr };
    }

    it("generates the token once, 0600, in the station directory", async () => {
      const file = join(stationDir, TOKEN_FILE);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect((await readFile(file, "utf8")).trim()).toMatch(/^[A-Za-z0-9_-]{43}$/);
    });

    it("curl over TLS from the other namespace: no token → 401, wrong token → 401, the token → page and inventory", async () => {
      const token = (await readFile(join(stationDir, TOKEN_FILE), "utf8")).trim();
      const none = await curl("/");
      expect(none.code, none.stderr).toBe(0); // the certificate verified against --cacert
      expect(none.status).toBe(401);
      expect(none.body).toContain('action="/login"');
      expect((await curl("/api/inventory")).status).toBe(401);
      expect((await curl("/api/inventory", `${token.slice(0, -1)}x`)).status).toBe(401);
      expect((await curl("/api/inventory", "x".repeat(43))).status).toBe(401);
      const page = await curl("/", token);
      expect(page.status).toBe(200);
      expect(page.body).toContain("<title>hsm-onboard — rack view</title>");
      const inventory = await curl("/api/inventory", token, ["--compressed"]);
      expect(inventory.status).toBe(200);
      const data = JSON.parse(inventory.body) as { hsms: [number, string][] };
      expect(data.hsms.map((h) => h[1])).toEqual(["1011", "1012", "1013"]);
      // Plain HTTP to the TLS port gets no page.
      const plain = await runTool(
        "ip",
        [
          "netns",
          "exec",
          clientNs,
          "curl",
          "-sS",
          "--max-time",
          "5",
          "-o",
          "/dev/null",
          "-w",
          "%{http_code}",
          `http://${serverIp}:8443/`,
        ],
        {},
        15_000,
      );
      expect(plain.stdout).not.toBe("200");
    });

    it("curl over TLS: the login form gives a Secure session cookie; logout ends it (the old cookie → 401)", async () => {
      const token = (await readFile(join(stationDir, TOKEN_FILE), "utf8")).trim();
      const form = join(scratch, "login-token");
      await writeFile(form, token, { mode: 0o600 }); // curl reads it from the file, not from argv
      const jar = join(scratch, "cookies");
      const login = await curl("/login", undefined, ["-c", jar, "--data-urlencode", `token@${form}`]);
      expect(login.status).toBe(303);
      const saved = await readFile(jar, "utf8");
      // Netscape cookie file: #HttpOnly_ host, subdomains, path, Secure, expiry (0: session), name, value.
      expect(saved).toMatch(
        new RegExp(
          `^#HttpOnly_${serverIp.replaceAll(".", "\\.")}\tFALSE\t/\tTRUE\t0\thsm_onboard_session\t[A-Za-z0-9_-]{43}$`,
          "m",
        ),
      );
      const old = join(scratch, "cookies-before-logout");
      await writeFile(old, saved);
      expect((await curl("/api/inventory", undefined, ["-b", jar])).status).toBe(200);
      const out = await curl("/logout", undefined, [
        "-b",
        jar,
        "-c",
        jar,
        "-X",
        "POST",
        "-H",
        `Origin: ${url.slice(0, -1)}`,
      ]);
      expect(out.status).toBe(303);
      expect(await readFile(jar, "utf8")).not.toContain("hsm_onboard_session");
      expect((await curl("/api/inventory", undefined, ["-b", old])).status).toBe(401);
    });

    it("openssl s_client: TLS 1.2 or newer, the certificate verifies for the view's address", async () => {
      const r = spawnSync(
        "ip",
        [
          "netns",
          "exec",
          clientNs,
          "openssl",
          "s_client",
          "-connect",
          `${serverIp}:8443`,
          "-CAfile",
          certFile,
          "-verify_ip",
          serverIp,
          "-verify_return_error",
          "-brief",
        ],
        { input: "", encoding: "utf8", timeout: 15_000 },
      );
      const text = `${r.stdout}${r.stderr}`;
      expect(text).toMatch(/Verification: OK/);
      expect(text).toMatch(/Protocol version: TLSv1\.[23]/);
      // TLS 1.1 is refused.
      const old = spawnSync(
        "ip",
        [
          "netns",
          "exec",
          clientNs,
          "openssl",
          "s_client",
          "-connect",
          `${serverIp}:8443`,
          "-tls1_1",
          "-brief",
        ],
        { input: "", encoding: "utf8", timeout: 15_000 },
      );
      expect(old.status).not.toBe(0);
    });

    it("a token given in HSM_ONBOARD_SERVE_TOKEN is the one asked for (the station's own no longer opens it)", async () => {
      const given = "a-token-the-operator-chose-0123456789";
      const own = (await readFile(join(stationDir, TOKEN_FILE), "utf8")).trim();
      const other = new NodeChild(
        cli,
        { [TOKEN_ENV]: given },
        {
          netns: serverNs,
          args: [
            "station",
            "serve",
            "--listen",
            `${serverIp}:8444`,
            "--tls-cert",
            certFile,
            "--tls-key",
            keyFile,
            "--station-dir",
            stationDir,
          ],
        },
      );
      try {
        const { message } = await other.waitFor(
          (m) => m.ev === "text" && /rack view on/.test(String(m.text)),
          30_000,
        );
        expect(String(message.text)).toContain(`access token from ${TOKEN_ENV}`);
        const at = `https://${serverIp}:8444/api/inventory`;
        expect((await curl(at, own)).status).toBe(401);
        expect((await curl(at, given)).status).toBe(200);
      } finally {
        await other.stop();
      }
    });

    it("refuses plain HTTP beyond loopback at start (exit 2), with a clear message", async () => {
      const r = await runCliInProcess([
        "station",
        "serve",
        "--listen",
        `${serverIp}:8080`,
        "--station-dir",
        stationDir,
      ]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toContain(
        `station serve refuses plain HTTP beyond loopback: listening on ${serverIp} needs --tls-cert and --tls-key (and an access token)`,
      );
      const half = await runCliInProcess([
        "station",
        "serve",
        "--listen",
        `${serverIp}:8080`,
        "--tls-cert",
        certFile,
      ]);
      expect(half.exitCode).toBe(2);
      expect(half.stderr).toContain("--tls-cert and --tls-key go together");
    });

    it("stops on SIGTERM with exit 0", async () => {
      server!.signal("SIGTERM");
      expect(await server!.exitCode(10_000)).toBe(0);
    });
  },
);
