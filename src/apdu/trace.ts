/**
 * Opt-in, debug-level APDU trace that never shows secrets. It sits directly on the transport
 * (`TracingTransport`, an ObservedTransport, wraps any CardTransport), so whatever the layers above do — chaining, GET
 * RESPONSE, later secure messaging — what reaches the log is decided here, in one place.
 *
 * Redacted (only the header and a byte count are shown):
 * - command data of VERIFY (INS 20), CHANGE REFERENCE DATA (24), RESET RETRY COUNTER (2C),
 *   Yubico SET MANAGEMENT KEY (FF) and IMPORT KEY (FE);
 * - command and response data of GENERAL AUTHENTICATE with the management key (87 .. 9B): the
 *   witness, challenge and response of the mutual authentication;
 * - response data of an ECDH key agreement (GENERAL AUTHENTICATE with tag 85): the shared secret;
 * - the PRINTED object 5FC109 (YubiKey PIN-protected management key) in PUT and GET DATA;
 * - every following block of a command chain, and every GET RESPONSE piece, of a redacted exchange.
 */
import type { CardTransport } from "../transport/card-transport.js";
import { ObservedTransport } from "../transport/observed-transport.js";
import { PIV_INS } from "./instructions.js";
import { decodeTlv, decodeTlvs } from "./tlv.js";

export interface ApduTraceSink {
  debug(message: string): void;
}

const KEY_MANAGEMENT = 0x9b;
/** `5C 03 5F C1 09`: the PRINTED object tag list. */
const PRINTED_TAG_LIST = [0x5c, 0x03, 0x5f, 0xc1, 0x09];

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).toUpperCase().padStart(2, "0")).join(" ");
}

function redacted(n: number): string {
  return `[${n} byte${n === 1 ? "" : "s"} redacted]`;
}

function startsWith(data: Uint8Array, prefix: readonly number[]): boolean {
  if (data.length < prefix.length) return false;
  return prefix.every((b, i) => data[i] === b);
}

/** Command body without the Lc byte(s) and Le, when it parses as a short or extended case 3/4. */
function commandData(apdu: Uint8Array): Uint8Array {
  const body = apdu.subarray(4);
  if (body.length < 2) return new Uint8Array(0);
  if (body[0] !== 0) return body.subarray(1, 1 + body[0]!);
  if (body.length < 4) return new Uint8Array(0);
  const lc = (body[1]! << 8) | body[2]!;
  return body.subarray(3, 3 + lc);
}

function containsEcdhPoint(data: Uint8Array): boolean {
  try {
    const outer = decodeTlv(data, 0x7c);
    return decodeTlvs(outer.value).some((t) => t.tag === 0x85);
  } catch {
    return false;
  }
}

/**
 * Formats APDUs for the trace, redacting secrets. Stateful (chains and GET RESPONSE sequences):
 * use one instance per card connection, and feed it every command and response in order.
 */
export class ApduTraceFormatter {
  private chain: { ins: number; redactCommand: boolean; redactResponse: boolean } | undefined;
  private redactResponse = false;

  command(apdu: Uint8Array): string {
    if (apdu.length < 4) {
      this.redactResponse = false;
      return `>> ${hex(apdu)}`;
    }
    const cla = apdu[0]!;
    const ins = apdu[1]!;
    const p2 = apdu[3]!;
    if (ins === PIV_INS.getResponse) {
      // Keeps redactResponse of the exchange it continues.
      return `>> ${hex(apdu)}`;
    }
    const data = commandData(apdu);
    let redactCommand =
      ins === PIV_INS.verify ||
      ins === PIV_INS.changeReference ||
      ins === PIV_INS.resetRetryCounter ||
      ins === PIV_INS.setManagementKey ||
      ins === PIV_INS.importKey ||
      (ins === PIV_INS.generalAuthenticate && p2 === KEY_MANAGEMENT) ||
      (ins === PIV_INS.putData && startsWith(data, PRINTED_TAG_LIST));
    let redactResponse =
      (ins === PIV_INS.generalAuthenticate && (p2 === KEY_MANAGEMENT || containsEcdhPoint(data))) ||
      (ins === PIV_INS.getData && startsWith(data, PRINTED_TAG_LIST));
    if (this.chain && this.chain.ins === ins) {
      redactCommand ||= this.chain.redactCommand;
      redactResponse ||= this.chain.redactResponse;
    }
    this.chain = (cla & 0x10) !== 0 ? { ins, redactCommand, redactResponse } : undefined;
    this.redactResponse = redactResponse;
    if (!redactCommand || apdu.length === 4) return `>> ${hex(apdu)}`;
    return `>> ${hex(apdu.subarray(0, 4))} ${redacted(apdu.length - 4)}`;
  }

  response(apdu: Uint8Array): string {
    const n = apdu.length;
    if (n < 2) return `<< ${hex(apdu)}`;
    const sw = apdu.subarray(n - 2);
    const more = sw[0] === 0x61;
    const redact = this.redactResponse;
    if (!more) this.redactResponse = false;
    if (!redact || n === 2) return `<< ${hex(apdu)}`;
    return `<< ${redacted(n - 2)} ${hex(sw)}`;
  }
}

/** A CardTransport that writes a redacted APDU trace to `sink.debug` and forwards everything. */
export class TracingTransport extends ObservedTransport {
  constructor(inner: CardTransport, sink: ApduTraceSink) {
    const formatter = new ApduTraceFormatter();
    super(inner, {
      command: (command) => sink.debug(`apdu ${formatter.command(command)}`),
      response: (_command, response) => sink.debug(`apdu ${formatter.response(response)}`),
    });
  }
}
