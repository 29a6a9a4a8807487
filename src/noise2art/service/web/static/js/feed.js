// Feed (/feed): a generated feed over topics (POST /api/v1/feeds; ?feed=ID in the URL, so a
// reload resumes it). One column of items, each with why it was picked; Like / Skip (keys
// l / s on the current item, j / k move) and the time an item was on screen (more than 1 s,
// sent when it leaves the viewport) teach the feed; scrolling near the end loads more.
import { api, el, fail, params, say, scrolling, siteUrl, watchJob } from "./common.js";

export const FEEDS = "/api/v1/feeds";
const PAGE = 6;
const DWELL_MS = 1000;

const form = document.getElementById("feed-form");
const column = document.getElementById("feed");
const sentinel = document.getElementById("sentinel");
const info = document.getElementById("feed-info");
const serendipity = document.getElementById("serendipity");
const serendipityValue = document.getElementById("serendipity-value");

const state = { id: null, loading: false, done: false, current: null };
const seen = new Map(); // item element -> when it came into view (ms)

const feedPath = (what = "") => `${FEEDS}/${encodeURIComponent(state.id)}${what}`;

const WHY = {
  topic: "From your topic",
  exploit: "Like what you liked",
  explore: "Something nearby",
  serendipity: "A surprise",
};

function send(item, kind, extra = {}) {
  return api(feedPath("/events"), { method: "POST", body: { image_id: item.dataset.image, kind, ...extra } });
}

// ------------------------------------------------------------------ dwell time

const dwell = new IntersectionObserver((entries) => {
  const now = performance.now();
  for (const e of entries) {
    if (e.isIntersecting) {
      if (!seen.has(e.target)) seen.set(e.target, now);
      if (!state.current || !column.contains(state.current)) setCurrent(e.target, false);
    } else if (seen.has(e.target)) {
      const ms = now - seen.get(e.target);
      seen.delete(e.target);
      if (ms > DWELL_MS) {
        send(e.target, "dwell", { dwell_ms: Math.min(Math.round(ms), 3_600_000) })
          .then(() => { e.target.dataset.dwell = String(Math.round(ms)); }, fail);
      }
    }
  }
}, { threshold: 0.5 });

// ------------------------------------------------------------------ items

function setCurrent(item, focus = true) {
  if (!item) return;
  if (state.current) state.current.classList.remove("current");
  state.current = item;
  item.classList.add("current");
  if (focus) {
    item.focus({ preventScroll: true });
    item.scrollIntoView({ block: "center", behavior: "auto" });
  }
}

function makeItem(data, position) {
  const alt = data.topic || "feed image";
  const b = (action, text, label) => el("button", { type: "button", dataset: { action }, "aria-label": label,
    title: label, "aria-pressed": "false" }, text);
  const item = el("article", { class: "feed-item", tabindex: "0", "aria-posinset": String(position),
    "aria-setsize": "-1", "aria-label": `${WHY[data.why] || data.why}: ${alt}`,
    dataset: { item: data.item_id, image: data.image_id, why: data.why } },
  el("img", { src: data.url || `/api/v1/images/${data.image_id}.png`, alt, width: 256, height: 256, decoding: "async" }),
  el("p", { class: "why" },
    el("span", { class: `why-label why-${data.why}`, text: WHY[data.why] || data.why }),
    el("span", { class: "hint", text: data.topic ? ` · ${data.topic}` : "" })),
  el("div", { class: "actions" }, b("like", "♥ Like", "Like (l)"), b("skip", "Skip", "Skip (s)")));
  return item;
}

async function react(item, kind) {
  if (!item || item.dataset.reacted === kind) return;
  const button = item.querySelector(`[data-action="${kind}"]`);
  try {
    await send(item, kind);
    item.dataset.reacted = kind;
    item.querySelectorAll("[data-action]").forEach((x) => x.setAttribute("aria-pressed", x === button ? "true" : "false"));
    item.classList.toggle("skipped", kind === "skip");
    say(kind === "like" ? "Liked: more like this will come." : "Skipped: less like this will come.");
    if (kind === "skip") move(item, 1);
  } catch (err) {
    fail(err);
  }
}

function move(from, step) {
  const items = [...column.querySelectorAll(".feed-item")];
  const i = items.indexOf(from || state.current);
  const next = items[Math.max(0, Math.min(items.length - 1, i < 0 ? 0 : i + step))];
  if (next) setCurrent(next);
  maybeMore();
}

// ------------------------------------------------------------------ loading

async function next() {
  const { status, data } = await api(feedPath(`/next?n=${PAGE}`));
  if (status !== 202) return data.items || [];
  const job = await watchJob(data.job_id);
  if (job.status !== "completed") throw new Error(`The feed's render ${job.status}${job.error ? ": " + job.error : ""}.`);
  return (job.result && job.result.items) || [];
}

async function loadMore() {
  if (state.loading || state.done || !state.id) return;
  state.loading = true;
  column.setAttribute("aria-busy", "true");
  const holders = Array.from({ length: PAGE }, () => el("div", { class: "feed-item placeholder" }, el("div", { class: "ph" })));
  column.append(...holders);
  say("Rendering…");
  try {
    const items = await next();
    holders.forEach((h) => h.remove());
    let position = column.querySelectorAll(".feed-item").length;
    for (const data of items) {
      const item = makeItem(data, ++position);
      column.append(item);
      dwell.observe(item);
    }
    column.dataset.items = String(position);
    if (!items.length) state.done = true;
    say("");
  } catch (err) {
    holders.forEach((h) => h.remove());
    state.done = true;
    fail(err);
  } finally {
    state.loading = false;
    column.setAttribute("aria-busy", "false");
  }
  maybeMore();
}

function maybeMore() {
  if (state.loading || state.done || !state.id) return;
  if (sentinel.getBoundingClientRect().top < innerHeight + 300) loadMore();
}

function begin(view) {
  state.id = view.id;
  state.done = false;
  column.dataset.feed = view.id;
  info.textContent = `Topics: ${view.topics.join(" · ")} · serendipity ${Number(view.serendipity).toFixed(2)}. ` +
    "Keys: j / k move, l likes, s skips the current item.";
  loadMore();
}

// ------------------------------------------------------------------ wiring

function typing(t) {
  return t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement;
}

function bind() {
  serendipity.addEventListener("input", () => { serendipityValue.textContent = Number(serendipity.value).toFixed(2); });
  column.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    const item = button && button.closest(".feed-item");
    if (item) { setCurrent(item, false); react(item, button.dataset.action); }
  });
  column.addEventListener("focusin", (e) => {
    const item = e.target.closest(".feed-item");
    if (item && item !== state.current) setCurrent(item, false);
  });
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target) || !state.id) return;
    const key = e.key.toLowerCase();
    if (key === "j" || key === "k") { e.preventDefault(); move(state.current, key === "j" ? 1 : -1); }
    else if (key === "l" || key === "s") { e.preventDefault(); react(state.current, key === "l" ? "like" : "skip"); }
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!form.reportValidity()) return;
    const topics = form.elements.topics.value.split(/[\n,]/).map((t) => t.trim()).filter(Boolean);
    if (!topics.length) { fail("Give at least one topic."); return; }
    const body = scrolling({ topics, serendipity: Number(serendipity.value) });
    const start = document.getElementById("start");
    start.disabled = true;
    say("Starting a feed…");
    try {
      const { data } = await api(FEEDS, { method: "POST", body });
      window.history.replaceState(null, "", siteUrl("/feed", { feed: data.id }));
      for (const item of column.querySelectorAll(".feed-item")) dwell.unobserve(item);
      seen.clear();
      column.replaceChildren();
      state.current = null;
      begin(data);
    } catch (err) {
      fail(err);
    } finally {
      start.disabled = false;
    }
  });
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) maybeMore();
  }, { rootMargin: "300px 0px" }).observe(sentinel);
}

async function start() {
  bind();
  const id = params.get("feed");
  if (!id) return;
  try {
    state.id = id;
    const { data } = await api(feedPath());
    form.elements.topics.value = data.topics.join("\n");
    serendipity.value = String(data.serendipity);
    serendipityValue.textContent = Number(data.serendipity).toFixed(2);
    begin(data);
  } catch (err) {
    state.id = null;
    fail(err);
  }
}

start();
