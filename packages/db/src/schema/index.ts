export * from "./backups.ts";
export * from "./credentials.ts";
export * from "./events.ts";
export * from "./operations.ts";
export * from "./pools.ts";
export * from "./reconcile.ts";
export * from "./resources.ts";
export * from "./workspaces.ts";
