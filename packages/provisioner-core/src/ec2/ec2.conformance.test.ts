import { describeProvisioner } from "../conformance.ts";
import { startEc2Harness } from "./testkit.ts";

describeProvisioner("ec2 against moto behind the AWS fidelity proxy", async () => {
  const h = await startEc2Harness();
  return {
    provisioner: h.provisioner,
    makeSpec: h.makeSpec,
    runningTimeoutMs: 5_000,
    faults: {
      // The group and the bundle secret exist; the instance is refused.
      failNextProvisionPartway: () =>
        h.emulator.inject({
          action: "RunInstances",
          kind: "error",
          status: 400,
          code: "InvalidParameterValue",
        }),
    },
    cleanup: () => h.close(),
  };
});
