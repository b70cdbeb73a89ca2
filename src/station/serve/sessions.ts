/**
 * The rack view's browser sessions and its brake on wrong tokens (`station serve` with a token).
 *
 * Sessions: a successful login gets a fresh random id (32 bytes from crypto.randomBytes, base64url)
 * that the browser keeps as its cookie; the server keeps only the id's SHA-256, in memory, with the
 * time it was created and last used. A session ends when it has been idle too long, when it reaches
 * its absolute lifetime, at logout, or when the server stops (nothing is written to disk, so a
 * restart of `station serve` ends every session). At most MAX_SESSIONS live at once (the oldest
 * goes first).
 *
 * Throttle: wrong tokens are counted per client address (an IPv6 address by its /64, an IPv4-mapped
 * one as IPv4). The FREE_FAILURES-th wrong token and each one after it shut the address out for a
 * delay that doubles from 1 s up to 10 min, during which any further attempt with a token (the
 * login form or a bearer header) is refused with 429 and Retry-After, without being compared.
 * The right token clears the address's count. The table holds at most MAX_TRACKED addresses and
 * forgets an address an hour after its last failure; while it is full, every address not in it
 * shares one count (so more addresses than the table holds buy an attacker nothing; the others
 * then wait together, and open sessions are never throttled).
 */
import { createHash, randomBytes } from "node:crypto";
import { isIPv6 } from "node:net";

export const DEFAULT_IDLE_MS = 30 * 60_000;
export const DEFAULT_LIFETIME_MS = 12 * 3_600_000;
const MAX_SESSIONS = 1000;

export const FREE_FAILURES = 5;
const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 10 * 60_000;
const FORGET_AFTER_MS = 3_600_000;
const MAX_TRACKED = 4096;

export type Clock = () => number;

interface Session {
  readonly created: number;
  lastUsed: number;
}

const keyOf = (id: string) => createHash("sha256").update(id, "utf8").digest("base64url");

export class SessionStore {
  readonly #sessions = new Map<string, Session>();

  constructor(
    readonly idleMs: number,
    readonly lifetimeMs: number,
    private readonly now: Clock,
  ) {}

  /** A new session; returns the id for the cookie (only its digest is kept). */
  create(): string {
    const now = this.now();
    this.#sweep(now);
    while (this.#sessions.size >= MAX_SESSIONS) {
      const oldest = this.#sessions.keys().next().value as string;
      this.#sessions.delete(oldest);
    }
    const id = randomBytes(32).toString("base64url");
    this.#sessions.set(keyOf(id), { created: now, lastUsed: now });
    return id;
  }

  /**
   * The session's key if `id` names a live one (and, with `touch`, marks it used now); undefined
   * otherwise (an expired one is removed). The key names the session without being the cookie.
   */
  check(id: string, touch: boolean): string | undefined {
    const key = keyOf(id);
    return this.checkKey(key, touch) ? key : undefined;
  }

  checkKey(key: string, touch: boolean): boolean {
    const session = this.#sessions.get(key);
    if (session === undefined) return false;
    const now = this.now();
    if (!this.#live(session, now)) {
      this.#sessions.delete(key);
      return false;
    }
    if (touch) session.lastUsed = now;
    return true;
  }

  /** Ends the session `id` names, if any. */
  end(id: string): void {
    this.#sessions.delete(keyOf(id));
  }

  get size(): number {
    return this.#sessions.size;
  }

  #live(session: Session, now: number): boolean {
    return now - session.lastUsed < this.idleMs && now - session.created < this.lifetimeMs;
  }

  #sweep(now: number): void {
    for (const [key, session] of this.#sessions) {
      if (!this.#live(session, now)) this.#sessions.delete(key);
    }
  }
}

interface Failures {
  count: number;
  last: number;
  /** Attempts are refused until this time. */
  until: number;
}

/** The address a client is counted under: IPv6 by its /64, IPv4-mapped IPv6 as IPv4. */
export function clientKey(address: string | undefined): string {
  if (address === undefined) return "?";
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1] as string;
  if (!isIPv6(address)) return address;
  const [head = "", tail = ""] = address.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === "" ? [] : tail.split(":");
  const groups = address.includes("::")
    ? [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(":")}::/64`;
}

export class LoginThrottle {
  /** Tracked addresses, the one that failed longest ago first. */
  readonly #table = new Map<string, Failures>();
  /**
   * One shared count for every address that failed while the table was full: evicting the oldest
   * instead would let an attacker with more than MAX_TRACKED addresses (a /52 of IPv6) keep each
   * one's count at 1 by taking them in turn, and guess without any limit.
   */
  #overflow: Failures | undefined;

  constructor(private readonly now: Clock) {}

  /** Seconds the client must wait before trying a token again, or 0 if it may try now. */
  retryAfter(client: string): number {
    const now = this.now();
    this.#forgetStale(now);
    const entry = this.#table.get(client) ?? (this.#table.size >= MAX_TRACKED ? this.#overflow : undefined);
    if (entry === undefined || now - entry.last >= FORGET_AFTER_MS) return 0;
    return entry.until > now ? Math.ceil((entry.until - now) / 1000) : 0;
  }

  /** A wrong token from `client`. */
  failed(client: string): void {
    const now = this.now();
    this.#forgetStale(now);
    const own = this.#table.get(client);
    if (own === undefined && this.#table.size >= MAX_TRACKED) {
      this.#overflow = nextFailure(this.#overflow, now);
      return;
    }
    // Most recently failed last, so the stale ones are found at the front.
    this.#table.delete(client);
    this.#table.set(client, nextFailure(own, now));
  }

  /** The right token from `client`: its count starts again. */
  succeeded(client: string): void {
    this.#table.delete(client);
  }

  /** Drops the addresses whose last failure is FORGET_AFTER_MS old (they are at the front). */
  #forgetStale(now: number): void {
    for (const [key, entry] of this.#table) {
      if (now - entry.last < FORGET_AFTER_MS) break;
      this.#table.delete(key);
    }
    if (this.#overflow !== undefined && now - this.#overflow.last >= FORGET_AFTER_MS)
      this.#overflow = undefined;
  }

  get size(): number {
    return this.#table.size;
  }
}

/** The count after one more wrong token, and the wait it earns (none for the first FREE_FAILURES − 1). */
function nextFailure(entry: Failures | undefined, now: number): Failures {
  const count = entry !== undefined && now - entry.last < FORGET_AFTER_MS ? entry.count + 1 : 1;
  const delay =
    count < FREE_FAILURES
      ? 0
      : Math.min(FIRST_DELAY_MS * 2 ** Math.min(count - FREE_FAILURES, 20), MAX_DELAY_MS);
  return { count, last: now, until: now + delay };
}
