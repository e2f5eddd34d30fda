"""The GE2E speaker encoder (the weights resemblyzer ships), without torch.

Features: a 40-band *linear* mel power spectrogram at 16 kHz, 25 ms Hann windows every
10 ms (Slaney mel scale and area normalisation, as librosa computes it).  Network: three
LSTM layers of 256 over 160 frames (1.6 s), the last layer's final hidden state through
Linear(256, 256) and ReLU, L2-normalised: a 256-d embedding.

Two implementations of the network: ``NumpyEncoder`` (the reference, straight from the
checkpoint's arrays) and ``OnnxEncoder``, an ONNX graph built once from the same arrays
when the model is installed (``build_onnx``) and run by onnxruntime, about twice as fast.
Embeddings change with loudness, so each stretch of audio is brought to the same level
before its features are taken.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from device.audio import SAMPLE_RATE
from device.speakers.weights import WeightsError, load_checkpoint

N_FFT = 400
HOP = 160
MELS = 40
PARTIAL_FRAMES = 160
"""Frames the network reads at a time (1.6 s)."""
HIDDEN = 256
LAYERS = 3
LEVEL_DBFS = -30.0
"""Every stretch is brought to this RMS level before embedding."""
ONNX_FILE = "encoder.onnx"


def weights_of(checkpoint_path: Path) -> dict[str, np.ndarray]:
    """The network's arrays from the checkpoint (its ``model_state``), checked for shape."""
    state = load_checkpoint(checkpoint_path).get("model_state")
    if not isinstance(state, dict):
        raise WeightsError(f"{Path(checkpoint_path).name} has no model_state")
    expected = {"linear.weight": (HIDDEN, HIDDEN), "linear.bias": (HIDDEN,)}
    for layer in range(LAYERS):
        inputs = MELS if layer == 0 else HIDDEN
        expected |= {f"lstm.weight_ih_l{layer}": (4 * HIDDEN, inputs),
                     f"lstm.weight_hh_l{layer}": (4 * HIDDEN, HIDDEN),
                     f"lstm.bias_ih_l{layer}": (4 * HIDDEN,),
                     f"lstm.bias_hh_l{layer}": (4 * HIDDEN,)}
    for name, shape in expected.items():
        array = state.get(name)
        if not isinstance(array, np.ndarray) or array.shape != shape:
            raise WeightsError(f"the speaker model's {name} is missing or not {shape}")
    return {name: np.ascontiguousarray(state[name], dtype=np.float32) for name in expected}


# -- features ------------------------------------------------------------------------------


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


@functools.cache
def mel_filters() -> np.ndarray:
    """(MELS, N_FFT // 2 + 1) triangular filters, each normalised by its width."""
    bins = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(lower, upper))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return filters.astype(np.float32)


def mel_spectrogram(samples: np.ndarray) -> np.ndarray:
    """(frames, MELS) linear mel power, one frame every 10 ms (centred, reflect-padded)."""
    samples = np.asarray(samples, dtype=np.float32)
    padded = np.pad(samples, N_FFT // 2, mode="reflect" if samples.size > N_FFT // 2
                    else "constant")
    count = 1 + (padded.size - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:count]
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return (power @ mel_filters().T).astype(np.float32)


def level(samples: np.ndarray, dbfs: float = LEVEL_DBFS) -> np.ndarray:
    """``samples`` brought to an RMS of ``dbfs`` (silence is left as it is)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0
    if rms < 1e-6:
        return np.asarray(samples, dtype=np.float32)
    return (samples * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def partials(samples: np.ndarray) -> np.ndarray:
    """(n, PARTIAL_FRAMES, MELS): the stretch's features cut into partials of 1.6 s that
    overlap by half (a stretch shorter than one is padded with silence)."""
    mel = mel_spectrogram(level(samples))
    if mel.shape[0] < PARTIAL_FRAMES:
        mel = np.pad(mel, ((0, PARTIAL_FRAMES - mel.shape[0]), (0, 0)))
    step = PARTIAL_FRAMES // 2
    starts = list(range(0, mel.shape[0] - PARTIAL_FRAMES + 1, step))
    if starts[-1] + PARTIAL_FRAMES < mel.shape[0]:
        starts.append(mel.shape[0] - PARTIAL_FRAMES)
    return np.stack([mel[s: s + PARTIAL_FRAMES] for s in starts])


def unit(vectors: np.ndarray) -> np.ndarray:
    """Each vector (the last axis) scaled to length 1."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


# -- the network ---------------------------------------------------------------------------


class NumpyEncoder:
    """The reference: the network in numpy, straight from the checkpoint's arrays."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.w = weights

    def forward(self, mels: np.ndarray) -> np.ndarray:
        """(batch, frames, MELS) -> (batch, 256) unit embeddings."""
        x = np.asarray(mels, dtype=np.float32)
        batch = x.shape[0]
        for layer in range(LAYERS):
            w_ih = self.w[f"lstm.weight_ih_l{layer}"]
            w_hh = self.w[f"lstm.weight_hh_l{layer}"]
            bias = self.w[f"lstm.bias_ih_l{layer}"] + self.w[f"lstm.bias_hh_l{layer}"]
            inputs = x @ w_ih.T + bias  # all time steps at once
            h = np.zeros((batch, HIDDEN), np.float32)
            c = np.zeros((batch, HIDDEN), np.float32)
            out = np.empty((batch, x.shape[1], HIDDEN), np.float32)
            for t in range(x.shape[1]):
                gates = inputs[:, t] + h @ w_hh.T
                i, f, g, o = np.split(gates, 4, axis=1)  # PyTorch's gate order
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                h = _sigmoid(o) * np.tanh(c)
                out[:, t] = h
            x = out
        raw = np.maximum(h @ self.w["linear.weight"].T + self.w["linear.bias"], 0.0)
        return unit(raw)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def build_onnx(weights: dict[str, np.ndarray], path: Path) -> None:
    """Write the network as an ONNX graph (three LSTM nodes, the linear layer, ReLU and the
    L2 norm) with the weights inside; input ``mels`` (batch, frames, MELS)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def onnx_gates(array: np.ndarray) -> np.ndarray:
        i, f, g, o = np.split(array, 4, axis=0)  # PyTorch: i f g o; ONNX: i o f c
        return np.concatenate([i, o, f, g], axis=0)

    initializers = []
    nodes = [helper.make_node("Transpose", ["mels"], ["x0"], perm=[1, 0, 2])]
    for layer in range(LAYERS):
        w = onnx_gates(weights[f"lstm.weight_ih_l{layer}"])[None]
        r = onnx_gates(weights[f"lstm.weight_hh_l{layer}"])[None]
        b = np.concatenate([onnx_gates(weights[f"lstm.bias_ih_l{layer}"]),
                            onnx_gates(weights[f"lstm.bias_hh_l{layer}"])])[None]
        for name, array in ((f"W{layer}", w), (f"R{layer}", r), (f"B{layer}", b)):
            initializers.append(numpy_helper.from_array(array.astype(np.float32), name))
        nodes.append(helper.make_node(
            "LSTM", [f"x{layer}", f"W{layer}", f"R{layer}", f"B{layer}"],
            [f"y{layer}", f"h{layer}"], hidden_size=HIDDEN))
        # Y: (frames, directions=1, batch, hidden) -> (frames, batch, hidden)
        nodes.append(helper.make_node("Squeeze", [f"y{layer}", "axis1"], [f"x{layer + 1}"]))
    initializers += [
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(weights["linear.weight"].T.copy(), "linear_w"),
        numpy_helper.from_array(weights["linear.bias"], "linear_b"),
    ]
    last = f"h{LAYERS - 1}"
    nodes += [
        helper.make_node("Squeeze", [last, "axis0"], ["hidden"]),  # (batch, hidden)
        helper.make_node("MatMul", ["hidden", "linear_w"], ["projected"]),
        helper.make_node("Add", ["projected", "linear_b"], ["biased"]),
        helper.make_node("Relu", ["biased"], ["raw"]),
        helper.make_node("ReduceL2", ["raw"], ["norm"], axes=[1], keepdims=1),
        helper.make_node("Div", ["raw", "norm"], ["embeddings"]),
    ]
    graph = helper.make_graph(
        nodes, "ge2e_speaker_encoder",
        [helper.make_tensor_value_info("mels", TensorProto.FLOAT, ["batch", "frames", MELS])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", HIDDEN])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="tingji")
    model.ir_version = 8
    onnx.checker.check_model(model)
    Path(path).write_bytes(model.SerializeToString())


class OnnxEncoder:
    """The network as built by ``build_onnx``, run by onnxruntime on one thread."""

    def __init__(self, path: Path, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(path), sess_options=options,
                                                    providers=list(providers))

    def forward(self, mels: np.ndarray) -> np.ndarray:
        return self.session.run(["embeddings"], {"mels": np.asarray(mels, np.float32)})[0]


def embed(encoder, samples: np.ndarray) -> np.ndarray:
    """One unit embedding for a stretch of speech: the mean of its partials' embeddings."""
    return unit(encoder.forward(partials(samples)).mean(axis=0))
