import { describe, expect, it } from "vitest";
import { hashToken, mintToken, Sealer, secretsEqual } from "./services/crypto.ts";

const KEY_1 = "11".repeat(32);
const KEY_2 = Buffer.alloc(32, 7).toString("base64");

describe("secrets sealing", () => {
  it("round-trips and binds the value to its place", () => {
    const sealer = Sealer.fromConfig(KEY_1, 1, "");
    const { sealed, keyVersion } = sealer.seal("hunter2", "ws_a:API_KEY");
    expect(sealed).not.toContain("hunter2");
    expect(sealer.open(sealed, keyVersion, "ws_a:API_KEY")).toBe("hunter2");
    expect(() => sealer.open(sealed, keyVersion, "ws_b:API_KEY")).toThrow();
  });

  it("rotates: new values use the new key, old ones still open", () => {
    const before = Sealer.fromConfig(KEY_1, 1, "");
    const old = before.seal("v1", "ad");
    const after = Sealer.fromConfig(KEY_2, 2, `1:${KEY_1}`);
    expect(after.open(old.sealed, old.keyVersion, "ad")).toBe("v1");
    expect(after.seal("v2", "ad").keyVersion).toBe(2);
  });

  it("refuses a key of the wrong size", () => {
    expect(() => Sealer.fromConfig("abcd", 1, "")).toThrow(/32 bytes/);
  });
});

describe("tokens", () => {
  it("are random, prefixed and hashed with SHA-256", () => {
    const token = mintToken("mwt");
    expect(token).toMatch(/^mwt_[A-Za-z0-9_-]{43}$/);
    expect(mintToken("mwt")).not.toBe(token);
    expect(hashToken(token)).toMatch(/^[0-9a-f]{64}$/);
    expect(secretsEqual(token, token)).toBe(true);
    expect(secretsEqual(token, `${token}x`)).toBe(false);
  });
});
