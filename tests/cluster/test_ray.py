"""On a local two-node Ray cluster (two raylets on this machine), started and stopped here:
the index build gives the in-process files, a killed worker's pages are redone and none is
stored twice, the studies split the same way, and Serve batches concurrent requests."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("ray.serve")

from noise2art.cluster.index import RayIndexConfig, ray_runner  # noqa: E402
from noise2art.cluster.runtime import ModelSpec  # noqa: E402
from noise2art.indexing.build import IndexBuildConfig, QuerySpec, build_index  # noqa: E402
from noise2art.store import Store  # noqa: E402

pytestmark = pytest.mark.slow

QUERIES = [QuerySpec("a red ball"), QuerySpec("a blue cube"), QuerySpec("a green pyramid")]
CONFIG = dict(pages=2, page_size=2, sampling={"steps": 2})


@pytest.fixture(scope="module")
def cluster():
    """A head node and a second node, 2 CPUs each; Ray's files under a fresh /tmp folder
    (its socket paths must stay short), removed with the cluster."""
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="n2a-ray-", dir="/tmp")
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp  # where Ray keeps the address of the cluster it started
    os.makedirs(os.path.join(temp, "ray"))  # (which this Ray version does not create itself)
    c = None
    try:
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "temp_dir": os.path.join(temp, "ray"),
                                                          "include_dashboard": False})
        c.add_node(num_cpus=2)
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        yield c
    finally:
        if ray.is_initialized():
            try:
                from ray import serve

                serve.shutdown()
            except Exception:  # nothing deployed, or already gone
                pass
            ray.shutdown()
        if c is not None:
            c.shutdown()
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    """The in-process build: the files every Ray build must reproduce."""
    report = build_index(tiny_model, Store(tmp_path_factory.mktemp("local")), QUERIES, IndexBuildConfig(**CONFIG))
    assert len(report.images) == 12
    return report.images


def spec(path) -> ModelSpec:
    return ModelSpec(str(path), device="cpu")


def image_rows(store: Store) -> int:
    return store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]


def test_index_build_on_two_nodes_gives_the_in_process_files(cluster, tiny_model, tiny_sd_path, reference, tmp_path):
    store = Store(tmp_path / "data")
    workers = set()
    runner = ray_runner(spec(tiny_sd_path), RayIndexConfig(actors=2))
    report = build_index(tiny_model, store, QUERIES, IndexBuildConfig(**CONFIG), runner=runner,
                         on_page=lambda out, status, done, total: workers.add(out.worker))
    assert report.images == reference
    assert report.rendered == 6 and report.duplicates == 0
    assert image_rows(store) == 12 and store.check().ok
    assert os.getpid() not in workers  # rendered by the actors, not here


def test_a_killed_worker_loses_no_page_and_duplicates_none(cluster, tiny_model, tiny_sd_path, reference, tmp_path):
    store = Store(tmp_path / "data")
    killed = []

    def on_page(out, status, done, total) -> None:
        # After the first page is stored, kill the process that rendered it: its actor
        # restarts and whatever it held is rendered again.
        if not killed:
            killed.append((out.worker, done, total))
            os.kill(out.worker, signal.SIGKILL)

    runner = ray_runner(spec(tiny_sd_path), RayIndexConfig(actors=2))
    report = build_index(tiny_model, store, QUERIES, IndexBuildConfig(**CONFIG), runner=runner, on_page=on_page)
    assert killed and killed[0][1] < killed[0][2]  # mid-build: pages were still to come
    assert report.images == reference
    assert report.rendered == 6
    # Each result is one image row, each file one blob: nothing stored twice.
    assert image_rows(store) == 12
    assert store.db.execute("SELECT COUNT(DISTINCT sha256) FROM images").fetchone()[0] == 12
    assert len(list(store.blobs.files())) == 12 + 3  # the images and the three query embeddings


def test_retrievability_pairs_on_ray_match_in_process(cluster, tiny_model, tiny_sd_path):
    from noise2art.cluster.studies import retrievability_on_ray
    from noise2art.engine.settings import SamplingOverrides
    from noise2art.methods.interpolate import InterpolationConfig
    from noise2art.methods.retrievability import RetrievabilityConfig, retrievability

    config = InterpolationConfig(frames=2, sampling=SamplingOverrides(steps=2))
    study = RetrievabilityConfig(fine=5)
    pairs = [(tiny_model.encode([a]), tiny_model.encode([b])) for a, b in (("a red ball", "a blue cube"),
                                                                           ("a cube", "a pyramid"))]
    remote = retrievability_on_ray(spec(tiny_sd_path), pairs, config, study, actors=2)
    local = [retrievability(tiny_model, a, b, config, study) for a, b in pairs]
    assert [r.summary() for r in remote] == [r.summary() for r in local]


def test_serve_batches_concurrent_requests(cluster, tiny_model, tiny_sd_path):
    from noise2art.cluster import serving
    from noise2art.engine.settings import SamplingOverrides

    config = serving.ServeConfig(name="n2a-test", max_batch_size=8, batch_wait_timeout_s=0.5, cpus_per_replica=1)
    handle = serving.start(spec(tiny_sd_path), config)
    try:
        settings = tiny_model.resolve(SamplingOverrides(steps=2))
        prompts = ["a red ball", "a blue cube", "a green pyramid", "a cube", "a ball", "a pyramid"]
        generate = serving.RemoteGenerator(handle)
        embeddings = [tiny_model.encode([p]) for p in prompts]  # here: the encoder is not thread-safe
        answers: dict[int, tuple] = {}

        def client(k: int) -> None:  # one client per thread, all at once
            answers[k] = generate(embeddings[k], [k], settings)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(answers) == list(range(len(prompts)))
        sizes = handle.batch_sizes.remote().result()
        assert sum(sizes) == len(prompts) and max(sizes) > 1, sizes
        for k, (images, ran, batch_seeds) in answers.items():
            assert images.shape[0] == 1 and k in batch_seeds and ran.steps == 2
        # A request alone in its batch is the image this process renders for it.
        alone = generate(tiny_model.encode([prompts[0]]), [0], settings)
        local = tiny_model.decode(tiny_model.sample(tiny_model.encode([prompts[0]]), [0], settings=settings,
                                                    pairing="zip", batch_size=1), batch_size=1).float().cpu()
        assert (alone[0] - local).abs().max().item() < 1e-5
    finally:
        serving.stop(config)


def test_serve_on_ray_generates_through_the_api(cluster, tiny_model, tiny_sd_path, tmp_path):
    """`serve --ray`: the app and its store stay here, the worker's batches go to Serve."""
    from fastapi.testclient import TestClient

    from noise2art.cluster import serving
    from noise2art.service.app import create_app
    from noise2art.service.config import ServiceConfig

    config = serving.ServeConfig(name="n2a-api-test", max_batch_size=4, cpus_per_replica=1)
    handle = serving.start(spec(tiny_sd_path), config)
    try:
        app = create_app(ServiceConfig(data=tmp_path / "data"), model=tiny_model)
        serving.attach(app, serving.RemoteGenerator(handle))
        with TestClient(app, base_url="http://localhost:8000") as client:
            assert app.state.worker.generator is not None
            r = client.post("/api/v1/generate", json={"prompt": "a red ball", "seeds": [1, 2], "steps": 2})
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            import time

            deadline = time.monotonic() + 120
            while (job := client.get(f"/api/v1/jobs/{job_id}").json())["status"] not in ("completed", "failed"):
                assert time.monotonic() < deadline, job
                time.sleep(0.1)
            assert job["status"] == "completed", job
            assert len(job["result"]["image_ids"]) == 2
            image = app.state.store.get_image(job["result"]["image_ids"][0])
            assert app.state.store.blobs.verify(image["sha256"], "png") is None
        assert sum(handle.batch_sizes.remote().result()) >= 1  # the deployment rendered it
    finally:
        serving.stop(config)


def test_world_eval_on_ray_matches_in_process(cluster):
    import noise2art
    from noise2art.cluster.studies import evaluate_on_ray
    from noise2art.engine.settings import SamplingOverrides
    from noise2art.world.captions import parse
    from noise2art.world.evaluation import evaluate

    prompts = [(p, parse(p)) for p in ("a red ball", "mountain with a lake at sunset")]
    sampling = SamplingOverrides(steps=2)
    remote = evaluate_on_ray(ModelSpec(device="cpu"), prompts, seeds=2, sampling=sampling, actors=2)
    local = evaluate(noise2art.load_model(device="cpu"), prompts, seeds=2, sampling=sampling, frechet=False)
    assert remote.to_json() == local.to_json()
