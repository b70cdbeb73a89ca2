/**
 * SCP03 (GP Card Specification 2.3 Amendment D), the part a YubiKey 5.7 needs before it takes an
 * OCE CA key: a session on the issuer security domain authenticated with a static AES-128 key set
 * (a YubiKey ships the well-known default set 40…4F under KVN 0xFF until its owner replaces it).
 * The secure messaging after the handshake is SCP11's (secure-messaging.ts), keys aside.
 *
 *   INITIALIZE UPDATE  80 50 <KVN> 00 <host challenge, 8>
 *        answer        <diversification 10> <key info 3: KVN 03 i> <card challenge 8> <card cryptogram 8> [<sequence 3>]
 *   context            host challenge ‖ card challenge
 *   KDF                AES-CMAC(key, 00×11 ‖ constant ‖ 00 ‖ L (2 bytes, bits) ‖ 01 ‖ context) (NIST SP 800-108, counter mode)
 *   S-ENC = KDF(K-ENC, 04), S-MAC = KDF(K-MAC, 06), S-RMAC = KDF(K-MAC, 07); DEK = K-DEK
 *   card cryptogram = KDF(S-MAC, 00, 64 bits), checked in constant time; host cryptogram = KDF(S-MAC, 01, 64 bits)
 *   EXTERNAL AUTHENTICATE 84 82 33 00 <host cryptogram ‖ C-MAC>: C-MAC over 16 zero bytes ‖ header ‖
 *        Lc ‖ host cryptogram (not encrypted, counter unchanged); its full MAC starts the chain.
 * Security level 33: C-MAC, C-DECRYPTION, R-MAC, R-ENCRYPTION.
 */
import { randomBytes } from "node:crypto";
import { ScpUnavailableError } from "../../errors.js";
import type { SmartCardProtocol } from "../chaining.js";
import { GP_INS } from "../instructions.js";
import { formatSw } from "../response.js";
import { concatBytes } from "../tlv.js";
import { aesCmac, macEqual } from "./cmac.js";
import { ScpIntegrityError, ScpMalformedError } from "./errors.js";
import type { Scp11Session, ScpSessionKeys } from "./handshake.js";
import { ScpProcessor } from "./host.js";
import { ScpHostChannel } from "./secure-messaging.js";

/** A static SCP03 key set (AES-128). */
export interface Scp03StaticKeys {
  readonly enc: Uint8Array;
  readonly mac: Uint8Array;
  readonly dek: Uint8Array;
}

/** The GlobalPlatform default key (40 41 … 4F) a YubiKey 5.7 ships for all three, KVN 0xFF. */
export const SCP03_DEFAULT_KEY = Uint8Array.from({ length: 16 }, (_, i) => 0x40 + i);
export const SCP03_DEFAULT_KEYS: Scp03StaticKeys = {
  enc: SCP03_DEFAULT_KEY,
  mac: SCP03_DEFAULT_KEY,
  dek: SCP03_DEFAULT_KEY,
};
export const SCP03_DEFAULT_KVN = 0xff;
/** EXTERNAL AUTHENTICATE P1: C-MAC, C-DECRYPTION, R-MAC, R-ENCRYPTION. */
export const SCP03_SECURITY_LEVEL = 0x33;

const KEY_ENC = 0x04;
const KEY_MAC = 0x06;
const KEY_RMAC = 0x07;
const CARD_CRYPTOGRAM = 0x00;
const HOST_CRYPTOGRAM = 0x01;

/** SP 800-108 counter-mode KDF with AES-CMAC, one block (64 or 128 bits). */
export function scp03Derive(
  key: Uint8Array,
  constant: number,
  context: Uint8Array,
  bits: 64 | 128,
): Uint8Array {
  const input = concatBytes(
    new Uint8Array(11),
    Uint8Array.of(constant, 0x00, bits >> 8, bits & 0xff, 0x01),
    context,
  );
  return aesCmac(key, input).slice(0, bits / 8);
}

export interface Scp03Handshake {
  readonly keys: ScpSessionKeys;
  readonly cardCryptogram: Uint8Array;
  readonly hostCryptogram: Uint8Array;
}

/** Both sides: the session keys and the two cryptograms of a host/card challenge pair. */
export function scp03Keys(
  statics: Scp03StaticKeys,
  hostChallenge: Uint8Array,
  cardChallenge: Uint8Array,
): Scp03Handshake {
  const context = concatBytes(hostChallenge, cardChallenge);
  const sMac = scp03Derive(statics.mac, KEY_MAC, context, 128);
  return {
    keys: {
      sEnc: scp03Derive(statics.enc, KEY_ENC, context, 128),
      sMac,
      sRmac: scp03Derive(statics.mac, KEY_RMAC, context, 128),
      dek: statics.dek.slice(),
    },
    cardCryptogram: scp03Derive(sMac, CARD_CRYPTOGRAM, context, 64),
    hostCryptogram: scp03Derive(sMac, HOST_CRYPTOGRAM, context, 64),
  };
}

/**
 * The full C-MAC of EXTERNAL AUTHENTICATE (chain 16 zero bytes; Lc = 16, encoded as the command
 * travels: `10` short, `00 00 10` extended — yubikit sends it extended over a contact interface).
 */
export function externalAuthenticateMac(
  sMac: Uint8Array,
  p1: number,
  hostCryptogram: Uint8Array,
  extended = false,
): Uint8Array {
  const lc = extended ? Uint8Array.of(0x00, 0x00, 0x10) : Uint8Array.of(0x10);
  return aesCmac(
    sMac,
    concatBytes(
      new Uint8Array(16),
      Uint8Array.of(0x84, GP_INS.externalAuthenticate, p1, 0x00),
      lc,
      hostCryptogram,
    ),
  );
}

/**
 * Opens SCP03 on the selected application (the ISD) and installs the processor. A card that does
 * not know the key version is ScpUnavailableError; a wrong card cryptogram (other keys, or not the
 * card that answered) is ScpIntegrityError.
 */
export async function openScp03(
  protocol: SmartCardProtocol,
  options: { kvn?: number; keys?: Scp03StaticKeys; hostChallenge?: Uint8Array } = {},
): Promise<Scp11Session> {
  const kvn = options.kvn ?? SCP03_DEFAULT_KVN;
  const statics = options.keys ?? SCP03_DEFAULT_KEYS;
  const hostChallenge = options.hostChallenge ?? new Uint8Array(randomBytes(8));
  const init = await protocol.transmit({
    cla: 0x80,
    ins: GP_INS.initializeUpdate,
    p1: kvn,
    p2: 0x00,
    data: hostChallenge,
    le: 256,
  });
  if (init.sw !== 0x9000)
    throw new ScpUnavailableError(
      `SCP03: INITIALIZE UPDATE for key set ${kvn.toString(16)} answered ${formatSw(init.sw)}`,
    );
  if (init.data.length !== 29 && init.data.length !== 32)
    throw new ScpMalformedError("SCP03: INITIALIZE UPDATE answer is not 29 or 32 bytes");
  if (init.data[11] !== 0x03) throw new ScpMalformedError("SCP03: the card answered for another protocol");
  const cardChallenge = init.data.slice(13, 21);
  const handshake = scp03Keys(statics, hostChallenge, cardChallenge);
  if (!macEqual(handshake.cardCryptogram, init.data.slice(21, 29))) {
    throw new ScpIntegrityError(
      "SCP03: the card cryptogram does not verify (other keys, or a tampered answer)",
    );
  }
  const mac = externalAuthenticateMac(handshake.keys.sMac, SCP03_SECURITY_LEVEL, handshake.hostCryptogram);
  const ea = await protocol.transmit({
    cla: 0x84,
    ins: GP_INS.externalAuthenticate,
    p1: SCP03_SECURITY_LEVEL,
    p2: 0x00,
    data: concatBytes(handshake.hostCryptogram, mac.subarray(0, 8)),
  });
  if (ea.sw !== 0x9000)
    throw new ScpUnavailableError(`SCP03: EXTERNAL AUTHENTICATE answered ${formatSw(ea.sw)}`);
  const session: Scp11Session = { keys: handshake.keys, receipt: mac };
  const channel = new ScpHostChannel(session);
  protocol.use((next) => new ScpProcessor(next, channel, () => protocol.format));
  return session;
}
