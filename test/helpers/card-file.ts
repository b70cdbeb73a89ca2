/** A virtual card kept in a state file, opened in-process for one piece of work (personalisation, reading back). */
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { openInProcessCard } from "../../src/secure-element/open-card.js";
import type { PivElement } from "../../src/secure-element/piv-element.js";

export async function withCardFile<T>(path: string, fn: (element: PivElement) => Promise<T>): Promise<T> {
  const opened = await openInProcessCard(VirtualPivCard.fromFile(path));
  try {
    return await fn(opened.element);
  } finally {
    await opened.dispose();
  }
}
