/** The echo agent's card and reply, shared by the workspace image's entry and the `molecule-agent` CLI. */
import { type A2AMessage, type AgentReply, messageText } from "./a2a-server.ts";
import type { AgentCard } from "./client.ts";

export const ECHO_CARD: AgentCard = {
  name: "echo",
  description: "Reference workspace agent: answers every message with `echo: <text>`.",
  version: "0.1.0",
  skills: [{ id: "echo", name: "Echo", description: "Repeats the text it is sent.", tags: ["echo"] }],
};

export async function echoReply(message: A2AMessage): Promise<AgentReply> {
  return { parts: [{ kind: "text", text: `echo: ${messageText(message)}` }] };
}
