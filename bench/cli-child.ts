/** Runs the hsm-onboard CLI from the benchmark's compiled tree: `node bench/cli-child.js ARGS…`. */
import { runCli } from "../src/cli/main.js";

process.exitCode = await runCli(process.argv.slice(2));
