// Image cards and what they do: like, more like this, pick A / B (between / beyond),
// steer toward a concept, open (the detail panel). Used by Search, Library and Feed.
import { api, el, fail, health, say, siteUrl, STEPS, watchJob } from "./common.js";

const details = new Map(); // image id -> GET /api/v1/images/{id}

/** The image's stored record (cached). */
export async function detailsOf(id) {
  if (!details.has(id)) details.set(id, api(`/api/v1/images/${id}`).then((r) => r.data));
  try {
    return await details.get(id);
  } catch (err) {
    details.delete(id);
    throw err;
  }
}

/** A placeholder card for result `idx` (filled by `fillCard`). */
export function placeholder(idx) {
  return el("figure", { class: "card placeholder", dataset: { idx: String(idx) }, "aria-busy": "true" },
    el("div", { class: "ph" }), el("figcaption", { text: "rendering…" }));
}

function actions(liked) {
  const b = (action, text, label, extra = {}) =>
    el("button", { type: "button", dataset: { action }, "aria-label": label, title: label, ...extra }, text);
  return el("div", { class: "actions" },
    b("like", "♥ Like", "Like", { "aria-pressed": liked ? "true" : "false" }),
    b("more", "More like this", "More like this"),
    b("pick-a", "A", "Pick as A"),
    b("pick-b", "B", "Pick as B"),
    b("steer", "Steer", "Steer toward a concept"),
    b("open", "Open", "Open the details"));
}

/** Turn `card` (a placeholder or a new figure) into the card of `image` ({id, seed, prompt?, liked?}). */
/** Mark a between result that crosses a jump of its path as the morph it is. */
function markBridge(card, bridge) {
  if (!bridge) return;
  card.classList.add("bridged");
  card.title = "A morph: this position lies across a jump of the path, so it shows both pictures part way " +
    "from one to the other";
}

export function fillCard(card, image, alt) {
  card.replaceChildren();
  card.className = "card";
  card.removeAttribute("aria-busy");
  card.dataset.id = image.id;
  if (image.idx !== undefined) card.dataset.idx = String(image.idx);
  const prompt = image.prompt ?? alt ?? "";
  card.dataset.prompt = prompt;
  const img = el("img", { src: image.url || `/api/v1/images/${image.id}.png`, alt: prompt, width: 150, height: 150,
    decoding: "async" });
  const caption = el("figcaption", { title: prompt, text: `seed ${image.seed}${image.prompt ? " · " + image.prompt : ""}` });
  card.append(img, caption, actions(Boolean(image.liked)));
  markBridge(card, image.bridge);
  if (image.liked === undefined || image.prompt === undefined) {
    // A stream page gives ids and seeds only: the record says whether it is liked, and its prompt.
    detailsOf(image.id).then((d) => {
      img.alt = d.prompt;
      card.dataset.prompt = d.prompt;
      caption.textContent = `seed ${d.seed} · ${d.prompt}`;
      caption.title = d.prompt;
      markBridge(card, d.extra && d.extra.stream && d.extra.stream.bridge);
      const like = card.querySelector('[data-action="like"]');
      // A like toggled while the record loaded is newer than the record: keep it.
      if (!like.dataset.toggled) like.setAttribute("aria-pressed", d.liked ? "true" : "false");
    }).catch(() => {});
  }
  return card;
}

export function makeCard(image, alt) {
  return fillCard(el("figure", { class: "card" }), image, alt);
}

// --------------------------------------------------------------------------- picks (A / B)

const PICKS = "noise2art.picks";

function loadPicks() {
  try { return JSON.parse(sessionStorage.getItem(PICKS) || "{}"); } catch { return {}; }
}

function showPicks() {
  const bar = document.getElementById("picks");
  if (!bar) return;
  const picks = loadPicks();
  bar.hidden = !picks.a && !picks.b;
  for (const slot of ["a", "b"]) {
    const box = bar.querySelector(`[data-slot="${slot}"]`);
    const img = box.querySelector("img");
    const p = picks[slot];
    img.hidden = !p;
    box.querySelector(".pick-empty").hidden = Boolean(p);
    if (p) { img.src = `/api/v1/images/${p.id}.png`; img.alt = `${slot.toUpperCase()}: ${p.prompt}`; }
  }
  const both = Boolean(picks.a && picks.b);
  bar.querySelector('[data-action="between"]').disabled = !both;
  bar.querySelector('[data-action="beyond"]').disabled = !both;
  bar.querySelector('[data-action="interpolate"]').disabled = !both;
}

function bindPicks() {
  const bar = document.getElementById("picks");
  if (!bar) return;
  bar.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    if (!button) return;
    const picks = loadPicks();
    const action = button.dataset.action;
    if (action === "clear-picks") {
      sessionStorage.removeItem(PICKS);
      showPicks();
    } else if ((action === "between" || action === "beyond") && picks.a && picks.b) {
      location.assign(siteUrl("/", { [action]: `${picks.a.id},${picks.b.id}` }));
    } else if (action === "interpolate" && picks.a && picks.b) {
      location.assign(siteUrl("/interpolate", { images: `${picks.a.id},${picks.b.id}` }));
    }
  });
  showPicks();
}

// --------------------------------------------------------------------------- the detail panel

function row(dl, name, value) {
  if (value === null || value === undefined || value === "") return;
  dl.append(el("dt", { text: name }), el("dd", { text: String(value) }));
}

export async function openDetails(id) {
  const dialog = document.getElementById("details");
  const body = dialog.querySelector(".details-body");
  const d = await detailsOf(id);
  const dl = el("dl");
  row(dl, "Prompt", d.prompt);
  row(dl, "Negative", d.negative);
  row(dl, "Seed", d.seed);
  row(dl, "Steps", d.steps);
  row(dl, "Guidance", d.guidance);
  row(dl, "Scheduler", d.scheduler);
  row(dl, "Size", `${d.width}×${d.height}`);
  row(dl, "Precision", d.precision);
  row(dl, "Method", d.method);
  row(dl, "Model", d.model_id);
  row(dl, "Created", new Date(d.created * 1000).toLocaleString());
  row(dl, "Job", d.job_id);
  row(dl, "Embedding", d.embedding_id);
  row(dl, "Liked", d.liked ? "yes" : "no");
  for (const [k, v] of Object.entries(d.attributes || {})) row(dl, k, v);
  const links = el("p", { class: "links" },
    el("a", { href: d.url, download: `${d.id}.png` }, "Download PNG"));
  if (d.embedding_id) {
    links.append(el("a", { href: `/api/v1/embeddings/${d.embedding_id}.safetensors`,
      download: `${d.embedding_id}.safetensors` }, "Download embedding"));
  }
  body.replaceChildren(el("img", { src: d.url, alt: d.prompt }), dl,
    el("pre", { class: "infotext", "aria-label": "Parameters (infotext)", text: d.parameters || "" }), links);
  dialog.querySelector("h2").textContent = d.prompt || "Image";
  if (!dialog.open) dialog.showModal();
  fullQuality(d, dialog).catch(fail);
}

/** Full quality on open: an image made at other settings than the model's full ones
 * (a preview while scrolling) is rendered again at full quality, same embedding and seed,
 * and the panel then shows that image's record. */
async function fullQuality(d, dialog) {
  if (STEPS) return; // the page asks for its own steps (?steps=): that is the quality wanted
  const full = (await health()).defaults;
  const same = d.steps === full.steps && d.guidance === full.guidance && d.scheduler === full.scheduler;
  if (same || d.model_id !== (await health()).model || !["generate", "search"].includes(d.method)) return;
  const note = el("p", { class: "full-quality", role: "status",
    text: `Preview (${d.steps} steps, ${d.scheduler}); rendering at full quality (${full.steps} steps, ${full.scheduler})…` });
  dialog.querySelector(".details-body").prepend(note);
  // By id, not by seed: a seed above 2**53 does not survive a JavaScript number.
  let data;
  try {
    ({ data } = await api(`/api/v1/images/${d.id}/render`, { method: "POST", body: {} }));
  } catch (err) {
    note.remove(); // 422: a result around other images, which its embedding and seed alone do not give
    if (err.status !== 422) throw err;
    return;
  }
  const job = await watchJob(data.job_id);
  const id = job.result && job.result.image_ids && job.result.image_ids[0];
  if (!dialog.open || !dialog.querySelector(".details-body").contains(note)) return; // closed or moved on
  if (job.status !== "completed" || !id) { note.textContent = `Full quality failed: ${job.error || job.status}`; return; }
  await openDetails(id);
}

// --------------------------------------------------------------------------- steer

function steer(prompt) {
  const dialog = document.getElementById("steer");
  const input = dialog.querySelector("input");
  dialog.querySelector(".steer-prompt").textContent = `Prompt: ${prompt}`;
  input.value = "";
  dialog.returnValue = "";
  dialog.onclose = null;
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "go" && input.value.trim()) {
      location.assign(siteUrl("/", { q: prompt, toward: input.value.trim() }));
    }
  }, { once: true });
  dialog.showModal();
}

// --------------------------------------------------------------------------- actions

async function act(card, button) {
  const id = card.dataset.id;
  const action = button.dataset.action;
  if (action === "like") {
    const on = button.getAttribute("aria-pressed") !== "true";
    button.dataset.toggled = "1";
    const { data } = await api(`/api/v1/images/${id}/like`, { method: on ? "PUT" : "DELETE" });
    button.setAttribute("aria-pressed", data.liked ? "true" : "false");
    details.delete(id);
    say(data.liked ? "Liked." : "Like removed.");
  } else if (action === "more") {
    location.assign(siteUrl("/", { like: id }));
  } else if (action === "pick-a" || action === "pick-b") {
    const picks = loadPicks();
    picks[action.slice(-1)] = { id, prompt: card.dataset.prompt || "" };
    sessionStorage.setItem(PICKS, JSON.stringify(picks));
    showPicks();
    say(`Picked as ${action.slice(-1).toUpperCase()}.`);
  } else if (action === "steer") {
    const prompt = card.dataset.prompt || (await detailsOf(id)).prompt;
    steer(prompt);
  } else if (action === "open") {
    await openDetails(id);
  }
}

/** Handle the card buttons inside `container` (one listener for all cards). */
export function bindCards(container) {
  container.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    const card = button && button.closest(".card");
    if (!card || !card.dataset.id) return;
    act(card, button).catch(fail);
  });
  bindPicks();
}
