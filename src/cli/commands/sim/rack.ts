import { Command, InvalidArgumentError, Option } from "commander";
import { ExitCode, UsageError } from "../../../errors.js";
import {
  cleanupKeptRacks,
  MAX_RACK_HSMS,
  RackError,
  type RackHsm,
  type RackProgress,
  type RackReport,
  reachabilityHint,
  runRack,
  STATE_ROOT_ENV,
} from "../../../sim/rack.js";
import { NTLS_PORT, startTcpService } from "../../../sim/tcp-service.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";

const DEFAULT_HSMS = 4;
const INTERRUPTED = 130;

const HELP = `
Needs root. Builds a customer LAN (a network namespace with a bridge), a station namespace and one
namespace per HSM (eth0 on the bridge, its own pcscd with a vpcd reader, its agent process with the
iproute2 applier). The station writes the plan onto ONE virtual card through PC/SC; the card (a
\`card emulate\` process on one state file) is then moved from HSM to HSM: removed from one reader,
inserted into the next. Each agent verifies the card and configures eth0, then serves TCP ${NTLS_PORT}
on its addresses. Every address is probed from inside the LAN namespace (the banner must name the
HSM's serial), and the receipts are read back and verified at the station through PC/SC.

Everything is removed at the end, also on failure and Ctrl-C. With --keep the namespaces and the TCP
services stay up (and --json prints each HSM's namespace, serial and addresses, and the LAN
namespace) until \`sim rack --cleanup\`, which removes whatever kept or crashed runs left (they are
recorded under /run/hsm-onboard-sim, or $HSM_ONBOARD_SIM_STATE_DIR).

Exit status: 0 every HSM configured, reachable and its receipt verified; 2 not root or a tool
missing; otherwise the exit status of the first problem (table: hsm-onboard --help; 20 an
address not reachable, 15 a receipt not verified); 130 interrupted.

Examples:
  $ sudo hsm-onboard sim rack --hsms 4
  $ sudo hsm-onboard sim rack --hsms 8 --keep --json
  $ sudo hsm-onboard sim rack --hsms 2 --net networkd
  $ sudo hsm-onboard sim rack --cleanup`;

interface SimRackOptions {
  readonly hsms?: number;
  readonly keep?: boolean;
  readonly json?: boolean;
  readonly cleanup?: boolean;
  readonly net?: "iproute2" | "networkd";
}

function parseHsms(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > MAX_RACK_HSMS) {
    throw new InvalidArgumentError(`expected a whole number from 1 to ${MAX_RACK_HSMS}.`);
  }
  return n;
}

/** `hsm-onboard sim rack --hsms N [--keep] [--json]` and `sim rack --cleanup` (SPEC.md §7). */
export function simRackCommand(ctx: CliContext): Command {
  return new Command("rack")
    .description(
      "Simulate a rack: real pcscd + one virtual card moved HSM to HSM + network namespaces (root)",
    )
    .option("--hsms <n>", `number of HSMs, 1 to ${MAX_RACK_HSMS} (default ${DEFAULT_HSMS})`, parseHsms)
    .option("--keep", "leave the namespaces and TCP services up (remove them later with --cleanup)")
    .option("--json", "print the report as JSON on standard output (progress goes to standard error)")
    .option("--cleanup", "remove what kept (or crashed) runs left, then exit")
    .addOption(
      new Option(
        "--net <applier>",
        "the HSMs' network applier: iproute2, or networkd (the real systemd-networkd in each HSM namespace)",
      )
        .choices(["iproute2", "networkd"])
        .default("iproute2"),
    )
    .addHelpText("after", HELP)
    .action(async (options: SimRackOptions) => {
      if (process.getuid?.() !== 0) {
        throw new UsageError(
          "sim rack needs root (network namespaces, a private pcscd per HSM); `hsm-onboard demo` runs the same flow without root",
        );
      }
      if (options.cleanup) {
        if (options.hsms !== undefined || options.keep)
          throw new UsageError("--cleanup takes no --hsms or --keep");
        await cleanup(ctx, options.json === true, stateRoot(ctx));
        return;
      }
      const hsms = options.hsms ?? DEFAULT_HSMS;
      const progressOut = options.json ? ctx.stderr : ctx.stdout;
      const controller = new AbortController();
      // Not `once`: a second Ctrl-C during the cleanup must not end the process half-way through it.
      const onSignal = () => controller.abort();
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      writeLine(progressOut, `hsm-onboard sim rack: ${hsms} HSM${hsms === 1 ? "" : "s"}`);
      let report: RackReport;
      try {
        report = await runRack({
          hsms,
          keep: options.keep === true,
          ...(options.net === "networkd" ? { net: "networkd" as const } : {}),
          ...stateRoot(ctx),
          signal: controller.signal,
          onProgress: (p) => writeLine(progressOut, progressLine(p)),
        });
      } catch (error) {
        if (controller.signal.aborted) {
          writeLine(ctx.stderr, "hsm-onboard: sim rack interrupted; what it had set up was removed");
          ctx.exitCode = INTERRUPTED;
          return;
        }
        if (error instanceof RackError) {
          writeLine(ctx.stderr, `hsm-onboard: sim rack: ${error.message}`);
          ctx.exitCode = error.exitCode;
          return;
        }
        throw error;
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
      if (options.json) writeJson(ctx.stdout, rackReportJson(report));
      else for (const line of rackTable(report)) writeLine(ctx.stdout, line);
      for (const problem of report.problems) writeLine(ctx.stderr, `hsm-onboard: sim rack: ${problem}`);
      ctx.exitCode = report.ok ? ExitCode.ok : report.exitCode;
    });
}

function stateRoot(ctx: CliContext): { stateRoot?: string } {
  const dir = ctx.env[STATE_ROOT_ENV];
  return dir ? { stateRoot: dir } : {};
}

async function cleanup(ctx: CliContext, json: boolean, root: { stateRoot?: string }): Promise<void> {
  const result = await cleanupKeptRacks(root.stateRoot);
  if (json) writeJson(ctx.stdout, result);
  else {
    if (result.removed.length === 0 && result.active.length === 0)
      writeLine(ctx.stdout, "nothing to clean up");
    for (const r of result.removed) {
      writeLine(
        ctx.stdout,
        `✓ run ${r.runId}: ${r.namespaces.length} namespace${r.namespaces.length === 1 ? "" : "s"} deleted, ` +
          `${r.processes} process${r.processes === 1 ? "" : "es"} stopped, ${r.workDir} removed`,
      );
    }
    for (const a of result.active)
      writeLine(ctx.stdout, `- run ${a.runId} is still running (pid ${a.pid}): left alone`);
  }
  for (const p of result.problems) writeLine(ctx.stderr, `hsm-onboard: sim rack --cleanup: ${p}`);
  ctx.exitCode = result.problems.length > 0 ? ExitCode.internal : ExitCode.ok;
}

function progressLine(p: RackProgress): string {
  return `${p.ok ? "✓" : "✗"} ${p.message}  (${formatMs(p.ms)})`;
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

function reachCell(h: RackHsm): string {
  if (!h.configured) return "-";
  const ok = h.reachable.filter((r) => r.ok).length;
  return `${ok === h.addresses.length ? "✓" : "✗"} ${ok}/${h.addresses.length}`;
}

export function rackTable(report: RackReport): string[] {
  const header = ["SERIAL", "HOSTNAME", "NAMESPACE", "ADDRESSES", `TCP ${NTLS_PORT}`, "RECEIPT", "TIME"];
  const rows = report.hsms.map((h) => [
    h.serial,
    h.hostname,
    h.namespace,
    h.addresses.join(" "),
    reachCell(h),
    h.receipt.verified
      ? "✓ verified"
      : `✗ ${h.configured ? h.receipt.reason : `not configured (exit ${h.exitCode})`}`,
    formatMs(h.onboardingMs),
  ]);
  const widths = header.map((t, i) => Math.max(t.length, ...rows.map((r) => [...r[i]!].length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  const n = report.hsms.length;
  const configured = report.hsms.filter((h) => h.configured).length;
  const addresses = report.hsms.reduce((s, h) => s + h.addresses.length, 0);
  const reachable = report.hsms.reduce((s, h) => s + h.reachable.filter((r) => r.ok).length, 0);
  const verified = report.hsms.filter((h) => h.receipt.verified).length;
  const t = report.timings;
  const out = [
    "",
    line(header),
    ...rows.map(line),
    "",
    `${report.ok ? "✓" : "✗"} ${configured} of ${n} HSMs configured, ${reachable} of ${addresses} addresses reachable from ` +
      `the LAN, ${verified} of ${n} receipts verified, in ${formatMs(t.totalMs)} (setup ${formatMs(t.setupMs)}, ` +
      `station write ${formatMs(t.writeMs)}, onboarding ${formatMs(t.onboardingMs)}, probe ${formatMs(t.probeMs)}, ` +
      `receipts ${formatMs(t.receiptsMs)}, cleanup ${formatMs(t.cleanupMs)})`,
  ];
  if (report.kept) {
    const first = report.hsms.find((h) => h.configured)?.addresses[0]?.split("/")[0];
    out.push(
      `  kept: LAN namespace ${report.lan.namespace} (${report.lan.addresses.join(" ")}), work directory ${report.workDir}`,
      ...(first ? [`  check: ${reachabilityHint(report.lan.namespace, first)}`] : []),
      "  remove: hsm-onboard sim rack --cleanup",
    );
  }
  return out;
}

export function rackReportJson(report: RackReport) {
  const ms = (n: number) => Math.round(n);
  return {
    ok: report.ok,
    exitCode: report.exitCode,
    problems: report.problems,
    runId: report.runId,
    applier: report.applier,
    lan: report.lan,
    station: report.station,
    configurationId: report.configurationId ?? null,
    sequence: report.sequence ?? null,
    hsms: report.hsms.map((h) => ({
      serial: h.serial,
      hostname: h.hostname,
      namespace: h.namespace,
      addresses: h.addresses,
      configured: h.configured,
      exitCode: h.exitCode,
      error: h.error ?? null,
      reachable: h.reachable.map((r) => ({
        address: r.address,
        port: r.port,
        ok: r.ok,
        banner: r.banner ?? null,
        error: r.error ?? null,
      })),
      receipt: {
        verified: h.receipt.verified,
        location: h.receipt.location ?? null,
        reason: h.receipt.reason ?? null,
      },
      onboardingMs: ms(h.onboardingMs),
      agentMs: ms(h.agentMs),
      cardMoveMs: ms(h.cardMoveMs),
    })),
    receiptCollections: report.receiptCollections,
    kept: report.kept,
    stateFile: report.stateFile,
    workDir: report.workDir,
    timings: Object.fromEntries(Object.entries(report.timings).map(([k, v]) => [k, ms(v)])),
  };
}

interface SimServeOptions {
  readonly serial: string;
  readonly hostname?: string;
  readonly listen: string[];
  readonly port: number;
}

/**
 * `hsm-onboard sim serve` (hidden): the TCP service a simulated HSM runs once configured. Started by
 * `sim rack` inside the HSM's namespace; prints one JSON line when listening; SIGTERM stops it.
 */
export function simServeCommand(ctx: CliContext): Command {
  return new Command("serve")
    .description(`Serve the simulated HSM's banner on TCP ${NTLS_PORT} (started by sim rack)`)
    .requiredOption("--serial <serial>", "the HSM's serial, named in the banner")
    .option("--hostname <name>", "the HSM's hostname, named in the banner")
    .option(
      "--listen <address>",
      "an address to bind (repeatable)",
      (value: string, previous: string[]) => [...previous, value],
      [] as string[],
    )
    .option(
      "--port <port>",
      "TCP port",
      (value: string) => {
        const n = Number(value);
        if (!/^\d+$/.test(value) || n < 1 || n > 65535) throw new InvalidArgumentError("not a TCP port.");
        return n;
      },
      NTLS_PORT,
    )
    .action(async (options: SimServeOptions) => {
      if (options.listen.length === 0) throw new UsageError("sim serve needs at least one --listen ADDRESS");
      const service = await startTcpService({
        serial: options.serial,
        ...(options.hostname !== undefined ? { hostname: options.hostname } : {}),
        addresses: options.listen,
        port: options.port,
      });
      writeLine(
        ctx.stdout,
        JSON.stringify({ ev: "listening", serial: options.serial, listening: service.listening }),
      );
      await new Promise<void>((resolve) => {
        process.once("SIGTERM", () => resolve());
        process.once("SIGINT", () => resolve());
      });
      await service.close();
      writeLine(ctx.stdout, JSON.stringify({ ev: "stopped", connections: service.connections }));
    });
}
