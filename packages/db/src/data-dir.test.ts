import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { configuredOrPersisted, persistedSecret } from "./data-dir.ts";

/** Any generator: the services pass identity's `mintHexKey` or `mintToken`. */
const makeHexKey = () => randomBytes(32).toString("hex");

const folders: string[] = [];
afterEach(() => {
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
});

function folder(): string {
  const dir = mkdtempSync(join(tmpdir(), "molecule-data-dir-"));
  folders.push(dir);
  return dir;
}

describe("secrets kept in the data folder", () => {
  it("generates once into a new folder (owner-only file) and reads the same value back afterwards", () => {
    const dataDir = join(folder(), "nested", "data");
    let made = 0;
    const make = () => `value-${++made}`;
    const first = persistedSecret(dataDir, "admin-token", make);
    expect(first).toEqual({ value: "value-1", created: true, persisted: true });
    expect(readFileSync(join(dataDir, "admin-token"), "utf8")).toBe("value-1\n");
    expect(statSync(join(dataDir, "admin-token")).mode & 0o777).toBe(0o600);

    const again = persistedSecret(dataDir, "admin-token", make);
    expect(again).toEqual({ value: "value-1", created: false, persisted: true });
    expect(made).toBe(1);
  });

  it("keeps each file apart and reads a value someone wrote by hand, trimmed", () => {
    const dataDir = folder();
    writeFileSync(join(dataDir, "secrets-key"), "  hand-written-key \n");
    expect(persistedSecret(dataDir, "secrets-key", makeHexKey).value).toBe("hand-written-key");
    const other = persistedSecret(dataDir, "other", makeHexKey);
    expect(other.created).toBe(true);
    expect(other.value).toMatch(/^[0-9a-f]{64}$/);
  });

  it("refuses an empty file rather than using an empty secret", () => {
    const dataDir = folder();
    writeFileSync(join(dataDir, "admin-token"), "\n");
    expect(() => persistedSecret(dataDir, "admin-token", makeHexKey)).toThrow(/admin-token is empty/);
  });

  it("prefers the configured value and then writes nothing", () => {
    const dataDir = join(folder(), "unused");
    expect(configuredOrPersisted("configured-value", dataDir, "admin-token", makeHexKey)).toEqual({
      value: "configured-value",
      created: false,
      persisted: false,
    });
    expect(() => statSync(dataDir)).toThrow(/ENOENT/);
    const generated = configuredOrPersisted(null, dataDir, "admin-token", makeHexKey);
    expect(generated).toMatchObject({ created: true, persisted: true });
    expect(configuredOrPersisted(undefined, dataDir, "admin-token", makeHexKey).value).toBe(generated.value);
  });
});
