"""The metric registry: registration, spec parsing, weighted sums, model-backed metrics."""

from __future__ import annotations

import pytest
import torch

from noise2art.errors import InvalidArgument, Noise2ArtError
from noise2art.metrics import (
    Metric,
    MetricContext,
    MetricUnavailable,
    brightness,
    contrast,
    get_metric,
    list_metrics,
    register,
    sharpness,
    unregister,
)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, 12, 10, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def scratch_names():
    """Names registered by a test, removed afterwards so tests stay independent."""
    names: list[str] = []
    yield names
    for name in names:
        if name in {m.name for m in list_metrics()}:
            unregister(name)


def fake_aesthetic(images: torch.Tensor) -> torch.Tensor:
    return images.mean(dim=(1, 2, 3)) * 10


def test_builtins_are_listed_with_direction_scale_and_needs():
    metrics = {m.name: m for m in list_metrics()}
    builtins = {"sharpness", "blurriness", "colorfulness", "brightness", "contrast", "aesthetic", "text"}
    assert builtins <= set(metrics)
    assert metrics["sharpness"].higher_is_better and metrics["sharpness"].loss_scale == 10
    assert not metrics["blurriness"].higher_is_better and metrics["blurriness"].loss_scale == 10
    assert metrics["aesthetic"].loss_scale == 1 and metrics["aesthetic"].needs == "aesthetic"
    assert metrics["text"].needs == "text" and metrics["text"].argument == "prompt"
    assert metrics["sharpness"].needs is None and metrics["sharpness"].bound
    assert not metrics["aesthetic"].bound
    assert all(m.description for m in metrics.values())


def test_plain_name(images):
    metric = get_metric("sharpness")
    assert isinstance(metric, Metric) and metric.name == "sharpness"
    torch.testing.assert_close(metric(images), sharpness(images))


def test_unknown_name_lists_known_metrics():
    with pytest.raises(InvalidArgument) as info:
        get_metric("beauty")
    assert isinstance(info.value, ValueError) and info.value.name == "metric"
    message = str(info.value)
    assert "unknown metric 'beauty'" in message and "sharpness" in message and "contrast" in message


def test_weighted_sum_orients_each_part(images):
    combo = get_metric("sharpness-0.1*brightness")
    assert combo.higher_is_better and combo.loss_scale == 1.0
    torch.testing.assert_close(combo(images), sharpness(images) - 0.1 * brightness(images))

    # blurriness is lower-is-better: it enters the sum negated.
    torch.testing.assert_close(get_metric("2*blurriness")(images), -2 * sharpness(images))
    torch.testing.assert_close(get_metric("-blurriness")(images), sharpness(images))
    torch.testing.assert_close(get_metric("2*contrast")(images), 2 * contrast(images))
    torch.testing.assert_close(
        get_metric(" 1e-1 * contrast + brightness ")(images), 0.1 * contrast(images) + brightness(images)
    )
    assert [w for w, _ in get_metric("sharpness-0.1*brightness").parts] == [1.0, -0.1]


def test_weighted_sum_with_a_model_metric(images):
    combo = get_metric("aesthetic+0.5*sharpness", MetricContext(aesthetic=fake_aesthetic))
    torch.testing.assert_close(combo(images), fake_aesthetic(images) + 0.5 * sharpness(images))
    assert combo.needs == "aesthetic"


@pytest.mark.parametrize(
    "spec",
    ["", "   ", "sharpness+", "0.5sharpness", "sharpness 0.5", "sharpness++contrast", "0.5*", "*sharpness",
     "sharpness*2", "aesthetic+0.5", 'text:"unclosed'],
)
def test_malformed_specs(spec):
    with pytest.raises(InvalidArgument) as info:
        get_metric(spec, MetricContext(aesthetic=fake_aesthetic, image_text=lambda i, t: i.mean((1, 2, 3))))
    assert info.value.name == "metric"


@pytest.mark.parametrize("spec", ["nan*sharpness", "sharpness+NaN*contrast", "inf*sharpness"])
def test_non_finite_weight(spec):
    with pytest.raises(InvalidArgument, match="finite"):
        get_metric(spec)


def test_text_metric_receives_the_prompt(images):
    seen: list[str] = []

    def image_text(batch: torch.Tensor, text: str) -> torch.Tensor:
        seen.append(text)
        return batch.mean(dim=(1, 2, 3))

    context = MetricContext(image_text=image_text)
    metric = get_metric("text:a red-ball + sky", context)
    assert metric.name == "text:a red-ball + sky" and metric.needs == "text"
    metric(images)
    assert seen == ["a red-ball + sky"]  # unquoted: runs to the end of the spec

    combo = get_metric('sharpness + 2*text:"a cat" - 0.5*brightness', context)
    expected = sharpness(images) + 2 * images.mean(dim=(1, 2, 3)) - 0.5 * brightness(images)
    torch.testing.assert_close(combo(images), expected)
    assert seen[-1] == "a cat"


def test_argument_errors():
    with pytest.raises(InvalidArgument, match="text:<prompt>"):
        get_metric("text", MetricContext(image_text=lambda i, t: i))
    with pytest.raises(InvalidArgument, match="takes no argument"):
        get_metric("sharpness:x")


def test_missing_model_says_what_to_load(images):
    with pytest.raises(MetricUnavailable) as info:
        get_metric("aesthetic")
    assert isinstance(info.value, Noise2ArtError)
    assert "load_laion_aesthetic" in str(info.value) and "aesthetic" in str(info.value)
    with pytest.raises(MetricUnavailable, match="image_text"):
        get_metric("text:a cat", object())
    # An unbound metric from list_metrics cannot score.
    unbound = next(m for m in list_metrics() if m.name == "aesthetic")
    with pytest.raises(MetricUnavailable):
        unbound(images)


def test_context_may_be_any_object_or_mapping(images):
    class Model:
        aesthetic = staticmethod(fake_aesthetic)

    torch.testing.assert_close(get_metric("aesthetic", Model())(images), fake_aesthetic(images))
    from_mapping = get_metric("aesthetic", {"aesthetic": fake_aesthetic})
    torch.testing.assert_close(from_mapping(images), fake_aesthetic(images))


def test_register_function_and_decorator(images, scratch_names):
    scratch_names += ["redness", "greenness"]
    metric = register("redness", lambda x: x[:, 0].mean(dim=(1, 2)), description="mean red")
    assert metric.name == "redness" and get_metric("redness").description == "mean red"

    @register("greenness", higher_is_better=False, loss_scale=2.0)
    def greenness(x: torch.Tensor) -> torch.Tensor:
        return x[:, 1].mean(dim=(1, 2))

    assert callable(greenness)  # the decorator returns the function itself
    metric = get_metric("greenness")
    assert not metric.higher_is_better and metric.loss_scale == 2.0
    torch.testing.assert_close(metric.loss(images), 2.0 * images[:, 1].mean(dim=(1, 2)))
    expected = images[:, 0].mean((1, 2)) - images[:, 1].mean((1, 2))  # greenness enters negated
    torch.testing.assert_close(get_metric("redness+greenness")(images), expected)


def test_register_factory(images, scratch_names):
    scratch_names.append("hue_of")

    def factory(context, argument):
        return lambda x: x[:, int(argument)].mean(dim=(1, 2)) * context["gain"]

    register("hue_of", factory=factory, argument="channel")
    torch.testing.assert_close(get_metric("hue_of:2", {"gain": 3.0})(images), 3.0 * images[:, 2].mean((1, 2)))


def test_reregistering_needs_replace(scratch_names):
    scratch_names.append("dup")
    register("dup", brightness)
    with pytest.raises(InvalidArgument, match="already registered"):
        register("dup", contrast)
    register("dup", contrast, replace=True)
    assert get_metric("dup").fn is contrast
    unregister("dup")
    with pytest.raises(InvalidArgument):
        get_metric("dup")


@pytest.mark.parametrize("name", ["a+b", "2x", "with space", "te:xt", ""])
def test_bad_names(name):
    with pytest.raises(InvalidArgument):
        register(name, brightness)


def test_bad_loss_scale_and_fn_plus_factory(scratch_names):
    with pytest.raises(InvalidArgument, match="loss_scale"):
        register("scaled", brightness, loss_scale=float("nan"))
    with pytest.raises(InvalidArgument):
        register("both", brightness, factory=lambda c: brightness)


def test_loss_is_negated_scaled_score(images):
    sharp, blur = get_metric("sharpness"), get_metric("blurriness")
    torch.testing.assert_close(sharp.loss(images), -10 * sharpness(images))
    torch.testing.assert_close(blur.loss(images), 10 * sharpness(images))
    torch.testing.assert_close(blur.oriented(images), -sharpness(images))


def test_scores_must_be_one_per_image(images, scratch_names):
    scratch_names += ["column", "broken"]
    register("column", lambda x: x.mean(dim=(1, 2, 3)).unsqueeze(-1))  # [B, 1] is accepted
    assert get_metric("column")(images).shape == (3,)
    register("broken", lambda x: x.mean())
    with pytest.raises(InvalidArgument, match="broken"):
        get_metric("broken")(images)


def test_metric_call_checks_images():
    with pytest.raises(InvalidArgument, match=r"images.*\[3, 8, 8\]"):
        get_metric("brightness")(torch.rand(3, 8, 8))
