"""Small ONNX models built in the test process (seeded weights, nothing downloaded), for the
shapes users bring: a BERT-like encoder (three int64 inputs, dynamic batch and sequence, two
outputs), a model with two outputs, a model with a float16 input, a tiny classifier.

Each builder writes `path` and returns it. Opset 17 (LayerNormalization), IR version 8, so every
framework's importer reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _weight(rng: np.random.Generator, name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def bert_like(path: Path, vocab: int = 100, hidden: int = 16, seed: int = 0) -> Path:
    """input_ids, attention_mask, token_type_ids: int64 [batch, seq]. One self-attention layer
    (the mask added as -10000 where it is 0) and a layer norm. Outputs last_hidden_state
    [batch, seq, hidden] and pooler_output [batch, hidden] (tanh of the mean over the sequence)."""
    rng = np.random.default_rng(seed)
    ints = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    outputs = [
        helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden]),
        helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, ["batch", hidden]),
    ]
    inits = [
        _weight(rng, "word_emb", vocab, hidden, scale=1.0),
        _weight(rng, "type_emb", 2, hidden, scale=1.0),
        _weight(rng, "wq", hidden, hidden),
        _weight(rng, "wk", hidden, hidden),
        _weight(rng, "wv", hidden, hidden),
        numpy_helper.from_array(np.ones(hidden, np.float32), "ln_scale"),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "ln_bias"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(-10000.0, np.float32), "neg"),
        numpy_helper.from_array(np.array(1 / np.sqrt(hidden), np.float32), "scale"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    n = helper.make_node
    nodes = [
        n("Gather", ["word_emb", "input_ids"], ["we"]),
        n("Gather", ["type_emb", "token_type_ids"], ["te"]),
        n("Add", ["we", "te"], ["emb"]),
        n("MatMul", ["emb", "wq"], ["q"]),
        n("MatMul", ["emb", "wk"], ["k"]),
        n("MatMul", ["emb", "wv"], ["v"]),
        n("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        n("MatMul", ["q", "kt"], ["raw"]),
        n("Mul", ["raw", "scale"], ["scaled"]),
        n("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        n("Sub", ["one", "maskf"], ["inv"]),
        n("Mul", ["inv", "neg"], ["bias2"]),
        n("Unsqueeze", ["bias2", "axis1"], ["bias"]),
        n("Add", ["scaled", "bias"], ["masked"]),
        n("Softmax", ["masked"], ["probs"], axis=-1),
        n("MatMul", ["probs", "v"], ["ctx"]),
        n("Add", ["ctx", "emb"], ["res"]),
        n("LayerNormalization", ["res", "ln_scale", "ln_bias"], ["last_hidden_state"], axis=-1),
        n("ReduceMean", ["last_hidden_state"], ["mean"], axes=[1], keepdims=0),
        n("Tanh", ["mean"], ["pooler_output"]),
    ]
    return _save(helper.make_graph(nodes, "bert_like", ints, outputs, inits), path)


def two_outputs(path: Path, features: int = 8, classes: int = 10, embed: int = 4, seed: int = 1) -> Path:
    """x: float32 [batch, features] -> logits [batch, classes] and embedding [batch, embed]."""
    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])
    outs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
        helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", embed]),
    ]
    inits = [_weight(rng, "w1", features, classes, scale=3.0), _weight(rng, "w2", features, embed)]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["logits"]),
        helper.make_node("MatMul", ["x", "w2"], ["e"]),
        helper.make_node("Tanh", ["e"], ["embedding"]),
    ]
    return _save(helper.make_graph(nodes, "two_outputs", [x], outs, inits), path)


def float16_input(path: Path, features: int = 8, classes: int = 10, seed: int = 2) -> Path:
    """x: float16 [batch, features], cast to float32 inside -> logits [batch, classes]."""
    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", features])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["xf", "w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "float16_input", [x], [y], [_weight(rng, "w", features, classes, scale=3.0)]
    )
    return _save(graph, path)


def classifier(path: Path, features: int = 8, classes: int = 10, seed: int = 3) -> Path:
    """x: float32 [batch, features] -> softmax probabilities [batch, classes]: for accuracy tests."""
    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "classifier", [x], [y], [_weight(rng, "w", features, classes, scale=3.0)]
    )
    return _save(graph, path)


def classifier_predictions(path: Path, x: np.ndarray) -> np.ndarray:
    """The classifier's fp32 predictions on `x`, computed here with NumPy from its weights (the
    known truth for accuracy tests: labels equal to these score 100 %)."""
    model = onnx.load(str(path))
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w"))
    labels: np.ndarray = (x.astype(np.float64) @ w.astype(np.float64)).argmax(axis=1)
    return labels
