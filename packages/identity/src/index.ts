export * from "./sealing.ts";
export * from "./signing.ts";
export * from "./tokens.ts";
