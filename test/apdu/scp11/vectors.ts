// Loads the SCP11 known-answer vectors kept in the repository (test/vectors/scp11, see its README).
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "vectors", "scp11");

export const h = (s: string) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "hex"));
export const x = (b: Uint8Array) => Buffer.from(b).toString("hex").toUpperCase();

export interface TranscriptStep {
  readonly command: string;
  readonly response: string;
  readonly what: string;
}

export interface SamsungVector {
  readonly variant: string;
  readonly oce_kid: string;
  readonly sd_kid: string;
  readonly kvn: string;
  readonly constants: Record<string, string>;
  readonly transcript: readonly TranscriptStep[];
}

export interface Scp11bVector {
  readonly "eSK.OCE (Samsung OpenSCP-Java Scp11TestData.ESK_OCE_ECKA_P256)": string;
  readonly "SK.SD": string;
  readonly "PK.SD": string;
  readonly "eSK.SD": string;
  readonly internal_authenticate_capdu: string;
  readonly internal_authenticate_rapdu: string;
  readonly "Z = ShSee||ShSes": string;
  readonly sharedInfo: string;
  readonly receipt_key: string;
  readonly "S-ENC": string;
  readonly "S-MAC": string;
  readonly "S-RMAC": string;
  readonly DEK: string;
  readonly messages: readonly {
    plain_command: string;
    wrapped_command: string;
    plain_response: string;
    wrapped_response: string;
  }[];
}

function load<T>(name: string): T {
  return JSON.parse(readFileSync(resolve(DIR, name), "utf8")) as T;
}

export const samsungA = () => load<SamsungVector>("samsung-scp11a-p256-aes128-s8.json");
export const samsungC = () => load<SamsungVector>("samsung-scp11c-p256-aes128-s8.json");
export const scp11b = () => load<Scp11bVector>("scp11b-p256-aes128-s8.json");
