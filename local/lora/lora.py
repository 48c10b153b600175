"""LoRA adapters trained at test time on the torch training copy, and written in llama.cpp's GGUF
LoRA adapter format so the running llama.cpp context can attach them without reloading the base.

One `LoraTrainer` holds the training copy with LoRA layers on the target modules. `start()` gives
a fresh adapter (B = 0, so it starts as a no-op) and a fresh Adam; each `step(text)` is one
optimizer step on one text; `write_gguf()` exports the adapter.

GGUF naming follows llama.cpp: the base tensor's name plus `.lora_a` / `.lora_b`, with
`general.type = adapter`, `adapter.type = lora` and `adapter.lora.alpha`. llama.cpp scales by
alpha / rank, as PEFT does. For the llama architecture, llama.cpp's converter permutes the rows of
the Q and K projections (rotary layout) and transformers undoes that when it reads a GGUF; an
adapter's B matrix for Q and K is permuted the same way on export.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

# The architectures whose tensor layout this exporter knows (a test checks each shipped one).
SUPPORTED_ARCHITECTURES = ("llama", "qwen2")


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = 1e-4
    max_tokens: int = 512  # a training text longer than this is cut


@dataclass
class StepResult:
    loss: float
    tokens: int
    seconds: float


@dataclass
class TrainingLog:
    steps: list[StepResult] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(step.seconds for step in self.steps)


def _permute_rows(weights, n_head: int):
    """llama.cpp's rotary row order for Q and K (convert_hf_to_gguf's `permute`)."""
    rows = weights.shape[0]
    return weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


class LoraTrainer:
    def __init__(self, copy, spec: LoraSpec = LoraSpec(), architecture: str = "llama", seed: int = 0) -> None:
        import torch
        from peft import LoraConfig, get_peft_model

        if architecture not in SUPPORTED_ARCHITECTURES:
            raise ValueError(f"test-time LoRA supports {', '.join(SUPPORTED_ARCHITECTURES)} models, "
                             f"not {architecture!r}")
        self.spec = spec
        self.architecture = architecture
        self.tokenizer = copy.tokenizer
        self.config = copy.model.config
        torch.manual_seed(seed)
        lora = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=0.0, target_modules=list(spec.targets),
                          bias="none", task_type="CAUSAL_LM")
        self.model = get_peft_model(copy.model, lora)
        self.model.eval()  # no dropout anywhere; gradients still flow
        self._optimizer = None
        self.log = TrainingLog()

    # -- training ----------------------------------------------------------------------------

    def start(self) -> None:
        """A fresh adapter (a no-op until trained) and a fresh optimizer."""
        import torch
        from peft.tuners.lora import LoraLayer

        for module in self.model.modules():
            if isinstance(module, LoraLayer):
                module.reset_lora_parameters("default", init_lora_weights=True)
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        self._optimizer = torch.optim.Adam(parameters, lr=self.spec.learning_rate)
        self.log = TrainingLog()

    def step(self, text: str) -> StepResult:
        """One optimizer step of next-token loss on `text`."""
        import time

        import torch

        if self._optimizer is None:
            self.start()
        started = time.perf_counter()
        ids = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=self.spec.max_tokens).input_ids
        with torch.enable_grad():
            loss = self.model(input_ids=ids, labels=ids).loss
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()
        result = StepResult(float(loss.detach()), int(ids.shape[1]), time.perf_counter() - started)
        self.log.steps.append(result)
        return result

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoint(self) -> dict:
        """The adapter's weights and the optimizer's state, for torch.save."""
        from peft import get_peft_model_state_dict

        return {"lora": get_peft_model_state_dict(self.model),
                "optimizer": self._optimizer.state_dict() if self._optimizer is not None else None}

    def restore(self, saved: dict) -> None:
        from peft import set_peft_model_state_dict

        self.start()
        set_peft_model_state_dict(self.model, saved["lora"])
        if saved.get("optimizer") is not None:
            self._optimizer.load_state_dict(saved["optimizer"])

        # -- measuring ---------------------------------------------------------------------------

    def bits_per_byte(self, context: str, target: str, with_adapter: bool = True) -> float:
        """Bits per UTF-8 byte of `target` given `context` (the SIFT paper's metric)."""
        import torch

        context_ids = self.tokenizer(context, return_tensors="pt").input_ids if context else None
        target_ids = self.tokenizer(target, return_tensors="pt", add_special_tokens=False).input_ids
        ids = target_ids if context_ids is None else torch.cat([context_ids, target_ids], dim=1)
        labels = ids.clone()
        if context_ids is not None:
            labels[:, : context_ids.shape[1]] = -100
        with torch.no_grad():
            if with_adapter:
                loss = self.model(input_ids=ids, labels=labels).loss
            else:
                with self.model.disable_adapter():
                    loss = self.model(input_ids=ids, labels=labels).loss
        predicted = int((labels[:, 1:] != -100).sum())
        return float(loss) * predicted / math.log(2) / len(target.encode("utf-8"))

    def next_token_logprobs(self, prompt_ids: Sequence[int], with_adapter: bool = True):
        """log-softmax over the vocabulary for the token after `prompt_ids` (a numpy array)."""
        import torch

        ids = torch.tensor([list(prompt_ids)])
        with torch.no_grad():
            if with_adapter:
                logits = self.model(input_ids=ids).logits[0, -1]
            else:
                with self.model.disable_adapter():
                    logits = self.model(input_ids=ids).logits[0, -1]
        return torch.log_softmax(logits.double(), dim=-1).numpy()

    # -- export ------------------------------------------------------------------------------

    def lora_tensors(self) -> dict[str, tuple]:
        """{HF module name: (A, B)} as float32 numpy arrays, A (rank × in), B (out × rank)."""
        from peft.tuners.lora import LoraLayer

        tensors = {}
        for name, module in self.model.named_modules():
            if isinstance(module, LoraLayer) and "default" in module.lora_A:
                base = name.removeprefix("base_model.model.")
                a = module.lora_A["default"].weight.detach().float().numpy().copy()
                b = module.lora_B["default"].weight.detach().float().numpy().copy()
                tensors[base] = (a, b)
        return tensors

    def write_gguf(self, path: Path) -> Path:
        """The adapter as a llama.cpp GGUF LoRA file, written atomically."""
        import gguf

        path = Path(path)
        arch = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}[self.architecture]
        names = gguf.get_tensor_name_map(arch, self.config.num_hidden_layers)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        writer = gguf.GGUFWriter(str(tmp), self.architecture)
        writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(self.spec.alpha))
        heads, kv_heads = self.config.num_attention_heads, self.config.num_key_value_heads
        for module, (a, b) in self.lora_tensors().items():
            base = names.get_name(module + ".weight", try_suffixes=(".weight",))
            if base is None:
                raise ValueError(f"no llama.cpp tensor name for {module}")
            if self.architecture == "llama" and module.endswith("q_proj"):
                b = _permute_rows(b, heads)
            elif self.architecture == "llama" and module.endswith("k_proj"):
                b = _permute_rows(b, kv_heads)
            writer.add_tensor(f"{base}.lora_a", a)
            writer.add_tensor(f"{base}.lora_b", b)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
        return path


def merge_lora(model, tensors: dict[str, tuple], alpha: float, rank: int) -> None:
    """Fold a LoRA (as `LoraTrainer.lora_tensors()` gives it) into a plain model's weights, so a
    new adapter can be trained on top of it (the personal adapter under a question's adapter)."""
    import torch

    with torch.no_grad():
        for name, (a, b) in tensors.items():
            weight = model.get_submodule(name).weight
            weight += torch.from_numpy(b) @ torch.from_numpy(a) * (alpha / rank)
