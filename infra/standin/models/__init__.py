"""The stand-in's real models: a GGUF chat model (llama-cpp-python), all-MiniLM-L6-v2 (ONNX), multilingual-e5-small.

Nothing here imports llama_cpp or onnxruntime at import time: the fast tests run the server with fake models.
"""

from infra.standin.errors import TemplateRejectedError
from infra.standin.models.chat import ChatModel
from infra.standin.models.e5 import E5_MAX_TOKENS, E5Embedder, e5_model_file
from infra.standin.models.embedder import EMBED_DIM, EMBED_MAX_TOKENS, Embedder
from infra.standin.models.files import ModelFilesMissingError, minilm_onnx, minilm_tokenizer_json, smollm2_gguf
from infra.standin.models.grammar import make_grammar, make_tool_grammar
from infra.standin.models.sampling import (
    DEFAULT_NUM_CTX,
    STAND_IN_NUM_PREDICT,
    GenerationStats,
    SamplingOptions,
    StopScanner,
)

__all__ = [
    "DEFAULT_NUM_CTX",
    "E5_MAX_TOKENS",
    "EMBED_DIM",
    "EMBED_MAX_TOKENS",
    "STAND_IN_NUM_PREDICT",
    "ChatModel",
    "E5Embedder",
    "Embedder",
    "GenerationStats",
    "ModelFilesMissingError",
    "SamplingOptions",
    "StopScanner",
    "TemplateRejectedError",
    "e5_model_file",
    "make_grammar",
    "make_tool_grammar",
    "minilm_onnx",
    "minilm_tokenizer_json",
    "smollm2_gguf",
]
