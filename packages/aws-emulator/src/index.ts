export { AwsEmulator, type AwsEmulatorOptions, startAwsEmulator } from "./emulator.ts";
export type { Fault, FaultAction } from "./faults.ts";
export {
  MOTO_APT_PACKAGES,
  MOTO_VERSION,
  type MotoOptions,
  type MotoServer,
  startMoto,
  unpackMoto,
} from "./moto.ts";
export type { AwsCall } from "./protocol.ts";
export type { CommandOutcome, CommandScript, SentCommand } from "./ssm.ts";
export { DEFAULT_TIMING, type Timing } from "./state.ts";
