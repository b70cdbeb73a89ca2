/**
 * Issue 10 finding 5: one oversized or unreadable receipt object stopped the agent writing any
 * receipt and hid every receipt at the station. Over the real stack (pcscd + vpcd + `card emulate`,
 * CLI children in a network namespace): the station writes a configuration; receipt-0 gets a 40 KB
 * object no reader accepts. The agent configures the HSM and writes its receipt to receipt-1; the
 * station lists receipt-0 as unreadable and receipt-1's receipt as verified.
 */
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, test } from "vitest";
import { FileCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { planToYaml } from "../../src/config/plan.js";
import { ExitCode } from "../../src/errors.js";
import { initAgent, LAB_PLAN, PIN } from "../agent/fixtures.js";
import { put, Stack, stackCapability, useChildTestBed } from "./stack.js";
import { agentOnceArgs, CardTemplate } from "./support.js";

const cap = stackCapability();

describe.skipIf(!cap.ok)(
  `one bad receipt object never stops or hides the others (real stack)${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let template: CardTemplate;
    let stack: Stack | undefined;

    const bed = useChildTestBed("hsm-security-receipts-", ["cli/main.js"]);
    beforeAll(async () => {
      template = await CardTemplate.personalise(bed.testPki.pki.tokenCa, bed.dir, "officer");
    }, 180_000);
    afterEach(async () => {
      await stack?.close();
      stack = undefined;
    });

    test("a 40 KB receipt-0: the agent writes its receipt to receipt-1 (exit 0); the station shows it verified beside the unreadable object", async () => {
      stack = await Stack.start(bed.build);
      const { stateDir } = await initAgent(bed.dir, bed.testPki, { crl: bed.crl1, name: "receipts" });
      const stationDir = join(bed.dir, "station");
      const root = await put(join(bed.dir, "root.pem"), bed.testPki.rootPem);
      const init = await stack.cli([
        "station",
        "init",
        "--trust",
        root,
        "--crl",
        await put(join(bed.dir, "token-ca.crl"), bed.crl1),
        "--issuer",
        join(bed.testPki.dir, "token-ca.pem"),
        "--station-dir",
        stationDir,
      ]);
      expect(init.code, init.stderr).toBe(ExitCode.ok);

      // The station writes the configuration; then receipt-0 gets an object no reader accepts.
      const cardFile = join(bed.dir, "card.json");
      await stack.insert(cardFile, template.cardState);
      const plan = await put(join(bed.dir, "lab.yaml"), planToYaml(LAB_PLAN));
      const write = await stack.cli(
        ["station", "write", "--allow-plaintext", "--plan", plan, "--station-dir", stationDir, "--pin-stdin"],
        {
          stdin: `${PIN}\n`,
        },
      );
      expect(write.code, write.stderr).toBe(ExitCode.ok);
      await stack.remove();
      const state = new FileCardStateStore(cardFile).load()!;
      state.objects["5FFF80"] = randomBytes(40_000).toString("base64"); // receipt-0
      await stack.insert(cardFile, state);

      const agent = await stack.cli(agentOnceArgs(stateDir, "--json", "--timeout", "20"), {
        stdin: `${PIN}\n`,
      });
      expect(agent.code, agent.stderr).toBe(ExitCode.ok);
      expect(JSON.parse(agent.stdout).receipt).toEqual({ written: true, item: "receipt-1" });

      const receipts = await stack.cli([
        "station",
        "receipts",
        "--allow-plaintext",
        "--station-dir",
        stationDir,
        "--json",
      ]);
      const report = JSON.parse(receipts.stdout) as {
        configurationProblem?: string;
        receipts: { location: string; verified: boolean; serial?: string; reason?: string }[];
      };
      expect(report.configurationProblem ?? null, receipts.stderr).toBeNull();
      expect(report.receipts, receipts.stderr).toEqual([
        expect.objectContaining({
          location: "receipt-0",
          verified: false,
          reason: expect.stringMatching(/cannot be read/),
        }),
        expect.objectContaining({ location: "receipt-1[0]", verified: true, serial: "1234567" }),
      ]);
      // An unreadable object is not an authentic receipt: the command says so with 15.
      expect(receipts.code).toBe(ExitCode.integrity);
    }, 120_000);
  },
);
