/** A server-sent-events client for tests: frames as they arrive, waiting for one, and the end of the stream. */

export interface SseFrame {
  id?: string;
  event?: string;
  // biome-ignore lint/suspicious/noExplicitAny: tests read event payloads field by field
  data?: any;
}

export interface SseStream {
  status: number;
  frames: SseFrame[];
  /** Waits until a frame matches (or fails after the timeout, with the frames so far); returns every frame so far. */
  until(match: (frame: SseFrame) => boolean, timeoutMs?: number): Promise<SseFrame[]>;
  /** Resolves with every frame once the server has ended the stream. */
  ended: Promise<SseFrame[]>;
  close(): void;
}

export interface SseOptions {
  /** Every piece of text the server sent, as it arrives (an error answer's body too): what a leak check reads. */
  onText?: (text: string) => void;
}

/** GET `url` as an event stream with a bearer `token`, resuming after `lastEventId` when given. */
export async function openSse(
  url: string,
  token: string | null,
  lastEventId?: string,
  options: SseOptions = {},
): Promise<SseStream> {
  const controller = new AbortController();
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (lastEventId !== undefined) headers["last-event-id"] = lastEventId;
  const response = await fetch(url, { headers, signal: controller.signal });
  const frames: SseFrame[] = [];
  const waiters = new Set<() => void>();
  let finished = false;
  let resolveEnded: (frames: SseFrame[]) => void = () => {};
  const ended = new Promise<SseFrame[]>((resolve) => {
    resolveEnded = resolve;
  });
  const serverEnded = (all: SseFrame[]) => {
    finished = true;
    resolveEnded(all);
  };
  if (response.ok && response.body) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    void (async () => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          options.onText?.(value);
          pending += value;
          let end = pending.indexOf("\n\n");
          while (end >= 0) {
            const frame: SseFrame = {};
            for (const line of pending.slice(0, end).split("\n")) {
              if (line.startsWith("id: ")) frame.id = line.slice(4);
              else if (line.startsWith("event: ")) frame.event = line.slice(7);
              else if (line.startsWith("data: ")) frame.data = JSON.parse(line.slice(6));
            }
            if (frame.event) frames.push(frame);
            pending = pending.slice(end + 2);
            end = pending.indexOf("\n\n");
          }
          for (const wake of waiters) wake();
        }
      } catch {
        // aborted by close()
      }
      serverEnded(frames);
      for (const wake of waiters) wake();
    })();
  } else {
    options.onText?.(await response.text());
    serverEnded(frames);
  }
  return {
    status: response.status,
    frames,
    ended,
    close: () => controller.abort(),
    until(match, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (frames.some(match)) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(frames);
          } else if (finished) {
            waiters.delete(check);
            clearTimeout(timer);
            reject(new Error(`the stream ended without the frame; frames: ${JSON.stringify(frames)}`));
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no matching frame within ${timeoutMs} ms; frames: ${JSON.stringify(frames)}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
  };
}
