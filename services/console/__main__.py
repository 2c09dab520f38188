"""`python -m services.console`: the web console on IMAGESEARCH_CONSOLE_LISTEN_ADDRESS (127.0.0.1:8080)."""

from __future__ import annotations

import uvicorn

from services.common.logging import configure_logging, get_logger
from services.console.server import create_app
from services.console.settings import ConsoleSettings


def main() -> None:
    settings = ConsoleSettings()
    configure_logging(settings.log_level, settings.log_format, service="console")
    host, _, port = settings.listen_address.rpartition(":")
    get_logger("console").info(
        "console listening", url=f"http://{host}:{port}", gateway=settings.gateway_address
    )
    # No access log: URLs carry search text, and the console logs nothing a caller typed.
    uvicorn.run(
        create_app(settings),
        host=host.strip("[]"),
        port=int(port),
        access_log=False,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
