/**
 * Host settings from the signed configuration (issue 12): the hostname, and — for the iproute2
 * applier, which has nobody else to hand them to — DNS servers (a resolv.conf) and NTP servers (a
 * systemd-timesyncd drop-in). With the networkd applier DNS= and NTP= are in its .network files
 * already, so only the hostname is set here.
 *
 * How the hostname is set (chosen at factory-init, docs/DECISIONS.md "hostname through hostnamed"):
 * - `hostnamed` (the appliance default): `hostnamectl --static hostname NAME` over D-Bus.
 *   systemd-hostnamed writes /etc/hostname and sets the kernel hostname; the agent needs neither
 *   CAP_SYS_ADMIN (sethostname) nor a writable /etc — the unit keeps CAP_NET_ADMIN only. hostnamed
 *   lets a root caller do this without polkit rules (tested with a CAP_NET_ADMIN-only agent).
 * - `sethostname`: the `hostname` program (sethostname(2), CAP_SYS_ADMIN) and the hostname file
 *   written by the agent — for systems without systemd; the unit would have to grant CAP_SYS_ADMIN
 *   and a writable /etc/hostname, which the shipped unit does not.
 * DNS and NTP files go into the agent's own directory (default /etc/hsm-onboard, the unit's
 * ConfigurationDirectory=): the image links /etc/resolv.conf and the timesyncd drop-in to them
 * (docs/APPLIANCE.md), so the agent writes nowhere else under /etc. timesyncd reads the drop-in only
 * when it starts, so with hostnamed (a systemd appliance) the NTP servers are also handed to a
 * running timesyncd over D-Bus (SetRuntimeNTPServers), verified and rolled back like the rest.
 *
 * `withHostSettings(net, host)` wraps an applier so that the host settings share its contract: the
 * snapshot carries the previous hostname and file contents, apply sets them after the network,
 * verify checks them, rollback restores them (files written back or removed, the old hostname set
 * again) before the network is rolled back. Every file is written atomically.
 */
import { execFile } from "node:child_process";
import { mkdir, readFile, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { NetworkApplyError } from "../errors.js";
import { atomicWriteFile } from "../util/fs.js";
import type { HostNetworkConfig, NetBackend, NetSnapshot } from "./net/net-backend.js";

/** How the hostname is set: through systemd-hostnamed, or by the agent itself. */
export type HostnameVia = "hostnamed" | "sethostname";

/** factory-init / agent run `--host-settings`: how, or not at all. */
export const HOST_SETTINGS_CHOICES = ["hostnamed", "sethostname", "none"] as const;
export type HostSettingsChoice = (typeof HOST_SETTINGS_CHOICES)[number];

export interface HostSettingsOptions {
  /** Default `hostnamed`. */
  readonly hostnameVia?: HostnameVia;
  /** The hostname file (default /etc/hostname): written by hostnamed (read here), or here. */
  readonly hostnameFile?: string;
  /** resolv.conf for DNS= (undefined: DNS not written here, e.g. with networkd). */
  readonly resolvConf?: string;
  /** systemd-timesyncd drop-in for NTP= (undefined: not written here). */
  readonly timesyncdDropIn?: string;
  /** The `hostname` program and any prefix (default ["hostname"]): reads the kernel's name; sets it with `sethostname`. */
  readonly hostnameCommand?: readonly string[];
  /** `hostnamed`: the hostnamectl program and any prefix (default ["hostnamectl"]). */
  readonly hostnamectl?: readonly string[];
  /** `hostnamed` with a timesyncd drop-in: busctl and any prefix (default ["busctl"]). */
  readonly busctl?: readonly string[];
}

const TIMESYNC = [
  "org.freedesktop.timesync1",
  "/org/freedesktop/timesync1",
  "org.freedesktop.timesync1.Manager",
];

/** The agent's own directory under `etc` for the DNS and NTP files (the unit's ConfigurationDirectory=). */
export const HOST_FILES_DIR = "hsm-onboard";

/**
 * The usual places under an /etc directory: the hostname file; for iproute2 also
 * `etc/hsm-onboard/resolv.conf` and `etc/hsm-onboard/timesyncd.conf`.
 */
export function hostSettingsUnder(
  etc: string,
  applier: NetBackend["name"],
  hostnameVia: HostnameVia = "hostnamed",
): HostSettingsOptions {
  return {
    hostnameVia,
    hostnameFile: join(etc, "hostname"),
    ...(applier === "iproute2"
      ? {
          resolvConf: join(etc, HOST_FILES_DIR, "resolv.conf"),
          timesyncdDropIn: join(etc, HOST_FILES_DIR, "timesyncd.conf"),
        }
      : {}),
  };
}

const HOSTNAME =
  /^(?=.{1,64}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

export interface HostSnapshot {
  readonly hostname: string;
  /** path → previous content (null: the file did not exist). */
  readonly files: Record<string, string | null>;
  /** systemd-timesyncd's runtime NTP servers before (absent: timesyncd not reachable over D-Bus). */
  readonly ntpRuntime?: string[];
}

export class HostSettings {
  readonly #options: HostSettingsOptions;
  readonly #via: HostnameVia;
  readonly #command: readonly string[];
  readonly #hostnamectl: readonly string[];
  readonly #busctl: readonly string[];
  readonly #hostnameFile: string;

  constructor(options: HostSettingsOptions = {}) {
    this.#options = options;
    this.#via = options.hostnameVia ?? "hostnamed";
    this.#command = options.hostnameCommand ?? ["hostname"];
    this.#hostnamectl = options.hostnamectl ?? ["hostnamectl"];
    this.#busctl = options.busctl ?? ["busctl"];
    this.#hostnameFile = options.hostnameFile ?? "/etc/hostname";
  }

  get hostnameVia(): HostnameVia {
    return this.#via;
  }

  /** The files and their planned content for `config` (the hostname file too: hostnamed writes it). */
  files(config: HostNetworkConfig): Map<string, string> {
    const out = new Map<string, string>();
    out.set(this.#hostnameFile, `${config.hostname}\n`);
    if (this.#options.resolvConf) {
      out.set(
        this.#options.resolvConf,
        `# written by hsm-onboard from the signed configuration\n${config.dns.map((s) => `nameserver ${s}\n`).join("")}`,
      );
    }
    if (this.#options.timesyncdDropIn) {
      out.set(
        this.#options.timesyncdDropIn,
        `# written by hsm-onboard from the signed configuration\n[Time]\nNTP=${config.ntp.join(" ")}\n`,
      );
    }
    return out;
  }

  async snapshot(config: HostNetworkConfig): Promise<HostSnapshot> {
    const files: Record<string, string | null> = {};
    for (const path of this.files(config).keys())
      files[path] = await readFile(path, "utf8").catch(() => null);
    const ntpRuntime = await this.#ntpRuntime();
    return { hostname: await this.#hostname(), files, ...(ntpRuntime ? { ntpRuntime } : {}) };
  }

  /**
   * With hostnamed (a systemd appliance) and a timesyncd drop-in: timesyncd's runtime NTP servers
   * over D-Bus, so that the new servers take effect at once (the drop-in only at its next start).
   * Undefined when timesyncd cannot be reached (not installed, another NTP daemon): then the file
   * alone carries them.
   */
  async #ntpRuntime(): Promise<string[] | undefined> {
    if (this.#via !== "hostnamed" || !this.#options.timesyncdDropIn) return undefined;
    try {
      const out = await this.#run(this.#busctl, [
        "--json=short",
        "get-property",
        ...TIMESYNC,
        "RuntimeNTPServers",
      ]);
      const parsed = JSON.parse(out) as { data?: unknown };
      return Array.isArray(parsed.data) ? parsed.data.map(String) : undefined;
    } catch {
      return undefined;
    }
  }

  #setNtpRuntime(servers: readonly string[]): Promise<string> {
    return this.#run(this.#busctl, [
      "call",
      ...TIMESYNC,
      "SetRuntimeNTPServers",
      "as",
      String(servers.length),
      ...servers,
    ]);
  }

  async apply(config: HostNetworkConfig): Promise<void> {
    if (!HOSTNAME.test(config.hostname))
      throw new NetworkApplyError(`hostname ${JSON.stringify(config.hostname)} is not a valid host name`);
    for (const [path, content] of this.files(config)) {
      if (path === this.#hostnameFile && this.#via === "hostnamed") continue;
      await mkdir(dirname(path), { recursive: true, mode: 0o755 });
      await atomicWriteFile(path, content, 0o644);
    }
    await this.#setHostname(config.hostname);
    if ((await this.#ntpRuntime()) !== undefined) await this.#setNtpRuntime(config.ntp);
  }

  async verify(config: HostNetworkConfig): Promise<void> {
    const problems: string[] = [];
    const now = await this.#hostname();
    if (now !== config.hostname) problems.push(`the hostname is ${now}, not ${config.hostname}`);
    for (const [path, content] of this.files(config)) {
      if ((await readFile(path, "utf8").catch(() => null)) !== content)
        problems.push(`${path} is not as planned`);
    }
    const ntp = await this.#ntpRuntime();
    if (ntp !== undefined && ntp.join(" ") !== config.ntp.join(" "))
      problems.push(
        `timesyncd's runtime NTP servers are ${ntp.join(" ") || "none"}, not ${config.ntp.join(" ")}`,
      );
    if (problems.length > 0)
      throw new NetworkApplyError(`host settings not as planned: ${problems.join("; ")}`);
  }

  async rollback(snapshot: HostSnapshot): Promise<void> {
    for (const [path, content] of Object.entries(snapshot.files)) {
      if (path === this.#hostnameFile && this.#via === "hostnamed") continue;
      if (content === null) await rm(path, { force: true });
      else await atomicWriteFile(path, content, 0o644);
    }
    if (this.#via === "sethostname") {
      await this.#run(this.#command, [snapshot.hostname]);
      return;
    }
    if (snapshot.ntpRuntime !== undefined) await this.#setNtpRuntime(snapshot.ntpRuntime);
    // hostnamed: the static name back (an empty one removes /etc/hostname), then the kernel's if it
    // still differs (no static name before, or a kernel name that was not the static one).
    const before = snapshot.files[this.#hostnameFile];
    await this.#run(this.#hostnamectl, ["--static", "hostname", before?.trim() ?? ""]);
    if ((await this.#hostname()) !== snapshot.hostname)
      await this.#run(this.#hostnamectl, ["--transient", "hostname", snapshot.hostname]);
  }

  async #setHostname(name: string): Promise<void> {
    if (this.#via === "hostnamed") await this.#run(this.#hostnamectl, ["--static", "hostname", name]);
    else await this.#run(this.#command, [name]);
  }

  /** The kernel's hostname, read with the `hostname` program (reading needs no capability). */
  async #hostname(): Promise<string> {
    return (await this.#run(this.#command, [])).trim();
  }

  #run(command: readonly string[], args: string[]): Promise<string> {
    const [cmd, ...prefix] = command as [string, ...string[]];
    return new Promise((resolve, reject) => {
      execFile(
        cmd,
        [...prefix, ...args],
        { timeout: 10_000, killSignal: "SIGKILL" },
        (error, stdout, stderr) => {
          if (error)
            reject(
              new NetworkApplyError(
                `${[cmd, ...prefix, ...args].join(" ")}: ${String(stderr).trim() || error.message}`,
              ),
            );
          else resolve(String(stdout));
        },
      );
    });
  }
}

/** `net` with the host settings under the same snapshot / apply / verify / rollback contract. */
export function withHostSettings(net: NetBackend, host: HostSettings): NetBackend {
  return {
    name: net.name,
    async snapshot(config) {
      const snapshot = await net.snapshot(config);
      return { ...snapshot, host: await host.snapshot(config) };
    },
    async apply(config) {
      await net.apply(config);
      await host.apply(config);
    },
    async verify(config) {
      await net.verify(config);
      await host.verify(config);
    },
    async rollback(snapshot: NetSnapshot) {
      const errors: string[] = [];
      if (snapshot.host) await host.rollback(snapshot.host).catch((e: Error) => errors.push(e.message));
      await net.rollback(snapshot).catch((e: Error) => errors.push(e.message));
      if (errors.length > 0) throw new NetworkApplyError(errors.join("; "));
    },
    probeConflicts: (config) => net.probeConflicts(config),
  };
}
