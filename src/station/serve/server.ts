/**
 * `station serve` (issue 14): a read-only rack view of the inventory over HTTP on loopback. One page
 * (page.ts: HTML, CSS and a small script, all served from here — no CDN, no framework), the
 * inventory as JSON, and a server-sent event stream that says "changed" when the inventory did (it
 * is polled once a second), so the page refreshes while receipts arrive.
 *
 * Only GET and HEAD. Listening beyond loopback would need TLS and a token; neither exists yet, so a
 * non-loopback address is refused (UsageError). The Host header must name the address listened on
 * (a page on another site cannot reach the view through DNS rebinding). The page's Content Security
 * Policy allows only this origin.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { UsageError } from "../../errors.js";
import type { Inventory } from "../inventory/inventory.js";
import { hsmStateJson } from "../inventory/state.js";
import { PAGE_HTML, PAGE_SCRIPT, PAGE_STYLE } from "./page.js";

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);
const POLL_MS = 1000;

export interface RackServerOptions {
  readonly inventory: Inventory;
  readonly host?: string;
  readonly port?: number;
}

export interface RackServer {
  readonly url: string;
  close(): Promise<void>;
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

export async function startRackServer(options: RackServerOptions): Promise<RackServer> {
  const host = options.host ?? "127.0.0.1";
  if (!LOOPBACK.has(host)) {
    throw new UsageError(
      `station serve listens on loopback only (127.0.0.1, ::1): listening on ${host} would need TLS and a token, which the rack view does not have yet`,
    );
  }
  const { inventory } = options;
  const streams = new Set<ServerResponse>();
  let mark = await inventory.changeMark();
  let polling = false;
  const timer = setInterval(() => {
    if (polling || streams.size === 0) return;
    polling = true;
    inventory
      .changeMark()
      .then((now) => {
        if (now === mark) return;
        mark = now;
        for (const s of streams) s.write(`event: changed\ndata: ${JSON.stringify(now)}\n\n`);
      })
      .catch(() => undefined)
      .finally(() => {
        polling = false;
      });
  }, POLL_MS);

  let allowedHosts: Set<string> = new Set();
  const server: Server = createServer((req, res) => {
    void handle(req, res).catch(() => {
      if (!res.headersSent) send(res, 500, "text/plain", "internal error\n");
      else res.end();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!allowedHosts.has(req.headers.host ?? "")) return send(res, 403, "text/plain", "wrong Host\n");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("Allow", "GET, HEAD");
      return send(res, 405, "text/plain", "read-only\n");
    }
    const path = new URL(req.url ?? "/", "http://x").pathname;
    if (path === "/") return send(res, 200, "text/html; charset=utf-8", PAGE_HTML);
    if (path === "/app.js") return send(res, 200, "text/javascript; charset=utf-8", PAGE_SCRIPT);
    if (path === "/app.css") return send(res, 200, "text/css; charset=utf-8", PAGE_STYLE);
    if (path === "/api/inventory") {
      const states = await inventory.inventory();
      return send(res, 200, "application/json", JSON.stringify({ mark, hsms: states.map(hsmStateJson) }));
    }
    if (path === "/api/events") {
      res.writeHead(200, { ...HEADERS, "Content-Type": "text/event-stream", "Cache-Control": "no-store" });
      res.write(`event: hello\ndata: ${JSON.stringify(mark)}\n\n`);
      streams.add(res);
      req.on("close", () => streams.delete(res));
      return;
    }
    return send(res, 404, "text/plain", "not found\n");
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const shown = address.family === "IPv6" ? `[${address.address}]` : address.address;
  allowedHosts = new Set([`${shown}:${address.port}`, `localhost:${address.port}`]);
  return {
    url: `http://${shown}:${address.port}/`,
    async close() {
      clearInterval(timer);
      for (const s of streams) s.end();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const HEADERS = {
  "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
};

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { ...HEADERS, "Content-Type": type, "Content-Length": Buffer.byteLength(body) });
  res.end(res.req.method === "HEAD" ? undefined : body);
}
