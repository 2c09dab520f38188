"""Model packages: a self-describing directory (package.json, format imagesearch-model-package/1) that says
everything the encoder needs to serve a model: its towers (files, Triton model names, tensors), the named
vectors they produce, its tokenizer and its image preprocessing.

Nothing in the encoder branches on a model's name: a new model is a new package. The manifest is parsed
and checked here once (pydantic); a package the encoder cannot serve is refused at startup with a message
that names the field.

A package reference (the `model_package` setting) is either a directory holding package.json, or a short
name: `<name>` is `models/<name>/package` in this repository.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.common.errors import FailedPrecondition

FORMAT = "imagesearch-model-package/1"
TowerKind = Literal["image", "text"]
TOWERS: tuple[TowerKind, ...] = ("image", "text")
# numpy dtype names of the tensor types packages use.
DTYPES = {"UINT8": "uint8", "INT64": "int64", "INT32": "int32", "FP32": "float32"}


class _Model(BaseModel):
    # Unknown keys are allowed: a package card carries more (licences, build, limitations) than serving needs.
    model_config = ConfigDict(extra="allow", frozen=True)


class VectorManifest(_Model):
    dim: int = Field(ge=1)
    towers: list[Literal["image", "text"]] = Field(min_length=1)
    metric: Literal["cosine"] = "cosine"
    normalized: bool = True
    use: str = ""


class TensorManifest(_Model):
    name: str = Field(min_length=1)
    dtype: Literal["UINT8", "INT64", "INT32", "FP32"]
    shape: list[int] = Field(min_length=1)
    vector: str | None = None  # outputs: which named vector this tensor is


class TowerVariant(_Model):
    file: str = ""
    triton_model: str


class TowerManifest(_Model):
    # The ONNX file, relative to the package directory; empty: the Triton model repository's
    # <triton_model>/<latest version>/model.onnx (what Triton itself serves).
    file: str = ""
    triton_model: str = ""  # the model's name in a Triton repository (empty: not served by Triton)
    inputs: list[TensorManifest] = Field(min_length=1)
    outputs: list[TensorManifest] = Field(min_length=1)
    # Alternative builds of the same tower, same tensors and vectors (e.g. "int8").
    variants: dict[str, TowerVariant] = Field(default_factory=dict)


class TokenizerManifest(_Model):
    kind: Literal["clip-bpe", "wordpiece"]
    file: str = ""  # Hugging Face tokenizers tokenizer.json (wordpiece)
    max_length: int = Field(ge=2)
    lower_case: bool = True
    padding: dict[str, object] = Field(default_factory=dict)


class ImagePreprocessingManifest(_Model):
    size: int = Field(ge=1)
    resize_mode: Literal["shortest_side_center_crop"]
    interpolation: Literal["bicubic"]
    color_mode: Literal["clip_reference", "rgb_on_white"]
    # Informational (the scaling is inside the graph): reported in GetModelInfo.
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


class PreprocessingManifest(_Model):
    image: ImagePreprocessingManifest


class PackageManifest(_Model):
    format: Literal["imagesearch-model-package/1"]
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    description: str = ""
    vectors: dict[str, VectorManifest] = Field(min_length=1)
    towers: dict[Literal["image", "text"], TowerManifest]
    tokenizer: TokenizerManifest
    preprocessing: PreprocessingManifest

    @model_validator(mode="after")
    def _consistent(self) -> PackageManifest:
        for tower in TOWERS:
            if tower not in self.towers:
                raise ValueError(f"towers.{tower} is missing")
            spec = self.towers[tower]
            if not spec.file and not spec.triton_model:
                raise ValueError(f"towers.{tower} needs a file or a triton_model")
            for output in spec.outputs:
                if output.vector not in self.vectors:
                    raise ValueError(
                        f"towers.{tower} output '{output.name}' names vector {output.vector!r}, "
                        f"not one of {sorted(self.vectors)}"
                    )
                if tower not in self.vectors[output.vector].towers:
                    raise ValueError(f"vectors.{output.vector}.towers does not list '{tower}'")
                if output.shape[-1] not in (-1, self.vectors[output.vector].dim):
                    raise ValueError(
                        f"towers.{tower} output '{output.name}' is {output.shape[-1]} wide, "
                        f"vectors.{output.vector}.dim says {self.vectors[output.vector].dim}"
                    )
        for name, vector in self.vectors.items():
            for tower in vector.towers:
                if not any(o.vector == name for o in self.towers[tower].outputs):
                    raise ValueError(f"vectors.{name} lists tower '{tower}' but no output of it produces it")
        shared = [n for n, v in self.vectors.items() if set(v.towers) == set(TOWERS)]
        if len(shared) != 1:
            raise ValueError(
                "exactly one vector must be produced by both the image and the text tower (the primary "
                f"vector); found {shared}"
            )
        if self.tokenizer.kind == "wordpiece" and not self.tokenizer.file:
            raise ValueError("tokenizer.file (a tokenizer.json) is required for a wordpiece tokenizer")
        return self


@dataclass(frozen=True)
class Tower:
    """One tower as served: the resolved ONNX file and its tensors."""

    kind: str  # "image" or "text"
    file: Path
    triton_model: str
    inputs: tuple[TensorManifest, ...]
    outputs: tuple[TensorManifest, ...]

    def output_vectors(self) -> dict[str, str]:
        """output tensor name -> vector name."""
        return {o.name: o.vector for o in self.outputs if o.vector is not None}


@dataclass(frozen=True)
class ModelPackage:
    directory: Path
    manifest: PackageManifest
    model_repository: Path  # where towers without a file of their own are found
    variant: str = ""  # the image tower's variant being served ("" = the tower itself)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def primary_vector(self) -> str:
        return next(n for n, v in self.manifest.vectors.items() if set(v.towers) == set(TOWERS))

    def tower(self, kind: TowerKind) -> Tower:
        manifest = self.manifest.towers[kind]
        file, triton_model = manifest.file, manifest.triton_model
        if kind == "image" and self.variant:
            variant = manifest.variants[self.variant]
            file, triton_model = variant.file, variant.triton_model
        if file:
            path = (self.directory / file).resolve()
        else:
            model_dir = self.model_repository / triton_model
            versions = sorted(
                (int(p.parent.name) for p in model_dir.glob("*/model.onnx") if p.parent.name.isdigit()),
                reverse=True,
            )
            path = model_dir / str(versions[0] if versions else 1) / "model.onnx"
        return Tower(
            kind=kind,
            file=path,
            triton_model=triton_model,
            inputs=tuple(manifest.inputs),
            outputs=tuple(manifest.outputs),
        )

    @property
    def tokenizer_file(self) -> Path | None:
        return self.directory / self.manifest.tokenizer.file if self.manifest.tokenizer.file else None


def resolve(reference: str, models_dir: Path) -> Path:
    """A package directory from a path or a short name (models/<name>/package)."""
    path = Path(reference).expanduser()
    if (path / "package.json").is_file():
        return path
    by_name = models_dir / reference / "package"
    if "/" not in reference and (by_name / "package.json").is_file():
        return by_name
    known = sorted(p.parent.parent.name for p in models_dir.glob("*/package/package.json"))
    raise FailedPrecondition(
        f"model package {reference!r} not found: give a directory holding package.json or one of {known}"
    )


def load_package(reference: str, models_dir: Path, model_repository: Path, variant: str = "") -> ModelPackage:
    """Read and check a package; FailedPrecondition names what is wrong with it."""
    directory = resolve(reference, models_dir)
    path = directory / "package.json"
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise FailedPrecondition(f"cannot read {path}: {exc.strerror or 'unreadable'}") from None
    except json.JSONDecodeError as exc:
        raise FailedPrecondition(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if isinstance(raw, dict) and raw.get("format") != FORMAT:
        raise FailedPrecondition(f"{path}: format must be {FORMAT!r}, not {raw.get('format')!r}")
    try:
        manifest = PackageManifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'package'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise FailedPrecondition(f"{path} is not a servable model package: {problems}") from None
    if variant and variant not in manifest.towers["image"].variants:
        raise FailedPrecondition(
            f"package {manifest.name!r} has no image tower variant {variant!r} "
            f"(it has {sorted(manifest.towers['image'].variants) or 'none'})"
        )
    return ModelPackage(
        directory=directory.resolve(), manifest=manifest, model_repository=model_repository, variant=variant
    )
