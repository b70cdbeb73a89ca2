/**
 * The PKCS#11 numbers this project uses (PKCS#11 v2.40 base specification, pkcs11t.h). Kept here
 * rather than read from the native binding so the pure parts of the layer (and their tests with a
 * fake module) type-check and run where the optional `pkcs11js` binding is not installed.
 * test/pkcs11/constants.test.ts checks every value against the binding when it is present.
 */

/** Session flags (§5.6, C_OpenSession). */
/** C_WaitForSlotEvent: return at once (CKR_NO_EVENT when nothing happened). */
export const CKF_DONT_BLOCK = 0x1;
export const CKF_RW_SESSION = 0x2;
export const CKF_SERIAL_SESSION = 0x4;

/** Token flags (CK_TOKEN_INFO.flags). */
export const CKF_WRITE_PROTECTED = 0x2;
export const CKF_LOGIN_REQUIRED = 0x4;
export const CKF_USER_PIN_INITIALIZED = 0x8;
export const CKF_TOKEN_INITIALIZED = 0x400;
export const CKF_USER_PIN_COUNT_LOW = 0x10000;
export const CKF_USER_PIN_FINAL_TRY = 0x20000;
export const CKF_USER_PIN_LOCKED = 0x40000;
export const CKF_USER_PIN_TO_BE_CHANGED = 0x80000;

/** User types (C_Login). */
export const CKU_SO = 0;
export const CKU_USER = 1;
export const CKU_CONTEXT_SPECIFIC = 2;

/** Session states (CK_SESSION_INFO.state). */
export const CKS_RO_PUBLIC_SESSION = 0;
export const CKS_RO_USER_FUNCTIONS = 1;
export const CKS_RW_PUBLIC_SESSION = 2;
export const CKS_RW_USER_FUNCTIONS = 3;
export const CKS_RW_SO_FUNCTIONS = 4;

/** Object classes. */
export const CKO_DATA = 0x0;
export const CKO_CERTIFICATE = 0x1;
export const CKO_PUBLIC_KEY = 0x2;
export const CKO_PRIVATE_KEY = 0x3;

/** Key and certificate types. */
export const CKK_EC = 0x3;
export const CKC_X_509 = 0x0;

/** CKA_CERTIFICATE_CATEGORY values. */
export const CK_CERTIFICATE_CATEGORY_TOKEN_USER = 1;
export const CK_CERTIFICATE_CATEGORY_AUTHORITY = 2;

/** Attributes. */
export const CKA_CLASS = 0x0;
export const CKA_TOKEN = 0x1;
export const CKA_PRIVATE = 0x2;
export const CKA_LABEL = 0x3;
export const CKA_APPLICATION = 0x10;
export const CKA_VALUE = 0x11;
export const CKA_CERTIFICATE_TYPE = 0x80;
export const CKA_ISSUER = 0x81;
export const CKA_SERIAL_NUMBER = 0x82;
export const CKA_CERTIFICATE_CATEGORY = 0x87;
export const CKA_KEY_TYPE = 0x100;
export const CKA_SUBJECT = 0x101;
export const CKA_ID = 0x102;
export const CKA_SENSITIVE = 0x103;
export const CKA_ENCRYPT = 0x104;
export const CKA_DECRYPT = 0x105;
export const CKA_WRAP = 0x106;
export const CKA_UNWRAP = 0x107;
export const CKA_SIGN = 0x108;
export const CKA_VERIFY = 0x10a;
export const CKA_DERIVE = 0x10c;
export const CKA_EXTRACTABLE = 0x162;
export const CKA_MODIFIABLE = 0x170;
export const CKA_EC_PARAMS = 0x180;
export const CKA_EC_POINT = 0x181;
export const CKA_ALWAYS_AUTHENTICATE = 0x202;

/** Mechanisms. */
export const CKM_EC_KEY_PAIR_GEN = 0x1040;
export const CKM_ECDSA = 0x1041;

/** Return values the layer maps to typed errors. */
export const CKR_OK = 0x0;
export const CKR_DEVICE_ERROR = 0x30;
export const CKR_DEVICE_MEMORY = 0x31;
export const CKR_DEVICE_REMOVED = 0x32;
export const CKR_PIN_INCORRECT = 0xa0;
export const CKR_PIN_INVALID = 0xa1;
export const CKR_PIN_LEN_RANGE = 0xa2;
export const CKR_PIN_EXPIRED = 0xa3;
export const CKR_PIN_LOCKED = 0xa4;
export const CKR_SESSION_CLOSED = 0xb0;
export const CKR_SESSION_HANDLE_INVALID = 0xb3;
export const CKR_TOKEN_NOT_PRESENT = 0xe0;
export const CKR_TOKEN_NOT_RECOGNIZED = 0xe1;
export const CKR_USER_ALREADY_LOGGED_IN = 0x100;
export const CKR_NO_EVENT = 0x8;
export const CKR_FUNCTION_NOT_SUPPORTED = 0x54;
export const CKR_USER_NOT_LOGGED_IN = 0x101;
export const CKR_USER_PIN_NOT_INITIALIZED = 0x102;
export const CKR_CRYPTOKI_NOT_INITIALIZED = 0x190;
export const CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191;

/** Names of the return values above, for messages (`CKR_PIN_INCORRECT`, not `160`). */
export const CKR_NAMES: Readonly<Record<number, string>> = {
  [CKR_OK]: "CKR_OK",
  [CKR_NO_EVENT]: "CKR_NO_EVENT",
  [CKR_FUNCTION_NOT_SUPPORTED]: "CKR_FUNCTION_NOT_SUPPORTED",
  [CKR_DEVICE_ERROR]: "CKR_DEVICE_ERROR",
  [CKR_DEVICE_MEMORY]: "CKR_DEVICE_MEMORY",
  [CKR_DEVICE_REMOVED]: "CKR_DEVICE_REMOVED",
  [CKR_PIN_INCORRECT]: "CKR_PIN_INCORRECT",
  [CKR_PIN_INVALID]: "CKR_PIN_INVALID",
  [CKR_PIN_LEN_RANGE]: "CKR_PIN_LEN_RANGE",
  [CKR_PIN_EXPIRED]: "CKR_PIN_EXPIRED",
  [CKR_PIN_LOCKED]: "CKR_PIN_LOCKED",
  [CKR_SESSION_CLOSED]: "CKR_SESSION_CLOSED",
  [CKR_SESSION_HANDLE_INVALID]: "CKR_SESSION_HANDLE_INVALID",
  [CKR_TOKEN_NOT_PRESENT]: "CKR_TOKEN_NOT_PRESENT",
  [CKR_TOKEN_NOT_RECOGNIZED]: "CKR_TOKEN_NOT_RECOGNIZED",
  [CKR_USER_ALREADY_LOGGED_IN]: "CKR_USER_ALREADY_LOGGED_IN",
  [CKR_USER_NOT_LOGGED_IN]: "CKR_USER_NOT_LOGGED_IN",
  [CKR_USER_PIN_NOT_INITIALIZED]: "CKR_USER_PIN_NOT_INITIALIZED",
  [CKR_CRYPTOKI_NOT_INITIALIZED]: "CKR_CRYPTOKI_NOT_INITIALIZED",
  [CKR_CRYPTOKI_ALREADY_INITIALIZED]: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
};
