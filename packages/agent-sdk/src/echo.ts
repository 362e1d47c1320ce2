/** The echo agent's card and reply, shared by the workspace image's entry and the `molecule-agent` CLI. */
import { asTask, type TaskReply } from "./a2a-handler.ts";
import { type A2AMessage, messageText } from "./a2a-protocol.ts";
import type { AgentCard } from "./client.ts";

export const ECHO_CARD: AgentCard = {
  name: "echo",
  description: "Reference workspace agent: answers every message with `echo: <text>`.",
  version: "0.1.0",
  skills: [{ id: "echo", name: "Echo", description: "Repeats the text it is sent.", tags: ["echo"] }],
};

/**
 * The echo agent's handler: every message runs as a task (so `message/send` answers a Task that `tasks/get` can
 * fetch later), replying `echo: <text>` in pieces.
 */
export function echoTask(message: A2AMessage): TaskReply {
  return asTask(echoReply(message));
}

/** `echo: <text>`, in pieces as a model's answer would come: the prefix, then the text in up to three parts. */
export async function* echoReply(message: A2AMessage): AsyncGenerator<string> {
  yield "echo: ";
  yield* echoPieces(messageText(message));
}

/** The text cut after whitespace into at most three pieces of about as many words each; "" gives none. */
export function echoPieces(text: string): string[] {
  const words = text.split(/(?<=\s)/).filter((word) => word !== "");
  const size = Math.ceil(words.length / 3);
  const pieces: string[] = [];
  for (let i = 0; i < words.length; i += size) pieces.push(words.slice(i, i + size).join(""));
  return pieces;
}
