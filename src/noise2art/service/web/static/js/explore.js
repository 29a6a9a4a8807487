// Explore (/explore): feedback sessions. Start one from a prompt (or resume one of yours:
// ?session=ID in the URL, so a reload resumes it); each round shows the current image and
// its candidates (a job: POST /api/v1/sessions/{id}/round); choosing one (click, or keys
// 1..9) moves the session toward it with the strength of the slider; Undo (key u) goes back.
import { api, el, fail, imageOf, numberOf, params, say, siteUrl, STEPS, watchJob } from "./common.js";

export const SESSIONS = "/api/v1/sessions";

const form = document.getElementById("start-form");
const list = document.getElementById("sessions");
const panel = document.getElementById("session");
const title = document.getElementById("session-title");
const info = document.getElementById("round-info");
const progress = document.getElementById("progress");
const current = document.getElementById("current");
const candidates = document.getElementById("candidates");
const strength = document.getElementById("strength");
const strengthValue = document.getElementById("strength-value");
const undoButton = document.getElementById("undo");
const exportButton = document.getElementById("export");
const download = document.getElementById("download");
const otherButton = document.getElementById("other-seeds");
const others = document.getElementById("others");
const otherImages = document.getElementById("other-images");
const OTHER_SEEDS = 4;
const strip = document.getElementById("history");
const map = document.getElementById("map");

const state = { view: null, busy: false, ticket: 0, watch: null, count: 0 };

const sessionPath = (id, what = "") => `${SESSIONS}/${encodeURIComponent(id)}${what ? "/" + what : ""}`;

function setBusy(busy) {
  state.busy = busy;
  panel.setAttribute("aria-busy", busy ? "true" : "false");
  candidates.querySelectorAll("button").forEach((b) => { b.disabled = busy; });
  undoButton.disabled = busy || !state.view || !state.view.history.length;
  exportButton.disabled = busy || !state.view;
  otherButton.disabled = busy || !state.view;
}

function showView(view) {
  state.view = view;
  title.textContent = view.prompt;
  info.textContent = `Round ${view.round} · recommender ${view.recommender} · ${view.n_variants} candidates`;
  strip.replaceChildren(...view.history.map((h) => el("li", { dataset: { round: String(h.round), index: String(h.index) } },
    `Round ${h.round}: candidate ${h.index + 1}`,
    el("span", { class: "hint", text: ` (strength ${Number(h.strength).toFixed(2)})` }))));
  if (!view.history.length) strip.append(el("li", { class: "hint empty", text: "No choice yet." }));
  strip.dataset.count = String(view.history.length);
  panel.hidden = false;
  download.hidden = true;
  setBusy(state.busy);
}

function showCandidates(ids) {
  const prompt = state.view ? state.view.prompt : "";
  candidates.replaceChildren(...ids.map((id, k) => {
    const label = `candidate ${k + 1}`;
    return el("button", { type: "button", class: "candidate", dataset: { index: String(k), image: id },
      "aria-label": `Choose ${label}${k < 9 ? ` (key ${k + 1})` : ""}`, title: `${prompt}: ${label}` },
    el("img", { src: `/api/v1/images/${id}.png`, alt: label, width: 150, height: 150, decoding: "async" }),
    el("span", { class: "candidate-key", text: String(k + 1) }));
  }));
  state.count = ids.length;
}

/** Render the session's current round (a job) and show its images. */
async function renderRound() {
  const view = state.view;
  const ticket = ++state.ticket;
  if (state.watch) state.watch.close();
  setBusy(true);
  candidates.dataset.state = "rendering";
  candidates.replaceChildren(...Array.from({ length: view.n_variants },
    () => el("div", { class: "card placeholder" }, el("div", { class: "ph" }))));
  progress.hidden = false;
  progress.value = 0;
  say(`Rendering round ${view.round}…`);
  try {
    const { data } = await api(sessionPath(view.id, "round"), { method: "POST" });
    state.watch = watchJob(data.job_id, {
      "job.progress": (d) => { if (ticket === state.ticket && typeof d.progress === "number") progress.value = d.progress; },
    });
    const job = await state.watch;
    if (ticket !== state.ticket) return;
    if (job.status !== "completed") throw new Error(`The round ${job.status}${job.error ? ": " + job.error : ""}.`);
    const r = job.result;
    current.src = `/api/v1/images/${r.current_image_id}.png`;
    current.alt = view.prompt;
    current.hidden = false;
    showCandidates(r.candidate_image_ids || []);
    candidates.dataset.round = String(r.round);
    candidates.dataset.state = "ready";
    // The map of this round (the query string only names the version: it is never cached).
    map.src = `${sessionPath(view.id, "map.png")}?round=${r.round}&choices=${view.history.length}`;
    map.hidden = false;
    progress.value = 1;
    say("");
  } catch (err) {
    if (ticket !== state.ticket) return;
    candidates.dataset.state = "failed";
    fail(err);
  } finally {
    if (ticket === state.ticket) {
      progress.hidden = true;
      setBusy(false);
    }
  }
}

async function change(path, body) {
  if (state.busy || !state.view) return;
  setBusy(true);
  try {
    const { data } = await api(sessionPath(state.view.id, path), { method: "POST", body });
    showView(data);
  } catch (err) {
    fail(err);
    setBusy(false);
    return;
  }
  await renderRound();
}

function choose(index) {
  if (index < 0 || index >= state.count) return;
  return change("choose", { index, strength: Number(strength.value) });
}

const undo = () => (state.view && state.view.history.length ? change("undo") : undefined);

/** Store the session's current embedding; its `EmbeddingView` (id, url), and the download link set. */
async function storeEmbedding() {
  const { data } = await api(sessionPath(state.view.id, "export"), { method: "POST" });
  download.href = data.url;
  download.setAttribute("download", `${data.id}.safetensors`);
  download.hidden = false;
  return data;
}

async function exportEmbedding() {
  if (!state.view) return;
  exportButton.disabled = true;
  try {
    await storeEmbedding();
    say("Exported: the embedding is stored.");
  } catch (err) {
    fail(err);
  } finally {
    exportButton.disabled = state.busy;
  }
}

/** The current embedding rendered on new seeds: does the choice hold beyond the session's noise? */
async function renderOnOtherSeeds() {
  if (!state.view) return;
  otherButton.disabled = true;
  others.hidden = false;
  otherImages.dataset.state = "rendering";
  otherImages.replaceChildren(...Array.from({ length: OTHER_SEEDS },
    () => el("div", { class: "card placeholder" }, el("div", { class: "ph" }))));
  try {
    const embedding = await storeEmbedding();
    const seeds = Array.from(crypto.getRandomValues(new Uint32Array(OTHER_SEEDS)), (v) => v);
    const body = { embedding_id: embedding.id, seeds };
    if (STEPS) body.steps = STEPS;
    const { data } = await api("/api/v1/generate", { method: "POST", body });
    const job = await watchJob(data.job_id);
    if (job.status !== "completed") throw new Error(`The render ${job.status}${job.error ? ": " + job.error : ""}.`);
    otherImages.replaceChildren(...job.result.image_ids.map((id, k) => imageOf(id, `${state.view.prompt} (seed ${seeds[k]})`)));
    otherImages.dataset.state = "ready";
  } catch (err) {
    otherImages.dataset.state = "failed";
    fail(err);
  } finally {
    otherButton.disabled = state.busy;
  }
}

async function open(id) {
  const { data } = await api(sessionPath(id));
  strip.dataset.session = data.id;
  showView(data);
  await renderRound();
}

async function listSessions() {
  const { data } = await api(SESSIONS);
  const rows = data.sessions || [];
  list.replaceChildren(...rows.map((s) => el("li", { dataset: { id: s.id } },
    el("a", { href: siteUrl("/explore", { session: s.id }), "aria-current": s.id === params.get("session") ? "true" : null },
      s.prompt),
    el("span", { class: "hint", text: ` · ${new Date(s.updated * 1000).toLocaleString()}` }))));
  if (!rows.length) list.append(el("li", { class: "hint", text: "No sessions yet: start one above." }));
}

function typing(t) {
  return t instanceof HTMLInputElement && t.type !== "range" || t instanceof HTMLTextAreaElement ||
    t instanceof HTMLSelectElement;
}

function bind() {
  strength.addEventListener("input", () => { strengthValue.textContent = Number(strength.value).toFixed(2); });
  candidates.addEventListener("click", (e) => {
    const b = e.target.closest("button.candidate");
    if (b && !b.disabled) choose(Number(b.dataset.index));
  });
  undoButton.addEventListener("click", () => { undo(); });
  exportButton.addEventListener("click", () => { exportEmbedding(); });
  otherButton.addEventListener("click", () => { renderOnOtherSeeds(); });
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target) || panel.hidden || state.busy) return;
    if (/^[1-9]$/.test(e.key)) { e.preventDefault(); choose(Number(e.key) - 1); }
    else if (e.key === "u" || e.key === "U") { e.preventDefault(); undo(); }
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!form.reportValidity()) return;
    const body = { prompt: form.elements.prompt.value.trim() };
    if (form.elements.recommender.value) body.recommender = form.elements.recommender.value;
    const n = numberOf(form.elements.n_variants);
    if (n !== null) body.n_variants = Math.round(n);
    if (STEPS) body.steps = STEPS;
    const start = document.getElementById("start");
    start.disabled = true;
    say("Starting a session…");
    try {
      const { data } = await api(SESSIONS, { method: "POST", body });
      window.history.replaceState(null, "", siteUrl("/explore", { session: data.id }));
      params.set("session", data.id);
      strip.dataset.session = data.id;
      showView(data);
      listSessions().catch(() => {});
      await renderRound();
    } catch (err) {
      fail(err);
    } finally {
      start.disabled = false;
    }
  });
}

async function start() {
  bind();
  const id = params.get("session");
  listSessions().catch(fail);
  if (id) {
    try {
      await open(id);
    } catch (err) {
      fail(err);
    }
  }
}

start();
