export { Backoff, type FlyLogger, type FlyRetryOptions, flyError, parseRetryAfter } from "./api.ts";
export * from "./provisioner.ts";
