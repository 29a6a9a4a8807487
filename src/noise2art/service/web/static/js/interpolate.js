// Interpolate (/interpolate): frames along a path through two or more keyframe prompts,
// then a scrubber over the frames and the GIF.
import { advanced, el, numberOf } from "./common.js";
import { jobForm } from "./jobform.js";

const form = document.getElementById("job-form");
const keyframes = document.getElementById("keyframes");
const viewer = document.getElementById("viewer");
const frame = document.getElementById("frame");
const scrubber = document.getElementById("scrubber");
const label = document.getElementById("frame-label");
const gif = document.getElementById("gif");
let frames = [];
let alphas = [];
let alt = "";
let counter = keyframes.querySelectorAll("input").length;

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

jobForm({
  form,
  path: "/api/v1/interpolate",
  body: (f) => {
    const prompts = [...f.querySelectorAll('input[name="keyframe"]')].map((i) => i.value.trim()).filter(Boolean);
    if (prompts.length < 2) throw new Error("give at least two keyframe prompts");
    const lo = numberOf(f.elements.lo), hi = numberOf(f.elements.hi);
    if (!(lo < hi)) throw new Error("the range needs From below To");
    alt = prompts.join(" → ");
    return advanced(f, { keyframes: prompts.map((prompt) => ({ prompt })), frames: numberOf(f.elements.frames),
      range: [lo, hi], method: f.elements.method.value, formats: ["gif"] });
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
    viewer.hidden = false;
    show(0);
    scrubber.focus();
  },
});
