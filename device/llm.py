"""JSON that obeys a schema, from a llama.cpp model, asking the grammar about one token at a time.

llama-cpp-python's chat completion filters the whole vocabulary through the JSON grammar
before it picks each token: 151,646 candidates for Qwen, about half as long again as the
1.5B model itself takes for the token (docs/benchmarks.md).  Like llama.cpp's own tools
(``common_sampler_sample``), :class:`JsonGenerator` draws the token from the unconstrained
distribution first and asks the grammar about that one token; only when the grammar refuses it
is the whole vocabulary filtered and the token drawn again.  The text obeys the same grammar
either way; a refusal costs what every token cost before.
"""

from __future__ import annotations

import ctypes
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from device.errors import N_
from device.said import Said

SEED = 20261124
"""Fixed: the same transcript and model give the same summary."""

READING = 0.7
"""The share of a call's progress given to reading its prompt (most of the time on a board)."""
STEP_TOKENS = 16



@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn.  The first try keeps to the likeliest text; a retry after a
    repetition loop penalises tokens the last ``penalty_last_n`` already used and draws
    more freely."""

    temperature: float = 0.2
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    """1.0: none."""
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int = SEED


class RepetitionLoop(ValueError):
    """Generation was stopped: the text had fallen into a loop."""

    def __init__(self, tail: str):
        super().__init__(Said(N_("the model fell into a repetition loop (…%(tail)s)"),
                              tail=tail[-40:]))
        self.tail = tail


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    read_tokens: int
    """The prompt's tokens that were read; the rest were still in the cache from the last call."""
    completion_tokens: int
    seconds: float
    refusals: int
    """Tokens the grammar refused, each drawn again from the filtered vocabulary."""


@dataclass(frozen=True)
class ReadPrompt:
    """A prompt's start read into a model's cache (``JsonGenerator.read``), saved to be put
    back later, in another process: its tokens and the cache's state for them
    (``llama_state_seq_get_data``: about 28 KB a token for Qwen2.5 1.5B)."""

    tokens: list[int]
    state: bytes | memoryview

    def shared(self, tokens: list[int]) -> int:
        """How many of ``tokens`` begin as these do: a prompt read no further."""
        pairs = zip(self.tokens, tokens, strict=False)
        return next((i for i, (a, b) in enumerate(pairs) if a != b),
                    min(len(self.tokens), len(tokens)))


class JsonGenerator:
    """Chat completions constrained to a JSON schema, for one loaded ``llama_cpp.Llama``."""

    def __init__(self, llm):
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._chains: dict[Sampling, object] = {}
        self._chain = None
        self._llm = llm
        self._c = llama_cpp
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError("the model file has no chat template")

        def text(token: int) -> str:
            return llm.detokenize([token], special=True).decode("utf-8") if token >= 0 else ""

        self._format = Jinja2ChatFormatter(template, eos_token=text(llm.token_eos()),
                                           bos_token=text(llm.token_bos()))
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._n_vocab = llm.n_vocab()
        self._ids = np.arange(self._n_vocab, dtype=np.int32)

    def _sampler(self, sampling: Sampling):
        """The sampling chain of llama-cpp-python's chat completion, without its grammar
        (with penalties first when the sampling asks for them); one per sampling, kept."""
        c = self._c
        if sampling not in self._chains:
            chain = c.llama_sampler_chain_init(c.llama_sampler_chain_default_params())
            samplers = []
            if sampling.repeat_penalty != 1.0 or sampling.presence_penalty:
                # Declared with a leading n_vocab in these bindings and without it in newer
                # llama.cpp: integers and floats travel in separate registers, so passing
                # the window twice means the same to both.
                samplers.append(c.llama_sampler_init_penalties(
                    sampling.penalty_last_n, sampling.penalty_last_n, sampling.repeat_penalty,
                    0.0, sampling.presence_penalty))
            samplers += [c.llama_sampler_init_top_k(sampling.top_k),
                         c.llama_sampler_init_top_p(sampling.top_p, 1),
                         c.llama_sampler_init_min_p(sampling.min_p, 1),
                         c.llama_sampler_init_temp(sampling.temperature),
                         c.llama_sampler_init_dist(sampling.seed)]
            for sampler in samplers:
                c.llama_sampler_chain_add(chain, sampler)
            self._chains[sampling] = chain
        return self._chains[sampling]

    def close(self) -> None:
        """Free the samplers and let go of the model (its owner frees it)."""
        for chain in self._chains.values():
            self._c.llama_sampler_free(chain)
        self._chains.clear()
        self._chain = None
        self._llm = None

    def __del__(self):
        self.close()

    def prompt(self, system: str, user: str) -> list[int]:
        formatted = self._format(messages=[{"role": "system", "content": system},
                                           {"role": "user", "content": user}])
        return self._llm.tokenize(formatted.prompt.encode("utf-8"),
                                  add_bos=not formatted.added_special, special=True)

    def prompt_start(self, system: str, start: str) -> list[int]:
        """The tokens of a prompt whose user message begins with ``start``, as far as they
        do not depend on what follows it (the tokens two very different endings share)."""
        one = self.prompt(system, start + "x")
        return one[: ReadPrompt(one, b"").shared(self.prompt(system, start + "\n\n"))]

    def read(self, tokens: list[int]) -> int:
        """Read ``tokens`` into the model's cache (those already there are not read
        again), for a later prompt that begins with them; how many were read."""
        llm = self._llm
        if len(tokens) > llm.n_ctx():
            raise ValueError(f"{len(tokens)} tokens do not fit the context of {llm.n_ctx()}")
        cached = self._cached(tokens, len(tokens))
        for start in range(cached, len(tokens), llm.n_batch):
            llm.eval(tokens[start : start + llm.n_batch])
        return len(tokens) - cached

    def _cached(self, tokens: list[int], most: int) -> int:
        """How many of ``tokens`` (``most`` at most) the cache already holds; the cache is
        cut back to them."""
        llm = self._llm
        old = llm.input_ids[: min(llm.n_tokens, most)]
        differ = np.flatnonzero(old != np.asarray(tokens[: len(old)]))
        llm.n_tokens = int(differ[0]) if len(differ) else len(old)
        return llm.n_tokens

    def saved(self) -> ReadPrompt:
        """What the cache holds: its tokens and the model's state for them."""
        c, llm = self._c, self._llm
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)  # what a longer prompt left there
        size = c.llama_state_seq_get_size(llm.ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = c.llama_state_seq_get_data(llm.ctx, buffer, size, 0)
        return ReadPrompt([int(t) for t in llm.input_ids[: llm.n_tokens]],
                          memoryview(buffer).cast("B")[:written])  # not copied: ~28 KB a token

    def restore(self, read: ReadPrompt) -> bool:
        """Put a saved cache back (``saved``: by the same model file); False when the
        model refuses it (it is then empty)."""
        c, llm = self._c, self._llm
        if not read.tokens or len(read.tokens) >= llm.n_ctx():
            return False
        state = bytes(read.state)
        data = ctypes.cast(ctypes.c_char_p(state), ctypes.POINTER(ctypes.c_uint8))  # not copied
        llm.n_tokens = 0
        if not c.llama_state_seq_set_data(llm.ctx, data, len(state), 0):
            return False
        llm.input_ids[: len(read.tokens)] = read.tokens
        llm.n_tokens = len(read.tokens)
        return True

    def complete(self, system: str, user: str, schema: dict, max_tokens: int,
                 on_step: Callable[[float], None] = lambda done: None,
                 sampling: Sampling = Sampling(),
                 looping: Callable[[str], bool] | None = None,
                 expected_tokens: int | None = None) -> Completion:
        """``on_step`` hears how much of the call is done (0-1) after every batch of the
        prompt and every ``STEP_TOKENS`` generated tokens; an exception it raises (a
        cancelled job) ends the call there.  ``looping`` is asked about the text so far at
        the same steps: when it says yes, RepetitionLoop ends the call (a loop otherwise
        runs to ``max_tokens``, minutes on a board).  Progress while writing is counted
        against ``expected_tokens`` (an answer's usual length), not the limit, so it moves."""
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        c, llm = self._c, self._llm
        started = time.perf_counter()
        tokens = self.prompt(system, user)
        if len(tokens) + max_tokens > llm.n_ctx():
            raise ValueError(f"the prompt ({len(tokens)} tokens) and its answer "
                             f"({max_tokens}) do not fit the context of {llm.n_ctx()}")
        grammar = c.llama_sampler_init_grammar(
            self._vocab, json_schema_to_gbnf(json.dumps(schema)).encode("utf-8"), b"root")
        if not grammar:
            raise ValueError("the schema's grammar could not be built")
        self._chain = self._sampler(sampling)
        c.llama_sampler_reset(self._chain)
        try:
            # The tokens already in the KV cache (the system prompt of the previous call,
            # or a prompt's start read before) are not read again; the last one is, for
            # the logits of what follows it.
            cached = self._cached(tokens, len(tokens) - 1)
            unread = tokens[cached:]
            for start in range(0, len(unread), llm.n_batch):
                llm.eval(unread[start : start + llm.n_batch])
                on_step(READING * min(1.0, (start + llm.n_batch) / len(unread)))
            output: list[int] = []
            refusals = 0
            while len(output) < max_tokens:
                if len(output) % STEP_TOKENS == 0:
                    on_step(READING + (1 - READING)
                            * min(len(output) / (expected_tokens or max_tokens), 0.99))
                    if looping is not None and output:
                        so_far = llm.detokenize(output).decode("utf-8", errors="ignore")
                        if looping(so_far):
                            raise RepetitionLoop(so_far)
                token, refused = self._next(grammar)
                refusals += refused
                if c.llama_vocab_is_eog(self._vocab, token):
                    break
                c.llama_sampler_accept(grammar, token)
                c.llama_sampler_accept(self._chain, token)  # the penalties' memory
                output.append(token)
                llm.eval([token])
        finally:
            c.llama_sampler_free(grammar)
        text = llm.detokenize(output).decode("utf-8", errors="replace")
        return Completion(text, len(tokens), len(tokens) - cached, len(output),
                          time.perf_counter() - started, refusals)

    def _next(self, grammar) -> tuple[int, bool]:
        """The next token: drawn unconstrained, then drawn again from the tokens the
        grammar allows if the grammar refuses it."""
        token = self._draw(None)
        one = np.array([(token, 0.0, 0.0)], dtype=_TOKEN_DATA)
        self._c.llama_sampler_apply(grammar, ctypes.byref(self._array(one)))
        if np.isfinite(one["logit"][0]):
            return token, False
        return self._draw(grammar), True

    def _draw(self, grammar) -> int:
        logits = np.ctypeslib.as_array(self._c.llama_get_logits_ith(self._llm.ctx, -1),
                                       shape=(self._n_vocab,))
        candidates = np.empty(self._n_vocab, dtype=_TOKEN_DATA)
        candidates["id"] = self._ids
        candidates["logit"] = logits
        candidates["p"] = 0.0
        array = self._array(candidates)
        if grammar is not None:
            self._c.llama_sampler_apply(grammar, ctypes.byref(array))
        self._c.llama_sampler_apply(self._chain, ctypes.byref(array))
        # The samplers may point ``data`` elsewhere (top-k sorts into its own buffer).
        return int(array.data[array.selected].id)

    def _array(self, candidates: np.ndarray):
        return self._c.llama_token_data_array(
            data=candidates.ctypes.data_as(self._c.llama_token_data_p),
            size=len(candidates), selected=-1, sorted=False)
