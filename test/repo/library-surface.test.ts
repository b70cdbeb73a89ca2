/**
 * Importing hsm-onboard changes nothing global: @peculiar/x509 is loaded through src/util/x509.ts
 * with a stand-in Reflect metadata API that is gone again once the import is done, instead of the
 * `reflect-metadata` polyfill, which would patch `Reflect` for every integrator.
 *
 * The import is checked in a plain node child on a private build, and in this process too: the test
 * setup loads @peculiar/x509 the product's way (test/setup.ts), so no test sees a polyfill either.
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildForChildren, type PrivateBuild } from "../helpers/pcsc-env.js";
import { SRC, sourceFiles } from "../helpers/sources.js";

describe("library surface: no global side effect on import", () => {
  it("no module but src/util/x509.ts imports @peculiar/x509, and none imports reflect-metadata", () => {
    const offenders = sourceFiles().flatMap((file) => {
      const text = readFileSync(file, "utf8");
      const name = relative(SRC, file);
      const found: string[] = [];
      if (/["']reflect-metadata["']/.test(text) && name !== "util/reflect-shim.ts")
        found.push(`${name}: reflect-metadata`);
      if (/(?:from|import)\s*\(?\s*["']@peculiar\/x509["']/.test(text) && name !== "util/x509.ts") {
        found.push(`${name}: @peculiar/x509`);
      }
      return found;
    });
    expect(offenders).toEqual([]);
  });

  it("in this process, after @peculiar/x509 has been loaded and used, Reflect has no metadata API", async () => {
    const { X509Certificate } = await import("@peculiar/x509");
    expect(typeof X509Certificate).toBe("function");
    const reflect = Reflect as unknown as Record<string, unknown>;
    expect([reflect.getMetadata, reflect.getOwnMetadata, reflect.defineMetadata]).toEqual([
      undefined,
      undefined,
      undefined,
    ]);
  });

  describe("in a plain node process", () => {
    let build: PrivateBuild;
    beforeAll(async () => {
      build = await buildForChildren(["index.js", "util/x509.js", "pki/issue.js"]);
    }, 180_000);
    afterAll(async () => {
      await build?.cleanup();
    });

    async function run(script: string): Promise<Record<string, unknown>> {
      const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], {
        cwd: build.dir,
        timeout: 60_000,
      });
      return JSON.parse(stdout.trim().split("\n").at(-1)!) as Record<string, unknown>;
    }

    it("importing the package entry leaves Reflect.getMetadata undefined, and x509 still works", async () => {
      const result = await run(`
        const before = typeof Reflect.getMetadata;
        const lib = await import(${JSON.stringify(build.url("index.js"))});
        const afterImport = [typeof Reflect.getMetadata, typeof Reflect.getOwnMetadata, typeof Reflect.defineMetadata];
        const { createPki, createDeviceIdentity } = await import(${JSON.stringify(build.url("pki/issue.js"))});
        const pki = await createPki({ owner: "Acme" });
        const device = await createDeviceIdentity({ deviceCa: pki.deviceCa, serial: "1234567" });
        const chain = await lib
          .validateChain({
            leaf: device.certificate,
            intermediates: [pki.deviceCa.certificate],
            trustAnchor: pki.root.certificate,
            requireCrl: false,
            ...lib.VALIDATION_REQUIREMENTS.deviceReceipt,
          })
          .then((r) => "valid " + r.subjectSerialNumber, (e) => "refused: " + e.message);
        console.log(JSON.stringify({ before, afterImport, afterUse: typeof Reflect.getMetadata, subject: pki.tokenCa.certificate.subject, chain }));
      `);
      expect(result.before).toBe("undefined");
      expect(result.afterImport).toEqual(["undefined", "undefined", "undefined"]);
      expect(result.afterUse).toBe("undefined");
      expect(result.subject).toMatch(/O=Acme/);
      expect(result.chain).toBe("valid 1234567");
    });

    it("an integrator's own Reflect metadata API is left as it was", async () => {
      const result = await run(`
        const mine = () => undefined;
        Reflect.getMetadata = mine;
        Reflect.getOwnMetadata = mine;
        Reflect.defineMetadata = mine;
        await import(${JSON.stringify(build.url("index.js"))});
        console.log(JSON.stringify({ kept: [Reflect.getMetadata, Reflect.getOwnMetadata, Reflect.defineMetadata].every((f) => f === mine) }));
      `);
      expect(result.kept).toBe(true);
    });
  });
});
