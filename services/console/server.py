"""The console's HTTP app (Starlette): routes, sign-in, CSRF, uploads; each handler validates its input,
calls the page flow (core.Console) and renders a template. Nothing here decides what a caller may see:
the gateway does, for the caller's own key."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from services.common.logging import get_logger
from services.console import forms
from services.console.core import Console, click_event_id
from services.console.domain import Click, ConsoleError, IngestItemOutcome, InvalidInput, ResultsPage, Upload
from services.console.gateway_client import REQUEST_GATEWAY_TIME, GatewayClient, GatewayTime
from services.console.security import SecurityHeaders, sniff_image_type, upload_problem
from services.console.sessions import COOKIE_NAME, Session, SessionStore
from services.console.settings import ConsoleSettings

HERE = Path(__file__).parent
PLACEHOLDER = HERE / "static" / "placeholder.svg"
# What the browser may render from the gateway's image bytes: never anything that could carry script.
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff"})
# Form fields beside the files (text, numbers, the CSRF token) are small.
_MAX_FIELD_BYTES = 64 * 1024

log = get_logger("console")
Handler = Callable[[Request], Awaitable[Response]]


class SignedOut(Exception):
    """The request has no signed-in session (or the gateway no longer accepts its key)."""


def _session(request: Request) -> tuple[str, Session] | None:
    store: SessionStore = request.app.state.sessions
    return store.load(request.cookies.get(COOKIE_NAME))


def _set_cookie(request: Request, response: Response, session_id: str) -> None:
    settings: ConsoleSettings = request.app.state.settings
    store: SessionStore = request.app.state.sessions
    response.set_cookie(
        COOKIE_NAME,
        store.cookie_value(session_id),
        max_age=settings.session_ttl_s,
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
        path="/",
    )


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _render(
    request: Request, template: str, session: Session | None, status_code: int = 200, **context: Any
) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(
        request,
        template,
        {
            "csrf_token": session.csrf_token if session else "",
            "signed_in": bool(session and session.signed_in),
            **context,
        },
        status_code=status_code,
    )


def _search_error(
    request: Request, session: Session, fields: dict[str, str], status_code: int, message: str
) -> Response:
    """The search page again, with the caller's form as they sent it and what was wrong."""
    settings: ConsoleSettings = request.app.state.settings
    return _render(
        request,
        "search.html",
        session,
        status_code=status_code,
        form=fields,
        settings=settings,
        error=message,
    )


def _signed_in(handler: Callable[[Request, str, Session], Awaitable[Response]]) -> Handler:
    """Runs `handler` for a signed-in session; otherwise sends the browser to the sign-in page. A key the
    gateway stops accepting ends the session there too."""

    async def wrapped(request: Request) -> Response:
        loaded = _session(request)
        if loaded is None or not loaded[1].signed_in:
            return _to_login(request, "")
        session_id, session = loaded
        try:
            return await handler(request, session_id, session)
        except ConsoleError as exc:
            if exc.status == "UNAUTHENTICATED":
                request.app.state.sessions.drop(session_id)
                return _to_login(request, "The gateway no longer accepts this key; sign in again.")
            raise

    return wrapped


def _to_login(request: Request, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message or "sign in first"}, status_code=401)
    return RedirectResponse("/login" + (f"?{urlencode({'m': message})}" if message else ""), status_code=303)


async def _form(request: Request, max_files: int) -> FormData:
    """The posted form, with its size bounded before anything is read into memory."""
    settings: ConsoleSettings = request.app.state.settings
    limit = settings.max_upload_bytes * max(1, max_files) + _MAX_FIELD_BYTES
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise InvalidInput(f"the upload is {int(length)} bytes; at most {limit} are accepted per request")
    return await request.form(max_files=max_files, max_fields=64, max_part_size=_MAX_FIELD_BYTES)


def _check_csrf(form: FormData, request: Request, session: Session) -> None:
    token = str(form.get("csrf") or request.headers.get("x-csrf-token") or "")
    if not token or not session.csrf_ok(token):
        raise PermissionError(
            "the form expired or did not come from this console; reload the page and try again"
        )


# The HTTP status a page answers with when the gateway refuses or fails a call.
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def _shown(exc: InvalidInput | ConsoleError) -> tuple[int, str]:
    """(HTTP status, message for the page) of a refused form or a gateway refusal. A refused key is not
    shown here: it propagates, and `_signed_in` ends the session."""
    if isinstance(exc, InvalidInput):
        return 400, str(exc)
    if exc.status == "UNAUTHENTICATED":
        raise exc
    return _HTTP_STATUS.get(exc.status, 502), exc.message


def _text_fields(form: FormData) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str)}


# ------------------------------------------------------------------------------------------------ sign-in


async def login_page(request: Request) -> Response:
    loaded = _session(request)
    if loaded is None:
        session_id, session = request.app.state.sessions.create()
    else:
        session_id, session = loaded
    response = _render(request, "login.html", session, message=request.query_params.get("m", "")[:200])
    _set_cookie(request, response, session_id)
    return response


async def login(request: Request) -> Response:
    loaded = _session(request)
    if loaded is None:
        return _to_login(request, "Your sign-in form expired; try again.")
    session_id, session = loaded
    form = await _form(request, max_files=0)
    try:
        _check_csrf(form, request, session)
    except PermissionError as exc:
        return _render(request, "login.html", session, status_code=403, message=str(exc))
    api_key = str(form.get("api_key") or "").strip()
    if not api_key:
        return _render(request, "login.html", session, status_code=400, message="Enter an API key.")
    console: Console = request.app.state.console
    try:
        await console.gateway.check_key(api_key)
    except ConsoleError as exc:
        if exc.status == "UNAUTHENTICATED":
            status_code, message = 401, "The gateway refused this key."
        else:
            status_code, message = _shown(exc)
        return _render(request, "login.html", session, status_code=status_code, message=message)
    new_id = request.app.state.sessions.sign_in(session_id, api_key)
    response = RedirectResponse("/search", status_code=303)
    _set_cookie(request, response, new_id)
    return response


@_signed_in
async def logout(request: Request, session_id: str, session: Session) -> Response:
    form = await _form(request, max_files=0)
    _check_csrf(form, request, session)
    request.app.state.sessions.drop(session_id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


# ------------------------------------------------------------------------------------------------ search


def _page_links(params: str, results: ResultsPage, path: str) -> dict[str, str]:
    links = {}
    if results.next_page_token:
        links["next"] = f"{path}?{params}&" + urlencode({"page": results.next_page_token})
    return links


@_signed_in
async def search_page(request: Request, session_id: str, session: Session) -> Response:
    settings: ConsoleSettings = request.app.state.settings
    console: Console = request.app.state.console
    fields = dict(request.query_params)
    image_ref = fields.pop("img", "")
    image = session.query_images.get(image_ref) if image_ref else None
    if image_ref and image is None:
        return _search_error(
            request, session, fields, 400, "That image search has expired; drop the image again."
        )
    if not fields.get("text") and image is None:
        return _render(request, "search.html", session, form=fields, settings=settings)
    try:
        query = forms.search_query(fields, image, settings.default_page_size, fields.get("page", ""))
        results = await console.gateway.search(session.api_key, query)
    except (InvalidInput, ConsoleError) as exc:
        status_code, message = _shown(exc)
        return _search_error(request, session, fields, status_code, message)
    params = forms.search_params(fields, image_ref)
    return _render(
        request,
        "search.html",
        session,
        form=fields,
        settings=settings,
        results=results,
        links=_page_links(params, results, "/search"),
        image_ref=image_ref,
        title="Results",
    )


@_signed_in
async def search_post(request: Request, session_id: str, session: Session) -> Response:
    """A search with an uploaded (dropped, pasted) image: the image stays in the session and the browser
    is sent to the results URL, which pages like any text search."""
    settings: ConsoleSettings = request.app.state.settings
    form = await _form(request, max_files=1)
    _check_csrf(form, request, session)
    fields = _text_fields(form)
    fields.pop("csrf", None)
    upload = form.get("image")
    kept = fields.pop("img", "")  # the image of the search being refined, unless unticked
    image_ref = kept if kept in session.query_images else ""
    if isinstance(upload, UploadFile) and upload.filename:
        data = await upload.read()
        problem = upload_problem(upload.filename, upload.content_type or "", data, settings.max_upload_bytes)
        if problem:
            return _search_error(request, session, fields, 400, problem)
        image_ref = session.keep_query_image(data)
    if not fields.get("text", "").strip() and not image_ref:
        return _search_error(request, session, fields, 400, "Give a query text, an image, or both.")
    return RedirectResponse(f"/search?{forms.search_params(fields, image_ref)}", status_code=303)


@_signed_in
async def similar_page(request: Request, session_id: str, session: Session) -> Response:
    settings: ConsoleSettings = request.app.state.settings
    console: Console = request.app.state.console
    asset_id = request.path_params["asset_id"]
    fields = dict(request.query_params)
    try:
        query = forms.search_query(fields, None, settings.default_page_size, fields.get("page", ""))
        results = await console.gateway.similar(session.api_key, asset_id, query)
    except (InvalidInput, ConsoleError) as exc:
        status_code, message = _shown(exc)
        return _search_error(request, session, {}, status_code, message)
    params = forms.search_params(fields)
    return _render(
        request,
        "search.html",
        session,
        form={},
        settings=settings,
        results=results,
        similar_to=asset_id,
        links=_page_links(params, results, request.url.path),
        title=f"Like {asset_id}",
    )


# ------------------------------------------------------------------------------------------------ assets


@_signed_in
async def asset_page(request: Request, session_id: str, session: Session) -> Response:
    console: Console = request.app.state.console
    asset_id = request.path_params["asset_id"]
    try:
        asset = await console.gateway.get_asset(session.api_key, asset_id)
    except ConsoleError as exc:
        status_code, message = _shown(exc)
        return _render(request, "error.html", session, status_code=status_code, error=message, title="Asset")
    search_id, rank = request.query_params.get("s", ""), request.query_params.get("r", "")
    if search_id and rank.isdigit():
        event_id = click_event_id(session_id, search_id, asset_id, int(rank))
        console.record_click(session.api_key, Click(event_id, search_id, asset_id, int(rank)))
    return _render(request, "asset.html", session, asset=asset, title=asset.caption or asset.asset_id)


async def _image(request: Request, thumbnail: bool) -> Response:
    loaded = _session(request)
    if loaded is None or not loaded[1].signed_in:
        return Response(status_code=401)
    console: Console = request.app.state.console
    try:
        image = await console.gateway.asset_image(
            loaded[1].api_key, request.path_params["asset_id"], thumbnail
        )
    except ConsoleError:
        return Response(status_code=401)
    if image is None or image.content_type not in IMAGE_TYPES:
        # The gateway has no stored image to give (or not one a browser may render): a placeholder.
        return FileResponse(PLACEHOLDER, media_type="image/svg+xml", headers={"cache-control": "no-store"})
    return Response(
        image.data, media_type=image.content_type, headers={"cache-control": "private, max-age=300"}
    )


async def query_image(request: Request) -> Response:
    """The image a session searched with (shown beside the form while refining that search)."""
    loaded = _session(request)
    data = loaded[1].query_images.get(request.path_params["ref"]) if loaded else None
    if data is None:
        return Response(status_code=404)
    content_type = sniff_image_type(data) or "application/octet-stream"
    return Response(data, media_type=content_type, headers={"cache-control": "private, no-store"})


async def thumbnail(request: Request) -> Response:
    return await _image(request, thumbnail=True)


async def original(request: Request) -> Response:
    return await _image(request, thumbnail=False)


# ------------------------------------------------------------------------------------------------ ingest


@_signed_in
async def ingest_page(request: Request, session_id: str, session: Session) -> Response:
    settings: ConsoleSettings = request.app.state.settings
    return _render(request, "ingest.html", session, settings=settings, title="Ingest")


def _uploads(
    form: FormData, files: list[UploadFile], datas: list[bytes], settings: ConsoleSettings
) -> tuple[list[Upload], list[IngestItemOutcome]]:
    """The files the gateway gets, and an outcome for each one the console refuses itself."""
    license_name = str(form.get("license") or settings.default_license).strip()
    tags = tuple(t.strip() for t in str(form.get("tags") or "").split(",") if t.strip())
    caption = str(form.get("caption") or "").strip()
    uploads, refused = [], []
    for upload, data in zip(files, datas, strict=True):
        name = (upload.filename or "upload").replace("\\", "/").strip("/")[-256:]
        problem = upload_problem(name, upload.content_type or "", data, settings.max_upload_bytes)
        if problem:
            refused.append(IngestItemOutcome(name, "refused", problem))
            continue
        stem = Path(name).stem.replace("_", " ").replace("-", " ")
        uploads.append(Upload(name, data, caption or stem, tags, license_name))
    return uploads, refused


@_signed_in
async def ingest_post(request: Request, session_id: str, session: Session) -> Response:
    settings: ConsoleSettings = request.app.state.settings
    console: Console = request.app.state.console
    form = await _form(request, max_files=settings.max_ingest_files)
    _check_csrf(form, request, session)
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile) and f.filename]
    if not files:
        raise InvalidInput("choose at least one image file to ingest")
    datas = [await f.read() for f in files]
    uploads, outcomes = _uploads(form, files, datas, settings)
    if uploads:
        async for outcome in console.ingest(session.api_key, uploads):
            outcomes.append(outcome)
    if _wants_json(request):
        return JSONResponse(
            {
                "items": [
                    {
                        "asset_id": o.asset_id,
                        "outcome": o.outcome,
                        "ok": o.ok,
                        "message": o.message,
                        "duplicate_of": o.duplicate_of,
                        "analysis_pending": o.analysis_pending,
                        "details": o.details,
                    }
                    for o in outcomes
                ]
            }
        )
    return _render(request, "ingest.html", session, settings=settings, outcomes=outcomes, title="Ingest")


# ------------------------------------------------------------------------------------------------ status


@_signed_in
async def status_page(request: Request, session_id: str, session: Session) -> Response:
    console: Console = request.app.state.console
    status = await console.status(session.api_key)
    return _render(request, "status.html", session, status=status, title="Status")


async def home(request: Request) -> Response:
    return RedirectResponse("/search", status_code=303)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


# ------------------------------------------------------------------------------------------------ app


async def _refused(request: Request, exc: Exception) -> Response:
    """Bad input, a failed CSRF check or a gateway refusal, shown as a page (or JSON to the script)."""
    if isinstance(exc, ConsoleError) and exc.status == "UNAUTHENTICATED":
        return _to_login(request, "The gateway no longer accepts this key; sign in again.")
    if isinstance(exc, InvalidInput | ConsoleError):
        status_code, message = _shown(exc)
    else:  # PermissionError: a failed CSRF check
        status_code, message = 403, str(exc)
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status_code)
    loaded = _session(request)
    return _render(
        request,
        "error.html",
        loaded[1] if loaded else None,
        status_code=status_code,
        error=message,
        title="Error",
    )


class ServerTiming:
    """Adds `Server-Timing: app;dur=…, gateway;dur=…` (milliseconds): the console's whole handling time
    and the part of it spent waiting on the gateway (bench/console.py reads both)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        spent = GatewayTime()
        token = REQUEST_GATEWAY_TIME.set(spent)

        async def timed(message: Any) -> None:
            if message["type"] == "http.response.start":
                app_ms = (time.perf_counter() - start) * 1000
                value = f"app;dur={app_ms:.1f}, gateway;dur={spent.seconds * 1000:.1f}"
                message["headers"] = [*message.get("headers", []), (b"server-timing", value.encode())]
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            REQUEST_GATEWAY_TIME.reset(token)


def create_app(settings: ConsoleSettings | None = None) -> Starlette:
    settings = settings or ConsoleSettings()
    secret = (
        settings.session_secret.get_secret_value().encode()
        if settings.session_secret
        else secrets.token_bytes(32)
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.console = Console(GatewayClient(settings))
        try:
            yield
        finally:
            await app.state.console.close()

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/healthz", healthz),
            Route("/login", login_page, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/search", search_page, methods=["GET"]),
            Route("/search", search_post, methods=["POST"]),
            Route("/similar/{asset_id:path}", similar_page),
            Route("/asset/{asset_id:path}", asset_page),
            Route("/thumb/{asset_id:path}", thumbnail),
            Route("/query-image/{ref}", query_image),
            Route("/original/{asset_id:path}", original),
            Route("/ingest", ingest_page, methods=["GET"]),
            Route("/ingest", ingest_post, methods=["POST"]),
            Route("/status", status_page),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(ServerTiming), Middleware(SecurityHeaders)],
        exception_handlers={InvalidInput: _refused, PermissionError: _refused, ConsoleError: _refused},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.sessions = SessionStore(secret, settings.session_ttl_s, settings.max_sessions)
    # Autoescaping on for every template: captions, OCR text and reasons come from callers' uploads.
    app.state.templates = Jinja2Templates(
        env=jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    )
    return app
