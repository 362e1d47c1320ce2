import { describe, expect, it } from "vitest";
import { echoPieces, echoReply } from "./echo.ts";

const message = (text: string) => ({
  role: "user" as const,
  messageId: "m",
  parts: [{ kind: "text" as const, text }],
});

describe("echo", () => {
  it("cuts the text after whitespace into at most three pieces that join back to it", () => {
    expect(echoPieces("")).toEqual([]);
    expect(echoPieces("hi")).toEqual(["hi"]);
    expect(echoPieces("hello there")).toEqual(["hello ", "there"]);
    expect(echoPieces("one two three four five")).toEqual(["one two ", "three four ", "five"]);
    const text = "a  b\nc d e f g";
    expect(echoPieces(text).join("")).toBe(text);
    expect(echoPieces(text).length).toBe(3);
  });

  it("answers the prefix, then the pieces", async () => {
    const pieces: string[] = [];
    for await (const piece of echoReply(message("hello there friend"))) pieces.push(piece);
    expect(pieces).toEqual(["echo: ", "hello ", "there ", "friend"]);
  });
});
