/**
 * A `fetch` for the OpenAI client that reads the whole response body itself, up to a size cap.
 * The client's own time-out stops at the response headers; reading the body here puts it under
 * the same AbortSignal, so a server that sends headers and then one byte a second is cut at the
 * deadline like one that never answers. A body over the cap (declared by content-length, or
 * counted while reading) is refused without reading the rest.
 */

/** The server's answer is larger than the provider reads. */
export class ResponseTooLargeError extends Error {
  override readonly name = 'ResponseTooLargeError';
  constructor(
    readonly maxBytes: number,
    /** What the server declared (content-length), or the bytes read when it stopped. */
    readonly bytes: number,
    readonly declared: boolean
  ) {
    super(`the answer is larger than ${maxBytes} bytes (${declared ? `content-length ${bytes}` : `more than ${maxBytes} bytes read`})`);
  }
}

type Fetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/** `fetch` with the body read in full, refusing more than `maxBytes`. */
export function cappedFetch(maxBytes: number): Fetch {
  return async (input, init) => {
    const response = await fetch(input, init);
    const declared = Number(response.headers.get('content-length'));
    if (Number.isFinite(declared) && declared > maxBytes) {
      await response.body?.cancel().catch(() => undefined);
      throw new ResponseTooLargeError(maxBytes, declared, true);
    }
    if (!response.body) return response;
    const reader = response.body.getReader();
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) {
        await reader.cancel().catch(() => undefined);
        throw new ResponseTooLargeError(maxBytes, total, false);
      }
      chunks.push(value);
    }
    return new Response(Buffer.concat(chunks), { status: response.status, statusText: response.statusText, headers: response.headers });
  };
}
