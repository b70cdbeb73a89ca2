/**
 * Card I/O of one `station write` (writeConfigurationToCard, the real station flow) with and
 * without the SCP11b channel, yubikey5 model: APDUs, bytes and modeled card time (issue 11).
 */
import { MemoryCardStateStore } from "../src/card-emulator/card-state-store.js";
import { ApduMeter, YUBIKEY5_LATENCY } from "../src/card-emulator/latency-profile.js";
import { MeteredCard } from "../src/card-emulator/metered-card.js";
import { provisionScpKey } from "../src/card-emulator/scp-provision.js";
import { VirtualPivCard } from "../src/card-emulator/virtual-piv-card.js";
import type { NetworkPlan } from "../src/config/plan-model.js";
import { createScpVendorCa } from "../src/pki/scp-certificates.js";
import { secureChannelPolicy } from "../src/secure-element/channel-policy.js";
import { PivElement } from "../src/secure-element/piv-element.js";
import { writeConfigurationToCard } from "../src/station/write-card.js";
import { InProcessTransport } from "../src/transport/in-process.js";
import type { BenchFixture } from "./fixture.js";
import { BENCH_PIN } from "./onboarding.js";
import { fixed, int, print, section, table } from "./report.js";

export async function benchStationWrite(
  fixture: BenchFixture,
  plan: NetworkPlan,
  hsms: number,
): Promise<void> {
  section(`5a. Station write card I/O, ${int(hsms)} HSMs, yubikey5 model, with and without SCP11b`);
  const vendor = await createScpVendorCa("bench card vendor");
  const rows: (string | number)[][] = [];
  for (const scp of [false, true]) {
    const meter = new ApduMeter(YUBIKEY5_LATENCY);
    const card = new VirtualPivCard({
      store: new MemoryCardStateStore(fixture.personalisedCard),
      profile: YUBIKEY5_LATENCY.card,
    });
    if (scp) await provisionScpKey(card, vendor);
    const element = await PivElement.open(
      new InProcessTransport(new MeteredCard(card, meter), { readerName: "bench virtual card" }),
      scp ? { channel: secureChannelPolicy([new Uint8Array(vendor.certificate.rawData)], false) } : {},
    );
    try {
      await writeConfigurationToCard({ element, plan, stationDir: fixture.stationDir, pin: BENCH_PIN });
    } finally {
      await element.close();
    }
    const t = meter.totals;
    rows.push([
      scp ? "SCP11b" : "plaintext",
      t.apdus,
      int(t.bytesOut),
      int(t.bytesIn),
      fixed(t.modeledMs),
      fixed(t.linkMs),
      fixed(t.processingMs),
    ]);
  }
  table(["channel", "APDUs", "bytes out", "bytes in", "modeled card ms", "link ms", "on-card ms"], rows);
  print("  the card's signature (9C, manifest) and PIN are inside; host CPU is in section 5.");
}
