"""The HTTP API over a Recommender (FastAPI). `followrec serve` runs it under uvicorn.

Every error is JSON naming the field at fault: 422 for a malformed request, 400 for a value
the model cannot use, 401 without the API key, 503 before a model is loaded; an unexpected
failure is a 500 with a request id (the traceback goes to the log, not the client)."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from followrec.core.errors import InputError
from followrec.serving.candidates import MAX_K, Options, Recommender
from followrec.serving.metrics import Metrics

log = logging.getLogger("followrec.serving")
MAX_ID = 2**62  # ids beyond this cannot be Feast INT64 entity keys
Id = Annotated[int, Field(ge=0, le=MAX_ID)]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
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
    interests: list[Annotated[int, Field(ge=0, le=MAX_ID)]] | None = Field(
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


def create_app(
    recommender_factory: Any,
    api_key: str | None = None,
    poll_seconds: float = 10.0,
) -> FastAPI:
    """The app. `recommender_factory()` builds the Recommender at startup; the champion is
    polled every `poll_seconds` (0 = never) and swapped in when it moves."""
    metrics = Metrics()
    state: dict[str, Any] = {"recommender": None, "error": None}
    stop = threading.Event()

    def check_champion(rec: Recommender) -> dict[str, Any]:
        """Swap in the champion if it moved; count what happened."""
        outcome = rec.refresh()
        if outcome.get("swapped"):
            metrics.count("followrec_swaps_total", outcome="swapped")
        elif outcome.get("refused"):
            metrics.count("followrec_swaps_total", outcome="refused")
        metrics.served = rec.pair.versions
        return outcome

    def poll() -> None:
        while not stop.wait(poll_seconds):
            if state["recommender"] is not None:
                check_champion(state["recommender"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            rec = recommender_factory()
        except Exception as exc:  # serve /healthz and a 503 that says why
            log.exception("could not load the champion")
            state["error"] = str(exc)
        else:
            state["recommender"] = rec
            metrics.served = rec.pair.versions
            log.info("serving", extra={"fields": {"versions": list(rec.pair.versions)}})
        poller = threading.Thread(target=poll, name="champion-poller", daemon=True)
        if poll_seconds > 0:
            poller.start()
        yield
        stop.set()

    app = FastAPI(
        title="followrec candidates",
        version="1",
        description="Who-to-follow candidates from the two-tower champion.",
        lifespan=lifespan,
    )

    def recommender() -> Recommender:
        rec = state["recommender"]
        if rec is None:
            raise ServiceUnavailable(state["error"] or "the champion is still loading")
        return rec

    def authorised(
        x_api_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> None:
        if api_key is None:
            return
        bearer = (
            authorization[7:] if authorization and authorization.startswith("Bearer ") else None
        )
        if api_key not in (x_api_key, bearer):
            raise Unauthorised()

    guarded = [Depends(authorised)]

    @app.middleware("http")
    async def access_log(request: Request, call_next: Any) -> Any:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        request.state.request_id = request_id
        started = time.perf_counter()
        response = await call_next(request)
        seconds = time.perf_counter() - started
        route = request.scope.get("route")
        path = route.path if route is not None else "unmatched"
        metrics.observe_request(path, seconds)
        metrics.count("followrec_requests_total", route=path, status=str(response.status_code))
        response.headers["x-request-id"] = request_id
        log.info(
            "request",
            extra={
                "fields": {
                    "request_id": request_id,
                    "method": request.method,
                    "path": request.url.path,
                    "status": response.status_code,
                    "ms": round(seconds * 1000, 3),
                    **getattr(request.state, "log_fields", {}),
                }
            },
        )
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in e["loc"] if p not in ("body", "query", "path")),
                "value": e.get("input"),
                "reason": e["msg"],
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": None, "reason": "invalid request"}
        return _error(422, f"field '{first['field']}': {first['reason']}", errors=errors)

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError) -> JSONResponse:
        return _error(400, str(exc), field=exc.field, value=exc.value)

    @app.exception_handler(Unauthorised)
    async def unauthorised(request: Request, exc: Unauthorised) -> JSONResponse:
        return _error(401, "missing or wrong API key (X-API-Key or Authorization: Bearer)")

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(request: Request, exc: ServiceUnavailable) -> JSONResponse:
        return _error(503, f"not ready: {exc}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None)
        log.error(
            "unhandled error",
            exc_info=exc,
            extra={"fields": {"request_id": request_id, "path": request.url.path}},
        )
        return _error(500, "internal error; see the service log", request_id=request_id)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz() -> JSONResponse:
        """A champion is loaded and the online store answers."""
        rec = state["recommender"]
        if rec is None:
            return _error(503, f"not ready: {state['error'] or 'loading'}")
        try:
            return JSONResponse({"status": "ready", **rec.ready()})
        except Exception as exc:
            return _error(503, f"not ready: online store: {exc}")

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics_text() -> PlainTextResponse:
        """Prometheus metrics."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/users/{user_id}/candidates", dependencies=guarded, tags=["candidates"])
    def user_candidates(
        request: Request,
        user_id: Annotated[int, Path(ge=0, le=MAX_ID)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 100,
        popularity_discount: Annotated[float, Query(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.0,
        diversity: Annotated[float, Query(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.0,
    ) -> dict[str, Any]:
        """Candidates for a user: online features, consumer tower, index search, filters
        (self, followed, blocked, removed), then the optional re-rank."""
        rec = recommender()
        options = Options(k=k, popularity_discount=popularity_discount, diversity=diversity)
        result = rec.recommend(user_id, options)
        _record(request, metrics, result)
        return result.to_dict()

    @app.post("/v1/candidates", dependencies=guarded, tags=["candidates"])
    def profile_candidates(request: Request, profile: Profile) -> dict[str, Any]:
        """Candidates for an onboarding profile (cold start)."""
        rec = recommender()
        options = Options(
            k=profile.k,
            popularity_discount=profile.popularity_discount,
            diversity=profile.diversity,
        )
        result = rec.recommend_profile(profile.model_dump(), options)
        _record(request, metrics, result)
        return result.to_dict()

    @app.post("/v1/events", dependencies=guarded, tags=["events"])
    def events(event: Event) -> dict[str, Any]:
        """Follow, unfollow, engagement (written to the online store through the Feast push
        source) or block/unblock; the user's next request reflects it."""
        rec = recommender()
        out = rec.apply_event(event.model_dump())
        metrics.count("followrec_events_total", type=event.type)
        return out

    @app.put("/v1/removed-accounts/{account_id}", dependencies=guarded, tags=["events"])
    def remove_account(account_id: Annotated[int, Path(ge=0, le=MAX_ID)]) -> dict[str, Any]:
        """Never recommend this account (suspended, deleted)."""
        recommender().moderation.set_removed(account_id, True)
        return {"account_id": account_id, "removed": True}

    @app.delete("/v1/removed-accounts/{account_id}", dependencies=guarded, tags=["events"])
    def restore_account(account_id: Annotated[int, Path(ge=0, le=MAX_ID)]) -> dict[str, Any]:
        """Recommend this account again."""
        recommender().moderation.set_removed(account_id, False)
        return {"account_id": account_id, "removed": False}

    @app.post("/v1/admin/refresh", dependencies=guarded, tags=["operations"])
    def refresh() -> dict[str, Any]:
        """Check the registry now instead of at the next poll."""
        return check_champion(recommender())

    return app


class Unauthorised(Exception):
    """No or a wrong API key."""


class ServiceUnavailable(Exception):
    """No champion loaded (yet)."""


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
