// Search (/): a stream of the infinite index, page by page, with infinite scroll.
// The URL holds the request (?q=&toward=, ?like=, ?between=a,b, ?beyond=a,b), so a reload
// or a shared link shows the same results.
import { api, el, fail, params, say, scrolling, searchShortcut, watchJob } from "./common.js";
import { bindCards, detailsOf, fillCard, placeholder } from "./cards.js";

const SIZE = 24;
const grid = document.getElementById("results");
const sentinel = document.getElementById("sentinel");
const info = document.getElementById("stream-info");
const state = { id: null, next: 0, loading: false, done: false, alt: "" };

function request() {
  const q = (params.get("q") || "").trim();
  const pair = (name) => {
    const v = (params.get(name) || "").split(",").map((s) => s.trim()).filter(Boolean);
    return v.length === 2 ? v : null;
  };
  let body = null;
  if (q) {
    body = { query: q };
    const toward = (params.get("toward") || "").trim();
    if (toward) body.toward = toward;
  } else if (params.get("like")) body = { like: params.get("like").trim() };
  else if (pair("between")) body = { between: pair("between") };
  else if (pair("beyond")) body = { beyond: pair("beyond") };
  return body && scrolling(body);
}

async function describeAnchors(body) {
  const ids = body.like ? [body.like] : body.between || body.beyond;
  const prompts = await Promise.all(ids.map((id) => detailsOf(id).then((d) => d.prompt).catch(() => id)));
  state.alt = prompts.join(" / ");
  const what = body.like ? "More like" : body.between ? "Between" : "Beyond";
  info.textContent = `${what}: ${prompts.join(body.beyond ? " → " : " and ")}`;
}

function cellFor(idx) {
  return grid.querySelector(`.card[data-idx="${idx}"]`);
}

function fill(image) {
  const card = cellFor(image.idx);
  if (card && !card.dataset.id) fillCard(card, image, state.alt);
}

async function loadPage(page) {
  state.loading = true;
  const url = `/api/v1/streams/${state.id}/pages/${page}?size=${SIZE}`;
  try {
    let { status, data } = await api(url);
    for (let i = 0; i < SIZE; i++) grid.append(placeholder(page * SIZE + i));
    data.images.forEach(fill);
    for (let tries = 0; status === 202 && tries < 5; tries++) {
      await watchJob(data.job_id, { "job.image": (d) => fill({ id: d.image_id, idx: d.idx, seed: d.seed }) });
      ({ status, data } = await api(url)); // every image of the page, now stored
      data.images.forEach(fill);
    }
    const left = grid.querySelectorAll(".card.placeholder");
    if (status === 200 && data.images.length < SIZE) {
      left.forEach((c) => c.remove()); // the stream ends here (between / beyond are finite)
      state.done = true;
    }
    state.next = page + 1;
    say("");
  } catch (err) {
    fail(err);
    state.done = true;
  } finally {
    state.loading = false;
  }
  maybeMore();
}

function maybeMore() {
  if (state.loading || state.done || !state.id) return;
  if (sentinel.getBoundingClientRect().top < innerHeight + 400) loadPage(state.next);
}

async function start() {
  searchShortcut();
  bindCards(grid);
  const body = request();
  if (!body) {
    document.getElementById("q").focus();
    info.textContent = "Type a prompt: the results never run out; scroll for more.";
    return;
  }
  if (!body.query) describeAnchors(body).catch(() => {});
  else state.alt = body.toward ? `${body.query} (toward ${body.toward})` : body.query;
  if (body.query) info.textContent = body.toward ? `“${body.query}”, steered toward “${body.toward}”` : "";
  say("Searching…");
  try {
    const { data } = await api("/api/v1/streams", { method: "POST", body });
    state.id = data.id;
    grid.dataset.stream = data.id;
  } catch (err) {
    fail(err);
    return;
  }
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) maybeMore();
  }, { rootMargin: "400px 0px" }).observe(sentinel);
  loadPage(0);
}

start();
