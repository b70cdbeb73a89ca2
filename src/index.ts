// Public library surface: explicit named exports only (see STYLE.md).
export * as errors from "./errors.js";
