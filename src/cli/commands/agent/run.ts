import { execFile } from "node:child_process";
import { writeSync } from "node:fs";
import { resolve } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { Agent } from "../../../agent/agent.js";
import { cardSource } from "../../../agent/card-source.js";
import {
  HOST_SETTINGS_CHOICES,
  type HostSettingsChoice,
  hostSettingsUnder,
} from "../../../agent/host-settings.js";
import type { InterfaceMap } from "../../../agent/net/net-backend.js";
import type { OnboardingResult, PinSource } from "../../../agent/onboarding.js";
import { describePinRequest, pinCommandSource, pinPromptLine } from "../../../agent/pin-command.js";
import { priorityOf, SdNotifier, stderrIsJournal, withPriority } from "../../../agent/service.js";
import { AgentStateStore } from "../../../agent/state-store.js";
import { NetworkApplyError, UsageError } from "../../../errors.js";
import { describeTokenUri, type Pkcs11TokenUri } from "../../../pkcs11/uri.js";
import { readScpTrust, secureChannelPolicy } from "../../../secure-element/channel-policy.js";
import { elementOpener, parseTokenOption, TOKEN_HELP, VIRTUAL_CARD_ENV } from "../../card-opener.js";
import { type CliContext, writeJson, writeLine } from "../../context.js";
import { parseFd, secretSource } from "../../secrets.js";
import { resolveStateDir, STATE_DIR_HELP } from "./state-dir.js";

interface RunOptions {
  stateDir?: string;
  allowPlaintext?: boolean;
  reader?: string;
  token?: Pkcs11TokenUri;
  net?: "iproute2" | "networkd" | "dry-run";
  iface: string[];
  once?: boolean;
  json?: boolean;
  pinStdin?: boolean;
  pinFd?: number;
  pinPromptFd?: number;
  pinCommand?: string;
  hostSettings?: HostSettingsChoice;
  networkDir?: string;
  networkdReload?: string;
  etcDir?: string;
  timeout?: number;
}

/** `--iface DEV` (the plan's eth0 is DEV) or `--iface PLAN=DEV`, repeatable. */
export function parseInterfaceMap(values: readonly string[]): InterfaceMap {
  const map: Record<string, string> = {};
  for (const value of values) {
    const [plan, device] = value.includes("=") ? value.split("=", 2) : ["eth0", value];
    if (!plan || !device || !/^[A-Za-z0-9_.:-]{1,15}$/.test(device)) {
      throw new InvalidArgumentError(`expected DEV or PLAN-NAME=DEV, got "${value}".`);
    }
    if (map[plan] !== undefined) throw new InvalidArgumentError(`interface ${plan} mapped twice.`);
    map[plan] = device;
  }
  return map;
}

function parseSeconds(value: string): number {
  const n = Number(value);
  if (!(n > 0) || !Number.isFinite(n))
    throw new InvalidArgumentError("expected a positive number of seconds.");
  return n;
}

/** `--networkd-reload CMD`: sh -c CMD, bounded (60 s), HSM_ONBOARD_DEVICES="dev …" in its environment. */
function shellReload(command: string, env: NodeJS.ProcessEnv): (devices: readonly string[]) => Promise<void> {
  return (devices) =>
    new Promise((resolvePromise, reject) => {
      execFile(
        "/bin/sh",
        ["-c", command],
        { env: { ...env, HSM_ONBOARD_DEVICES: devices.join(" ") }, timeout: 60_000, killSignal: "SIGKILL" },
        (error, _stdout, stderr) => {
          if (error)
            reject(
              new NetworkApplyError(`--networkd-reload failed: ${String(stderr).trim() || error.message}`),
            );
          else resolvePromise();
        },
      );
    });
}

/** One line for a technician at the HSM console. */
export function describeResult(result: OnboardingResult): string {
  if (result.stopped) {
    return `HSM ${result.serial} stopped before the PIN: the card was not used; nothing changed`;
  }
  if (result.ok && result.alreadyConfigured) {
    return (
      `HSM ${result.serial} already configured with configuration ${result.configurationId?.slice(0, 8)}, ` +
      `sequence ${result.sequence}${result.dryRun ? " (dry run — nothing applied)" : ""}: nothing changed`
    );
  }
  if (result.ok && result.dryRun) {
    return (
      `HSM ${result.serial} dry run — nothing applied: ${result.hostname} ${result.addresses?.join(" ")} ` +
      `(owner "${result.owner}", sequence ${result.sequence}) recorded only` +
      (result.receipt?.written ? `; dry-run receipt on the card` : `; no receipt: ${result.receipt?.reason}`)
    );
  }
  if (result.ok) {
    return (
      `HSM ${result.serial} configured: ${result.hostname} ${result.addresses?.join(" ")} ` +
      `(owner "${result.owner}", sequence ${result.sequence})` +
      (result.receipt?.written ? `; receipt on the card` : `; no receipt: ${result.receipt?.reason}`)
    );
  }
  if (result.stage === "configured" && result.hostname !== undefined) {
    // Applied, then the secure channel failed while the receipt was written (onboarding.ts).
    return (
      `HSM ${result.serial} configured: ${result.hostname} ${result.addresses?.join(" ")} ` +
      `(owner "${result.owner}", sequence ${result.sequence}), but the secure channel failed while ` +
      `writing the receipt (exit ${result.exitCode}): ${result.error?.message}; no receipt on the card`
    );
  }
  return `HSM ${result.serial} not configured (exit ${result.exitCode}): ${result.error?.message}; network unchanged`;
}

export function agentRunCommand(ctx: CliContext): Command {
  return new Command("run")
    .description("Wait for a configuration card, verify it, apply this HSM's network, write a receipt")
    .option("--state-dir <dir>", STATE_DIR_HELP)
    .option("--reader <name>", "only cards in a reader whose name contains this")
    .option("--token <pkcs11-uri>", TOKEN_HELP, parseTokenOption)
    .addOption(
      new Option(
        "--net <applier>",
        "network applier instead of the one chosen at factory-init: iproute2, networkd or dry-run (records only)",
      ).choices(["iproute2", "networkd", "dry-run"]),
    )
    .option(
      "--iface <map>",
      "device for a plan interface: DEV (for eth0) or NAME=DEV; repeatable",
      (value: string, previous: string[]) => [...previous, value],
      [] as string[],
    )
    .option("--once", "process one card and exit with its result's exit code")
    .option(
      "--allow-plaintext",
      "accept a card that cannot open the SCP11 secure channel (older cards); recorded in the audit log, status and receipt",
    )
    .option("--json", "print each result as a JSON object on standard output")
    .option("--pin-stdin", "read the card PIN from standard input (one line per card)")
    .option("--pin-fd <n>", "read the card PIN from this file descriptor", parseFd)
    .option(
      "--pin-prompt-fd <m>",
      "with --pin-fd/--pin-stdin: before each PIN, write one JSON line naming the card and officer to this descriptor",
      parseFd,
    )
    .option(
      "--pin-command <cmd>",
      "run this front-panel program (sh -c) for each card's PIN: first line of its output; told the card in HSM_ONBOARD_CARD_* variables",
    )
    .addOption(
      new Option(
        "--host-settings <how>",
        "instead of the factory-init choice: apply the hostname (and with iproute2 DNS/NTP files) through hostnamed, by sethostname, or none",
      ).choices([...HOST_SETTINGS_CHOICES]),
    )
    .option("--etc-dir <dir>", "where the host settings' files are instead of /etc (hostname, hsm-onboard/)")
    .option(
      "--network-dir <dir>",
      "networkd applier: its directory instead of the one chosen at factory-init",
    )
    .option(
      "--networkd-reload <cmd>",
      "networkd applier: run this (sh -c; HSM_ONBOARD_DEVICES names the devices) instead of networkctl reload + reconfigure",
    )
    .option("--timeout <seconds>", "give up waiting for a card after this long (exit 10)", parseSeconds)
    .addHelpText(
      "after",
      `
At start the agent rolls back an apply that was interrupted and re-applies the configured network
(nothing changes when it is in place). Then it waits for a card (one already inserted counts),
asks for the PIN on the console with echo off (or --pin-stdin / --pin-fd / --pin-command), only
once the card is authenticated, and prints one status line per step on standard error. Without
--once it then waits for the card to be removed and for the next one, until SIGINT or SIGTERM:
a card not yet past its PIN is let go (nothing changed), one past it is finished (or rolled
back) first, then it exits 0. Without --once the PC/SC
service going away is waited out (backoff 1 s doubling to 30 s), never an exit.
Under systemd (Type=notify): READY=1 once started, STATUS= per phase, WATCHDOG=1 when WatchdogSec=
is set (sent through systemd-notify to NOTIFY_SOCKET); log lines carry <N> priorities when
standard error is the journal. The PIN program gets HSM_ONBOARD_HSM_SERIAL, HSM_ONBOARD_CARD_OWNER,
HSM_ONBOARD_CARD_OFFICER, HSM_ONBOARD_CARD_SUBJECT, HSM_ONBOARD_CARD_SERIAL, HSM_ONBOARD_PIN_TRIES;
its output is never logged. With --pin-fd N, --pin-prompt-fd M writes the same facts as one JSON
line ({"for":"PIN","hsmSerial","owner","officer","subject","cardSerial","triesLeft"}) to M
before each PIN is read from N. Exit codes with --once (table: hsm-onboard --help):
0 configured, 11 card not trusted, 13 wrong PIN, 15 integrity, 16 not for this HSM, 17 replay,
21 address conflict, …
The applier is the one chosen at factory-init (--net there; iproute2 unless told otherwise); a
dry run changes nothing and says so in the state, agent status, the audit log and the receipt.
A card carrying exactly the configuration this HSM applied is recognised before the PIN (exit 0). For the demo and tests,
${VIRTUAL_CARD_ENV}=FILE opens that virtual card state file in-process instead of PC/SC.

Examples:
  $ hsm-onboard agent run --pin-command /usr/lib/front-panel/ask-pin
  $ hsm-onboard agent run --state-dir ./agent --once --json --pin-stdin <<< 123456
  $ hsm-onboard agent run --state-dir ./agent --net iproute2 --iface eth0=ens3 --iface eth1=ens4`,
    )
    .action(async (options: RunOptions) => {
      const interfaces = parseInterfaceMap(options.iface);
      const stateDir = resolveStateDir(ctx, options.stateDir);
      const pinChoices = [options.pinStdin, options.pinFd !== undefined, options.pinCommand !== undefined];
      if (pinChoices.filter(Boolean).length > 1)
        throw new UsageError("use one of --pin-stdin, --pin-fd and --pin-command");
      if (options.pinPromptFd !== undefined && options.pinFd === undefined && !options.pinStdin)
        throw new UsageError(
          "--pin-prompt-fd goes with --pin-fd or --pin-stdin (a --pin-command is told in its environment)",
        );
      const tty = (ctx.stdin as { isTTY?: boolean }).isTTY === true;
      if (!pinChoices.some(Boolean) && !tty) {
        // Refused before any card is taken (issue 12), not after one was authenticated.
        throw new UsageError(
          "no terminal to read the PIN from: use --pin-fd N or --pin-command CMD (or --pin-stdin)",
        );
      }
      const journal = ctx.stderr === process.stderr && stderrIsJournal(ctx.env as NodeJS.ProcessEnv);
      const log = (line: string) =>
        writeLine(ctx.stderr, withPriority(`agent: ${line}`, journal, priorityOf(line)));
      const notifier = new SdNotifier({
        env: ctx.env as NodeJS.ProcessEnv,
        onError: (message) => log(`cannot notify: ${message}`),
      });
      const channel = secureChannelPolicy(await readScpTrust(stateDir), options.allowPlaintext === true);
      if (options.token !== undefined) {
        log("configuration from a PKCS#11 token: its channel is the token's own (SCP11 does not apply)");
      } else if (options.allowPlaintext) {
        log(
          channel.scp
            ? "--allow-plaintext: a card without the SCP11 channel will be read in clear (recorded)"
            : "--allow-plaintext and no SCP trust anchor installed: cards are read without a secure channel (recorded)",
        );
      } else if (!channel.scp) {
        log(
          "no SCP trust anchor installed (agent factory-init --scp-trust FILE): every PIV card will be refused (exit 11) unless --allow-plaintext",
        );
      }
      const controller = new AbortController();
      const onSignal = () => {
        if (!controller.signal.aborted) {
          log("stopping: the card in progress, if any, is finished first (before its PIN: let go)");
          void notifier.stopping("stopping");
        }
        controller.abort();
      };
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      const source: PinSource & { close(): void } =
        options.pinCommand !== undefined
          ? {
              ...pinCommandSource({ command: options.pinCommand, env: ctx.env as NodeJS.ProcessEnv }),
              close: () => {},
            }
          : secretSource(ctx, {
              ...(options.pinStdin ? { pinStdin: true } : {}),
              ...(options.pinFd !== undefined ? { pinFd: options.pinFd } : {}),
            });
      // Every PIN request is announced (issue 12: the front panel is told which card and officer):
      // a log line always, and a JSON line on --pin-prompt-fd; a --pin-command also gets it in its
      // environment. Never a secret.
      const pins: PinSource & { close(): void } = {
        read: (prompt, card, signal) => {
          log(describePinRequest(prompt, card));
          if (options.pinPromptFd !== undefined) {
            try {
              writeSync(options.pinPromptFd, pinPromptLine(prompt, card));
            } catch (error) {
              throw new UsageError(
                `cannot write the PIN prompt to file descriptor ${options.pinPromptFd}: ${(error as NodeJS.ErrnoException).code ?? error}`,
              );
            }
          }
          return source.read(prompt, card, signal);
        },
        close: () => source.close(),
      };
      const cards = cardSource({
        element: { channel },
        ...(options.reader !== undefined && options.token === undefined ? { reader: options.reader } : {}),
        openCard: elementOpener(ctx, options),
        onPrompt: () =>
          log(
            options.token === undefined
              ? "insert or tap the configuration card"
              : `plug in the configuration token (${describeTokenUri(options.token)}); its slots are watched`,
          ),
      });
      let agent: Agent | undefined;
      try {
        const factory = (await AgentStateStore.open(stateDir)).state;
        const applier = options.net ?? factory.applier;
        const hostSettings =
          options.hostSettings ?? (applier === "dry-run" ? "none" : factory.hostSettings) ?? "none";
        if (hostSettings !== "none" && applier === "dry-run")
          throw new UsageError("--host-settings changes the host: not with the dry-run applier");
        agent = await Agent.open({
          stateDir,
          ...(options.networkDir !== undefined ? { networkDir: resolve(ctx.cwd, options.networkDir) } : {}),
          ...(options.networkdReload !== undefined
            ? { networkdReload: shellReload(options.networkdReload, ctx.env as NodeJS.ProcessEnv) }
            : {}),
          ...(hostSettings !== "none"
            ? {
                host: hostSettingsUnder(
                  options.etcDir !== undefined ? resolve(ctx.cwd, options.etcDir) : "/etc",
                  applier === "networkd" ? "networkd" : "iproute2",
                  hostSettings,
                ),
              }
            : {}),
          ...(options.net !== undefined ? { net: options.net } : {}),
          interfaces,
          log,
        });
        const started = await agent.start();
        await notifier.ready(
          started.stage === "configured" ? "configured; waiting for a card" : "waiting for a card",
        );
        notifier.startWatchdog();
        const last = await agent.serve({
          onStatus: (status) => void notifier.status(status),
          source: cards,
          pinSource: pins,
          ...(options.once ? { once: true } : {}),
          ...(options.timeout !== undefined ? { timeoutMs: options.timeout * 1000 } : {}),
          signal: controller.signal,
          onResult: (result) => {
            if (options.json) {
              if (options.once) writeJson(ctx.stdout, result);
              else writeLine(ctx.stdout, JSON.stringify(result));
            } else {
              writeLine(ctx.stderr, withPriority(describeResult(result), journal, result.ok ? 6 : 3));
            }
          },
        });
        if (options.once && last) ctx.exitCode = last.exitCode;
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
        await notifier.stop();
        pins.close();
        await cards.release().catch(() => undefined);
        await agent?.close();
      }
    });
}
