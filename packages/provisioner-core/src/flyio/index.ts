export { type FlyLogger, type FlyRetryOptions, flyError } from "./api.ts";
export * from "./provisioner.ts";
