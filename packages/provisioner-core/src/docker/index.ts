export * from "./errors.ts";
export * from "./provisioner.ts";
