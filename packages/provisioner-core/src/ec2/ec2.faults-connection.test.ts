// Dropped, slow and held connections on every call, and the failures that must not be retried away.
import {
  CONNECTION_FAULTS,
  describeAbandonedCalls,
  describeFaultMatrix,
  describeUnretryableFailures,
  useFaultHarness,
} from "./faults-suite.ts";

useFaultHarness();
describeFaultMatrix(CONNECTION_FAULTS);
describeUnretryableFailures();
describeAbandonedCalls();
