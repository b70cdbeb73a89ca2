/**
 * The agent's persisted state (SPEC.md §6): one JSON file in the state directory, written atomically
 * (temporary file, fsync, rename, fsync of the directory: readers and a crash see the old or the new
 * file, never a torn one), validated when read.
 *
 * State directory layout (written by `agent factory-init`):
 *
 *   state.json            this file: stage, serial, device key reference, owner pin, quorum, CRL
 *                         number ratchet, applied configuration, an apply in progress, last error
 *   root.pem              the manufacturer root: the only trust anchor
 *   crls/<issuer>.der     the newest CRL seen per issuer (from the factory or from cards)
 *   audit.log             the hash-chained audit log (audit-log.ts)
 *   network.dry-run.json  what the dry-run applier would have done (net/dry-run.ts)
 *   agent.lock            held by the running agent (its PID)
 *   device/               the device key, certificate and chain, copied by factory-init (key 0600;
 *                         a PKCS#11 device key stays a URI in state.json, without a PIN)
 *
 * Interrupted apply (stage `applying` found at start): the agent ROLLS BACK to the snapshot stored
 * with it, rather than re-applying. The snapshot was persisted before the first change, so it is
 * always there; the card that carried the configuration may be gone, no receipt was written, and the
 * sequence number was not consumed, so the same card simply onboards again. Re-applying would commit
 * a configuration whose apply was never verified or receipted. See reconcileInterruptedApply
 * (agent.ts).
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { UsageError } from "../errors.js";
import { atomicWriteFile, readJsonFile } from "../util/fs.js";
import { acquireLockFile } from "../util/lock.js";
import * as z from "../util/schema.js";
import { hostNetworkConfigSchema, netSnapshotSchema } from "./net/net-backend.js";

export const AGENT_STAGES = [
  "factory",
  "waiting-for-card",
  "card-authenticated",
  "user-authenticated",
  "config-verified",
  "applying",
  "configured",
] as const;
export type AgentStage = (typeof AGENT_STAGES)[number];

export const AGENT_STATE_FORMAT = "hsm-onboard/agent-state";

export const STATE_FILES = {
  state: "state.json",
  root: "root.pem",
  crls: "crls",
  audit: "audit.log",
  dryRun: "network.dry-run.json",
  lock: "agent.lock",
  /** The device key copied by factory-init (key 0600, certificate, chain), when it is a key file. */
  device: "device",
} as const;

const hex = (bytes: number) => z.string().regex(new RegExp(`^[0-9a-f]{${bytes * 2}}$`));
const isoTime = z.string();

const subnetSchema = z.object({
  name: z.string(),
  cidr: z.string().optional(),
  gateway: z.string().optional(),
  dns: z.array(z.string()),
  ntp: z.array(z.string()),
  vlan: z.int().optional(),
  mtu: z.int().optional(),
  ipv6Cidr: z.string().optional(),
  ipv6Gateway: z.string().optional(),
});

const hsmConfigSchema = z.object({
  hsm: z.object({
    serial: z.string(),
    hostname: z.string(),
    interfaces: z.array(
      z.object({
        name: z.string(),
        subnet: z.string(),
        ipv4: z.string().optional(),
        ipv6: z.string().optional(),
      }),
    ),
  }),
  subnets: z.array(subnetSchema),
});

const cardSummarySchema = z.object({
  /** Subject of the 9E (card authentication) certificate. */
  subject: z.string(),
  /** Its certificate serial number (hex). */
  certificateSerial: z.string(),
  officer: z.string().optional(),
  /** The card's own serial (YubiKey serial), when it reports one. */
  cardSerial: z.string().optional(),
  /** The channel the card was read through: "SCP11b", "SCP11a", "plaintext" (allowed), "token" (PKCS#11). */
  channel: z.string().max(16).optional(),
});

const appliedSchema = z.object({
  owner: z.string(),
  sequence: z.int().nonnegative(),
  configurationId: hex(16),
  appliedAt: isoTime,
  /** networkStateDigest of the applied entry: what the receipt carries. */
  digest: hex(32),
  backend: z.string(),
  config: hsmConfigSchema,
  network: hostNetworkConfigSchema,
  card: cardSummarySchema,
});

const applyingSchema = z.object({
  startedAt: isoTime,
  owner: z.string(),
  sequence: z.int().nonnegative(),
  configurationId: hex(16),
  backend: z.string(),
  network: hostNetworkConfigSchema,
  /** The state of the managed devices before the first change: what a rollback restores. */
  snapshot: netSnapshotSchema,
});

const stateSchema = z.object({
  format: z.literal(AGENT_STATE_FORMAT),
  version: z.literal(1),
  serial: z.string().min(1),
  stage: z.enum(AGENT_STAGES),
  updatedAt: isoTime,
  /** The device key: its copy in this directory (`device/`, by factory-init), or a PKCS#11 URI. */
  device: z.string().min(1),
  /**
   * The network applier chosen at the factory (`factory-init --net`, issue 12): what `agent run` uses
   * unless told otherwise. `dry-run` only when asked for; absent in states written before.
   */
  applier: z.enum(["iproute2", "networkd", "dry-run"]).optional(),
  /** For the networkd applier: the directory its .network/.netdev files go into. */
  networkDir: z.string().min(1).optional(),
  /**
   * How the configuration's hostname (and, with iproute2, DNS and NTP) is applied, chosen at the
   * factory (host-settings.ts): through systemd-hostnamed, by sethostname, or not; absent: not.
   */
  hostSettings: z.enum(["hostnamed", "sethostname", "none"]).optional(),
  /** The owner this HSM belongs to: bound at the factory or pinned by the first onboarding. */
  owner: z
    .object({
      name: z.string().min(1),
      boundBy: z.enum(["factory", "first-onboarding"]),
      /** SHA-256 of the owner's token CA certificate (older states; the key pin below is what binds). */
      tokenCaSha256: hex(32).optional(),
      /**
       * SHA-256 of the owner's token CA public key (SubjectPublicKeyInfo DER): the binding (issue 10).
       * Set at the factory (`--owner-ca`) or by the first onboarding; a card under any other token CA
       * — another owner's, even one whose certificates name this owner — is refused (16).
       */
      tokenCaSpkiSha256: hex(32).optional(),
      pinnedAt: isoTime.optional(),
    })
    .optional(),
  /** Valid co-signatures a configuration needs (SPEC.md §4 dual control); only ever goes up. */
  quorum: z.object({
    required: z.int().min(1),
    /** Set once the first onboarding confirmed it. */
    pinned: z.boolean(),
  }),
  /** Highest CRL number seen, per CRL issuer (crlIssuerKey of its name), as a decimal string. */
  crlNumbers: z.record(z.string(), z.string().regex(/^\d+$/)),
  configured: appliedSchema.optional(),
  applying: applyingSchema.optional(),
  lastError: z
    .object({
      code: z.string(),
      exitCode: z.int(),
      message: z.string(),
      at: isoTime,
      stage: z.enum(AGENT_STAGES),
    })
    .optional(),
  /** The newest audit record: a log that ends before it was truncated. */
  auditHead: z.object({ seq: z.int().nonnegative(), hash: hex(32) }).optional(),
});

export type AgentState = z.infer<typeof stateSchema>;
export type AppliedConfiguration = z.infer<typeof appliedSchema>;
export type ApplyInProgress = z.infer<typeof applyingSchema>;
export type CardSummary = z.infer<typeof cardSummarySchema>;

export interface AgentStateStoreOptions {
  readonly clock?: () => Date;
}

/**
 * The key of the CRL-number ratchet for one issuer: SHA-256 (hex) of the issuer's distinguished name
 * as DER, the bytes a certificate's issuer and a CRL's issuer share exactly (no string formatting).
 */
export function crlIssuerKey(issuerNameDer: Uint8Array): string {
  return createHash("sha256").update(issuerNameDer).digest("hex");
}

/** The state file of one agent, and the files next to it. */
export class AgentStateStore {
  readonly dir: string;
  readonly #clock: () => Date;
  #state: AgentState;

  private constructor(dir: string, state: AgentState, options: AgentStateStoreOptions) {
    this.dir = dir;
    this.#state = state;
    this.#clock = options.clock ?? (() => new Date());
  }

  path(file: keyof typeof STATE_FILES): string {
    return join(this.dir, STATE_FILES[file]);
  }

  /** Creates a state directory (refused when one is there, unless `force`). */
  static async create(
    dir: string,
    initial: Omit<AgentState, "format" | "version" | "updatedAt">,
    options: AgentStateStoreOptions & { force?: boolean } = {},
  ): Promise<AgentStateStore> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const file = join(dir, STATE_FILES.state);
    if (
      !options.force &&
      (await readFile(file).then(
        () => true,
        () => false,
      ))
    ) {
      throw new UsageError(`${dir} already holds an agent state; pass --force to replace it`);
    }
    const state: AgentState = stateSchema.parse({
      format: AGENT_STATE_FORMAT,
      version: 1,
      ...initial,
      updatedAt: (options.clock ?? (() => new Date()))().toISOString(),
    });
    await atomicWriteFile(file, serialize(state), 0o600);
    return new AgentStateStore(dir, state, options);
  }

  /** Reads and validates the state file. UsageError when the directory was never initialised. */
  static async open(dir: string, options: AgentStateStoreOptions = {}): Promise<AgentStateStore> {
    return new AgentStateStore(dir, await readState(dir), options);
  }

  /** The state as last written (do not mutate; use update). */
  get state(): Readonly<AgentState> {
    return this.#state;
  }

  /** Applies `change` and writes the result atomically; the in-memory state changes only once it is on disk. */
  async update(change: (state: AgentState) => AgentState): Promise<AgentState> {
    // Validated when read (open); here the types hold it, and a parse per stage would cost ~1 ms each.
    const next: AgentState = {
      ...change(structuredClone(this.#state)),
      updatedAt: this.#clock().toISOString(),
    };
    await atomicWriteFile(this.path("state"), serialize(next), 0o600);
    this.#state = next;
    return next;
  }

  /** Moves to `stage` (with optional other changes) and persists it. */
  setStage(stage: AgentStage, change: (state: AgentState) => AgentState = (s) => s): Promise<AgentState> {
    return this.update((s) => ({ ...change(s), stage }));
  }

  // ---- CRLs ------------------------------------------------------------------------------------------

  /** Every stored CRL (DER). */
  async storedCrls(): Promise<Uint8Array[]> {
    const dir = this.path("crls");
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => n.endsWith(".der")).sort();
    } catch {
      return [];
    }
    return Promise.all(names.map(async (n) => new Uint8Array(await readFile(join(dir, n)))));
  }

  /** Stores `der` as the CRL of the issuer with key `issuerKey` (crlIssuerKey), replacing an older one. */
  async storeCrl(issuerKey: string, der: Uint8Array): Promise<void> {
    await mkdir(this.path("crls"), { recursive: true, mode: 0o700 });
    const name = `${issuerKey.slice(0, 32)}.der`;
    await atomicWriteFile(join(this.path("crls"), name), der, 0o644);
  }

  // ---- single agent per directory -----------------------------------------------------------------

  /**
   * Takes the directory's lock for this process; returns the release function. Two agents can never
   * both hold it (issue 10 finding 5): src/util/lock.ts (born complete by link(2), a stale lock broken
   * under a per-lock claim, a live one never removed).
   */
  async lock(): Promise<() => Promise<void>> {
    return acquireLockFile(this.path("lock"), {
      busy: (pid) => new UsageError(`another agent (PID ${pid}) is running on ${this.dir}`),
    });
  }
}

function serialize(state: AgentState): string {
  return `${JSON.stringify(state, null, 2)}\n`;
}

async function readState(dir: string): Promise<AgentState> {
  return readJsonFile(join(dir, STATE_FILES.state), stateSchema, {
    what: "agent state",
    missing: () => {
      throw new UsageError(`${dir} holds no agent state (run agent factory-init first)`);
    },
  });
}
