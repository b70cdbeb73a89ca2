/**
 * Issue 14: the rack view (`station serve`) over real HTTP on loopback — the page and its assets
 * from the package, the inventory as JSON, a live "changed" event when a receipt is recorded,
 * read-only, loopback only, Host checked. (Not yet driven in a browser: see the report.)
 */
import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import type { Inventory } from "../../src/station/inventory/inventory.js";
import { openInventory } from "../../src/station/inventory/open.js";
import { parseListen, type RackServer, startRackServer } from "../../src/station/serve/server.js";

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

function get(path: string, options: { method?: string; host?: string } = {}) {
  const url = new URL(path, server.url);
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>(
    (resolve, reject) => {
      const req = request(
        url,
        { method: options.method ?? "GET", headers: options.host ? { host: options.host } : {} },
        (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => {
            body += d;
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        },
      );
      req.on("error", reject);
      req.end();
    },
  );
}

describe("station serve: the rack view over HTTP", () => {
  it("serves the page and its script and style from the package, under a same-origin CSP", async () => {
    const page = await get("/");
    expect(page.status).toBe(200);
    expect(page.body).toContain('<script src="/app.js"></script>');
    expect(page.body).not.toMatch(/https?:\/\//); // no CDN
    expect(page.headers["content-security-policy"]).toBe("default-src 'self'; frame-ancestors 'none'");
    expect((await get("/app.js")).body).toContain('new EventSource("/api/events")');
    expect((await get("/app.css")).status).toBe(200);
    expect((await get("/nothing")).status).toBe(404);
  });

  it("gives the inventory as JSON: 40 planned HSMs", async () => {
    const res = await get("/api/inventory");
    const data = JSON.parse(res.body) as { hsms: { serial: string; state: string }[] };
    expect(data.hsms).toHaveLength(40);
    expect(new Set(data.hsms.map((h) => h.state))).toEqual(new Set(["planned"]));
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
    const data = JSON.parse((await get("/api/inventory")).body) as {
      hsms: { serial: string; state: string }[];
    };
    expect(data.hsms.find((h) => h.serial === "1000")?.state).toBe("onboarded ✓");
  });

  it("is read-only, checks the Host header, and listens on loopback only", async () => {
    expect((await get("/api/inventory", { method: "POST" })).status).toBe(405);
    expect((await get("/", { host: "evil.example:80" })).status).toBe(403);
    await expect(startRackServer({ inventory, host: "0.0.0.0", port: 0 })).rejects.toBeInstanceOf(UsageError);
    expect(parseListen("[::1]:8080")).toEqual({ host: "::1", port: 8080 });
    expect(() => parseListen("8080")).toThrow(UsageError);
  });
});
