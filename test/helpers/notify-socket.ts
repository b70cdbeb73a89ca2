/**
 * A real AF_UNIX datagram socket for sd_notify tests (python3: Node has no unix datagram sockets).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/** A real unix datagram socket: each datagram becomes one line (newlines inside as \x1f) in `out`. */
export async function listenNotifySocket(
  path: string,
  out: string,
): Promise<{ stop: () => Promise<void>; messages: () => Promise<string[][]> }> {
  const script = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("ready", flush=True)
with open(sys.argv[2], "a") as f:
    while True:
        data = s.recv(4096)
        f.write(data.decode().replace("\\n", "\\x1f") + "\\n")
        f.flush()
`;
  const child: ChildProcess = spawn("python3", ["-c", script, path, out], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve, reject) => {
    child.once("error", reject);
    child.stdout!.once("data", () => resolve());
  });
  return {
    stop: async () => {
      if (child.exitCode === null) child.kill("SIGTERM");
      await sleep(20);
    },
    messages: async () =>
      (await readFile(out, "utf8").catch(() => ""))
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => l.split("\x1f")),
  };
}
