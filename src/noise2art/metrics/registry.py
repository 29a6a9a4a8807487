"""The metric registry: named, differentiable image scores.

A metric maps a batch of images ``[B, 3, H, W]`` (float, values in ``[0, 1]``) to one
score per image ``[B]``, differentiably, so that an optimiser can follow its gradient
back to a prompt embedding (docs/optimize.md). Each metric declares its direction
(``higher_is_better``), the scale the optimiser multiplies it by (``loss_scale``:
``loss = -(score * loss_scale)`` for a metric to maximise) and what it needs to run
(``needs``: ``None`` for pixel statistics, ``"aesthetic"`` or ``"text"`` for metrics
that need a model).

Metrics that need a model are registered as *factories*: ``factory(context)`` (or
``factory(context, argument)`` for specs like ``text:<prompt>``) looks the model up on
``context`` and returns the scoring function. ``context`` is any object with the
needed attribute (the engine's ``Model``, a :class:`MetricContext`, a mapping).

Specs understood by :func:`get_metric`::

    sharpness                      a registered name
    text:a red ball                a name with an argument (runs to the end of the spec)
    text:"a red-ball"+sharpness    a quoted argument, so more terms may follow
    aesthetic+0.5*sharpness        a weighted sum
    sharpness-0.1*brightness       ... with negative weights
    2*contrast                     a single scaled term

A weighted sum scores ``sum_i w_i * s_i`` where ``s_i`` is part i's score oriented so
that higher is better (a part with ``higher_is_better=False`` contributes its negated
score). The sum is ``higher_is_better=True`` with ``loss_scale=1``: the parts' own loss
scales are not applied, the weights are the only scaling.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from noise2art.errors import InvalidArgument, Noise2ArtError

MetricFn = Callable[[torch.Tensor], torch.Tensor]
"""``images [B, 3, H, W] in [0, 1] -> scores [B]``."""

MetricFactory = Callable[..., MetricFn]
"""``factory(context) -> MetricFn`` or, for metrics with an argument,
``factory(context, argument) -> MetricFn``."""

# Values a decoded image may overshoot [0, 1] by (float rounding in the VAE's
# `x / 2 + 0.5`) without being rejected as out of range.
_RANGE_TOLERANCE = 1e-3

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(
    r"(?:nan|inf(?:inity)?|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)", re.IGNORECASE
)


class MetricUnavailable(Noise2ArtError):
    """A metric needs a model (an aesthetic scorer, an image-text model) that the
    context does not provide; the message says what to load."""


@runtime_checkable
class AestheticScorer(Protocol):
    """What ``context.aesthetic`` must be: ``images [B, 3, H, W] in [0, 1] -> [B]``."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ImageTextScorer(Protocol):
    """What ``context.image_text`` must be: ``(images [B, 3, H, W] in [0, 1], text)
    -> similarity [B]`` (higher means the image matches the text better)."""

    def __call__(self, images: torch.Tensor, text: str) -> torch.Tensor: ...


@dataclass
class MetricContext:
    """A minimal context for model-backed metrics, when no engine ``Model`` is at hand:
    ``get_metric("aesthetic", MetricContext(aesthetic=scorer))``."""

    aesthetic: AestheticScorer | None = None
    image_text: ImageTextScorer | None = None


@dataclass(frozen=True)
class Metric:
    """A named image metric.

    A *bound* metric has ``fn`` and can be called on images. A metric registered
    with a ``factory`` is unbound until :func:`get_metric` (or :meth:`bind`) gives it
    a context. ``parts`` lists ``(weight, metric)`` for a weighted sum.
    """

    name: str
    fn: MetricFn | None = None
    higher_is_better: bool = True
    needs: str | None = None
    loss_scale: float = 1.0
    description: str = ""
    factory: MetricFactory | None = field(default=None, repr=False)
    argument: str | None = None
    parts: tuple[tuple[float, Metric], ...] = ()

    @property
    def bound(self) -> bool:
        """Whether the metric can score images now."""
        return self.fn is not None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Score ``images [B, 3, H, W]`` in ``[0, 1]``; returns ``scores [B]``."""
        check_images(images)
        return self._score(images)

    def _score(self, images: torch.Tensor) -> torch.Tensor:
        if self.fn is None:
            raise MetricUnavailable(
                f"metric '{self.name}' needs {self.needs or 'a model'}; "
                f"get it bound with get_metric('{self.name}', context)"
            )
        scores = self.fn(images)
        batch = images.shape[0]
        if not isinstance(scores, torch.Tensor) or scores.numel() != batch:
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
            raise InvalidArgument(
                "metric", f"'{self.name}' returned {shape}, expected one score per image [{batch}]"
            )
        # Scorers that keep a trailing singleton dimension (an MLP head's [B, 1]) are
        # accepted: the contract is one score per image.
        return scores.reshape(batch)

    def oriented(self, images: torch.Tensor) -> torch.Tensor:
        """Scores ``[B]`` turned so that higher is always better."""
        scores = self(images)
        return scores if self.higher_is_better else -scores

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image loss ``[B]`` to minimise: ``-(oriented score * loss_scale)``
        (docs/optimize.md)."""
        return -(self.oriented(images) * self.loss_scale)

    def bind(self, context: Any = None, argument: str | None = None) -> Metric:
        """The metric with its scoring function built from ``context``.

        A plain metric is returned unchanged (it needs no context). Raises
        :class:`MetricUnavailable` when the context lacks the needed model and
        ``InvalidArgument`` when the argument is missing or not expected.
        """
        if self.argument is None and argument is not None:
            raise InvalidArgument("metric", f"'{self.name}' takes no argument (got '{self.name}:{argument}')")
        if self.argument is not None and not argument:
            raise InvalidArgument(
                "metric", f"'{self.name}' needs a {self.argument}: write {self.name}:<{self.argument}>"
            )
        if self.factory is None:
            return self
        if self.argument is None:
            return dataclasses.replace(self, fn=self.factory(context))
        return dataclasses.replace(
            self, name=f"{self.name}:{argument}", fn=self.factory(context, argument)
        )


_REGISTRY: dict[str, Metric] = {}


def register(
    name: str,
    fn: MetricFn | None = None,
    *,
    factory: MetricFactory | None = None,
    higher_is_better: bool = True,
    needs: str | None = None,
    loss_scale: float = 1.0,
    description: str = "",
    argument: str | None = None,
    replace: bool = False,
) -> Any:
    """Register a metric under ``name``.

    Give either ``fn`` (``images [B, 3, H, W] -> scores [B]``) or ``factory``
    (``factory(context) -> fn``; ``factory(context, argument) -> fn`` when
    ``argument`` names what follows ``name:`` in a spec, e.g. ``"prompt"``). With
    neither, returns a decorator that registers the decorated function as ``fn``
    and returns it unchanged. Registering a taken name raises unless ``replace``.
    Returns the :class:`Metric` (or the decorator).
    """
    if fn is not None and factory is not None:
        raise InvalidArgument("fn", f"metric '{name}': give fn or factory, not both")
    if fn is None and factory is None:

        def decorator(function: MetricFn) -> MetricFn:
            register(
                name,
                function,
                higher_is_better=higher_is_better,
                needs=needs,
                loss_scale=loss_scale,
                description=description,
                argument=argument,
                replace=replace,
            )
            return function

        return decorator

    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(
            "name", f"metric names are letters, digits and '_', not starting with a digit; got {name!r}"
        )
    if not (isinstance(loss_scale, int | float) and math.isfinite(loss_scale) and loss_scale > 0):
        raise InvalidArgument("loss_scale", f"must be a finite number > 0, got {loss_scale!r}")
    if name in _REGISTRY and not replace:
        raise InvalidArgument("name", f"metric '{name}' is already registered (pass replace=True)")
    metric = Metric(
        name=name,
        fn=fn,
        higher_is_better=bool(higher_is_better),
        needs=needs,
        loss_scale=float(loss_scale),
        description=description,
        factory=factory,
        argument=argument,
    )
    _REGISTRY[name] = metric
    return metric


def unregister(name: str) -> None:
    """Remove a registered metric (unknown names raise ``InvalidArgument``)."""
    _lookup(name)
    del _REGISTRY[name]


def list_metrics() -> list[Metric]:
    """All registered metrics, sorted by name (model-backed ones unbound)."""
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_metric(spec: str, context: Any = None) -> Metric:
    """A bound metric for ``spec`` (grammar in the module docstring).

    ``context`` provides the models that model-backed metrics need (see
    :class:`MetricContext`). Raises ``InvalidArgument`` (named ``metric``) for an
    unknown name, a malformed spec or a non-finite weight, and
    :class:`MetricUnavailable` when a needed model is missing from the context.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgument("metric", f"expected a metric name or spec, got {spec!r}")
    terms = _parse(spec)
    if len(terms) == 1 and terms[0][0] == 1.0:
        _, name, argument = terms[0]
        return _lookup(name).bind(context, argument)
    parts = tuple((weight, _lookup(name).bind(context, argument)) for weight, name, argument in terms)
    return _combine(spec.strip(), parts)


def check_images(images: Any, name: str = "images") -> torch.Tensor:
    """Check that ``images`` is a float tensor ``[B, 3, H, W]`` with values in ``[0, 1]``.

    Raises ``InvalidArgument`` naming ``name``, the shape or the range found. Values
    may overshoot the range by 1e-3 (rounding in a decoder); NaN is rejected.
    """
    if not isinstance(images, torch.Tensor):
        raise InvalidArgument(name, f"expected a tensor [B, 3, H, W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise InvalidArgument(name, f"expected shape [B, 3, H, W], got {list(images.shape)}")
    if images.numel() == 0:
        raise InvalidArgument(name, f"expected a non-empty batch, got shape {list(images.shape)}")
    if not images.is_floating_point():
        raise InvalidArgument(name, f"expected a float tensor with values in [0, 1], got {images.dtype}")
    low, high = images.detach().aminmax()
    low, high = float(low), float(high)
    # Written so that NaN (every comparison False) fails too.
    if not (low >= -_RANGE_TOLERANCE and high <= 1.0 + _RANGE_TOLERANCE):
        raise InvalidArgument(name, f"expected values in [0, 1], got min {low:.4g}, max {high:.4g}")
    return images


def context_part(context: Any, attribute: str, metric: str, what: str) -> Any:
    """``context.<attribute>`` (or ``context[attribute]`` for a mapping), or raise
    :class:`MetricUnavailable` saying that metric ``metric`` needs ``what``."""
    part = context.get(attribute) if isinstance(context, Mapping) else getattr(context, attribute, None)
    if part is None:
        raise MetricUnavailable(f"metric '{metric}' needs {what}; the context has no '{attribute}'")
    return part


def _lookup(name: str) -> Metric:
    metric = _REGISTRY.get(name)
    if metric is None:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise InvalidArgument("metric", f"unknown metric '{name}'; known: {known}")
    return metric


def _parse(spec: str) -> list[tuple[float, str, str | None]]:
    """Split a spec into ``(weight, name, argument)`` terms.

    Hand-written rather than a regex so that a malformed spec gets a message that
    points at the offending position.
    """
    terms: list[tuple[float, str, str | None]] = []
    pos, end = 0, len(spec)

    def skip_spaces(i: int) -> int:
        while i < end and spec[i].isspace():
            i += 1
        return i

    def malformed(i: int, why: str) -> InvalidArgument:
        return InvalidArgument("metric", f"malformed spec {spec!r} at position {i}: {why}")

    while True:
        pos = skip_spaces(pos)
        sign = 1.0
        if pos < end and spec[pos] in "+-":
            sign = -1.0 if spec[pos] == "-" else 1.0
            pos = skip_spaces(pos + 1)
        elif terms:
            raise malformed(pos, "expected '+' or '-' between terms")

        weight = 1.0
        number = _NUMBER.match(spec, pos)
        if number:
            after = skip_spaces(number.end())
            starred = after < end and spec[after] == "*"
            # "nan"/"inf" are weights only when a '*' follows; otherwise they start a
            # metric name ("inference" is a valid name).
            if starred or not number.group(0)[0].isalpha():
                if not starred:
                    raise malformed(after, "expected '*' after a weight")
                weight = float(number.group(0))
                if not math.isfinite(weight):
                    raise InvalidArgument("metric", f"weight {number.group(0)!r} in {spec!r} must be finite")
                pos = skip_spaces(after + 1)

        name = _NAME.match(spec, pos)
        if not name:
            raise malformed(pos, "expected a metric name")
        pos = name.end()

        argument = None
        if pos < end and spec[pos] == ":":
            argument, pos = _parse_argument(spec, pos + 1, malformed)

        terms.append((sign * weight, name.group(0), argument))
        pos = skip_spaces(pos)
        if pos >= end:
            return terms
        if spec[pos] not in "+-":
            raise malformed(pos, "expected '+', '-' or the end of the spec")


def _parse_argument(spec: str, pos: int, malformed: Callable[[int, str], Exception]) -> tuple[str, int]:
    """The argument after ``name:``: quoted (ends at the closing quote) or unquoted
    (runs to the end of the spec, so prompts may contain '+', '-' and '*')."""
    if pos < len(spec) and spec[pos] in "\"'":
        close = spec.find(spec[pos], pos + 1)
        if close < 0:
            raise malformed(pos, "unclosed quote")
        argument, pos = spec[pos + 1 : close], close + 1
    else:
        argument, pos = spec[pos:].strip(), len(spec)
    if not argument:
        raise malformed(pos, "empty argument after ':'")
    return argument, pos


def _combine(name: str, parts: tuple[tuple[float, Metric], ...]) -> Metric:
    """A metric scoring ``sum_i w_i * oriented_i(images)`` (see module docstring)."""

    def weighted_sum(images: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for weight, metric in parts:
            # Metric.__call__ already checked the images once; skip the check per part.
            scores = metric._score(images)
            term = weight * (scores if metric.higher_is_better else -scores)
            total = term if total is None else total + term
        assert total is not None
        return total

    needs = sorted({metric.needs for _, metric in parts if metric.needs})
    description = " + ".join(f"{weight:g} * {metric.name}" for weight, metric in parts)
    return Metric(
        name=name,
        fn=weighted_sum,
        higher_is_better=True,
        needs=", ".join(needs) or None,
        loss_scale=1.0,
        description=f"weighted sum (each part oriented higher-is-better): {description}",
        parts=parts,
    )


def _aesthetic_factory(context: Any) -> MetricFn:
    return context_part(
        context,
        "aesthetic",
        "aesthetic",
        "an aesthetic scorer as context.aesthetic (for Stable Diffusion, load one with "
        "noise2art.metrics.load_laion_aesthetic(mlp=...))",
    )


def _text_factory(context: Any, prompt: str) -> MetricFn:
    scorer = context_part(
        context,
        "image_text",
        "text",
        "an image-text model as context.image_text (a CLIP-like scorer "
        "`image_text(images, text) -> similarity [B]`)",
    )

    def text_similarity(images: torch.Tensor) -> torch.Tensor:
        return scorer(images, prompt)

    return text_similarity


register(
    "aesthetic",
    factory=_aesthetic_factory,
    needs="aesthetic",
    loss_scale=1.0,
    description="predicted aesthetic rating (LAION aesthetic predictor v2 for SD, "
    "or the model's own aesthetic head); higher is better",
    replace=True,
)
register(
    "text",
    factory=_text_factory,
    needs="text",
    argument="prompt",
    loss_scale=1.0,
    description="image-text similarity with the prompt given as text:<prompt>; higher is better",
    replace=True,
)
