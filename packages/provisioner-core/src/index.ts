export * from "./controlplane/index.ts";
export * from "./docker/index.ts";
export * from "./errors.ts";
export * from "./flyio/index.ts";
export * from "./naming.ts";
export * from "./provisioner.ts";
export * from "./select.ts";
export * from "./tiers.ts";
