/**
 * The shared conformance suite: every backend runs it unchanged (real Docker engine, the Fly emulator, EC2 on moto
 * behind the AWS fault and fidelity proxy, the control-plane backend over HTTP, the scripted fake). Call it at the
 * top level of a `*.test.ts` file.
 *
 *   describeProvisioner("docker", async () => ({ provisioner, makeSpec, cleanup }));
 */
import { createIdGenerator } from "@molecule/contracts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type {
  Handle,
  ManagedResource,
  Provisioner,
  RuntimeState,
  WorkspaceRef,
  WorkspaceSpec,
} from "./provisioner.ts";

/** Optional fault injection, for backends whose factory can make a provision fail part-way. */
export interface ConformanceFaults {
  /**
   * Arms a fault so the next `provision` call throws after it has created at least one resource of the workspace
   * (typically: the volume exists, the instance/container does not).
   */
  failNextProvisionPartway(): void | Promise<void>;
}

export interface ConformanceTarget {
  provisioner: Provisioner;
  /**
   * A valid spec for this backend. The suite always passes `workspaceId` and `orgId` (fresh per test); the target
   * fills in deployment, runtime, tier, env and anything else the backend needs.
   */
  makeSpec(overrides?: Partial<WorkspaceSpec>): WorkspaceSpec;
  faults?: ConformanceFaults;
  /** How long a workspace may take to reach `running` after provision/start (default 30 s). */
  runningTimeoutMs?: number;
  /** Removes whatever the target made (test images, emulator servers, stray resources). */
  cleanup?(): Promise<void>;
}

/** Handle fields that name resources: they must be identical when a provision adopts what exists. */
function idFields(handle: Handle): Record<string, unknown> {
  return Object.fromEntries(Object.entries(handle).filter(([key]) => /(id|ids|name|names)$/i.test(key)));
}

function byKind(resources: ManagedResource[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const resource of resources) {
    const list = out[resource.kind] ?? [];
    list.push(resource.id);
    out[resource.kind] = list.sort();
  }
  return out;
}

export interface ConformanceOptions {
  /** Per-test timeout (default 120 s). */
  testTimeoutMs?: number;
}

export function describeProvisioner(
  name: string,
  factory: () => Promise<ConformanceTarget>,
  options: ConformanceOptions = {},
): void {
  describe(`provisioner conformance: ${name}`, () => {
    const ids = createIdGenerator();
    const orgId = ids.next("org");
    let target: ConformanceTarget;
    let p: Provisioner;
    const made: WorkspaceRef[] = [];
    const handles = new Map<string, Handle>();

    beforeAll(async () => {
      target = await factory();
      p = target.provisioner;
    });

    afterAll(async () => {
      if (!target) return;
      const failures: unknown[] = [];
      for (const ref of made) {
        try {
          await p.destroy({ ...ref, handle: handles.get(ref.workspaceId) ?? null });
        } catch (error) {
          failures.push(error);
        }
      }
      await target.cleanup?.();
      if (failures.length > 0) throw failures[0];
    });

    const timeout = () => options.testTimeoutMs ?? 120_000;

    function newSpec(): WorkspaceSpec {
      const spec = target.makeSpec({ workspaceId: ids.next("ws"), orgId });
      expect(spec.workspaceId).toMatch(/^ws_/);
      made.push({ workspaceId: spec.workspaceId, orgId: spec.orgId, handle: null });
      return spec;
    }

    function ref(
      spec: WorkspaceSpec,
      handle: Handle | null = handles.get(spec.workspaceId) ?? null,
    ): WorkspaceRef {
      return { workspaceId: spec.workspaceId, orgId: spec.orgId, handle };
    }

    async function provision(spec: WorkspaceSpec, handle: Handle | null = null): Promise<Handle> {
      const result = await p.provision(spec, handle);
      handles.set(spec.workspaceId, result);
      return result;
    }

    async function owned(workspaceId: string): Promise<ManagedResource[]> {
      return (await p.listManaged()).filter((resource) => resource.workspaceId === workspaceId);
    }

    /** Polls status until it is `want`, allowing `starting` on the way; fails with the last status seen. */
    async function waitFor(spec: WorkspaceSpec, want: RuntimeState): Promise<void> {
      const deadline = Date.now() + (target.runningTimeoutMs ?? 30_000);
      let last = await p.status(ref(spec));
      while (last.state !== want && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        last = await p.status(ref(spec));
      }
      expect(last, `status of ${spec.workspaceId}`).toMatchObject({ state: want });
    }

    /** Exactly one resource of each kind, all labelled with the workspace and org. */
    async function expectOneSet(spec: WorkspaceSpec): Promise<Record<string, string[]>> {
      const resources = await owned(spec.workspaceId);
      expect(resources.length).toBeGreaterThan(0);
      for (const resource of resources) expect(resource.orgId).toBe(spec.orgId);
      const kinds = byKind(resources);
      for (const [kind, list] of Object.entries(kinds))
        expect(list, `resources of kind ${kind}`).toHaveLength(1);
      return kinds;
    }

    it("reports an unknown workspace as missing", { timeout: 30_000 }, async () => {
      const status = await p.status({ workspaceId: ids.next("ws"), orgId, handle: null });
      expect(status.state).toBe("missing");
    });

    it(
      "provisions a workspace that reaches running, reporting steps",
      async () => {
        const spec = newSpec();
        const steps: string[] = [];
        const handle = await p.provision(spec, null, { step: (step) => steps.push(step) });
        handles.set(spec.workspaceId, handle);
        expect(handle.backend).toBe(p.name);
        expect(Object.keys(idFields(handle)).length).toBeGreaterThan(0);
        expect(steps.length).toBeGreaterThan(0);
        await waitFor(spec, "running");
        await expectOneSet(spec);
      },
      timeout(),
    );

    it(
      "adopts on a second sequential provision of the same spec",
      async () => {
        const spec = newSpec();
        const first = await provision(spec);
        const before = await expectOneSet(spec);
        const again = await provision(spec, first);
        expect(idFields(again)).toEqual(idFields(first));
        const fromNull = await provision(spec, null);
        expect(idFields(fromNull)).toEqual(idFields(first));
        expect(await expectOneSet(spec)).toEqual(before);
        await waitFor(spec, "running");
      },
      timeout(),
    );

    it(
      "makes exactly one resource set when the same spec is provisioned concurrently",
      async () => {
        const spec = newSpec();
        const [a, b, c] = await Promise.all([provision(spec), provision(spec), provision(spec)]);
        if (!a || !b || !c) throw new Error("provision returned no handle");
        expect(idFields(b)).toEqual(idFields(a));
        expect(idFields(c)).toEqual(idFields(a));
        await expectOneSet(spec);
        await waitFor(spec, "running");
      },
      timeout(),
    );

    it(
      "stops, stays stopped on a second stop, and starts again with the same resources",
      async () => {
        const spec = newSpec();
        const handle = await provision(spec);
        await waitFor(spec, "running");
        const before = await expectOneSet(spec);
        await p.stop(ref(spec));
        await waitFor(spec, "stopped");
        await p.stop(ref(spec));
        await waitFor(spec, "stopped");
        const started = await p.start(spec, handle);
        handles.set(spec.workspaceId, started);
        expect(idFields(started)).toEqual(idFields(handle));
        await waitFor(spec, "running");
        expect(await expectOneSet(spec)).toEqual(before);
        // starting a running workspace is a no-op
        await p.start(spec, started);
        await waitFor(spec, "running");
      },
      timeout(),
    );

    it(
      "suspends where it can, otherwise stops and says why; start resumes",
      async () => {
        const spec = newSpec();
        const handle = await provision(spec);
        await waitFor(spec, "running");
        const result = await p.suspend(ref(spec));
        if (p.capabilities().suspend) {
          expect(result.suspended).toBe(true);
          await waitFor(spec, "suspended");
        } else {
          expect(result.suspended).toBe(false);
          expect(result.reason ?? "").not.toBe("");
          await waitFor(spec, "stopped");
        }
        const started = await p.start(spec, handle);
        handles.set(spec.workspaceId, started);
        await waitFor(spec, "running");
        await expectOneSet(spec);
      },
      timeout(),
    );

    it(
      "destroys everything, and a second destroy succeeds",
      async () => {
        const spec = newSpec();
        await provision(spec);
        await waitFor(spec, "running");
        await p.destroy(ref(spec));
        expect((await p.status(ref(spec))).state).toBe("missing");
        expect(await owned(spec.workspaceId)).toEqual([]);
        await p.destroy(ref(spec));
        await p.destroy(ref(spec, null));
        expect((await p.status(ref(spec, null))).state).toBe("missing");
        expect(await owned(spec.workspaceId)).toEqual([]);
      },
      timeout(),
    );

    it(
      "destroys a stopped workspace",
      async () => {
        const spec = newSpec();
        await provision(spec);
        await p.stop(ref(spec));
        await waitFor(spec, "stopped");
        await p.destroy(ref(spec));
        expect((await p.status(ref(spec))).state).toBe("missing");
        expect(await owned(spec.workspaceId)).toEqual([]);
      },
      timeout(),
    );

    it(
      "destroys with a null handle when resources exist (provision whose handle was never stored)",
      async () => {
        const spec = newSpec();
        await p.provision(spec, null);
        expect((await owned(spec.workspaceId)).length).toBeGreaterThan(0);
        await p.destroy(ref(spec, null));
        expect((await p.status(ref(spec, null))).state).toBe("missing");
        expect(await owned(spec.workspaceId)).toEqual([]);
      },
      timeout(),
    );

    it("destroys a workspace that was never provisioned", { timeout: 30_000 }, async () => {
      const workspaceId = ids.next("ws");
      await p.destroy({ workspaceId, orgId, handle: null });
      expect((await p.status({ workspaceId, orgId, handle: null })).state).toBe("missing");
    });

    it(
      "reuses what a partly failed provision made",
      async (ctx) => {
        if (!target.faults) {
          ctx.skip();
          return;
        }
        const spec = newSpec();
        await target.faults.failNextProvisionPartway();
        await expect(p.provision(spec, null)).rejects.toThrow();
        const partial = await owned(spec.workspaceId);
        expect(partial.length, "the failed provision should have created something").toBeGreaterThan(0);
        await provision(spec, null);
        await waitFor(spec, "running");
        const after = await owned(spec.workspaceId);
        for (const resource of partial) {
          expect(after.map((r) => `${r.kind}:${r.id}`)).toContain(`${resource.kind}:${resource.id}`);
        }
        await expectOneSet(spec);
      },
      timeout(),
    );
  });
}
