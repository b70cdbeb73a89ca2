/**
 * Host settings from the signed configuration (issue 12): the hostname (sethostname through the
 * `hostname` program, and the hostname file), and — for the iproute2 applier, which has nobody else
 * to hand them to — DNS servers (a resolv.conf) and NTP servers (a systemd-timesyncd drop-in). With
 * the networkd applier DNS= and NTP= are in its .network files already, so only the hostname is set
 * here.
 *
 * `withHostSettings(net, host)` wraps an applier so that the host settings share its contract: the
 * snapshot carries the previous hostname and file contents, apply sets them after the network,
 * verify checks them, rollback restores them (files written back or removed, the old hostname set
 * again) before the network is rolled back. Every file is written atomically.
 */
import { execFile } from "node:child_process";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { NetworkApplyError } from "../errors.js";
import { atomicWriteFile } from "../util/fs.js";
import type { HostNetworkConfig, NetBackend, NetSnapshot } from "./net/net-backend.js";

export interface HostSettingsOptions {
  /** The hostname file (default /etc/hostname). */
  readonly hostnameFile?: string;
  /** resolv.conf for DNS= (undefined: DNS not written here, e.g. with networkd). */
  readonly resolvConf?: string;
  /** systemd-timesyncd drop-in for NTP= (undefined: not written here). */
  readonly timesyncdDropIn?: string;
  /** The `hostname` program and any prefix (default ["hostname"]): sets and reads the UTS hostname. */
  readonly hostnameCommand?: readonly string[];
}

/** The usual places under an /etc directory; resolv.conf and timesyncd only for iproute2. */
export function hostSettingsUnder(etc: string, applier: NetBackend["name"]): HostSettingsOptions {
  return {
    hostnameFile: join(etc, "hostname"),
    ...(applier === "iproute2"
      ? {
          resolvConf: join(etc, "resolv.conf"),
          timesyncdDropIn: join(etc, "systemd", "timesyncd.conf.d", "50-hsm-onboard.conf"),
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
}

export class HostSettings {
  readonly #options: HostSettingsOptions;
  readonly #command: readonly string[];

  constructor(options: HostSettingsOptions = {}) {
    this.#options = options;
    this.#command = options.hostnameCommand ?? ["hostname"];
  }

  /** The files and their planned content for `config`. */
  files(config: HostNetworkConfig): Map<string, string> {
    const out = new Map<string, string>();
    out.set(this.#options.hostnameFile ?? "/etc/hostname", `${config.hostname}\n`);
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
    return { hostname: await this.#hostname(), files };
  }

  async apply(config: HostNetworkConfig): Promise<void> {
    if (!HOSTNAME.test(config.hostname))
      throw new NetworkApplyError(`hostname ${JSON.stringify(config.hostname)} is not a valid host name`);
    for (const [path, content] of this.files(config)) await atomicWriteFile(path, content, 0o644);
    await this.#run([config.hostname]);
  }

  async verify(config: HostNetworkConfig): Promise<void> {
    const problems: string[] = [];
    const now = await this.#hostname();
    if (now !== config.hostname) problems.push(`the hostname is ${now}, not ${config.hostname}`);
    for (const [path, content] of this.files(config)) {
      if ((await readFile(path, "utf8").catch(() => null)) !== content)
        problems.push(`${path} is not as planned`);
    }
    if (problems.length > 0)
      throw new NetworkApplyError(`host settings not as planned: ${problems.join("; ")}`);
  }

  async rollback(snapshot: HostSnapshot): Promise<void> {
    for (const [path, content] of Object.entries(snapshot.files)) {
      if (content === null) await rm(path, { force: true });
      else await atomicWriteFile(path, content, 0o644);
    }
    await this.#run([snapshot.hostname]);
  }

  async #hostname(): Promise<string> {
    return (await this.#run([])).trim();
  }

  #run(args: string[]): Promise<string> {
    const [cmd, ...prefix] = this.#command as [string, ...string[]];
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
