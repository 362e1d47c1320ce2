import type { Logger } from "pino";

/** A workspace caller carries its token's hash, so a long request (an event stream) can check it is still current. */
export type Caller = { kind: "admin" } | { kind: "workspace"; workspaceId: string; tokenHash: string };

export interface AppEnv {
  Variables: {
    requestId: string;
    logger: Logger;
    caller: Caller | null;
  };
}
