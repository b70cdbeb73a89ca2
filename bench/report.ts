/** Plain-text output of the benchmarks: sections, aligned tables, number formats. */

export function print(line = ""): void {
  process.stdout.write(`${line}\n`);
}

export function section(title: string): void {
  print();
  print(title);
  print("-".repeat(Math.min(110, title.length)));
}

/** A table: the first column left-aligned, the others right-aligned unless `align` says otherwise. */
export function table(
  headers: readonly string[],
  rows: readonly (readonly (string | number)[])[],
  align?: readonly ("l" | "r")[],
): void {
  const cells = [headers, ...rows].map((row) => row.map((c) => String(c)));
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const side = (i: number) => align?.[i] ?? (i === 0 ? "l" : "r");
  const line = (row: readonly string[]) =>
    row
      .map((c, i) => (side(i) === "l" ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd();
  print(`  ${line(cells[0]!)}`);
  print(`  ${widths.map((w) => "-".repeat(w)).join("  ")}`);
  for (const row of cells.slice(1)) print(`  ${line(row)}`);
}

export const int = (n: number): string => Math.round(n).toLocaleString("en-US");
export const fixed = (n: number, digits = 1): string =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
/** A ratio: `124×`, `1.1×`, `0.05×` (two significant digits below 1). */
export const ratio = (n: number): string =>
  `${n >= 10 ? fixed(n, 0) : n >= 1 ? fixed(n, 1) : n.toPrecision(2)}×`;

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

export function mean(values: readonly number[]): number {
  return values.reduce((sum, v) => sum + v, 0) / values.length;
}

/** One SPEC.md §9 target and how the run fared. */
export interface TargetResult {
  readonly target: string;
  readonly measured: string;
  readonly met: boolean | "n/a";
  readonly note?: string;
}
