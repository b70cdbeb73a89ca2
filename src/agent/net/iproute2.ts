/**
 * The live network applier: iproute2's `ip`, run with execFile (never a shell), read back with
 * `ip -json` (SPEC.md §6).
 *
 * apply(config), in phases, each computed against the live state read just before it:
 *   1. links: delete VLAN subinterfaces the plan no longer has, set MTUs (a parent's first), create
 *      planned VLANs, bring every planned device up; then wait (bounded) for carrier.
 *   2. IPv4 conflict probe (before any planned address is added): an ARP probe per new address —
 *      `ip neigh replace ADDR dev DEV use` makes the kernel resolve ADDR; while the device holds no
 *      address in that subnet the request goes out with sender 0.0.0.0, an RFC 5227 ARP probe, which
 *      a Linux host holding ADDR answers. An answer (a neighbour entry with a link-layer address)
 *      within the probe window is a conflict: AddressConflictError (21). No `arping` needed.
 *   3. default routes the plan does not have are removed; addresses set to exactly the plan's;
 *      IPv6 duplicate address detection awaited (bounded): `dadfailed` is AddressConflictError.
 *   4. planned default routes (IPv4 and IPv6, metric 100 for the first interface, 200, …).
 * verify(config) reads `ip -json` back and refuses anything but exactly the planned state.
 * rollback(snapshot) restores links, addresses (IPv6 with `nodad`: they were ours) and every
 * non-kernel route of the snapshot, best effort over every step, and then checks the result.
 *
 * `ip -batch` is not transactional (TESTBED.md), so nothing here relies on it: one command per
 * change, and the rollback is computed from what is live.
 *
 * The kernel alone holds what this applier sets: after a reboot nothing is configured until the
 * agent starts, which re-applies the configured network (Agent.start). An appliance whose network
 * must come up without the agent uses the systemd-networkd applier (networkd.ts) instead.
 */
import { execFile } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { AddressConflictError, NetworkApplyError } from "../../errors.js";
import { type AgentFaults, NO_FAULTS } from "../faults.js";
import {
  addressSteps,
  compareState,
  desiredState,
  type HostNetworkConfig,
  type IpCommand,
  type LinkState,
  linkSteps,
  messageOf,
  type NetBackend,
  type NetSnapshot,
  physicalDevices,
  type RouteState,
  routeSteps,
} from "./net-backend.js";

/** Runs `ip` with the given arguments and returns its standard output. */
export interface IpRunner {
  run(args: IpCommand): Promise<string>;
}

export interface ExecIpRunnerOptions {
  /** Run every command in this network namespace (`ip -n NS …`). */
  readonly netns?: string;
  /** Path of the `ip` program (default: `ip` on PATH). */
  readonly ipPath?: string;
  /** Bound on one command (default 10 s). */
  readonly timeoutMs?: number;
}

/** The real runner: execFile of `ip`, no shell; a failure is NetworkApplyError with ip's message. */
export function execIpRunner(options: ExecIpRunnerOptions = {}): IpRunner {
  const prefix = options.netns ? ["-n", options.netns] : [];
  return {
    run: (args) =>
      new Promise((resolve, reject) => {
        execFile(
          options.ipPath ?? "ip",
          [...prefix, ...args],
          { timeout: options.timeoutMs ?? 10_000, killSignal: "SIGKILL", maxBuffer: 16 * 1024 * 1024 },
          (error, stdout, stderr) => {
            if (error) {
              const detail = String(stderr).trim() || error.message;
              reject(new NetworkApplyError(`ip ${args.join(" ")}: ${detail}`, { cause: error }));
            } else {
              resolve(String(stdout));
            }
          },
        );
      }),
  };
}

export interface Iproute2BackendOptions {
  /** Default: execIpRunner({ netns }). Tests wrap it to inject a failing step. */
  readonly runner?: IpRunner;
  readonly netns?: string;
  /** How long an ARP probe waits for an answer (default 1,000 ms; a host on the link answers in < 1 ms). */
  readonly probeWindowMs?: number;
  /** Bound on IPv6 DAD (default 5,000 ms; Linux needs up to ~2 s: random delay ≤ 1 s, then 1 s). */
  readonly dadTimeoutMs?: number;
  /** Bound on waiting for carrier after bringing devices up (default 5,000 ms). */
  readonly carrierTimeoutMs?: number;
  /** Poll period for probe, DAD and carrier (default 25 ms). */
  readonly pollMs?: number;
  /** Crash points (faults.ts): `mid-apply:N` after each changing command of an apply. */
  readonly faults?: AgentFaults;
}

interface IpJsonAddress {
  family?: string;
  local?: string;
  prefixlen?: number;
  scope?: string;
  dynamic?: boolean;
  tentative?: boolean;
  dadfailed?: boolean;
}
interface IpJsonLink {
  ifname?: string;
  flags?: string[];
  mtu?: number;
  link?: string;
  linkinfo?: { info_kind?: string; info_data?: { id?: number } };
  addr_info?: IpJsonAddress[];
}
interface IpJsonRoute {
  dst?: string;
  gateway?: string;
  dev?: string;
  metric?: number;
  protocol?: string;
  type?: string;
}
interface IpJsonNeighbour {
  dst?: string;
  lladdr?: string;
  state?: string[];
}

function parseJson<T>(text: string, what: string): T[] {
  if (text.trim() === "") return [];
  try {
    const value = JSON.parse(text) as unknown;
    if (!Array.isArray(value)) throw new Error("not an array");
    return value as T[];
  } catch (error) {
    throw new NetworkApplyError(`cannot read ip -json ${what}: ${messageOf(error)}`);
  }
}

export class Iproute2Backend implements NetBackend {
  readonly name = "iproute2" as const;
  readonly #ip: IpRunner;
  readonly #probeWindowMs: number;
  readonly #dadTimeoutMs: number;
  readonly #carrierTimeoutMs: number;
  readonly #pollMs: number;
  readonly #faults: AgentFaults;
  /** Changing commands run by the current apply (for the `mid-apply:N` crash point). */
  #applied = 0;

  constructor(options: Iproute2BackendOptions = {}) {
    this.#ip = options.runner ?? execIpRunner(options.netns ? { netns: options.netns } : {});
    this.#probeWindowMs = options.probeWindowMs ?? 1000;
    this.#dadTimeoutMs = options.dadTimeoutMs ?? 5000;
    this.#carrierTimeoutMs = options.carrierTimeoutMs ?? 5000;
    this.#pollMs = options.pollMs ?? 25;
    this.#faults = options.faults ?? NO_FAULTS;
  }

  snapshot(config: HostNetworkConfig): Promise<NetSnapshot> {
    return this.#read(
      physicalDevices(config),
      config.links.filter((l) => l.vlan !== undefined).map((l) => l.device),
    );
  }

  async apply(config: HostNetworkConfig): Promise<void> {
    const before = await this.snapshot(config);
    const target = desiredState(before, config);
    this.#applied = 0;

    const links = linkSteps(before, target);
    await this.#runAll([...links.remove, ...links.configure]);
    await this.#waitForCarrier(target.links.filter((l) => l.exists).map((l) => l.device));

    await this.probeConflicts(config);

    const beforeAddresses = await this.snapshot(config);
    await this.#runAll(routeSteps(beforeAddresses, target, "default").remove);
    const addresses = addressSteps(beforeAddresses, target);
    await this.#runAll([...addresses.remove, ...addresses.add]);
    await this.#waitForDad(addresses.newIpv6);

    const beforeRoutes = await this.snapshot(config);
    await this.#runAll(routeSteps(beforeRoutes, target, "default").add);
  }

  async verify(config: HostNetworkConfig): Promise<void> {
    const live = await this.snapshot(config);
    const problems = compareState(live, desiredState(live, config), "default");
    if (problems.length > 0) {
      throw new NetworkApplyError(`the network is not as planned: ${problems.join("; ")}`);
    }
  }

  async rollback(snapshot: NetSnapshot): Promise<void> {
    const physical = snapshot.links.filter((l) => l.physical).map((l) => l.device);
    const vlans = snapshot.links.filter((l) => !l.physical).map((l) => l.device);
    const errors: string[] = [];
    const run = async (commands: readonly IpCommand[]) => {
      for (const command of commands) {
        try {
          await this.#ip.run(command);
        } catch (error) {
          errors.push(messageOf(error));
        }
      }
    };
    let live = await this.#read(physical, vlans);
    const links = linkSteps(live, snapshot);
    await run([...links.remove, ...links.configure]);
    live = await this.#read(physical, vlans);
    await run(routeSteps(live, snapshot, "all").remove);
    await run(
      (() => {
        const a = addressSteps(live, snapshot, { nodad: true });
        return [...a.remove, ...a.add];
      })(),
    );
    live = await this.#read(physical, vlans);
    await run(routeSteps(live, snapshot, "all").add);
    await run(links.down);
    const problems = compareState(await this.#read(physical, vlans), snapshot, "all");
    if (problems.length > 0) {
      throw new NetworkApplyError(
        `the network could not be restored: ${problems.join("; ")}` +
          (errors.length > 0 ? ` (${errors.join("; ")})` : ""),
      );
    }
  }

  async probeConflicts(config: HostNetworkConfig): Promise<void> {
    const live = await this.snapshot(config);
    const held = new Set(
      live.links.flatMap((l) =>
        l.addresses.filter((a) => a.family === 4).map((a) => `${l.device} ${a.address}`),
      ),
    );
    const candidates = config.links
      .filter((l) => l.ipv4 !== undefined && !held.has(`${l.device} ${l.ipv4.address}`))
      .map((l) => ({ device: l.device, address: l.ipv4!.address }));
    const found = await Promise.all(candidates.map((c) => this.#arpProbe(c.device, c.address)));
    const conflicts = found.filter((f): f is string => f !== undefined);
    if (conflicts.length > 0) throw new AddressConflictError(conflicts.join("; "));
  }

  // ---- internals ------------------------------------------------------------------------------------

  async #runAll(commands: readonly IpCommand[]): Promise<void> {
    for (const command of commands) {
      await this.#ip.run(command);
      this.#faults.reached(`mid-apply:${++this.#applied}`);
    }
  }

  /** One probe; the conflict's description, or undefined when nobody answered within the window. */
  async #arpProbe(device: string, address: string): Promise<string | undefined> {
    // A neighbour entry left from earlier must not count as an answer.
    await this.#ip.run(["neigh", "del", address, "dev", device]).catch(() => undefined);
    await this.#ip.run(["neigh", "replace", address, "dev", device, "use"]);
    try {
      const deadline = Date.now() + this.#probeWindowMs;
      const maxTurns = Math.ceil(this.#probeWindowMs / this.#pollMs) + 2;
      for (let turn = 0; turn < maxTurns; turn++) {
        const [entry] = parseJson<IpJsonNeighbour>(
          await this.#ip.run(["-json", "neigh", "show", address, "dev", device]),
          "neigh",
        );
        const state = entry?.state ?? [];
        if (entry?.lladdr && !state.includes("FAILED") && !state.includes("INCOMPLETE")) {
          return `${address} is already in use on ${device} by ${entry.lladdr}`;
        }
        if (state.includes("FAILED") || Date.now() >= deadline) return undefined;
        await sleep(this.#pollMs);
      }
      return undefined;
    } finally {
      await this.#ip.run(["neigh", "del", address, "dev", device]).catch(() => undefined);
    }
  }

  async #waitForDad(added: readonly { device: string; address: string }[]): Promise<void> {
    if (added.length === 0) return;
    const devices = [...new Set(added.map((a) => a.device))];
    const deadline = Date.now() + this.#dadTimeoutMs;
    const maxTurns = Math.ceil(this.#dadTimeoutMs / this.#pollMs) + 2;
    for (let turn = 0; turn < maxTurns; turn++) {
      const live = await this.#read([], [], devices);
      const pending: string[] = [];
      for (const { device, address } of added) {
        const a = live.links.find((l) => l.device === device)?.addresses.find((x) => x.address === address);
        if (!a)
          throw new NetworkApplyError(
            `${address} vanished from ${device} during duplicate address detection`,
          );
        if (a.dadfailed) {
          throw new AddressConflictError(
            `${address} is already in use on ${device} (IPv6 duplicate address detection failed)`,
          );
        }
        if (a.tentative) pending.push(`${address} on ${device}`);
      }
      if (pending.length === 0) return;
      if (Date.now() >= deadline) {
        throw new NetworkApplyError(
          `IPv6 duplicate address detection did not finish in ${this.#dadTimeoutMs} ms for ${pending.join(", ")} (no carrier?)`,
        );
      }
      await sleep(this.#pollMs);
    }
  }

  async #waitForCarrier(devices: readonly string[]): Promise<void> {
    if (devices.length === 0) return;
    const deadline = Date.now() + this.#carrierTimeoutMs;
    const maxTurns = Math.ceil(this.#carrierTimeoutMs / this.#pollMs) + 2;
    for (let turn = 0; turn < maxTurns; turn++) {
      const live = await this.#read([], [], devices);
      const without = live.links.filter((l) => !l.carrier).map((l) => l.device);
      if (without.length === 0) return;
      if (Date.now() >= deadline) {
        throw new NetworkApplyError(`no carrier on ${without.join(", ")} after ${this.#carrierTimeoutMs} ms`);
      }
      await sleep(this.#pollMs);
    }
  }

  /**
   * Reads links, addresses and non-kernel routes: the given physical devices, every VLAN on them,
   * the named VLAN devices (absent ones as `exists: false`), and `only` devices when given instead.
   */
  async #read(
    physical: readonly string[],
    vlans: readonly string[],
    only?: readonly string[],
  ): Promise<NetSnapshot> {
    const all = parseJson<IpJsonLink>(await this.#ip.run(["-json", "-d", "addr", "show"]), "addr");
    const byName = new Map(all.filter((l) => l.ifname).map((l) => [l.ifname!, l]));
    const wanted: string[] = only
      ? [...only]
      : [
          ...physical,
          ...all
            .filter(
              (l) => l.linkinfo?.info_kind === "vlan" && l.link !== undefined && physical.includes(l.link),
            )
            .map((l) => l.ifname!),
          ...vlans,
        ];
    const links: LinkState[] = [];
    for (const device of new Set(wanted)) {
      const l = byName.get(device);
      if (!l) {
        links.push({ device, exists: false, physical: physical.includes(device), addresses: [] });
        continue;
      }
      const isVlan = l.linkinfo?.info_kind === "vlan";
      links.push({
        device,
        exists: true,
        physical: !isVlan,
        ...(l.mtu !== undefined ? { mtu: l.mtu } : {}),
        up: l.flags?.includes("UP") ?? false,
        carrier: l.flags?.includes("LOWER_UP") ?? false,
        ...(isVlan && l.link !== undefined && l.linkinfo?.info_data?.id !== undefined
          ? { vlan: { parent: l.link, id: l.linkinfo.info_data.id } }
          : {}),
        addresses: (l.addr_info ?? [])
          .filter(
            (a) =>
              (a.family === "inet" || a.family === "inet6") &&
              a.local !== undefined &&
              a.prefixlen !== undefined &&
              a.scope !== "link" &&
              a.scope !== "host" &&
              a.dynamic !== true,
          )
          .map((a) => ({
            family: a.family === "inet" ? (4 as const) : (6 as const),
            address: a.local!,
            prefixLength: a.prefixlen!,
            ...(a.tentative ? { tentative: true } : {}),
            ...(a.dadfailed ? { dadfailed: true } : {}),
          })),
      });
    }
    const devices = new Set(links.filter((l) => l.exists).map((l) => l.device));
    const routes: RouteState[] = [];
    if (!only) {
      for (const fam of [4, 6] as const) {
        const args = [...(fam === 6 ? ["-6"] : []), "-json", "route", "show", "table", "main"];
        for (const r of parseJson<IpJsonRoute>(await this.#ip.run(args), "route")) {
          const protocol = r.protocol ?? "boot";
          if (
            !r.dst ||
            !r.dev ||
            !devices.has(r.dev) ||
            protocol === "kernel" ||
            (r.type && r.type !== "unicast")
          )
            continue;
          routes.push({
            family: fam,
            dst: r.dst,
            ...(r.gateway !== undefined ? { gateway: r.gateway } : {}),
            device: r.dev,
            metric: r.metric ?? (fam === 6 ? 1024 : 0),
            protocol,
          });
        }
      }
    }
    return { backend: "iproute2", takenAt: new Date().toISOString(), links, routes };
  }
}
