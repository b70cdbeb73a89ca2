import { Command } from "commander";
import { parseListen, startRackServer } from "../../../station/serve/server.js";
import { type CliContext, writeLine } from "../../context.js";
import { STATION_DIR_HELP } from "./common.js";
import { DB_HELP, openCommandInventory } from "./inventory.js";

interface ServeOptions {
  readonly listen: string;
  readonly stationDir?: string;
  readonly db?: string;
}

/** `hsm-onboard station serve [--listen 127.0.0.1:PORT]` (issue 14): the read-only rack view. */
export function stationServeCommand(ctx: CliContext): Command {
  return new Command("serve")
    .description("Serve a read-only rack view of the inventory on loopback (live while receipts arrive)")
    .option("--listen <host:port>", "loopback address and port (port 0: any free one)", "127.0.0.1:8080")
    .option("--station-dir <dir>", STATION_DIR_HELP)
    .option("--db <url>", DB_HELP)
    .addHelpText(
      "after",
      `
Runs until interrupted (Ctrl-C). Loopback only: listening on another address would need TLS and a
token, which the view does not have yet (exit 2). Needs no card.

Examples:
  $ hsm-onboard station serve
  $ hsm-onboard station serve --listen 127.0.0.1:0 --db postgresql://station@db/inventory`,
    )
    .action(async (options: ServeOptions) => {
      const { host, port } = parseListen(options.listen);
      const inventory = await openCommandInventory(ctx, options);
      let server: Awaited<ReturnType<typeof startRackServer>>;
      try {
        server = await startRackServer({ inventory, host, port });
      } catch (error) {
        await inventory.close();
        throw error;
      }
      writeLine(ctx.stdout, `rack view on ${server.url} (Ctrl-C to stop)`);
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
      });
      await server.close();
      await inventory.close();
    });
}
