/**
 * Server-sent events over fetch(): the admin token goes in the Authorization header (EventSource cannot send
 * headers, and a token never goes in a URL). Reconnects with Last-Event-ID after a drop, backing off; a `reset`
 * event (events were lost) asks the page to refetch state.
 */

const MAX_BACKOFF_MS = 10_000;

/** Splits a text/event-stream into messages ({event, data, id}) as chunks arrive. */
export function createSseParser(onMessage) {
  let buffer = "";
  let event = "";
  let data = [];
  let id;
  const line = (text) => {
    if (text === "") {
      if (data.length > 0 || id !== undefined)
        onMessage({ event: event || "message", data: data.join("\n"), id });
      event = "";
      data = [];
      id = undefined;
      return;
    }
    if (text.startsWith(":")) return;
    const colon = text.indexOf(":");
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id" && !value.includes("\0")) id = value;
  };
  return (chunk) => {
    buffer += chunk;
    for (;;) {
      const match = /\r\n|\n|\r(?!$)/.exec(buffer);
      if (!match) break;
      line(buffer.slice(0, match.index));
      buffer = buffer.slice(match.index + match[0].length);
    }
  };
}

/**
 * Opens `path` as an event stream and keeps it open until `close()`.
 * onEvent(event) for each platform event, onReset(info) after lost events, onState("live"|"reconnecting"|"closed").
 */
export function openEventStream({ path, token, lastEventId, onEvent, onReset, onState, onUnauthorized }) {
  let lastId = lastEventId;
  let closed = false;
  let controller;
  let attempt = 0;

  const dispatch = (message) => {
    if (message.id !== undefined && message.id !== "") lastId = message.id;
    let payload;
    try {
      payload = JSON.parse(message.data);
    } catch {
      return;
    }
    if (message.event === "reset") onReset?.(payload);
    else onEvent?.(payload);
  };

  const run = async () => {
    while (!closed) {
      controller = new AbortController();
      try {
        const headers = { authorization: `Bearer ${token}`, accept: "text/event-stream" };
        if (lastId !== undefined) headers["last-event-id"] = String(lastId);
        const response = await fetch(path, { headers, signal: controller.signal, cache: "no-store" });
        if (response.status === 401 || response.status === 403) {
          onState?.("closed");
          onUnauthorized?.();
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        attempt = 0;
        onState?.("live");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        const feed = createSseParser(dispatch);
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          feed(value);
        }
      } catch {
        // dropped: reconnect below
      }
      if (closed) break;
      onState?.("reconnecting");
      attempt += 1;
      const delay = Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.min(attempt, 6));
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
    onState?.("closed");
  };
  run();

  return {
    close() {
      closed = true;
      controller?.abort();
    },
    get lastEventId() {
      return lastId;
    },
  };
}
