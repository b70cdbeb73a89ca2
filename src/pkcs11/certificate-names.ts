import { readTlv } from "../apdu/tlv.js";
import { MalformedError } from "../errors.js";

/**
 * The three fields of an X.509 certificate PKCS#11 stores beside it (CKA_SUBJECT, CKA_ISSUER,
 * CKA_SERIAL_NUMBER: PKCS#11 v2.40 §4.6.3, each the DER of the field), read by walking the outer
 * TLVs of tbsCertificate (RFC 5280 §4.1) with the strict BER-TLV reader of the apdu layer. Loads no
 * X.509 library: the agent, which may keep its device key in a PKCS#11 token, loads this module.
 * Whether the certificate is otherwise well-formed or valid is not judged here.
 */
export interface CertificateNames {
  /** DER of the subject Name. */
  readonly subject: Uint8Array;
  /** DER of the issuer Name. */
  readonly issuer: Uint8Array;
  /** DER of the serialNumber INTEGER. */
  readonly serialNumber: Uint8Array;
}

const SEQUENCE = 0x30;
const INTEGER = 0x02;
const EXPLICIT_VERSION = 0xa0;

/** MalformedError unless `der` is one SEQUENCE holding a tbsCertificate of the RFC 5280 shape. */
export function certificateNames(der: Uint8Array): CertificateNames {
  try {
    const outer = readTlv(der, 0);
    if (outer.tlv.tag !== SEQUENCE || outer.end !== der.length) throw new Error("not one SEQUENCE");
    const tbs = readTlv(outer.tlv.value, 0).tlv;
    if (tbs.tag !== SEQUENCE) throw new Error("tbsCertificate is not a SEQUENCE");
    const t = tbs.value;
    let pos = 0;
    const next = (tag: number | undefined, field: string): Uint8Array => {
      const start = pos;
      const { tlv, end } = readTlv(t, pos);
      if (tag !== undefined && tlv.tag !== tag) throw new Error(`${field}: unexpected tag`);
      pos = end;
      return t.subarray(start, end);
    };
    if (t[0] === EXPLICIT_VERSION) next(EXPLICIT_VERSION, "version");
    const serialNumber = next(INTEGER, "serialNumber");
    next(SEQUENCE, "signature");
    const issuer = next(SEQUENCE, "issuer");
    next(SEQUENCE, "validity");
    const subject = next(SEQUENCE, "subject");
    return { subject, issuer, serialNumber };
  } catch (cause) {
    throw new MalformedError("not a DER X.509 certificate", { cause });
  }
}
