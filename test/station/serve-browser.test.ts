/**
 * Issue 14: the rack view in a real browser — Debian's chromium, headless, driven by playwright-core
 * — on a 40-HSM room in every state; the live update while a receipt arrives; the screenshot
 * docs/rack-view-40.png (written when HSM_ONBOARD_SCREENSHOT=1).
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

      await page.selectOption("#state", "failed ✗");
      expect(await count(".tile")).toBe(3);
      await page.locator(".tile").first().click();
      expect(await page.locator("#detail-body").textContent()).toContain("address-conflict");
      await page.selectOption("#state", "");
      await page.fill("#find", "hsm-fra1-d10");
      expect(await count(".tile")).toBe(1);
      await page.fill("#find", "");

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
  },
);
