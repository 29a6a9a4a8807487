"""`noise2art search`: a page of the infinite index (a query, more like an image, between, beyond)."""

from __future__ import annotations

import sys
from pathlib import Path

from noise2art import __version__
from noise2art.cli.common import (add_model_args, add_sampling_args, emit_json, load, sampling_overrides, slug,
                                  step_progress)
from noise2art.errors import InvalidArgument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "search", help="a page of results of the infinite index: a query, more like an image, between, beyond",
        description="Every query has endless results: page N of a stream is the same for everyone. --like IMAGE "
                    "gives images around one result, --between A B the positions between two (each page fills "
                    "the largest gaps), --beyond A B the path past B until it jumps. --toward CONCEPT steers "
                    "the query while it still answers it. Writes the page's PNGs and a contact sheet.")
    p.add_argument("query", nargs="?", default=None, help="the query (a prompt); not needed with --like, "
                                                          "--between or --beyond")
    p.add_argument("--negative", default="", help="negative prompt of the query")
    p.add_argument("--page", type=int, default=0, help="page number, from 0 (default 0)")
    p.add_argument("--page-size", type=int, default=24, help="results per page (default 24)")
    p.add_argument("--toward", default=None, metavar="CONCEPT", help="steer the query toward a concept")
    p.add_argument("--min-similarity", type=float, default=None,
                   help="with --toward: the steered embedding keeps at least this similarity to the query's "
                        "(default 0.9); lower steers harder")
    p.add_argument("--weight", type=float, default=None, help="with --toward: this weight instead of the chosen one")
    p.add_argument("--shared-seeds", action="store_true",
                   help="result k of every query uses the same noise (to compare queries)")
    anchors = p.add_mutually_exclusive_group()
    anchors.add_argument("--like", default=None, metavar="IMAGE.png", help="results around this image")
    anchors.add_argument("--between", nargs=2, default=None, metavar=("A.png", "B.png"),
                         help="results between two images")
    anchors.add_argument("--beyond", nargs=2, default=None, metavar=("A.png", "B.png"),
                         help="results past B on the path from A")
    p.add_argument("--similarity", type=float, default=None,
                   help="with --like: embedding similarity of each result to the image (default 0.95)")
    p.add_argument("--noise-strength", type=float, default=None,
                   help="with --like: how far each result's noise moves from the image's, 0..1 (default 0.3)")
    p.add_argument("--no-bridges", action="store_true",
                   help="with --between: keep every result on the path, its jumps unbridged (by default a jump is "
                        "crossed by a morph of the images on either side)")
    add_sampling_args(p)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: the stream, and each image's path, seed, idx (and attributes)")
    add_model_args(p)
    p.set_defaults(func=run_search)


def _check_args(args) -> str:
    """The stream kind, after the cheap checks (before any model loads)."""
    kind = "like" if args.like else "between" if args.between else "beyond" if args.beyond else "query"
    if kind == "query" and not (args.query and args.query.strip()):
        raise InvalidArgument("query", "give a query, or --like / --between / --beyond")
    if kind != "query" and args.query:
        raise InvalidArgument("query", f"--{kind} searches around images; leave the query out")
    if kind != "query" and (args.toward or args.shared_seeds):
        raise InvalidArgument("toward" if args.toward else "shared-seeds", "applies to a query only")
    if args.min_similarity is not None and not args.toward:
        raise InvalidArgument("min-similarity", "needs --toward")
    if args.weight is not None and not args.toward:
        raise InvalidArgument("weight", "needs --toward")
    if args.no_bridges and kind != "between":
        raise InvalidArgument("no-bridges", "needs --between")
    if kind != "like" and (args.similarity is not None or args.noise_strength is not None):
        raise InvalidArgument("similarity" if args.similarity is not None else "noise-strength", "needs --like")
    for path in [args.like] if args.like else (args.between or args.beyond or []):
        if not Path(path).is_file():
            raise InvalidArgument(kind, f"no such file: '{path}'")
    return kind


def read_anchor(model, path: str, kind: str):
    """An image written by noise2art -> (`Anchor`, its `GenerationParams`)."""
    from noise2art.methods.index import Anchor
    from noise2art.pngmeta import GenerationParams, read_params

    params = read_params(path)
    if not isinstance(params, GenerationParams):
        raise InvalidArgument(kind, f"'{path}' was not written by noise2art: its embedding and seed are unknown")
    if params.stream and params.stream.get("kind") != "query":
        raise InvalidArgument(kind, f"'{path}' is a {params.stream['kind']} result: its noise is not its seed's; "
                                    "start from a generated image or a query result")
    if params.embedding_file and Path(params.embedding_file).is_file():
        emb = model.load_embedding(params.embedding_file)
    else:
        emb = model.encode([params.prompt], params.negative)
    toward = (params.stream or {}).get("toward")
    if toward:  # a directed result: the same steering again
        from noise2art.methods.index import concept_direction, steer

        emb = steer(emb, concept_direction(model, emb, toward["concept"]), float(toward["weight"]))
    return Anchor(emb, int(params.seed)), params


def run_search(args) -> int:
    from noise2art.engine.model import to_pil
    from noise2art.engine.settings import SamplingOverrides
    from noise2art.files import write_bytes
    from noise2art.methods.index import Stream, StreamConfig, page_indices
    from noise2art.pngmeta import GenerationParams, png_bytes
    from noise2art.sheet import contact_sheet

    kind = _check_args(args)
    idxs = page_indices(args.page, args.page_size)
    asked = sampling_overrides(args)
    config = StreamConfig(seed_rule="shared" if args.shared_seeds else "derived", sampling=asked)
    if args.similarity is not None:
        config.similarity = args.similarity
    if args.noise_strength is not None:
        config.noise_strength = args.noise_strength
    if args.no_bridges:
        config.bridges = 0
    config.check()
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise InvalidArgument("out", f"'{out}' exists and is not a folder")

    model = load(args)
    if kind == "query":
        stream = Stream.query(model, args.query, config, negative=args.negative, toward=args.toward,
                              min_similarity=0.9 if args.min_similarity is None else args.min_similarity,
                              weight=args.weight)
        label = args.query
    else:
        paths = [args.like] if args.like else (args.between or args.beyond)
        anchors = [read_anchor(model, p, kind) for p in paths]
        # The anchors' own settings, unless a flag says otherwise.
        first = anchors[0][1]
        stored = SamplingOverrides(steps=first.steps, guidance=first.guidance,
                                   scheduler=None if first.scheduler == "default" else first.scheduler,
                                   height=first.height, width=first.width)
        config.sampling = stored.merged(asked)
        build = {"like": Stream.like, "between": Stream.between, "beyond": Stream.beyond}[kind]
        stream = build(model, *[a for a, _ in anchors], config)
        label = f"{kind} " + " & ".join(Path(p).stem for p in paths)

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument("out", f"cannot create '{out}' ({exc.strerror or exc})") from None
    calls = 1 + (len(idxs) - 1) // max(1, stream.settings.batch_size) + (1 if kind in ("between", "beyond") else 0)
    entries: list[dict] = []
    pils = []
    with step_progress(f"search page {args.page}", calls, enabled=not args.json) as step:
        results = stream.results(idxs, callback=step)
        images = stream.render(results, callback=step)
    attributes = None
    if model.companions.attributes is not None:
        import torch

        with torch.no_grad():
            attributes = model.companions.attributes.predict(images.to(model.device))
    stem = slug(label)
    for k, (result, image) in enumerate(zip(results, to_pil(images))):
        emb = result.embedding
        params = GenerationParams.from_settings(
            stream.settings, prompt=emb.prompts[0], negative=emb.negative[0], seed=result.seed,
            model=model.model_id, version=__version__, embedding_hash=emb.hash(), stream=result.record)
        path = out / f"{stem}_p{args.page}_{result.idx:05d}.png"
        write_bytes(path, png_bytes(image, params))
        pils.append(image)
        entry = {"path": str(path), "idx": result.idx, "seed": result.seed, **{
            key: result.record[key] for key in ("t", "toward", "similarity", "bridge") if key in result.record}}
        if attributes is not None:
            entry["attributes"] = attributes[k]
        entries.append(entry)
    sheet = out / f"{stem}_p{args.page}_sheet.png"
    write_bytes(sheet, _png(contact_sheet(pils, labels=[f"#{r.idx}" for r in results])))
    summary = {"stream": stream.id, "kind": kind, "page": args.page, "page_size": args.page_size,
               "settings": stream.settings.to_dict(), "sheet": str(sheet), "images": entries}
    if stream.direction is not None:
        summary["toward"] = stream.direction.record()
    if kind == "beyond":
        summary["end"] = stream.end
    if args.json:
        emit_json(summary)
    else:
        steered = (f", steered toward {stream.direction.concept!r} x{stream.direction.weight:.3g}"
                   if stream.direction else "")
        print(f"{kind} page {args.page}: {len(entries)} images (results {idxs.start}..{idxs.stop - 1}) of stream "
              f"{stream.id}{steered}; sheet {sheet}", file=sys.stderr)
    return 0


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
