export * from "./aws.ts";
export * from "./bootstrap.ts";
export * from "./commands.ts";
export * from "./instances.ts";
export * from "./provisioner.ts";
export * from "./security-group.ts";
export * from "./tags.ts";
export * from "./vm.ts";
