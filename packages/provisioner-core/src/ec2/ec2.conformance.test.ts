import { describeProvisioner } from "../conformance.ts";
import { startEc2Harness } from "./testkit.ts";

describeProvisioner("ec2 against moto", async () => {
  const h = await startEc2Harness();
  return {
    provisioner: h.provisioner,
    makeSpec: h.makeSpec,
    runningTimeoutMs: 5_000,
    cleanup: () => h.close(),
  };
});
