"""The studies on Ray: their work split item by item over model actors (`pool.map_on_models`).

- retrievability over a pairs file: one pair per task, results in the file's order, each
  the same `methods.retrievability.retrievability` result the in-process loop gives.
- `world eval`: one prompt per task (its seeds render together, as in-process); the
  per-prompt reports are combined exactly as `world.evaluation.evaluate` combines them.
  The Frechet distance needs every image's features in one place and its reference
  renders are drawn per prompt position, so it is left to the in-process run (None here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from noise2art.cluster.pool import map_on_models
from noise2art.cluster.runtime import ModelSpec


def _pair_task(model, item):
    from noise2art.methods.retrievability import retrievability

    a, b, config, study = item
    return retrievability(model, a.to(model.device, model.dtype), b.to(model.device, model.dtype), config, study)


def retrievability_on_ray(spec: ModelSpec, pairs: Sequence[tuple], config, study, *, actors: int | None = None,
                          progress: Callable[[int], None] | None = None) -> list:
    """`retrievability(model, a, b, config, study)` for each `(a, b)` pair (embeddings of batch 1), in order."""
    items = [(a.to("cpu"), b.to("cpu"), config, study) for a, b in pairs]
    out = []
    for result in map_on_models(spec, _pair_task, items, actors=actors):
        out.append(result)
        if progress is not None:
            progress(len(out))
    return out


def _prompt_task(model, item):
    from noise2art.world.evaluation import evaluate

    prompt, seeds, sampling = item
    return evaluate(model, [prompt], seeds=seeds, sampling=sampling, frechet=False).prompts[0]


def evaluate_on_ray(spec: ModelSpec, prompts: list[tuple[str, dict]], *, seeds: int, sampling=None,
                    actors: int | None = None, progress: Callable[[int, int], None] | None = None):
    """`world.evaluation.evaluate(..., frechet=False)` with one prompt per task; an `EvalReport`."""
    from noise2art.world.evaluation import EvalReport

    reports = []
    for report in map_on_models(spec, _prompt_task, [(p, seeds, sampling) for p in prompts], actors=actors):
        reports.append(report)
        if progress is not None:
            progress(len(reports), len(prompts))
    return EvalReport.summarise(reports, seeds, frechet=None)

