import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * In development a missing admin token or secrets key is generated once and kept in the data folder, so a
 * restart keeps working (and keeps opening the secrets it sealed). Production refuses to start without them
 * (see loadConfig).
 */
export function persistedSecret(
  dataDir: string,
  file: string,
  make: () => string,
): { value: string; created: boolean } {
  mkdirSync(dataDir, { recursive: true });
  const path = join(dataDir, file);
  if (existsSync(path)) return { value: readFileSync(path, "utf8").trim(), created: false };
  const value = make();
  writeFileSync(path, `${value}\n`, { mode: 0o600, flag: "wx" });
  return { value, created: true };
}

export const makeAdminToken = () => `mat_${randomBytes(32).toString("base64url")}`;
export const makeSecretsKey = () => randomBytes(32).toString("hex");
