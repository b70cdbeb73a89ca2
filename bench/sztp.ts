/**
 * Baseline: the same plan carried the way SZTP (RFC 8572) does it — for each device, "conveyed
 * information" as JSON (ietf-sztp-conveyed-info, RFC 7951 encoding) holding an onboarding-information
 * object whose `configuration` is the device's network configuration (ietf-system, ietf-interfaces
 * + ietf-ip, ietf-routing static default route), inside a CMS SignedData (content type
 * id-ct-sztpConveyedInfoJSON) made by `openssl cms -sign` with a P-256 signer certificate and its
 * chain. The signer chain is the project's own (officer-like 9C certificate + token CA, root left
 * out as in the manifest's x5chain), so both sides carry the same certificates.
 *
 * Left out, in SZTP's favour: the ownership voucher (RFC 8366, itself a CMS SignedData) and the owner
 * certificate CMS that a real SZTP bundle also carries for each device.
 */
import { spawnSync } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { NetworkPlan } from "../src/config/plan-model.js";
import { issueCardCertificate } from "../src/pki/issue.js";
import { exportPrivateKeyPem, generateEcKeyPair } from "../src/pki/keys.js";
import type { BenchFixture } from "./fixture.js";
import { BENCH_OWNER } from "./plans.js";
import { fixed, int, mean, median, print, section, table } from "./report.js";

/** id-ct-sztpConveyedInfoJSON (RFC 8572 §10.3). */
const ID_CT_SZTP_CONVEYED_INFO_JSON = "1.2.840.113549.1.9.16.1.43";
const DEVICES = 8;
/** Runs per loop when the CPU of openssl processes is taken from the shell's `times`. */
const CPU_LOOP = 16;

export interface SztpResult {
  readonly skipped?: string;
  readonly devices?: number;
  readonly jsonBytesPerDevice?: number;
  readonly cmsBytesPerDevice?: number;
  readonly signMs?: number;
  readonly verifyMs?: number;
  readonly verifyMedianMs?: number;
  /** Wall time of `openssl version`: the part of a verify that is process start-up. */
  readonly processFloorMs?: number;
  /** CPU (user + system) of one `openssl cms -verify` process, and of one `openssl version`. */
  readonly verifyCpuMs?: number;
  readonly floorCpuMs?: number;
}

function pem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString("base64").replace(/.{64}/g, "$&\n");
  return `-----BEGIN ${label}-----\n${b64.trimEnd()}\n-----END ${label}-----\n`;
}

/** One device's conveyed information (RFC 8572 §6.1 tree, RFC 7951 JSON), compact. */
export function conveyedInformation(plan: NetworkPlan, index: number): string {
  const hsm = plan.hsms[index]!;
  const itf = hsm.interfaces[0]!;
  const subnet = plan.subnets.find((s) => s.name === itf.subnet)!;
  const prefix = Number(subnet.cidr!.split("/")[1]);
  const configuration = {
    "ietf-system:system": {
      hostname: hsm.hostname,
      "dns-resolver": {
        server: subnet.dns.map((address, i) => ({ name: `dns${i}`, "udp-and-tcp": { address } })),
      },
      ntp: { enabled: true, server: subnet.ntp.map((address, i) => ({ name: `ntp${i}`, udp: { address } })) },
    },
    "ietf-interfaces:interfaces": {
      interface: [
        {
          name: itf.name,
          type: "iana-if-type:ethernetCsmacd",
          enabled: true,
          "ietf-ip:ipv4": { address: [{ ip: itf.ipv4, "prefix-length": prefix }] },
        },
      ],
    },
    "ietf-routing:routing": {
      "control-plane-protocols": {
        "control-plane-protocol": [
          {
            type: "ietf-routing:static",
            name: "default",
            "static-routes": {
              "ietf-ipv4-unicast-routing:ipv4": {
                route: [
                  { "destination-prefix": "0.0.0.0/0", "next-hop": { "next-hop-address": subnet.gateway } },
                ],
              },
            },
          },
        ],
      },
    },
  };
  return JSON.stringify({
    "ietf-sztp-conveyed-info:onboarding-information": {
      "configuration-handling": "replace",
      configuration: Buffer.from(JSON.stringify(configuration)).toString("base64"),
    },
  });
}

function openssl(args: readonly string[]): { ok: boolean; wallMs: number; stderr: string } {
  const started = performance.now();
  const r = spawnSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"], timeout: 20_000 });
  return {
    ok: r.status === 0,
    wallMs: performance.now() - started,
    stderr: r.stderr?.toString() ?? String(r.error),
  };
}

/**
 * CPU (user + system, ms) of one run of `openssl ARGS`, from the shell's `times` (children's
 * totals) over CPU_LOOP runs: the clock-tick granularity (10 ms) divided by the loop length.
 */
function opensslCpuMs(args: readonly string[]): number | undefined {
  const script =
    'n=$1; shift; i=0; while [ "$i" -lt "$n" ]; do "$@" >/dev/null 2>&1 || exit 1; i=$((i+1)); done; times';
  const r = spawnSync("sh", ["-c", script, "sh", String(CPU_LOOP), "openssl", ...args], {
    encoding: "utf8",
    timeout: 60_000,
  });
  if (r.status !== 0) return undefined;
  const seconds = [...r.stdout.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]));
  if (seconds.length < 4) return undefined;
  return ((seconds[2]! + seconds[3]!) * 1000) / CPU_LOOP;
}

export async function benchSztp(fixture: BenchFixture, plan: NetworkPlan): Promise<SztpResult> {
  section("7. Baseline: SZTP-style per-device conveyed information in CMS SignedData (openssl cms)");
  const version = spawnSync("openssl", ["version"], { encoding: "utf8" });
  if (version.status !== 0) {
    const skipped = "openssl is not installed";
    print(`  skipped: ${skipped}`);
    return { skipped };
  }
  const dir = join(fixture.dir, "sztp");
  await mkdir(dir, { recursive: true });
  const keys = await generateEcKeyPair("P-256");
  const leaf = await issueCardCertificate({
    tokenCa: fixture.pki.tokenCa,
    publicKey: keys.publicKey,
    owner: BENCH_OWNER,
    officer: "Alice Example",
    slot: "9C",
    serial: "12345678",
  });
  const files = {
    leaf: join(dir, "signer.pem"),
    key: join(dir, "signer.key"),
    chain: join(dir, "chain.pem"),
    root: join(dir, "root.pem"),
  };
  await writeFile(files.leaf, pem("CERTIFICATE", new Uint8Array(leaf.rawData)));
  await writeFile(files.key, await exportPrivateKeyPem(keys.privateKey), { mode: 0o600 });
  await writeFile(files.chain, pem("CERTIFICATE", new Uint8Array(fixture.pki.tokenCa.certificate.rawData)));
  await writeFile(files.root, pem("CERTIFICATE", fixture.rootDer));

  const devices = Math.min(DEVICES, plan.hsms.length);
  const jsonSizes: number[] = [];
  const cmsSizes: number[] = [];
  const signTimes: number[] = [];
  const verifyTimes: number[] = [];
  const floorTimes: number[] = [];
  for (let i = 0; i < devices; i++) {
    const info = conveyedInformation(plan, i);
    const input = join(dir, `device-${i}.json`);
    const cms = join(dir, `device-${i}.cms`);
    const output = join(dir, `device-${i}.out.json`);
    await writeFile(input, info);
    jsonSizes.push(Buffer.byteLength(info));
    // -nosmimecap: no S/MIME capabilities attribute (SZTP has no use for it; smaller, in SZTP's favour).
    const sign = openssl([
      "cms",
      "-sign",
      "-binary",
      "-nodetach",
      "-nosmimecap",
      "-md",
      "sha256",
      "-econtent_type",
      ID_CT_SZTP_CONVEYED_INFO_JSON,
      "-signer",
      files.leaf,
      "-inkey",
      files.key,
      "-certfile",
      files.chain,
      "-in",
      input,
      "-outform",
      "DER",
      "-out",
      cms,
    ]);
    if (!sign.ok) {
      const skipped = `openssl cms -sign failed: ${sign.stderr.trim().split("\n")[0]}`;
      print(`  skipped: ${skipped}`);
      return { skipped };
    }
    signTimes.push(sign.wallMs);
    cmsSizes.push((await readFile(cms)).length);
    const verify = openssl([
      "cms",
      "-verify",
      "-binary",
      "-inform",
      "DER",
      "-in",
      cms,
      "-CAfile",
      files.root,
      "-purpose",
      "any",
      "-out",
      output,
    ]);
    if (!verify.ok || (await readFile(output, "utf8")) !== info) {
      const skipped = `openssl cms -verify failed: ${verify.stderr.trim().split("\n")[0]}`;
      print(`  skipped: ${skipped}`);
      return { skipped };
    }
    verifyTimes.push(verify.wallMs);
    floorTimes.push(openssl(["version"]).wallMs);
  }
  const verifyCpuMs = opensslCpuMs([
    "cms",
    "-verify",
    "-binary",
    "-inform",
    "DER",
    "-in",
    join(dir, "device-0.cms"),
    "-CAfile",
    files.root,
    "-purpose",
    "any",
    "-out",
    "/dev/null",
  ]);
  const floorCpuMs = opensslCpuMs(["version"]);
  const result: SztpResult = {
    devices,
    jsonBytesPerDevice: mean(jsonSizes),
    cmsBytesPerDevice: mean(cmsSizes),
    signMs: mean(signTimes),
    verifyMs: mean(verifyTimes),
    verifyMedianMs: median(verifyTimes),
    processFloorMs: mean(floorTimes),
    ...(verifyCpuMs !== undefined ? { verifyCpuMs } : {}),
    ...(floorCpuMs !== undefined ? { floorCpuMs } : {}),
  };
  print(
    `  ${devices} devices of the 1,000-HSM plan; ${version.stdout.trim()}; signer P-256, chain = signer + token CA:`,
  );
  table(
    ["per device (mean)", "value"],
    [
      ["conveyed-information JSON", `${int(result.jsonBytesPerDevice!)} B`],
      ["CMS SignedData (DER)", `${int(result.cmsBytesPerDevice!)} B`],
      ["openssl cms -sign, wall", `${fixed(result.signMs!)} ms`],
      [
        "openssl cms -verify, wall (process start included)",
        `${fixed(result.verifyMs!)} ms (median ${fixed(result.verifyMedianMs!)})`,
      ],
      ["openssl version, wall (process start-up floor)", `${fixed(result.processFloorMs!)} ms`],
      ...(verifyCpuMs !== undefined && floorCpuMs !== undefined
        ? [
            [`openssl cms -verify, CPU (shell times over ${CPU_LOOP} runs)`, `${fixed(verifyCpuMs)} ms`],
            [`openssl version, CPU (same)`, `${fixed(floorCpuMs)} ms`],
            [
              "→ verification work in openssl (CPU difference)",
              `${fixed(Math.max(0, verifyCpuMs - floorCpuMs))} ms`,
            ],
          ]
        : []),
    ],
  );
  return result;
}
