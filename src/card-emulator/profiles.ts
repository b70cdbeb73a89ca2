/**
 * What the virtual card pretends to be: a YubiKey 5 PIV applet, with its ATRs, firmware version and
 * limits. A profile is the card model; whether it is reached through a contact (USB) or contactless
 * (NFC) interface is chosen per power-on (VirtualPivCardOptions.contactless) and only changes the ATR
 * — YubiKeys do not apply the SP 800-73-4 contactless restrictions, and neither does this card.
 */
import type { ManagementKeyType } from "../piv/management-key.js";

export interface CardProfile {
  readonly name: string;
  /** Answered by `00 FD` (major, minor, patch). */
  readonly firmware: readonly [number, number, number];
  readonly atr: { readonly contact: Uint8Array; readonly contactless: Uint8Array };
  /** Management key algorithm of a fresh (or reset) card; the key is always 0102…08 ×3. */
  readonly defaultManagementKeyType: ManagementKeyType;
  /** Largest object content (inside `53`) PUT DATA accepts; more is 6A84. */
  readonly maxObjectSize: number;
  /** Total bytes of all stored object contents; more is 6A84. */
  readonly maxTotalObjectBytes: number;
  /** Largest Lc of one extended APDU (else 6700). */
  readonly maxExtendedLc: number;
  /** Largest command data reassembled from a chain (CLA 10); more is 6A84. */
  readonly maxChainedData: number;
  readonly pinTries: number;
  readonly pukTries: number;
  /** Refuse VERIFY outside the SCP11 channel (6985), as YubiKey FIPS does over NFC. */
  readonly requireSecureVerify?: boolean;
  /**
   * Answer SELECT of Yubico's OTP and management AIDs with 6A82 (as a card without those
   * applications): ykman then scans for PIV instead of asking READ CONFIG (default: answer them).
   */
  readonly noYubicoApplets?: boolean;
}

function bytes(hex: string): Uint8Array {
  return new Uint8Array(Buffer.from(hex.replace(/\s+/g, ""), "hex"));
}

/**
 * YubiKey 5 ATRs (historical bytes carry "YubiKey", so OpenSC treats the card as a YubiKey and asks
 * `00 FD`). Contact: T=1 offered (TD1 = 81), as yubico-piv-tool needs. Contactless: the PC/SC
 * form `3B 8n 80 01 <ATS historical bytes> TCK`.
 */
export const YUBIKEY_5_ATR_CONTACT = bytes(
  "3B FD 13 00 00 81 31 FE 15 80 73 C0 21 C0 57 59 75 62 69 4B 65 79 40",
);
export const YUBIKEY_5_ATR_CONTACTLESS = bytes("3B 8D 80 01 80 73 C0 21 C0 57 59 75 62 69 4B 65 79 F9");

const YUBIKEY_5_LIMITS = {
  // SPEC §5: at most 3,063 bytes per object and about 50,225 bytes in all.
  maxObjectSize: 3063,
  maxTotalObjectBytes: 50225,
  // yubikit's MaxApduSize.YK4_3 is 3062 for a whole APDU; accept a little more than any client sends.
  maxExtendedLc: 3072,
  // Enough for a full 3,063-byte object plus its `5C`/`53` headers, with margin.
  maxChainedData: 4096,
  pinTries: 3,
  pukTries: 3,
} as const;

/** YubiKey 5 with firmware 5.4.3: 3DES default management key (what yubico-piv-tool 2.2.0 expects). */
export const YUBIKEY_5_PROFILE: CardProfile = {
  name: "YubiKey 5 (5.4.3)",
  firmware: [5, 4, 3],
  atr: { contact: YUBIKEY_5_ATR_CONTACT, contactless: YUBIKEY_5_ATR_CONTACTLESS },
  defaultManagementKeyType: "3des",
  ...YUBIKEY_5_LIMITS,
};

/**
 * YubiKey 5 with firmware 5.7.1: AES-192 default management key, SCP11 (once the card's SD keys are
 * provisioned); no OTP or management application (SELECT answers 6A82), so Yubico's tools scan
 * for PIV.
 */
export const YUBIKEY_5_7_PROFILE: CardProfile = {
  name: "YubiKey 5 (5.7.1)",
  firmware: [5, 7, 1],
  atr: { contact: YUBIKEY_5_ATR_CONTACT, contactless: YUBIKEY_5_ATR_CONTACTLESS },
  defaultManagementKeyType: "aes192",
  noYubicoApplets: true,
  ...YUBIKEY_5_LIMITS,
};

/** As YUBIKEY_5_7_PROFILE, refusing a plaintext VERIFY (YubiKey 5 FIPS over NFC). */
export const YUBIKEY_5_7_FIPS_PROFILE: CardProfile = {
  ...YUBIKEY_5_7_PROFILE,
  name: "YubiKey 5 FIPS (5.7.1)",
  requireSecureVerify: true,
};

export const DEFAULT_CARD_PROFILE = YUBIKEY_5_PROFILE;

/** ISO/IEC 7816-3 §8.2.5: when TCK is present, T0 … TCK XOR to zero. */
export function atrChecksumValid(atr: Uint8Array): boolean {
  let x = 0;
  for (let i = 1; i < atr.length; i++) x ^= atr[i]!;
  return x === 0;
}
