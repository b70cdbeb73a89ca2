/**
 * The real stack for issue 10's end-to-end tests: a network namespace this test created, a private
 * pcscd with vpcd in it, `hsm-onboard card emulate` as the card and every other `hsm-onboard` command
 * as a child process in that namespace, talking to that pcscd. Cleaned up by `close()`: children by
 * their PIDs, then pcscd, then the namespace.
 */
import { writeFile } from "node:fs/promises";
import { afterAll, beforeAll } from "vitest";
import { type CardState, FileCardStateStore } from "../../src/card-emulator/card-state-store.js";
import { type PrivatePcscd, startPrivatePcscd } from "../../src/sim/pcscd.js";
import { createTestPki, type TestPki, tempDir } from "../agent/fixtures.js";
import { NetnsLab, netnsCapability } from "../agent/netns.js";
import {
  buildForChildren,
  type Capability,
  type PrivateBuild,
  pcscE2eCapability,
  requireOrSkip,
} from "../helpers/pcsc-env.js";
import {
  type ChildResult,
  type LiveChild,
  type RunOptions,
  runCliChild,
  startCliChild,
  stopChildren,
} from "./children.js";

/** pcscd + vpcd and network namespaces, both needed (skipped outside CI when absent). */
export function stackCapability(): Capability {
  const pcsc = requireOrSkip(pcscE2eCapability());
  const netns = requireOrSkip(netnsCapability());
  return pcsc.ok && netns.ok ? pcsc : { ok: false, reason: pcsc.ok ? netns.reason : pcsc.reason };
}

/** What a security test with `hsm-onboard` children starts from. */
export interface ChildTestBed {
  /** The temporary directory (removed after the tests). */
  readonly dir: string;
  /** The private build the children run. */
  readonly build: PrivateBuild;
  readonly testPki: TestPki;
  /** The token CA's CRL number 1. */
  readonly crl1: Uint8Array;
}

/**
 * Makes the bed before the tests of the calling describe block (a temporary directory `prefix…`, a
 * build with `entries` for the children, a test PKI) and removes it after them, after the block's
 * own after-hooks (vitest runs after-hooks in reverse order). Its fields are there once the tests run.
 */
export function useChildTestBed(prefix: string, entries: string[]): ChildTestBed {
  const bed = {} as { -readonly [K in keyof ChildTestBed]: ChildTestBed[K] } & {
    cleanup?: () => Promise<void>;
  };
  beforeAll(async () => {
    const base = await tempDir(prefix);
    bed.cleanup = base.cleanup;
    bed.dir = base.dir;
    bed.build = await buildForChildren(entries);
    bed.testPki = await createTestPki(base.dir);
    bed.crl1 = await bed.testPki.crl(1);
  }, 180_000);
  afterAll(async () => {
    await bed.build?.cleanup();
    await bed.cleanup?.();
  });
  return bed;
}

export class Stack {
  private card: LiveChild | undefined;
  private constructor(
    private readonly build: PrivateBuild,
    private readonly lab: NetnsLab,
    readonly ns: string,
    private readonly pcscd: PrivatePcscd,
  ) {}

  static async start(build: PrivateBuild): Promise<Stack> {
    const lab = new NetnsLab();
    const ns = lab.namespace("pcsc");
    const pcscd = await startPrivatePcscd({ netns: ns });
    return new Stack(build, lab, ns, pcscd);
  }

  /** Runs `hsm-onboard ARGS` to its end in the namespace, with this pcscd. */
  cli(args: string[], options: Omit<RunOptions, "netns"> = {}): Promise<ChildResult> {
    return runCliChild(this.build, args, {
      timeoutMs: 60_000,
      ...options,
      netns: this.ns,
      env: { ...this.pcscd.env, ...(options.env ?? {}) },
    });
  }

  /** Puts the card whose state is in `cardFile` into the reader (`card emulate`), removing any other. */
  async insert(cardFile: string, state?: CardState): Promise<void> {
    await this.remove();
    if (state) new FileCardStateStore(cardFile).save(state);
    this.card = await emulateCard(this.build, cardFile, this.pcscd, this.ns);
  }

  /** Takes the card out (the emulator saves its state and exits). */
  async remove(): Promise<void> {
    const card = this.card;
    this.card = undefined;
    await card?.stop();
  }

  async close(): Promise<void> {
    await this.remove();
    await stopChildren();
    await this.pcscd.stop();
    await this.lab.cleanup();
  }
}

/**
 * `hsm-onboard card emulate` of the card state in `cardFile` as a CLI child in `ns`, connected to the
 * vpcd of `pcscd`; resolves once the card is in the reader (stopped again if it never gets there).
 */
export async function emulateCard(
  build: PrivateBuild,
  cardFile: string,
  pcscd: PrivatePcscd,
  ns: string,
): Promise<LiveChild> {
  const card = await startCliChild(
    build,
    ["card", "emulate", "--state", cardFile, "--vpcd", `127.0.0.1:${pcscd.vpcdPort}`],
    { netns: ns },
  );
  try {
    await card.waitForStderr(/inserted: connected to vpcd/, 10_000);
  } catch (error) {
    await card.stop();
    throw error;
  }
  return card;
}

/** Writes `bytes` to `path` (a PEM, a CRL) and returns the path. */
export async function put(path: string, bytes: Uint8Array | string): Promise<string> {
  await writeFile(path, bytes);
  return path;
}
