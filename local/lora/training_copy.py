"""The local GGUF's weights dequantised into torch, for training LoRA adapters.

transformers reads GGUF itself (with the `gguf` package), but dequantising takes ~20 s for a
135M-parameter model; the result is saved once as safetensors in skiff's cache, keyed by the GGUF's
name, size and modification time, and later loads take about a second. The copy is written to a
temporary folder and renamed into place, so a killed conversion leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a model hub is never asked for anything
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
_CONVERTING = threading.Lock()


@dataclass
class TrainingCopy:
    model: object  # a transformers causal LM in float32, in eval mode
    tokenizer: object
    folder: Path  # the cached safetensors copy


def cache_key(gguf: Path) -> str:
    stat = gguf.stat()
    return hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def copy_folder(gguf: Path, cache_dir: Path) -> Path:
    return Path(cache_dir) / "training-copies" / f"{gguf.stem}-{cache_key(gguf)}"


def load_training_copy(gguf: Path, cache_dir: Path, threads: int | None = None) -> TrainingCopy:
    """The dequantised copy of `gguf`, converted on first use and cached afterwards."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(threads)
    gguf = Path(gguf)
    folder = copy_folder(gguf, cache_dir)
    with _CONVERTING:  # a background /tune and a local+ question may both arrive here first
        if not (folder / "config.json").is_file():
            _convert(gguf, folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.eval()
    return TrainingCopy(model, tokenizer, folder)


def _convert(gguf: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp", dir=folder.parent))
    try:
        # transformers draws its own tqdm bar while dequantising; skiff shows its own progress.
        with contextlib.redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The weights are plain float32 once dequantised; only transformers' bookkeeping still
        # calls them "quantized with gguf", which save_pretrained refuses.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
