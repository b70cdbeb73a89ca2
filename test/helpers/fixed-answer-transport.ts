/**
 * A card that answers every command with the same bytes (data, then the status word), recording what
 * it was sent: for property tests that feed a host-side reader arbitrary card answers.
 */
import type { CardTransport } from "../../src/transport/card-transport.js";

export function fixedAnswerTransport(
  data: Uint8Array,
  sw: number,
): { transport: CardTransport; sent: Uint8Array[] } {
  const sent: Uint8Array[] = [];
  const transport: CardTransport = {
    atr: Uint8Array.of(0x3b, 0x00),
    contactless: false,
    readerName: "arbitrary",
    transmit: async (command: Uint8Array) => {
      sent.push(command);
      return Uint8Array.from([...data, sw >> 8, sw & 0xff]);
    },
    close: async () => {},
  };
  return { transport, sent };
}
