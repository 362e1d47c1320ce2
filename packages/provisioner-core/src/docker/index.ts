export * from "./client.ts";
export * from "./engine.ts";
export * from "./errors.ts";
export * from "./network.ts";
export * from "./owned.ts";
export * from "./provisioner.ts";
