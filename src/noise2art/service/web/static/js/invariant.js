// Invariant (/invariant): a seed-invariant embedding (every seed gives the target seed's
// picture): progress, then the target and before / after grids on the evaluation seeds.
import { advanced, el, imageOf, numberOf, uploadImage } from "./common.js";
import { jobForm } from "./jobform.js";

const form = document.getElementById("job-form");
const progress = document.getElementById("progress");
const scores = document.getElementById("scores");
const compare = document.getElementById("compare");
let prompt = "";

function seedsOf(text) {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  const seeds = parts.map(Number);
  if (seeds.some((s) => !Number.isInteger(s) || s < 0)) throw new Error("evaluation seeds: whole numbers >= 0");
  return seeds;
}

jobForm({
  form,
  path: "/api/v1/invariant",
  body: async (f) => {
    prompt = f.elements.prompt.value.trim();
    const body = { prompt, iterations: numberOf(f.elements.iterations), eval_seeds: seedsOf(f.elements.eval_seeds.value),
      mode: f.elements.mode.value };
    const file = f.elements.target_image.files[0];
    // An image, when chosen, is the target (uploaded first); else the target seed's picture.
    if (file) body.target_upload_id = (await uploadImage(file)).id;
    else body.target_seed = numberOf(f.elements.target_seed);
    return advanced(f, body, { seed: false });
  },
  reset: () => { compare.hidden = true; scores.textContent = ""; },
  handlers: {
    "job.metric": (d) => {
      if (d.iterations) progress.value = d.iteration / d.iterations;
      scores.textContent = `Iteration ${d.iteration}${d.iterations ? " of " + d.iterations : ""}` +
        `${d.stage ? " (" + d.stage + ")" : ""}: ${Number(d.score).toPrecision(4)}`;
    },
  },
  done: (job) => {
    const r = job.result;
    if (!r) return;
    const ids = r.image_ids || {};
    for (const name of ["target", "before", "after"]) {
      document.getElementById(name).replaceChildren(...(ids[name] || []).map((id) => imageOf(id, `${prompt} (${name})`)));
    }
    if (r.target_upload_id) {
      document.getElementById("target").replaceChildren(el("img", { src: `/api/v1/artifacts/${r.target_upload_id}`,
        alt: `${prompt} (target: the uploaded image)`, class: "thumb", width: 150, height: 150 }));
    }
    if (typeof r.distance_before === "number") {
      scores.textContent = `Mean distance to the target: ${r.distance_before.toPrecision(3)} before, ` +
        `${r.distance_after.toPrecision(3)} after (${r.stop_reason || "done"}).`;
    }
    compare.hidden = !(ids.before || ids.after);
  },
});
