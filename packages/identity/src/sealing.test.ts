import { describe, expect, it } from "vitest";
import { CP_SECRETS_KEY_NAMES, SealedValueError, Sealer } from "./sealing.ts";

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

  it("a value of a key version it does not have is a SealedValueError naming the version, not crypto text", () => {
    const old = Sealer.fromConfig(KEY_1, 1, "").seal("v1", "ad");
    const error = catchError(() => Sealer.fromConfig(KEY_2, 2, "").open(old.sealed, old.keyVersion, "ad"));
    expect(error).toBeInstanceOf(SealedValueError);
    expect(error).toMatchObject({ code: "secrets_key_unavailable", keyVersion: 1 });
    expect(error.message).toBe(
      "sealed with key version 1, which this process does not have: add that key to SECRETS_ENCRYPTION_OLD_KEYS (as 1:<key>)",
    );
    expect(error.message).not.toContain(old.sealed);
  });

  it("a value another key was configured under its version for, or an altered one, is a SealedValueError", () => {
    const sealed = Sealer.fromConfig(KEY_1, 1, "").seal("v1", "ad");
    const wrongKey = Sealer.fromConfig(KEY_2, 1, "");
    // The first character of the IV carries six bits of it: another one is another IV.
    const tampered = `${sealed.sealed.startsWith("A") ? "B" : "A"}${sealed.sealed.slice(1)}`;
    for (const attempt of [
      () => wrongKey.open(sealed.sealed, 1, "ad"),
      () => Sealer.fromConfig(KEY_1, 1, "").open(tampered, 1, "ad"),
      () => Sealer.fromConfig(KEY_1, 1, "").open("not-a-sealed-value", 1, "ad"),
    ]) {
      const error = catchError(attempt);
      expect(error).toBeInstanceOf(SealedValueError);
      expect(error.message).toMatch(
        /^sealed with key version 1, which the key configured for that version does not open/,
      );
      expect(error.message).not.toMatch(/unable to authenticate|Unsupported state/);
    }
    // An old key configured wrongly names the old keys' variable.
    const rotated = Sealer.fromConfig(KEY_1, 2, `1:${KEY_2}`);
    expect(catchError(() => rotated.open(sealed.sealed, 1, "ad")).message).toContain(
      "SECRETS_ENCRYPTION_OLD_KEYS",
    );
  });

  it("opens a value stored without its version with whichever configured key authenticates it", () => {
    const old = Sealer.fromConfig(KEY_1, 1, "").seal("legacy", "ad");
    expect(Sealer.fromConfig(KEY_2, 2, `1:${KEY_1}`).openUnversioned(old.sealed, "ad")).toBe("legacy");
    expect(Sealer.fromConfig(KEY_1, 1, "").openUnversioned(old.sealed, "ad")).toBe("legacy");
    const error = catchError(() => Sealer.fromConfig(KEY_2, 2, "").openUnversioned(old.sealed, "ad"));
    expect(error).toBeInstanceOf(SealedValueError);
    expect(error).toMatchObject({ keyVersion: null });
    expect(error.message).toContain("opens with none of the configured keys (versions 2)");
  });

  it("refuses old keys that are not version:key pairs, repeat the current version or name a version twice", () => {
    for (const [oldKeys, message] of [
      [`x:${KEY_1}`, /must be version:key pairs/],
      [`0:${KEY_1}`, /must be version:key pairs/],
      ["1:", /must be version:key pairs/],
      [KEY_1, /must be version:key pairs/],
      [`2:${KEY_1}`, /repeats the current key version 2/],
      [`1:${KEY_1}, 1:${KEY_2}`, /names key version 1 twice/],
      ["1:abcd", /SECRETS_ENCRYPTION_OLD_KEYS must be 32 bytes/],
    ] as const) {
      expect(() => Sealer.fromConfig(KEY_2, 2, oldKeys), oldKeys).toThrow(message);
    }
    expect(Sealer.fromConfig(KEY_2, 3, ` 1:${KEY_1} , 2:${KEY_2} `).currentVersion).toBe(3);
  });

  it("names the variables it was configured from", () => {
    const names = CP_SECRETS_KEY_NAMES;
    expect(() => Sealer.fromConfig("abcd", 1, "", names)).toThrow(
      /^CP_SECRETS_ENCRYPTION_KEY must be 32 bytes/,
    );
    const old = Sealer.fromConfig(KEY_1, 1, "").seal("v1", "ad");
    const error = catchError(() => Sealer.fromConfig(KEY_2, 2, "", names).open(old.sealed, 1, "ad"));
    expect(error.message).toContain("add that key to CP_SECRETS_ENCRYPTION_OLD_KEYS");
  });
});

function catchError(fn: () => unknown): Error & Record<string, unknown> {
  try {
    fn();
  } catch (error) {
    return error as Error & Record<string, unknown>;
  }
  throw new Error("expected an error");
}

describe("values sealed before sealing moved to this package", () => {
  // Sealed by the tenant platform's former services/crypto.ts with KEY_1 as version 1: rows hold this format.
  it("still open, as text and as JSON", () => {
    const sealer = Sealer.fromConfig(KEY_2, 2, `1:${KEY_1}`);
    expect(sealer.open("Rei1JNm9EPNB4805.ObyXwAhnQkiFfy1soAnSBQ.KL1lZEeWDQ", 1, "ws_a:API_KEY")).toBe(
      "hunter2",
    );
    expect(
      sealer.openJson("8M-LYUgXPgS8vpMa.BrdHYFXJSePmdbTruEDCgw.VyBCN0m9VFPb", 1, "cp:org:org_1:tenant-env"),
    ).toEqual({ A: "b" });
    expect(sealer.openUnversioned("Rei1JNm9EPNB4805.ObyXwAhnQkiFfy1soAnSBQ.KL1lZEeWDQ", "ws_a:API_KEY")).toBe(
      "hunter2",
    );
  });

  it("seal JSON that opens back to the same value", () => {
    const sealer = Sealer.fromConfig(KEY_1, 1, "");
    const { sealed, keyVersion } = sealer.sealJson({ env: { A: "b" }, n: 1 }, "ad");
    expect(sealed.split(".")).toHaveLength(3);
    expect(sealer.openJson(sealed, keyVersion, "ad")).toEqual({ env: { A: "b" }, n: 1 });
  });
});
