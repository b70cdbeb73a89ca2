/**
 * The dry-run applier: changes nothing on the host. It keeps a simulated network state, computes
 * the very `ip` commands the iproute2 applier would run from it (net-backend.ts plans both), records
 * them, and — when given a file — writes its record as JSON after every change, so the demo (no
 * root) and the tests can see what an HSM would have done, and a later `agent run` continues from
 * the same simulated state (an idempotent re-apply records no commands).
 *
 * Physical devices it has not seen are taken as present, down, MTU 1500 and unconfigured.
 * `occupied` simulates other hosts on the link: a planned IPv4 or IPv6 address listed there makes
 * apply fail with AddressConflictError, as the live probe would.
 */
import { readFile } from "node:fs/promises";
import { AddressConflictError, NetworkApplyError, UsageError } from "../../errors.js";
import { atomicWriteFile } from "../../util/fs.js";
import * as z from "../../util/schema.js";
import {
  absentPhysical,
  addressSteps,
  compareState,
  desiredState,
  type HostNetworkConfig,
  hostNetworkConfigSchema,
  type IpCommand,
  linkSteps,
  type NetBackend,
  type NetSnapshot,
  netSnapshotSchema,
  physicalDevices,
  routeSteps,
} from "./net-backend.js";

export const DRY_RUN_FORMAT = "hsm-onboard/dry-run-network";

const operationSchema = z.object({
  op: z.enum(["apply", "rollback"]),
  at: z.string(),
  /** The `ip` commands, program name first, as the iproute2 applier would run them. */
  commands: z.array(z.array(z.string())),
});

const recordSchema = z.object({
  format: z.literal(DRY_RUN_FORMAT),
  version: z.literal(1),
  /** The configuration in effect (after the last apply, or restored by a rollback). */
  applied: hostNetworkConfigSchema.optional(),
  /** The configuration in effect before the last apply: what a rollback of that apply restores. */
  previous: hostNetworkConfigSchema.optional(),
  /** The simulated devices and routes. */
  state: netSnapshotSchema,
  operations: z.array(operationSchema),
});

export type DryRunRecord = z.infer<typeof recordSchema>;
export type DryRunOperation = z.infer<typeof operationSchema>;

export interface DryRunBackendOptions {
  /** Where the record is kept (read at open, rewritten atomically after each change). */
  readonly file?: string;
  /** Addresses another host on the link holds (simulated conflicts). */
  readonly occupied?: readonly string[];
  readonly clock?: () => Date;
}

/** Operations kept in the record: the newest, so the file stays small on a long-lived agent. */
const MAX_OPERATIONS = 100;

export class DryRunBackend implements NetBackend {
  readonly name = "dry-run" as const;
  readonly #file: string | undefined;
  readonly #occupied: ReadonlySet<string>;
  readonly #clock: () => Date;
  #record: DryRunRecord;

  private constructor(record: DryRunRecord, options: DryRunBackendOptions) {
    this.#record = record;
    this.#file = options.file;
    this.#occupied = new Set(options.occupied ?? []);
    this.#clock = options.clock ?? (() => new Date());
  }

  /** Opens the record in `options.file` (a missing file starts an empty one). */
  static async open(options: DryRunBackendOptions = {}): Promise<DryRunBackend> {
    let record: DryRunRecord = {
      format: DRY_RUN_FORMAT,
      version: 1,
      state: { backend: "dry-run", takenAt: new Date(0).toISOString(), links: [], routes: [] },
      operations: [],
    };
    if (options.file) {
      let text: string | undefined;
      try {
        text = await readFile(options.file, "utf8");
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      }
      if (text !== undefined) {
        const parsed = recordSchema.safeParse(safeJson(text));
        if (!parsed.success) throw new UsageError(`${options.file} is not a dry-run network record`);
        record = parsed.data;
      }
    }
    return new DryRunBackend(record, options);
  }

  /** A copy of the record: what was applied, the simulated state, every recorded operation. */
  get record(): DryRunRecord {
    return structuredClone(this.#record);
  }

  /** Every recorded `ip` command, in order. */
  get commands(): string[][] {
    return this.#record.operations.flatMap((o) => o.commands);
  }

  async snapshot(config: HostNetworkConfig): Promise<NetSnapshot> {
    const state = this.#record.state;
    const physical = physicalDevices(config);
    const devices = new Set([...physical, ...config.links.map((l) => l.device)]);
    const links = [...devices].map(
      (device) =>
        state.links.find((l) => l.device === device) ??
        (physical.includes(device)
          ? absentPhysical(device)
          : { device, exists: false, physical: false, addresses: [] }),
    );
    // VLANs the simulated host has on these physical devices.
    for (const l of state.links) {
      if (l.exists && l.vlan && physical.includes(l.vlan.parent) && !devices.has(l.device)) links.push(l);
    }
    const names = new Set(links.filter((l) => l.exists).map((l) => l.device));
    return structuredClone({
      backend: "dry-run",
      takenAt: this.#clock().toISOString(),
      links,
      routes: state.routes.filter((r) => names.has(r.device)),
    });
  }

  async probeConflicts(config: HostNetworkConfig): Promise<void> {
    const conflicts = config.links
      .flatMap((l) => [l.ipv4?.address, l.ipv6?.address])
      .filter((a): a is string => a !== undefined && this.#occupied.has(a));
    if (conflicts.length > 0) {
      throw new AddressConflictError(`${conflicts.join(", ")} already in use on the link (simulated)`);
    }
  }

  async apply(config: HostNetworkConfig): Promise<void> {
    const before = await this.snapshot(config);
    const target = desiredState(before, config);
    await this.probeConflicts(config);
    const links = linkSteps(before, target);
    const routes = routeSteps(before, target, "default");
    const addresses = addressSteps(before, target);
    const commands = [
      ...links.remove,
      ...links.configure,
      ...routes.remove,
      ...addresses.remove,
      ...addresses.add,
      ...routes.add,
    ];
    this.#merge(target);
    if (this.#record.applied) this.#record.previous = this.#record.applied;
    else delete this.#record.previous;
    this.#record.applied = structuredClone(config);
    await this.#log("apply", commands);
  }

  async verify(config: HostNetworkConfig): Promise<void> {
    const live = await this.snapshot(config);
    const problems = compareState(live, desiredState(live, config), "default");
    if (problems.length > 0)
      throw new NetworkApplyError(`the network is not as planned: ${problems.join("; ")}`);
  }

  async rollback(snapshot: NetSnapshot): Promise<void> {
    const names = snapshot.links.map((l) => l.device);
    const physical = snapshot.links.filter((l) => l.physical).map((l) => l.device);
    const state = this.#record.state;
    const live: NetSnapshot = {
      ...snapshot,
      links: [
        ...names.map(
          (d) =>
            state.links.find((l) => l.device === d) ?? {
              device: d,
              exists: false,
              physical: false,
              addresses: [],
            },
        ),
        ...state.links.filter(
          (l) => l.exists && l.vlan && physical.includes(l.vlan.parent) && !names.includes(l.device),
        ),
      ],
      routes: state.routes,
    };
    const links = linkSteps(live, snapshot);
    const routes = routeSteps(live, snapshot, "all");
    const addresses = addressSteps(live, snapshot, { nodad: true });
    const commands = [
      ...links.remove,
      ...links.configure,
      ...routes.remove,
      ...addresses.remove,
      ...addresses.add,
      ...routes.add,
      ...links.down,
    ];
    const extraVlans = live.links
      .filter((l) => !names.includes(l.device))
      .map((l) => ({ ...l, exists: false }));
    this.#merge({ ...snapshot, links: [...snapshot.links, ...extraVlans] });
    if (commands.length > 0) {
      // The state is back to before the last apply, and so is the configuration in effect.
      if (this.#record.previous) this.#record.applied = this.#record.previous;
      else delete this.#record.applied;
      delete this.#record.previous;
    }
    await this.#log("rollback", commands);
  }

  // ---- internals ----------------------------------------------------------------------------------

  /** Replaces the simulated devices `next` covers (and their routes) with `next`'s. */
  #merge(next: NetSnapshot): void {
    const covered = new Set(next.links.map((l) => l.device));
    const state = this.#record.state;
    state.links = [
      ...state.links.filter((l) => !covered.has(l.device)),
      ...next.links.filter((l) => l.exists),
    ].map((l) => ({ ...l, addresses: l.addresses.map(({ tentative: _t, dadfailed: _d, ...a }) => a) }));
    state.routes = [
      ...state.routes.filter((r) => !covered.has(r.device)),
      ...next.routes.filter((r) => covered.has(r.device)),
    ];
    state.takenAt = this.#clock().toISOString();
  }

  async #log(op: "apply" | "rollback", commands: readonly IpCommand[]): Promise<void> {
    if (commands.length === 0) return; // nothing changed (an idempotent re-apply): nothing to record
    this.#record.operations.push({
      op,
      at: this.#clock().toISOString(),
      commands: commands.map((c) => ["ip", ...c]),
    });
    if (this.#record.operations.length > MAX_OPERATIONS)
      this.#record.operations.splice(0, this.#record.operations.length - MAX_OPERATIONS);
    if (this.#file) await atomicWriteFile(this.#file, `${JSON.stringify(this.#record, null, 2)}\n`, 0o644);
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
