// Jobs (/jobs): the caller's jobs with status and progress, refreshed every second; cancel
// a queued or running job (DELETE /api/v1/jobs/{id}).
import { api, el, fail, say } from "./common.js";

const body = document.getElementById("jobs");
const rows = new Map();
const ACTIVE = ["queued", "running"];

function rowFor(job) {
  let row = rows.get(job.id);
  if (!row) {
    const progress = el("progress", { max: 1, value: 0 });
    const cancel = el("button", { type: "button", dataset: { action: "cancel", job: job.id },
      "aria-label": `Cancel job ${job.id}` }, "Cancel");
    row = el("tr", { dataset: { job: job.id } },
      el("td", {}, el("code", { text: job.id })), el("td", { text: job.kind }), el("td", { class: "job-status" }),
      el("td", {}, progress, el("span", { class: "pct" })),
      el("td", { text: new Date(job.created * 1000).toLocaleTimeString() }), el("td", {}, cancel));
    rows.set(job.id, row);
  }
  const status = row.querySelector(".job-status");
  status.textContent = job.error ? `${job.status}: ${job.error}` : job.status;
  status.className = `job-status status-${job.status}`;
  row.dataset.status = job.status;
  row.querySelector("progress").value = job.progress;
  row.querySelector(".pct").textContent = ` ${Math.round(job.progress * 100)}%`;
  row.querySelector("button").hidden = !ACTIVE.includes(job.status);
  return row;
}

async function refresh() {
  try {
    const { data } = await api("/api/v1/jobs?limit=100");
    const wanted = data.jobs.map(rowFor);
    // Keep rows (and the focus inside them) in place; only add, move or drop what changed.
    wanted.forEach((row, i) => { if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null); });
    while (body.children.length > wanted.length) body.lastElementChild.remove();
    if (!wanted.length) say("No jobs yet.");
    else if (document.getElementById("status").textContent === "No jobs yet.") say("");
  } catch (err) {
    fail(err);
  }
}

body.addEventListener("click", async (e) => {
  const button = e.target.closest('button[data-action="cancel"]');
  if (!button) return;
  try {
    const { data } = await api(`/api/v1/jobs/${button.dataset.job}`, { method: "DELETE" });
    say(`Job ${data.id}: ${data.status}.`);
    await refresh();
  } catch (err) {
    fail(err);
  }
});

async function loop() {
  await refresh();
  setTimeout(loop, 1000);
}
loop();
