import {
  type HandlerAnswer,
  type HandlerResult,
  isAgentReply,
  isTaskReply,
  type MessageContext,
} from "./a2a-handler.ts";
import type { A2AMessage } from "./a2a-protocol.ts";
import type { HeartbeatBody } from "./client.ts";

/**
 * The agent's own work, for its heartbeats' `active`: a message being answered — however long its reply streams, or
 * its task runs after the caller left — makes the agent active until the first heartbeat after the answer ends. A
 * platform that suspends idle workspaces sees the messages through its proxy, not the work that outlives them.
 */
export class WorkTracker {
  #running = 0;
  #sinceBeat = false;

  /** `handler`, counted from its call until its reply (a streamed one, a task's) has ended or was abandoned. */
  wrap<C extends MessageContext>(
    handler: (message: A2AMessage, context: C) => HandlerAnswer | Promise<HandlerAnswer>,
  ): (message: A2AMessage, context: C) => Promise<HandlerAnswer> {
    return async (message, context) => {
      const end = this.#begin(context.signal);
      let answer: HandlerAnswer;
      try {
        answer = await handler(message, context);
      } catch (error) {
        end();
        throw error;
      }
      if (isTaskReply(answer)) return { ...answer, reply: followed(answer.reply, end) };
      return followed(answer, end);
    };
  }

  /** What a heartbeat reports: `health`'s body, with `active: true` when the agent worked since the last one. */
  report(body: HeartbeatBody): HeartbeatBody {
    const active = this.#running > 0 || this.#sinceBeat;
    this.#sinceBeat = false;
    return active && body.active === undefined ? { ...body, active: true } : body;
  }

  #begin(signal: AbortSignal): () => void {
    this.#running += 1;
    this.#sinceBeat = true;
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      this.#running -= 1;
      this.#sinceBeat = true;
      signal.removeEventListener("abort", end);
    };
    // A reply never read (its caller left first) ends with the exchange's signal.
    signal.addEventListener("abort", end, { once: true });
    return end;
  }
}

function followed(result: HandlerResult, end: () => void): HandlerResult {
  if (isAgentReply(result)) {
    end();
    return result;
  }
  return (async function* () {
    try {
      yield* result;
    } finally {
      end();
    }
  })();
}
