"""Per-query correctness tables in RouteLLM's format: one CSV row per prompt, a `prompt` column and
one True/False column per model. A folder is one dataset (MMLU's 43 subject files together).

Prompts listed in RouteLLM's decontamination files (`*contaminated_prompts.jsonl`, column
`eval_prompt`) are dropped: they overlap the data RouteLLM's routers were trained on.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
DEFAULT_STRONG = "gpt-4-1106-preview"


@dataclass(frozen=True)
class RoutingData:
    name: str
    prompts: list[str]
    weak: np.ndarray  # 1.0 where the weak model answered correctly
    strong: np.ndarray
    dropped_contaminated: int
    sources: list[str]
    drafts: list[str] | None = None  # the weak model's own responses, when the table has them
    # The notes coverage σ² each prompt was answered with (a `sigma2` column; skiff's own notes
    # table has one). None: asked without notes, as in RouteLLM's tables.
    sigma2: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def gain(self) -> np.ndarray:
        return self.strong - self.weak

    def subset(self, index: np.ndarray) -> "RoutingData":
        drafts = None if self.drafts is None else [self.drafts[i] for i in index]
        return RoutingData(self.name, [self.prompts[i] for i in index], self.weak[index], self.strong[index],
                           0, self.sources, drafts, None if self.sigma2 is None else self.sigma2[index])

    def describe(self) -> dict:
        return {"name": self.name, "prompts": len(self), "dropped_contaminated": self.dropped_contaminated,
                "weak_accuracy": round(float(self.weak.mean()), 4),
                "strong_accuracy": round(float(self.strong.mean()), 4)}


class RoutingDataError(ValueError):
    pass


def _truth(value: str, where: str) -> float:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "1.0", "yes"):
        return 1.0
    if lowered in ("false", "0", "0.0", "no"):
        return 0.0
    try:
        score = float(lowered)
    except ValueError:
        raise RoutingDataError(f"{where}: {value!r} is not a correctness value (True/False or 0..1)") from None
    if not 0.0 <= score <= 1.0:
        raise RoutingDataError(f"{where}: {value!r} is outside 0..1")
    return score


def _contaminated_prompts(csv_files: list[Path]) -> set[str]:
    """RouteLLM's decontamination lists found beside the tables or one folder up."""
    lists: set[Path] = set()
    for path in csv_files:
        for folder in (path.parent, path.parent.parent):
            lists.update(folder.glob("*contaminated_prompts.jsonl"))
    prompts: set[str] = set()
    for path in sorted(lists):
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    if record.get("eval_prompt"):
                        prompts.add(record["eval_prompt"])
    return prompts


def load_routing_data(source: str | Path, weak_col: str = DEFAULT_WEAK, strong_col: str = DEFAULT_STRONG,
                      drop_contaminated: bool = True, draft_col: str | None = None) -> RoutingData:
    """`draft_col`, if given and present in every file, is the weak model's response column (for
    the cascade ablation); a table without it loads without drafts."""
    source = Path(source).expanduser()
    if source.is_dir():
        files = sorted(source.glob("*.csv"))
        name = source.name
    elif source.is_file():
        files = [source]
        name = source.stem.removesuffix("_responses")
    else:
        raise RoutingDataError(f"{source}: no such file or folder")
    if not files:
        raise RoutingDataError(f"{source}: no .csv files in it")
    contaminated = _contaminated_prompts(files) if drop_contaminated else set()
    csv.field_size_limit(sys.maxsize)
    prompts: list[str] = []
    weak: list[float] = []
    strong: list[float] = []
    drafts: list[str] | None = [] if draft_col else None
    sigma2: list[float] | None = []
    dropped = 0
    for path in files:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"prompt", weak_col, strong_col} - set(reader.fieldnames or [])
            if missing:
                raise RoutingDataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            if draft_col and draft_col not in (reader.fieldnames or []):
                drafts = None
            if "sigma2" not in (reader.fieldnames or []):
                sigma2 = None
            for line, row in enumerate(reader, start=2):
                if row["prompt"] in contaminated:
                    dropped += 1
                    continue
                prompts.append(row["prompt"])
                weak.append(_truth(row[weak_col], f"{path.name}:{line}"))
                strong.append(_truth(row[strong_col], f"{path.name}:{line}"))
                if drafts is not None:
                    drafts.append(row[draft_col] or "")
                if sigma2 is not None:
                    sigma2.append(_coverage(row["sigma2"], f"{path.name}:{line}"))
    if not prompts:
        raise RoutingDataError(f"{source}: no prompts left")
    if drafts is not None and len(drafts) != len(prompts):
        drafts = None  # some file lacked the column: no cascade for this dataset
    if sigma2 is not None and len(sigma2) != len(prompts):
        sigma2 = None
    return RoutingData(name, prompts, np.asarray(weak), np.asarray(strong), dropped, [str(f) for f in files], drafts,
                       None if sigma2 is None else np.asarray(sigma2))


def _coverage(value: str, where: str) -> float:
    try:
        sigma2 = float(value)
    except ValueError:
        raise RoutingDataError(f"{where}: sigma2 {value!r} is not a number") from None
    if not 0.0 <= sigma2 <= 1.0:
        raise RoutingDataError(f"{where}: sigma2 {value!r} is outside 0..1")
    return sigma2


def data_source(spec: str) -> tuple[Path, str | None, str | None]:
    """`PATH`, or `PATH=WEAK,STRONG` naming a table's own weak and strong columns."""
    path, _, columns = spec.partition("=")
    if not columns:
        return Path(spec), None, None
    weak, _, strong = columns.partition(",")
    if not weak or not strong:
        raise RoutingDataError(f"{spec}: name both columns, PATH=WEAK,STRONG")
    return Path(path), weak, strong
