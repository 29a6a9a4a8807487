// Optimize (/optimize): gradient ascent on a prompt's embedding against a metric, with a
// live chart of the score per iteration (job.metric events) and before / after images.
import { advanced, imageOf, numberOf } from "./common.js";
import { drawChart } from "./chart.js";
import { jobForm } from "./jobform.js";

const form = document.getElementById("job-form");
const chart = document.getElementById("chart");
const caption = document.getElementById("chart-caption");
const compare = document.getElementById("compare");
const kept = document.getElementById("kept");
const current = document.getElementById("current");
let points = [];
let prompt = "";

function showImages(box, ids, label) {
  box.replaceChildren(...(ids || []).map((id) => imageOf(id, `${prompt} (${label})`)));
}

jobForm({
  form,
  path: "/api/v1/optimize",
  body: (f) => {
    prompt = f.elements.prompt.value.trim();
    const body = { prompt, metric: f.elements.metric.value.trim(), iterations: numberOf(f.elements.iterations),
      unconstrained: !f.elements.keep.checked };
    advanced(f, body, { seed: false });
    const seed = numberOf(f.elements.seed);
    if (seed !== null) body.seeds = [Math.round(seed)];
    return body;
  },
  reset: () => {
    points = []; drawChart(chart, points); compare.hidden = true; kept.hidden = true; chart.dataset.points = "0";
    current.hidden = true;
  },
  handlers: {
    "job.frame": (d) => {
      const img = current.querySelector("img");
      img.src = d.url;
      img.alt = `${prompt} (iteration ${d.iteration})`;
      current.querySelector("figcaption").textContent = `Current image, iteration ${d.iteration}`;
      current.dataset.iteration = String(d.iteration);
      current.hidden = false;
    },
    "job.metric": (d) => {
      points.push({ iteration: d.iteration, score: d.score, best: d.best });
      drawChart(chart, points);
      chart.dataset.points = String(points.length);
      caption.textContent = `Iteration ${d.iteration}${d.iterations ? " of " + d.iterations : ""}: score ${d.score.toPrecision(4)}` +
        (typeof d.best === "number" ? `, best ${d.best.toPrecision(4)}` : "");
    },
  },
  done: (job) => {
    const r = job.result;
    if (!r) return;
    if (Array.isArray(r.scores) && r.scores.length > points.length) {
      points = r.scores.map((score, i) => ({ iteration: i + 1, score }));
      drawChart(chart, points);
      chart.dataset.points = String(points.length);
    }
    caption.textContent = `${r.metric || "metric"}: ${Number(r.initial_score).toPrecision(4)} → best ` +
      `${Number(r.best_score).toPrecision(4)} (iteration ${r.best_iteration}; ${r.stop_reason || "done"})`;
    // What the picture kept, beside the metric: prompt adherence and the distance to the first image.
    const adherence = typeof r.initial_adherence === "number" && typeof r.best_adherence === "number"
      ? `prompt adherence ${r.initial_adherence.toFixed(2)} → ${r.best_adherence.toFixed(2)}`
      : "prompt adherence n/a (the prompt names nothing the classifiers check)";
    const distance = typeof r.best_distance === "number" ? `; distance to the initial image ${r.best_distance.toFixed(3)}` : "";
    kept.textContent = adherence + distance;
    kept.hidden = false;
    showImages(document.getElementById("before"), (r.image_ids || {}).before, "before");
    showImages(document.getElementById("after"), (r.image_ids || {}).after, "after");
    compare.hidden = false;
  },
});
drawChart(chart, points);
