export * from "./emulator.ts";
export type { Fault, FaultAction, FaultRequest, RateLimit } from "./faults.ts";
export * from "./openapi.ts";
export type { AppRecord, MachineRecord, MachineState, TransitionDelays, VolumeRecord } from "./state.ts";
