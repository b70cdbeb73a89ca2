/**
 * The one-method connection every card session is built on (as yubikit's
 * `SmartCardConnection.send_and_receive`): raw command APDU in, raw response APDU (data ‖ SW1 SW2)
 * out. Chaining, GET RESPONSE and status-word errors live above it, in src/apdu.
 */
export interface CardTransport {
  /** Answer-to-reset of the card currently connected. */
  readonly atr: Uint8Array;
  /** True when the card was reached through a contactless (NFC) interface. */
  readonly contactless: boolean;
  /** Human-readable name of the reader (PC/SC) or of the in-process card. */
  readonly readerName: string;
  transmit(command: Uint8Array): Promise<Uint8Array>;
  close(): Promise<void>;
}
