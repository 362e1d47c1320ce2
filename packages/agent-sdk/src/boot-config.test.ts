import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { materializeBootConfig } from "./boot-config.ts";

describe("materializeBootConfig", () => {
  it("decodes the base64 config onto the volume, private to the agent", () => {
    const dir = mkdtempSync(join(tmpdir(), "boot-config-"));
    const path = join(dir, ".molecule", "config.json");
    const config = { workspace_id: "ws_1", tier: 2 };
    const written = materializeBootConfig({
      MOLECULE_CONFIG_B64: Buffer.from(JSON.stringify(config)).toString("base64"),
      MOLECULE_CONFIG_PATH: path,
    });
    expect(written).toBe(path);
    expect(JSON.parse(readFileSync(path, "utf8"))).toEqual(config);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it("does nothing without the variables and refuses what is not JSON", () => {
    expect(materializeBootConfig({})).toBeNull();
    const path = join(mkdtempSync(join(tmpdir(), "boot-config-")), "config.json");
    expect(() =>
      materializeBootConfig({
        MOLECULE_CONFIG_B64: Buffer.from("not json").toString("base64"),
        MOLECULE_CONFIG_PATH: path,
      }),
    ).toThrow();
  });
});
