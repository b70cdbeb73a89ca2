/**
 * The inventory's schema, versioned: each migration runs once, in order, inside a transaction, and
 * is recorded in `schema_migrations`. A database whose version is newer than this code knows is
 * refused (an older station must not write into a schema it does not understand). Never edit a
 * migration that has shipped: add the next one.
 *
 * Both engines share the tables; only the auto-numbered key differs. Times are ISO 8601 UTC text
 * (sortable as text), booleans 0/1 (NULL: not known), digests and ids lower-case hex.
 */

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: (dialect: "sqlite" | "postgresql") => string;
}

const id = (d: "sqlite" | "postgresql") =>
  d === "sqlite"
    ? "id INTEGER PRIMARY KEY AUTOINCREMENT"
    : "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY";

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "sequences, plans, writes, receipts, journal",
    sql: (d) => `
CREATE TABLE sequences (
  owner TEXT PRIMARY KEY,
  last BIGINT NOT NULL CHECK (last >= 0),
  updated_at TEXT NOT NULL
);
CREATE TABLE sequence_allocations (
  owner TEXT NOT NULL,
  sequence BIGINT NOT NULL,
  station TEXT NOT NULL,
  allocated_at TEXT NOT NULL,
  PRIMARY KEY (owner, sequence)
);
CREATE TABLE plans (
  digest TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  hsms INTEGER NOT NULL,
  recorded_at TEXT NOT NULL
);
CREATE INDEX plans_owner ON plans (owner);
CREATE TABLE plan_hsms (
  plan_digest TEXT NOT NULL REFERENCES plans (digest),
  serial TEXT NOT NULL,
  hostname TEXT NOT NULL,
  addresses TEXT NOT NULL,
  state_digest TEXT,
  PRIMARY KEY (plan_digest, serial)
);
CREATE INDEX plan_hsms_serial ON plan_hsms (serial);
CREATE TABLE writes (
  ${id(d)},
  kind TEXT NOT NULL,
  configuration_id TEXT NOT NULL,
  owner TEXT NOT NULL,
  sequence BIGINT NOT NULL,
  plan_digest TEXT,
  card_serial TEXT,
  card_name TEXT,
  officer TEXT,
  card_index INTEGER,
  card_count INTEGER,
  hsms INTEGER NOT NULL,
  written_at TEXT NOT NULL
);
CREATE INDEX writes_plan ON writes (plan_digest, written_at);
CREATE INDEX writes_time ON writes (written_at);
CREATE TABLE receipts (
  ${id(d)},
  receipt_key TEXT NOT NULL UNIQUE,
  serial TEXT,
  hostname TEXT,
  configuration_id TEXT,
  sequence BIGINT,
  outcome INTEGER,
  outcome_name TEXT,
  verified INTEGER NOT NULL,
  authentic INTEGER NOT NULL,
  reason TEXT,
  addresses TEXT NOT NULL,
  network_digest TEXT,
  plan_digest TEXT,
  dry_run INTEGER,
  scp INTEGER,
  receipt_time TEXT,
  card_serial TEXT,
  collected_at TEXT NOT NULL
);
CREATE INDEX receipts_serial ON receipts (serial, collected_at);
CREATE INDEX receipts_time ON receipts (collected_at);
CREATE TABLE journal (
  ${id(d)},
  event TEXT NOT NULL,
  key TEXT NOT NULL,
  number TEXT NOT NULL,
  station TEXT NOT NULL,
  time TEXT NOT NULL
);
CREATE INDEX journal_time ON journal (time);
`,
  },
  {
    version: 2,
    name: "receipt detail (device certificate, who verified, channel); journal detail (CRL events)",
    sql: () => `
ALTER TABLE receipts ADD COLUMN device_subject TEXT;
ALTER TABLE receipts ADD COLUMN verified_by TEXT;
ALTER TABLE receipts ADD COLUMN channel TEXT;
ALTER TABLE journal ADD COLUMN detail TEXT;
`,
  },
  {
    version: 3,
    name: "a card of a set covers its serial range (writes.first_serial, last_serial)",
    sql: () => `
ALTER TABLE writes ADD COLUMN first_serial TEXT;
ALTER TABLE writes ADD COLUMN last_serial TEXT;
`,
  },
  {
    version: 4,
    name: "the station's own channel to the card of a write (writes.channel)",
    sql: () => `
ALTER TABLE writes ADD COLUMN channel TEXT;
`,
  },
];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;
