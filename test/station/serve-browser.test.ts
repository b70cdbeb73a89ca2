/**
 * Issue 14: the rack view in a real browser — Debian's chromium, headless, driven by playwright-core
 * — on a 40-HSM room in every state: tiles coloured by state (dry runs drawn unlike configured
 * ones), filters, the per-HSM detail with the verified receipt, the live update while a receipt
 * arrives, and the login form and logout of a view that needs a token. One browser for the file. Screenshots
 * docs/rack-view-40.png and docs/rack-view-detail.png (written when HSM_ONBOARD_SCREENSHOT=1).
 */
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Browser, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Inventory } from "../../src/station/inventory/inventory.js";
import { openInventory } from "../../src/station/inventory/open.js";
import { type RackServer, startRackServer } from "../../src/station/serve/server.js";
import { requireOrSkipReason } from "../helpers/pcsc-env.js";

const CHROMIUM = "/usr/bin/chromium";
const missing = requireOrSkipReason(
  existsSync(CHROMIUM) ? undefined : "needs Debian's chromium (/usr/bin/chromium)",
);

describe.skipIf(missing !== undefined)(
  `the rack view in chromium${missing ? ` — skipped: ${missing}` : ""}`,
  () => {
    let scratch: string;
    let inventory: Inventory;
    let server: RackServer;
    let browser: Browser;
    const digest = "ef".repeat(32);
    const digestOf = (i: number) => (i + 16).toString(16).padStart(2, "0").repeat(32);

    beforeAll(async () => {
      scratch = await mkdtemp(join(tmpdir(), "hsm-serve-browser-"));
      inventory = await openInventory({ stationDir: scratch });
      const serials = Array.from({ length: 40 }, (_, i) => `${1234567 + i}`);
      await inventory.recordPlan({
        digest,
        owner: "ACME Bank",
        hsms: serials.map((serial, i) => ({
          serial,
          hostname: `hsm-fra1-${String.fromCharCode(97 + Math.floor(i / 10))}${String((i % 10) + 1).padStart(2, "0")}`,
          addresses: [`eth0 198.51.100.${11 + i}`],
          stateDigest: digestOf(i),
        })),
      });
      await inventory.recordWrite({
        configurationId: "ab".repeat(16),
        owner: "ACME Bank",
        sequence: 1,
        planDigest: digest,
        cardSerial: "22398303",
        officer: "Alice",
        writtenAt: new Date(),
        hsms: 40,
      });
      // 30 onboarded, 3 failed, 2 not verified, 2 dry runs; 3 still only on the card.
      await inventory.recordReceipts(
        serials.slice(0, 37).map((serial, i) => ({
          serial,
          sequence: 1,
          outcome: i >= 30 && i < 33 ? 21 : 0,
          outcomeName: i >= 30 && i < 33 ? "address-conflict" : "configured",
          verified: !(i >= 33 && i < 35),
          authentic: !(i >= 33 && i < 35),
          ...(i >= 33 && i < 35 ? { reason: "not authentic: bad signature" } : {}),
          dryRun: i >= 35,
          addresses: i < 30 ? [`eth0 198.51.100.${11 + i}/24`] : [],
          // HSM 1234568 reported a state other than its plan entry's.
          networkDigest: i === 1 ? "99".repeat(32) : digestOf(i),
          channel: i % 2 === 0 ? "SCP11b" : "plaintext",
          scp: i % 2 === 0,
          ...(i >= 33 && i < 35
            ? {}
            : { deviceSubject: `CN=HSM ${serial}, serialNumber=${serial}, O=Example HSM Maker` }),
          verifiedBy:
            'station bench:/srv/station: COSE signature with the device certificate\'s key, device chain via "CN=Example Device CA" to trust anchor "CN=Example Root"',
          configurationId: "ab".repeat(16),
          cardSerial: "22398303",
          time: new Date(Date.now() - 60_000),
          collectedAt: new Date(),
        })),
      );
      server = await startRackServer({ inventory, host: "127.0.0.1", port: 0 });
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
      });
    }, 60_000);
    afterAll(async () => {
      await browser?.close();
      await server?.close();
      await inventory?.close();
      await rm(scratch, { recursive: true, force: true });
    });

    it("draws 40 tiles coloured by state, filters them, shows a detail, and updates live", async () => {
      const page = await browser.newPage({ viewport: { width: 1100, height: 560 } });
      const failures: string[] = [];
      page.on("pageerror", (e) => failures.push(e.message));
      page.on("requestfailed", (r) => failures.push(r.url()));
      await page.goto(server.url);
      await page.waitForSelector("body[data-loaded='40']");
      const count = (selector: string) => page.locator(selector).count();
      expect(await count(".tile")).toBe(40);
      expect(await count(".tile.onboarded")).toBe(30);
      expect(await count(".tile.failed")).toBe(3);
      expect(await count(".tile.receipt-bad")).toBe(2);
      expect(await count(".tile.dry-run")).toBe(2);
      expect(await count(".tile.on-card")).toBe(3);
      expect(await page.locator("#summary").textContent()).toMatch(/^40 HSMs: /);
      await page.waitForSelector("#live.on");
      if (process.env.HSM_ONBOARD_SCREENSHOT === "1") {
        await page.screenshot({ path: join(import.meta.dirname, "../../docs/rack-view-40.png") });
      }

      // Dry runs are drawn unlike configured HSMs (hatched amber, dashed border), not only named so.
      const look = (serial: string) =>
        page.locator(`.tile[data-serial='${serial}']`).evaluate((e) => {
          type Style = { backgroundImage: string; backgroundColor: string; borderStyle: string };
          const c = (globalThis as unknown as { getComputedStyle(e: unknown): Style }).getComputedStyle(e);
          return `${c.backgroundImage}|${c.backgroundColor}|${c.borderStyle}`;
        });
      const dry = await look("1234602");
      expect(dry).toMatch(/repeating-linear-gradient/);
      expect(dry).toMatch(/dashed/);
      expect(await look("1234567")).not.toBe(dry);

      await page.selectOption("#state", "failed ✗");
      expect(await count(".tile")).toBe(3);
      await page.selectOption("#owner", "ACME Bank");
      expect(await count(".tile")).toBe(3);
      await page.locator(".tile").first().click();
      await page.waitForSelector("body[data-detail='1234597']");
      expect(await page.locator("#detail-body").textContent()).toContain("address-conflict (exit 21)");
      await page.selectOption("#state", "");
      await page.fill("#find", "hsm-fra1-d10");
      expect(await count(".tile")).toBe(1);
      await page.fill("#find", "");

      // The detail of an onboarded HSM: the whole verified receipt, field by field.
      await page.locator(".tile[data-serial='1234567']").click();
      await page.waitForSelector("body[data-detail='1234567']");
      const detail = async () => {
        const names = await page.locator("#detail-body dt:not(.section)").allTextContents();
        const values = await page.locator("#detail-body dd").allTextContents();
        return Object.fromEntries(names.map((n, i) => [n, values[i]]));
      };
      const one = await detail();
      expect(one).toMatchObject({
        Verified: "✓ verified",
        "Signature verified by": expect.stringMatching(/^station .*trust anchor "CN=Example Root"$/),
        "Device certificate": "CN=HSM 1234567, serialNumber=1234567, O=Example HSM Maker",
        "Addresses applied": "eth0 198.51.100.11/24",
        "Planned addresses": "eth0 198.51.100.11",
        "Plan state digest": digestOf(0),
        "Network digest": digestOf(0),
        "vs plan digest": "✓ matches the plan state digest",
        Applied: "applied",
        Channel: "SCP11b",
        Sequence: "1",
        Card: "22398303",
        Officer: "Alice",
      });
      expect(Date.parse(one["HSM wrote it"] ?? "")).toBeLessThan(Date.parse(one.Collected ?? ""));
      if (process.env.HSM_ONBOARD_SCREENSHOT === "1") {
        await page.setViewportSize({ width: 1100, height: 900 }); // the whole receipt in view
        await page.screenshot({ path: join(import.meta.dirname, "../../docs/rack-view-detail.png") });
        await page.setViewportSize({ width: 1100, height: 560 });
      }
      // Another: a state that differs from the plan, over plaintext.
      await page.locator(".tile[data-serial='1234568']").click();
      await page.waitForSelector("body[data-detail='1234568']");
      expect(await detail()).toMatchObject({
        "vs plan digest": "✗ differs from the plan state digest",
        Channel: "plaintext",
      });
      // A dry run: nothing applied.
      await page.locator(".tile[data-serial='1234602']").click();
      await page.waitForSelector("body[data-detail='1234602']");
      expect((await detail()).Applied).toBe("dry run — nothing applied");
      await page.click("#close");

      // A receipt arrives for one of the HSMs still on the card: its tile turns green without a reload.
      await inventory.recordReceipts([
        {
          serial: "1234606",
          sequence: 1,
          outcome: 0,
          outcomeName: "configured",
          verified: true,
          authentic: true,
          addresses: ["eth0 198.51.100.50/24"],
          collectedAt: new Date(),
        },
      ]);
      await page.waitForSelector(".tile.onboarded[data-serial='1234606']", { timeout: 10_000 });
      expect(await count(".tile.on-card")).toBe(2);
      expect(failures).toEqual([]);
      await page.close();
    }, 60_000);

    it("a view with a token asks for it once (login form), keeps a session cookie, and logs out", async () => {
      const token = "rack-view-token-for-the-browser-test";
      let now = Date.now();
      const clock = () => now;
      const guarded = await startRackServer({ inventory, host: "127.0.0.1", port: 0, token, clock });
      const context = await browser.newContext();
      try {
        const page = await context.newPage();
        const first = await page.goto(guarded.url);
        expect(first?.status()).toBe(401);
        await page.fill("input[name=token]", "not-the-token-not-the-token");
        await page.click("button[type=submit]");
        await page.waitForSelector("#wrong");
        expect(await page.locator(".tile").count()).toBe(0);
        await page.fill("input[name=token]", token);
        await page.click("button[type=submit]");
        await page.waitForSelector("body[data-loaded='40']");
        expect(await page.locator(".tile").count()).toBe(40);
        await page.waitForSelector("#live.on"); // the event stream passes with the cookie too
        const cookies = await context.cookies();
        expect(cookies.map((c) => [c.name, c.httpOnly, c.sameSite])).toEqual([
          ["hsm_onboard_session", true, "Strict"],
        ]);
        expect(cookies[0]?.value).not.toContain(token);

        // Log out: back at the token page, the cookie gone, and the old one refused if sent again.
        await page.click("#logout button");
        await page.waitForSelector("form#login");
        expect(page.url()).toBe(guarded.url);
        expect(await context.cookies()).toEqual([]);
        await context.addCookies(cookies);
        const after = await page.goto(guarded.url);
        expect(after?.status()).toBe(401);
        expect(await page.locator("input[name=token]").count()).toBe(1);

        // A session that idles out: the open page goes back to the token form by itself.
        await page.fill("input[name=token]", token);
        await page.click("button[type=submit]");
        await page.waitForSelector("#live.on");
        now += 31 * 60_000;
        await page.waitForSelector("form#login", { timeout: 10_000 });
      } finally {
        await context.close();
        await guarded.close();
      }
    }, 60_000);
  },
);
