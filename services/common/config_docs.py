"""Render the configuration reference (one table per service) from the settings classes.

`python -m services.common.config_docs --write README.md` replaces the text between the
`<!-- config:start -->` / `<!-- config:end -->` markers; `--check README.md` fails when it is stale.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from pydantic_settings import BaseSettings

from services.common.settings import ServiceSettings, describe_settings

SETTINGS = {
    "encoder": "services.encoder.settings:EncoderSettings",
    "search": "services.search.settings:SearchSettings",
    "gateway": "services.gateway.settings:GatewaySettings",
    "console": "services.console.settings:ConsoleSettings",
}
START, END = "<!-- config:start -->", "<!-- config:end -->"
# Defaults under the checkout (e.g. the model repository) are shown relative to it, so the
# reference does not depend on where the repo is cloned.
REPO_PREFIX = str(Path(__file__).resolve().parents[2]) + "/"


def settings_class(service: str) -> type[BaseSettings]:
    module, name = SETTINGS[service].split(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _table(title: str, rows: list[tuple[str, str, str]]) -> list[str]:
    out = [f"#### {title}", "", "| variable | default | meaning |", "|---|---|---|"]
    for env, default, description in rows:
        default = default.replace(REPO_PREFIX, "")
        shown = f"`{default}`" if default else ""
        out.append(f"| `{env}` | {shown} | {description.replace('|', '/')} |")
    return [*out, ""]


def render() -> str:
    common = set(ServiceSettings.model_fields)
    rows = [
        (env.replace("IMAGESEARCH_", "IMAGESEARCH_<SERVICE>_", 1), default, text)
        for env, default, text in describe_settings(ServiceSettings)
    ]
    out = _table("every service (`<SERVICE>` = ENCODER, SEARCH or GATEWAY)", rows)
    for service in SETTINGS:
        cls = settings_class(service)
        prefix = cls.model_config.get("env_prefix", "")
        rows = describe_settings(cls)
        # A gRPC service's table lists only its own settings (the shared ones are in the first table);
        # the console is an HTTP server that shares none of them, so its table lists all of its own.
        own = (
            [row for row in rows if row[0][len(prefix) :].lower() not in common]
            if issubclass(cls, ServiceSettings)
            else rows
        )
        out += _table(service, own)
    return "\n".join(out)


def splice(text: str, table: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path)
    group.add_argument("--check", type=Path)
    args = parser.parse_args()
    path = args.write or args.check
    text = path.read_text()
    updated = splice(text, render())
    if args.write:
        path.write_text(updated)
        return 0
    if updated != text:
        print(f"{path}: configuration reference is stale; run `make docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
