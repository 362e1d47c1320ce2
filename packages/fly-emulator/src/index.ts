export * from "./emulator.ts";
export * from "./openapi.ts";
