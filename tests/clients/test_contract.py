"""The contract guard (`buf breaking`) and client code generation (`buf generate` with buf.gen.yaml).

CI runs `buf breaking --against '.git#branch=main'` on every change; these tests show that the check
catches real breaks (and lets compatible changes through) with this repo's buf.yaml, and that the
generated Go/TypeScript/Java code is reproducible byte for byte and matches protos/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUF = REPO / "node_modules/.bin/buf"
REQUIRE_ALL = os.environ.get("IMAGESEARCH_REQUIRE_CLIENTS", "") not in ("", "0")

pytestmark = pytest.mark.skipif(not BUF.exists(), reason="buf is not installed: run 'make setup'")


def buf(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env or dict(os.environ)
    )


def contract_copy(tmp_path: Path) -> Path:
    """A copy of the module (buf.yaml + protos/) to edit."""
    dst = tmp_path / "contract"
    shutil.copytree(REPO / "protos", dst / "protos")
    shutil.copy(REPO / "buf.yaml", dst / "buf.yaml")
    return dst


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_contract_is_compatible_with_main() -> None:
    has_main = (
        subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", "main"], cwd=REPO, capture_output=True
        ).returncode
        == 0
    )
    if not has_main:
        pytest.skip("no local 'main' branch to compare with")
    result = buf("breaking", "--against", ".git#branch=main")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        (
            "  bool include_unsafe = 8;\n",
            "",
            'field "8" with name "include_unsafe" on message "SearchRequest" was deleted',
        ),
        ("  int32 page_size = 4;", "  int64 page_size = 4;", 'changed type from "int32" to "int64"'),
    ],
    ids=["deleted-field", "changed-type"],
)
def test_breaking_check_catches_an_incompatible_change(
    tmp_path: Path, old: str, new: str, complaint: str
) -> None:
    changed = contract_copy(tmp_path)
    edit(changed / "protos/imagesearch/v1/gateway.proto", old, new)
    result = buf("breaking", str(changed), "--against", str(REPO))
    assert result.returncode != 0
    assert complaint in result.stdout + result.stderr


def test_breaking_check_lets_an_added_field_through(tmp_path: Path) -> None:
    changed = contract_copy(tmp_path)
    edit(
        changed / "protos/imagesearch/v1/gateway.proto",
        "  FusionType fusion = 10;\n}",
        "  FusionType fusion = 10;\n  // Only assets from this source.\n  string source = 11;\n}",
    )
    result = buf("breaking", str(changed), "--against", str(REPO))
    assert result.returncode == 0, result.stdout + result.stderr


def plugin_env() -> dict[str, str] | None:
    """PATH with the pinned plugins (scripts/install_tools.sh, clients/ts/node_modules), or None."""
    bin_dir = subprocess.run(
        [str(REPO / "scripts/install_tools.sh"), "--print-bin"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = f"{bin_dir}:{REPO / 'clients/ts/node_modules/.bin'}:{os.environ['PATH']}"
    needed = ("protoc-gen-go", "protoc-gen-go-grpc", "protoc-gen-es", "protoc", "protoc-gen-grpc-java")
    if any(shutil.which(tool, path=path) is None for tool in needed):
        return None
    return {**os.environ, "PATH": path}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generated_clients_are_reproducible_and_match_protos(tmp_path: Path) -> None:
    env = plugin_env()
    if env is None:
        if REQUIRE_ALL:
            pytest.fail("IMAGESEARCH_REQUIRE_CLIENTS is set but the codegen plugins are not installed")
        pytest.skip("codegen plugins missing: run scripts/gen_clients.sh --no-build")
    for out in ("a", "b"):
        result = buf("generate", "--template", "buf.gen.yaml", "-o", str(tmp_path / out), env=env)
        assert result.returncode == 0, result.stderr
    first, second = tree(tmp_path / "a/gen"), tree(tmp_path / "b/gen")
    assert set(first) == set(second) and first == second, "buf generate is not deterministic"
    langs = {name.split("/", 1)[0] for name in first}
    assert langs == {"go", "ts", "java"}
    # The gen/ dirs the examples were built from must come from the current protos.
    for lang in sorted(langs):
        built = REPO / "gen" / lang
        if not built.exists():
            continue
        current = {k: v for k, v in tree(built).items() if k != "go.mod"}
        fresh = {k.split("/", 1)[1]: v for k, v in first.items() if k.startswith(f"{lang}/")}
        stale = sorted(set(current) ^ set(fresh) | {k for k in fresh if current.get(k) != fresh[k]})
        assert not stale, f"gen/{lang} is stale ({stale[:5]}): run scripts/gen_clients.sh"
