import { readFileSync } from "node:fs";
import { MalformedError } from "../errors.js";
import { atomicWriteFileSync } from "../util/fs.js";
import * as z from "../util/schema.js";

export const CARD_STATE_FORMAT = "hsm-onboard/virtual-piv-card";
export const CARD_STATE_VERSION = 1;

const hex = z.string().regex(/^(?:[0-9a-f]{2})*$/, "lowercase hex");
const base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, "base64");
const byte = z.number().int().min(0).max(255);

const secretSchema = z.object({
  /** 8 bytes as sent in VERIFY (PIN: padded with FF) */
  value: hex.refine((s) => s.length === 16, "8 bytes"),
  tries: byte.min(1),
  triesLeft: byte,
  isDefault: z.boolean(),
});

const keySchema = z.object({
  /** SP 800-78-4 algorithm id: 11 P-256, 14 P-384 */
  algorithm: z.union([z.literal(0x11), z.literal(0x14)]),
  /** PKCS#8 DER, base64 */
  pkcs8: base64,
  /** Effective policies (never 0 = default): PIN 1 never / 2 once / 3 always; touch 1 never / 2 always / 3 cached */
  pinPolicy: z.number().int().min(1).max(3),
  touchPolicy: z.number().int().min(1).max(3),
  /** 1 generated on the card, 2 imported */
  origin: z.union([z.literal(1), z.literal(2)]),
});

/** An SD key for SCP11 (GP Amendment F): P-256 private key and its certificate store, leaf last. */
const scpKeySchema = z.object({
  kid: byte,
  kvn: byte,
  /** PKCS#8 DER, base64 */
  pkcs8: base64,
  /** DER certificates, base64, leaf last (what GET DATA BF21 returns) */
  certificates: z.array(base64).min(1).max(6),
});

const scpSchema = z.object({
  keys: z.array(scpKeySchema).max(4),
  /** The OCE CA public key (SCP11a): SubjectPublicKeyInfo DER, base64, under KID/KVN; its key identifier (STORE DATA) */
  oceCa: z.object({ kid: byte, kvn: byte, spki: base64, ski: base64.optional() }).optional(),
});

const stateSchema = z.object({
  format: z.literal(CARD_STATE_FORMAT),
  version: z.literal(CARD_STATE_VERSION),
  serial: z.number().int().min(0).max(0xffffffff),
  pin: secretSchema,
  puk: secretSchema,
  managementKey: z.object({
    type: z.enum(["3des", "aes128", "aes192", "aes256"]),
    key: hex,
    touch: z.boolean(),
    isDefault: z.boolean(),
  }),
  /** by slot reference, two upper-case hex digits ("9C") */
  keys: z.record(z.string().regex(/^[0-9A-F]{2}$/), keySchema),
  /** object contents (inside the 53 wrapper) by object id, upper-case hex ("5FC102"), base64 */
  objects: z.record(z.string().regex(/^[0-9A-F]{2,6}$/), base64),
  /** The issuer security domain's SCP11 keys (absent: the card offers no secure channel) */
  scp: scpSchema.optional(),
});

export type CardState = z.infer<typeof stateSchema>;
export type CardKeyState = z.infer<typeof keySchema>;
export type CardSecretState = z.infer<typeof secretSchema>;
export type CardScpState = z.infer<typeof scpSchema>;
export type CardScpKeyState = z.infer<typeof scpKeySchema>;

/** Where the card keeps its state between power cycles and processes. */
export interface CardStateStore {
  /** The saved state, or undefined for a card never initialised. */
  load(): CardState | undefined;
  save(state: CardState): void;
}

/** Validates parsed JSON as a card state; MalformedError naming the first problem. */
export function parseCardState(json: unknown): CardState {
  const r = stateSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new MalformedError(
      `virtual card state is invalid${issue ? ` at ${issue.path.join(".") || "(root)"}: ${issue.message}` : ""}`,
    );
  }
  return r.data;
}

export function serializeCardState(state: CardState): string {
  return `${JSON.stringify(state, null, 2)}\n`;
}

/** Deep copy, so a store never shares objects with the card that saved them. */
function cloneState(state: CardState): CardState {
  return structuredClone(state);
}

export class MemoryCardStateStore implements CardStateStore {
  private state: CardState | undefined;
  /** Number of saves, for tests that check a command persisted before answering. */
  saves = 0;

  constructor(initial?: CardState) {
    this.state = initial ? cloneState(initial) : undefined;
  }

  load(): CardState | undefined {
    return this.state ? cloneState(this.state) : undefined;
  }

  save(state: CardState): void {
    this.state = cloneState(state);
    this.saves++;
  }
}

export class FileCardStateStore implements CardStateStore {
  constructor(readonly path: string) {}

  load(): CardState | undefined {
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw e;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new MalformedError(`virtual card state ${this.path} is not JSON`, { cause: e });
    }
    return parseCardState(json);
  }

  save(state: CardState): void {
    atomicWriteFileSync(this.path, serializeCardState(state));
  }
}
