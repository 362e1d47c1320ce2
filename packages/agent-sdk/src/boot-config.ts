import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

/**
 * Backends that mount the workspace volume after files are injected (Fly Machines) deliver the workspace's config
 * as a base64 environment variable instead; the runtime writes it under the mounted volume before anything reads it.
 * Returns the path written, or null when there is nothing to write.
 */
export function materializeBootConfig(env: Readonly<Record<string, string | undefined>>): string | null {
  const encoded = env.MOLECULE_CONFIG_B64;
  const path = env.MOLECULE_CONFIG_PATH;
  if (!encoded || !path) return null;
  const text = Buffer.from(encoded, "base64").toString("utf8");
  JSON.parse(text); // refuse to write something that is not the JSON the platform sent
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const temporary = `${path}.tmp-${process.pid}`;
  writeFileSync(temporary, text, { mode: 0o600 });
  renameSync(temporary, path);
  return path;
}
