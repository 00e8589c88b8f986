// The REST API, called with the API key kept in this browser. The key lives in sessionStorage
// (this tab only) unless the user chose to stay signed in (localStorage). It is sent in the
// X-Api-Key header only, never in a URL, and never written into the page.

const STORAGE_KEY = "papayya.session";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function session() {
  for (const store of [sessionStorage, localStorage]) {
    const raw = store.getItem(STORAGE_KEY);
    if (!raw) continue;
    try {
      const parsed = JSON.parse(raw);
      if (parsed && typeof parsed.key === "string") return parsed;
    } catch {
      store.removeItem(STORAGE_KEY);
    }
  }
  return null;
}

export function saveSession(value, remember) {
  forgetSession();
  (remember ? localStorage : sessionStorage).setItem(STORAGE_KEY, JSON.stringify(value));
}

export function forgetSession() {
  sessionStorage.removeItem(STORAGE_KEY);
  localStorage.removeItem(STORAGE_KEY);
}

let onUnauthorized = () => {};
/** What to do when the key stops working (revoked): the app signs out. */
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

function headers(extra, key, auth = true) {
  const found = auth ? key || session()?.key : null;
  return { ...(found ? { "X-Api-Key": found } : {}), ...extra };
}

async function failure(response) {
  let code = "http_" + response.status;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

/** Call the API: JSON in, JSON out; an ApiError for any answer that is not 2xx. */
export async function api(path, options = {}) {
  const response = await send(path, options);
  if (response.status === 204) return null;
  return response.json();
}

/**
 * One page of a list endpoint: {data, next_cursor}. A list answers a bare array; the next
 * page's cursor comes in the X-Next-Cursor header (absent on the last page).
 */
export async function page(path, options = {}) {
  const response = await send(path, options);
  return { data: await response.json(), next_cursor: response.headers.get("X-Next-Cursor") };
}

async function send(path, { method = "GET", body, signal, key, params, auth = true } = {}) {
  let url = path;
  if (params) {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) {
      if (value !== null && value !== undefined && value !== "") query.set(name, value);
    }
    const text = query.toString();
    if (text) url += (url.includes("?") ? "&" : "?") + text;
  }
  const type = body === undefined ? {} : { "Content-Type": "application/json" };
  const init = { method, signal, headers: headers(type, key, auth) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(url, init);
  if (!response.ok) {
    const error = await failure(response);
    if (response.status === 401 && auth && !key) onUnauthorized(error);
    throw error;
  }
  return response;
}

/** Every page of a list endpoint, up to `max` items. */
export async function all(path, { signal, params = {}, max = 1000 } = {}) {
  const items = [];
  let cursor = null;
  do {
    const found = await page(path, { signal, params: { ...params, limit: 200, cursor } });
    items.push(...found.data);
    cursor = found.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

/**
 * Server-sent events read with fetch, so the key goes in a header (EventSource cannot send
 * one). Yields {event, id, data} until the server ends the stream.
 */
export async function* events(path, { signal, lastEventId } = {}) {
  const extra = { Accept: "text/event-stream" };
  if (lastEventId !== null && lastEventId !== undefined) extra["Last-Event-ID"] = String(lastEventId);
  const response = await fetch(path, { headers: headers(extra), signal, cache: "no-store" });
  if (!response.ok) {
    const error = await failure(response);
    if (response.status === 401) onUnauthorized(error);
    throw error;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let message = { event: "message", id: null, data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line === "") {
          if (message.data.length) yield { event: message.event, id: message.id, data: message.data.join("\n") };
          message = { event: "message", id: null, data: [] };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (name === "event") message.event = text;
          else if (name === "id") message.id = text;
          else if (name === "data") message.data.push(text);
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * Follow a stream, reconnecting with Last-Event-ID after the connection drops, until
 * `stop(message)` says so or the signal aborts. `onState` hears "live" / "reconnecting".
 */
export async function follow(path, onMessage, { signal, stop = () => false, onState = () => {}, lastEventId = null } = {}) {
  let last = lastEventId;
  let delay = 500;
  while (!signal?.aborted) {
    try {
      onState("live");
      for await (const message of events(path, { signal, lastEventId: last })) {
        if (message.id !== null) last = message.id;
        delay = 500;
        onMessage(message);
        if (stop(message)) return;
      }
    } catch (error) {
      if (signal?.aborted) return;
      if (error instanceof ApiError && error.status !== 429 && error.status < 500) throw error;
    }
    if (signal?.aborted) return;
    onState("reconnecting");
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 10000);
  }
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

// Agents by id, shared by the pages that show an agent's name for its id.
let agentCache = null;
export async function agents(signal, { fresh = false } = {}) {
  if (fresh || !agentCache || Date.now() - agentCache.at > 15000) {
    const list = await all("/v1/agents", { signal });
    agentCache = { at: Date.now(), list, byId: new Map(list.map((a) => [a.id, a])) };
  }
  return agentCache;
}
export function forgetAgents() {
  agentCache = null;
}
