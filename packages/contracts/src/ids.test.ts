import { describe, expect, it } from "vitest";
import { HOSTILE_WORKSPACE_IDS as HOSTILE_IDS } from "../../../test-support/hostile-ids.ts";
import { CpWorkspaceSpec } from "./controlplane.ts";
import { createIdGenerator, ID_PREFIXES, isId, OperationId, OrgId, WorkspaceId } from "./ids.ts";
import { HeartbeatBody, RegisterBody } from "./registry.ts";

const ids = createIdGenerator();

describe("ids", () => {
  it("every minted id matches its own schema and no other prefix's", () => {
    for (const prefix of ID_PREFIXES) {
      const id = ids.next(prefix);
      for (const other of ID_PREFIXES) expect(isId(other, id), `${other} ${id}`).toBe(other === prefix);
    }
    expect(WorkspaceId.parse(ids.next("ws"))).toMatch(/^ws_/);
    expect(OperationId.safeParse(ids.next("op")).success).toBe(true);
    expect(OrgId.safeParse(ids.next("org")).success).toBe(true);
  });

  it("refuses hostile strings, with a message that does not repeat them", () => {
    for (const value of [...HOSTILE_IDS, 12, null, undefined, {}]) {
      const parsed = WorkspaceId.safeParse(value);
      expect(parsed.success, JSON.stringify(value)).toBe(false);
      expect(isId("ws", value)).toBe(false);
      if (typeof value === "string" && value.length > 3) {
        expect(parsed.error?.issues[0]?.message).not.toContain(value);
      }
    }
  });

  it("every id a client sends in a body is checked: CpWorkspaceSpec, RegisterBody, HeartbeatBody", () => {
    const good = ids.next("ws");
    const spec = { workspace_id: good, runtime: "echo", tier: 2, env: {}, secret_keys: [] };
    expect(CpWorkspaceSpec.safeParse(spec).success).toBe(true);
    expect(RegisterBody.safeParse({ id: good }).success).toBe(true);
    expect(HeartbeatBody.safeParse({ workspace_id: good }).success).toBe(true);
    for (const bad of HOSTILE_IDS) {
      expect(CpWorkspaceSpec.safeParse({ ...spec, workspace_id: bad }).success, bad).toBe(false);
      expect(RegisterBody.safeParse({ id: bad }).success, bad).toBe(false);
      expect(HeartbeatBody.safeParse({ workspace_id: bad }).success, bad).toBe(false);
    }
  });
});
