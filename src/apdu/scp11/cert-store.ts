/**
 * The SD's certificate store for an SCP11 key, as GET DATA BF21 returns it (GP Amendment F §7.4;
 * yubikit `get_certificate_bundle`): DER X.509 certificates back to back, leaf LAST, either bare
 * (YubiKey 5.7) or inside a `BF21` template (Samsung's test card). Untrusted bytes: the decoder
 * only splits them (strict BER-TLV framing, SEQUENCE tags, bounded count and size); the chain is
 * validated afterwards (scp-trust.ts).
 */
import { concatBytes, encodeTlv, readTlv } from "../tlv.js";
import { ScpMalformedError } from "./errors.js";

export const TAG_CERTIFICATE_STORE = 0xbf21;
/** A store longer than this is refused (a YubiKey's is ~1 KB; PIV responses are ≤ 32 KB). */
export const MAX_CERTIFICATE_STORE_BYTES = 16 * 1024;
export const MAX_STORE_CERTIFICATES = 6;

/** Splits a certificate store into DER certificates, leaf last. */
export function decodeCertificateStore(bytes: Uint8Array): Uint8Array[] {
  if (bytes.length === 0) throw new ScpMalformedError("empty SCP certificate store");
  if (bytes.length > MAX_CERTIFICATE_STORE_BYTES) {
    throw new ScpMalformedError(
      `SCP certificate store of ${bytes.length} bytes (max ${MAX_CERTIFICATE_STORE_BYTES})`,
    );
  }
  let content = bytes;
  try {
    if (bytes[0] === 0xbf && bytes[1] === 0x21) {
      const r = readTlv(bytes, 0);
      if (r.end !== bytes.length) throw new ScpMalformedError("bytes after the BF21 certificate store");
      content = r.tlv.value;
    }
    const out: Uint8Array[] = [];
    let o = 0;
    while (o < content.length) {
      if (out.length === MAX_STORE_CERTIFICATES) {
        throw new ScpMalformedError(`more than ${MAX_STORE_CERTIFICATES} certificates in the SCP store`);
      }
      if (content[o] !== 0x30)
        throw new ScpMalformedError("SCP certificate store holds something else than a certificate");
      const r = readTlv(content, o);
      out.push(content.slice(o, r.end));
      o = r.end;
    }
    if (out.length === 0) throw new ScpMalformedError("empty SCP certificate store");
    return out;
  } catch (e) {
    if (e instanceof ScpMalformedError) throw e;
    throw new ScpMalformedError("SCP certificate store is not a list of DER certificates", { cause: e });
  }
}

/** Encodes a store (leaf last), wrapped in BF21 or bare. */
export function encodeCertificateStore(certificates: readonly Uint8Array[], wrapped: boolean): Uint8Array {
  const bare = concatBytes(...certificates);
  return wrapped ? encodeTlv(TAG_CERTIFICATE_STORE, bare) : bare;
}
