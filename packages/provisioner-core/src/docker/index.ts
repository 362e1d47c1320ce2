export * from "./engine.ts";
export * from "./errors.ts";
export * from "./network.ts";
export * from "./provisioner.ts";
