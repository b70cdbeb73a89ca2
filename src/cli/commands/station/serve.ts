import { readFile } from "node:fs/promises";
import { Command } from "commander";
import { UsageError } from "../../../errors.js";
import { isLoopback, parseListen, startRackServer } from "../../../station/serve/server.js";
import { checkGivenToken, stationToken, TOKEN_ENV } from "../../../station/serve/token.js";
import { type CliContext, writeLine } from "../../context.js";
import { secretSource } from "../../secrets.js";
import { STATION_DIR_HELP, stationDirOf } from "./common.js";
import { DB_HELP, openCommandInventory } from "./inventory.js";

interface ServeOptions {
  readonly listen: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly tokenFd?: number;
  readonly stationDir?: string;
  readonly db?: string;
  readonly sessionIdle: number;
  readonly sessionLifetime: number;
}

/** A whole number from `min` to `max`, for option `name`. */
function wholeNumber(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d{1,6}$/.test(value) || n < min || n > max) {
      throw new UsageError(`${name} must be a whole number from ${min} to ${max}, not "${value}"`);
    }
    return n;
  };
}

/**
 * `hsm-onboard station serve [--listen HOST:PORT] [--tls-cert F --tls-key F] [--token-fd N]
 * [--session-idle MIN] [--session-lifetime H]` (issue 14): the read-only rack view.
 */
export function stationServeCommand(ctx: CliContext): Command {
  return new Command("serve")
    .description("Serve a read-only rack view of the inventory (live while receipts arrive)")
    .option(
      "--listen <host:port>",
      "address and port (port 0: any free one); beyond loopback needs --tls-cert, --tls-key and a token",
      "127.0.0.1:8080",
    )
    .option("--tls-cert <file>", "serve HTTPS with this PEM certificate (chain)")
    .option("--tls-key <file>", "the PEM private key of --tls-cert")
    .option(
      "--token-fd <n>",
      `read the access token from this file descriptor (else $${TOKEN_ENV}, else serve-token in the station directory)`,
      (value: string) => {
        if (!/^\d{1,9}$/.test(value)) throw new UsageError(`--token-fd: not a file descriptor: ${value}`);
        return Number(value);
      },
    )
    .option(
      "--session-idle <minutes>",
      "a browser session ends after this many minutes without a request",
      wholeNumber("--session-idle", 1, 1440),
      30,
    )
    .option(
      "--session-lifetime <hours>",
      "a browser session ends this many hours after its login in any case",
      wholeNumber("--session-lifetime", 1, 168),
      12,
    )
    .option("--station-dir <dir>", STATION_DIR_HELP)
    .option("--db <url>", DB_HELP)
    .addHelpText(
      "after",
      `
Runs until interrupted (Ctrl-C). Needs no card.

On loopback (127.0.0.1, ::1) the view is plain HTTP without a token, unless a token is given with
--token-fd or $${TOKEN_ENV}. On any other address it needs TLS and an access token, else it refuses
to start (exit 2): --tls-cert and --tls-key name the certificate and key, and the token is the one
given (--token-fd N or $${TOKEN_ENV}, never on the command line) or the station's own, generated
once into serve-token in the station directory (mode 0600). Scripts send it as
"Authorization: Bearer TOKEN" on every request. A browser asks for it once and gets a session: a
random cookie (HttpOnly, SameSite=Strict, Secure under TLS) that ends after --session-idle minutes
without a request (30), --session-lifetime hours after the login (12), at "Log out" (POST /logout),
or when station serve stops — sessions live only in this process's memory. After 5 wrong tokens
(form or bearer) a client address must wait before trying again: 1 s, doubling to 10 min (HTTP 429
with Retry-After); the right token resets its count.

Examples:
  $ hsm-onboard station serve
  $ hsm-onboard station serve --listen 127.0.0.1:0 --db postgresql://station@db/inventory
  $ hsm-onboard station serve --listen 10.1.2.3:8443 --tls-cert view.crt --tls-key view.key
  $ hsm-onboard station serve --listen 0.0.0.0:8443 --tls-cert view.crt --tls-key view.key --token-fd 3 3<token`,
    )
    .action(async (options: ServeOptions) => {
      const { host, port } = parseListen(options.listen);
      if ((options.tlsCert === undefined) !== (options.tlsKey === undefined)) {
        throw new UsageError("--tls-cert and --tls-key go together");
      }
      if (!isLoopback(host) && options.tlsCert === undefined) {
        throw new UsageError(
          `station serve refuses plain HTTP beyond loopback: listening on ${host} needs --tls-cert and --tls-key (and an access token)`,
        );
      }
      const tls =
        options.tlsCert === undefined || options.tlsKey === undefined
          ? undefined
          : {
              cert: await readPem(options.tlsCert, "--tls-cert"),
              key: await readPem(options.tlsKey, "--tls-key"),
            };
      const dir = stationDirOf(ctx, options.stationDir);
      let token: string | undefined;
      let tokenNote = "no access token (loopback)";
      if (options.tokenFd !== undefined) {
        const source = secretSource(ctx, { pinFd: options.tokenFd });
        try {
          token = checkGivenToken(await source.read("access token"), `file descriptor ${options.tokenFd}`);
        } finally {
          source.close();
        }
        tokenNote = `access token from file descriptor ${options.tokenFd}`;
      } else if (ctx.env[TOKEN_ENV] !== undefined && ctx.env[TOKEN_ENV] !== "") {
        token = checkGivenToken(ctx.env[TOKEN_ENV], TOKEN_ENV);
        tokenNote = `access token from ${TOKEN_ENV}`;
      } else if (!isLoopback(host)) {
        const own = await stationToken(dir);
        token = own.token;
        tokenNote = `access token in ${own.path} (${own.created ? "created, " : ""}mode 0600)`;
      }
      const inventory = await openCommandInventory(ctx, options);
      let server: Awaited<ReturnType<typeof startRackServer>>;
      try {
        server = await startRackServer({
          inventory,
          host,
          port,
          ...(tls ? { tls } : {}),
          ...(token === undefined ? {} : { token }),
          sessionIdleMs: options.sessionIdle * 60_000,
          sessionLifetimeMs: options.sessionLifetime * 3_600_000,
        });
      } catch (error) {
        await inventory.close();
        throw error;
      }
      writeLine(ctx.stdout, `rack view on ${server.url} (${tokenNote}; Ctrl-C to stop)`);
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
      await server.close();
      await inventory.close();
    });
}

async function readPem(file: string, option: string): Promise<Buffer> {
  const bytes = await readFile(file).catch((cause: unknown) => {
    throw new UsageError(`${option}: cannot read ${file}`, { cause });
  });
  if (!bytes.toString("latin1").includes("-----BEGIN")) throw new UsageError(`${option}: ${file} is not PEM`);
  return bytes;
}
