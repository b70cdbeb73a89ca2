/**
 * What the security tests share: a transport meter (APDUs and bytes counted at the transport, the
 * card pulled at a chosen command), virtual cards cloned from one personalised template (so a test
 * gets a fresh card without generating keys again), and the checks every refusal ends with.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { expect } from "vitest";
import { DryRunBackend } from "../../src/agent/net/dry-run.js";
import { STATE_FILES } from "../../src/agent/state-store.js";
import {
  type CardState,
  FileCardStateStore,
  MemoryCardStateStore,
} from "../../src/card-emulator/card-state-store.js";
import { type ApduInterceptor, VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { verifyManifest } from "../../src/config/manifest.js";
import type { NetworkPlan } from "../../src/config/plan-model.js";
import { decodeShard, shardDigest } from "../../src/config/shard.js";
import { OnboardError } from "../../src/errors.js";
import type { IssuerCredentials } from "../../src/pki/issue.js";
import { shardItemName } from "../../src/secure-element/card-layout.js";
import { PivElement, type SecureChannelPolicy } from "../../src/secure-element/piv-element.js";
import type { CardTransport } from "../../src/transport/card-transport.js";
import { InProcessTransport } from "../../src/transport/in-process.js";
import { CardRemovedError } from "../../src/transport/pcsc-binding.js";
import { type ConfigOptions, personalizeCard, writeConfig } from "../agent/fixtures.js";
import { ip } from "../agent/netns.js";

/** Where, in the stream of commands, the card leaves the reader. */
export interface PullPlan {
  /** Pull at the first command (0-based index among all commands) for which this holds. */
  readonly at: (index: number, command: Uint8Array) => boolean;
  /**
   * `before`: the command never reaches the card; `after`: the card executes it and the answer is
   * lost (the reader sees the card go while it answers) — both happen with a real reader.
   */
  readonly when: "before" | "after";
}

/**
 * Counts what crosses the transport, the way a PC/SC trace would see it: commands, bytes sent,
 * bytes received (status words included) and the largest single response. With `pull`, the card
 * is pulled once and every later command fails as the PC/SC transport fails (CardRemovedError,
 * exit 10).
 */
export class TransportMeter {
  commands = 0;
  bytesSent = 0;
  bytesReceived = 0;
  largestResponse = 0;
  pulled = false;
  /** Index of the command at which the card was pulled. */
  pulledAt: number | undefined;
  pull: PullPlan | undefined;
  /** INS byte of every command, in order (for tests that look for a step). */
  readonly instructions: number[] = [];

  wrap(inner: CardTransport): CardTransport {
    const removed = () => new CardRemovedError(`${inner.readerName}: the card was removed`, inner.readerName);
    return {
      atr: inner.atr,
      contactless: inner.contactless,
      readerName: inner.readerName,
      transmit: async (command) => {
        if (this.pulled) throw removed();
        const index = this.commands++;
        this.instructions.push(command[1] ?? -1);
        this.bytesSent += command.length;
        const pullNow = this.pull?.at(index, command) ?? false;
        if (pullNow && this.pull?.when === "before") {
          this.pulled = true;
          this.pulledAt = index;
          throw removed();
        }
        const response = await inner.transmit(command);
        if (pullNow) {
          this.pulled = true;
          this.pulledAt = index;
          throw removed();
        }
        this.bytesReceived += response.length;
        this.largestResponse = Math.max(this.largestResponse, response.length);
        return response;
      },
      close: () => inner.close(),
    };
  }

  reset(): void {
    this.commands = 0;
    this.bytesSent = 0;
    this.bytesReceived = 0;
    this.largestResponse = 0;
    this.instructions.length = 0;
  }
}

/**
 * Opens a card as the station or the agent would (a fresh power-on), through `meter`; with `channel`,
 * under that secure-channel policy (as station and agent open it).
 */
export async function openMetered(
  card: VirtualPivCard,
  meter?: TransportMeter,
  channel?: SecureChannelPolicy,
): Promise<PivElement> {
  const transport = new InProcessTransport(card, { readerName: "Virtual PIV card" });
  return PivElement.open(meter ? meter.wrap(transport) : transport, channel ? { channel } : {});
}

/** A personalised card (agent fixtures: PIN `PIN`), kept as a state to clone fresh cards from. */
export class CardTemplate {
  private constructor(private state: CardState) {}

  /** Personalises a card of `tokenCa` (keys on the card, certificates, PIN-protected management key). */
  static async personalise(
    tokenCa: IssuerCredentials,
    dir: string,
    name: string,
    options: { owner?: string; officer?: string } = {},
  ): Promise<CardTemplate> {
    const path = join(dir, `${name}.card.json`);
    await personalizeCard(tokenCa, { ...options, path });
    const state = new FileCardStateStore(path).load();
    if (!state) throw new Error(`no card state in ${path}`);
    return new CardTemplate(state);
  }

  /** A new card with the template's state (its own copy), optionally hostile. */
  card(intercept?: ApduInterceptor): VirtualPivCard {
    return this.clone(intercept).card;
  }

  /** A new card with the template's state, and its state store (to compare before and after). */
  clone(intercept?: ApduInterceptor): { card: VirtualPivCard; store: MemoryCardStateStore } {
    const store = new MemoryCardStateStore(this.state);
    return { card: new VirtualPivCard({ store, ...(intercept ? { intercept } : {}) }), store };
  }

  /** Writes a configuration onto the template itself (every later clone carries it). */
  async write(plan: NetworkPlan, options: ConfigOptions = {}): Promise<void> {
    const store = new MemoryCardStateStore(this.state);
    await writeConfig(new VirtualPivCard({ store }), plan, options);
    const state = store.load();
    if (!state) throw new Error("card state lost");
    this.state = state;
  }

  /** A copy of the template with `change` applied to a card of it (e.g. a configuration written). */
  async derive(change: (card: VirtualPivCard) => Promise<unknown>): Promise<CardTemplate> {
    const store = new MemoryCardStateStore(this.state);
    await change(new VirtualPivCard({ store }));
    const state = store.load();
    if (!state) throw new Error("card state lost");
    return new CardTemplate(state);
  }

  /** The card state (for a state file that a CLI run opens with HSM_ONBOARD_VIRTUAL_CARD). */
  get cardState(): CardState {
    return structuredClone(this.state);
  }
}

/** What a write or a PIN try would change on a card: the PIN and PUK (values, retry counters), the data objects. */
export function persistentState(store: MemoryCardStateStore): Pick<CardState, "pin" | "puk" | "objects"> {
  const s = store.load()!;
  return { pin: s.pin, puk: s.puk, objects: s.objects };
}

/**
 * What a card holds, checked the way an agent would read it: no configuration at all, or a manifest
 * that verifies (signatures; chains are the agent's business) whose every shard is on the card with
 * the SHA-256 the manifest gives — never a manifest pointing at other shards.
 */
export async function configurationState(
  card: VirtualPivCard,
  pin: string,
): Promise<{ kind: "none" } | { kind: "complete"; sequence: number; configurationId: string }> {
  const element = await openMetered(card);
  try {
    await element.verifyPin(pin);
    const bytes = await element.readItem("manifest");
    if (!bytes) return { kind: "none" };
    const { manifest } = await verifyManifest(bytes, { validateChain: () => {} });
    for (const ref of manifest.shards) {
      const shard = await element.readItem(shardItemName(ref.objectId));
      expect(shard, `shard ${ref.objectId.toString(16)} named by the manifest`).toBeDefined();
      expect(Buffer.from(shardDigest(shard!)).equals(Buffer.from(ref.sha256))).toBe(true);
      decodeShard(shard!);
    }
    return {
      kind: "complete",
      sequence: manifest.sequence,
      configurationId: Buffer.from(manifest.configurationId).toString("hex"),
    };
  } finally {
    await element.close();
  }
}

/** `error` is a project error of class `type` with exit code `exitCode`, and nothing less typed. */
export function expectTypedError(
  error: unknown,
  type: abstract new (...args: never[]) => OnboardError,
  exitCode: number,
): void {
  expect(error, String(error)).toBeInstanceOf(OnboardError);
  expect(error, `${(error as Error).name}: ${(error as Error).message}`).toBeInstanceOf(type);
  expect((error as OnboardError).exitCode).toBe(exitCode);
}

/** The part of an agent state that says what the network is and who owns the HSM. */
export async function networkFacts(stateDir: string): Promise<Record<string, unknown>> {
  const state = JSON.parse(await readFile(join(stateDir, STATE_FILES.state), "utf8"));
  return {
    configured: state.configured ?? null,
    applying: state.applying ?? null,
    owner: state.owner ?? null,
    quorum: state.quorum,
    crlNumbers: state.crlNumbers,
  };
}

/**
 * The arguments of `agent run --once` in plaintext with the dry-run applier, the PIN on standard
 * input; `more` appended.
 */
export function agentOnceArgs(stateDir: string, ...more: string[]): string[] {
  return [
    "agent",
    "run",
    "--allow-plaintext",
    "--state-dir",
    stateDir,
    "--once",
    "--net",
    "dry-run",
    "--pin-stdin",
    ...more,
  ];
}

/** A dry-run applier whose record lives in the state directory (as `agent run --net dry-run` keeps it). */
export function dryRunIn(stateDir: string): Promise<DryRunBackend> {
  return DryRunBackend.open({ file: join(stateDir, STATE_FILES.dryRun) });
}

/**
 * A namespace's network as a configuration defines it — per link: name, MTU, up, addresses (with
 * scope); the main routing tables — without what the kernel changes on its own (qdisc, operstate,
 * counters), for "exactly the old or the new configuration" comparisons.
 */
export function networkOf(ns: string): unknown {
  const links = JSON.parse(ip(["-n", ns, "-json", "addr", "show"]) || "[]") as {
    ifname: string;
    mtu: number;
    flags: string[];
    addr_info: { family: string; local: string; prefixlen: number; scope: string }[];
  }[];
  const routes = (args: string[]) =>
    (
      JSON.parse(ip(["-n", ns, ...args, "-json", "route", "show", "table", "main"]) || "[]") as Record<
        string,
        unknown
      >[]
    )
      .map((r) => `${r.dst} via ${r.gateway ?? "-"} dev ${r.dev} metric ${r.metric ?? 0} proto ${r.protocol}`)
      .sort();
  return {
    links: links
      .map((l) => ({
        ifname: l.ifname,
        mtu: l.mtu,
        up: l.flags.includes("UP"),
        addresses: l.addr_info.map((a) => `${a.family} ${a.local}/${a.prefixlen} ${a.scope}`).sort(),
      }))
      .sort((a, b) => a.ifname.localeCompare(b.ifname)),
    routes4: routes([]),
    routes6: routes(["-6"]),
  };
}

/** Bytes of the dry-run record, or undefined when none was written. */
export async function dryRunRecord(stateDir: string): Promise<string | undefined> {
  return readFile(join(stateDir, STATE_FILES.dryRun), "utf8").catch(() => undefined);
}
