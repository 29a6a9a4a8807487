"""Request and response bodies of the REST API (pydantic): validated before any work is done.

Limits here are cheap, model-free bounds (lengths, ranges); the model's own checks (size
multiples, scheduler names, embedding shapes) run in the handler before a job is queued.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from noise2art.engine.validation import MAX_SEED, MAX_STEPS

Id = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$", description="a 16-hex-digit id")]
Seed = Annotated[int, Field(ge=0, lt=MAX_SEED)]
Prompt = Annotated[str, Field(max_length=2000)]
Priority = Literal["interactive", "prefetch"]
PRIORITIES = {"interactive": 10, "prefetch": 0}

JobStatus = Literal["queued", "running", "completed", "failed", "canceled", "interrupted"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sampling(Strict):
    """Sampling settings; each left out takes the model's default."""

    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    guidance: float | None = Field(None, ge=0, le=50)
    scheduler: str | None = Field(None, max_length=40)
    width: int | None = Field(None, ge=8, le=2048)
    height: int | None = Field(None, ge=8, le=2048)
    precision: Literal["auto", "model", "bf16"] | None = None
    quality: Literal["full", "preview"] | None = Field(
        None, description="preview: the model's few-step preview settings (GET /api/v1/health lists them); "
        "the image records the settings that ran")


class Source(Strict):
    """A prompt, or a stored embedding (exactly one)."""

    prompt: Prompt | None = None
    embedding_id: Id | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.prompt is None) == (self.embedding_id is None):
            raise ValueError("give exactly one of prompt and embedding_id")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("prompt must not be empty")
        return self


class GenerateRequest(Sampling, Source):
    """`POST /api/v1/generate`: a prompt or a stored embedding, on one or more seeds."""

    negative: Prompt = ""
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=256)
    priority: Priority = "interactive"


class RenderRequest(Sampling):
    """`POST /api/v1/images/{id}/render`: the image's embedding and seed at these settings
    (quality "full" unless given; its own size unless given)."""

    priority: Priority = "interactive"


class JobCreated(BaseModel):
    job_id: str
    status: JobStatus
    deduplicated: bool = False


class JobView(BaseModel):
    id: str
    kind: str
    status: JobStatus
    progress: float
    result: dict | None = None
    error: str | None = None
    created: float
    started: float | None = None
    finished: float | None = None


class JobList(BaseModel):
    jobs: list[JobView]


class Health(BaseModel):
    status: Literal["ok"]
    model: str
    version: str
    queued: int
    users: bool
    defaults: dict = Field(default_factory=dict, description="the model's sampling settings (quality full)")
    preview: dict = Field(default_factory=dict, description="the settings quality preview runs (on top of defaults); "
                          "`model` names the few-step student that draws previews where the model has one")


class ImageView(BaseModel):
    id: str
    url: str
    model_id: str
    embedding_id: str | None
    prompt: str
    negative: str
    seed: int
    steps: int
    guidance: float
    scheduler: str
    width: int
    height: int
    precision: str
    method: str
    job_id: str | None
    created: float
    liked: bool
    parameters: str
    attributes: dict[str, str] | None = None
    extra: dict = Field(default_factory=dict)


class LibraryPage(BaseModel):
    images: list[ImageView]
    next_cursor: str | None


class BlendPart(Strict):
    prompt: Prompt | None = None
    embedding_id: Id | None = None
    weight: float = Field(ge=-100, le=100)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.prompt is None) == (self.embedding_id is None):
            raise ValueError("each part needs exactly one of prompt and embedding_id")
        return self


class EmbeddingRequest(Strict):
    """`POST /api/v1/embeddings`: from a prompt, or a weighted blend of prompts / embeddings."""

    prompt: Prompt | None = None
    negative: Prompt = ""
    blend: list[BlendPart] | None = Field(None, min_length=1, max_length=16)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.prompt is None) == (self.blend is None):
            raise ValueError("give exactly one of prompt and blend")
        return self


class UploadView(BaseModel):
    """An uploaded image: its id (for `target_upload_id`), URL and size as stored."""

    id: str
    url: str
    width: int
    height: int


class EmbeddingView(BaseModel):
    id: str
    url: str
    model_id: str
    prompt: str
    negative: str
    source: str
    created: float


class LikeView(BaseModel):
    image_id: str
    liked: bool


class Error(BaseModel):
    detail: str | list | dict


class InterpolateRequest(Sampling):
    """`POST /api/v1/interpolate`: frames along a path through keyframes (prompts or embeddings),
    or through stored images (`images`: their embeddings, from the first image's seed to the last's)."""

    keyframes: list[Source] = Field(default_factory=list, max_length=16)
    images: list[Id] | None = Field(None, min_length=2, max_length=16)
    frames: int = Field(16, ge=2, le=240)
    method: Literal["slerp", "lerp", "blend"] = "slerp"
    range: tuple[float, float] = (0.0, 1.0)
    seed: Seed = 0
    seed_to: Seed | None = None
    negative: Prompt = ""
    constant_speed: bool = False
    refine: int = Field(16, ge=0, le=64)
    formats: list[Literal["gif", "mp4"]] = Field(default_factory=lambda: ["gif"], max_length=2)
    fps: float = Field(12.0, gt=0, le=60)
    priority: Priority = "interactive"

    @model_validator(mode="after")
    def _keyframes_or_images(self):
        if bool(self.keyframes) == (self.images is not None):
            raise ValueError("give keyframes or images (stored image ids), one of them")
        return self


class OptimizeRequest(Sampling, Source):
    """`POST /api/v1/optimize`: gradient ascent on a prompt embedding against a metric."""

    negative: Prompt = ""
    metric: str = Field("aesthetic", min_length=1, max_length=200)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=8)
    iterations: int = Field(20, ge=1, le=500)
    lr: float = Field(0.01, gt=0, le=1)
    proximity: float = Field(0.0, ge=0, le=100)
    adherence_weight: float | None = Field(None, ge=0, le=100)
    picture_weight: float | None = Field(None, ge=0, le=100)
    adherence_floor: float | None = Field(None, ge=0, le=1)
    unconstrained: bool = False
    reference: bool = False
    priority: Priority = "interactive"


class InvariantRequest(Sampling, Source):
    """`POST /api/v1/invariant`: an embedding whose every seed gives the target seed's picture."""

    negative: Prompt = ""
    target_seed: Seed | None = None
    target_upload_id: Id | None = None
    iterations: int | None = Field(None, ge=1, le=1000)
    mode: Literal["single-vector", "full"] | None = None
    eval_seeds: list[Seed] = Field(default_factory=lambda: [683395, 297009, 23916, 417016], max_length=32)
    reference: bool = False
    priority: Priority = "interactive"

    @model_validator(mode="after")
    def _one_target(self):
        if self.target_seed is not None and self.target_upload_id is not None:
            raise ValueError("give target_seed or target_upload_id, not both")
        if self.target_seed is None and self.target_upload_id is None:
            self.target_seed = 510675  # the reference's target
        return self


class LoginRequest(Strict):
    """A named user's name and password; or no name and the server token as the password."""

    name: str = Field("", max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginView(BaseModel):
    user: str
    token: str


class StreamRequest(Sampling):
    """`POST /api/v1/streams`: a query (a prompt or a stored embedding), or results around
    stored images (`like`, `between`, `beyond`), optionally steered `toward` a concept."""

    query: Prompt | None = None
    embedding_id: Id | None = None
    negative: Prompt = ""
    like: Id | None = None
    between: list[Id] | None = Field(None, min_length=2, max_length=2)
    beyond: list[Id] | None = Field(None, min_length=2, max_length=2)
    toward: str | None = Field(None, min_length=1, max_length=200)
    min_similarity: float = Field(0.9, gt=0, lt=1)
    shared_seeds: bool = False
    similarity: float | None = Field(None, ge=0, le=1)
    noise_strength: float | None = Field(None, ge=0, le=1)
    bridges: bool = True  # between: cross the path's jumps with morphs (False: every result on the path)

    @model_validator(mode="after")
    def _one_kind(self):
        given = [name for name in ("like", "between", "beyond") if getattr(self, name) is not None]
        query = self.query is not None or self.embedding_id is not None
        if self.query is not None and self.embedding_id is not None:
            raise ValueError("give a query or an embedding_id, not both")
        if self.query is not None and not self.query.strip():
            raise ValueError("query must not be empty")
        if len(given) + int(query) != 1:
            raise ValueError("give exactly one of query (or embedding_id), like, between and beyond")
        if (self.toward or self.shared_seeds) and not query:
            raise ValueError("toward and shared_seeds apply to a query only")
        if (self.similarity is not None or self.noise_strength is not None) and self.like is None:
            raise ValueError("similarity and noise_strength apply to like only")
        if not self.bridges and self.between is None:
            raise ValueError("bridges applies to between only")
        return self

    @property
    def kind(self) -> str:
        return next((n for n in ("like", "between", "beyond") if getattr(self, n) is not None), "query")


class StreamView(BaseModel):
    id: str
    kind: str
    toward: dict | None = None
    settings: dict
    end: float | None = None


class PageImage(BaseModel):
    id: str
    idx: int
    seed: int
    url: str
    t: float | None = None
    toward: dict | None = None
    bridge: dict | None = None  # between: {"from", "to", "step"} when the result crosses a jump as a morph


class PageView(BaseModel):
    stream_id: str
    page: int
    size: int
    complete: bool
    images: list[PageImage]
    job_id: str | None = None


class SessionRequest(Strict):
    """`POST /api/v1/sessions`: a feedback session (docs/feedback.md) from a prompt."""

    prompt: Prompt = Field(min_length=1)
    negative: Prompt = ""
    seed: Seed = 0
    recommender: Literal["random", "bo", "terms"] | None = None
    n_variants: int | None = Field(None, ge=2, le=12)
    similarity: float | None = Field(None, gt=0, lt=1)
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    guidance: float | None = Field(None, ge=0, le=50)
    scheduler: str | None = Field(None, max_length=40)
    precision: Literal["auto", "model", "bf16"] | None = None


class ChooseRequest(Strict):
    index: int = Field(ge=0, le=11, description="which candidate of the current round")
    strength: float = Field(0.5, gt=0, le=1)


class SessionView(BaseModel):
    id: str
    prompt: str
    round: int
    recommender: str
    n_variants: int
    history: list[dict]
    created: float
    updated: float


class SessionSummary(BaseModel):
    id: str
    prompt: str
    created: float
    updated: float


class SessionList(BaseModel):
    sessions: list[SessionSummary]


class FeedTopic(Strict):
    """A topic: a prompt, a stored embedding, or a (liked) image."""

    prompt: Prompt | None = None
    embedding_id: Id | None = None
    image_id: Id | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if sum(v is not None for v in (self.prompt, self.embedding_id, self.image_id)) != 1:
            raise ValueError("give exactly one of prompt, embedding_id and image_id")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("prompt must not be empty")
        return self


class FeedRequest(Sampling):
    """`POST /api/v1/feeds`: topics (prompts as text, or objects), and the serendipity rate."""

    topics: list[FeedTopic | Annotated[str, Field(min_length=1, max_length=2000)]] = Field(min_length=1,
                                                                                         max_length=8)
    serendipity: float = Field(0.1, ge=0, le=1)
    seed: Seed = 0


class FeedView(BaseModel):
    id: str
    topics: list[str]
    serendipity: float
    items: int
    likes: int


class FeedItemView(BaseModel):
    item_id: str
    image_id: str
    url: str
    why: Literal["topic", "exploit", "explore", "serendipity"]
    topic: str


class FeedPage(BaseModel):
    items: list[FeedItemView]


class FeedEvent(Strict):
    image_id: Id
    kind: Literal["like", "skip", "dwell"]
    dwell_ms: float | None = Field(None, ge=0, le=3_600_000)


class FeedEventView(BaseModel):
    item_id: str
    kind: str
    value: float


class SearchHit(ImageView):
    score: float


class SearchResult(BaseModel):
    """Stored images first (best match first), then the stream that generates more."""

    images: list[SearchHit]
    kind: str
    stream_id: str | None = None
