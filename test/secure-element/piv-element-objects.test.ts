/**
 * How the PIV element lays items out on the card (SPEC.md §5): one vendor object per item in
 * 5FFF10–5FFFFF, Yubico's 5FFF00/5FFF01 untouched, and capacity equal to the card's own accounting.
 */
import { randomBytes } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { VirtualPivCard } from "../../src/card-emulator/virtual-piv-card.js";
import { PinRequiredError } from "../../src/errors.js";
import { DEFAULT_MANAGEMENT_KEY, managementKeyLength } from "../../src/piv/management-key.js";
import { ObjectId } from "../../src/piv/objects.js";
import { PivSession } from "../../src/piv/piv-session.js";
import { createPki, type OnboardingPki } from "../../src/pki/issue.js";
import { itemObjectId, parseItemName } from "../../src/secure-element/card-layout.js";
import {
  generatePivIdentityKeys,
  installPivIdentityCertificates,
  PivElement,
} from "../../src/secure-element/piv-element.js";
import { InProcessTransport } from "../../src/transport/in-process.js";
import { issueIdentityCertificates } from "./identity.js";

let pki: OnboardingPki;
beforeAll(async () => {
  pki = await createPki({ owner: "ACME Bank" });
});

async function personalised(): Promise<VirtualPivCard> {
  const card = new VirtualPivCard();
  const transport = new InProcessTransport(card);
  const session = await PivSession.open(transport);
  await session.authenticateManagementKey(DEFAULT_MANAGEMENT_KEY);
  const keys = await generatePivIdentityKeys(session);
  await installPivIdentityCertificates(session, await issueIdentityCertificates(pki, keys));
  const type = await session.getManagementKeyType();
  await session.setManagementKey(new Uint8Array(randomBytes(managementKeyLength(type))), type, {
    protect: true,
  });
  await transport.close();
  return card;
}

describe("PIV element on the virtual card", () => {
  it("maps item names to the vendor objects of the table", () => {
    const id = (name: string) => itemObjectId(parseItemName(name)!);
    expect(id("manifest")).toBe(0x5fff10);
    expect(id("certificates")).toBe(0x5fff11);
    expect(id("crl")).toBe(0x5fff12);
    expect(id("shard-0")).toBe(0x5fff20);
    expect(id("shard-95")).toBe(0x5fff7f);
    expect(id("receipt-0")).toBe(0x5fff80);
    expect(id("receipt-127")).toBe(0x5fffff);
  });

  it("stores each item as the plain content of its object, and leaves Yubico's objects alone", async () => {
    const card = await personalised();
    const element = await PivElement.open(new InProcessTransport(card));
    const adminBefore = await element.session.readObject(ObjectId.yubicoAdminData);
    await element.verifyPin("123456");
    const shard = new Uint8Array(randomBytes(2000));
    await element.writeItem("shard-5", shard);
    await element.writeItem("receipt-3", Uint8Array.of(1, 2, 3));
    expect(await element.session.getData(0x5fff25)).toEqual(shard);
    expect(await element.session.getData(0x5fff83)).toEqual(Uint8Array.of(1, 2, 3));
    await element.deleteItem("receipt-3");
    expect(await element.session.readObject(0x5fff83)).toBeUndefined();
    expect(await element.session.readObject(ObjectId.yubicoAdminData)).toEqual(adminBefore);
    expect(await element.session.readObject(ObjectId.yubicoAttestation)).toBeUndefined();
    await element.close();
  });

  it("reports the capacity the card itself accounts", async () => {
    const card = await personalised();
    const element = await PivElement.open(new InProcessTransport(card));
    // Before the PIN the PIN-protected management key object cannot be read, so it is not counted.
    const before = await element.capacity();
    expect(before.usedBytes).toBeLessThan(card.usedObjectBytes);
    await element.verifyPin("123456");
    expect((await element.capacity()).usedBytes).toBe(card.usedObjectBytes);
    await element.writeItem("manifest", new Uint8Array(1234));
    expect((await element.capacity()).usedBytes).toBe(card.usedObjectBytes);
    expect((await element.capacity()).totalBytes).toBe(card.profile.maxTotalObjectBytes);
    await element.close();
  });

  it("without owning the transport, close() logs the PIN out and leaves the card connected", async () => {
    const card = await personalised();
    const transport = new InProcessTransport(card);
    const element = await PivElement.open(transport, { ownsTransport: false });
    await element.verifyPin("123456");
    await element.close();
    const again = await PivElement.open(transport, { ownsTransport: false });
    await expect(again.writeItem("manifest", Uint8Array.of(1))).rejects.toThrow(PinRequiredError);
    expect(await again.session.pinTriesLeft()).toBe(3);
    await again.close();
    await transport.close();
  });

  it("reads the YubiKey serial into info", async () => {
    const card = await personalised();
    const element = await PivElement.open(
      new InProcessTransport(card, { readerName: "Yubico YubiKey OTP+FIDO+CCID 00 00" }),
    );
    expect(element.info).toEqual({
      backend: "piv",
      channel: { kind: "plaintext" },
      name: "Yubico YubiKey OTP+FIDO+CCID 00 00",
      serial: String(card.serial),
      contactless: false,
    });
    await element.close();
  });
});
