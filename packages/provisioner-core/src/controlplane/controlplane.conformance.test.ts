import { expect } from "vitest";
import { describeProvisioner } from "../conformance.ts";
import { startControlPlaneHarness } from "./testkit.ts";

// Against the in-test control-plane emulator; apps/control-plane runs the same suite against the real service.
describeProvisioner("controlplane against the control-plane emulator", async () => {
  const h = await startControlPlaneHarness();
  return {
    provisioner: h.provisioner,
    makeSpec: h.makeSpec,
    runningTimeoutMs: 5_000,
    faults: {
      failNextProvisionPartway: () =>
        h.emulator.failNextOperation("provision", {
          code: "backend_unavailable",
          message: "emulated crash after the volume was made",
          retryable: true,
          partway: true,
        }),
    },
    async cleanup() {
      const unauthorized = h.emulator.requests.filter((r) => !r.authorized);
      await h.close();
      expect(unauthorized).toEqual([]);
    },
  };
});
