"""The infinite index on the embedded model: directed queries and the spacing of between streams.

    python benchmarks/bench_index.py [--seeds 8] [--quick]
    python benchmarks/bench_index.py --between-only [--shapes together] [--no-bridges] [--quality preview]
    python benchmarks/bench_index.py --path-shapes [--grid 65]

Directed queries: for (query, concept) pairs whose concept the world's caption parser maps
to one attribute value, render the query's first results undirected and steered at
similarity floors 0.95, 0.9, 0.85 and 0.8, and read them with the attribute classifiers:
the concept's rate (its family shows its value) and the adherence to the query's own named
attributes (`world.evaluation.score_predictions`).

Between: for pairs of (prompt, seed) anchors, the first 7 results of a between stream with
the two anchors' own images, ordered by t; the image-space steps (world CLIP) between
neighbours, max / mean, against 9 evenly spaced positions.

`--path-shapes` measures the paths themselves: each pair's path on a dense grid of t,
moving embedding and noise together (the stream's path), the embedding first, or the
noise first, and prints the largest single step as a share of the whole path's change.
A step holding a share f of the change makes max / mean >= 8 f over 8 steps, however the
results are placed.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

PAIRS = [
    ("a landscape", "at night"), ("a landscape", "sunset"), ("a landscape", "oil painting"),
    ("a landscape", "watercolor"), ("a landscape", "a desert"), ("a landscape", "pixel art"),
    ("mountains with a lake", "at night"), ("mountains with a lake", "sketch"),
    ("mountains with a lake", "sunset"), ("a forest", "watercolor"), ("a forest", "at night"),
    ("a forest", "oil painting"),
    ("a ball", "red"), ("a ball", "blue"), ("a ball", "oil painting"), ("a ball", "pixel art"),
    ("a cube", "green"), ("a cube", "watercolor"), ("a pyramid", "yellow"), ("a pyramid", "sketch"),
]
FLOORS = (None, 0.95, 0.9, 0.85, 0.8)
BETWEEN = [(("a red ball", 1), ("a blue cube", 2)), (("a landscape at sunset", 3), ("a landscape at night", 4)),
           (("mountains with a lake", 5), ("a desert, oil painting", 6)), (("a green pyramid", 7), ("a pink ball", 8)),
           (("a forest", 9), ("a snowy landscape, watercolor", 10)), (("a yellow cube", 11), ("a purple cube", 12))]


def concept_value(query: str, concept: str) -> tuple[str, str]:
    from noise2art.world.captions import parse

    base, steered = parse(query), parse(f"{query}, {concept}")
    new = {k: v for k, v in steered.items() if base.get(k) != v}
    if len(new) != 1:
        raise ValueError(f"concept {concept!r} does not name one attribute for {query!r}: {new}")
    return next(iter(new.items()))


def directed(model, seeds: int) -> dict:
    from noise2art.methods.index import Stream, StreamConfig
    from noise2art.world.captions import parse
    from noise2art.world.evaluation import score_predictions

    classify = model.companions.attributes.predict
    rows = []
    for query, concept in PAIRS:
        family, value = concept_value(query, concept)
        named = parse(query)
        for floor in FLOORS:
            if floor is None:
                stream = Stream.query(model, query, StreamConfig())
            else:
                stream = Stream.query(model, query, StreamConfig(), toward=concept, min_similarity=floor)
            images = stream.render(stream.results(range(seeds)))
            with torch.no_grad():
                preds = classify(images.to(model.device))
            adherence, _ = score_predictions(named, preds)
            rate = float(np.mean([p.get(family) == value for p in preds]))
            rows.append({"query": query, "concept": concept, "floor": floor,
                         "weight": stream.direction.weight if stream.direction else 0.0,
                         "concept_rate": rate, "adherence": adherence})
    by_floor = {}
    for floor in FLOORS:
        sel = [r for r in rows if r["floor"] == floor]
        by_floor[str(floor)] = {"concept_rate": float(np.mean([r["concept_rate"] for r in sel])),
                                "adherence": float(np.mean([r["adherence"] for r in sel if r["adherence"] is not None])),
                                "weight": float(np.mean([r["weight"] for r in sel]))}
    return {"pairs": len(PAIRS), "seeds": seeds, "by_floor": by_floor, "rows": rows}


def between(model, coarse: int = 9, shapes: tuple[str, ...] | None = None, bridges: int | None = None,
            quality: str | None = None) -> dict:
    from noise2art.engine.settings import SamplingOverrides
    from noise2art.methods.index import Anchor, Stream, StreamConfig
    from noise2art.methods.interpolate import render_frames
    from noise2art.methods.retime import model_distance, step_ratio
    from noise2art.metrics.features import distance_to_angle

    distance = model_distance(model)
    out = []
    for (pa, sa), (pb, sb) in BETWEEN:
        config = StreamConfig(coarse=coarse, sampling=SamplingOverrides(quality=quality))
        if shapes is not None:
            config.shapes = shapes
        if bridges is not None:
            config.bridges = bridges
        stream = Stream.between(model, Anchor(model.encode([pa]), sa), Anchor(model.encode([pb]), sb), config)
        results = stream.results(range(7))
        measured = stream.measured
        ts = torch.tensor(sorted([0.0, 1.0] + [r.record["t"] for r in results]), dtype=torch.float64)
        even = torch.linspace(0, 1, 9, dtype=torch.float64)
        ratios = {}
        # The stream's results as drawn (bridges included), against evenly spaced points
        # of the path it measured, before any bridge.
        embeddings, noises = stream.path_point(even)
        for name, images in (("stream", stream.render_at(ts)),
                             ("even", render_frames(model, embeddings, noises, measured.path.config))):
            d = distance(images[:-1], images[1:])
            ratios[name] = step_ratio(d)
            ratios[name + "_angle"] = step_ratio(distance_to_angle(d.double()))
        out.append({"a": pa, "b": pb, "shape": measured.shape, "bridges": [b.record() for b in measured.bridges],
                    "bridged_results": sum("bridge" in r.record for r in results), "renders": len(measured.alphas),
                    "ratio_stream": ratios["stream"], "ratio_even": ratios["even"],
                    "ratio_stream_angle": ratios["stream_angle"], "ratio_even_angle": ratios["even_angle"]})
    summary = {"pairs": out}
    for key in ("ratio_stream", "ratio_stream_angle", "ratio_even", "ratio_even_angle"):
        summary["max_" + key] = max(p[key] for p in out)
        summary["mean_" + key] = float(np.mean([p[key] for p in out]))
    return summary


def path_shapes(model, grid: int) -> list[dict]:
    """Per pair and path shape: the largest grid step's share of the path's total change."""
    from noise2art.methods.interpolate import InterpolationConfig, InterpolationPath, render_frames
    from noise2art.methods.retime import model_distance

    distance = model_distance(model)
    t = torch.linspace(0, 1, grid, dtype=torch.float64)
    shapes = {"together": (t, t), "embedding first": ((2 * t).clamp(0, 1), (2 * t - 1).clamp(0, 1)),
              "noise first": ((2 * t - 1).clamp(0, 1), (2 * t).clamp(0, 1))}
    out = []
    for (pa, sa), (pb, sb) in BETWEEN:
        cfg = InterpolationConfig(frames=9, seed=sa, seed_to=sb, range=(0.0, 1.0))
        path = InterpolationPath(model, [model.encode([pa]), model.encode([pb])], cfg)
        row = {"a": pa, "b": pb}
        for name, (along_embedding, along_noise) in shapes.items():
            images = render_frames(model, path.embeddings(along_embedding), path.noises(along_noise), cfg)
            steps = distance(images[:-1], images[1:]).double()
            row[name] = float(steps.max() / steps.sum())
        out.append(row)
    return out


def main() -> int:
    import noise2art

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=8, help="results per (pair, floor) (default 8)")
    p.add_argument("--quick", action="store_true", help="4 results per (pair, floor)")
    p.add_argument("--between-only", action="store_true", help="only the between streams")
    p.add_argument("--shapes", default=None, help="between: the path shapes a stream measures, comma-separated "
                                                  "(default: all of methods.index.PATH_SHAPES)")
    p.add_argument("--no-bridges", action="store_true", help="between: leave the path's jumps unbridged")
    p.add_argument("--quality", choices=("full", "preview"), default=None,
                   help="between: the streams' quality (default: the model's own settings, full)")
    p.add_argument("--path-shapes", action="store_true", help="only the largest-step share of three path shapes")
    p.add_argument("--grid", type=int, default=65, help="positions per path for --path-shapes (default 65)")
    args = p.parse_args()
    model = noise2art.load_model()
    if args.path_shapes:
        print(json.dumps({"path_shapes": path_shapes(model, args.grid)}))
        return 0
    t = time.perf_counter()
    report = {} if args.between_only else {"directed": directed(model, 4 if args.quick else args.seeds)}
    report["between"] = between(model, shapes=tuple(args.shapes.split(",")) if args.shapes else None,
                                bridges=0 if args.no_bridges else None, quality=args.quality)
    report["seconds"] = time.perf_counter() - t
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
