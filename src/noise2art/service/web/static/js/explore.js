// Explore (/explore): feedback sessions. Until the server has the session API (GET answers
// 404), the page says so; nothing here guesses at request shapes beyond listing.
import { api, el, fail } from "./common.js";

export const SESSIONS = "/api/v1/sessions";

async function start() {
  try {
    const { data } = await api(SESSIONS);
    const list = Array.isArray(data) ? data : data.sessions || [];
    const ul = document.getElementById("sessions");
    ul.replaceChildren(...list.map((s) => el("li", { text: `${s.id || ""} ${s.prompt || ""}`.trim() })));
    if (!list.length) ul.append(el("li", { text: "No sessions yet." }));
    document.getElementById("available").hidden = false;
  } catch (err) {
    if (err.status === 404 || err.status === 405) document.getElementById("pending").hidden = false;
    else fail(err);
  }
}
start();
