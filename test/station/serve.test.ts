/**
 * Issue 14: the rack view (`station serve`) over real HTTP on loopback — the page and its assets
 * from the package, the inventory as a compact JSON list (brotli or gzip when accepted), one HSM's
 * full record, a live "changed" event when a receipt is recorded, read-only, Host checked, plain
 * HTTP refused beyond loopback, and the access token (bearer or login cookie) when there is one:
 * sessions that expire (a moved clock, no sleeping), logout, and the brake on wrong tokens.
 * TLS beyond loopback in network namespaces: serve-tls.test.ts; in a browser: serve-browser.test.ts.
 */
import { chmod, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { brotliDecompressSync, gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import type { Inventory } from "../../src/station/inventory/inventory.js";
import { openInventory } from "../../src/station/inventory/open.js";
import {
  parseListen,
  type RackServer,
  secretsEqual,
  startRackServer,
} from "../../src/station/serve/server.js";
import { clientKey, LoginThrottle, SessionStore } from "../../src/station/serve/sessions.js";
import { checkGivenToken, stationToken } from "../../src/station/serve/token.js";
import { runCliInProcess } from "../helpers/cli.js";

let scratch: string;
let inventory: Inventory;
let server: RackServer;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "hsm-serve-"));
  inventory = await openInventory({ stationDir: scratch });
  await inventory.recordPlan({
    digest: "cd".repeat(32),
    owner: "ACME Bank",
    hsms: Array.from({ length: 40 }, (_, i) => ({
      serial: `${1000 + i}`,
      hostname: `hsm-${i}`,
      addresses: [],
    })),
  });
  server = await startRackServer({ inventory, host: "127.0.0.1", port: 0 });
});
afterAll(async () => {
  await server?.close();
  await inventory?.close();
  await rm(scratch, { recursive: true, force: true });
});

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  bytes: number;
}

function get(
  path: string,
  options: {
    method?: string;
    host?: string;
    headers?: Record<string, string>;
    body?: string;
    base?: string;
  } = {},
) {
  const url = new URL(path, options.base ?? server.url);
  return new Promise<Reply>((resolve, reject) => {
    const req = request(
      url,
      {
        method: options.method ?? "GET",
        headers: { ...(options.host ? { host: options.host } : {}), ...(options.headers ?? {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (d: Buffer) => chunks.push(d));
        res.on("end", () => {
          const raw = Buffer.concat(chunks);
          const encoding = res.headers["content-encoding"];
          const body =
            encoding === "br" ? brotliDecompressSync(raw) : encoding === "gzip" ? gunzipSync(raw) : raw;
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: body.toString("utf8"),
            bytes: raw.length,
          });
        });
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

type Compact = {
  mark: string;
  states: string[];
  plans: { owner: string; digest: string }[];
  hsms: [number, string, string, number, string][];
};
const stateOfRow = (data: Compact, serial: string) => {
  const row = data.hsms.find((h) => h[1] === serial);
  return row === undefined ? undefined : data.states[row[3]];
};

describe("station serve: the rack view over HTTP", () => {
  it("serves the page and its script and style from the package, under a same-origin CSP", async () => {
    const page = await get("/");
    expect(page.status).toBe(200);
    expect(page.body).toContain('<script src="/app.js"></script>');
    expect(page.body).not.toMatch(/https?:\/\//); // no CDN
    expect(page.headers["content-security-policy"]).toBe(
      "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    );
    expect((await get("/app.js")).body).toContain('new EventSource("/api/events")');
    expect((await get("/app.css")).status).toBe(200);
    expect((await get("/nothing")).status).toBe(404);
  });

  it("gives the inventory as a compact list: 40 planned HSMs, one short array each", async () => {
    const res = await get("/api/inventory");
    const data = JSON.parse(res.body) as Compact;
    expect(data.plans).toEqual([{ owner: "ACME Bank", digest: "cd".repeat(32) }]);
    expect(data.hsms).toHaveLength(40);
    expect(data.hsms[0]).toEqual([0, "1000", "hsm-0", 0, ""]);
    expect(new Set(data.hsms.map((h) => data.states[h[3]]))).toEqual(new Set(["planned"]));
    expect(res.headers["content-encoding"]).toBeUndefined(); // not asked for
  });

  it("compresses with brotli or gzip when the client accepts it (node:zlib), the same content", async () => {
    const plain = await get("/api/inventory");
    const br = await get("/api/inventory", { headers: { "accept-encoding": "gzip, deflate, br" } });
    const gz = await get("/api/inventory", { headers: { "accept-encoding": "gzip" } });
    expect(br.headers["content-encoding"]).toBe("br");
    expect(gz.headers["content-encoding"]).toBe("gzip");
    expect(br.headers.vary).toBe("Accept-Encoding");
    expect(br.body).toBe(plain.body);
    expect(gz.body).toBe(plain.body);
    expect(Number(br.headers["content-length"])).toBe(br.bytes);
    expect(br.bytes).toBeLessThan(plain.bytes / 3);
    const script = await get("/app.js", { headers: { "accept-encoding": "br" } });
    expect(script.headers["content-encoding"]).toBe("br");
    expect(script.body).toContain('new EventSource("/api/events")');
  });

  it("gives one HSM's full record (the detail), 404 for an unknown one", async () => {
    const one = await get(`/api/hsm?owner=${encodeURIComponent("ACME Bank")}&serial=1001`);
    expect(one.status).toBe(200);
    expect(JSON.parse(one.body)).toMatchObject({
      serial: "1001",
      hostname: "hsm-1",
      state: "planned",
      receipt: null,
    });
    expect((await get("/api/hsm?serial=nope")).status).toBe(404);
    expect((await get("/api/hsm")).status).toBe(400);
  });

  it("sends a live 'changed' event when a receipt is recorded", async () => {
    const url = new URL("/api/events", server.url);
    const events = await new Promise<string>((resolve, reject) => {
      const req = request(url, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          text += d;
          if (text.includes("event: hello") && !text.includes("recorded")) {
            text += "recorded";
            void inventory.recordReceipts([
              {
                serial: "1000",
                verified: true,
                authentic: true,
                outcome: 0,
                outcomeName: "configured",
                addresses: ["eth0 198.51.100.10/24"],
                collectedAt: new Date(),
              },
            ]);
          }
          if (text.includes("event: changed")) {
            req.destroy();
            resolve(text);
          }
        });
      });
      req.on("error", (e) => (e.message.includes("aborted") ? undefined : reject(e)));
      req.setTimeout(10_000, () => reject(new Error("no changed event within 10 s")));
      req.end();
    });
    expect(events).toMatch(/event: changed\ndata: "1\.0\.1\.0"/);
    const data = JSON.parse((await get("/api/inventory")).body) as Compact;
    expect(data.mark).toBe("1.0.1.0");
    expect(stateOfRow(data, "1000")).toBe("onboarded ✓");
  });

  it("is read-only, checks the Host header, and refuses plain HTTP beyond loopback", async () => {
    expect((await get("/api/inventory", { method: "POST" })).status).toBe(405);
    expect((await get("/", { host: "evil.example:80" })).status).toBe(403);
    const refused = await startRackServer({ inventory, host: "0.0.0.0", port: 0 }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(UsageError);
    expect((refused as Error).message).toBe(
      "station serve refuses plain HTTP beyond loopback: listening on 0.0.0.0 needs TLS (--tls-cert and --tls-key) and an access token",
    );
    // TLS without a token is not enough either.
    await expect(
      startRackServer({ inventory, host: "0.0.0.0", port: 0, tls: { cert: "x", key: "y" } }),
    ).rejects.toBeInstanceOf(UsageError);
    expect(parseListen("[::1]:8080")).toEqual({ host: "::1", port: 8080 });
    expect(() => parseListen("8080")).toThrow(UsageError);
    const cli = await runCliInProcess([
      "station",
      "serve",
      "--listen",
      "192.0.2.1:8080",
      "--station-dir",
      scratch,
    ]);
    expect(cli.exitCode).toBe(2);
    expect(cli.stderr).toMatch(
      /refuses plain HTTP beyond loopback: listening on 192\.0\.2\.1 needs --tls-cert and --tls-key/,
    );
    const idle = await runCliInProcess(["station", "serve", "--session-idle", "0", "--station-dir", scratch]);
    expect(idle.exitCode).toBe(2);
    expect(idle.stderr).toContain('--session-idle must be a whole number from 1 to 1440, not "0"');
  });

  it("the station's own token: created once 0600 and reused; a file others may read is refused", async () => {
    const dir = join(scratch, "token-station");
    const first = await stationToken(dir);
    expect(first.created).toBe(true);
    expect((await stat(first.path)).mode & 0o777).toBe(0o600);
    const again = await stationToken(dir);
    expect(again).toEqual({ ...first, created: false });
    await chmod(first.path, 0o644);
    await expect(stationToken(dir)).rejects.toThrow(/may be read by others \(mode 644\): chmod 600 it/);
    await chmod(first.path, 0o600);
    await writeFile(first.path, "short\n");
    await expect(stationToken(dir)).rejects.toBeInstanceOf(UsageError);
    expect(() => checkGivenToken("has a space in it, long enough", "test")).toThrow(UsageError);
  });

  it("with a token: 401 without it or with a wrong one; the bearer header or the login cookie opens it", async () => {
    const token = "correct-horse-battery-staple-42";
    const guarded = await startRackServer({ inventory, host: "127.0.0.1", port: 0, token });
    try {
      const base = guarded.url;
      const none = await get("/api/inventory", { base });
      expect(none.status).toBe(401);
      expect(none.headers["www-authenticate"]).toBe('Bearer realm="hsm-onboard rack view"');
      const page = await get("/", { base });
      expect(page.status).toBe(401);
      expect(page.body).toContain('<form id="login" method="post" action="/login">');
      expect(
        (await get("/api/inventory", { base, headers: { authorization: "Bearer wrong-token-wrong-token" } }))
          .status,
      ).toBe(401);
      expect(
        (await get("/api/inventory", { base, headers: { authorization: `Basic ${token}` } })).status,
      ).toBe(401);
      expect((await get("/app.js", { base })).status).toBe(401);
      expect((await get("/app.css", { base })).status).toBe(200); // the login page's style; no data
      const bearer = await get("/api/inventory", { base, headers: { authorization: `Bearer ${token}` } });
      expect(bearer.status).toBe(200);
      expect((JSON.parse(bearer.body) as Compact).hsms).toHaveLength(40);

      const form = { "content-type": "application/x-www-form-urlencoded" };
      const wrong = await get("/login", { base, method: "POST", headers: form, body: "token=nope" });
      expect(wrong.status).toBe(401);
      expect(wrong.headers["set-cookie"]).toBeUndefined();
      expect(wrong.body).toContain("That token is not right.");
      const login = await get("/login", {
        base,
        method: "POST",
        headers: form,
        body: `token=${encodeURIComponent(token)}`,
      });
      expect(login.status).toBe(303);
      expect(login.headers.location).toBe("/");
      const cookie = String(login.headers["set-cookie"]).split(";")[0]!;
      expect(String(login.headers["set-cookie"])).toMatch(/; Path=\/; HttpOnly; SameSite=Strict$/);
      expect(cookie).not.toContain(token); // a session value, not the token
      expect((await get("/", { base, headers: { cookie } })).status).toBe(200);
      expect((await get("/api/inventory", { base, headers: { cookie: `${cookie}x` } })).status).toBe(401);
      // With a token the Host header is not what guards it.
      expect(
        (await get("/", { base, host: "rack.example:443", headers: { authorization: `Bearer ${token}` } }))
          .status,
      ).toBe(200);
      expect(secretsEqual(token, token)).toBe(true);
      expect(secretsEqual(token, `${token}x`)).toBe(false);
    } finally {
      await guarded.close();
    }
    await expect(startRackServer({ inventory, port: 0, token: "short" })).rejects.toThrow(
      /at least 20 characters/,
    );
  });
});

describe("station serve: browser sessions, logout and the brake on wrong tokens", () => {
  const token = "session-test-token-0123456789";
  const form = { "content-type": "application/x-www-form-urlencoded" };
  const MIN = 60_000;
  let now = Date.UTC(2026, 11, 7, 8);
  const clock = () => now;
  const login = async (base: string, tried = token) => {
    const res = await get("/login", {
      base,
      method: "POST",
      headers: form,
      body: `token=${encodeURIComponent(tried)}`,
    });
    return { status: res.status, res, cookie: String(res.headers["set-cookie"]).split(";")[0] as string };
  };
  const status = async (base: string, headers: Record<string, string>) =>
    (await get("/api/inventory", { base, headers })).status;

  it("a session ends after 30 idle minutes, and 12 hours after its login however busy; each login is a new id", async () => {
    const guarded = await startRackServer({ inventory, port: 0, token, clock });
    try {
      const base = guarded.url;
      const first = await login(base);
      expect(first.status).toBe(303);
      expect(first.cookie).toMatch(/^hsm_onboard_session=[A-Za-z0-9_-]{43}$/); // 256 random bits
      const cookie = { cookie: first.cookie };
      now += 29 * MIN;
      expect(await status(base, cookie)).toBe(200);
      now += 29 * MIN; // 58 min after the login, 29 after the last request
      expect(await status(base, cookie)).toBe(200);
      now += 30 * MIN;
      expect(await status(base, cookie)).toBe(401);

      const second = await login(base);
      expect(second.cookie).not.toBe(first.cookie);
      let steps = 0;
      while (steps < 28) {
        now += 25 * MIN; // busy: never idle for long
        expect(await status(base, { cookie: second.cookie })).toBe(200);
        steps += 1;
      }
      now += 25 * MIN; // 12 h 5 min after the login
      expect(await status(base, { cookie: second.cookie })).toBe(401);
    } finally {
      await guarded.close();
    }
  });

  it("logout (same origin only) ends the session and its event stream; the old cookie is refused; a restart ends every session", async () => {
    const guarded = await startRackServer({ inventory, port: 0, token, clock });
    const again = await startRackServer({ inventory, port: 0, token, clock });
    try {
      const base = guarded.url;
      const origin = base.slice(0, -1);
      expect((await login(base)).status).toBe(303);
      // Cross-site posts are refused, whatever they carry.
      const forged = { ...form, origin: "https://evil.example" };
      expect(
        (await get("/login", { base, method: "POST", headers: forged, body: `token=${token}` })).status,
      ).toBe(403);
      const { cookie } = await login(base);
      const page = await get("/", { base, headers: { cookie } });
      expect(page.body).toContain('<form id="logout" method="post" action="/logout">');
      const bearerPage = await get("/", { base, headers: { authorization: `Bearer ${token}` } });
      expect(bearerPage.body).not.toContain('id="logout"'); // no session, nothing to log out of

      // The other server, with the same token, never issued this cookie.
      expect(await status(again.url, { cookie })).toBe(401);

      let opened: () => void = () => undefined;
      const streamOpen = new Promise<void>((resolve) => {
        opened = resolve;
      });
      const streamEnded = new Promise<string>((resolve, reject) => {
        const req = request(new URL("/api/events", base), { headers: { cookie } }, (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => {
            text += d;
            opened();
          });
          res.on("end", () => resolve(text));
        });
        req.on("error", reject);
        req.setTimeout(10_000, () => reject(new Error("the event stream outlived its session")));
        req.end();
      });
      await streamOpen;
      expect(
        (await get("/logout", { base, method: "POST", headers: { cookie, "sec-fetch-site": "cross-site" } }))
          .status,
      ).toBe(403);
      expect((await get("/logout", { base, headers: { cookie } })).status).toBe(405);
      expect(await status(base, { cookie })).toBe(200);

      const out = await get("/logout", { base, method: "POST", headers: { cookie, origin } });
      expect(out.status).toBe(303);
      expect(out.headers.location).toBe("/");
      expect(String(out.headers["set-cookie"])).toBe(
        "hsm_onboard_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
      );
      expect(await streamEnded).toMatch(/^event: hello\n[\s\S]*event: ended\ndata: "session"\n\n$/);
      expect(await status(base, { cookie })).toBe(401);
      expect((await get("/", { base, headers: { cookie } })).body).toContain('action="/login"');
      expect(await status(base, { authorization: `Bearer ${token}` })).toBe(200); // scripts unaffected
    } finally {
      await guarded.close();
      await again.close();
    }
  });

  it("wrong tokens: after 5 the address waits (429, Retry-After doubling up to 10 min), uncompared; the right one later works", async () => {
    const guarded = await startRackServer({ inventory, port: 0, token, clock });
    try {
      const base = guarded.url;
      for (let i = 0; i < 4; i++)
        expect((await login(base, `wrong-${i}-wrong-wrong-wrong`)).status).toBe(401);
      expect(await status(base, { authorization: "Bearer wrong-token-wrong-token" })).toBe(401); // the 5th
      const refused = await login(base); // the right token, but the address is waiting
      expect(refused.status).toBe(429);
      expect(refused.res.headers["retry-after"]).toBe("1");
      expect(refused.res.body).toContain("Too many wrong tokens from this address: try again in 1 s.");
      expect(refused.res.headers["set-cookie"]).toBeUndefined();
      const bearer = await get("/api/inventory", { base, headers: { authorization: `Bearer ${token}` } });
      expect(bearer.status).toBe(429);
      expect(bearer.headers["retry-after"]).toBe("1");
      now += 1000;
      expect(await status(base, { authorization: `Bearer ${token}` })).toBe(200); // and the count restarts
      const { cookie, status: opened } = await login(base);
      expect(opened).toBe(303);

      for (let i = 0; i < 5; i++)
        expect((await login(base, `wrong-${i}-wrong-wrong-wrong`)).status).toBe(401);
      expect(await status(base, { cookie })).toBe(200); // a session already open is not throttled
      const waits: number[] = [];
      for (let i = 0; i < 12; i++) {
        const r = await login(base, "wrong-again-wrong-again");
        expect(r.status).toBe(429);
        const wait = Number(r.res.headers["retry-after"]);
        waits.push(wait);
        now += wait * 1000;
        expect((await login(base, "wrong-again-wrong-again")).status).toBe(401);
      }
      expect(waits).toEqual([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
      now += 600_000;
      expect((await login(base)).status).toBe(303);
    } finally {
      await guarded.close();
    }
  });

  it("logins sent at once from one address: their heads all in before any failure, still at most 5 tokens compared", async () => {
    const guarded = await startRackServer({ inventory, port: 0, token, clock });
    try {
      const url = new URL("/login", guarded.url);
      // 12 requests whose heads reach the server (and pass its first throttle check) before any body:
      // 11 wrong tokens, then the right one last.
      const guesses = [...Array.from({ length: 11 }, (_, i) => `wrong-${i}-wrong-wrong-wrong`), token];
      const pending = guesses.map((guess) => {
        const body = `token=${encodeURIComponent(guess)}`;
        const req = request(url, {
          method: "POST",
          headers: { ...form, "content-length": String(Buffer.byteLength(body)) },
        });
        const answered = new Promise<number>((resolve, reject) => {
          req.on("response", (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          req.on("error", reject);
        });
        req.flushHeaders();
        return { req, body, answered };
      });
      // One full round trip on another connection: by then the server has taken the 12 heads.
      expect((await get("/login", { base: guarded.url })).status).toBe(200);
      for (const p of pending) p.req.end(p.body);
      const statuses = await Promise.all(pending.map((p) => p.answered));
      expect(statuses.filter((s) => s === 401)).toHaveLength(5); // the 5th shuts the address out
      expect(statuses.filter((s) => s === 429)).toHaveLength(7);
      expect(statuses.at(-1)).toBe(429); // the right token, sent last, was not compared either
    } finally {
      await guarded.close();
    }
  });

  it("more addresses than the table holds buy nothing: new ones share one count while it is full", () => {
    // Round robin over N /64s, one wrong token each per round, a round every 4.1 s (a fast guesser):
    // how many tokens are compared in 50 rounds. Evicting the oldest address would let 4,097
    // prefixes (a /52) keep every count at 1 and have every guess compared (204,850).
    const compared = (prefixes: number) => {
      let t = now;
      const throttle = new LoginThrottle(() => t);
      let n = 0;
      for (let round = 0; round < 50; round++, t += 4100) {
        for (let p = 0; p < prefixes; p++) {
          const client = clientKey(`2001:db8:${(p >> 12) & 0xf}:${(p & 0xfff).toString(16)}::1`);
          if (throttle.retryAfter(client) > 0) continue;
          throttle.failed(client);
          n++;
        }
      }
      return n;
    };
    const within = compared(4096);
    expect(within).toBeLessThan(4096 * 15);
    // The addresses beyond the table share one count: at most one more guess per round in all.
    expect(compared(4097)).toBeLessThanOrEqual(within + 50);
    expect(compared(8192)).toBeLessThanOrEqual(within + 50);
  });

  it("a request path that is no URL path is 400, not a server error", async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const url = new URL(server.url);
      const socket = connect(Number(url.port), url.hostname, () => {
        socket.end(`GET //[ HTTP/1.1\r\nHost: ${url.host}\r\nConnection: close\r\n\r\n`);
      });
      let data = "";
      socket.on("data", (d: Buffer) => {
        data += d.toString("latin1");
      });
      socket.on("end", () => resolve(data));
      socket.on("error", reject);
    });
    expect(reply.split("\r\n")[0]).toBe("HTTP/1.1 400 Bad Request");
  });

  it("bounded memory: at most 4096 addresses tracked (IPv6 by /64), at most 1000 sessions", () => {
    const throttle = new LoginThrottle(clock);
    for (let i = 0; i < 5000; i++) throttle.failed(`10.${i >> 8}.${i & 255}.1`);
    expect(throttle.size).toBe(4096);
    expect(clientKey("2001:db8:1:2:aaaa::1")).toBe("2001:db8:1:2::/64");
    expect(clientKey("2001:db8:1:2:bbbb:cccc:dddd:eeee")).toBe("2001:db8:1:2::/64");
    expect(clientKey("::1")).toBe("0:0:0:0::/64");
    expect(clientKey("::ffff:192.0.2.7")).toBe("192.0.2.7");
    const sessions = new SessionStore(30 * MIN, 720 * MIN, clock);
    const first = sessions.create();
    for (let i = 0; i < 1000; i++) sessions.create();
    expect(sessions.size).toBe(1000);
    expect(sessions.check(first, false)).toBeUndefined(); // the oldest went first
  });
});
