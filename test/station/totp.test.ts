import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  base32Decode,
  base32Encode,
  enrollTotp,
  hotp,
  isTotpEnrolled,
  matchTotp,
  otpauthUri,
  TotpRejectedError,
  totp,
  totpStep,
  verifyOfficerTotp,
} from "../../src/station/totp.js";
import { removeTempDirs, tempDir } from "./fixtures.js";

afterAll(removeTempDirs);

const ascii = (s: string) => new TextEncoder().encode(s);

// RFC 6238 Appendix B: the seeds are the ASCII strings below (20, 32 and 64 bytes), 8 digits, X = 30.
const SEEDS = {
  SHA1: ascii("12345678901234567890"),
  SHA256: ascii("12345678901234567890123456789012"),
  SHA512: ascii("1234567890123456789012345678901234567890123456789012345678901234"),
} as const;
const RFC6238_VECTORS: [number, string, keyof typeof SEEDS][] = [
  [59, "94287082", "SHA1"],
  [59, "46119246", "SHA256"],
  [59, "90693936", "SHA512"],
  [1111111109, "07081804", "SHA1"],
  [1111111109, "68084774", "SHA256"],
  [1111111109, "25091201", "SHA512"],
  [1111111111, "14050471", "SHA1"],
  [1111111111, "67062674", "SHA256"],
  [1111111111, "99943326", "SHA512"],
  [1234567890, "89005924", "SHA1"],
  [1234567890, "91819424", "SHA256"],
  [1234567890, "93441116", "SHA512"],
  [2000000000, "69279037", "SHA1"],
  [2000000000, "90698825", "SHA256"],
  [2000000000, "38618901", "SHA512"],
  [20000000000, "65353130", "SHA1"],
  [20000000000, "77737706", "SHA256"],
  [20000000000, "47863826", "SHA512"],
];

describe("RFC 6238 / RFC 4226", () => {
  it.each(RFC6238_VECTORS)("T=%i gives %s (%s)", (time, expected, algorithm) => {
    expect(totp(SEEDS[algorithm], time, { algorithm, digits: 8, periodSeconds: 30 })).toBe(expected);
  });

  it("gives the RFC 4226 Appendix D HOTP values (6 digits)", () => {
    const expected = [
      "755224",
      "287082",
      "359152",
      "969429",
      "338314",
      "254676",
      "287922",
      "162583",
      "399871",
      "520489",
    ];
    expect(expected.map((_, counter) => hotp(SEEDS.SHA1, counter))).toEqual(expected);
  });

  it("accepts the current step and one either side, and nothing further", () => {
    const secret = SEEDS.SHA1;
    const t = 1_700_000_015;
    const step = totpStep(t);
    for (const offset of [-1, 0, 1]) {
      const code = hotp(secret, step + offset);
      expect(matchTotp(secret, code, t)).toBe(step + offset);
    }
    for (const offset of [-2, 2]) expect(matchTotp(secret, hotp(secret, step + offset), t)).toBeUndefined();
  });

  it("refuses malformed codes", () => {
    const t = 1_700_000_000;
    const code = totp(SEEDS.SHA1, t);
    expect(matchTotp(SEEDS.SHA1, `${code} `, t)).toBe(totpStep(t)); // spaces are ignored
    for (const bad of ["", "12345", "1234567", "12a456", code.replace(/./g, "x")]) {
      expect(matchTotp(SEEDS.SHA1, bad, t)).toBeUndefined();
    }
  });
});

describe("base32 (RFC 4648 §10 test vectors) and otpauth URIs", () => {
  const vectors: [string, string][] = [
    ["", ""],
    ["f", "MY======"],
    ["fo", "MZXQ===="],
    ["foo", "MZXW6==="],
    ["foob", "MZXW6YQ="],
    ["fooba", "MZXW6YTB"],
    ["foobar", "MZXW6YTBOI======"],
  ];
  it.each(vectors)("%j ⇄ %s", (plain, encoded) => {
    expect(base32Encode(ascii(plain), true)).toBe(encoded);
    expect(base32Encode(ascii(plain))).toBe(encoded.replace(/=+$/, ""));
    expect(Buffer.from(base32Decode(encoded)).toString()).toBe(plain);
    expect(Buffer.from(base32Decode(encoded.toLowerCase())).toString()).toBe(plain);
  });

  it("refuses characters outside the alphabet", () => {
    expect(() => base32Decode("MZ1W")).toThrow(RangeError);
  });

  it("builds a Key URI authenticator apps read", () => {
    const uri = otpauthUri({ secret: SEEDS.SHA1, account: "Alice Example" });
    expect(uri).toBe(
      "otpauth://totp/hsm-onboard:Alice%20Example?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=hsm-onboard&algorithm=SHA1&digits=6&period=30",
    );
  });
});

describe("enrolments in the station directory", () => {
  it("enrols with a 20-byte secret in a 0600 file, refuses a second enrolment unless forced", async () => {
    const dir = await tempDir("totp");
    const first = await enrollTotp(dir, "Alice");
    expect(first.secret).toHaveLength(20);
    expect(first.replaced).toBe(false);
    expect(await isTotpEnrolled(dir, "Alice")).toBe(true);
    expect(await isTotpEnrolled(dir, "Bob")).toBe(false);
    expect(await isTotpEnrolled(dir, "constructor")).toBe(false);
    expect((await stat(join(dir, "totp.json"))).mode & 0o777).toBe(0o600);
    await expect(enrollTotp(dir, "Alice")).rejects.toThrow(/already enrolled/);
    const second = await enrollTotp(dir, "Alice", { force: true });
    expect(second.replaced).toBe(true);
    expect(Buffer.from(second.secret).equals(Buffer.from(first.secret))).toBe(false);
    expect(await readFile(join(dir, "totp.json"), "utf8")).toContain(base32Encode(second.secret));
  });

  it("accepts a code once (replay protection), and no earlier code after a later one", async () => {
    const dir = await tempDir("totp");
    const { secret } = await enrollTotp(dir, "Alice");
    const now = new Date(1_800_000_000_000);
    const t = now.getTime() / 1000;
    await verifyOfficerTotp(dir, "Alice", totp(secret, t), now);
    await expect(verifyOfficerTotp(dir, "Alice", totp(secret, t), now)).rejects.toThrow(/already used/);
    // The previous step's code is inside the window but older than the one accepted.
    await expect(verifyOfficerTotp(dir, "Alice", totp(secret, t - 30), now)).rejects.toThrow(
      TotpRejectedError,
    );
    // The next step is accepted.
    const later = new Date(now.getTime() + 30_000);
    await verifyOfficerTotp(dir, "Alice", totp(secret, t + 30), later);
  });

  it("rejects wrong codes and unknown officers with exit 13", async () => {
    const dir = await tempDir("totp");
    const { secret } = await enrollTotp(dir, "Alice");
    const now = new Date();
    const right = totp(secret, now.getTime() / 1000);
    const wrong = right === "123456" ? "654321" : "123456";
    const error = await verifyOfficerTotp(dir, "Alice", wrong, now).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TotpRejectedError);
    expect((error as TotpRejectedError).exitCode).toBe(13);
    await expect(verifyOfficerTotp(dir, "Mallory", right, now)).rejects.toThrow(/not enrolled/);
  });

  it("refuses officer names it could not match to a certificate CN", async () => {
    const dir = await tempDir("totp");
    await expect(enrollTotp(dir, " Alice")).rejects.toThrow(/officer name/);
    await expect(enrollTotp(dir, "")).rejects.toThrow(/officer name/);
  });
});
