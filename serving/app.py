"""The HTTP API over a Recommender (FastAPI). `followrec serve` runs it under uvicorn.

Every error is JSON naming the field at fault: 422 for a malformed request, 400 for a value
the model cannot use, 401 without the API key, 503 before a model is loaded; an unexpected
failure is a 500 with a request id (the traceback goes to the log, not the client)."""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from followrec.core.errors import InputError
from followrec.core.limits import MAX_ACCOUNT_ID, MAX_K
from followrec.evaluation.exposures import CHAMPION, LEGACY_BLEND
from followrec.serving.candidates import Options, Recommender, settle_heap
from followrec.serving.experiments import Assignment, Experiments, ExposureLog
from followrec.serving.metrics import Metrics, SharedMetrics

log = logging.getLogger("followrec.serving")
Id = Annotated[int, Field(ge=0, le=MAX_ACCOUNT_ID)]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,  # which worker process, when there are several
            "msg": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Structured logs on stderr for the service's loggers."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("followrec.serving")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    for noisy in ("feast", "mlflow"):  # registry-cache and download chatter at info level
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Profile(BaseModel):
    """An onboarding request: what a new (or barely active) user told us."""

    model_config = ConfigDict(extra="forbid")
    user_id: Id | None = Field(None, description="merge over this user's online features")
    language: str | None = Field(None, max_length=64, examples=["pt"])
    country: str | None = Field(None, max_length=64, examples=["BR"])
    interests: list[Annotated[int, Field(ge=0, le=MAX_ACCOUNT_ID)]] | None = Field(
        None, max_length=1000, description="topic ids"
    )
    follows: list[Id] | None = Field(None, max_length=1000, description="accounts followed")
    k: int = Field(100, ge=1, le=MAX_K)
    popularity_discount: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    diversity: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)


class Event(BaseModel):
    """A user event that changes what the user should see next."""

    model_config = ConfigDict(extra="forbid")
    user_id: Id
    type: Literal["follow", "unfollow", "engagement", "block", "unblock"]
    account_id: Id
    kind: str | None = Field(None, max_length=64, description="engagement kind (e.g. like)")


class Candidate(BaseModel):
    account_id: int
    score: float = Field(description="after the optional re-rank")
    retrieval_score: float = Field(description="the index's inner product")


class ArmServed(BaseModel):
    name: str = Field(description="the experiment")
    arm: str


class CandidatesBody(BaseModel):
    """A candidates response. Documentation only: the routes build the JSON themselves
    (FastAPI's validation and encoder walked the 100 candidates again, ~1 ms a request)."""

    model_config = ConfigDict(extra="forbid")
    user_id: int | None
    candidates: list[Candidate]
    model_version: str
    index_version: str
    cold_start: bool
    cached: bool
    latency_ms: dict[str, float] = Field(description="per stage: features, tower, search, ...")
    warnings: list[str]
    request_id: str | None = Field(None, description="also the X-Request-ID header")
    experiment: ArmServed | None = Field(None, description="when the user is in an experiment")


DOCUMENTED = {200: {"model": CandidatesBody, "description": "the candidates, best first"}}


class Service:
    """What the app holds between requests: the Recommender (built at start-up), the
    metrics, the API key and the champion poller."""

    def __init__(
        self,
        factory: Any,
        api_key: str | None,
        admin_key: str | None,
        poll_seconds: float,
        experiments_factory: Any = None,
        experiment_poll_seconds: float = 2.0,
        metrics_folder: str | None = None,
    ) -> None:
        self.factory = factory
        self.experiments_factory = experiments_factory
        self.experiment_poll_seconds = experiment_poll_seconds
        self.experiments: Experiments | None = None
        self.exposures: ExposureLog | None = None
        self.api_key = api_key
        self.admin_key = admin_key
        self.poll_seconds = poll_seconds
        self.metrics = Metrics()
        # With several worker processes, each shares its counts through this folder.
        self.shared_metrics = (
            SharedMetrics(metrics_folder, self.metrics) if metrics_folder else None
        )
        self._metrics_writer: threading.Thread | None = None
        self.recommender: Recommender | None = None
        self.error: str | None = None
        self.stop = threading.Event()

    def start(self) -> None:
        """Load the champion (or remember why not) and start the poller."""
        self._load()  # on failure: /healthz answers, the rest is a 503 until a poll loads it
        if self.poll_seconds > 0:
            threading.Thread(target=self._poll, name="champion-poller", daemon=True).start()
        if self.shared_metrics is not None:
            self._metrics_writer = threading.Thread(
                target=self.shared_metrics.run, args=(self.stop,), name="metrics-share", daemon=True
            )
            self._metrics_writer.start()
        if self.experiments_factory is not None:
            try:
                self.experiments, self.exposures = self.experiments_factory()
            except Exception:  # candidates still serve; no arm, nothing logged
                log.exception("experiments are off: the experiment store could not be opened")
            else:
                threading.Thread(
                    target=self._poll_experiments, name="experiment-poller", daemon=True
                ).start()

    def _poll_experiments(self) -> None:
        while not self.stop.wait(self.experiment_poll_seconds):
            if self.experiments is not None:
                self.experiments.reload()

    def close(self) -> None:
        """Stop the pollers and write what the exposure log still holds."""
        self.stop.set()
        if self._metrics_writer is not None:
            self._metrics_writer.join(timeout=5)
        if self.exposures is not None:
            self.exposures.close()

    def assign(self, user_id: int) -> Assignment | None:
        """The user's experiment arm, when an experiment runs."""
        return self.experiments.assign(user_id) if self.experiments is not None else None

    def _poll(self) -> None:
        while not self.stop.wait(self.poll_seconds):
            if self.recommender is not None:
                self.check_champion(self.recommender)
            else:  # no champion yet at start-up (a fresh deployment): try again
                self._load()

    def _load(self) -> None:
        try:
            rec = self.factory()
        except Exception as exc:
            if self.error is None:
                log.exception("could not load the champion")
            self.error = f"the champion could not be loaded: {type(exc).__name__} (see the log)"
            return
        self.recommender = rec
        self.error = None
        settle_heap()
        self.metrics.served = rec.pair.versions
        log.info("serving", extra={"fields": {"versions": list(rec.pair.versions)}})

    def check_champion(self, rec: Recommender) -> dict[str, Any]:
        """Swap in the champion if it moved; count what happened."""
        outcome = rec.refresh()
        if outcome.get("swapped"):
            settle_heap()
            self.metrics.count("followrec_swaps_total", outcome="swapped")
        elif outcome.get("refused"):
            self.metrics.count("followrec_swaps_total", outcome="refused")
        self.metrics.served = rec.pair.versions
        return outcome

    def ready_recommender(self) -> Recommender:
        """The loaded Recommender, or a 503 that says why there is none."""
        if self.recommender is None:
            raise ServiceUnavailable(self.error or "the champion is still loading")
        return self.recommender


# The dependencies are `async def` because they never block: FastAPI runs a plain `def`
# dependency on the thread pool, one hand-off (~0.3 ms) each per request.
async def service(request: Request) -> Service:
    """The app's Service (a FastAPI dependency)."""
    return request.app.state.service


async def recommender(svc: Annotated[Service, Depends(service)]) -> Recommender:
    """The loaded Recommender (a FastAPI dependency; 503 before one is loaded)."""
    return svc.ready_recommender()


def _carries(key: str, x_api_key: str | None, authorization: str | None) -> bool:
    bearer = authorization[7:] if authorization and authorization.startswith("Bearer ") else None
    # compare_digest: the time taken does not tell how much of a guessed key was right
    return any(
        given is not None and hmac.compare_digest(given.encode(), key.encode())
        for given in (x_api_key, bearer)
    )


async def authorised(
    svc: Annotated[Service, Depends(service)],
    x_api_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """The request carries the API key, when one is set (X-API-Key or a Bearer token)."""
    if svc.api_key is not None and not _carries(svc.api_key, x_api_key, authorization):
        raise Unauthorised()


async def admin_authorised(
    svc: Annotated[Service, Depends(service)],
    x_api_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """Admin and moderation routes take the admin key; a service with a read key but no
    admin key keeps them closed, one with no key at all (loopback only) keeps them open."""
    if svc.admin_key is not None:
        if not _carries(svc.admin_key, x_api_key, authorization):
            raise Unauthorised()
    elif svc.api_key is not None:
        raise Forbidden()


Rec = Annotated[Recommender, Depends(recommender)]
AccountId = Annotated[int, Path(ge=0, le=MAX_ACCOUNT_ID)]  # an account or user id in a path
Svc = Annotated[Service, Depends(service)]

operations = APIRouter(tags=["operations"])
candidates = APIRouter(tags=["candidates"], dependencies=[Depends(authorised)])
events = APIRouter(tags=["events"], dependencies=[Depends(authorised)])
moderation = APIRouter(tags=["events"], dependencies=[Depends(admin_authorised)])
admin = APIRouter(tags=["operations"], dependencies=[Depends(admin_authorised)])


@operations.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@operations.get("/readyz")
def readyz(svc: Svc) -> JSONResponse:
    """A champion is loaded and the online store answers (versions only; the details are
    at /v1/admin/status)."""
    rec = svc.recommender
    if rec is None:
        return _error(503, f"not ready: {svc.error or 'loading'}")
    try:
        ready = rec.ready()
    except Exception:
        log.exception("readiness check failed")
        return _error(503, "not ready: the online store does not answer (see the service log)")
    public = ("model_version", "index_version", "producers")
    return JSONResponse({"status": "ready", **{k: ready[k] for k in public}})


@operations.get("/metrics", response_class=PlainTextResponse)
def metrics_text(svc: Svc) -> PlainTextResponse:
    """Prometheus metrics (of every worker process of the service)."""
    text = svc.shared_metrics.render() if svc.shared_metrics else svc.metrics.render()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


@candidates.get("/v1/users/{user_id}/candidates", responses=DOCUMENTED)
def user_candidates(
    request: Request,
    svc: Svc,
    rec: Rec,
    user_id: AccountId,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 100,
    popularity_discount: Annotated[float, Query(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.0,
    diversity: Annotated[float, Query(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.0,
) -> JSONResponse:
    """Candidates for a user: online features, consumer tower, index search, filters
    (self, followed, blocked, removed), then the optional re-rank."""
    options = Options(k=k, popularity_discount=popularity_discount, diversity=diversity)
    assignment = svc.assign(user_id)
    result, assignment = _serve_arm(svc, rec, user_id, options, assignment)
    _record(request, svc.metrics, result)
    body = result.to_dict()
    request_id = request.state.request_id
    body["request_id"] = request_id
    if assignment is not None:
        body["experiment"] = {"name": assignment.experiment, "arm": assignment.arm.name}
        svc.metrics.count("followrec_arm_requests_total", arm=assignment.arm.name)
    if svc.exposures is not None:
        svc.exposures.impression(
            request_id,
            user_id,
            assignment,
            result.model_version,
            result.index_version,
            result.account_ids,
        )
    return JSONResponse(body)  # plain JSON types, as CandidatesBody documents


def _serve_arm(
    svc: Service, rec: Recommender, user_id: int, options: Options, assignment: Assignment | None
) -> tuple[Any, Assignment | None]:
    """The candidates of the user's arm: the champion, another model version, or the
    legacy blend table."""
    if assignment is None or assignment.arm.target == CHAMPION:
        return rec.recommend(user_id, options), assignment
    if assignment.arm.target == LEGACY_BLEND:
        try:
            ranked = svc.experiments.blend(user_id)  # type: ignore[union-attr]
        except FileNotFoundError:
            log.error("the blend arm has no table; serving the champion outside the experiment")
            return rec.recommend(user_id, options), None
        return rec.recommend_list(user_id, ranked, options), assignment
    pair = rec.pair_for(str(assignment.arm.model_version))
    return rec.recommend(user_id, options, pair), assignment


@candidates.post("/v1/candidates", responses=DOCUMENTED)
def profile_candidates(request: Request, svc: Svc, rec: Rec, profile: Profile) -> JSONResponse:
    """Candidates for an onboarding profile (cold start)."""
    options = Options(
        k=profile.k,
        popularity_discount=profile.popularity_discount,
        diversity=profile.diversity,
    )
    result = rec.recommend_profile(profile.model_dump(), options)
    _record(request, svc.metrics, result)
    return JSONResponse(result.to_dict())


@events.post("/v1/events")
def post_event(svc: Svc, rec: Rec, event: Event) -> dict[str, Any]:
    """Follow, unfollow, engagement (written to the online store through the Feast push
    source) or block/unblock; the user's next request reflects it."""
    out = rec.apply_event(event.model_dump())
    svc.metrics.count("followrec_events_total", type=event.type)
    if svc.exposures is not None:
        svc.exposures.event(event.user_id, event.type, event.account_id)
    return out


@moderation.put("/v1/removed-accounts/{account_id}")
def remove_account(rec: Rec, account_id: AccountId) -> dict[str, Any]:
    """Never recommend this account (suspended, deleted)."""
    rec.moderation.set_removed(account_id, True)
    return {"account_id": account_id, "removed": True}


@moderation.delete("/v1/removed-accounts/{account_id}")
def restore_account(rec: Rec, account_id: AccountId) -> dict[str, Any]:
    """Recommend this account again."""
    rec.moderation.set_removed(account_id, False)
    return {"account_id": account_id, "removed": False}


@admin.post("/v1/admin/refresh")
def refresh(svc: Svc, rec: Rec) -> dict[str, Any]:
    """Check the registry now instead of at the next poll."""
    return svc.check_champion(rec)


@admin.get("/v1/admin/status")
def admin_status(rec: Rec) -> dict[str, Any]:
    """The serving pair, its feature service and the last refused swap with its reason."""
    return rec.ready()


class AccessLog:
    """ASGI middleware: request id, latency metrics and one JSON log line per request. Plain
    ASGI: Starlette's BaseHTTPMiddleware (`app.middleware("http")`) runs every request
    through an extra task and memory streams."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"")
        request_id = given.decode("latin-1") or uuid.uuid4().hex[:16]
        state = scope.setdefault("state", {})  # what handlers see as request.state
        state["request_id"] = request_id
        status = 500  # unless the app starts a response
        started = time.perf_counter()

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers") or [])
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            path = route.path if route is not None else "unmatched"
            metrics = scope["app"].state.service.metrics
            metrics.observe_request(path, seconds)
            metrics.count("followrec_requests_total", route=path, status=str(status))
            log.info(
                "request",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round(seconds * 1000, 3),
                        **state.get("log_fields", {}),
                    }
                },
            )


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming the first field at fault (and every error)."""
    errors = [
        {
            "field": ".".join(str(p) for p in e["loc"] if p not in ("body", "query", "path")),
            "value": excerpt(e.get("input")),
            "reason": e["msg"],
        }
        for e in exc.errors()[:MAX_ERRORS]
    ]
    first = errors[0] if errors else {"field": None, "reason": "invalid request"}
    return _error(422, f"field '{first['field']}': {first['reason']}", errors=errors)


async def bad_input(request: Request, exc: InputError) -> JSONResponse:
    """400: a value the model cannot use."""
    return _error(400, str(exc), field=exc.field, value=exc.value)


async def unauthorised(request: Request, exc: Unauthorised) -> JSONResponse:
    """401: no or a wrong API key."""
    return _error(401, "missing or wrong API key (X-API-Key or Authorization: Bearer)")


async def forbidden(request: Request, exc: Forbidden) -> JSONResponse:
    """403: an admin route on a service with no admin key."""
    return _error(403, "admin routes are closed: the service has no $FOLLOWREC_ADMIN_API_KEY")


async def unavailable(request: Request, exc: ServiceUnavailable) -> JSONResponse:
    """503: no champion loaded."""
    return _error(503, f"not ready: {exc}")


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    """500 with a request id; the traceback goes to the log, not the client."""
    request_id = getattr(request.state, "request_id", None)
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={"fields": {"request_id": request_id, "path": request.url.path}},
    )
    return _error(500, "internal error; see the service log", request_id=request_id)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the champion at start-up; stop the poller at shutdown."""
    from anyio import to_thread

    # The pool FastAPI runs plain `def` routes on (anyio's default limiter, 40 threads).
    to_thread.current_default_thread_limiter().total_tokens = app.state.request_threads
    app.state.service.start()
    yield
    app.state.service.close()


def create_app(
    recommender_factory: Any,
    api_key: str | None = None,
    poll_seconds: float = 10.0,
    admin_key: str | None = None,
    max_body_bytes: int = 65_536,
    experiments_factory: Any = None,
    experiment_poll_seconds: float = 2.0,
    metrics_folder: str | None = None,
    request_threads: int = 40,
) -> FastAPI:
    """The app. `recommender_factory()` builds the Recommender at startup; the champion is
    polled every `poll_seconds` (0 = never) and swapped in when it moves. Request bodies
    over `max_body_bytes` are refused with 413. `metrics_folder`: where the worker
    processes of one service share their metrics. `request_threads`: how many requests
    run at once (the rest wait their turn in the event loop)."""
    app = FastAPI(
        title="followrec candidates",
        version="1",
        description="Who-to-follow candidates from the two-tower champion.",
        lifespan=lifespan,
    )
    app.state.service = Service(
        recommender_factory,
        api_key,
        admin_key,
        poll_seconds,
        experiments_factory,
        experiment_poll_seconds,
        metrics_folder,
    )
    app.state.request_threads = request_threads
    app.add_middleware(AccessLog)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    for error, handler in (
        (RequestValidationError, invalid_request),
        (InputError, bad_input),
        (Unauthorised, unauthorised),
        (Forbidden, forbidden),
        (ServiceUnavailable, unavailable),
        (Exception, unexpected),
    ):
        app.add_exception_handler(error, handler)
    for router in (operations, candidates, events, moderation, admin):
        app.include_router(router)
    return app


class Unauthorised(Exception):
    """No or a wrong API key."""


class ServiceUnavailable(Exception):
    """No champion loaded (yet)."""


class Forbidden(Exception):
    """An admin route on a service that has a read key but no admin key."""


MAX_ERRORS = 10  # validation errors echoed per response
MAX_EXCERPT = 80  # characters of an offending value echoed back


def excerpt(value: Any) -> Any:
    """A value as echoed in an error body: short values as they are, long ones cut."""
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_EXCERPT else text[:MAX_EXCERPT] + f"... ({len(text)} chars)"


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 before the app
    reads it (by Content-Length, or while a chunked body streams in)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        seen, too_large = 0, False

        async def counted() -> dict:
            # Past the limit the app is told the client left; what it answers is dropped.
            nonlocal seen, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                too_large = True
                return {"type": "http.disconnect"}
            return message

        async def unless_too_large(message: dict) -> None:
            if not too_large:
                await send(message)

        try:
            await self.app(scope, counted, unless_too_large)
        except Exception:
            if not too_large:
                raise
        if too_large:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        response = _error(413, f"request body over {self.max_bytes} bytes")
        await response(scope, receive, send)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    body = {"error": message, **{k: v for k, v in extra.items() if v is not None}}
    return JSONResponse(json.loads(json.dumps(body, default=str)), status_code=status)


def _record(request: Request, metrics: Metrics, result: Any) -> None:
    metrics.count("followrec_cache_hits_total" if result.cached else "followrec_cache_misses_total")
    if not result.cached:
        metrics.observe_stages(result.seconds)
    request.state.log_fields = {
        "user_id": result.user_id,
        "model_version": result.model_version,
        "index_version": result.index_version,
        "cached": result.cached,
        "cold_start": result.cold_start,
        "returned": len(result.account_ids),
    }
