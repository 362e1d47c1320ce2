import { describe, expect, it } from "vitest";
import type { z } from "zod";
import { A2ARequest } from "./a2a.ts";
import { BootEventBody, CpProvisionBody, CpStartBody, CreateOrgBody, DeleteOrgBody } from "./controlplane.ts";
import { AgentCard, HeartbeatBody, RegisterBody } from "./registry.ts";
import { isMultiLineText, isSingleLineText, isStorableJson, MAX_JSON_DEPTH } from "./text.ts";
import { CreateWorkspaceBody, Metadata, PutSecretBody } from "./workspaces.ts";

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Every variant of `value` with NUL put into one of its strings or object keys, named by where it went. */
function withNul(value: Json, path = "$"): [string, Json][] {
  if (typeof value === "string") return [[path, `${value.slice(0, 1)}\u0000${value.slice(1)}`]];
  if (Array.isArray(value)) {
    return value.flatMap((item, index) =>
      withNul(item, `${path}[${index}]`).map(([where, variant]): [string, Json] => {
        const copy = [...value];
        copy[index] = variant;
        return [where, copy];
      }),
    );
  }
  if (value === null || typeof value !== "object") return [];
  return Object.entries(value).flatMap(([key, item]) => {
    const renamed: [string, Json] = [
      `${path} key ${key}`,
      Object.fromEntries(Object.entries(value).map(([k, v]) => [k === key ? `${k}\u0000` : k, v])),
    ];
    const inner = withNul(item, `${path}.${key}`).map(([where, variant]): [string, Json] => [
      where,
      { ...value, [key]: variant },
    ]);
    return [renamed, ...inner];
  });
}

const spec = {
  workspace_id: "ws_01abcdefghjkmnpqrstvwxyz00",
  runtime: "echo",
  tier: 2,
  env: { PLATFORM_URL: "http://platform:8080" },
  secret_keys: ["API_KEY"],
  metadata: { team: "blue", nested: { list: ["a", { deep: "b" }] } },
};

/**
 * A valid body for every schema a client's input is stored from (ids, secret values and env values included: they
 * refuse NUL by their own rules). The only paths left out are a heartbeat's extra fields, accepted and ignored, never
 * stored. Every other string and key, at any depth, is refused with NUL in it, or dropped (an unknown key of a
 * stripping schema).
 */
const INPUTS: { name: string; schema: z.ZodType; sample: Json; notStored?: RegExp }[] = [
  {
    name: "CreateWorkspaceBody (managed)",
    schema: CreateWorkspaceBody,
    sample: { name: "n", runtime: "echo", tier: 2, secrets: { API_KEY: "v" }, metadata: { team: "blue" } },
  },
  {
    name: "CreateWorkspaceBody (external)",
    schema: CreateWorkspaceBody,
    sample: { name: "n", external: true, url: "https://agent.example.com/a2a" },
  },
  { name: "PutSecretBody", schema: PutSecretBody, sample: { value: "v" } },
  {
    name: "RegisterBody",
    schema: RegisterBody,
    sample: {
      id: "ws_01abcdefghjkmnpqrstvwxyz00",
      url: "https://agent.example.com",
      agent_card: {
        name: "agent",
        description: "says hello",
        version: "1.0",
        skills: [{ id: "s", tags: ["x"] }],
        provider: { organization: "o", url: "https://o.example" },
      },
    },
  },
  {
    name: "HeartbeatBody",
    schema: HeartbeatBody,
    sample: { workspace_id: "ws_01abcdefghjkmnpqrstvwxyz00", status: "degraded", detail: "disk full" },
    notStored: /^\$ key /,
  },
  { name: "CreateOrgBody", schema: CreateOrgBody, sample: { slug: "acme", name: "Acme" } },
  { name: "DeleteOrgBody", schema: DeleteOrgBody, sample: { confirm: "acme" } },
  { name: "BootEventBody", schema: BootEventBody, sample: { stage: "failed", detail: "migration failed" } },
  {
    name: "CpProvisionBody",
    schema: CpProvisionBody,
    sample: spec,
  },
  {
    name: "CpStartBody",
    schema: CpStartBody,
    sample: { spec, recreate: true },
  },
];

describe("NUL in stored input", () => {
  for (const input of INPUTS) {
    it(`${input.name}: the sample is valid, and NUL in any string or key of it is refused`, () => {
      expect(input.schema.safeParse(input.sample).error).toBeUndefined();
      const variants = withNul(input.sample).filter(([where]) => !input.notStored?.test(where));
      expect(variants.length).toBeGreaterThan(0);
      const accepted = variants
        .filter(([, variant]) => {
          const parsed = input.schema.safeParse(variant);
          return parsed.success && JSON.stringify(parsed.data).includes("\\u0000");
        })
        .map(([where]) => where);
      expect(accepted).toEqual([]);
    });
  }

  it("the A2A envelope is forwarded, not stored: its params stay the target's business", () => {
    const request = { jsonrpc: "2.0", id: 1, method: "message/send", params: { text: "a\u0000b" } };
    expect(A2ARequest.safeParse(request).success).toBe(true);
  });
});

describe("environment values (secrets, the control plane's env)", () => {
  it("carry whatever a process environment can (a PEM key, tabs, escape codes); NUL and lone surrogates are refused", () => {
    for (const fine of [
      "-----BEGIN KEY-----\nAAAA\n-----END KEY-----\n",
      "a\tb",
      "\u001b[31mred",
      "é 日本 🚀",
      "",
    ]) {
      expect(PutSecretBody.safeParse({ value: fine }).success).toBe(true);
      expect(CpProvisionBody.safeParse({ ...spec, env: { API_KEY: fine } }).success).toBe(true);
    }
    const refused = PutSecretBody.safeParse({ value: "MARKER-secret\u0000tail" });
    expect(refused.error?.issues).toEqual([
      expect.objectContaining({
        path: ["value"],
        message: "must not contain NUL (\\u0000) or unpaired surrogates",
      }),
    ]);
    for (const lone of ["\ud800", "tail\udfff", "\udfff\ud800"]) {
      expect(PutSecretBody.safeParse({ value: lone }).success, JSON.stringify(lone)).toBe(false);
      expect(CpProvisionBody.safeParse({ ...spec, env: { API_KEY: lone } }).success).toBe(false);
    }
    // The refusal names the field, never the value.
    expect(JSON.stringify(refused.error?.issues)).not.toContain("MARKER");
  });
});

describe("text rules", () => {
  it("single-line text refuses every C0 control character and DEL, and nothing printable", () => {
    for (let code = 0; code < 0x20; code++)
      expect(isSingleLineText(`a${String.fromCharCode(code)}b`)).toBe(false);
    expect(isSingleLineText("a\u007fb")).toBe(false);
    for (const fine of ["plain", "é ü ß", "日本語", "emoji 🚀", "tab-free", "", "a b"]) {
      expect(isSingleLineText(fine)).toBe(true);
    }
  });

  it("multi-line text allows tab and line breaks, and refuses the other control characters", () => {
    expect(isMultiLineText("line one\nline two\r\n\tindented")).toBe(true);
    for (const bad of ["\u0000", "\u0007", "\u001b[31m", "\u007f", "\u000b", "\u000c"]) {
      expect(isMultiLineText(`a${bad}b`)).toBe(false);
    }
  });

  it("an unpaired surrogate is refused by every rule (PostgreSQL refuses it in jsonb); a pair is fine", () => {
    for (const lone of ["\ud800", "x\udc00", "\ud83d", "a\ude80b"]) {
      expect(isSingleLineText(lone)).toBe(false);
      expect(isMultiLineText(lone)).toBe(false);
      expect(isStorableJson({ k: lone })).toBe(false);
      expect(isStorableJson({ [lone]: 1 })).toBe(false);
    }
    expect(isStorableJson({ "🚀": "🚀" })).toBe(true);
  });

  it("names, slugs' org names, URLs and metadata keys are one line", () => {
    expect(CreateWorkspaceBody.safeParse({ name: "a\nb", runtime: "echo" }).success).toBe(false);
    expect(CreateWorkspaceBody.safeParse({ name: "a\u001b[2Jb", runtime: "echo" }).success).toBe(false);
    expect(CreateOrgBody.safeParse({ slug: "acme", name: "Ac\rme" }).success).toBe(false);
    expect(
      CreateWorkspaceBody.safeParse({ name: "a", external: true, url: "https://agent.exa\tmple.com" })
        .success,
    ).toBe(false);
    expect(Metadata.safeParse({ "a\nb": "v" }).success).toBe(false);
  });

  it("details, descriptions and metadata values may span lines", () => {
    expect(BootEventBody.safeParse({ stage: "failed", detail: "step 1\nstep 2" }).success).toBe(true);
    expect(
      HeartbeatBody.safeParse({
        workspace_id: "ws_01abcdefghjkmnpqrstvwxyz00",
        status: "degraded",
        detail: "a\n\tb",
      }).success,
    ).toBe(true);
    expect(Metadata.safeParse({ notes: "one\ntwo" }).success).toBe(true);
    expect(AgentCard.safeParse({ description: "Does things.\nMany things." }).success).toBe(true);
  });

  it("an agent card keeps its own fields, control characters included, but never NUL at any depth", () => {
    const card = { name: "a", extensions: [{ uri: "x", params: { template: "{{x}}\u001b" } }] };
    expect(AgentCard.parse(card)).toEqual(card);
    const deep = { name: "a", x: [[[[{ y: { "k\u0000": 1 } }]]]] };
    expect(AgentCard.safeParse(deep).success).toBe(false);
  });

  it(`JSON nested deeper than ${MAX_JSON_DEPTH} levels is refused without walking all of it`, () => {
    let nested: Json = "leaf";
    for (let i = 0; i < 100_000; i++) nested = [nested];
    expect(isStorableJson(nested)).toBe(false);
    expect(AgentCard.safeParse({ name: "a", nested }).success).toBe(false);
    let shallow: Json = "leaf";
    for (let i = 0; i < MAX_JSON_DEPTH - 2; i++) shallow = [shallow];
    expect(AgentCard.safeParse({ name: "a", shallow }).success).toBe(true);
  });
});
