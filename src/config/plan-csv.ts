/**
 * CSV network plans (SPEC.md §7.1): one row per HSM interface, under the header
 * `serial,hostname,interface,ipv4_cidr,gateway,dns,ntp,vlan,mtu,ipv6_cidr,ipv6_gateway`
 * (columns in any order; `serial`, `hostname` and one of `ipv4_cidr`/`ipv6_cidr` are required).
 *
 * - `ipv4_cidr`/`ipv6_cidr` hold the host's address with its subnet's prefix (`198.51.100.11/24`).
 * - Subnets are derived from the rows: rows whose `ipv4_cidr` lies in the same network form one
 *   subnet, named `net-<network>-<prefix>` (`net-198.51.100.0-24`); a row with only `ipv6_cidr`
 *   joins the subnet that already carries that IPv6 network, else forms an IPv6-only subnet
 *   (`net-2001:db8:120::-64`). Subnets are listed in order of first use.
 * - All rows of a subnet must agree on `gateway`, `dns`, `ntp`, `vlan`, `mtu` and `ipv6_gateway`
 *   (an empty cell is a value too), and the rows that give `ipv6_cidr` on its IPv6 network.
 * - `interface` defaults to `eth0`; `dns` and `ntp` are space-separated lists.
 * - Repeating a serial adds an interface to the same HSM (the hostname must then repeat too).
 * - There is no owner column: the owner comes from `--owner NAME`.
 *
 * Problems name the row by its line number in the file (`row 7`; the header is row 1) and the
 * field by its column.
 */
import { CsvError, parse } from "csv-parse/sync";
import {
  canonicalIp,
  type IpNetwork,
  type Ipv4Address,
  type Ipv6Address,
  parseIpv4Cidr,
  parseIpv6Cidr,
} from "./ip.js";
import type { NetworkPlan } from "./plan-model.js";
import {
  type DraftHsm,
  type DraftInterface,
  type DraftSubnet,
  type HsmKey,
  type InterfaceKey,
  type Location,
  PLAN_ENTRY,
  PLAN_LIST_ORDER,
  type PlanDraft,
  type PlanOptions,
  type ProblemList,
  planMessages,
  quote,
  type SubnetKey,
} from "./validate-plan.js";

export const CSV_COLUMNS = [
  "serial",
  "hostname",
  "interface",
  "ipv4_cidr",
  "gateway",
  "dns",
  "ntp",
  "vlan",
  "mtu",
  "ipv6_cidr",
  "ipv6_gateway",
] as const;
export type CsvColumn = (typeof CSV_COLUMNS)[number];

const DEFAULT_INTERFACE = "eth0";
const HEADER_ROW = 1;

export const csvMessages = {
  noHeader: () => "is empty: a CSV plan needs a header row and one row per HSM interface",
  unknownColumn: (name: string) => `unknown column ${quote(name)} (expected: ${CSV_COLUMNS.join(", ")})`,
  duplicateColumn: (name: string) => `column ${quote(name)} appears more than once`,
  missingColumn: (name: string) => `missing column ${name}`,
  missingAddressColumn: () => "needs an ipv4_cidr or an ipv6_cidr column",
  fieldCount: (count: number, expected: number) => `has ${count} fields but the header has ${expected}`,
  ownerRequired: () => "is required: pass --owner NAME with a CSV plan",
  disagreement: (subnet: string, column: string, firstRow: number, firstValue: string, value: string) =>
    `rows of subnet ${subnet} must agree on ${column}: row ${firstRow} has ${shown(firstValue)}, this row has ${shown(value)}`,
  hostnameMismatch: (serial: string, firstRow: number, firstHostname: string) =>
    `serial ${quote(serial)} is also in row ${firstRow} with hostname ${quote(firstHostname)}; ` +
    "rows that repeat a serial add interfaces to one HSM and must repeat its hostname (a duplicate serial?)",
} as const;

function shown(value: string): string {
  return value === "" ? "an empty cell" : quote(value);
}

/** The name a CSV plan gives the subnet of `network` (`198.51.100.0/24` → `net-198.51.100.0-24`). */
export function csvSubnetName(network: string): string {
  return `net-${network.replace("/", "-")}`;
}

// ---------------------------------------------------------------------------------------------
// Reading

interface CsvRecord {
  readonly record: string[];
  readonly info: { readonly lines: number };
}

/** One data row, its cells read and its addresses parsed. */
interface Row {
  readonly line: number;
  readonly serial: string;
  readonly hostname: string;
  readonly iface: string;
  readonly v4?: { readonly host: Ipv4Address; readonly network: IpNetwork<Ipv4Address> };
  readonly v6?: { readonly host: Ipv6Address; readonly network: IpNetwork<Ipv6Address> };
  /** An address cell was given but could not be read (already reported). */
  readonly badAddress: boolean;
  /** Subnet-wide cells, as written (trimmed). */
  readonly shared: Readonly<Record<SharedColumn, string>>;
}

const SHARED_COLUMNS = ["gateway", "dns", "ntp", "vlan", "mtu", "ipv6_gateway"] as const;
type SharedColumn = (typeof SHARED_COLUMNS)[number];

interface SubnetAcc {
  readonly name: string;
  readonly first: Row;
  /** For comparing: the shared cells with addresses in canonical form. */
  readonly comparable: Readonly<Record<SharedColumn, string>>;
  v6?: { readonly network: IpNetwork<Ipv6Address>; readonly row: Row };
  v4?: IpNetwork<Ipv4Address>;
}

interface HsmAcc {
  readonly first: Row;
  readonly interfaces: DraftInterface[];
  incomplete: boolean;
}

/** Reads a CSV plan into a located draft; problems the CSV form itself has go to `problems`. */
export function planCsvToDraft(
  text: string,
  options: PlanOptions,
  problems: ProblemList,
): PlanDraft | undefined {
  const records = readRecords(text, problems);
  if (!records) return undefined;
  const header = records[0];
  if (!header) {
    problems.addRaw(PLAN_ENTRY, "", 0, csvMessages.noHeader());
    return undefined;
  }
  const columns = readHeader(header.record, problems);
  if (!columns) return undefined;

  const planAt: Location<"owner" | "hsms"> = { entry: PLAN_ENTRY, order: 0, field: (key) => key };
  if (options.owner === undefined) problems.add(planAt, "owner", csvMessages.ownerRequired());

  const rows: Row[] = [];
  for (const { record, info } of records.slice(1)) {
    const row = readRow(record, info.lines, header.record.length, columns, problems);
    if (row) rows.push(row);
  }
  if (rows.length === 0) problems.addRaw(PLAN_ENTRY, "hsms", PLAN_LIST_ORDER, planMessages.noHsms());

  // A row with only an IPv6 address joins the subnet that carries its IPv6 network, if any does.
  const v4KeyOfV6Network = new Map<string, string>();
  for (const row of rows) {
    if (row.v4 && row.v6 && !v4KeyOfV6Network.has(row.v6.network.text)) {
      v4KeyOfV6Network.set(row.v6.network.text, row.v4.network.text);
    }
  }

  const subnets = new Map<string, SubnetAcc>();
  const hsms = new Map<string | Row, HsmAcc>();
  const comparableByRaw = new Map<string, Record<SharedColumn, string>>();
  for (const row of rows) {
    // Empty serials are each their own (invalid) HSM rather than one HSM with every such row.
    const hsmKey = row.serial === "" ? row : row.serial;
    let hsm = hsms.get(hsmKey);
    if (!hsm) {
      hsm = { first: row, interfaces: [], incomplete: false };
      hsms.set(hsmKey, hsm);
    } else if (hsm.first.hostname !== row.hostname) {
      problems.add(
        rowLocation(row),
        "hostname",
        csvMessages.hostnameMismatch(row.serial, hsm.first.line, hsm.first.hostname),
      );
    }

    const key =
      row.v4?.network.text ?? (row.v6 && (v4KeyOfV6Network.get(row.v6.network.text) ?? row.v6.network.text));
    if (row.badAddress && !row.v4) {
      hsm.incomplete = true;
      continue;
    }
    if (key === undefined) {
      problems.add(rowLocation(row), "", planMessages.noAddress());
      hsm.incomplete = true;
      continue;
    }
    // The rows of a subnet repeat the same cells: normalise each distinct combination once.
    const raw = SHARED_COLUMNS.map((c) => row.shared[c]).join("\n");
    let comparable = comparableByRaw.get(raw);
    if (!comparable) {
      comparable = comparableCells(row.shared);
      comparableByRaw.set(raw, comparable);
    }
    const subnet = joinSubnet(subnets, key, row, comparable, problems);
    hsm.interfaces.push(rowInterface(row, subnet.name));
  }

  return {
    owner: options.owner,
    planAt,
    subnets: [...subnets.values()].map(subnetDraft),
    hsms: [...hsms.values()].map(hsmDraft),
    rejectedSubnets: new Set(),
  };
}

function readRecords(text: string, problems: ProblemList): CsvRecord[] | undefined {
  try {
    return parse(text, {
      info: true,
      relax_column_count: true,
      skip_empty_lines: true,
      skip_records_with_empty_values: true,
      trim: true,
    }) as unknown as CsvRecord[];
  } catch (error) {
    const line = error instanceof CsvError && typeof error.lines === "number" ? error.lines : undefined;
    const reason = (error instanceof Error ? error.message : String(error)).replace(/ at line \d+/, "");
    problems.addRaw(
      PLAN_ENTRY,
      "",
      0,
      `not valid CSV${line === undefined ? "" : ` (line ${line})`}: ${reason}`,
    );
    return undefined;
  }
}

/** Column positions, or undefined (after reporting) when the header cannot be used. */
function readHeader(cells: readonly string[], problems: ProblemList): Map<CsvColumn, number> | undefined {
  const entry = `row ${HEADER_ROW}`;
  const columns = new Map<CsvColumn, number>();
  cells.forEach((cell, i) => {
    const name = cell.trim().toLowerCase();
    if (!(CSV_COLUMNS as readonly string[]).includes(name)) {
      problems.addRaw(entry, "", HEADER_ROW, csvMessages.unknownColumn(cell));
    } else if (columns.has(name as CsvColumn)) {
      problems.addRaw(entry, "", HEADER_ROW, csvMessages.duplicateColumn(name));
    } else columns.set(name as CsvColumn, i);
  });
  let usable = true;
  for (const required of ["serial", "hostname"] as const) {
    if (!columns.has(required)) {
      problems.addRaw(entry, "", HEADER_ROW, csvMessages.missingColumn(required));
      usable = false;
    }
  }
  if (!columns.has("ipv4_cidr") && !columns.has("ipv6_cidr")) {
    problems.addRaw(entry, "", HEADER_ROW, csvMessages.missingAddressColumn());
    usable = false;
  }
  return usable ? columns : undefined;
}

function readRow(
  record: readonly string[],
  line: number,
  width: number,
  columns: ReadonlyMap<CsvColumn, number>,
  problems: ProblemList,
): Row | undefined {
  const entry = `row ${line}`;
  if (record.length !== width) {
    problems.addRaw(entry, "", line, csvMessages.fieldCount(record.length, width));
    return undefined;
  }
  const cell = (column: CsvColumn): string => {
    const i = columns.get(column);
    return i === undefined ? "" : (record[i] ?? "").trim();
  };
  let badAddress = false;
  let v4: Row["v4"];
  const v4Text = cell("ipv4_cidr");
  if (v4Text !== "") {
    const parsed = parseIpv4Cidr(v4Text);
    if (parsed.ok) v4 = { host: parsed.host, network: parsed.network };
    else {
      problems.addRaw(entry, "ipv4_cidr", line, planMessages.badCidr(v4Text, 4, parsed.fault));
      badAddress = true;
    }
  }
  let v6: Row["v6"];
  const v6Text = cell("ipv6_cidr");
  if (v6Text !== "") {
    const parsed = parseIpv6Cidr(v6Text);
    if (parsed.ok) v6 = { host: parsed.host, network: parsed.network };
    else {
      problems.addRaw(entry, "ipv6_cidr", line, planMessages.badCidr(v6Text, 6, parsed.fault));
      badAddress = true;
    }
  }
  const shared = Object.fromEntries(SHARED_COLUMNS.map((c) => [c, cell(c)])) as Record<SharedColumn, string>;
  return {
    line,
    serial: cell("serial"),
    hostname: cell("hostname"),
    iface: cell("interface") || DEFAULT_INTERFACE,
    ...(v4 && { v4 }),
    ...(v6 && { v6 }),
    badAddress,
    shared,
  };
}

function rowLocation(row: Row): Location<HsmKey | InterfaceKey | SubnetKey> {
  return { entry: `row ${row.line}`, order: row.line, field: (key) => (key ? CSV_FIELD[key] : "") };
}

/** The column that holds each draft field. */
const CSV_FIELD: Record<HsmKey | InterfaceKey | SubnetKey, CsvColumn> = {
  serial: "serial",
  hostname: "hostname",
  interfaces: "interface",
  name: "interface",
  subnet: "ipv4_cidr",
  ipv4: "ipv4_cidr",
  ipv6: "ipv6_cidr",
  cidr: "ipv4_cidr",
  gateway: "gateway",
  dns: "dns",
  ntp: "ntp",
  vlan: "vlan",
  mtu: "mtu",
  ipv6Cidr: "ipv6_cidr",
  ipv6Gateway: "ipv6_gateway",
};

/** Adds `row` to its subnet (creating it on first use), reporting cells that disagree. */
function joinSubnet(
  subnets: Map<string, SubnetAcc>,
  key: string,
  row: Row,
  comparable: Readonly<Record<SharedColumn, string>>,
  problems: ProblemList,
): SubnetAcc {
  let subnet = subnets.get(key);
  if (!subnet) {
    subnet = { name: csvSubnetName(key), first: row, comparable };
    if (row.v4) subnet.v4 = row.v4.network;
    subnets.set(key, subnet);
  } else {
    for (const column of SHARED_COLUMNS) {
      if (comparable[column] !== subnet.comparable[column]) {
        problems.add(
          rowLocation(row),
          CSV_FIELD_OF_SHARED[column],
          csvMessages.disagreement(
            key,
            column,
            subnet.first.line,
            subnet.first.shared[column],
            row.shared[column],
          ),
        );
      }
    }
  }
  if (row.v6) {
    if (!subnet.v6) subnet.v6 = { network: row.v6.network, row };
    else if (subnet.v6.network.text !== row.v6.network.text) {
      problems.add(
        rowLocation(row),
        "ipv6Cidr",
        csvMessages.disagreement(
          key,
          "the IPv6 network of ipv6_cidr",
          subnet.v6.row.line,
          subnet.v6.network.text,
          row.v6.network.text,
        ),
      );
    }
  }
  return subnet;
}

const CSV_FIELD_OF_SHARED: Record<SharedColumn, SubnetKey> = {
  gateway: "gateway",
  dns: "dns",
  ntp: "ntp",
  vlan: "vlan",
  mtu: "mtu",
  ipv6_gateway: "ipv6Gateway",
};

/** Cells in a form where equal meaning is equal text (`2001:DB8::1` = `2001:db8::1`, `0120` = `120`). */
function comparableCells(shared: Readonly<Record<SharedColumn, string>>): Record<SharedColumn, string> {
  const address = (t: string) => canonicalIp(t) ?? t;
  const list = (t: string) => splitList(t).map(address).join(" ");
  const number = (t: string) => (/^\d+$/.test(t) ? String(Number(t)) : t);
  return {
    gateway: address(shared.gateway),
    dns: list(shared.dns),
    ntp: list(shared.ntp),
    vlan: number(shared.vlan),
    mtu: number(shared.mtu),
    ipv6_gateway: address(shared.ipv6_gateway),
  };
}

function splitList(text: string): string[] {
  return text.split(/\s+/).filter((s) => s !== "");
}

function subnetDraft(acc: SubnetAcc): DraftSubnet {
  const row = acc.first;
  const at = rowLocation(row) as Location<SubnetKey>;
  const s = row.shared;
  const vlan = readWholeNumber(s.vlan);
  const mtu = readWholeNumber(s.mtu);
  return {
    at,
    name: acc.name,
    ...(acc.v4 && { cidr: acc.v4.text }),
    ...(s.gateway !== "" && { gateway: s.gateway }),
    dns: splitList(s.dns),
    ntp: splitList(s.ntp),
    ...(vlan !== undefined && { vlan }),
    ...(mtu !== undefined && { mtu }),
    ...(acc.v6 && { ipv6Cidr: acc.v6.network.text }),
    ...(s.ipv6_gateway !== "" && { ipv6Gateway: s.ipv6_gateway }),
  };
}

/** A number cell: a number when it is digits, else the text, which the validator reports as written. */
function readWholeNumber(text: string): number | string | undefined {
  if (text === "") return undefined;
  return /^\d+$/.test(text) ? Number(text) : text;
}

function rowInterface(row: Row, subnet: string): DraftInterface {
  const base = rowLocation(row);
  // An IPv6-only row names its subnet through ipv6_cidr.
  const at: Location<InterfaceKey> = row.v4
    ? base
    : { ...base, field: (key) => (key === "subnet" ? "ipv6_cidr" : base.field(key)) };
  return {
    at,
    name: row.iface,
    subnet,
    ...(row.v4 && { ipv4: row.v4.host.text }),
    ...(row.v6 && { ipv6: row.v6.host.text }),
    ...(row.badAddress && { incomplete: true }),
  };
}

function hsmDraft(acc: HsmAcc): DraftHsm {
  return {
    at: rowLocation(acc.first) as Location<HsmKey>,
    serial: acc.first.serial,
    hostname: acc.first.hostname,
    interfaces: acc.interfaces,
    ...(acc.incomplete && { incomplete: true }),
  };
}

// ---------------------------------------------------------------------------------------------
// Writing

/**
 * A plan as CSV (the owner is not part of it). Reading it back gives the same plan when its subnets
 * carry the names CSV derives (`csvSubnetName`), are listed in order of first use, and are all used.
 */
export function planToCsv(plan: NetworkPlan): string {
  const subnets = new Map(plan.subnets.map((s) => [s.name, s]));
  const lines = [CSV_COLUMNS.join(",")];
  for (const hsm of plan.hsms) {
    for (const iface of hsm.interfaces) {
      const s = subnets.get(iface.subnet);
      const prefix = (cidr: string | undefined) => cidr?.slice(cidr.indexOf("/")) ?? "";
      const cells: Record<CsvColumn, string> = {
        serial: hsm.serial,
        hostname: hsm.hostname,
        interface: iface.name,
        ipv4_cidr: iface.ipv4 === undefined ? "" : `${iface.ipv4}${prefix(s?.cidr)}`,
        gateway: s?.gateway ?? "",
        dns: s?.dns.join(" ") ?? "",
        ntp: s?.ntp.join(" ") ?? "",
        vlan: s?.vlan === undefined ? "" : String(s.vlan),
        mtu: s?.mtu === undefined ? "" : String(s.mtu),
        ipv6_cidr: iface.ipv6 === undefined ? "" : `${iface.ipv6}${prefix(s?.ipv6Cidr)}`,
        ipv6_gateway: s?.ipv6Gateway ?? "",
      };
      lines.push(CSV_COLUMNS.map((c) => csvCell(cells[c])).join(","));
    }
  }
  return `${lines.join("\n")}\n`;
}

/** RFC 4180 quoting, only where needed. */
function csvCell(value: string): string {
  return /[",\r\n]|^\s|\s$/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}
