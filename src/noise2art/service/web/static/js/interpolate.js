// Interpolate (/interpolate): frames along a path through two or more keyframe prompts,
// then a scrubber over the frames and the GIF.
import { advanced, el, imageOf, numberOf, params } from "./common.js";
import { detailsOf } from "./cards.js";
import { drawChart } from "./chart.js";
import { jobForm } from "./jobform.js";

const form = document.getElementById("job-form");
const keyframes = document.getElementById("keyframes");
const viewer = document.getElementById("viewer");
const frame = document.getElementById("frame");
const scrubber = document.getElementById("scrubber");
const label = document.getElementById("frame-label");
const gif = document.getElementById("gif");
const speedChart = document.getElementById("speed");
const speedCaption = document.getElementById("speed-caption");
let frames = [];
let alphas = [];
let alt = "";
let counter = keyframes.querySelectorAll("input").length;

// ?images=a,b (the A / B picks' "Interpolate"): stored images are the keyframes.
const images = (params.get("images") || "").split(",").map((s) => s.trim()).filter(Boolean);
if (images.length >= 2) {
  keyframes.hidden = true;
  keyframes.disabled = true; // its required inputs no longer block the form
  document.getElementById("add-keyframe").hidden = true;
  document.getElementById("from-images").hidden = false;
  document.getElementById("keyframe-images").replaceChildren(...images.map((id) => imageOf(id, "keyframe")));
  Promise.all(images.map((id) => detailsOf(id).then((d) => d.prompt).catch(() => id))).then((p) => { alt = p.join(" → "); });
}

function renumber() {
  keyframes.querySelectorAll(".keyframe").forEach((div, i) => {
    div.querySelector("label").textContent = `Keyframe ${i + 1}`;
    const remove = div.querySelector("button");
    if (remove) remove.setAttribute("aria-label", `Remove keyframe ${i + 1}`);
  });
}

document.getElementById("add-keyframe").addEventListener("click", () => {
  if (keyframes.querySelectorAll(".keyframe").length >= 16) return;
  const id = `kf${counter++}`;
  const input = el("input", { id, name: "keyframe", required: true, maxlength: "2000" });
  const remove = el("button", { type: "button", dataset: { action: "remove" } }, "Remove");
  keyframes.append(el("div", { class: "keyframe" }, el("label", { for: id }), input, remove));
  renumber();
  input.focus();
});

keyframes.addEventListener("click", (e) => {
  const button = e.target.closest('button[data-action="remove"]');
  if (!button) return;
  button.closest(".keyframe").remove();
  renumber();
  keyframes.querySelector("input").focus();
});

function show(i) {
  if (!frames.length) return;
  frame.src = `/api/v1/images/${frames[i]}.png`;
  frame.alt = `${alt} (frame ${i + 1}, alpha ${alphas[i].toFixed(2)})`;
  label.textContent = `${i + 1} / ${frames.length} (alpha ${alphas[i].toFixed(2)})`;
}

scrubber.addEventListener("input", () => show(Number(scrubber.value)));

// The speed profile: image distance between consecutive frames (and, re-timed, before it).
function showSpeed(result) {
  const speed = result.speed || {};
  const after = speed.distances || [];
  const before = speed.distances_before || [];
  // Re-timing can change the frame count of the evenly spaced path it started from: plot
  // the "before" curve only where it has a value for that step.
  const points = after.map((d, i) => ({ iteration: i + 1, score: d, ...(i < before.length ? { best: before[i] } : {}) }));
  drawChart(speedChart, points, { xlabel: "step" });
  speedChart.dataset.points = String(points.length);
  const ratio = (v) => (typeof v === "number" ? v.toFixed(2) : "n/a");
  speedCaption.textContent = result.constant_speed
    ? `Re-timed: largest step / mean step ${ratio(speed.ratio_before)} → ${ratio(speed.ratio)} (thin line: before)`
    : `Largest step / mean step ${ratio(speed.ratio)}; tick "Constant speed" to even it out`;
}

jobForm({
  form,
  path: "/api/v1/interpolate",
  body: (f) => {
    const lo = numberOf(f.elements.lo), hi = numberOf(f.elements.hi);
    if (!(lo < hi)) throw new Error("the range needs From below To");
    const body = { frames: numberOf(f.elements.frames), range: [lo, hi], method: f.elements.method.value,
      formats: ["gif"], constant_speed: f.elements.constant_speed.checked };
    if (images.length >= 2) {
      // The seeds come from the images (a seed may exceed what a JavaScript number holds).
      return advanced(f, { ...body, images }, { seed: false });
    }
    const prompts = [...f.querySelectorAll('input[name="keyframe"]')].map((i) => i.value.trim()).filter(Boolean);
    if (prompts.length < 2) throw new Error("give at least two keyframe prompts");
    alt = prompts.join(" → ");
    return advanced(f, { ...body, keyframes: prompts.map((prompt) => ({ prompt })) });
  },
  reset: () => { viewer.hidden = true; },
  done: (job) => {
    if (job.status !== "completed") return;
    frames = job.result.image_ids;
    alphas = job.result.alphas;
    for (const id of frames) new Image().src = `/api/v1/images/${id}.png`; // warm the cache for scrubbing
    scrubber.max = String(frames.length - 1);
    scrubber.value = "0";
    const art = (job.result.artifact_ids || {}).gif;
    gif.hidden = !art;
    if (art) { gif.href = `/api/v1/artifacts/${art}`; gif.setAttribute("download", `interpolation-${job.id}.gif`); }
    showSpeed(job.result);
    viewer.hidden = false;
    show(0);
    scrubber.focus();
  },
});
