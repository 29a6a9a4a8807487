"""The infinite index on the embedded model: directed queries and the spacing of between streams.

    python benchmarks/bench_index.py [--seeds 8] [--quick]

Directed queries: for (query, concept) pairs whose concept the world's caption parser maps
to one attribute value, render the query's first results undirected and steered at
similarity floors 0.95, 0.9, 0.85 and 0.8, and read them with the attribute classifiers:
the concept's rate (its family shows its value) and the adherence to the query's own named
attributes (`world.evaluation.score_predictions`).

Between: for pairs of (prompt, seed) anchors, the first 7 results of a between stream with
the two anchors' own images, ordered by t; the image-space steps (world CLIP) between
neighbours, max / mean, against 9 evenly spaced positions.
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


def between(model, coarse: int = 9) -> dict:
    from noise2art.methods.index import Anchor, Stream, StreamConfig
    from noise2art.methods.retime import model_distance, step_ratio

    distance = model_distance(model)
    out = []
    for (pa, sa), (pb, sb) in BETWEEN:
        stream = Stream.between(model, Anchor(model.encode([pa]), sa), Anchor(model.encode([pb]), sb),
                                StreamConfig(coarse=coarse))
        results = stream.results(range(7))
        path, _, _, _ = stream._path
        ts = sorted([0.0, 1.0] + [r.record["t"] for r in results])
        even = np.linspace(0, 1, 9)
        ratios = {}
        for name, positions in (("stream", ts), ("even", even)):
            alphas = torch.tensor(positions, dtype=torch.float64)
            from noise2art.methods.interpolate import render_frames

            images = render_frames(model, path.embeddings(alphas), path.noises(alphas), path.config)
            ratios[name] = step_ratio(distance(images[:-1], images[1:]))
        out.append({"a": pa, "b": pb, "ratio_stream": ratios["stream"], "ratio_even": ratios["even"]})
    return {"pairs": out, "max_ratio_stream": max(p["ratio_stream"] for p in out),
            "mean_ratio_stream": float(np.mean([p["ratio_stream"] for p in out])),
            "mean_ratio_even": float(np.mean([p["ratio_even"] for p in out]))}


def main() -> int:
    import noise2art

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=8, help="results per (pair, floor) (default 8)")
    p.add_argument("--quick", action="store_true", help="4 results per (pair, floor)")
    args = p.parse_args()
    model = noise2art.load_model()
    t = time.perf_counter()
    report = {"directed": directed(model, 4 if args.quick else args.seeds)}
    report["between"] = between(model)
    report["seconds"] = time.perf_counter() - t
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
