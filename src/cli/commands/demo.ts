import { resolve } from "node:path";
import { Command, InvalidArgumentError } from "commander";
import { ExitCode } from "../../errors.js";
import {
  DEFAULT_DEMO_HSMS,
  DEMO_OFFICER,
  DEMO_OWNER,
  type DemoHsm,
  type DemoProgress,
  type DemoReport,
  maxRackHsms,
  runDemo,
} from "../../sim/demo.js";
import { type CliContext, writeJson, writeLine } from "../context.js";

const HELP = `
Everything runs in this process, in a temporary directory removed at the end (--keep DIR keeps it):
a PKI (manufacturer root, token CA of "${DEMO_OWNER}", device CA), a virtual YubiKey personalised for
officer "${DEMO_OFFICER}", a station, a rack plan (examples/rack-4.yaml for 4 HSMs, generated for
others), and one agent per HSM with the dry-run network applier. The station writes the signed
configuration onto the card; the card then goes from HSM to HSM, each agent verifies it and
configures itself; back at the station every receipt is read and verified. The card's PIN is made
up for the run and never shown. No root, no hardware, no network traffic.

One line per step on standard output (standard error with --json), then a table: serial, hostname,
addresses, receipt verified, time. Exit status: 0 when every HSM came up and every receipt
verified; otherwise the exit status of the first problem (table: hsm-onboard --help; 15 for a
receipt that does not verify), 130 when interrupted.

Examples:
  $ hsm-onboard demo
  $ hsm-onboard demo --hsms 40
  $ hsm-onboard demo --hsms 4 --keep ./demo-run --json
`;

interface DemoCliOptions {
  readonly hsms: number;
  readonly json?: boolean;
  readonly keep?: string;
}

const INTERRUPTED = 130;

/** `hsm-onboard demo [--hsms N] [--json] [--keep DIR]` (SPEC.md §7): the whole flow, embedded. */
export function demoCommand(ctx: CliContext): Command {
  const max = maxRackHsms();
  return new Command("demo")
    .description("Run the whole trusted onboarding flow in-process: station, card, N HSM agents, receipts")
    .option(
      "--hsms <n>",
      `number of HSMs, 1 to ${max}`,
      (value: string) => {
        const n = Number(value);
        if (!/^\d+$/.test(value) || n < 1 || n > max) {
          throw new InvalidArgumentError(`expected a whole number from 1 to ${max}.`);
        }
        return n;
      },
      DEFAULT_DEMO_HSMS,
    )
    .option("--json", "print the report as JSON on standard output (progress goes to standard error)")
    .option("--keep <dir>", "work in DIR (new or empty) and keep everything there")
    .addHelpText("after", HELP)
    .action(async (options: DemoCliOptions) => {
      const progressOut = options.json ? ctx.stderr : ctx.stdout;
      const controller = new AbortController();
      // Not `once`: a second Ctrl-C while the work directory is being removed must not cut that short.
      const onSignal = () => controller.abort();
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      const keepDir = options.keep === undefined ? undefined : resolve(ctx.cwd, options.keep);
      writeLine(
        progressOut,
        `hsm-onboard demo: ${options.hsms} HSM${options.hsms === 1 ? "" : "s"}, owner "${DEMO_OWNER}", officer "${DEMO_OFFICER}"` +
          (keepDir ? `, in ${keepDir}` : ", in a temporary directory"),
      );
      let report: DemoReport;
      try {
        report = await runDemo({
          hsms: options.hsms,
          ...(keepDir ? { keepDir } : {}),
          signal: controller.signal,
          onProgress: (p) => writeLine(progressOut, progressLine(p)),
        });
      } catch (error) {
        if (controller.signal.aborted) {
          writeLine(ctx.stderr, "hsm-onboard: demo interrupted; its work directory was removed");
          ctx.exitCode = INTERRUPTED;
          return;
        }
        throw error;
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
      if (options.json) writeJson(ctx.stdout, demoReportJson(report));
      else for (const line of demoTable(report)) writeLine(ctx.stdout, line);
      for (const problem of report.problems) writeLine(ctx.stderr, `hsm-onboard: demo: ${problem}`);
      ctx.exitCode = report.ok ? ExitCode.ok : report.exitCode;
    });
}

export function progressLine(p: DemoProgress): string {
  return `${p.ok ? "✓" : "✗"} ${p.message}  (${formatMs(p.ms)})`;
}

/** The final table and summary, one string per line. */
export function demoTable(report: DemoReport): string[] {
  const header = ["SERIAL", "HOSTNAME", "ADDRESSES", "RECEIPT", "TIME"];
  const rows = report.hsms.map((h) => [
    h.serial,
    h.hostname,
    h.addresses.length > 0 ? h.addresses.join(" ") : "-",
    receiptCell(h),
    formatMs(h.onboardingMs),
  ]);
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((r) => [...r[i]!].length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  const configured = report.hsms.filter((h) => h.configured).length;
  const verified = report.hsms.filter((h) => h.receipt.verified).length;
  const n = report.hsms.length;
  const io = ioRange(report.hsms);
  const t = report.timings;
  return [
    "",
    line(header),
    ...rows.map(line),
    "",
    `${report.ok ? "✓" : "✗"} ${configured} of ${n} HSMs configured, ${verified} of ${n} receipts verified at the station ` +
      `in ${formatMs(t.totalMs)} (setup ${formatMs(t.setupMs)}, station write ${formatMs(t.writeMs)}, ` +
      `onboarding ${formatMs(t.onboardingMs)}, receipts ${formatMs(t.receiptsMs)})`,
    `  card I/O per onboarding: ${range(io.apdus)} APDUs, ${range(io.bytes, (n) => n.toLocaleString("en-US"))} bytes ` +
      `to and from the card; a YubiKey 5 would spend ${range(io.modeledCardMs, formatMs)} on them` +
      (report.receiptCollections > 0
        ? `; the card went back to the station ${report.receiptCollections} time${report.receiptCollections === 1 ? "" : "s"} to hand in receipts`
        : ""),
    report.kept ? `  everything is kept in ${report.dir}` : "  the work directory has been removed",
  ];
}

function receiptCell(h: DemoHsm): string {
  if (h.receipt.verified) return "✓ verified";
  return `✗ ${h.configured ? (h.receipt.reason ?? "not verified") : `not configured (exit ${h.exitCode})`}`;
}

/** Smallest and largest card I/O over the configured HSMs (it grows with the receipts already on the card). */
function ioRange(hsms: readonly DemoHsm[]): { apdus: number[]; bytes: number[]; modeledCardMs: number[] } {
  const ok = hsms.filter((h) => h.configured);
  const from = ok.length > 0 ? ok : hsms;
  const span = (f: (h: DemoHsm) => number) => {
    const values = from.map(f);
    return values.length === 0 ? [0, 0] : [Math.min(...values), Math.max(...values)];
  };
  return {
    apdus: span((h) => h.card.apdus),
    bytes: span((h) => h.card.bytesIn + h.card.bytesOut),
    modeledCardMs: span((h) => h.card.modeledCardMs),
  };
}

function range(values: readonly number[], format: (n: number) => string = String): string {
  const [low, high] = [values[0] ?? 0, values[1] ?? 0];
  return format(low) === format(high) ? format(low) : `${format(low)} to ${format(high)}`;
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

/** The report for --json: times in whole milliseconds. */
export function demoReportJson(report: DemoReport) {
  const ms = (n: number) => Math.round(n);
  return {
    ok: report.ok,
    exitCode: report.exitCode,
    problems: report.problems,
    owner: report.owner,
    officer: report.officer,
    cardSerial: report.cardSerial ?? null,
    configurationId: report.configurationId ?? null,
    sequence: report.sequence ?? null,
    hsms: report.hsms.map((h) => ({
      serial: h.serial,
      hostname: h.hostname,
      addresses: h.addresses,
      configured: h.configured,
      exitCode: h.exitCode,
      error: h.error ?? null,
      receipt: {
        written: h.receipt.written,
        verified: h.receipt.verified,
        location: h.receipt.location ?? null,
        reason: h.receipt.reason ?? null,
      },
      onboardingMs: ms(h.onboardingMs),
      card: { ...h.card, modeledCardMs: ms(h.card.modeledCardMs) },
    })),
    receiptCollections: report.receiptCollections,
    dir: report.kept ? report.dir : null,
    timings: Object.fromEntries(Object.entries(report.timings).map(([k, v]) => [k, ms(v)])),
  };
}
