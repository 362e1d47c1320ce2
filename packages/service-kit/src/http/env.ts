import type { Logger } from "pino";

/** What the request middleware puts on every request's context; each service's env extends it. */
export interface RequestVariables {
  requestId: string;
  logger: Logger;
}

export interface ServiceEnv {
  Variables: RequestVariables;
}
