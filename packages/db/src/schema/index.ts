export * from "./credentials.ts";
export * from "./operations.ts";
export * from "./workspaces.ts";
