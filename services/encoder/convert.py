"""Proto <-> domain mapping for the encoder, both directions; nothing else converts messages."""

from __future__ import annotations

from imagesearch.v1 import common_pb2, encoder_pb2

from services.common.errors import status_number
from services.encoder.domain import EmbeddingModel, ImageItem, ItemResult, Limits, ModelInfo, TextItem

_RESIZE_MODES = {
    "shortest_side_center_crop": encoder_pb2.RESIZE_MODE_SHORTEST_SIDE_CENTER_CROP,
    "squash": encoder_pb2.RESIZE_MODE_SQUASH,
}


# ---- proto -> domain ---------------------------------------------------------------------------------


def image_item(image: encoder_pb2.ImageInput) -> ImageItem:
    return ImageItem(image.id, image.data)


def text_item(text: encoder_pb2.TextInput) -> TextItem:
    return TextItem(text.id, text.text)


# ---- domain -> proto ---------------------------------------------------------------------------------


def model_ref(model: EmbeddingModel) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name=model.name, version=model.version)


def encode_result(result: ItemResult, ref: common_pb2.ModelRef) -> encoder_pb2.EncodeResult:
    if result.error is not None:
        return encoder_pb2.EncodeResult(
            id=result.id,
            error=common_pb2.ItemError(code=status_number(result.error.code), message=result.error.message),
            truncated=result.truncated,
        )
    assert result.embedding is not None
    return encoder_pb2.EncodeResult(
        id=result.id,
        embedding=common_pb2.Embedding(values=result.embedding.astype("<f4").tobytes(), model=ref),
        truncated=result.truncated,
        vectors=[
            common_pb2.Embedding(values=vector.astype("<f4").tobytes(), model=ref, vector_name=name)
            for name, vector in result.vectors.items()
        ],
    )


def model_info_to_proto(info: ModelInfo, limits: Limits, runtime: str) -> encoder_pb2.GetModelInfoResponse:
    return encoder_pb2.GetModelInfoResponse(
        model=model_ref(info.model),
        dimension=info.dimension,
        image_preprocessing=encoder_pb2.ImagePreprocessing(
            size=info.image.size,
            resize_mode=_RESIZE_MODES.get(info.image.resize_mode, encoder_pb2.RESIZE_MODE_UNSPECIFIED),
            interpolation=info.image.interpolation,
            mean=list(info.image.mean),
            std=list(info.image.std),
            color_conversion=info.image.color_conversion,
        ),
        text_preprocessing=encoder_pb2.TextPreprocessing(
            tokenizer=info.text.tokenizer,
            context_length=info.text.context_length,
            lowercase=info.text.lowercase,
            max_text_chars=limits.max_text_chars,
        ),
        runtime=runtime,
        max_batch_images=limits.max_batch_images,
        max_batch_texts=limits.max_batch_texts,
        max_image_pixels=limits.max_image_pixels,
        vectors=[
            common_pb2.VectorSpec(
                name=v.name,
                dimension=v.dimension,
                from_text=v.from_text,
                from_image=v.from_image,
                primary=v.primary,
                description=v.description,
            )
            for v in info.vectors
        ],
    )
