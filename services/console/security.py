"""What keeps the console safe to open in a browser: response headers (a strict Content-Security-Policy:
scripts only from /static, no inline code), and the checks every uploaded file passes before it reaches
the gateway (declared type, actual bytes, size)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]

# Image types the gateway decodes, by their leading bytes (the declared type alone proves nothing).
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/bmp": (b"BM",),
    "image/tiff": (b"II*\x00", b"MM\x00*"),
}
ACCEPTED_TYPES = frozenset({*_SIGNATURES, "image/webp"})


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def sniff_image_type(data: bytes) -> str | None:
    """The image type the bytes actually are, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for content_type, signatures in _SIGNATURES.items():
        if data.startswith(signatures):
            return content_type
    return None


def upload_problem(filename: str, declared_type: str, data: bytes, max_bytes: int) -> str | None:
    """Why an uploaded file is refused (a message for the user), or None when it may go to the gateway."""
    declared = declared_type.split(";", 1)[0].strip().lower()
    if declared not in ACCEPTED_TYPES:
        kind = declared or "unknown type"
        return f"{filename}: {kind} is not an accepted image type (JPEG, PNG, WebP, GIF, BMP, TIFF)"
    if not data:
        return f"{filename}: the file is empty"
    if len(data) > max_bytes:
        return f"{filename}: {len(data)} bytes exceeds the {max_bytes}-byte upload limit"
    actual = sniff_image_type(data)
    if actual is None:
        return f"{filename}: the file's content is not an image of an accepted type"
    return None
