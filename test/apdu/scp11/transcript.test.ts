// The host processor (openScp11 on a SmartCardProtocol) replays the Samsung SCP11a/c transcripts
// against a transport that plays the card's recorded answers and checks every command the host
// sends. Two differences in Le only, listed where they are allowed: Samsung's host puts Le 00 on
// every command (our chained blocks carry none) and sends GET RESPONSE without Le (ours asks for
// the 256 bytes the card announced). Everything else, the wrapped command included, is byte for byte.
import { X509Certificate } from "node:crypto";
import { describe, expect, it } from "vitest";
import { SmartCardProtocol } from "../../../src/apdu/chaining.js";
import { decodeCommandApdu } from "../../../src/apdu/command.js";
import {
  decodeCertificateStore,
  ISD_AID,
  openScp11,
  p256PrivateKeyFromDer,
  ScpIntegrityError,
} from "../../../src/apdu/scp11/index.js";
import type { CardTransport } from "../../../src/transport/card-transport.js";
import { h, type SamsungVector, samsungA, samsungC, x } from "./vectors.js";

class ReplayTransport implements CardTransport {
  readonly atr = h("3BF81300008131FE15597562696B657934D4");
  readonly contactless = false;
  readonly readerName = "replay";
  readonly sent: string[] = [];
  private step = -1; // -1: the SELECT of the ISD, which the transcript does not record

  constructor(
    private readonly v: SamsungVector,
    private readonly tamper?: (i: number, response: Uint8Array) => Uint8Array,
  ) {}

  async transmit(command: Uint8Array): Promise<Uint8Array> {
    this.sent.push(x(command));
    if (this.step === -1) {
      this.step++;
      expect(x(decodeCommandApdu(command).data)).toBe(x(ISD_AID));
      return h("9000");
    }
    const t = this.v.transcript[this.step];
    if (!t) throw new Error(`host sent more than the transcript: ${x(command)}`);
    const i = this.step++;
    const want = t.command.toUpperCase();
    const leOnly = t.what.startsWith("GET_RESPONSE") || (t.what.startsWith("PERFORM") && i < 5);
    if (leOnly) {
      const a = decodeCommandApdu(command);
      const b = decodeCommandApdu(h(want));
      expect([a.cla, a.ins, a.p1, a.p2, x(a.data)]).toEqual([b.cla, b.ins, b.p1, b.p2, x(b.data)]);
    } else {
      expect(x(command)).toBe(want);
    }
    const response = h(t.response);
    return this.tamper ? this.tamper(i, response) : response;
  }

  async close(): Promise<void> {}
}

function sdCertificate(v: SamsungVector): Uint8Array {
  const store = Buffer.concat(v.transcript.slice(0, 3).map((s) => h(s.response).subarray(0, -2)));
  return decodeCertificateStore(store)[0]!;
}

describe.each([
  ["SCP11a", samsungA],
  ["SCP11c", samsungC],
])("Samsung %s transcript through the host processor", (_name, load) => {
  const v = load();
  const sd = sdCertificate(v);
  const notBefore = new Date(new X509Certificate(Buffer.from(sd)).validFrom);
  // The SD certificate is self-contained here: it is its own trust anchor (Samsung's CA is not in
  // the vectors); validated at a time within its validity.
  const trust = { anchors: [sd], now: new Date(notBefore.getTime() + 86_400_000) };
  const oce = {
    certificates: [h(v.constants.X509_CERT_OCE_ECKA_P256!)],
    privateKey: p256PrivateKeyFromDer(h(v.constants.SK_OCE_ECKA_P256!)),
    kid: Number.parseInt(v.oce_kid, 16),
  };

  async function open(t: ReplayTransport) {
    const protocol = new SmartCardProtocol(t);
    const info = await openScp11(
      protocol,
      {
        variant: v.variant === "SCP11c" ? "c" : "a",
        kvn: Number.parseInt(v.kvn, 16),
        kid: Number.parseInt(v.sd_kid, 16),
        trust,
        oce,
        ephemeralKey: p256PrivateKeyFromDer(h(v.constants.ESK_OCE_ECKA_P256!)),
      },
      async () => {},
    );
    return { protocol, info };
  }

  it("sends the recorded commands and decrypts the wrapped answer", async () => {
    const t = new ReplayTransport(v);
    const { protocol, info } = await open(t);
    expect(info.protocol).toBe(v.variant);
    const r = await protocol.transmit({ cla: 0x80, ins: 0xf2, p1: 0x20, p2: 0x00, data: h("4F00") });
    expect(r.sw).toBe(0x9000);
    expect(x(r.data)).toBe(v.constants.LIST_PACKAGES_RSP_PLAIN_DATA!.toUpperCase());
    expect(t.sent).toHaveLength(1 + v.transcript.length);
  });

  it("a flipped bit in the wrapped answer closes the channel (ScpIntegrityError), nothing more is sent", async () => {
    const t = new ReplayTransport(v, (i, r) => {
      if (i !== 7) return r;
      const f = r.slice();
      f[3]! ^= 0x10;
      return f;
    });
    const { protocol } = await open(t);
    await expect(
      protocol.transmit({ cla: 0x80, ins: 0xf2, p1: 0x20, p2: 0, data: h("4F00") }),
    ).rejects.toThrow(ScpIntegrityError);
    const n = t.sent.length;
    await expect(
      protocol.transmit({ cla: 0x80, ins: 0xf2, p1: 0x20, p2: 0, data: h("4F00") }),
    ).rejects.toThrow(ScpIntegrityError);
    expect(t.sent.length).toBe(n);
  });

  it("a forged receipt is refused and nothing is wrapped", async () => {
    const t = new ReplayTransport(v, (i, r) => {
      if (i !== 6) return r;
      const f = r.slice();
      f[f.length - 3]! ^= 0x01;
      return f;
    });
    await expect(open(t)).rejects.toThrow(/receipt does not verify/);
    expect(t.sent).toHaveLength(8);
  });
});
