"""The photo package's image graph computes what its package.json declares: the ConSE label matrix is
built from classes.json's texts with the declared weights, and `visual` is the power-normalised pooled
feature. A rebuild that changed one side without the other (a weight, a template, the power) fails here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from tokenizers import Tokenizer

from services.encoder.package import ModelPackage
from services.encoder.preprocess import decode_image
from tools.photo_package.assemble import label_matrix
from tools.photo_package.build import wordnet_classes
from tools.photo_package.evaluate import session
from tools.photo_package.tune_conse import with_logits

SUBSET_IMAGES = Path(__file__).resolve().parent / "fixtures" / "photo_recall" / "images"


def test_the_label_matrix_is_the_declared_mix_of_class_texts(
    photo_package: ModelPackage, tmp_path: Path
) -> None:
    root = photo_package.directory
    meta = json.loads((root / "package.json").read_text())
    weights = meta["towers"]["image"]["conse"]["label_texts"]
    assert weights == {"label_text": 1.0, "hypernym_text": 0.3}
    classes = json.loads((root / "classes.json").read_text())
    tok = Tokenizer.from_file(str(root / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    _, shipped, _ = with_logits(root / "image.onnx", tmp_path / "image.onnx")

    recomputed = label_matrix(session(root / "text.onnx", 1), tok, classes, weights)
    assert np.abs(recomputed - shipped).max() < 1e-5
    # the parent-class text is in the mix: label texts alone give other rows
    alone = label_matrix(session(root / "text.onnx", 1), tok, classes, {"label_text": 1.0})
    assert np.abs(alone - shipped).max() > 1e-2


def test_visual_is_the_power_normalised_pooled_feature(photo_package: ModelPackage, tmp_path: Path) -> None:
    root = photo_package.directory
    power = json.loads((root / "package.json").read_text())["towers"]["image"]["visual_power"]
    assert power == 0.25
    m = onnx.load(str(root / "image.onnx"))
    (pow_node,) = [n for n in m.graph.node if n.op_type == "Pow"]
    pooled_name = pow_node.input[0]
    m.graph.output.append(onnx.helper.make_tensor_value_info(pooled_name, onnx.TensorProto.FLOAT, None))
    onnx.save(m, str(tmp_path / "image.onnx"))

    files = sorted(p for p in SUBSET_IMAGES.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})[:4]
    assert files, f"no images in {SUBSET_IMAGES}"
    pixels = np.stack([decode_image(p.read_bytes(), 224, 200_000_000, "rgb_on_white") for p in files])
    visual, pooled = session(tmp_path / "image.onnx", 1).run(["visual", pooled_name], {"pixels": pixels})
    assert pooled.shape == (len(files), 1280) and pooled.min() >= 0.0  # ReLU6 before the pool
    expected = pooled**power
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.abs(visual - expected).max() < 1e-5
    plain = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    assert np.abs(visual - plain).max() > 1e-2


# data.noun lines: synset head (offset, lexfile, pos, lemmas, pointers) | gloss
DATA_NOUN = "".join(
    f"{head} | {gloss}\n"
    for head, gloss in [
        ("  1 This software and database is being provided to you", "the LICENSEE"),
        ("00001740 03 n 01 entity 0 001 ~ 00002137 n 0000", "that which is perceived or known"),
        (
            "02084071 05 n 02 dog 0 domestic_dog 0 002 @ 02083346 n 0000 ~ 02110958 n 0000",
            'a member of the genus Canis; "the dog barked all night"',
        ),
        ("02083346 05 n 01 canine 0 001 @ 02075296 n 0000", "any of various fissiped mammals"),
        (
            "02110958 05 n 03 Border_collie 0 collie_dog 0 sheepdog 0 001 @ 02084071 n 0000",
            'developed in the area between Scotland and England; "a clever dog"',
        ),
        ("09000001 15 n 01 Everest 0 002 ;c 00001740 n 0000 @i 09000002 n 0000", "the highest mountain"),
        ("09000002 15 n 01 mountain 0 000", "a land mass that projects well above its surroundings"),
    ]
)


def test_wordnet_classes_take_lemmas_gloss_and_first_hypernym(tmp_path: Path) -> None:
    (tmp_path / "data.noun").write_text(DATA_NOUN)
    collie, everest = wordnet_classes(["n02110958", "n09000001"], tmp_path)
    assert collie["lemmas"] == ["Border collie", "collie dog", "sheepdog"]
    assert collie["gloss"] == "developed in the area between Scotland and England"  # examples dropped
    assert collie["hypernym"] == "dog"
    assert collie["label_text"] == (
        "a photo of a Border collie, collie dog, sheepdog: developed in the area between Scotland and England"
    )
    assert collie["hypernym_text"] == "a dog: a member of the genus Canis"
    # an instance hypernym counts; a domain pointer (";c") does not
    assert everest["hypernym_text"] == "a mountain: a land mass that projects well above its surroundings"
