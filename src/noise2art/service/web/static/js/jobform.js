// The start / stop / progress wiring shared by Interpolate, Optimize and Invariant.
import { api, fail, say, watchJob } from "./common.js";

/**
 * `runJob({form, path, body(form), handlers, done(job), reset()})`: on submit, POST `body`
 * to `path`, follow the job's events, then call `done` with the finished job. The Stop
 * button cancels it (DELETE /api/v1/jobs/{id}).
 */
export function jobForm({ form, path, body, handlers = {}, done, reset = () => {} }) {
  const start = form.querySelector("#start");
  const stop = document.getElementById("stop");
  const progress = document.getElementById("progress");
  let jobId = null;

  stop.addEventListener("click", async () => {
    if (!jobId) return;
    stop.disabled = true;
    try {
      await api(`/api/v1/jobs/${jobId}`, { method: "DELETE" });
      say("Stopping…");
    } catch (err) {
      fail(err);
    }
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!form.reportValidity()) return;
    let request;
    try {
      request = await body(form); // a body may upload something first (Invariant's target image)
    } catch (err) {
      fail(err);
      return;
    }
    reset();
    start.disabled = true;
    try {
      const { data } = await api(path, { method: "POST", body: request });
      jobId = data.job_id;
      form.dataset.job = jobId;
      stop.hidden = false;
      stop.disabled = false;
      if (progress) { progress.hidden = false; progress.value = 0; }
      say(`Job ${jobId} ${data.status}…`);
      const job = await watchJob(jobId, {
        ...handlers,
        "job.started": () => say(`Job ${jobId} running…`),
        "job.progress": (d) => { if (progress && typeof d.progress === "number") progress.value = d.progress; },
      });
      if (progress) progress.value = job.status === "completed" ? 1 : progress.value;
      say(job.status === "completed" ? "Done." : `Job ${job.status}${job.error ? ": " + job.error : ""}.`,
        { error: job.status === "failed" });
      done(job);
    } catch (err) {
      fail(err);
    } finally {
      start.disabled = false;
      stop.hidden = true;
      jobId = null;
    }
  });
}
