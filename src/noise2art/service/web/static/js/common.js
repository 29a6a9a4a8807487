// Shared helpers of the web app: the API client, job watching, DOM building, status line.
// Every fetch is same-origin (the login cookie travels with it); a 401 sends the browser
// to /login. DOM text is always set with textContent, never parsed as HTML.

export const FINAL = ["completed", "failed", "canceled", "interrupted"];
const TERMINAL_EVENTS = ["job.completed", "job.failed", "job.canceled", "job.interrupted"];
const EVENTS = ["job.queued", "job.started", "job.progress", "job.image", "job.metric", "job.frame"];

export const params = new URLSearchParams(location.search);

/** `?steps=N` in the page URL: the sampling steps every request of the page asks for. */
export const STEPS = (() => {
  const n = parseInt(params.get("steps") || "", 10);
  return Number.isFinite(n) && n > 0 ? n : null;
})();

/** The sampling fields of a request made while a person scrolls: `?steps=` when the page
 * URL gives it, else the model's preview quality (few steps; an opened image is rendered
 * again at full quality). */
export function scrolling(body) {
  if (STEPS) body.steps = STEPS;
  else body.quality = "preview";
  return body;
}

let healthOnce = null;
/** `GET /api/v1/health` once per page: the model and its full and preview settings. */
export function health() {
  if (!healthOnce) healthOnce = api("/api/v1/health").then((r) => r.data).catch((err) => { healthOnce = null; throw err; });
  return healthOnce;
}

/** A URL on this site keeping `?steps=` (and adding `extra` query parameters). */
export function siteUrl(path, extra = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(extra)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  if (STEPS) q.set("steps", String(STEPS));
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function describe(data, status) {
  if (data && typeof data === "object" && "detail" in data) {
    const d = data.detail;
    if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).slice(-1)[0] || "request"}: ${e.msg}`).join("; ");
    return String(d);
  }
  return typeof data === "string" && data ? data : `HTTP ${status}`;
}

/**
 * JSON.parse that keeps an integer beyond 2**53 (a seed can be up to 2**63 - 1) exact, as its
 * digits: a JavaScript number would round it. The API reads such a string back as the integer.
 * Browsers without the reviver's source text get the number, as before.
 */
export function parseJSON(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && Number.isInteger(value) && !Number.isSafeInteger(value)
      && context && /^-?\d+$/.test(context.source) ? context.source : value);
}

/** Call the API: `{status, data}`; throws ApiError on a 4xx / 5xx (a 401 goes to /login). */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let data = null;
  if (text) { try { data = parseJSON(text); } catch { data = text; } }
  if (r.status === 401) {
    location.assign("/login");
    throw new ApiError(401, "log in first");
  }
  if (!r.ok) throw new ApiError(r.status, describe(data, r.status));
  return { status: r.status, data };
}

/** Upload an image file (raw body) to use as a method's target: its `UploadView` ({id, url, width, height}). */
export async function uploadImage(file) {
  const r = await fetch("/api/v1/uploads/image", { method: "POST", credentials: "same-origin", body: file,
    headers: { Accept: "application/json", "Content-Type": "application/octet-stream" } });
  const text = await r.text();
  let data = null;
  try { data = parseJSON(text); } catch { data = text; }
  if (!r.ok) throw new ApiError(r.status, `the image: ${describe(data, r.status)}`);
  return data;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll a job until it has finished: its JSON. */
export async function pollJob(jobId, every = 400) {
  for (;;) {
    const { data } = await api(`/api/v1/jobs/${encodeURIComponent(jobId)}`);
    if (FINAL.includes(data.status)) return data;
    await sleep(every);
  }
}

/**
 * Follow a job's Server-Sent Events; `handlers["job.image"](data)` etc. run as they arrive.
 * Resolves with the finished job (from GET /api/v1/jobs/{id}). When the stream breaks it
 * falls back to polling. `watch.close()` (the returned promise's) stops listening.
 */
export function watchJob(jobId, handlers = {}) {
  let source = null;
  let done = false;
  const promise = new Promise((resolve, reject) => {
    const finish = () => {
      if (done) return;
      done = true;
      if (source) source.close();
      pollJob(jobId).then(resolve, reject);
    };
    source = new EventSource(`/api/v1/jobs/${encodeURIComponent(jobId)}/events`);
    for (const type of EVENTS) {
      source.addEventListener(type, (e) => { if (!done && handlers[type]) handlers[type](parseJSON(e.data)); });
    }
    for (const type of TERMINAL_EVENTS) {
      source.addEventListener(type, (e) => { if (handlers[type]) handlers[type](parseJSON(e.data)); finish(); });
    }
    source.onerror = finish; // the stream ended (the job finished) or broke: read the job itself
  });
  promise.close = () => { done = true; if (source) source.close(); };
  return promise;
}

/** Build an element: `el("a", {href, class: "x", dataset: {id}}, "text", child)`. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "text") node.textContent = v;
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

const statusLine = () => document.getElementById("status");

/** Say something in the page's status line (a polite live region). */
export function say(text, { error = false } = {}) {
  const s = statusLine();
  if (!s) return;
  s.textContent = text || "";
  s.classList.toggle("error", Boolean(error));
}

/** Show an error in the status line (and keep it out of the console). */
export function fail(err) {
  say(err instanceof Error ? err.message : String(err), { error: true });
}

/** The value of a numeric input, or null when empty. */
export function numberOf(input) {
  const v = input.value.trim();
  if (!v) return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

/** The sampling fields of a form's "Advanced" part (steps, seed) added to `body`. */
export function advanced(form, body, { seed = true } = {}) {
  const steps = form.elements.steps ? numberOf(form.elements.steps) : STEPS;
  if (steps) body.steps = Math.round(steps);
  if (seed && form.elements.seed) {
    const s = numberOf(form.elements.seed);
    if (s !== null) body.seed = Math.round(s);
  }
  return body;
}

/** An <img> of a stored image (alt: the prompt). */
export function imageOf(id, alt) {
  return el("img", { src: `/api/v1/images/${id}.png`, alt: alt || "", class: "thumb", width: 150, height: 150,
    decoding: "async" });
}

/** "/" focuses the page's first search box (unless typing somewhere already). */
export function searchShortcut() {
  document.addEventListener("keydown", (e) => {
    if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement) return;
    const box = document.querySelector("input[type=search]");
    if (box) { e.preventDefault(); box.focus(); box.select(); }
  });
}
