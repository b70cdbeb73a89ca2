/**
 * Metering wrappers: they pass every APDU through unchanged and show it to an ApduMeter
 * (latency-profile.ts), which counts APDUs and bytes and adds up the MODELED card time. They never
 * wait, so tests and benchmarks stay as fast as the emulator.
 *
 * Three places to put the meter, whichever the code under measurement lets you reach:
 * - `MeteredCard`: around an ApduResponder (the virtual card), under an InProcessTransport or the
 *   vpcd bridge;
 * - `MeteredTransport`: around any CardTransport (PC/SC included; the meter then also sees what a
 *   real card answers);
 * - `meteringInterceptor`: as the VirtualPivCard `intercept` option, for code that builds the card
 *   itself.
 */

import type { ApduResponder } from "../transport/apdu-responder.js";
import type { CardTransport } from "../transport/card-transport.js";
import { ObservedTransport } from "../transport/observed-transport.js";
import type { ApduMeter } from "./latency-profile.js";
import type { ApduInterceptor } from "./virtual-piv-card.js";

export class MeteredCard implements ApduResponder {
  constructor(
    readonly inner: ApduResponder,
    readonly meter: ApduMeter,
  ) {}

  powerOn(): Uint8Array {
    return this.inner.powerOn();
  }

  transmit(command: Uint8Array): Uint8Array {
    const started = performance.now();
    const cpu = process.cpuUsage();
    const response = this.inner.transmit(command);
    const used = process.cpuUsage(cpu);
    const elapsed = performance.now() - started;
    // Inside SCP11 the wire carries ciphertext: the virtual card says what it unwrapped, so that an
    // empty VERIFY (tries left) is not charged as a PIN check, and object ids show in the breakdown.
    const unwrapped = (this.inner as { lastUnwrapped?: Uint8Array }).lastUnwrapped;
    this.meter.record(command, response, elapsed, unwrapped, (used.user + used.system) / 1000);
    return response;
  }

  powerOff(): void {
    this.inner.powerOff();
  }
}

/** Meters any CardTransport: the one transport decorator, with the meter as its observer. */
export class MeteredTransport extends ObservedTransport {
  constructor(
    inner: CardTransport,
    readonly meter: ApduMeter,
  ) {
    super(inner, { response: (command, response, elapsedMs) => meter.record(command, response, elapsedMs) });
  }
}

/** A VirtualPivCard `intercept` that meters and changes nothing. */
export function meteringInterceptor(meter: ApduMeter): ApduInterceptor {
  return (command, card) => {
    const started = performance.now();
    const response = card(command);
    meter.record(command, response, performance.now() - started);
    return response;
  };
}
