"""Sampling settings: what a caller asks for (`SamplingOverrides`) and what ran (`SampleSettings`).

Every field of `SamplingOverrides` is optional: None means "the model's own". Only the
model resolves them (`Model.resolve`), once, into a `SampleSettings` with every field
fixed, and `Model.sample` hands that back so that callers record what actually ran
instead of guessing it. A scheduler left unset stays the model folder's own scheduler
config (`scheduler=None`, its class in `scheduler_class`), never the nearest table name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from noise2art.engine import validation as V
from noise2art.engine.devices import check_precision
from noise2art.errors import InvalidArgument

# The label PNG metadata and JSON use for "the model folder's own scheduler config".
FOLDER_SCHEDULER = "default"


QUALITIES = ("full", "preview")


@dataclass(frozen=True)
class SamplingOverrides:
    """Sampling settings a caller asks for; None takes the model's.

    Attributes:
        steps: denoising steps.
        guidance: classifier-free guidance scale.
        scheduler: a name of `engine.schedulers.SCHEDULERS`; None (or "default") is the
            model folder's own scheduler config.
        height, width: image size in pixels; None is the model's native size.
        eta: DDIM eta.
        precision: the denoiser's dtype, "model" | "bf16" | "auto".
        batch_size: samples per UNet batch; None fits a memory budget.
        quality: "full" (the model's defaults) or "preview" (its preview settings, fewer
            UNet calls, for results a person scrolls or scrubs past; `Model.preview`).
            The settings that ran are recorded, never the word, so a preview repeats exactly.
        unet: which UNet denoises: "" the model's own, or the name of a few-step student
            the model carries (`Model.unet_variants`; world-64's preview runs world-64-fast).
    """

    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    height: int | None = None
    width: int | None = None
    eta: float | None = None
    precision: str | None = None
    batch_size: int | None = None
    quality: str | None = None
    unet: str | None = None

    def __post_init__(self):
        if self.scheduler == FOLDER_SCHEDULER:
            object.__setattr__(self, "scheduler", None)

    def check(self) -> "SamplingOverrides":
        """Check every given field (no model needed: sizes are checked against the model in
        `Model.resolve`). Raises `InvalidArgument` naming the field."""
        from noise2art.engine.schedulers import check_scheduler

        if self.steps is not None:
            V.check_steps(self.steps)
        if self.guidance is not None:
            V.check_guidance(self.guidance)
        if self.scheduler is not None:
            check_scheduler(self.scheduler)
        if self.precision is not None:
            check_precision(self.precision)
        if self.unet is not None and not isinstance(self.unet, str):
            raise InvalidArgument("unet", f"must be a model name or \"\", got {self.unet!r}")
        if self.quality is not None and self.quality not in QUALITIES:
            raise InvalidArgument("quality", f"must be one of {', '.join(QUALITIES)}, got {self.quality!r}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise InvalidArgument("batch_size", f"must be an integer >= 1, got {self.batch_size!r}")
        if self.eta is not None:
            try:
                eta = float(self.eta)
            except (TypeError, ValueError):
                raise InvalidArgument("eta", f"must be a number in [0, 1], got {self.eta!r}") from None
            if not 0.0 <= eta <= 1.0:
                raise InvalidArgument("eta", f"must be a number in [0, 1], got {self.eta!r}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidArgument(name, f"must be a positive integer, got {value!r}")
        return self

    def merged(self, other: "SamplingOverrides | None") -> "SamplingOverrides":
        """These overrides with `other`'s given (non-None) fields on top."""
        if other is None:
            return self
        return replace(self, **{k: v for k, v in other.given().items()})

    def given(self) -> dict:
        """The fields that are set, as a dict."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "SamplingOverrides":
        """From a dict (a saved config); unknown keys are refused, missing ones are None."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgument("sampling", f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)


@dataclass(frozen=True)
class SampleSettings:
    """The settings a sampling call ran with, every field resolved by `Model.resolve`.

    Attributes:
        scheduler: the table name, or None for the model folder's own scheduler config.
        scheduler_class: the diffusers class that ran (for display; the folder's config
            fixes its options when `scheduler` is None).
        precision: as resolved on this machine, "model" or "bf16", so that a record
            reproduces the image anywhere.
        batch_size: samples per UNet batch.
        unet: "" when the model's own UNet ran, else the name of the student that ran (an
            embedded model of its own: records name it as the image's model).
    """

    steps: int
    guidance: float
    scheduler: str | None
    scheduler_class: str
    height: int
    width: int
    eta: float
    precision: str
    batch_size: int
    unet: str = ""

    @property
    def scheduler_label(self) -> str:
        """The scheduler as PNG metadata records it: a table name or "default" (the folder's own)."""
        return self.scheduler if self.scheduler is not None else FOLDER_SCHEDULER

    def as_overrides(self) -> SamplingOverrides:
        """The same settings as overrides, to run them again exactly."""
        return SamplingOverrides(steps=self.steps, guidance=self.guidance, scheduler=self.scheduler,
                                 height=self.height, width=self.width, eta=self.eta, precision=self.precision,
                                 batch_size=self.batch_size, unet=self.unet)

    def to_dict(self) -> dict:
        """The fields as a dict; `unet` only when a student ran, so that the records (and
        stream ids) of the model's own UNet read as they always did."""
        data = asdict(self)
        if not data["unet"]:
            del data["unet"]
        return data
