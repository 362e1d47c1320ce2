export * from "./a2a.ts";
export * from "./controlplane.ts";
export * from "./errors.ts";
export * from "./ids.ts";
export * from "./registry.ts";
export * from "./status.ts";
export * from "./text.ts";
export * from "./workspaces.ts";
