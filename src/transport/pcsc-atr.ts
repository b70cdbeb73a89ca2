/**
 * PC/SC reader names and ATRs: is a card contact or contactless (PC/SC part 3 ATR for storage cards,
 * ISO/IEC 14443-4 historical bytes)?
 */

// ---------------------------------------------------------------------------------------------
// Reader names and ATRs: contact or contactless?
// ---------------------------------------------------------------------------------------------

/**
 * Reader names that say "contactless": "ACS ACR122U PICC Interface", "OMNIKEY 5x21-CL",
 * "OMNIKEY 5422CL", "Identiv uTrust 3700 F CL Reader", "... Contactless Reader", "... NFC ...".
 * "CL" must stand alone or follow a model number (so "CLASSIC" never matches).
 */
export function isContactlessReaderName(name: string): boolean {
  if (/\b(contactless|picc|nfc)\b/i.test(name)) return true;
  // "5x21-CL", "F CL Reader", "OMNIKEY 5422CL" (a model number followed by CL)
  return /(^|[\s\-_(\d])CL([\s\-_)\]]|$)/.test(name);
}

export type AtrKind = "contact" | "contactless-iso14443-4" | "contactless-storage" | "invalid";

export interface AtrClassification {
  kind: AtrKind;
  contactless: boolean;
  /** Protocols the ATR offers (T=0 when no TDi says otherwise). */
  protocols: readonly number[];
  historicalBytes: Uint8Array;
  /** undefined when no TCK is present (T=0 only). */
  tckValid: boolean | undefined;
}

/** PC/SC registered application provider identifier (RID), PC/SC Part 3 §3.1.3.2.3. */
const PCSC_RID = [0xa0, 0x00, 0x00, 0x03, 0x06] as const;

/**
 * Parses an ATR (ISO/IEC 7816-3 §8.2) and classifies it. PC/SC Part 3 §3.1.3.2.3 makes a
 * contactless reader synthesise `3B 8n 80 01 <n historical bytes> TCK`: T0 announces only TD1,
 * TD1 = 80 (only TD2 follows, T=0), TD2 = 01 (T=1, nothing follows). Storage cards (MIFARE,
 * FeliCa...) carry `80 4F 0C A0 00 00 03 06 SS NN NN ...` in the historical bytes; ISO 14443-4
 * cards carry their ATS historical bytes (type A) or ATQB data (type B).
 */
export function classifyAtr(atr: Uint8Array): AtrClassification {
  const invalid: AtrClassification = {
    kind: "invalid",
    contactless: false,
    protocols: [],
    historicalBytes: new Uint8Array(0),
    tckValid: undefined,
  };
  if (atr.length < 2 || atr.length > 33) return invalid;
  const ts = atr[0];
  if (ts !== 0x3b && ts !== 0x3f) return invalid;
  const t0 = atr[1]!;
  const historicalCount = t0 & 0x0f;
  let y = t0 >> 4;
  let i = 2;
  const interfaceBytes: number[] = [];
  const tds: number[] = [];
  // At most 8 TDi in practice; the ATR length bound (33) already bounds this loop.
  while (y !== 0) {
    for (const bit of [0x1, 0x2, 0x4]) {
      if (y & bit) {
        if (i >= atr.length) return invalid;
        interfaceBytes.push(atr[i++]!);
      }
    }
    if (y & 0x8) {
      if (i >= atr.length) return invalid;
      const td = atr[i++]!;
      tds.push(td);
      interfaceBytes.push(td);
      y = td >> 4;
    } else {
      y = 0;
    }
  }
  const protocols = tds.length === 0 ? [0] : [...new Set(tds.map((td) => td & 0x0f))];
  const needsTck = protocols.some((p) => p !== 0);
  const expectedLength = i + historicalCount + (needsTck ? 1 : 0);
  if (atr.length !== expectedLength) return { ...invalid, protocols };
  const historicalBytes = atr.slice(i, i + historicalCount);
  let tckValid: boolean | undefined;
  if (needsTck) {
    let x = 0;
    for (let k = 1; k < atr.length; k++) x ^= atr[k]!;
    tckValid = x === 0;
  }
  const pcscContactlessShape =
    ts === 0x3b &&
    t0 >> 4 === 0x8 &&
    interfaceBytes.length === 2 &&
    interfaceBytes[0] === 0x80 &&
    interfaceBytes[1] === 0x01;
  const storage = hasPcscRid(historicalBytes);
  // A contact card never announces only "T=0 then T=1 with no parameters"; PC/SC readers make
  // that shape for every contactless card. The RID pattern identifies storage cards on its own.
  const kind: AtrKind = storage
    ? "contactless-storage"
    : pcscContactlessShape
      ? "contactless-iso14443-4"
      : "contact";
  return { kind, contactless: kind !== "contact", protocols, historicalBytes, tckValid };
}

/** `4F 0C A0 00 00 03 06 …`: application identifier presence indicator with the PC/SC RID. */
function hasPcscRid(historical: Uint8Array): boolean {
  for (let k = 0; k + 2 + PCSC_RID.length <= historical.length; k++) {
    if (historical[k] !== 0x4f) continue;
    if (PCSC_RID.every((b, j) => historical[k + 2 + j] === b)) return true;
  }
  return false;
}

/** Contactless if either the reader's name or the ATR says so. */
export function isContactless(readerName: string, atr: Uint8Array): boolean {
  return isContactlessReaderName(readerName) || classifyAtr(atr).contactless;
}
