/**
 * What a simulated HSM serves once it is configured (`sim rack`, SPEC.md §7): a TCP service on port
 * 1792 — the port Luna Network HSMs serve NTLS on — bound to the addresses the agent applied. Every
 * connection gets one banner line naming the HSM's serial and hostname, and is closed:
 *
 *   HSM-ONBOARD-SIM serial=1234567 hostname=hsm-fra1-a01\r\n
 *
 * so a probe from the customer LAN proves not only that an address answers but that the right HSM
 * holds it. The probe (`PROBE_SCRIPT`) is a self-contained Node script, meant to run inside the LAN
 * namespace with `ip netns exec LAN node -e PROBE_SCRIPT JSON`: it needs nothing from this project,
 * so anyone can run the same check against a kept rack.
 */
import { createServer, type Server } from "node:net";

/** The port Luna appliances serve NTLS on. */
export const NTLS_PORT = 1792;
const BANNER_PREFIX = "HSM-ONBOARD-SIM";
const BANNER = /^HSM-ONBOARD-SIM serial=(\S+)(?: hostname=(\S+))?\r?\n?$/;

export function bannerFor(serial: string, hostname?: string): string {
  if (!/^\S+$/.test(serial) || (hostname !== undefined && !/^\S+$/.test(hostname))) {
    throw new RangeError("serial and hostname must be non-empty and without spaces");
  }
  return `${BANNER_PREFIX} serial=${serial}${hostname === undefined ? "" : ` hostname=${hostname}`}\r\n`;
}

export function parseBanner(text: string): { serial: string; hostname?: string } | undefined {
  const m = BANNER.exec(text);
  if (!m) return undefined;
  return { serial: m[1]!, ...(m[2] !== undefined ? { hostname: m[2] } : {}) };
}

export interface TcpServiceOptions {
  readonly serial: string;
  readonly hostname?: string;
  /** Addresses to bind (IPv4 or IPv6, without prefix); one listener each. */
  readonly addresses: readonly string[];
  /** Default 1792; 0 picks a free port per address (tests). */
  readonly port?: number;
}

export interface TcpService {
  readonly listening: readonly { readonly address: string; readonly port: number }[];
  /** Connections answered so far. */
  readonly connections: number;
  close(): Promise<void>;
}

/** Starts one listener per address; rejects (closing what was opened) if any address cannot be bound. */
export async function startTcpService(options: TcpServiceOptions): Promise<TcpService> {
  if (options.addresses.length === 0) throw new RangeError("a TCP service needs at least one address");
  const banner = bannerFor(options.serial, options.hostname);
  const port = options.port ?? NTLS_PORT;
  const servers: Server[] = [];
  const listening: { address: string; port: number }[] = [];
  let connections = 0;
  const closeAll = () =>
    Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(() => {});
  try {
    for (const address of options.addresses) {
      const server = createServer((socket) => {
        connections++;
        socket.on("error", () => {});
        socket.setTimeout(5000, () => socket.destroy());
        socket.end(banner);
      });
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ host: address, port, exclusive: true }, () => {
          server.off("error", reject);
          const bound = server.address();
          listening.push({ address, port: typeof bound === "object" && bound ? bound.port : port });
          resolve();
        });
      });
    }
  } catch (error) {
    await closeAll();
    throw error;
  }
  return {
    listening,
    get connections() {
      return connections;
    },
    close: closeAll,
  };
}

export interface ProbeTarget {
  readonly address: string;
  readonly port: number;
  /** The serial the banner must name. */
  readonly serial: string;
}

export interface ProbeResult extends ProbeTarget {
  /** Connected and the banner named the expected serial. */
  readonly ok: boolean;
  readonly banner?: string;
  readonly error?: string;
  readonly ms: number;
}

/**
 * The LAN-side probe, for `node -e PROBE_SCRIPT '<JSON>'` where JSON is
 * `{"targets":[{"address","port","serial"}],"timeoutMs":N}`. It connects to every target at once,
 * reads the banner (bounded: `timeoutMs` per connection, and the whole script exits after
 * 2 × timeoutMs whatever happens) and prints one JSON array of results.
 */
export const PROBE_SCRIPT = String.raw`
const net = require("node:net");
const { targets, timeoutMs } = JSON.parse(process.argv[1]);
const pattern = /^HSM-ONBOARD-SIM serial=(\S+)/;
setTimeout(() => { console.log(JSON.stringify({ error: "probe timed out" })); process.exit(3); }, 2 * timeoutMs).unref();
function probe(t) {
  return new Promise((resolve) => {
    const started = Date.now();
    let data = "";
    let settled = false;
    const finish = (extra) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      const m = pattern.exec(data);
      const banner = data.trim() || undefined;
      const ok = !extra.error && m !== null && m[1] === t.serial;
      resolve({ ...t, ok, ...(banner ? { banner } : {}), ...(extra.error ? { error: extra.error } : !ok ? { error: "banner does not name serial " + t.serial } : {}), ms: Date.now() - started });
    };
    const socket = net.connect({ host: t.address, port: t.port });
    socket.setEncoding("utf8");
    socket.setTimeout(timeoutMs, () => finish({ error: "timed out after " + timeoutMs + " ms" }));
    socket.on("data", (d) => { data += d; if (data.length > 512) finish({ error: "banner too long" }); });
    socket.on("end", () => finish({}));
    socket.on("error", (e) => finish({ error: e.code || e.message }));
  });
}
Promise.all(targets.map(probe)).then((results) => { console.log(JSON.stringify(results)); process.exit(0); });
`;
