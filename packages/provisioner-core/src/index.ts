export * from "./errors.ts";
export * from "./naming.ts";
export * from "./provisioner.ts";
export * from "./tiers.ts";
export * from "./select.ts";
