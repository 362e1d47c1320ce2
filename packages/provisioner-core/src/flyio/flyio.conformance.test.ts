import { expect } from "vitest";
import { describeProvisioner } from "../conformance.ts";
import { startFlyHarness } from "./testkit.ts";

describeProvisioner("flyio against the Fly emulator", async () => {
  const h = await startFlyHarness();
  return {
    provisioner: h.provisioner,
    makeSpec: h.makeSpec,
    runningTimeoutMs: 5_000,
    faults: {
      failNextProvisionPartway: () =>
        h.emulator.inject({
          operation: "Machines_create",
          kind: "status",
          status: 400,
          error: "invalid config: emulated rejection",
        }),
    },
    async cleanup() {
      await h.close();
      expect(h.emulator.violations).toEqual([]);
    },
  };
});
