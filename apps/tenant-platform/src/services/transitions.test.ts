import {
  ALLOWED_TRANSITIONS,
  canTransition,
  OPERATION_ENTRY_STATUS,
  sourcesOf,
  WORKSPACE_STATUSES,
} from "@molecule/contracts";
import { describe, expect, it } from "vitest";
import { LIFECYCLE_SOURCES } from "./workspaces.ts";

describe("the status transition table", () => {
  it("is what canTransition and sourcesOf (the guarded updates' source lists) answer from, for every pair", () => {
    for (const from of WORKSPACE_STATUSES) {
      for (const to of WORKSPACE_STATUSES) {
        const allowed = ALLOWED_TRANSITIONS[from].includes(to);
        expect(canTransition(from, to), `${from} -> ${to}`).toBe(allowed);
        expect(sourcesOf(to).includes(from), `${from} -> ${to}`).toBe(allowed);
      }
    }
  });

  it("allows every move a lifecycle request makes when it is accepted", () => {
    for (const [kind, sources] of Object.entries(LIFECYCLE_SOURCES)) {
      const entry = OPERATION_ENTRY_STATUS[kind as keyof typeof LIFECYCLE_SOURCES];
      for (const from of sources)
        expect(from === entry || canTransition(from, entry), `${kind} from ${from}`).toBe(true);
    }
    expect(LIFECYCLE_SOURCES.destroy).toEqual(sourcesOf("removing"));
  });
});
