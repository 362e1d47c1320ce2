/**
 * Reads a `text/event-stream` body (an A2A `message/stream` answer) as the JSON values of its events, each as soon
 * as it has arrived. Comment lines and fields other than `data` are skipped; a multi-line `data` is joined with
 * newlines, as the server-sent events format says.
 */
export async function* readEventStream(body: ReadableStream<Uint8Array>): AsyncGenerator<unknown> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const blank = /\r?\n\r?\n/.exec(buffer);
      if (blank) {
        const block = buffer.slice(0, blank.index);
        buffer = buffer.slice(blank.index + blank[0].length);
        const data = dataOf(block);
        if (data !== null) yield JSON.parse(data);
        continue;
      }
      const chunk = await reader.read();
      if (chunk.done) {
        const data = dataOf(buffer + decoder.decode());
        if (data !== null) yield JSON.parse(data);
        return;
      }
      buffer += decoder.decode(chunk.value, { stream: true });
    }
  } finally {
    // Leaving early (break, an error) cancels the body, which closes the connection.
    await reader.cancel().catch(() => {});
  }
}

function dataOf(block: string): string | null {
  const lines = block
    .split(/\r?\n/)
    .filter((line) => line === "data" || line.startsWith("data:"))
    .map((line) => line.slice(5).replace(/^ /, ""));
  return lines.length === 0 ? null : lines.join("\n");
}
