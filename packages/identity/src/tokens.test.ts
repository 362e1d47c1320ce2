import { describe, expect, it } from "vitest";
import { hashToken, mintHexKey, mintToken, secretsEqual } from "./tokens.ts";

describe("tokens", () => {
  it("are random, prefixed and hashed with SHA-256", () => {
    const token = mintToken("mwt");
    expect(token).toMatch(/^mwt_[A-Za-z0-9_-]{43}$/);
    expect(mintToken("mwt")).not.toBe(token);
    expect(hashToken(token)).toMatch(/^[0-9a-f]{64}$/);
    expect(secretsEqual(token, token)).toBe(true);
    expect(secretsEqual(token, `${token}x`)).toBe(false);
  });

  it("every prefix mints the same format", () => {
    for (const prefix of ["mbt", "mwt", "mit", "mat", "mct", "mca"] as const) {
      expect(mintToken(prefix)).toMatch(new RegExp(`^${prefix}_[A-Za-z0-9_-]{43}$`));
    }
  });

  it("hashes as the stored rows were hashed: hex SHA-256 of the token's text", () => {
    expect(hashToken("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });

  it("makes distinct 32-byte hex keys", () => {
    expect(mintHexKey()).toMatch(/^[0-9a-f]{64}$/);
    expect(mintHexKey()).not.toBe(mintHexKey());
  });
});
