from imagesearch.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResizeMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESIZE_MODE_UNSPECIFIED: _ClassVar[ResizeMode]
    RESIZE_MODE_SHORTEST_SIDE_CENTER_CROP: _ClassVar[ResizeMode]
    RESIZE_MODE_SQUASH: _ClassVar[ResizeMode]
RESIZE_MODE_UNSPECIFIED: ResizeMode
RESIZE_MODE_SHORTEST_SIDE_CENTER_CROP: ResizeMode
RESIZE_MODE_SQUASH: ResizeMode

class ImageInput(_message.Message):
    __slots__ = ("id", "data")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    data: bytes
    def __init__(self, id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class TextInput(_message.Message):
    __slots__ = ("id", "text")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class EncodeResult(_message.Message):
    __slots__ = ("id", "embedding", "error", "truncated", "vectors")
    ID_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    id: str
    embedding: _common_pb2.Embedding
    error: _common_pb2.ItemError
    truncated: bool
    vectors: _containers.RepeatedCompositeFieldContainer[_common_pb2.Embedding]
    def __init__(self, id: _Optional[str] = ..., embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ..., truncated: bool = ..., vectors: _Optional[_Iterable[_Union[_common_pb2.Embedding, _Mapping]]] = ...) -> None: ...

class EncodeImagesRequest(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageInput]
    def __init__(self, images: _Optional[_Iterable[_Union[ImageInput, _Mapping]]] = ...) -> None: ...

class EncodeImagesResponse(_message.Message):
    __slots__ = ("results", "model")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EncodeResult]
    model: _common_pb2.ModelRef
    def __init__(self, results: _Optional[_Iterable[_Union[EncodeResult, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class EncodeTextsRequest(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedCompositeFieldContainer[TextInput]
    def __init__(self, texts: _Optional[_Iterable[_Union[TextInput, _Mapping]]] = ...) -> None: ...

class EncodeTextsResponse(_message.Message):
    __slots__ = ("results", "model")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EncodeResult]
    model: _common_pb2.ModelRef
    def __init__(self, results: _Optional[_Iterable[_Union[EncodeResult, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class StreamEncodeImagesRequest(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: ImageInput
    def __init__(self, image: _Optional[_Union[ImageInput, _Mapping]] = ...) -> None: ...

class StreamEncodeImagesResponse(_message.Message):
    __slots__ = ("result", "model")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    result: EncodeResult
    model: _common_pb2.ModelRef
    def __init__(self, result: _Optional[_Union[EncodeResult, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model", "dimension", "image_preprocessing", "text_preprocessing", "runtime", "max_batch_images", "max_batch_texts", "max_image_pixels", "vectors")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    TEXT_PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_IMAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_TEXTS_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRef
    dimension: int
    image_preprocessing: ImagePreprocessing
    text_preprocessing: TextPreprocessing
    runtime: str
    max_batch_images: int
    max_batch_texts: int
    max_image_pixels: int
    vectors: _containers.RepeatedCompositeFieldContainer[_common_pb2.VectorSpec]
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., dimension: _Optional[int] = ..., image_preprocessing: _Optional[_Union[ImagePreprocessing, _Mapping]] = ..., text_preprocessing: _Optional[_Union[TextPreprocessing, _Mapping]] = ..., runtime: _Optional[str] = ..., max_batch_images: _Optional[int] = ..., max_batch_texts: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., vectors: _Optional[_Iterable[_Union[_common_pb2.VectorSpec, _Mapping]]] = ...) -> None: ...

class ImagePreprocessing(_message.Message):
    __slots__ = ("size", "resize_mode", "interpolation", "mean", "std", "color_conversion")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    RESIZE_MODE_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATION_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    COLOR_CONVERSION_FIELD_NUMBER: _ClassVar[int]
    size: int
    resize_mode: ResizeMode
    interpolation: str
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    color_conversion: str
    def __init__(self, size: _Optional[int] = ..., resize_mode: _Optional[_Union[ResizeMode, str]] = ..., interpolation: _Optional[str] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., color_conversion: _Optional[str] = ...) -> None: ...

class TextPreprocessing(_message.Message):
    __slots__ = ("tokenizer", "context_length", "lowercase", "max_text_chars")
    TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    LOWERCASE_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    tokenizer: str
    context_length: int
    lowercase: bool
    max_text_chars: int
    def __init__(self, tokenizer: _Optional[str] = ..., context_length: _Optional[int] = ..., lowercase: bool = ..., max_text_chars: _Optional[int] = ...) -> None: ...
