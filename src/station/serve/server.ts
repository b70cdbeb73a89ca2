/**
 * `station serve` (issue 14): a read-only rack view of the inventory over HTTP(S). One page
 * (page.ts: HTML, CSS and a small script, all served from here — no CDN, no framework), the
 * inventory as a compact JSON list, one HSM's full record, and a server-sent event stream that says
 * "changed" when the inventory did (it is polled once a second), so the page refreshes while
 * receipts arrive. Bodies are compressed (brotli or gzip, node:zlib) when the client accepts it.
 *
 * Loopback (127.0.0.1, ::1, localhost) is the default and needs neither TLS nor a token. Any other
 * address needs both: TLS (a certificate and key the operator gives) and an access token, or the
 * server refuses to start (UsageError, exit 2) — plain HTTP beyond loopback is never served. The
 * token is checked on every request, in constant time: `Authorization: Bearer TOKEN` (scripts), or
 * the session cookie a browser gets from the login form (POST /login). The cookie is a random
 * session id kept in this process's memory (sessions.ts): it ends after 30 idle minutes, 12 hours
 * after the login, at POST /logout, or when the server stops; it is HttpOnly, SameSite=Strict,
 * Secure under TLS — never the token itself. Wrong tokens (form or bearer) are throttled per client
 * address (429 with Retry-After). POST /login and /logout from a browser must come from this
 * origin (Origin and Sec-Fetch-Site checked, besides SameSite). Without a token (loopback) the
 * Host header must name the address listened on, so a page on another site cannot reach the view
 * through DNS rebinding. The page's Content Security Policy allows only this origin. Only GET and
 * HEAD, and POST /login and /logout when there is a token.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { promisify } from "node:util";
import { brotliCompress, gzip, constants as zlib } from "node:zlib";
import { UsageError } from "../../errors.js";
import type { Inventory } from "../inventory/inventory.js";
import { compactInventory, hsmStateJson } from "../inventory/state.js";
import { loginPage, PAGE_SCRIPT, PAGE_STYLE, pageHtml } from "./page.js";
import {
  type Clock,
  clientKey,
  DEFAULT_IDLE_MS,
  DEFAULT_LIFETIME_MS,
  LoginThrottle,
  SessionStore,
} from "./sessions.js";

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);
const POLL_MS = 1000;
/** A token given by the operator must be at least this long (a generated one is 43 characters). */
export const MIN_TOKEN_LENGTH = 20;
const SESSION_COOKIE = "hsm_onboard_session";
const MAX_LOGIN_BODY = 4096;
/** Bodies shorter than this go uncompressed. */
const COMPRESS_FROM = 1024;

const brotli = promisify(brotliCompress);
const gzipAsync = promisify(gzip);

export interface RackServerOptions {
  readonly inventory: Inventory;
  readonly host?: string;
  readonly port?: number;
  /** PEM certificate (chain) and key: serve HTTPS. Required beyond loopback. */
  readonly tls?: { readonly cert: string | Buffer; readonly key: string | Buffer };
  /** The access token every request must carry. Required beyond loopback. */
  readonly token?: string;
  /** A browser session ends after this long without a request (default 30 min)… */
  readonly sessionIdleMs?: number;
  /** …and this long after its login in any case (default 12 h). */
  readonly sessionLifetimeMs?: number;
  /** Milliseconds now, for sessions and the throttle (tests move it; default Date.now). */
  readonly clock?: Clock;
}

export interface RackServer {
  readonly url: string;
  close(): Promise<void>;
}

export function isLoopback(host: string): boolean {
  return LOOPBACK.has(host);
}

/** "127.0.0.1:8080", "[::1]:8080", "localhost:0" → host and port. */
export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port > 65_535) {
    throw new UsageError(`--listen must be HOST:PORT (e.g. 127.0.0.1:8080), not "${value}"`);
  }
  return { host: (m[1] ?? m[2]) as string, port };
}

/** Constant-time comparison of two secrets of any length (their SHA-256 digests are compared). */
export function secretsEqual(given: string, expected: string): boolean {
  const a = createHash("sha256").update(given, "utf8").digest();
  const b = createHash("sha256").update(expected, "utf8").digest();
  return timingSafeEqual(a, b);
}

export async function startRackServer(options: RackServerOptions): Promise<RackServer> {
  const host = options.host ?? "127.0.0.1";
  const { tls, token } = options;
  if (!isLoopback(host) && (tls === undefined || token === undefined)) {
    throw new UsageError(
      `station serve refuses plain HTTP beyond loopback: listening on ${host} needs TLS (--tls-cert and --tls-key) and an access token${
        tls === undefined ? "" : " (none was given)"
      }`,
    );
  }
  if (token !== undefined && token.length < MIN_TOKEN_LENGTH) {
    throw new UsageError(`the access token must be at least ${MIN_TOKEN_LENGTH} characters`);
  }
  const clock = options.clock ?? Date.now;
  const sessions = new SessionStore(
    options.sessionIdleMs ?? DEFAULT_IDLE_MS,
    options.sessionLifetimeMs ?? DEFAULT_LIFETIME_MS,
    clock,
  );
  const throttle = new LoginThrottle(clock);
  const { inventory } = options;
  /** Open event streams, with the session each was opened under (none: bearer or no token). */
  const streams = new Map<ServerResponse, string | undefined>();
  const endStreams = (ended: (key: string) => boolean) => {
    for (const [s, key] of streams) {
      if (key !== undefined && ended(key)) {
        streams.delete(s);
        s.end('event: ended\ndata: "session"\n\n'); // the page goes back to the token form
      }
    }
  };
  let mark = await inventory.changeMark();
  let polling = false;
  const timer = setInterval(() => {
    endStreams((key) => !sessions.checkKey(key, false)); // a session that expired takes its stream
    if (polling || streams.size === 0) return;
    polling = true;
    inventory
      .changeMark()
      .then((now) => {
        if (now === mark) return;
        mark = now;
        for (const s of streams.keys()) s.write(`event: changed\ndata: ${JSON.stringify(now)}\n\n`);
      })
      .catch(() => undefined)
      .finally(() => {
        polling = false;
      });
  }, POLL_MS);

  // The compact list, encoded once per change of the inventory (many browsers, one query).
  let listCache: { mark: string; body: Buffer; br?: Buffer; gzip?: Buffer } | undefined;

  let allowedHosts: Set<string> = new Set();
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    void handle(req, res).catch(() => {
      if (!res.headersSent) send(req, res, 500, "text/plain", "internal error\n");
      else res.end();
    });
  };
  let server: Server;
  try {
    server =
      tls === undefined
        ? createServer(handler)
        : createHttpsServer({ ...tls, minVersion: "TLSv1.2" }, handler);
  } catch (cause) {
    clearInterval(timer);
    throw new UsageError(
      `--tls-cert/--tls-key: not a usable certificate and key (${cause instanceof Error ? cause.message : String(cause)})`,
      { cause },
    );
  }

  type Access =
    | { readonly kind: "open" | "bearer" | "none" }
    | { readonly kind: "session"; readonly key: string }
    | { readonly kind: "throttled"; readonly seconds: number };

  /** Who the request is: no token needed, the bearer token, a live session, nobody, or throttled. */
  function access(req: IncomingMessage): Access {
    if (token === undefined) return { kind: "open" };
    const auth = req.headers.authorization;
    if (auth !== undefined) {
      const client = clientKey(req.socket.remoteAddress);
      const seconds = throttle.retryAfter(client);
      if (seconds > 0) return { kind: "throttled", seconds };
      const m = /^Bearer ([\x21-\x7e]{1,512})$/.exec(auth);
      if (m !== null && secretsEqual(m[1] as string, token)) {
        throttle.succeeded(client);
        return { kind: "bearer" };
      }
      throttle.failed(client);
      return { kind: "none" };
    }
    const id = cookieOf(req, SESSION_COOKIE);
    const key = id === undefined ? undefined : sessions.check(id, true);
    return key === undefined ? { kind: "none" } : { kind: "session", key };
  }

  /**
   * A POST a browser sent from this origin, or one from a client that is no browser (no Origin,
   * no Sec-Fetch-Site). SameSite=Strict already keeps the cookie off cross-site requests.
   */
  function sameOrigin(req: IncomingMessage): boolean {
    const site = req.headers["sec-fetch-site"];
    if (site !== undefined && site !== "same-origin" && site !== "none") return false;
    const origin = req.headers.origin;
    if (origin === undefined) return true;
    return req.headers.host !== undefined && origin === `${tls ? "https" : "http"}://${req.headers.host}`;
  }

  const cookie = (value: string, extra = "") =>
    `${SESSION_COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict${tls ? "; Secure" : ""}${extra}`;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (token === undefined && !allowedHosts.has(req.headers.host ?? "")) {
      return send(req, res, 403, "text/plain", "wrong Host\n");
    }
    const path = URL.canParse(req.url ?? "/", "http://x")
      ? new URL(req.url ?? "/", "http://x").pathname
      : undefined;
    if (path === undefined) return send(req, res, 400, "text/plain", "bad request path\n");
    if (path === "/login" && token !== undefined) {
      if (req.method === "GET" || req.method === "HEAD") {
        return send(req, res, 200, "text/html; charset=utf-8", loginPage());
      }
      if (req.method !== "POST") return send(req, res, 405, "text/plain", "GET or POST\n");
      if (!sameOrigin(req)) return send(req, res, 403, "text/plain", "cross-origin request refused\n");
      const client = clientKey(req.socket.remoteAddress);
      const throttled = () => {
        const seconds = throttle.retryAfter(client);
        if (seconds === 0) return false;
        res.setHeader("Retry-After", String(seconds));
        const note = `Too many wrong tokens from this address: try again in ${seconds} s.`;
        send(req, res, 429, "text/html; charset=utf-8", loginPage(note));
        return true;
      };
      if (throttled()) return; // before the body is read
      const form = new URLSearchParams(await readBody(req, MAX_LOGIN_BODY));
      // Again once the body is in: requests whose heads all came before the failures that shut this
      // address out would otherwise each have their token compared (N connections, N guesses). From
      // here to failed()/succeeded() nothing yields, so no other request's count slips in between.
      if (throttled()) return;
      if (!secretsEqual(form.get("token") ?? "", token)) {
        throttle.failed(client);
        return send(req, res, 401, "text/html; charset=utf-8", loginPage("That token is not right."));
      }
      throttle.succeeded(client);
      const previous = cookieOf(req, SESSION_COOKIE);
      if (previous !== undefined) sessions.end(previous);
      res.writeHead(303, {
        ...HEADERS,
        Location: "/",
        "Set-Cookie": cookie(sessions.create()),
        "Content-Length": 0,
      });
      res.end();
      return;
    }
    if (path === "/logout" && token !== undefined) {
      if (req.method !== "POST") {
        res.setHeader("Allow", "POST");
        return send(req, res, 405, "text/plain", "POST\n");
      }
      if (!sameOrigin(req)) return send(req, res, 403, "text/plain", "cross-origin request refused\n");
      req.resume(); // the form's body says nothing
      const id = cookieOf(req, SESSION_COOKIE);
      if (id !== undefined) {
        const key = sessions.check(id, false);
        sessions.end(id);
        if (key !== undefined) endStreams((k) => k === key);
      }
      res.writeHead(303, {
        ...HEADERS,
        Location: "/",
        "Set-Cookie": cookie("", "; Max-Age=0"),
        "Content-Length": 0,
      });
      res.end();
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("Allow", "GET, HEAD");
      return send(req, res, 405, "text/plain", "read-only\n");
    }
    // The style sheet holds no data; the login page uses it.
    if (path === "/app.css") return send(req, res, 200, "text/css; charset=utf-8", PAGE_STYLE);
    const who = access(req);
    if (who.kind === "throttled") {
      res.setHeader("Retry-After", String(who.seconds));
      return send(req, res, 429, "text/plain", `too many wrong tokens: try again in ${who.seconds} s\n`);
    }
    if (who.kind === "none") {
      res.setHeader("WWW-Authenticate", 'Bearer realm="hsm-onboard rack view"');
      return path === "/"
        ? send(req, res, 401, "text/html; charset=utf-8", loginPage())
        : send(req, res, 401, "text/plain", "access token needed\n");
    }
    if (path === "/")
      return send(req, res, 200, "text/html; charset=utf-8", pageHtml(who.kind === "session"));
    if (path === "/app.js") return send(req, res, 200, "text/javascript; charset=utf-8", PAGE_SCRIPT);
    if (path === "/api/inventory") {
      const now = await inventory.changeMark();
      if (listCache?.mark !== now) {
        const states = await inventory.inventory();
        listCache = { mark: now, body: Buffer.from(JSON.stringify(compactInventory(states, now))) };
      }
      return sendCached(req, res, listCache);
    }
    if (path === "/api/hsm") {
      const query = new URL(req.url ?? "/", "http://x").searchParams;
      const serial = query.get("serial");
      const owner = query.get("owner");
      if (!serial) return send(req, res, 400, "text/plain", "serial needed\n");
      const [state] = await inventory.inventory({ serial, ...(owner ? { owner } : {}) });
      if (!state) return send(req, res, 404, "text/plain", "no such HSM\n");
      return send(req, res, 200, "application/json", JSON.stringify(hsmStateJson(state)));
    }
    if (path === "/api/events") {
      res.writeHead(200, { ...HEADERS, "Content-Type": "text/event-stream", "Cache-Control": "no-store" });
      res.write(`event: hello\ndata: ${JSON.stringify(mark)}\n\n`);
      streams.set(res, who.kind === "session" ? who.key : undefined);
      req.on("close", () => streams.delete(res));
      return;
    }
    return send(req, res, 404, "text/plain", "not found\n");
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const shown = address.family === "IPv6" ? `[${address.address}]` : address.address;
  allowedHosts = new Set([`${shown}:${address.port}`, `localhost:${address.port}`]);
  return {
    url: `${tls ? "https" : "http"}://${shown}:${address.port}/`,
    async close() {
      clearInterval(timer);
      for (const s of streams.keys()) s.end();
      server.closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const HEADERS = {
  "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
  "X-Content-Type-Options": "nosniff",
  // Not "no-referrer": under it a browser sends "Origin: null" with the login and logout forms, and
  // the same-origin check could not tell them from a cross-site post. Other origins get nothing.
  "Referrer-Policy": "same-origin",
};

function cookieOf(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const [key, ...value] = part.trim().split("=");
    if (key === name) return value.join("=");
  }
  return undefined;
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      body += chunk;
      if (body.length > limit) {
        reject(new UsageError("request body too large"));
        req.destroy();
      }
    });
    req.on("end", () => resolve(body));
    req.on("error", reject);
  });
}

/** The encoding the client accepts that we use: brotli, else gzip, else none. */
function encodingFor(req: IncomingMessage): "br" | "gzip" | undefined {
  const accepted = String(req.headers["accept-encoding"] ?? "")
    .split(",")
    .map((e) => e.trim().split(";")[0]);
  if (accepted.includes("br")) return "br";
  if (accepted.includes("gzip")) return "gzip";
  return undefined;
}

async function compress(body: Buffer, encoding: "br" | "gzip"): Promise<Buffer> {
  return encoding === "br"
    ? brotli(body, {
        params: {
          [zlib.BROTLI_PARAM_QUALITY]: 5,
          [zlib.BROTLI_PARAM_MODE]: zlib.BROTLI_MODE_TEXT,
          [zlib.BROTLI_PARAM_SIZE_HINT]: body.length,
        },
      })
    : gzipAsync(body, { level: 6 });
}

/** Fixed bodies (page, script, style, login page) with their compressed forms, encoded once. */
const FIXED = new Map<string, { body: Buffer; br?: Buffer; gzip?: Buffer }>();

function send(req: IncomingMessage, res: ServerResponse, status: number, type: string, body: string): void {
  let cache = FIXED.get(body);
  if (!cache) {
    cache = { body: Buffer.from(body) };
    // A 429 page names its wait in seconds: one body per wait, not worth keeping.
    if (body.length >= COMPRESS_FROM && status !== 429 && FIXED.size < 16) FIXED.set(body, cache);
  }
  void sendCached(req, res, cache, status, type).catch(() => res.end());
}

async function sendCached(
  req: IncomingMessage,
  res: ServerResponse,
  cache: { body: Buffer; br?: Buffer; gzip?: Buffer },
  status = 200,
  type = "application/json",
): Promise<void> {
  const encoding = cache.body.length >= COMPRESS_FROM ? encodingFor(req) : undefined;
  let body = cache.body;
  if (encoding !== undefined) {
    const done = cache[encoding];
    body = done ?? (await compress(cache.body, encoding));
    cache[encoding] = body;
  }
  res.writeHead(status, {
    ...HEADERS,
    "Content-Type": type,
    "Content-Length": body.length,
    Vary: "Accept-Encoding",
    ...(encoding === undefined ? {} : { "Content-Encoding": encoding }),
  });
  res.end(req.method === "HEAD" ? undefined : body);
}
