/**
 * What a card looks like from the reader side: power on (returns the ATR), answer one command APDU
 * with response data ‖ SW1 SW2, power off. The virtual PIV card implements it; the vpcd bridge and
 * the in-process transport drive it.
 */
export interface ApduResponder {
  powerOn(): Uint8Array;
  transmit(command: Uint8Array): Uint8Array;
  powerOff(): void;
}
