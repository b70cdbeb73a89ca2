/**
 * The card layout: the ONE table of what a configuration card holds and where (SPEC.md §5). The
 * secure-element layer owns it; both backends, the station, the agent and the manifest codec
 * (src/config, a layer above) read it from here. Pure: no I/O, no Node API.
 *
 * Items have names; the PIV backend stores each in a vendor data object (0x5FFF00 and 0x5FFF01
 * are Yubico's ADMIN DATA and attestation objects, left alone), the PKCS#11 backend in a CKO_DATA
 * object labelled with the name:
 *
 *   | item                       | PIV object id | count |
 *   |----------------------------|---------------|-------|
 *   | manifest                   | 5FFF10        | 1     |
 *   | certificates               | 5FFF11        | 1     |
 *   | crl                        | 5FFF12        | 1     |
 *   | (reserved)                 | 5FFF13–5FFF1F | 13    |
 *   | shard-0 … shard-95         | 5FFF20–5FFF7F | 96    |
 *   | receipt-0 … receipt-127    | 5FFF80–5FFFFF | 128   |
 *
 * A manifest names each shard by its PIV object id (FORMATS.md); on any backend that id stands
 * for the item `shard-(id − 0x5FFF20)`, and the manifest decoder accepts exactly the ids of this
 * table's shard range.
 */
import { CardFullError, MalformedError } from "../errors.js";

export const CARD_LAYOUT = {
  manifest: 0x5fff10,
  certificates: 0x5fff11,
  crl: 0x5fff12,
  reserved: { first: 0x5fff13, last: 0x5fff1f },
  shards: { first: 0x5fff20, count: 96 },
  receipts: { first: 0x5fff80, count: 128 },
} as const;

/** Shards a card can hold: shard-0 … shard-95 (PIV objects 0x5FFF20–0x5FFF7F). */
export const MAX_SHARDS = CARD_LAYOUT.shards.count;
/** Receipt objects a card can hold: receipt-0 … receipt-127 (PIV objects 0x5FFF80–0x5FFFFF). */
export const MAX_RECEIPTS = CARD_LAYOUT.receipts.count;
/** PIV object id of shard-0, the first id a manifest may name. */
export const SHARD_OBJECT_FIRST = CARD_LAYOUT.shards.first;
/** PIV object id of the last shard, the last id a manifest may name. */
export const SHARD_OBJECT_LAST = CARD_LAYOUT.shards.first + CARD_LAYOUT.shards.count - 1;

/**
 * The storage of a YubiKey 5 PIV applet (SPEC.md §5): 3,063 bytes per object (its 3,072-byte PUT
 * DATA buffer less the 5C/53 headers), about 50,225 bytes in all. The PKCS#11 backend applies the
 * same budget by default so that a plan that fits one backend fits the other.
 */
export const MAX_ITEM_BYTES = 3_063;
export const CARD_CAPACITY_BYTES = 50_225;
export const YUBIKEY_STORAGE = { totalBytes: CARD_CAPACITY_BYTES, maxItemBytes: MAX_ITEM_BYTES } as const;

/**
 * A parsed item name: `manifest`, `crl`, `certificates` (the intermediate CA certificates written
 * at personalisation), `shard-N` (0 ≤ N < MAX_SHARDS) and `receipt-N` (0 ≤ N < MAX_RECEIPTS).
 * Decimal indices without leading zeros, so each item has one name.
 */
export type ItemName =
  | { readonly kind: "manifest" | "crl" | "certificates" }
  | { readonly kind: "shard" | "receipt"; readonly index: number };

const ITEM_NAME = /^(?:(manifest|crl|certificates)|(shard|receipt)-(0|[1-9][0-9]{0,2}))$/;

/** Parses an item name; undefined for anything else. */
export function parseItemName(name: string): ItemName | undefined {
  const match = ITEM_NAME.exec(name);
  if (!match) return undefined;
  if (match[1]) return { kind: match[1] as "manifest" | "crl" | "certificates" };
  const kind = match[2] as "shard" | "receipt";
  const index = Number(match[3]);
  if (index >= (kind === "shard" ? MAX_SHARDS : MAX_RECEIPTS)) return undefined;
  return { kind, index };
}

/** Parses an item name or throws a RangeError that lists the accepted names. */
export function requireItemName(name: string): ItemName {
  const parsed = parseItemName(name);
  if (!parsed) {
    throw new RangeError(
      `invalid item name ${JSON.stringify(name)}: expected manifest, crl, certificates, ` +
        `shard-0..shard-${MAX_SHARDS - 1} or receipt-0..receipt-${MAX_RECEIPTS - 1}`,
    );
  }
  return parsed;
}

export function formatItemName(item: ItemName): string {
  return "index" in item ? `${item.kind}-${item.index}` : item.kind;
}

const KIND_ORDER = { manifest: 0, certificates: 1, crl: 2, shard: 3, receipt: 4 } as const;

/** Orders item names: manifest, certificates, crl, then shards and receipts by index. */
export function compareItemNames(a: string, b: string): number {
  const pa = parseItemName(a);
  const pb = parseItemName(b);
  if (!pa || !pb) return a < b ? -1 : a > b ? 1 : 0;
  const byKind = KIND_ORDER[pa.kind] - KIND_ORDER[pb.kind];
  if (byKind !== 0) return byKind;
  return ("index" in pa ? pa.index : 0) - ("index" in pb ? pb.index : 0);
}

/** PIV object id of an item (the table above). */
export function itemObjectId(item: ItemName): number {
  switch (item.kind) {
    case "manifest":
      return CARD_LAYOUT.manifest;
    case "certificates":
      return CARD_LAYOUT.certificates;
    case "crl":
      return CARD_LAYOUT.crl;
    case "shard":
      return CARD_LAYOUT.shards.first + item.index;
    case "receipt":
      return CARD_LAYOUT.receipts.first + item.index;
  }
}

/** Every item a card can hold, in {@link compareItemNames} order. */
export function allItems(): ItemName[] {
  const items: ItemName[] = [{ kind: "manifest" }, { kind: "certificates" }, { kind: "crl" }];
  for (let index = 0; index < MAX_SHARDS; index++) items.push({ kind: "shard", index });
  for (let index = 0; index < MAX_RECEIPTS; index++) items.push({ kind: "receipt", index });
  return items;
}

/** Whether a manifest may name this object id for a shard: exactly the table's shard range. */
export function isShardObjectId(objectId: number): boolean {
  return Number.isInteger(objectId) && objectId >= SHARD_OBJECT_FIRST && objectId <= SHARD_OBJECT_LAST;
}

/** The PIV object id of shard-`index` (what a manifest records). */
export function shardObjectId(index: number): number {
  if (!Number.isInteger(index) || index < 0 || index >= MAX_SHARDS) {
    throw new RangeError(`shard index ${index} is outside 0..${MAX_SHARDS - 1}`);
  }
  return SHARD_OBJECT_FIRST + index;
}

/** The item (`shard-N`) behind a manifest's shard object id; MalformedError outside the table. */
export function shardItemName(objectId: number): string {
  if (!isShardObjectId(objectId)) {
    throw new MalformedError(`shard object 0x${objectId.toString(16)} is outside the card's shard items`);
  }
  return `shard-${objectId - SHARD_OBJECT_FIRST}`;
}

/** CardFullError when a configuration needs more shards than a card has items for. */
export function assertShardCount(shards: number): void {
  if (shards > MAX_SHARDS) {
    throw new CardFullError(
      `${shards} shards needed; a card holds at most ${MAX_SHARDS} (shard-0..shard-${MAX_SHARDS - 1})`,
    );
  }
}
