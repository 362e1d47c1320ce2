export {
  MOTO_APT_PACKAGES,
  MOTO_VERSION,
  type MotoOptions,
  type MotoServer,
  startMoto,
  unpackMoto,
} from "./moto.ts";
