/**
 * Instruction bytes of the PIV card edge (SP 800-73-4 Part 2 §3) and the Yubico extensions: the one
 * table the session (host side), the virtual card (card side), the redacting trace and the card
 * models all speak from. In the apdu layer because the trace, below piv, needs it too.
 */
export const PIV_INS = {
  select: 0xa4,
  getResponse: 0xc0,
  verify: 0x20,
  changeReference: 0x24,
  resetRetryCounter: 0x2c,
  generalAuthenticate: 0x87,
  generateKeyPair: 0x47,
  getData: 0xcb,
  putData: 0xdb,
  // Yubico extensions
  getMetadata: 0xf7,
  getSerial: 0xf8,
  setPinRetries: 0xfa,
  reset: 0xfb,
  getVersion: 0xfd,
  importKey: 0xfe,
  setManagementKey: 0xff,
  /** Yubico OTP application: serial number on firmware before 5. */
  otpApiRequest: 0x01,
} as const;

/**
 * Instruction bytes of the GlobalPlatform security domain that SCP11 uses (GP Card Spec 2.3
 * Amendment F §7): the one table of the host (apdu/scp11) and the virtual card's security domain.
 */
export const GP_INS = {
  getData: 0xca,
  performSecurityOperation: 0x2a,
  mutualAuthenticate: 0x82,
  internalAuthenticate: 0x88,
  /** INITIALIZE UPDATE and EXTERNAL AUTHENTICATE: the SCP03 handshake (GP Amendment D §7.1). */
  initializeUpdate: 0x50,
  externalAuthenticate: 0x82,
  /** PUT KEY (GP Card Spec §11.8): here the OCE CA public key (KID 0x10) for SCP11a. */
  putKey: 0xd8,
  /** STORE DATA (GP Card Spec §11.11): here the CA key identifier (SKI) of that key. */
  storeData: 0xe2,
} as const;
