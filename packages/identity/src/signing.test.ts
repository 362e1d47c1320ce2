import { NONCE_GRACE_MS, SIGNATURE_WINDOW_SECONDS } from "@molecule/contracts";
import { describe, expect, it } from "vitest";
import {
  canonicalRequest,
  deriveTenantSigningKey,
  mintNonce,
  nonceKeptUntilMs,
  signatureMatches,
  signRequest,
  withinSignatureWindow,
} from "./signing.ts";

const request = {
  method: "post",
  path: "/cp/workspaces/provision?x=1",
  timestamp: "1700000000",
  nonce: "n1",
  body: '{"a":1}',
};

describe("request signing", () => {
  it("signs exactly as tenants already running sign (v1, HMAC-SHA256 of the canonical request)", () => {
    const key = deriveTenantSigningKey("shared-secret", "org_1");
    expect(key).toBe("7217617324ebffd99a0849fab90861601e82bdca17a70b382af1e735223b32df");
    expect(signRequest(key, request)).toBe(
      "v1=6301ff09cf5d0659c1d514a261d3c66908d4bf2ca6700c1ea7ff3d13cd35d21c",
    );
    expect(canonicalRequest(request).split("\n")).toEqual([
      "POST",
      "/cp/workspaces/provision?x=1",
      "1700000000",
      "n1",
      "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862",
    ]);
  });

  it("matches only the same key, request and body bytes", () => {
    const key = deriveTenantSigningKey("shared-secret", "org_1");
    const signature = signRequest(key, request);
    expect(signatureMatches(key, signature, request)).toBe(true);
    expect(signatureMatches(key, signature, { ...request, body: Buffer.from(request.body) })).toBe(true);
    expect(signatureMatches(deriveTenantSigningKey("shared-secret", "org_2"), signature, request)).toBe(
      false,
    );
    expect(signatureMatches(key, signature, { ...request, path: "/cp/workspaces" })).toBe(false);
    expect(signatureMatches(key, signature, { ...request, body: '{"a":2}' })).toBe(false);
    expect(signatureMatches(key, "", request)).toBe(false);
    expect(signatureMatches(key, `${signature}0`, request)).toBe(false);
  });

  it("accepts a timestamp within the window, both edges inside, and keeps its nonce past the window", () => {
    const at = 1_700_000_000;
    expect(withinSignatureWindow(at, at * 1000 + SIGNATURE_WINDOW_SECONDS * 1000)).toBe(true);
    expect(withinSignatureWindow(at, at * 1000 - SIGNATURE_WINDOW_SECONDS * 1000)).toBe(true);
    expect(withinSignatureWindow(at, at * 1000 + SIGNATURE_WINDOW_SECONDS * 1000 + 1)).toBe(false);
    expect(nonceKeptUntilMs(at)).toBe((at + SIGNATURE_WINDOW_SECONDS) * 1000 + NONCE_GRACE_MS);
  });

  it("mints distinct nonces", () => {
    expect(mintNonce()).toMatch(/^[0-9a-f]{32}$/);
    expect(mintNonce()).not.toBe(mintNonce());
  });
});
