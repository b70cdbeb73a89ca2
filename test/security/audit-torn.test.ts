/**
 * Issue 10 finding 3: a torn audit line must not brick the HSM. The real stack inside a network
 * namespace this test created: a private pcscd with vpcd, `hsm-onboard card emulate` as the card,
 * `hsm-onboard agent run --once` as the agent (child processes, dry-run applier).
 *
 * The agent is killed in the middle of an apply (HSM_ONBOARD_CRASH_AT=after-apply-before-verify), and
 * the audit log is left as a short write leaves it (disk full, power cut): the first bytes of one more
 * record, without its newline. Before the fix, every start exited 15 "audit log is damaged" and the
 * interrupted apply was never rolled back. Now:
 * - a torn tail is kept aside (audit.log.torn-…), the file is cut back to the last whole record, an
 *   `audit-tail-recovered` record says so, the interrupted apply is rolled back and the card onboards;
 *   `agent audit --verify` passes;
 * - damage that is not a torn tail (an edited record) is never "repaired": the log stays byte for
 *   byte, the interrupted apply is still rolled back (the network never depends on the log), and the
 *   agent then refuses to onboard (exit 15).
 */
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, test } from "vitest";
import { AgentStateStore, STATE_FILES } from "../../src/agent/state-store.js";
import { FileCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { ExitCode } from "../../src/errors.js";
import { type PrivatePcscd, startPrivatePcscd } from "../../src/sim/pcscd.js";
import { initAgent, LAB_PLAN, PIN } from "../agent/fixtures.js";
import { NetnsLab } from "../agent/netns.js";
import { type LiveChild, runCliChild, stopChildren } from "./children.js";
import { emulateCard, stackCapability, useChildTestBed } from "./stack.js";
import { agentOnceArgs, CardTemplate, dryRunRecord } from "./support.js";

// pcscd + vpcd and network namespaces, both needed.
const cap = stackCapability();

describe.skipIf(!cap.ok)(
  `a torn audit log never bricks the HSM (pcscd + vpcd + card emulate, CLI children)${cap.ok ? "" : ` — skipped: ${cap.reason}`}`,
  () => {
    let template: CardTemplate;
    let lab: NetnsLab | undefined;
    let pcscd: PrivatePcscd | undefined;
    const cards: LiveChild[] = [];

    const bed = useChildTestBed("hsm-security-audit-", ["cli/main.js", "agent/faults.js"]);
    beforeAll(async () => {
      template = await CardTemplate.personalise(bed.testPki.pki.tokenCa, bed.dir, "officer");
      await template.write(LAB_PLAN, { crl: bed.crl1, sequence: 1 });
    }, 180_000);
    afterEach(async () => {
      for (const card of cards.splice(0)) await card.stop();
      await stopChildren();
      await pcscd?.stop();
      pcscd = undefined;
      await lab?.cleanup();
      lab = undefined;
    });

    /** An HSM killed in the middle of applying the card's configuration; the card stays in the reader. */
    async function interruptedApply(name: string) {
      lab = new NetnsLab();
      const ns = lab.namespace("pcsc");
      pcscd = await startPrivatePcscd({ netns: ns });
      const { stateDir } = await initAgent(bed.dir, bed.testPki, { crl: bed.crl1, name });
      const cardFile = join(bed.dir, `${name}-card.json`);
      new FileCardStateStore(cardFile).save(template.cardState);
      cards.push(await emulateCard(bed.build, cardFile, pcscd, ns));
      const env = pcscd.env;
      /** `agent run --once` (dry run) in the namespace, with this pcscd and the PIN. */
      const runAgent = (extraEnv: Record<string, string> = {}) =>
        runCliChild(bed.build, agentOnceArgs(stateDir, "--timeout", "20"), {
          netns: ns,
          env: { ...env, ...extraEnv },
          stdin: `${PIN}\n`,
          timeoutMs: 40_000,
        });
      const crashed = await runAgent({ HSM_ONBOARD_CRASH_AT: "after-apply-before-verify" });
      expect(crashed.signal, crashed.stderr).toBe("SIGKILL");
      const state = (await AgentStateStore.open(stateDir)).state;
      expect(state.applying?.sequence).toBe(1);
      expect(JSON.parse((await dryRunRecord(stateDir))!).applied).toBeDefined(); // half-way: applied, unverified
      return { stateDir, runAgent };
    }

    const auditFile = (stateDir: string) => join(stateDir, STATE_FILES.audit);

    test("a torn last line: kept aside, recorded, chain continued; the interrupted apply is rolled back and the card onboards (exit 0)", async () => {
      const { stateDir, runAgent } = await interruptedApply("torn");
      const whole = await readFile(auditFile(stateDir));
      // A short write: the first 57 bytes of a record, no newline.
      const torn = Buffer.from('{"data":{"serial":"1234567","sequence":1},"event":"confi');
      await writeFile(auditFile(stateDir), Buffer.concat([whole, torn]));

      const run = await runAgent();
      expect(run.code, run.stderr).toBe(ExitCode.ok);
      expect(run.stderr).toMatch(
        /audit log ended in a torn line \(56 bytes\): kept aside in .*audit\.log\.torn-/,
      );
      expect(run.stderr).toMatch(/interrupted apply was found: the network was rolled back/);
      const state = (await AgentStateStore.open(stateDir)).state;
      expect(state.applying).toBeUndefined();
      expect(state.configured?.sequence).toBe(1);

      // The torn bytes are kept, byte for byte; the log starts with what it held before.
      const kept = (await readdir(stateDir)).filter((n) => n.startsWith("audit.log.torn-"));
      expect(kept).toHaveLength(1);
      expect(await readFile(join(stateDir, kept[0]!))).toEqual(torn);
      const now = await readFile(auditFile(stateDir));
      expect(now.subarray(0, whole.length)).toEqual(whole);

      const verify = await runCliChild(bed.build, [
        "agent",
        "audit",
        "--state-dir",
        stateDir,
        "--verify",
        "--json",
      ]);
      expect(verify.code, verify.stderr).toBe(ExitCode.ok);
      const { records, verified } = JSON.parse(verify.stdout) as {
        verified: boolean;
        records: { event: string; data: Record<string, unknown> }[];
      };
      expect(verified).toBe(true);
      const events = records.map((r) => r.event);
      const at = events.indexOf("audit-tail-recovered");
      expect(at).toBeGreaterThan(0);
      expect(records[at]!.data).toMatchObject({ keptAs: kept[0], bytes: torn.length });
      expect(events.slice(at)).toEqual(
        expect.arrayContaining(["audit-tail-recovered", "interrupted-apply-rolled-back", "configured"]),
      );
    }, 120_000);

    test("an edited record (not a torn tail): the log is left as it is, the interrupted apply is still rolled back, onboarding refused (exit 15)", async () => {
      const { stateDir, runAgent } = await interruptedApply("edited");
      const text = await readFile(auditFile(stateDir), "utf8");
      const edited = text.replace('"event":"factory-init"', '"event":"factory-inix"');
      expect(edited).not.toBe(text);
      await writeFile(auditFile(stateDir), edited);

      const run = await runAgent();
      expect(run.code, run.stderr).toBe(ExitCode.integrity);
      expect(run.stderr).toMatch(/audit log .* is damaged: line 1: content does not match its hash/);
      expect(run.stderr).toMatch(/network reconciled, onboarding refused/);
      const state = (await AgentStateStore.open(stateDir)).state;
      expect(state.applying).toBeUndefined(); // rolled back without the log
      expect(state.configured).toBeUndefined();
      expect(JSON.parse((await dryRunRecord(stateDir))!).applied).toBeUndefined();
      expect(await readFile(auditFile(stateDir), "utf8")).toBe(edited);
      expect((await readdir(stateDir)).filter((n) => n.startsWith("audit.log.torn-"))).toEqual([]);
    }, 120_000);
  },
);
