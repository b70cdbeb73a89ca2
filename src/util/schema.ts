/**
 * A small validator for the agent's own JSON files (state, dry-run record, network snapshots), with
 * the subset of zod's API they use: `import * as z from "../util/schema.js"` and the schemas read
 * as before. Why not zod on the agent: importing zod (classic, mini or core alike) loads all its
 * locales, ≈ 13 MiB of resident memory and ≈ 70 ms of CPU in a fresh process — a fifth of the
 * SPEC.md §9 memory budget of an appliance agent (docs/PERFORMANCE.md). The station and the PKI
 * tools keep zod.
 *
 * Semantics follow zod 4 for what is here: `object` accepts a plain object, checks the listed keys
 * and drops the others; `optional` accepts an absent key or `undefined`, `nullable` also `null`; `int` is a safe integer;
 * `record` checks every own key and value; `union` takes the first option that accepts. Failures
 * name the path and the first problem, as zod's first issue does (util/fs.ts readJsonFile).
 */

import { SchemaError } from "../errors.js";

export { SchemaError };

export interface Issue {
  readonly path: (string | number)[];
  readonly message: string;
}

export type SafeParseResult<T> =
  | { readonly success: true; readonly data: T }
  | { readonly success: false; readonly error: SchemaError };

type Check = (value: unknown, path: (string | number)[], issues: Issue[]) => unknown;

const FAILED: unique symbol = Symbol("failed");

/** A schema for values of type T. */
export class ZodType<T> {
  /** Type-level only (`z.infer`). */
  declare readonly _output: T;

  constructor(
    /** Returns the parsed value, or FAILED after pushing at least one issue. */
    readonly check: Check,
    readonly isOptional = false,
  ) {}

  safeParse(value: unknown): SafeParseResult<T> {
    const issues: Issue[] = [];
    const data = this.check(value, [], issues);
    if (data === FAILED || issues.length > 0) return { success: false, error: new SchemaError(issues) };
    return { success: true, data: data as T };
  }

  parse(value: unknown): T {
    const result = this.safeParse(value);
    if (!result.success) throw result.error;
    return result.data;
  }

  nullable(): ZodType<T | null> {
    const inner = this.check;
    return new ZodType<T | null>(
      (value, path, issues) => (value === null ? null : inner(value, path, issues)),
      this.isOptional,
    );
  }

  optional(): ZodType<T | undefined> {
    const inner = this.check;
    return new ZodType<T | undefined>(
      (value, path, issues) => (value === undefined ? undefined : inner(value, path, issues)),
      true,
    );
  }
}

type Infer<S> = S extends ZodType<infer T> ? T : never;

export type { Infer as infer };

function typeOf(value: unknown): string {
  return value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
}

function fail(issues: Issue[], path: (string | number)[], message: string): typeof FAILED {
  issues.push({ path: [...path], message });
  return FAILED;
}

/** A schema with added refinements; each refinement returns a message when the value fails it. */
class Refinable<T> extends ZodType<T> {
  constructor(
    private readonly base: Check,
    private readonly refinements: readonly ((value: T) => string | undefined)[] = [],
  ) {
    super((value, path, issues) => {
      const parsed = base(value, path, issues);
      if (parsed === FAILED) return FAILED;
      for (const refine of refinements) {
        const message = refine(parsed as T);
        if (message !== undefined) return fail(issues, path, message);
      }
      return parsed;
    });
  }

  /** Accepts only values for which `predicate` holds. */
  refine(predicate: (value: T) => boolean, message = "invalid"): this {
    return this.with((v) => (predicate(v) ? undefined : message));
  }

  protected with(refine: (value: T) => string | undefined): this {
    const Ctor = this.constructor as new (
      base: Check,
      refinements: readonly ((value: T) => string | undefined)[],
    ) => this;
    return new Ctor(this.base, [...this.refinements, refine]);
  }
}

export class ZodString extends Refinable<string> {
  min(length: number): this {
    return this.with((v) => (v.length < length ? `too short: at least ${length} characters` : undefined));
  }
  max(length: number): this {
    return this.with((v) => (v.length > length ? `too long: at most ${length} characters` : undefined));
  }
  regex(pattern: RegExp, message?: string): this {
    return this.with((v) => {
      pattern.lastIndex = 0;
      return pattern.test(v) ? undefined : (message ?? `does not match ${pattern}`);
    });
  }
}

export class ZodInt extends Refinable<number> {
  min(n: number): this {
    return this.with((v) => (v < n ? `too small: at least ${n}` : undefined));
  }
  max(n: number): this {
    return this.with((v) => (v > n ? `too big: at most ${n}` : undefined));
  }
  nonnegative(): this {
    return this.min(0);
  }
  positive(): this {
    return this.min(1);
  }
}

const expectType =
  (type: string): Check =>
  (value, path, issues) =>
    typeof value === type ? value : fail(issues, path, `expected ${type}, received ${typeOf(value)}`);

export function string(): ZodString {
  return new ZodString(expectType("string"));
}

export function int(): ZodInt {
  return new ZodInt((value, path, issues) =>
    Number.isSafeInteger(value)
      ? value
      : fail(issues, path, `expected an integer, received ${typeOf(value)}`),
  );
}

export class ZodNumber extends ZodInt {
  int(): ZodInt {
    return this.with((v) => (Number.isSafeInteger(v) ? undefined : "expected an integer"));
  }
}

/** A finite number (zod 4 refuses NaN and ±Infinity too); `.int()` for a safe integer. */
export function number(): ZodNumber {
  return new ZodNumber((value, path, issues) =>
    typeof value === "number" && Number.isFinite(value)
      ? value
      : fail(issues, path, `expected number, received ${typeOf(value)}`),
  );
}

export function boolean(): ZodType<boolean> {
  return new ZodType<boolean>(expectType("boolean"));
}

type Literal = string | number | boolean | null;

export function literal<const L extends Literal>(expected: L): ZodType<L> {
  return new ZodType<L>((value, path, issues) =>
    value === expected ? value : fail(issues, path, `expected ${JSON.stringify(expected)}`),
  );
}

function enumOf<const V extends readonly [string, ...string[]]>(values: V): ZodType<V[number]> {
  return new ZodType<V[number]>((value, path, issues) =>
    typeof value === "string" && values.includes(value)
      ? value
      : fail(issues, path, `expected one of ${values.map((v) => JSON.stringify(v)).join(", ")}`),
  );
}

export { enumOf as enum };

export class ZodArray<T> extends Refinable<T[]> {
  min(length: number): this {
    return this.with((v) => (v.length < length ? `too small: at least ${length} items` : undefined));
  }
  max(length: number): this {
    return this.with((v) => (v.length > length ? `too big: at most ${length} items` : undefined));
  }
}

export function array<S extends ZodType<unknown>>(item: S): ZodArray<Infer<S>> {
  return new ZodArray<Infer<S>>((value, path, issues) => {
    if (!Array.isArray(value)) return fail(issues, path, `expected array, received ${typeOf(value)}`);
    const out: unknown[] = [];
    let failed = false;
    for (let i = 0; i < value.length; i++) {
      const parsed = item.check(value[i], [...path, i], issues);
      if (parsed === FAILED) failed = true;
      out.push(parsed);
    }
    return failed ? FAILED : out;
  });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

type Shape = Record<string, ZodType<unknown>>;
type OptionalKeys<S extends Shape> = {
  [K in keyof S]: undefined extends Infer<S[K]> ? K : never;
}[keyof S];
type ObjectOutput<S extends Shape> = {
  [K in Exclude<keyof S, OptionalKeys<S>>]: Infer<S[K]>;
} & { [K in OptionalKeys<S>]?: Infer<S[K]> };
type Flatten<T> = { [K in keyof T]: T[K] };

export function object<S extends Shape>(shape: S): ZodType<Flatten<ObjectOutput<S>>> {
  const keys = Object.keys(shape);
  return new ZodType<Flatten<ObjectOutput<S>>>((value, path, issues) => {
    if (!isPlainObject(value)) return fail(issues, path, `expected object, received ${typeOf(value)}`);
    const out: Record<string, unknown> = {};
    let failed = false;
    for (const key of keys) {
      const schema = shape[key]!;
      const present = Object.hasOwn(value, key);
      if (!present && schema.isOptional) continue;
      const parsed = schema.check(present ? value[key] : undefined, [...path, key], issues);
      if (parsed === FAILED) failed = true;
      else out[key] = parsed;
    }
    return failed ? FAILED : out;
  });
}

export function record<V>(key: ZodType<string>, valueSchema: ZodType<V>): ZodType<Record<string, V>> {
  return new ZodType<Record<string, V>>((value, path, issues) => {
    if (!isPlainObject(value)) return fail(issues, path, `expected record, received ${typeOf(value)}`);
    const out: Record<string, V> = {};
    let failed = false;
    for (const k of Object.keys(value)) {
      if (key.check(k, [...path, k], issues) === FAILED) failed = true;
      const parsed = valueSchema.check(value[k], [...path, k], issues);
      if (parsed === FAILED) failed = true;
      // defineProperty: a `__proto__` key from JSON stays a plain key.
      else
        Object.defineProperty(out, k, {
          value: parsed,
          enumerable: true,
          writable: true,
          configurable: true,
        });
    }
    return failed ? FAILED : out;
  });
}

export function union<const S extends readonly ZodType<unknown>[]>(options: S): ZodType<Infer<S[number]>> {
  return new ZodType<Infer<S[number]>>((value, path, issues) => {
    for (const option of options) {
      const scratch: Issue[] = [];
      const parsed = option.check(value, path, scratch);
      if (parsed !== FAILED && scratch.length === 0) return parsed;
    }
    return fail(issues, path, "matches none of the options");
  });
}
