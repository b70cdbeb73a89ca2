// hsm-onboard's library surface for integrators (SPEC.md §2): explicit named exports only, one
// block per layer, bottom up. Everything else under src/ is internal.

export { Agent, runAgentOnce } from "./agent/agent.js";
export { type OnboardingResult, onboard } from "./agent/onboarding.js";
// card emulator
export { VirtualPivCard } from "./card-emulator/virtual-piv-card.js";
export { VpcdBridge } from "./card-emulator/vpcd-bridge.js";
export { encodeConfig } from "./config/encode-config.js";
export { checkManifestValidity, findShardFor, verifyManifest } from "./config/manifest.js";
export { checkPlan, loadPlanFile, parsePlan } from "./config/plan.js";
// config
export type { NetworkPlan } from "./config/plan-model.js";
export { signReceipt, verifyReceipt } from "./config/receipt.js";
export { decodeShardEntry, networkStateDigest } from "./config/shard.js";
// crypto
export { ecdsaDerToRaw, ecdsaRawToDer, verifyEcdsaDer, verifyEcdsaRaw } from "./crypto/ecdsa.js";
export { createSoftwareSigner, type Signer } from "./crypto/signer.js";
export {
  AddressConflictError,
  CardFullError,
  CardNotTrustedError,
  CardRevokedError,
  CertificateRevokedError,
  CertificateValidationError,
  ExitCode,
  IntegrityError,
  InternalError,
  isOnboardError,
  MalformedError,
  NetworkApplyError,
  NoCardError,
  NotForThisHsmError,
  OnboardError,
  type OnboardErrorCode,
  PinBlockedError,
  PlanInvalidError,
  type PlanProblem,
  QuorumError,
  ReplayError,
  UnknownStatusError,
  UsageError,
  ValidityError,
  WrongPinError,
} from "./errors.js";
export { PivSession } from "./piv/piv-session.js";
// pki
export {
  type AuthenticatedCard,
  authenticateCardView,
  type CardAuthenticationPolicy,
} from "./pki/card-authentication.js";
export { authenticateCard } from "./pki/card-authentication-x509.js";
export {
  issueCardCertificate,
  issueDeviceCertificate,
  VALIDATION_REQUIREMENTS,
  type ValidatedChain,
  validateChain,
} from "./pki/index.js";
export { CARD_LAYOUT, MAX_RECEIPTS, MAX_SHARDS } from "./secure-element/card-layout.js";
export { openCard, openInProcessCard } from "./secure-element/open-card.js";
export { PivElement } from "./secure-element/piv-element.js";
export { Pkcs11Element } from "./secure-element/pkcs11-element.js";
export type { SecureElement } from "./secure-element/secure-element.js";
export { newChallenge, verifyChallengeProof } from "./secure-element/secure-element.js";
export { readReceipts } from "./station/read-receipts.js";
// station and agent
export { writeConfigurationToCard } from "./station/write-card.js";
// transport, piv, secure element
export type { CardTransport } from "./transport/card-transport.js";
export { InProcessTransport } from "./transport/in-process.js";
export { PcscTransport } from "./transport/pcsc-transport.js";
export { ReaderWatcher } from "./transport/reader-watcher.js";
