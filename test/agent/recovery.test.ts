/**
 * State persistence and recovery: every stage is on disk before the next step runs; an agent that
 * dies in the middle of `applying` leaves the snapshot on disk, and the next start rolls the network
 * back to it (the documented choice, state-store.ts) — with the dry-run applier and, as root, with
 * iproute2 in a network namespace.
 *
 * The "crash": the applier stops right after applying (it never returns), the state directory is
 * copied as it is at that moment — what a power cut would leave — and a new agent is started on the
 * copy.
 */
import { cp, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import { Agent } from "../../src/agent/agent.js";
import { readAuditLog } from "../../src/agent/audit-log.js";
import { DryRunBackend } from "../../src/agent/net/dry-run.js";
import { Iproute2Backend } from "../../src/agent/net/iproute2.js";
import type { HostNetworkConfig, NetBackend, NetSnapshot } from "../../src/agent/net/net-backend.js";
import type { OnboardingResult } from "../../src/agent/onboarding.js";
import { AgentStateStore, STATE_FILES } from "../../src/agent/state-store.js";
import { IntegrityError, UsageError } from "../../src/errors.js";
import { requireOrSkip } from "../helpers/pcsc-env.js";
import {
  initAgent,
  LAB_PLAN,
  openElement,
  PIN,
  personalizeCard,
  pins,
  startAgent,
  tempDir,
  useTestPki,
  writeConfig,
} from "./fixtures.js";
import { addrJson, ip, NetnsLab, netnsCapability, routesJson, settled } from "./netns.js";

const bed = useTestPki();

/** An applier that applies, then "loses power": apply never returns until released, and nothing after counts. */
class PowerCut implements NetBackend {
  readonly name: NetBackend["name"];
  readonly reached: Promise<void>;
  #reached!: () => void;
  #release!: (error: Error) => void;
  #dead = false;

  constructor(private readonly inner: NetBackend) {
    this.name = inner.name;
    this.reached = new Promise((resolve) => {
      this.#reached = resolve;
    });
  }
  snapshot(config: HostNetworkConfig): Promise<NetSnapshot> {
    return this.inner.snapshot(config);
  }
  async apply(config: HostNetworkConfig): Promise<void> {
    await this.inner.apply(config);
    this.#dead = true;
    this.#reached();
    await new Promise<void>((_, reject) => {
      this.#release = reject;
    });
  }
  verify(config: HostNetworkConfig): Promise<void> {
    return this.inner.verify(config);
  }
  async rollback(snapshot: NetSnapshot): Promise<void> {
    if (!this.#dead) await this.inner.rollback(snapshot);
  }
  probeConflicts(config: HostNetworkConfig): Promise<void> {
    return this.inner.probeConflicts(config);
  }
  /** Lets the stuck flow end (its effects land in the original directory, not the copy). */
  release(): void {
    this.#release?.(new Error("power cut"));
  }
}

/** Starts onboarding with a power cut in apply; returns the copy of the state directory at that moment. */
async function crashDuringApply(
  stateDir: string,
  inner: NetBackend,
  crashedDir: string,
): Promise<{ card: Awaited<ReturnType<typeof personalizeCard>>["card"] }> {
  const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
  await writeConfig(card, LAB_PLAN, { sequence: 3, crl: bed.crl1 });
  const cut = new PowerCut(inner);
  const agent = await startAgent(stateDir, cut);
  const element = await openElement(card);
  const running: Promise<OnboardingResult> = agent.onboard(element, pins(PIN));
  try {
    await Promise.race([
      cut.reached,
      running.then((r) => {
        throw new Error(`onboarding ended before the power cut: ${JSON.stringify(r.error)}`);
      }),
    ]);
    await cp(stateDir, crashedDir, { recursive: true });
  } finally {
    cut.release();
    await running;
    await element.close();
    await agent.close();
  }
  return { card };
}

describe("state persistence", () => {
  let dir: { dir: string; cleanup: () => Promise<void> };
  afterEach(async () => {
    await dir.cleanup();
  });

  test("each stage is on disk before the next step runs", async () => {
    dir = await tempDir();
    const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 });
    const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
    await writeConfig(card, LAB_PLAN, { sequence: 1, crl: bed.crl1 });
    const onDisk = async () => JSON.parse(await readFile(join(stateDir, STATE_FILES.state), "utf8"));
    const seen: string[] = [];
    const inner = await DryRunBackend.open({});
    const observing: NetBackend = {
      name: inner.name,
      snapshot: async (c) => {
        seen.push(`snapshot: ${(await onDisk()).stage}`);
        return inner.snapshot(c);
      },
      apply: async (c) => {
        const state = await onDisk();
        seen.push(`apply: ${state.stage}, snapshot saved ${state.applying?.snapshot !== undefined}`);
        return inner.apply(c);
      },
      verify: (c) => inner.verify(c),
      rollback: (s) => inner.rollback(s),
      probeConflicts: (c) => inner.probeConflicts(c),
    };
    const agent = await startAgent(stateDir, observing);
    const element = await openElement(card);
    const pinSource = {
      read: async () => {
        seen.push(`PIN asked: ${(await onDisk()).stage}`);
        return PIN;
      },
    };
    try {
      expect((await agent.onboard(element, pinSource)).exitCode).toBe(0);
    } finally {
      await element.close();
      await agent.close();
    }
    seen.push(`done: ${(await onDisk()).stage}`);
    expect(seen).toEqual([
      "PIN asked: card-authenticated",
      "snapshot: config-verified",
      "apply: applying, snapshot saved true",
      "done: configured",
    ]);
    // Atomic writes leave no temporary files behind.
    expect((await readdir(stateDir)).filter((n) => n.endsWith(".tmp"))).toEqual([]);
  });

  test("applied but `configured` cannot be recorded: the network is rolled back too", async () => {
    dir = await tempDir();
    const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 });
    const { card } = await personalizeCard(bed.testPki.pki.tokenCa);
    await writeConfig(card, LAB_PLAN, { sequence: 1, crl: bed.crl1 });
    const inner = await DryRunBackend.open({});
    const { mkdir, rm } = await import("node:fs/promises");
    const breaking: NetBackend = {
      name: inner.name,
      snapshot: (c) => inner.snapshot(c),
      apply: (c) => inner.apply(c),
      // Once the apply verified, the state file can no longer be replaced (a directory in its place).
      verify: async (c) => {
        await inner.verify(c);
        await rm(join(stateDir, STATE_FILES.state));
        await mkdir(join(stateDir, STATE_FILES.state, "blocker"), { recursive: true });
      },
      rollback: (s) => inner.rollback(s),
      probeConflicts: (c) => inner.probeConflicts(c),
    };
    const log: string[] = [];
    const agent = await startAgent(stateDir, breaking, log);
    const element = await openElement(card);
    try {
      const result = await agent.onboard(element, pins(PIN));
      expect(result.ok).toBe(false);
      expect(result.exitCode).toBe(1);
    } finally {
      await element.close();
      await agent.close();
    }
    expect(inner.record.applied).toBeUndefined();
    expect(inner.record.operations.map((o) => o.op)).toEqual(["apply", "rollback"]);
    expect(log.join("\n")).toMatch(/could not record the failure/);
  });

  test("a state file that is not there, not JSON, or not a state is a clear usage error", async () => {
    dir = await tempDir();
    await expect(AgentStateStore.open(join(dir.dir, "none"))).rejects.toThrow(/agent factory-init/);
    const { stateDir } = await initAgent(dir.dir, bed.testPki);
    const file = join(stateDir, STATE_FILES.state);
    const { writeFile } = await import("node:fs/promises");
    await writeFile(file, "{ not json");
    await expect(AgentStateStore.open(stateDir)).rejects.toBeInstanceOf(UsageError);
    await writeFile(
      file,
      JSON.stringify({ format: "hsm-onboard/agent-state", version: 1, stage: "nowhere" }),
    );
    await expect(AgentStateStore.open(stateDir)).rejects.toThrow(/not a valid agent state/);
  });

  test("one agent per state directory: a second is refused while the first runs", async () => {
    dir = await tempDir();
    const { stateDir } = await initAgent(dir.dir, bed.testPki);
    const first = await Agent.open({ stateDir, net: await DryRunBackend.open({}) });
    try {
      const { writeFile } = await import("node:fs/promises");
      // The lock names a live process other than this one (PID 1 always runs).
      await writeFile(join(stateDir, STATE_FILES.lock), "1\n");
      await expect(Agent.open({ stateDir, net: await DryRunBackend.open({}) })).rejects.toThrow(
        /another agent/,
      );
    } finally {
      await first.close();
    }
  });
});

describe("an apply interrupted by a crash is rolled back at the next start (dry-run)", () => {
  let dir: { dir: string; cleanup: () => Promise<void> };
  afterEach(async () => {
    await dir.cleanup();
  });

  test("rolled back, recorded, and the same card then onboards", async () => {
    dir = await tempDir();
    const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 });
    const crashed = join(dir.dir, "crashed-state");
    const inner = await DryRunBackend.open({ file: join(stateDir, STATE_FILES.dryRun) });
    const { card } = await crashDuringApply(stateDir, inner, crashed);

    const left = JSON.parse(await readFile(join(crashed, STATE_FILES.state), "utf8"));
    expect(left.stage).toBe("applying");
    expect(left.applying.snapshot.links[0]).toMatchObject({ device: "eth0", addresses: [] });
    expect(JSON.parse(await readFile(join(crashed, STATE_FILES.dryRun), "utf8")).applied).toBeDefined();

    const agent = await Agent.open({ stateDir: crashed, net: "dry-run" });
    try {
      expect(await agent.start()).toMatchObject({ stage: "waiting-for-card", reconciled: "rolled-back" });
    } finally {
      await agent.close();
    }
    const record = JSON.parse(await readFile(join(crashed, STATE_FILES.dryRun), "utf8"));
    expect(record.applied).toBeUndefined();
    expect(record.operations.at(-1).op).toBe("rollback");
    expect(record.state.links.find((l: { device: string }) => l.device === "eth0").addresses).toEqual([]);
    const { state } = await AgentStateStore.open(crashed);
    expect(state).toMatchObject({ stage: "waiting-for-card", lastError: { code: "ERR_INTERRUPTED_APPLY" } });
    expect(state.applying).toBeUndefined();
    expect(state.configured).toBeUndefined();
    const audit = await readAuditLog(join(crashed, STATE_FILES.audit), { expectedHead: state.auditHead! });
    expect(audit.ok).toBe(true);
    expect(audit.records.map((r) => r.event)).toContain("interrupted-apply-rolled-back");

    // The sequence number was not consumed: the same card configures the HSM now.
    const again = await Agent.open({ stateDir: crashed, net: "dry-run" });
    const element = await openElement(card);
    try {
      await again.start();
      expect(await again.onboard(element, pins(PIN))).toMatchObject({ ok: true, sequence: 3 });
    } finally {
      await element.close();
      await again.close();
    }
  });

  test("the rollback fails and the audit log is damaged: start refuses (15), `applying` stays for the next start", async () => {
    dir = await tempDir();
    const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 });
    const crashed = join(dir.dir, "crashed-state");
    const inner = await DryRunBackend.open({ file: join(stateDir, STATE_FILES.dryRun) });
    await crashDuringApply(stateDir, inner, crashed);
    const auditFile = join(crashed, STATE_FILES.audit);
    const text = await readFile(auditFile, "utf8");
    await writeFile(auditFile, text.replace('"event":"factory-init"', '"event":"factory-inix"'));
    const failing: NetBackend = {
      name: "dry-run",
      snapshot: (config) => inner.snapshot(config),
      apply: (config) => inner.apply(config),
      verify: (config) => inner.verify(config),
      rollback: async () => {
        throw new Error("the applier cannot roll back");
      },
      probeConflicts: (config) => inner.probeConflicts(config),
    };
    const agent = await Agent.open({ stateDir: crashed, net: failing });
    try {
      await expect(agent.start()).rejects.toThrow(IntegrityError);
    } finally {
      await agent.close();
    }
    const { state } = await AgentStateStore.open(crashed);
    expect(state.stage).toBe("applying");
    expect(state.applying).toBeDefined();
    expect(await readFile(auditFile, "utf8")).toContain('"event":"factory-inix"');
  });

  test("the interrupted apply is rolled back only with the applier that made it", async () => {
    dir = await tempDir();
    const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 });
    const crashed = join(dir.dir, "crashed-state");
    await crashDuringApply(
      stateDir,
      await DryRunBackend.open({ file: join(stateDir, STATE_FILES.dryRun) }),
      crashed,
    );
    const agent = await Agent.open({
      stateDir: crashed,
      net: new Iproute2Backend({ netns: "hot-never-used" }),
    });
    try {
      await expect(agent.start()).rejects.toThrow(/--net dry-run/);
    } finally {
      await agent.close();
    }
  });
});

const netns = requireOrSkip(netnsCapability());
describe.skipIf(!netns.ok)(
  "an apply interrupted by a crash is rolled back at the next start (iproute2)",
  () => {
    let lab: NetnsLab;
    let dir: { dir: string; cleanup: () => Promise<void> };
    afterEach(async () => {
      await lab.cleanup();
      await dir.cleanup();
    });

    test("the namespace's network is exactly as before the apply, and re-applying at boot is idempotent", async () => {
      dir = await tempDir();
      lab = new NetnsLab();
      const hsm = lab.namespace("hsm");
      const peer = lab.namespace("peer");
      lab.link(hsm, "eth0", peer, "lan0");
      ip(["-n", peer, "link", "set", "lan0", "up"]);
      const network = () => ({
        addr: (addrJson(hsm) as Record<string, unknown>[]).map(({ qdisc: _kernel, ...l }) => l),
        routes: routesJson(hsm),
      });
      const before = network();
      const { stateDir } = await initAgent(dir.dir, bed.testPki, { crl: bed.crl1 });
      const crashed = join(dir.dir, "crashed-state");
      const net = () => new Iproute2Backend({ netns: hsm, probeWindowMs: 300 });
      const { card } = await crashDuringApply(stateDir, net(), crashed);
      expect(JSON.stringify(addrJson(hsm))).toContain("198.51.100.11");

      const agent = await Agent.open({ stateDir: crashed, net: net() });
      try {
        expect(await agent.start()).toMatchObject({ reconciled: "rolled-back" });
      } finally {
        await agent.close();
      }
      expect(network()).toEqual(before);

      // Onboard for real, then a restart re-applies: nothing changes.
      const again = await Agent.open({ stateDir: crashed, net: net() });
      const element = await openElement(card);
      try {
        await again.start();
        expect((await again.onboard(element, pins(PIN))).exitCode).toBe(0);
      } finally {
        await element.close();
        await again.close();
      }
      await settled(hsm);
      const configured = network();
      const boot = await Agent.open({ stateDir: crashed, net: net() });
      try {
        expect(await boot.start()).toMatchObject({ stage: "configured", reapplied: true });
      } finally {
        await boot.close();
      }
      expect(network()).toEqual(configured);
    });
  },
);
