// Library (/library): the caller's images, newest first; filters in the URL (?q=, ?liked=true).
import { api, fail, params, say, searchShortcut } from "./common.js";
import { bindCards, makeCard } from "./cards.js";

const grid = document.getElementById("results");
const more = document.getElementById("more");
let cursor = null;
let loading = false;

async function load() {
  if (loading) return;
  loading = true;
  more.disabled = true;
  const q = new URLSearchParams({ limit: "24" });
  if (params.get("q")) q.set("q", params.get("q"));
  if (params.get("liked") === "true") q.set("liked", "true");
  if (cursor) q.set("cursor", cursor);
  try {
    const { data } = await api(`/api/v1/library?${q}`);
    for (const image of data.images) grid.append(makeCard(image));
    cursor = data.next_cursor;
    more.hidden = !cursor;
    if (!grid.children.length) say("No images yet: search for something first.");
  } catch (err) {
    fail(err);
  } finally {
    loading = false;
    more.disabled = false;
  }
}

searchShortcut();
bindCards(grid);
more.addEventListener("click", load);
new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting) && cursor && !loading) load();
}).observe(more);
load();
