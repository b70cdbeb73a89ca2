// Property-based tests of the SCP11 decoders of untrusted bytes (certificate store, the card's
// authenticate answer, the host's authenticate data as the card parses it, wrapped responses and
// wrapped commands): they either decode or throw their typed error (exit 15), never anything else.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeCommandApdu, encodeCommandApdu } from "../../../src/apdu/command.js";
import {
  cardHandshake,
  completeHostHandshake,
  decodeAuthenticateData,
  decodeAuthenticateResponse,
  decodeCertificateStore,
  encodeAuthenticateData,
  encodeAuthenticateResponse,
  encodeCertificateStore,
  generateP256,
  p256Point,
  ScpCardChannel,
  ScpHostChannel,
  ScpIntegrityError,
  ScpMalformedError,
} from "../../../src/apdu/scp11/index.js";
import { encodeTlv } from "../../../src/apdu/tlv.js";
import { IntegrityError } from "../../../src/errors.js";
import { x } from "./vectors.js";

const anyBytes = fc.uint8Array({ maxLength: 600 });

function expectTyped(f: () => unknown, type: new (...a: never[]) => Error): void {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(type);
  }
}

/** A fresh pair of channel ends sharing one SCP11b session. */
function session() {
  const skSd = generateP256();
  const eSkOce = generateP256();
  const authData = encodeAuthenticateData("b", p256Point(eSkOce));
  const card = cardHandshake({ authData, skSd });
  const host = completeHostHandshake({ authData, answer: card.answer, eSkOce, pkSd: p256Point(skSd) });
  return { host: new ScpHostChannel(host), card: new ScpCardChannel(card) };
}

const certLike = fc.uint8Array({ minLength: 0, maxLength: 300 }).map((v) => encodeTlv(0x30, v));

describe("certificate store decoder (GET DATA BF21)", () => {
  it("splits any list of DER SEQUENCEs, bare or in BF21, back into the same list", () => {
    fc.assert(
      fc.property(fc.array(certLike, { minLength: 1, maxLength: 6 }), fc.boolean(), (certs, wrapped) => {
        expect(decodeCertificateStore(encodeCertificateStore(certs, wrapped)).map(x)).toEqual(certs.map(x));
      }),
    );
  });

  it("on arbitrary bytes returns pieces that cover the input or throws ScpMalformedError", () => {
    fc.assert(
      fc.property(anyBytes, (bytes) => {
        expectTyped(() => {
          const certs = decodeCertificateStore(bytes);
          const joined = Buffer.concat(certs);
          const bare = bytes[0] === 0xbf && bytes[1] === 0x21 ? undefined : bytes;
          if (bare) expect(x(joined)).toBe(x(bare));
          for (const c of certs) expect(c[0]).toBe(0x30);
        }, ScpMalformedError);
      }),
      { numRuns: 2000 },
    );
  });

  it("refuses trailing bytes, too many certificates, non-certificates and empty stores", () => {
    const c = encodeTlv(0x30, Uint8Array.of(1, 2, 3));
    expect(() => decodeCertificateStore(new Uint8Array(0))).toThrow(ScpMalformedError);
    expect(() => decodeCertificateStore(Uint8Array.of(0xbf, 0x21, 0x00))).toThrow(ScpMalformedError);
    expect(() => decodeCertificateStore(Buffer.concat([encodeTlv(0xbf21, c), Uint8Array.of(0)]))).toThrow(
      ScpMalformedError,
    );
    expect(() => decodeCertificateStore(Buffer.concat(Array(7).fill(c)))).toThrow(ScpMalformedError);
    expect(() => decodeCertificateStore(encodeTlv(0x31, Uint8Array.of(1)))).toThrow(ScpMalformedError);
    expect(() => decodeCertificateStore(c.subarray(0, 4))).toThrow(ScpMalformedError);
  });
});

describe("the card's authenticate answer (5F49 ‖ 86)", () => {
  it("round-trips well-formed answers", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 65, maxLength: 65 }),
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        (p, r) => {
          const d = decodeAuthenticateResponse(encodeAuthenticateResponse(p, r));
          expect(x(d.ePkSd)).toBe(x(p));
          expect(x(d.receipt)).toBe(x(r));
        },
      ),
    );
  });

  it("on arbitrary bytes decodes or throws ScpMalformedError", () => {
    fc.assert(
      fc.property(anyBytes, (bytes) =>
        expectTyped(() => decodeAuthenticateResponse(bytes), ScpMalformedError),
      ),
      { numRuns: 2000 },
    );
  });

  it("a handshake answer with an arbitrary point or receipt is refused before any key is trusted", () => {
    const skSd = generateP256();
    const eSkOce = generateP256();
    const authData = encodeAuthenticateData("b", p256Point(eSkOce));
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 65, maxLength: 65 }),
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        (p, r) => {
          const answer = encodeAuthenticateResponse(Uint8Array.from([0x04, ...p.subarray(1)]), r);
          expect(() => completeHostHandshake({ authData, answer, eSkOce, pkSd: p256Point(skSd) })).toThrow(
            IntegrityError,
          );
        },
      ),
      { numRuns: 200 },
    );
  });

  it("refuses an ePK.SD off the curve and the point at infinity", () => {
    const skSd = generateP256();
    const eSkOce = generateP256();
    const authData = encodeAuthenticateData("b", p256Point(eSkOce));
    const card = cardHandshake({ authData, skSd });
    const offCurve = card.answer.slice();
    offCurve[3 + 64]! ^= 0x01; // last byte of Y
    expect(() =>
      completeHostHandshake({ authData, answer: offCurve, eSkOce, pkSd: p256Point(skSd) }),
    ).toThrow(/not a point on P-256/);
    const infinity = encodeAuthenticateResponse(new Uint8Array(65), new Uint8Array(16));
    expect(() =>
      completeHostHandshake({ authData, answer: infinity, eSkOce, pkSd: p256Point(skSd) }),
    ).toThrow(ScpIntegrityError);
  });
});

describe("the host's authenticate data as the card parses it", () => {
  it("accepts what the host builds, for every variant", () => {
    for (const v of ["a", "b", "c"] as const) {
      const p = p256Point(generateP256());
      const d = decodeAuthenticateData(encodeAuthenticateData(v, p));
      expect(d.variant).toBe(v);
      expect(x(d.ePkOce)).toBe(x(p));
    }
  });

  it("on arbitrary bytes (and on mutations of a valid request) decodes or throws ScpMalformedError", () => {
    const valid = encodeAuthenticateData("b", p256Point(generateP256()));
    fc.assert(
      fc.property(anyBytes, (bytes) => expectTyped(() => decodeAuthenticateData(bytes), ScpMalformedError)),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: valid.length - 1 }), fc.integer({ min: 1, max: 255 }), (i, m) => {
        const d = valid.slice();
        d[i]! ^= m;
        expectTyped(() => decodeAuthenticateData(d), ScpMalformedError);
      }),
      { numRuns: 500 },
    );
  });
});

describe("wrapped responses and commands", () => {
  it("arbitrary response bytes never get past the host: ScpIntegrityError, then the channel stays closed", () => {
    fc.assert(
      fc.property(anyBytes, fc.constantFrom(0x9000, 0x6283, 0x63c2, 0x6a82), (data, sw) => {
        const { host } = session();
        host.wrap({ cla: 0, ins: 0xcb, p1: 0x3f, p2: 0xff, data: Uint8Array.of(0x5c, 1, 0x7e) });
        let passed = false;
        try {
          host.unwrap({ data, sw });
          passed = true;
        } catch (e) {
          expect(e).toBeInstanceOf(ScpIntegrityError);
          expect(host.closed).toBe(true);
          expect(() => host.wrap({ cla: 0, ins: 0xfd, p1: 0, p2: 0 })).toThrow(ScpIntegrityError);
        }
        // Only a bare error status can pass unauthenticated.
        if (passed) expect(sw === 0x6a82 && data.length === 0).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it("one flipped bit in a wrapped answer is refused; the genuine one is accepted", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(), (payload, bit) => {
        const a = session();
        a.card.unwrapCommand(
          decodeCommandApdu(encodeCommandApdu(a.host.wrap({ cla: 0, ins: 0xcb, p1: 0x3f, p2: 0xff }))),
        );
        const answer = a.card.wrapResponse(payload, 0x9000);
        const flipped = answer.slice();
        const b = bit % (flipped.length * 8);
        flipped[b >> 3]! ^= 1 << (b & 7);
        expect(() => a.host.unwrap({ data: flipped, sw: 0x9000 })).toThrow(ScpIntegrityError);

        const c = session();
        c.card.unwrapCommand(
          decodeCommandApdu(encodeCommandApdu(c.host.wrap({ cla: 0, ins: 0xcb, p1: 0x3f, p2: 0xff }))),
        );
        expect(x(c.host.unwrap({ data: c.card.wrapResponse(payload, 0x9000), sw: 0x9000 }).data)).toBe(
          x(payload),
        );
      }),
      { numRuns: 100 },
    );
  });

  it("one flipped bit in a wrapped command is refused by the card, which then refuses everything", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(), (payload, bit) => {
        const { host, card } = session();
        const wrapped = host.wrap({ cla: 0, ins: 0xdb, p1: 0x3f, p2: 0xff, data: payload });
        const data = wrapped.data!.slice();
        const b = bit % (data.length * 8);
        data[b >> 3]! ^= 1 << (b & 7);
        expect(() => card.unwrapCommand({ ...wrapped, data, extended: false })).toThrow(ScpIntegrityError);
        expect(() => card.unwrapCommand({ ...wrapped, data: wrapped.data!, extended: false })).toThrow(
          ScpIntegrityError,
        );
      }),
      { numRuns: 100 },
    );
  });

  it("a header change (INS, P1, P2, CLA) breaks the C-MAC", () => {
    const { host, card } = session();
    const wrapped = host.wrap({ cla: 0, ins: 0xdb, p1: 0x3f, p2: 0xff, data: Uint8Array.of(1, 2, 3) });
    expect(() => card.unwrapCommand({ ...wrapped, p2: 0xfe, data: wrapped.data!, extended: false })).toThrow(
      ScpIntegrityError,
    );
  });

  it("a replayed or reordered wrapped command is refused", () => {
    const s1 = session();
    const first = s1.host.wrap({ cla: 0, ins: 0x20, p1: 0, p2: 0x80, data: Uint8Array.of(1) });
    s1.card.unwrapCommand({ ...first, data: first.data!, extended: false });
    expect(() => s1.card.unwrapCommand({ ...first, data: first.data!, extended: false })).toThrow(
      ScpIntegrityError,
    );

    const s2 = session();
    const a = s2.host.wrap({ cla: 0, ins: 0x20, p1: 0, p2: 0x80, data: Uint8Array.of(1) });
    const b = s2.host.wrap({ cla: 0, ins: 0xfd, p1: 0, p2: 0 });
    expect(() => s2.card.unwrapCommand({ ...b, data: b.data!, extended: false })).toThrow(ScpIntegrityError);
    expect(() => s2.card.unwrapCommand({ ...a, data: a.data!, extended: false })).toThrow(ScpIntegrityError);
  });

  it("long commands MAC Lc′ in extended form, and the card agrees whichever way it received them", () => {
    const { host, card } = session();
    const payload = new Uint8Array(600).fill(7);
    const wrapped = host.wrap({ cla: 0, ins: 0xdb, p1: 0x3f, p2: 0xff, data: payload });
    expect(x(card.unwrapCommand({ ...wrapped, data: wrapped.data!, extended: false }))).toBe(x(payload));
  });
});
