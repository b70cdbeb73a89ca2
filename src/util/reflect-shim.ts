/**
 * A temporary stand-in for the Reflect metadata API, present only while @peculiar/x509 loads (see
 * x509.ts). @peculiar/x509 registers its algorithms with tsyringe, which refuses to load without
 * `Reflect.getMetadata` and reads it only while classes are decorated, at import. The library is
 * compiled without `emitDecoratorMetadata`, so "no metadata" is the true answer. Installing the
 * `reflect-metadata` polyfill instead would patch `Reflect` for every program that imports
 * hsm-onboard; this stand-in is removed again once the import is done. A Reflect API that is already
 * there (the integrator's own polyfill) is left untouched.
 */
const METHODS = ["getMetadata", "getOwnMetadata", "defineMetadata"] as const;

const reflect = Reflect as unknown as Record<string, unknown>;
const installed = METHODS.filter((name) => typeof reflect[name] !== "function");
for (const name of installed) {
  Object.defineProperty(reflect, name, { value: () => undefined, configurable: true, writable: true });
}

/** Removes what this module installed (called once @peculiar/x509 has been evaluated). */
export function removeReflectShim(): void {
  for (const name of installed.splice(0)) delete reflect[name];
}
