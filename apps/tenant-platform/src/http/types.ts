import type { Logger } from "pino";

export type Caller = { kind: "admin" } | { kind: "workspace"; workspaceId: string };

export interface AppEnv {
  Variables: {
    requestId: string;
    logger: Logger;
    caller: Caller | null;
  };
}
