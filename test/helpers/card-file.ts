/**
 * Virtual cards kept in state files, opened in-process for one piece of work, and the world the
 * PC/SC end-to-end tests start from: a PKI directory, officers' cards personalised by its token CA,
 * and a station directory that trusts its root and holds its CRL.
 */
import { join } from "node:path";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { initPkiDirectory, PKI_FILES } from "../../src/pki/index.js";
import { openInProcessCard } from "../../src/secure-element/open-card.js";
import type { PivElement } from "../../src/secure-element/piv-element.js";
import { updateStationCrl } from "../../src/station/crl-update.js";
import { initStation } from "../../src/station/init-station.js";
import { personalizeCard } from "../../src/station/personalize-card.js";

export async function withCardFile<T>(path: string, fn: (element: PivElement) => Promise<T>): Promise<T> {
  const opened = await openInProcessCard(VirtualPivCard.fromFile(path));
  try {
    return await fn(opened.element);
  } finally {
    await opened.dispose();
  }
}

/**
 * `pki init` of `owner` in `work`/pki; each card file personalised (PUK 87654321); `work`/station
 * initialised with the root and the token CA's CRL.
 */
export async function pkiCardsAndStation(
  work: string,
  owner: string,
  cards: readonly { readonly file: string; readonly officer: string; readonly pin: string }[],
): Promise<{ pkiDir: string; rootPem: string; stationDir: string }> {
  const pkiDir = join(work, "pki");
  const { pki, crl } = await initPkiDirectory(pkiDir, { owner });
  for (const card of cards) {
    await withCardFile(card.file, (element) =>
      personalizeCard({
        element,
        pki: { tokenCa: pki.tokenCa, root: pki.root },
        crl,
        owner,
        officer: card.officer,
        newPin: card.pin,
        newPuk: "87654321",
      }),
    );
  }
  const stationDir = join(work, "station");
  await initStation(stationDir, pki.root.certificate);
  await updateStationCrl(stationDir, crl, { issuers: [pki.tokenCa.certificate] });
  return { pkiDir, rootPem: join(pkiDir, PKI_FILES.rootCert), stationDir };
}
