/**
 * The host (station, agent) side of SCP11 as an APDU processor (chaining.ts `SmartCardProtocol.use`):
 *
 *   openScp11(protocol, options, selectApplication)
 *     1. SELECT the issuer security domain (A000000151000000);
 *     2. GET DATA BF21 for the certificate store of the SD key (KID/KVN; 13/01 on a YubiKey);
 *     3. validate that chain to a configured SCP trust anchor (scp-trust.ts) → PK.SD;
 *     4. select the application (PIV) — the last command sent without protection;
 *     5. SCP11a: PERFORM SECURITY OPERATION with the OCE certificates (leaf last);
 *     6. INTERNAL AUTHENTICATE (11b) / MUTUAL AUTHENTICATE (11a) with a fresh ephemeral key;
 *        receipt verified → session keys;
 *     7. puts ScpProcessor on top of the stack: from then on every command is wrapped before
 *        command chaining, every answer reassembled (GET RESPONSE travels bare) then unwrapped.
 *
 * Fail-closed: a SELECT through the session, a transport failure (card reset or pulled), a card
 * answer of 6982 after which the session is gone (bad C-MAC; see ScpProcessor and liveProbe) or
 * any R-MAC/padding failure closes the channel for good and throws ScpIntegrityError (exit 15);
 * nothing is ever re-sent in clear.
 *
 * Downgrade rule (docs/DECISIONS.md, "No downgrade once the card shows SCP"): a card shows it has no
 * SCP11 at all by exactly two answers, both before any SCP certificate is read — SELECT of the ISD
 * answered 6A82 (no security domain: YubiKeys before 5.7, PIV-only cards), or GET DATA BF21 answered
 * 6A88 or 6A82 (no certificate store: no SCP11 key of that KID/KVN). Those, and only those, are
 * ScpAbsentError (exit 11), which the flows refuse unless plaintext was explicitly allowed. Any other
 * answer to those two commands, and every failure once the store was read (the FF33 OCE CA list, PSO,
 * the authenticate command refused or answered wrongly), is a channel failure: ScpIntegrityError,
 * ScpMalformedError or ScpOceRefusedError (exit 15) — or the chain's own CertificateValidationError
 * (exit 11, never softened) — and the card is never used in clear afterwards.
 */
import type { KeyObject } from "node:crypto";
import { ScpAbsentError, ScpUnavailableError } from "../../errors.js";
import { bytesEqual, hex } from "../../util/bytes.js";
import type { ApduProcessor, SmartCardProtocol } from "../chaining.js";
import { type CommandApdu, EXTENDED_MAX_LE } from "../command.js";
import { GP_INS } from "../instructions.js";
import { formatSw, type ResponseApdu } from "../response.js";
import { encodeTlv } from "../tlv.js";
import { decodeCertificateStore } from "./cert-store.js";
import { ScpIntegrityError, ScpOceRefusedError } from "./errors.js";
import {
  completeHostHandshake,
  encodeAuthenticateData,
  generateP256,
  p256Point,
  SCP11_KID,
  type Scp11Session,
  type Scp11Variant,
} from "./handshake.js";
import { readOceCaIdentifiers } from "./oce-ca.js";
import { type ScpTrust, validateScpChain } from "./scp-trust.js";
import { ScpHostChannel } from "./secure-messaging.js";

/** GlobalPlatform issuer security domain. */
export const ISD_AID = Uint8Array.of(0xa0, 0x00, 0x00, 0x01, 0x51, 0x00, 0x00, 0x00);
export const INS_INTERNAL_AUTHENTICATE = GP_INS.internalAuthenticate;
export const INS_MUTUAL_AUTHENTICATE = GP_INS.mutualAuthenticate;
export const INS_PERFORM_SECURITY_OPERATION = GP_INS.performSecurityOperation;
export const INS_GET_DATA = GP_INS.getData;
const INS_SELECT = 0xa4;
/** Key version of the YubiKey's factory SCP11b key. */
export const DEFAULT_SCP11B_KVN = 0x01;
/** KID under which the card keeps the OCE CA's key (GP Amendment F; YubiKey: 0x10). */
export const DEFAULT_OCE_KID = 0x10;
/** SELECT of the ISD: the answer that says the card has no security domain (so no SCP). */
export const SW_NO_SECURITY_DOMAIN: readonly number[] = [0x6a82];
/** GET DATA BF21: the answers that say there is no certificate store (no SCP11 key of that reference). */
export const SW_NO_SCP_KEY: readonly number[] = [0x6a88, 0x6a82];

export { ScpUnavailableError };

export interface OceCredentials {
  /** The OCE certificate chain, leaf last (the leaf's key is `privateKey`). */
  readonly certificates: readonly Uint8Array[];
  /** SK.OCE. */
  readonly privateKey: KeyObject;
  /** Key reference of the OCE CA key on the card (default KID 0x10, KVN = the SD key's KVN). */
  readonly kid?: number;
  readonly kvn?: number;
  /**
   * The key identifier of the OCE CA that issued the leaf (its authority key identifier). When the
   * card lists its OCE CA identifiers (GET DATA FF33) and none is this one, the card belongs to
   * another owner: ScpOceRefusedError before anything else is sent.
   */
  readonly issuerSki?: Uint8Array;
}

export interface Scp11HostOptions {
  /**
   * "b": the card proves its SCP key; "a": also the host proves its OCE certificate; "c" as "a"
   * with the SD's 11c key (GP Amendment F; offered for completeness, the flows use "a" or "b").
   */
  readonly variant: Scp11Variant;
  /** SD key version (default 0x01) and id (default 0x13 for 11b, 0x11 for 11a). */
  readonly kvn?: number;
  readonly kid?: number;
  /** SCP trust anchors for the card's certificate store. */
  readonly trust: ScpTrust;
  /** SCP11a only. */
  readonly oce?: OceCredentials;
  /** Known-answer tests only: pins the host's ephemeral key. */
  readonly ephemeralKey?: KeyObject;
  /**
   * A command of the selected application with no side effect that always answers 9000 with data
   * (PIV: GET DATA of the discovery object 7E). Sent wrapped after a bare 6982 to learn whether the
   * session survived: if it did, the 6982 was the application's answer ("security status not
   * satisfied", e.g. a PIN-protected object before VERIFY) and is returned as such; if not, the
   * channel failed (exit 15). Without it every 6982 inside the session is a channel failure.
   */
  readonly liveProbe?: CommandApdu;
}

/** What an opened channel reports (for the audit log, status, receipts). */
export interface ScpChannelInfo {
  readonly protocol: "SCP11a" | "SCP11b" | "SCP11c";
  readonly kid: number;
  readonly kvn: number;
  /** Subjects of the card's SCP chain, leaf first, anchor last. */
  readonly chain: readonly string[];
}

/** The processor that wraps everything above command chaining once the channel is open. */
export class ScpProcessor implements ApduProcessor {
  constructor(
    private readonly next: ApduProcessor,
    readonly channel: ScpHostChannel,
    /** The stack's APDU format: with extended APDUs a command asking for more than 256 bytes is sent extended. */
    private readonly format: () => "short" | "extended" = () => "short",
    /** See Scp11HostOptions.liveProbe. */
    private readonly probe?: CommandApdu,
  ) {}

  async process(command: CommandApdu): Promise<ResponseApdu> {
    if (command.ins === INS_SELECT && (command.cla & 0x80) === 0) {
      // A SELECT ends the card's session: refuse it rather than carry on in clear.
      this.channel.close("SELECT inside the secure channel");
      throw new ScpIntegrityError("secure channel: a SELECT would end the session; refused");
    }
    // With extended APDUs, a command that expects a long answer (a PIV object) asks for it whole
    // (Le 65536) instead of in 256-byte GET RESPONSE pieces; its Lc′ is then MACed in extended form.
    const extendedLe =
      this.format() === "extended" && command.le !== undefined && command.le > 256
        ? EXTENDED_MAX_LE
        : undefined;
    const wrapped = this.channel.wrap(command, extendedLe);
    let response: ResponseApdu;
    try {
      response = await this.next.process(wrapped);
    } catch (e) {
      // Card pulled, reset, reader gone: the card's session is gone with it.
      this.channel.close("the card connection failed");
      throw e;
    }
    if (response.sw === 0x6982 && response.data.length === 0) {
      // 6982 is an error status: it comes back bare (GP Amendment D: no R-MAC on errors), so it cannot say
      // whether the application refused the command (PIV: PIN not verified) or the security domain
      // rejected its C-MAC and ended the session. A live session tells them apart (see docs/SECURITY.md).
      if (await this.sessionSurvived()) return response;
      this.channel.close("card refused a wrapped command (6982)");
      throw new ScpIntegrityError(
        "secure channel: the card refused a wrapped command (6982: bad MAC or session lost); nothing re-sent",
      );
    }
    return this.channel.unwrap(response);
  }

  /**
   * After a bare 6982: sends the probe (a wrapped command without side effects that a live session
   * answers 9000 with data, e.g. PIV's discovery object) and says whether its answer carried a valid
   * R-MAC. A card drops the session on a C-MAC failure, so only then can the 6982 be the
   * application's. Without a probe every 6982 is a channel failure. A failure of the probe itself
   * (6982 again, a bad R-MAC, no card) is a channel failure too.
   */
  private async sessionSurvived(): Promise<boolean> {
    if (!this.probe || this.channel.closed) return false;
    let answer: ResponseApdu;
    try {
      answer = await this.next.process(this.channel.wrap(this.probe));
    } catch {
      return false;
    }
    if (answer.sw !== 0x9000 || answer.data.length === 0) return false;
    try {
      this.channel.unwrap(answer);
      return true;
    } catch {
      return false;
    }
  }
}

/** Sends one OCE certificate with GP chaining (CLA 90 and P1 b8 on all blocks but the last). */
async function performSecurityOperation(
  protocol: SmartCardProtocol,
  kvn: number,
  kid: number,
  cert: Uint8Array,
): Promise<void> {
  for (let o = 0; o < cert.length || o === 0; o += 255) {
    const last = o + 255 >= cert.length;
    const r = await protocol.transmit({
      cla: last ? 0x80 : 0x90,
      ins: INS_PERFORM_SECURITY_OPERATION,
      p1: kvn | (last ? 0 : 0x80),
      p2: kid,
      data: cert.subarray(o, o + 255),
      ...(last ? { le: 256 } : {}),
    });
    if (r.sw !== 0x9000) {
      throw new ScpOceRefusedError(
        `SCP11a: the card refused the station's OCE certificate (${formatSw(r.sw)}): its OCE CA is not the one that issued it (another owner's card, or none installed); nothing else sent`,
      );
    }
    if (last) break;
  }
}

/** Reads the SD's certificate store for key KID/KVN (ISD must be selected). */
export async function readCertificateStore(
  protocol: SmartCardProtocol,
  kid: number,
  kvn: number,
): Promise<Uint8Array[]> {
  const query = encodeTlv(0xa6, encodeTlv(0x83, Uint8Array.of(kid, kvn)));
  const r = await protocol.transmit({
    cla: 0x00,
    ins: INS_GET_DATA,
    p1: 0xbf,
    p2: 0x21,
    data: query,
    le: 256,
  });
  const key = `${kid.toString(16)}/${kvn.toString(16)}`;
  if (SW_NO_SCP_KEY.includes(r.sw))
    throw new ScpAbsentError(`no SCP certificate store for key ${key}: card answered ${formatSw(r.sw)}`);
  if (r.sw !== 0x9000) {
    throw new ScpIntegrityError(
      `SCP certificate store for key ${key}: card answered ${formatSw(r.sw)}, not a "no SCP" answer; refused (fail-closed, never in clear)`,
    );
  }
  return decodeCertificateStore(r.data);
}

/**
 * Opens SCP11 on `protocol` and installs the processor. `selectApplication` selects the target
 * application (PIV) after the SD was read; it is the last plaintext command.
 */
export async function openScp11(
  protocol: SmartCardProtocol,
  options: Scp11HostOptions,
  selectApplication: () => Promise<void>,
): Promise<ScpChannelInfo & { session: Scp11Session }> {
  const variant = options.variant;
  const kid = options.kid ?? SCP11_KID[variant];
  const kvn = options.kvn ?? DEFAULT_SCP11B_KVN;
  if (variant !== "b" && !options.oce) throw new RangeError(`SCP11${variant} needs OCE credentials`);

  const sd = await protocol.transmit({ cla: 0, ins: INS_SELECT, p1: 0x04, p2: 0x00, data: ISD_AID, le: 256 });
  if (SW_NO_SECURITY_DOMAIN.includes(sd.sw)) {
    throw new ScpAbsentError(
      `the card has no GlobalPlatform security domain (SELECT answered ${formatSw(sd.sw)}): no secure channel`,
    );
  }
  if (sd.sw !== 0x9000) {
    throw new ScpIntegrityError(
      `SELECT of the card's security domain answered ${formatSw(sd.sw)}, not a "no SCP" answer; refused (fail-closed, never in clear)`,
    );
  }
  const store = await readCertificateStore(protocol, kid, kvn);
  // The card has shown an SCP certificate store: from here on nothing means "no SCP". Every failure
  // is a channel failure (exit 15) or the chain's own refusal, never ScpUnavailableError (which the
  // flows would turn into plaintext with --allow-plaintext).
  try {
    return await handshake(protocol, options, selectApplication, store, variant, kid, kvn);
  } catch (error) {
    if (!(error instanceof ScpUnavailableError)) throw error;
    throw new ScpIntegrityError(
      `${error.message}, after the card showed its SCP certificate store: a channel failure, not an older card; refused (fail-closed, never in clear)`,
      { cause: error },
    );
  }
}

/** Steps 3 to 7 of openScp11, once the card has answered its certificate store. */
async function handshake(
  protocol: SmartCardProtocol,
  options: Scp11HostOptions,
  selectApplication: () => Promise<void>,
  store: Uint8Array[],
  variant: Scp11Variant,
  kid: number,
  kvn: number,
): Promise<ScpChannelInfo & { session: Scp11Session }> {
  const chain = await validateScpChain(store, options.trust);

  let oceKvn = options.oce?.kvn ?? kvn;
  if (variant !== "b" && options.oce?.issuerSki) {
    // Still in the ISD: which OCE CA does the card hold? (None listed: PSO will tell.)
    const oceKid = options.oce.kid ?? DEFAULT_OCE_KID;
    const ids = (await readOceCaIdentifiers(protocol)).filter((id) => id.kid === oceKid);
    if (ids.length > 0) {
      const mine = ids.find((id) => bytesEqual(id.ski, options.oce!.issuerSki!));
      if (!mine) {
        throw new ScpOceRefusedError(
          `SCP11a: the card's OCE CA (key identifier ${hex(ids[0]!.ski)}) is not the station's (${hex(options.oce.issuerSki)}): another owner's card; nothing sent`,
        );
      }
      oceKvn = options.oce.kvn ?? mine.kvn;
    }
  }

  await selectApplication();

  if (variant !== "b") {
    const oce = options.oce!;
    const certs = oce.certificates;
    for (let i = 0; i < certs.length; i++) {
      const more = i < certs.length - 1;
      await performSecurityOperation(
        protocol,
        oceKvn,
        (oce.kid ?? DEFAULT_OCE_KID) | (more ? 0x80 : 0),
        certs[i]!,
      );
    }
  }

  const eSkOce = options.ephemeralKey ?? generateP256();
  const authData = encodeAuthenticateData(variant, p256Point(eSkOce));
  const ins = variant === "b" ? INS_INTERNAL_AUTHENTICATE : INS_MUTUAL_AUTHENTICATE;
  const r = await protocol.transmit({
    cla: 0x80,
    ins,
    p1: kvn,
    p2: kid,
    data: authData,
    // As the reference hosts send it: yubikit no Le (11b), OpenSCP Le 00 (11a/c).
    ...(variant === "b" ? {} : { le: 256 }),
  });
  if (r.sw !== 0x9000) {
    throw new ScpIntegrityError(
      `the card refused to open SCP11${variant} (authenticate answered ${formatSw(r.sw)}) after showing a valid SCP certificate chain: a channel failure, not an older card; refused (fail-closed, never in clear)`,
    );
  }
  const session = completeHostHandshake({
    authData,
    answer: r.data,
    eSkOce,
    ...(variant === "b" ? {} : { skOce: options.oce!.privateKey }),
    pkSd: chain.pkSd,
  });
  const channel = new ScpHostChannel(session);
  protocol.use((next) => new ScpProcessor(next, channel, () => protocol.format, options.liveProbe));
  return { protocol: `SCP11${variant}`, kid, kvn, chain: chain.subjects, session };
}
