// The pki layer's public surface (SPEC.md §3): explicit named exports only (STYLE.md).
export { type CertificateDer, isDeviceCa, isTokenCa, spkiSha256, tokenCaOwner } from "./ca-facts.js";
export {
  assertKeyOfCertificate,
  type CaKeySecrets,
  generateCaKeyOnToken,
  type OpenedCaKey,
  openCaKey,
  parseCaKeyUri,
} from "./ca-key.js";
export {
  CRL_REASONS,
  type CrlReasonName,
  crlNumberOf,
  crlToPem,
  DEFAULT_CRL_VALIDITY_DAYS,
  encodeCrl,
  type IssueCrlParams,
  issueCrl,
  parseCrl,
  type RevokedCertificateEntry,
} from "./crl.js";
export {
  createDeviceIdentity,
  createPki,
  createRootCa,
  DEFAULT_MANUFACTURER,
  DEVICE_KEY_CURVE,
  type IssueCardCertificateParams,
  type IssueDeviceCertificateParams,
  type IssueOptions,
  type IssuerCredentials,
  issueCaCertificate,
  issueCardCertificate,
  issueDeviceCertificate,
  type OnboardingPki,
  randomSerialNumber,
} from "./issue.js";
export {
  decodePrivateKeyPem,
  encryptPrivateKeyPkcs8,
  type KeyFileOptions,
  type LoadedKeyFile,
  readPrivateKeyFile,
} from "./key-files.js";
export {
  type CryptoKey,
  type CryptoProvider,
  cryptoForKey,
  exportPrivateKeyPem,
  externalSigningKey,
  generateEcKeyPair,
  importPrivateKeyPem,
  type NamedCurve,
  nodeCrypto,
  type PublicKeyInput,
  toSpki,
} from "./keys.js";
export { EKU, ONBOARDING_ARC } from "./oids.js";
export { type CertificateOwnership, extractOfficer, extractOwner, readOwnership } from "./ownership.js";
export {
  type CaKeyLoadOptions,
  type CaName,
  DEVICE_FILES,
  initPkiDirectory,
  issueDeviceToDirectory,
  issueTokenCaToDirectory,
  type LoadedPki,
  type LoadedTokenCa,
  loadPkiDirectory,
  loadTokenCaDirectory,
  PKI_FILES,
  type PkiState,
  readCertificateFile,
  resignCrl,
  revokeInPki,
} from "./pki-store.js";
export {
  type CardSlot,
  PROFILES,
  SLOT_PROFILES,
  VALIDATION_REQUIREMENTS,
  type ValidityOptions,
} from "./profiles.js";
export {
  type CertificateInput,
  type CrlInput,
  MAX_PATH_CERTIFICATES,
  type ValidateChainOptions,
  type ValidatedChain,
  validateChain,
} from "./validate-chain.js";
