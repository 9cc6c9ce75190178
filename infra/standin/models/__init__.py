"""The stand-in's two real models: a GGUF chat model (llama-cpp-python) and all-MiniLM-L6-v2 (ONNX).

Nothing here imports llama_cpp or onnxruntime at import time: the fast tests run the server with fake models.
"""

from infra.standin.errors import TemplateRejectedError
from infra.standin.models.chat import ChatModel
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
    "EMBED_DIM",
    "EMBED_MAX_TOKENS",
    "STAND_IN_NUM_PREDICT",
    "ChatModel",
    "Embedder",
    "GenerationStats",
    "ModelFilesMissingError",
    "SamplingOptions",
    "StopScanner",
    "TemplateRejectedError",
    "make_grammar",
    "make_tool_grammar",
    "minilm_onnx",
    "minilm_tokenizer_json",
    "smollm2_gguf",
]
