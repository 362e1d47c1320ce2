// Service errors on every call, and the proxy's fidelity; connection faults are in ec2.faults-connection.test.ts.
import { describeFaultMatrix, describeFidelity, SERVICE_FAULTS, useFaultHarness } from "./faults-suite.ts";

useFaultHarness();
describeFaultMatrix(SERVICE_FAULTS);
describeFidelity();
