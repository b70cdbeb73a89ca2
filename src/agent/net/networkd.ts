/**
 * The systemd-networkd applier (issue 12): the network as files the OS owns, so that it survives a
 * reboot without the agent. Same contract as the iproute2 applier (net-backend.ts): snapshot,
 * apply, verify, rollback, and the same crash points.
 *
 * Files, all named `50-hsm-onboard-<device>.{network,netdev}` in one directory (the unit's
 * /etc/systemd/network by default; only files with that prefix are ever written or removed):
 *   - per physical device a .network: [Match] Name=; [Link] MTUBytes=; [Network] Address=, DNS=,
 *     NTP=, VLAN= for its subinterfaces, no router advertisements or link-local addressing beyond
 *     the kernel's; [Route] Gateway= Metric= per default route (IPv4 and IPv6);
 *   - per VLAN subinterface a .netdev (Kind=vlan, Id=, MTUBytes=) and a .network like the above.
 * Each file is written atomically (temporary file, fsync, rename, directory fsync).
 *
 * apply(config): the IPv4 conflict probe first (planned devices brought up; VLAN subinterfaces do
 * not exist yet, so only addresses on physical devices are probed), then the files (crash point
 * `mid-apply:N` after each), then networkd is told (`reload`: `networkctl reload` and `networkctl
 * reconfigure` by default, then networkd's own word that it is done with each link), then the live
 * state is awaited (bounded) through `ip -json`.
 * verify(config): the files are exactly the planned ones and `ip -json` shows exactly the plan.
 * snapshot(config): the live state (as the iproute2 applier reads it) plus the applier's files.
 * rollback(snapshot): the files back as they were (ours not in the snapshot removed), networkd told,
 * and then the live state restored as the iproute2 applier restores it — networkd leaves addresses
 * in the kernel when a file goes away, so the files alone would not bring the old state back.
 */
import { execFile } from "node:child_process";
import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { NetworkApplyError } from "../../errors.js";
import { atomicWriteFile } from "../../util/fs.js";
import { type AgentFaults, NO_FAULTS } from "../faults.js";
import { execIpRunner, type IpRunner, Iproute2Backend } from "./iproute2.js";
import {
  type HostNetworkConfig,
  type LinkPlan,
  messageOf,
  type NetBackend,
  type NetSnapshot,
  physicalDevices,
} from "./net-backend.js";

export const NETWORKD_PREFIX = "50-hsm-onboard-";

export interface NetworkdBackendOptions {
  /** Where the files go (networkd reads /etc/systemd/network). */
  readonly dir: string;
  readonly netns?: string;
  /** Tells networkd to apply the files (default: `networkctl reload`, then `networkctl reconfigure DEV…`). */
  readonly reload?: (devices: readonly string[]) => Promise<void>;
  /** For the live reads and the rollback (default: `ip`, in `netns`). */
  readonly runner?: IpRunner;
  /** Bound on networkd bringing the live state to the plan (default 15,000 ms). */
  readonly settleTimeoutMs?: number;
  readonly pollMs?: number;
  readonly faults?: AgentFaults;
}

/** The applier's files for `config`: file name → content. */
export function networkdFiles(config: HostNetworkConfig): Map<string, string> {
  const files = new Map<string, string>();
  const dns = config.dns.map((s) => `DNS=${s}`);
  const ntp = config.ntp.map((s) => `NTP=${s}`);
  const network = (device: string, link: LinkPlan | undefined, extra: { mtu?: number; vlans?: string[] }) => {
    const lines = ["[Match]", `Name=${device}`, ""];
    if (extra.mtu !== undefined) lines.push("[Link]", `MTUBytes=${extra.mtu}`, "");
    lines.push("[Network]", "LinkLocalAddressing=ipv6", "IPv6AcceptRA=no", "ConfigureWithoutCarrier=yes");
    if (link?.ipv4) lines.push(`Address=${link.ipv4.address}/${link.ipv4.prefixLength}`);
    if (link?.ipv6) lines.push(`Address=${link.ipv6.address}/${link.ipv6.prefixLength}`);
    if (link) lines.push(...dns, ...ntp);
    for (const v of extra.vlans ?? []) lines.push(`VLAN=${v}`);
    for (const gateway of [link?.gateway4, link?.gateway6]) {
      if (gateway !== undefined) lines.push("", "[Route]", `Gateway=${gateway}`, `Metric=${link!.metric}`);
    }
    return `${lines.join("\n")}\n`;
  };
  for (const physical of physicalDevices(config)) {
    const direct = config.links.find((l) => l.device === physical);
    const vlans = config.links.filter((l) => l.physical === physical && l.vlan !== undefined);
    let mtu = direct?.mtu;
    for (const v of vlans) if (v.mtu !== undefined && (mtu === undefined || v.mtu > mtu)) mtu = v.mtu;
    files.set(
      `${NETWORKD_PREFIX}${physical}.network`,
      network(physical, direct, { ...(mtu !== undefined ? { mtu } : {}), vlans: vlans.map((v) => v.device) }),
    );
    for (const v of vlans) {
      const netdev = ["[NetDev]", `Name=${v.device}`, "Kind=vlan"];
      if (v.mtu !== undefined) netdev.push(`MTUBytes=${v.mtu}`);
      netdev.push("", "[VLAN]", `Id=${v.vlan}`);
      files.set(`${NETWORKD_PREFIX}${v.device}.netdev`, `${netdev.join("\n")}\n`);
      files.set(`${NETWORKD_PREFIX}${v.device}.network`, network(v.device, v, {}));
    }
  }
  return files;
}

function networkctl(args: string[], netns: string | undefined): Promise<string> {
  const [cmd, full] = netns ? ["ip", ["netns", "exec", netns, "networkctl", ...args]] : ["networkctl", args];
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      full,
      { timeout: 30_000, killSignal: "SIGKILL", maxBuffer: 4 * 1024 * 1024 },
      (error, out, stderr) => {
        if (error)
          reject(
            new NetworkApplyError(`networkctl ${args.join(" ")}: ${String(stderr).trim() || error.message}`),
          );
        else resolve(String(out));
      },
    );
  });
}

/**
 * Waits (bounded) until networkd itself says it is done with each device (`networkctl --json=short
 * status DEV`: AdministrativeState "configured", or "unmanaged" when no file of ours matches it any
 * more). `reload` and `reconfigure` return once networkd has
 * started over on a link; its addresses and routes then go and come back asynchronously, so the
 * kernel can show the plan (the old addresses, or the first of two reconfigurations) a moment before
 * networkd takes them away again — seen in a clean-clone CI run: settled, then verify found the
 * addresses gone. "failed" or "linger" is an error at once.
 */
async function awaitNetworkdConfigured(
  devices: readonly string[],
  netns: string | undefined,
  timeoutMs: number,
  pollMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const maxTurns = Math.ceil(timeoutMs / pollMs) + 2;
  for (const device of devices) {
    let state = "";
    for (let turn = 0; turn < maxTurns; turn++) {
      const out = await networkctl(["--json=short", "status", device], netns);
      try {
        state = String((JSON.parse(out) as { AdministrativeState?: unknown }).AdministrativeState ?? "");
      } catch {
        throw new NetworkApplyError(`networkctl status ${device}: not JSON: ${out.slice(0, 80)}`);
      }
      // "unmanaged": no .network file matches it any more (a rollback removed ours): nothing to wait for.
      if (state === "configured" || state === "unmanaged") break;
      if (state === "failed" || state === "linger")
        throw new NetworkApplyError(`systemd-networkd says ${device} is ${state}`);
      if (Date.now() >= deadline) break;
      await sleep(pollMs);
    }
    if (state !== "configured" && state !== "unmanaged")
      throw new NetworkApplyError(
        `systemd-networkd did not finish configuring ${device} in ${timeoutMs} ms (${state || "no state"})`,
      );
  }
}

export class NetworkdBackend implements NetBackend {
  readonly name = "networkd" as const;
  readonly dir: string;
  readonly #ip: Iproute2Backend;
  readonly #runner: IpRunner;
  readonly #reload: (devices: readonly string[]) => Promise<void>;
  readonly #settleTimeoutMs: number;
  readonly #pollMs: number;
  readonly #faults: AgentFaults;

  constructor(options: NetworkdBackendOptions) {
    this.dir = options.dir;
    this.#runner = options.runner ?? execIpRunner(options.netns ? { netns: options.netns } : {});
    this.#ip = new Iproute2Backend({ runner: this.#runner });
    this.#settleTimeoutMs = options.settleTimeoutMs ?? 15_000;
    this.#pollMs = options.pollMs ?? 100;
    this.#reload =
      options.reload ??
      (async (devices) => {
        await networkctl(["reload"], options.netns);
        if (devices.length === 0) return;
        await networkctl(["reconfigure", ...devices], options.netns);
        await awaitNetworkdConfigured(devices, options.netns, this.#settleTimeoutMs, this.#pollMs);
      });
    this.#faults = options.faults ?? NO_FAULTS;
  }

  async snapshot(config: HostNetworkConfig): Promise<NetSnapshot> {
    const live = await this.#ip.snapshot(config);
    return { ...live, backend: this.name, files: await this.#readFiles() };
  }

  async apply(config: HostNetworkConfig): Promise<void> {
    // Refuses a missing physical device before anything is written (as iproute2's desiredState does).
    const live = await this.#ip.snapshot(config);
    for (const physical of physicalDevices(config)) {
      if (!live.links.find((l) => l.device === physical)?.exists)
        throw new NetworkApplyError(`interface ${physical} does not exist on this host`);
    }
    await this.probeConflicts(config);
    const wanted = networkdFiles(config);
    let written = 0;
    for (const [name, content] of wanted) {
      await atomicWriteFile(join(this.dir, name), content, 0o644);
      this.#faults.reached(`mid-apply:${++written}`);
    }
    for (const name of Object.keys(await this.#readFiles())) {
      if (!wanted.has(name)) {
        await rm(join(this.dir, name), { force: true });
        this.#faults.reached(`mid-apply:${++written}`);
      }
    }
    await this.#reload(config.links.map((l) => l.device));
    await this.#settle(config);
  }

  async verify(config: HostNetworkConfig): Promise<void> {
    const files = await this.#readFiles();
    const wanted = networkdFiles(config);
    const problems: string[] = [];
    for (const [name, content] of wanted) {
      if (files[name] === undefined) problems.push(`${name} is missing`);
      else if (files[name] !== content) problems.push(`${name} is not the planned file`);
    }
    for (const name of Object.keys(files)) if (!wanted.has(name)) problems.push(`${name} is not planned`);
    if (problems.length > 0)
      throw new NetworkApplyError(`the networkd files are not as planned: ${problems.join("; ")}`);
    await this.#ip.verify(config);
  }

  async rollback(snapshot: NetSnapshot): Promise<void> {
    const before = snapshot.files ?? {};
    const errors: string[] = [];
    try {
      for (const name of Object.keys(await this.#readFiles())) {
        if (before[name] === undefined) await rm(join(this.dir, name), { force: true });
      }
      for (const [name, content] of Object.entries(before)) {
        await atomicWriteFile(join(this.dir, name), content, 0o644);
      }
    } catch (error) {
      errors.push(`restoring the networkd files: ${messageOf(error)}`);
    }
    try {
      await this.#reload(snapshot.links.map((l) => l.device));
    } catch (error) {
      errors.push(messageOf(error));
    }
    try {
      // networkd leaves in the kernel what a removed file had configured: restore the live state too.
      await this.#ip.rollback({ ...snapshot, backend: "iproute2" });
    } catch (error) {
      errors.push(messageOf(error));
    }
    if (errors.length > 0)
      throw new NetworkApplyError(`the network could not be restored: ${errors.join("; ")}`);
  }

  async probeConflicts(config: HostNetworkConfig): Promise<void> {
    // The probe needs the devices up; VLAN subinterfaces do not exist before networkd makes them.
    const direct = { ...config, links: config.links.filter((l) => l.vlan === undefined) };
    const live = await this.#ip.snapshot(direct);
    const down = live.links.filter((l) => l.exists && l.physical && !l.up).map((l) => l.device);
    for (const device of down) await this.#runner.run(["link", "set", "dev", device, "up"]);
    await this.#ip.probeConflicts(direct);
  }

  /** Waits (bounded) until networkd has brought the live state to the plan. */
  async #settle(config: HostNetworkConfig): Promise<void> {
    const deadline = Date.now() + this.#settleTimeoutMs;
    const maxTurns = Math.ceil(this.#settleTimeoutMs / this.#pollMs) + 2;
    let last = "";
    for (let turn = 0; turn < maxTurns; turn++) {
      try {
        await this.#ip.verify(config);
        return;
      } catch (error) {
        last = messageOf(error);
      }
      if (Date.now() >= deadline) break;
      await sleep(this.#pollMs);
    }
    throw new NetworkApplyError(
      `systemd-networkd did not bring the network to the plan in ${this.#settleTimeoutMs} ms: ${last}`,
    );
  }

  /** The applier's own files in the directory (name → content). */
  async #readFiles(): Promise<Record<string, string>> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (error) {
      throw new NetworkApplyError(`cannot read the networkd directory ${this.dir}: ${messageOf(error)}`);
    }
    const out: Record<string, string> = {};
    for (const name of names.sort()) {
      if (!name.startsWith(NETWORKD_PREFIX) || !/\.(network|netdev)$/.test(name)) continue;
      out[name] = await readFile(join(this.dir, name), "utf8");
    }
    return out;
  }
}
