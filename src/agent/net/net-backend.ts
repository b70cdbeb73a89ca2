/**
 * What the agent asks of a network applier (SPEC.md §6), and the pure planning both appliers share.
 *
 * An applier works on one HSM's host network configuration ({@link HostNetworkConfig}, derived from
 * the decoded shard entry) and on snapshots ({@link NetSnapshot}) of the devices that configuration
 * manages. Everything here is plain data, so a snapshot can be persisted in the agent's state file
 * before the network is touched and restored after a crash.
 *
 * Scope of what the agent manages, per physical device named by the plan (after `--iface` mapping):
 * the device's MTU, its up state and its global addresses; its 802.1Q subinterfaces (created when
 * planned, removed when not); the default routes (IPv4 and IPv6) through those devices. Addresses the
 * kernel manages (link-local, SLAAC `dynamic`) and routes it derives (`proto kernel`) are left alone.
 * Other static routes through a managed device are not changed by an apply, but a rollback restores
 * them, since deleting an address makes the kernel drop routes that depend on it.
 */

import { classifyAddress, parseIpv6 } from "../../config/ip.js";
import type { HsmConfig } from "../../config/shard.js";
import { NetworkApplyError, OnboardError, RollbackFailedError } from "../../errors.js";
import * as z from "../../util/schema.js";
import type { AgentFaults } from "../faults.js";

export { RollbackFailedError } from "../../errors.js";

// ---- the configuration an applier applies ------------------------------------------------------

export interface AddressPlan {
  readonly address: string;
  readonly prefixLength: number;
}

/** One planned interface: where its addresses live and how that device is made. */
export interface LinkPlan {
  /** The plan's interface name (`eth0`). */
  readonly name: string;
  /** The device that carries the addresses: the physical device, or its VLAN subinterface. */
  readonly device: string;
  /** The physical device (the device itself without a VLAN). */
  readonly physical: string;
  readonly vlan?: number;
  readonly mtu?: number;
  readonly ipv4?: AddressPlan;
  readonly ipv6?: AddressPlan;
  readonly gateway4?: string;
  readonly gateway6?: string;
  /** Metric of this interface's default routes: the first interface's are preferred. */
  readonly metric: number;
}

export interface HostNetworkConfig {
  readonly hostname: string;
  readonly links: readonly LinkPlan[];
  readonly dns: readonly string[];
  readonly ntp: readonly string[];
}

/** Plan interface name → device name on this host (`--iface`); unmapped names are used as they are. */
export type InterfaceMap = Readonly<Record<string, string>>;

/** Default-route metric of the n-th planned interface (0-based): 100, 200, … */
export function defaultRouteMetric(index: number): number {
  return 100 * (index + 1);
}

/** Linux interface names are at most 15 bytes (IFNAMSIZ - 1). */
const MAX_IFNAME = 15;
const IFNAME = /^[A-Za-z0-9_.:-]{1,15}$/;

function prefixOf(cidr: string | undefined, what: string): number {
  const prefix = cidr === undefined ? Number.NaN : Number(cidr.slice(cidr.indexOf("/") + 1));
  if (!Number.isInteger(prefix)) throw new NetworkApplyError(`${what}: no network prefix in the plan`);
  return prefix;
}

/**
 * The host network configuration of one decoded shard entry: one {@link LinkPlan} per interface,
 * on the device `map` names for it, on a `<device>.<vlan>` subinterface when its subnet has a VLAN.
 */
export function hostNetworkConfig(config: HsmConfig, map: InterfaceMap = {}): HostNetworkConfig {
  const subnets = new Map(config.subnets.map((s) => [s.name, s]));
  const devices = new Set<string>();
  const dns = new Set<string>();
  const ntp = new Set<string>();
  const links = config.hsm.interfaces.map((itf, index): LinkPlan => {
    const subnet = subnets.get(itf.subnet);
    if (!subnet)
      throw new NetworkApplyError(`interface ${itf.name}: subnet ${itf.subnet} is not in the shard`);
    const physical = map[itf.name] ?? itf.name;
    const device = subnet.vlan === undefined ? physical : `${physical}.${subnet.vlan}`;
    if (!IFNAME.test(physical) || device.length > MAX_IFNAME) {
      throw new NetworkApplyError(`interface ${itf.name}: device name ${device} is not a valid Linux name`);
    }
    // Never the loopback device (issue 10 finding 5): addresses there would never reach the LAN.
    if (physical === "lo")
      throw new NetworkApplyError(`interface ${itf.name}: refusing the loopback device lo`);
    // Nor an IPv4-mapped IPv6 address or gateway (issue 10): the station refuses them in plans; a
    // configuration signed elsewhere is refused here too.
    for (const [what, text] of [
      ["IPv6 address", itf.ipv6],
      ["IPv6 gateway", itf.ipv6 !== undefined ? subnet.ipv6Gateway : undefined],
    ] as const) {
      const address = text === undefined ? undefined : parseIpv6(text);
      if (address && classifyAddress(address)?.cls === "ipv4-mapped") {
        throw new NetworkApplyError(`interface ${itf.name}: refusing the IPv4-mapped ${what} ${text}`);
      }
    }
    if (devices.has(device)) throw new NetworkApplyError(`two planned interfaces on device ${device}`);
    devices.add(device);
    for (const s of subnet.dns) dns.add(s);
    for (const s of subnet.ntp) ntp.add(s);
    return {
      name: itf.name,
      device,
      physical,
      ...(subnet.vlan !== undefined ? { vlan: subnet.vlan } : {}),
      ...(subnet.mtu !== undefined ? { mtu: subnet.mtu } : {}),
      ...(itf.ipv4 !== undefined
        ? { ipv4: { address: itf.ipv4, prefixLength: prefixOf(subnet.cidr, `interface ${itf.name}`) } }
        : {}),
      ...(itf.ipv6 !== undefined
        ? { ipv6: { address: itf.ipv6, prefixLength: prefixOf(subnet.ipv6Cidr, `interface ${itf.name}`) } }
        : {}),
      ...(itf.ipv4 !== undefined && subnet.gateway !== undefined ? { gateway4: subnet.gateway } : {}),
      ...(itf.ipv6 !== undefined && subnet.ipv6Gateway !== undefined ? { gateway6: subnet.ipv6Gateway } : {}),
      metric: defaultRouteMetric(index),
    };
  });
  // A physical device that carries its own addresses and VLANs of another planned interface is fine;
  // the same physical device planned twice without VLAN is not (caught above by device name).
  return { hostname: config.hsm.hostname, links, dns: [...dns], ntp: [...ntp] };
}

/** Every address of a configuration, `address/prefix`, for status lines and the audit log. */
export function plannedAddresses(config: HostNetworkConfig): string[] {
  const out: string[] = [];
  for (const link of config.links) {
    if (link.ipv4) out.push(`${link.ipv4.address}/${link.ipv4.prefixLength}`);
    if (link.ipv6) out.push(`${link.ipv6.address}/${link.ipv6.prefixLength}`);
  }
  return out;
}

// ---- snapshots -----------------------------------------------------------------------------------

const family = z.union([z.literal(4), z.literal(6)]);

const addressSchema = z.object({
  family,
  address: z.string(),
  prefixLength: z.int().min(0).max(128),
  /** Kernel DAD state, as `ip -json addr` shows it: verification refuses either. */
  tentative: z.boolean().optional(),
  dadfailed: z.boolean().optional(),
});

const linkSchema = z.object({
  device: z.string(),
  exists: z.boolean(),
  /** A physical device (anything that is not a VLAN subinterface the agent may create or remove). */
  physical: z.boolean(),
  mtu: z.int().positive().optional(),
  up: z.boolean().optional(),
  /** Kernel carrier state (LOWER_UP); informational. */
  carrier: z.boolean().optional(),
  vlan: z.object({ parent: z.string(), id: z.int().min(1).max(4094) }).optional(),
  addresses: z.array(addressSchema),
});

const routeSchema = z.object({
  family,
  /** `default` or a prefix. */
  dst: z.string(),
  gateway: z.string().optional(),
  device: z.string(),
  metric: z.int().min(0),
  /** rtnetlink protocol name (`static`, `boot`, …); `boot` when `ip` leaves it out. */
  protocol: z.string(),
});

export const netSnapshotSchema = z.object({
  backend: z.string(),
  /** ISO time the snapshot was taken. */
  takenAt: z.string(),
  links: z.array(linkSchema),
  /** Non-kernel unicast routes (main table) through the snapshot's devices. */
  routes: z.array(routeSchema),
  /** The networkd applier's own files (name → content) before the apply: what a rollback writes back. */
  files: z.record(z.string(), z.string()).optional(),
  /** Host settings before the apply (host-settings.ts): the hostname and the files it writes. */
  host: z
    .object({
      hostname: z.string(),
      files: z.record(z.string(), z.string().nullable()),
      /** systemd-timesyncd's runtime NTP servers before the apply (absent: timesyncd not reachable). */
      ntpRuntime: z.array(z.string()).optional(),
    })
    .optional(),
});

export type AddressState = z.infer<typeof addressSchema>;
export type LinkState = z.infer<typeof linkSchema>;
export type RouteState = z.infer<typeof routeSchema>;
export type NetSnapshot = z.infer<typeof netSnapshotSchema>;

export const hostNetworkConfigSchema: z.ZodType<HostNetworkConfig> = z.object({
  hostname: z.string(),
  links: z.array(
    z.object({
      name: z.string(),
      device: z.string(),
      physical: z.string(),
      vlan: z.int().optional(),
      mtu: z.int().optional(),
      ipv4: z.object({ address: z.string(), prefixLength: z.int() }).optional(),
      ipv6: z.object({ address: z.string(), prefixLength: z.int() }).optional(),
      gateway4: z.string().optional(),
      gateway6: z.string().optional(),
      metric: z.int(),
    }),
  ),
  dns: z.array(z.string()),
  ntp: z.array(z.string()),
});

// ---- the applier interface -------------------------------------------------------------------------

/**
 * A network applier. `apply` changes the network towards `config` and may fail half-way: callers use
 * {@link applyWithRollback}, which restores the snapshot on any failure.
 */
export interface NetBackend {
  readonly name: "iproute2" | "networkd" | "dry-run";
  /** The current state of every device `config` manages (planned devices, VLANs on them). */
  snapshot(config: HostNetworkConfig): Promise<NetSnapshot>;
  /**
   * Brings the network to `config`: links, then the IPv4 conflict probe, addresses (IPv6 DAD
   * awaited), default routes. Idempotent: applying what is in place changes nothing. Does not roll
   * back by itself. AddressConflictError (21) for an address in use; NetworkApplyError (20) else.
   */
  apply(config: HostNetworkConfig): Promise<void>;
  /** NetworkApplyError unless exactly the planned state is in place. */
  verify(config: HostNetworkConfig): Promise<void>;
  /** Restores `snapshot` (best effort over every step, then checked). NetworkApplyError if it could not. */
  rollback(snapshot: NetSnapshot): Promise<void>;
  /**
   * AddressConflictError when another host on the link already answers for one of the planned IPv4
   * addresses this host does not hold yet. Needs the planned devices up (apply calls it at that point).
   */
  probeConflicts(config: HostNetworkConfig): Promise<void>;
}

/**
 * Applies and verifies `config`; on any failure restores `snapshot` and rethrows (a non-project error
 * becomes NetworkApplyError). A failed rollback is reported in the error, with the original as cause.
 */
export async function applyWithRollback(
  net: NetBackend,
  config: HostNetworkConfig,
  snapshot: NetSnapshot,
  faults?: AgentFaults,
): Promise<void> {
  try {
    await net.apply(config);
    faults?.reached("after-apply-before-verify");
    await net.verify(config);
  } catch (error) {
    const failure =
      error instanceof OnboardError
        ? error
        : new NetworkApplyError(`applying the network failed: ${messageOf(error)}`, { cause: error });
    try {
      await net.rollback(snapshot);
    } catch (rollbackError) {
      throw new RollbackFailedError(
        `${failure.message}; rolling back failed too: ${messageOf(rollbackError)}`,
        failure,
      );
    }
    throw failure;
  }
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ---- desired state and differences -----------------------------------------------------------------

/** How a device that a backend does not know yet looks (a physical NIC, down, unconfigured). */
export function absentPhysical(device: string): LinkState {
  return { device, exists: true, physical: true, mtu: 1500, up: false, addresses: [] };
}

const addressKey = (a: { family: number; address: string; prefixLength: number }) =>
  `${a.family} ${a.address}/${a.prefixLength}`;

export function routeKey(r: RouteState): string {
  return `${r.family} ${r.dst} via ${r.gateway ?? "-"} dev ${r.device} metric ${r.metric}`;
}

function plannedAddressesOf(link: LinkPlan): AddressState[] {
  const out: AddressState[] = [];
  if (link.ipv4) out.push({ family: 4, address: link.ipv4.address, prefixLength: link.ipv4.prefixLength });
  if (link.ipv6) out.push({ family: 6, address: link.ipv6.address, prefixLength: link.ipv6.prefixLength });
  return out;
}

export function plannedDefaultRoutes(config: HostNetworkConfig): RouteState[] {
  const out: RouteState[] = [];
  for (const link of config.links) {
    if (link.gateway4) {
      out.push({
        family: 4,
        dst: "default",
        gateway: link.gateway4,
        device: link.device,
        metric: link.metric,
        protocol: "static",
      });
    }
    if (link.gateway6) {
      out.push({
        family: 6,
        dst: "default",
        gateway: link.gateway6,
        device: link.device,
        metric: link.metric,
        protocol: "static",
      });
    }
  }
  return out;
}

/** Physical devices of a configuration, in plan order, each once. */
export function physicalDevices(config: HostNetworkConfig): string[] {
  return [...new Set(config.links.map((l) => l.physical))];
}

/**
 * What `current` must look like once `config` is applied. `current` must cover the configuration's
 * devices (a backend's `snapshot(config)`); a physical device that does not exist is an error here,
 * before anything is changed.
 */
export function desiredState(current: NetSnapshot, config: HostNetworkConfig): NetSnapshot {
  const byDevice = new Map(current.links.map((l) => [l.device, l]));
  const links: LinkState[] = [];
  for (const physical of physicalDevices(config)) {
    const now = byDevice.get(physical);
    if (!now?.exists) throw new NetworkApplyError(`interface ${physical} does not exist on this host`);
    if (!now.physical) throw new NetworkApplyError(`interface ${physical} is a VLAN, not a physical device`);
    const direct = config.links.find((l) => l.device === physical);
    const vlans = config.links.filter((l) => l.physical === physical && l.vlan !== undefined);
    let mtu = direct?.mtu ?? now.mtu;
    // A VLAN's MTU cannot exceed its parent's: raise the parent when a subinterface needs more.
    for (const v of vlans) if (v.mtu !== undefined && (mtu === undefined || v.mtu > mtu)) mtu = v.mtu;
    links.push({
      device: physical,
      exists: true,
      physical: true,
      ...(mtu !== undefined ? { mtu } : {}),
      up: true,
      addresses: direct ? plannedAddressesOf(direct) : [],
    });
    for (const v of vlans) {
      const existing = byDevice.get(v.device);
      const sameVlan = existing?.exists && existing.vlan?.parent === physical && existing.vlan.id === v.vlan;
      const vlanMtu = v.mtu ?? (sameVlan ? existing.mtu : mtu);
      links.push({
        device: v.device,
        exists: true,
        physical: false,
        ...(vlanMtu !== undefined ? { mtu: vlanMtu } : {}),
        up: true,
        vlan: { parent: physical, id: v.vlan! },
        addresses: plannedAddressesOf(v),
      });
    }
  }
  // VLAN subinterfaces of managed devices that the plan does not have go away.
  for (const link of current.links) {
    if (link.exists && !link.physical && !links.some((l) => l.device === link.device)) {
      links.push({ ...link, exists: false, addresses: [] });
    }
  }
  const keptDevices = new Set(links.filter((l) => l.exists).map((l) => l.device));
  const routes = [
    // Non-default routes stay as they are (on devices that stay); default routes are the plan's.
    ...current.routes.filter((r) => r.dst !== "default" && keptDevices.has(r.device)),
    ...plannedDefaultRoutes(config),
  ];
  return { backend: current.backend, takenAt: current.takenAt, links, routes };
}

/** One `ip` invocation, without the program name (e.g. `["-6", "addr", "add", …]`). */
export type IpCommand = readonly string[];

export interface LinkSteps {
  /** VLAN subinterfaces to delete (first: they may block MTU changes). */
  readonly remove: IpCommand[];
  /** MTU of physical devices, VLAN creation, VLAN MTU, up: in that order. */
  readonly configure: IpCommand[];
  /** Devices to take down (last, after addresses and routes). */
  readonly down: IpCommand[];
}

/** Link-level commands from `current` to `target`. */
export function linkSteps(current: NetSnapshot, target: NetSnapshot): LinkSteps {
  const now = new Map(current.links.map((l) => [l.device, l]));
  const remove: IpCommand[] = [];
  const physicalMtu: IpCommand[] = [];
  const create: IpCommand[] = [];
  const vlanMtu: IpCommand[] = [];
  const up: IpCommand[] = [];
  const down: IpCommand[] = [];
  for (const t of target.links) {
    const c = now.get(t.device);
    const exists = c?.exists === true;
    if (!t.exists) {
      if (exists && !c.physical) remove.push(["link", "del", "dev", t.device]);
      continue;
    }
    if (t.physical) {
      if (!exists) continue; // desiredState refused this already; a rollback cannot create hardware
      if (t.mtu !== undefined && c.mtu !== t.mtu)
        physicalMtu.push(["link", "set", "dev", t.device, "mtu", String(t.mtu)]);
    } else {
      const same = exists && c.vlan?.parent === t.vlan?.parent && c.vlan?.id === t.vlan?.id;
      if (exists && !same) remove.push(["link", "del", "dev", t.device]);
      if (!same) {
        create.push([
          "link",
          "add",
          "link",
          t.vlan!.parent,
          "name",
          t.device,
          "type",
          "vlan",
          "id",
          String(t.vlan!.id),
        ]);
      }
      if (t.mtu !== undefined && (!same || c.mtu !== t.mtu))
        vlanMtu.push(["link", "set", "dev", t.device, "mtu", String(t.mtu)]);
    }
    const isUp = exists && c.up === true && (t.physical || c.vlan?.id === t.vlan?.id);
    if (t.up === true && !isUp) up.push(["link", "set", "dev", t.device, "up"]);
    if (t.up === false && exists && c.up === true) down.push(["link", "set", "dev", t.device, "down"]);
  }
  return { remove, configure: [...physicalMtu, ...create, ...vlanMtu, ...up], down };
}

export interface AddressSteps {
  readonly remove: IpCommand[];
  readonly add: IpCommand[];
  /** IPv4 addresses this host will newly hold: probed for conflicts before they are added. */
  readonly newIpv4: { device: string; address: string }[];
  /** IPv6 addresses newly added: DAD is awaited for them. */
  readonly newIpv6: { device: string; address: string }[];
}

/** Address commands from `current` to `target`; `nodad` for a rollback (the addresses were ours). */
export function addressSteps(
  current: NetSnapshot,
  target: NetSnapshot,
  options: { nodad?: boolean } = {},
): AddressSteps {
  const now = new Map(current.links.map((l) => [l.device, l]));
  const remove: IpCommand[] = [];
  const add: IpCommand[] = [];
  const newIpv4: { device: string; address: string }[] = [];
  const newIpv6: { device: string; address: string }[] = [];
  for (const t of target.links) {
    if (!t.exists) continue;
    const have = now.get(t.device)?.exists ? (now.get(t.device)?.addresses ?? []) : [];
    const want = new Set(t.addresses.map(addressKey));
    const held = new Set(have.map(addressKey));
    for (const a of have) {
      if (!want.has(addressKey(a))) {
        remove.push([
          ...(a.family === 6 ? ["-6"] : []),
          "addr",
          "del",
          `${a.address}/${a.prefixLength}`,
          "dev",
          t.device,
        ]);
      }
    }
    for (const a of t.addresses) {
      if (held.has(addressKey(a))) continue;
      if (a.family === 4) {
        add.push(["addr", "add", `${a.address}/${a.prefixLength}`, "dev", t.device]);
        newIpv4.push({ device: t.device, address: a.address });
      } else {
        add.push([
          "-6",
          "addr",
          "add",
          `${a.address}/${a.prefixLength}`,
          "dev",
          t.device,
          ...(options.nodad ? ["nodad"] : []),
        ]);
        newIpv6.push({ device: t.device, address: a.address });
      }
    }
  }
  return { remove, add, newIpv4, newIpv6 };
}

function routeArgs(r: RouteState): string[] {
  return [
    ...(r.family === 6 ? ["-6"] : []),
    "route",
    "",
    r.dst,
    ...(r.gateway !== undefined ? ["via", r.gateway] : []),
    "dev",
    r.device,
    "metric",
    String(r.metric),
  ];
}

function routeCommand(verb: "add" | "del", r: RouteState): IpCommand {
  const args = routeArgs(r);
  args[args.indexOf("")] = verb;
  return verb === "add" && r.protocol !== "boot" ? [...args, "proto", r.protocol] : args;
}

/**
 * Route commands from `current` to `target`. `scope: "default"` compares only default routes (an
 * apply); `"all"` every non-kernel route of the snapshot (a rollback).
 */
export function routeSteps(
  current: NetSnapshot,
  target: NetSnapshot,
  scope: "default" | "all",
): { remove: IpCommand[]; add: IpCommand[] } {
  const inScope = (r: RouteState) => scope === "all" || r.dst === "default";
  const targetDevices = new Set(target.links.map((l) => l.device));
  const want = new Map(target.routes.filter(inScope).map((r) => [routeKey(r), r]));
  const have = new Map(
    current.routes.filter((r) => inScope(r) && targetDevices.has(r.device)).map((r) => [routeKey(r), r]),
  );
  const remove = [...have].filter(([k]) => !want.has(k)).map(([, r]) => routeCommand("del", r));
  const add = [...want].filter(([k]) => !have.has(k)).map(([, r]) => routeCommand("add", r));
  return { remove, add };
}

/**
 * Differences between the live state and the target, as readable lines; empty when they agree.
 * Compares links (existence, VLAN, MTU, up, the exact address set, no tentative/failed DAD) and the
 * routes in `scope`.
 */
export function compareState(live: NetSnapshot, target: NetSnapshot, scope: "default" | "all"): string[] {
  const problems: string[] = [];
  const now = new Map(live.links.map((l) => [l.device, l]));
  for (const t of target.links) {
    const c = now.get(t.device);
    const exists = c?.exists === true;
    if (!t.exists) {
      if (exists && !t.physical) problems.push(`${t.device} should not exist`);
      continue;
    }
    if (!exists) {
      problems.push(`${t.device} does not exist`);
      continue;
    }
    if (!t.physical && (c.vlan?.parent !== t.vlan?.parent || c.vlan?.id !== t.vlan?.id)) {
      problems.push(`${t.device} is not VLAN ${t.vlan?.id} on ${t.vlan?.parent}`);
    }
    if (t.mtu !== undefined && c.mtu !== t.mtu) problems.push(`${t.device} has MTU ${c.mtu}, not ${t.mtu}`);
    if (t.up !== undefined && c.up !== t.up) problems.push(`${t.device} is ${c.up ? "up" : "down"}`);
    const want = new Set(t.addresses.map(addressKey));
    const have = new Set(c.addresses.map(addressKey));
    for (const a of t.addresses)
      if (!have.has(addressKey(a))) problems.push(`${t.device} lacks ${a.address}/${a.prefixLength}`);
    for (const a of c.addresses) {
      if (!want.has(addressKey(a)))
        problems.push(`${t.device} holds unplanned ${a.address}/${a.prefixLength}`);
      else if (a.dadfailed) problems.push(`${t.device}: duplicate address detection failed for ${a.address}`);
      else if (a.tentative && t.up) problems.push(`${t.device}: ${a.address} is still tentative`);
    }
  }
  const steps = routeSteps(live, target, scope);
  for (const c of steps.add) problems.push(`route missing: ${c.filter((x) => x !== "add").join(" ")}`);
  for (const c of steps.remove) problems.push(`route not planned: ${c.filter((x) => x !== "del").join(" ")}`);
  return problems;
}
