"""Server-side login sessions: the cookie carries only a signed random session id; the caller's API key,
the CSRF token and recent query images stay in this process's memory (never in the browser, a URL or a
log line)."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from cachetools import TTLCache
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner

COOKIE_NAME = "imagesearch_console"
# Query images a session keeps for paging through and refining image searches (oldest go first); each is
# at most the upload cap, so this bounds a session's memory.
_QUERY_IMAGES_PER_SESSION = 2
# How long a sign-in form stays valid.
_ANONYMOUS_TTL_S = 15 * 60


@dataclass
class Session:
    csrf_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    api_key: str = ""
    query_images: dict[str, bytes] = field(default_factory=dict)

    @property
    def signed_in(self) -> bool:
        return bool(self.api_key)

    def csrf_ok(self, token: str) -> bool:
        return hmac.compare_digest(self.csrf_token.encode(), token.encode())

    def keep_query_image(self, data: bytes) -> str:
        """Stores a query image for later pages of its search; returns its reference."""
        ref = secrets.token_urlsafe(12)
        self.query_images[ref] = data
        while len(self.query_images) > _QUERY_IMAGES_PER_SESSION:
            self.query_images.pop(next(iter(self.query_images)))
        return ref


class SessionStore:
    """Signed-in sessions and the anonymous ones a sign-in form needs (for its CSRF token) live apart: a
    flood of sign-in page views evicts only other anonymous sessions, never a signed-in one."""

    def __init__(self, secret: bytes, ttl_s: int, max_sessions: int) -> None:
        self._signer = TimestampSigner(secret, salt="imagesearch-console-session")
        self._ttl_s = ttl_s
        self._signed_in: TTLCache[str, Session] = TTLCache(maxsize=max_sessions, ttl=ttl_s)
        self._anonymous: TTLCache[str, Session] = TTLCache(maxsize=max_sessions, ttl=_ANONYMOUS_TTL_S)

    def load(self, cookie: str | None) -> tuple[str, Session] | None:
        """The session a cookie names, or None when it is absent, forged, expired or forgotten."""
        if not cookie:
            return None
        try:
            session_id = self._signer.unsign(cookie, max_age=self._ttl_s).decode()
        except (BadSignature, SignatureExpired):
            return None
        for sessions in (self._signed_in, self._anonymous):
            session = sessions.get(session_id)
            if session is not None:
                sessions[session_id] = session  # refresh the idle timer
                return session_id, session
        return None

    def create(self) -> tuple[str, Session]:
        """An anonymous session: a CSRF token for the sign-in form, nothing else."""
        session_id = secrets.token_urlsafe(32)
        session = Session()
        self._anonymous[session_id] = session
        return session_id, session

    def sign_in(self, anonymous_id: str, api_key: str) -> str:
        """Ends the anonymous session and starts a signed-in one under a fresh id: an id planted before
        sign-in (session fixation) signs nobody in."""
        self.drop(anonymous_id)
        session_id = secrets.token_urlsafe(32)
        self._signed_in[session_id] = Session(api_key=api_key)
        return session_id

    def drop(self, session_id: str) -> None:
        self._signed_in.pop(session_id, None)
        self._anonymous.pop(session_id, None)

    def cookie_value(self, session_id: str) -> str:
        return self._signer.sign(session_id).decode()
