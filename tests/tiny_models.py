"""Tiny random models of the issue-8 families, built offline from transformers' configs.

Shared by the adapter tests (test_adapters_delta.py, test_adapters_recurrent.py,
test_adapters_multi_mixer.py) and the explorer test (test_families_explorer.py).
Every builder seeds torch, uses eager attention (and eager experts, where a family has
them) and returns a model in eval mode; vocabulary ``V`` = 64 tokens.

- ``delta_model``: qwen3_next, olmo_hybrid, kimi_linear, bailing_hybrid (float64,
  blocks: delta rule, attention, delta rule), with slower decays and betas spread over
  their whole range.
- ``recurrent_model``: rwkv, recurrent_gemma, lfm2, lfm3, minimax, xlstm.
- ``multi_mixer_model``: falcon_h1, nemotron_h, zamba2 (float64), with a skip ``D`` of
  order 1.
- ``tiny_model``: any of the thirteen model types by name.
"""

from __future__ import annotations

import math

import torch
import transformers as tf

V = 64
F64 = torch.float64

# ---------------------------------------------------------------- delta-rule hybrids
LAYER_TYPES = ["linear_attention", "full_attention", "linear_attention"]
COMMON = dict(
    vocab_size=V,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    layer_types=LAYER_TYPES,
    max_position_embeddings=64,
)
MLA = dict(
    moe_intermediate_size=16,
    num_key_value_heads=4,
    kv_lora_rank=8,
    qk_rope_head_dim=4,
    v_head_dim=8,
    qk_nope_head_dim=8,
    num_experts_per_tok=1,
    pad_token_id=0,
    eos_token_id=1,
)
DELTA_CONFIGS = {
    # 2 key heads, 4 value heads: q and k are repeated to the value heads.
    "qwen3_next": lambda: tf.Qwen3NextConfig(
        **COMMON,
        num_key_value_heads=2,
        head_dim=8,
        linear_key_head_dim=8,
        linear_value_head_dim=6,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=16,
        num_experts=2,
        num_experts_per_tok=1,
    ),
    "olmo_hybrid": lambda: tf.OlmoHybridConfig(
        **COMMON,
        num_key_value_heads=2,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=8,
        linear_value_head_dim=6,
        linear_allow_neg_eigval=True,  # beta in [0, 2]
        pad_token_id=0,
        eos_token_id=1,
    ),
    "kimi_linear": lambda: tf.KimiLinearConfig(
        **COMMON,
        **MLA,
        num_local_experts=2,
        linear_attn_config={"head_dim": 8, "num_heads": 4, "short_conv_kernel_size": 4},
    ),
    "bailing_hybrid": lambda: tf.BailingHybridConfig(
        **COMMON, **MLA, num_local_experts=4, n_group=2, topk_group=1, head_dim=8
    ),
}


def delta_mixers(model) -> list:
    """The Gated DeltaNet / Kimi Delta Attention modules of a model, in module order."""
    names = ("GatedDeltaNet", "DeltaAttention")
    return [m for m in model.modules() if type(m).__name__.endswith(names)]


def delta_model(family: str):
    """A float64 delta-rule hybrid (``DELTA_CONFIGS``) with slow decays, spread betas."""
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(
        DELTA_CONFIGS[family](), attn_implementation="eager", experts_implementation="eager"
    )
    model = model.double().eval()  # grouped_mm experts refuse float64: eager experts
    # Not the default init: slower decays (the default forgets within a few steps, so
    # the operators are nearly diagonal) and betas spread over their whole range.
    with torch.no_grad():
        for mixer in delta_mixers(model):
            gate = getattr(mixer, "forget_gate", mixer)
            if family == "bailing_hybrid":  # g = -5 sigmoid(exp(A_log) (f + dt_bias))
                gate.A_log.zero_()
                gate.dt_bias.uniform_(-6.0, -2.0)
            else:  # g = -exp(A_log) softplus(a + dt_bias)
                gate.A_log.uniform_(math.log(0.02), math.log(0.5))
            b = mixer.in_proj_ba if family == "qwen3_next" else mixer.b_proj
            b.weight.normal_(std=0.5)
    return model


# ------------------------------------------------- recurrent and short-convolution LMs
RECURRENT_CONFIGS = {
    "rwkv": lambda: tf.RwkvConfig(
        num_hidden_layers=2,
        hidden_size=16,
        attention_hidden_size=16,
        intermediate_size=32,
        vocab_size=V,
        context_length=64,
    ),
    "recurrent_gemma": lambda: tf.RecurrentGemmaConfig(
        num_hidden_layers=3,
        hidden_size=16,
        lru_width=16,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        intermediate_size=32,
        vocab_size=V,
        attention_window_size=6,
        block_types=["recurrent", "recurrent", "attention"],
    ),
    "lfm2": lambda: tf.Lfm2Config(
        num_hidden_layers=3,
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=V,
        layer_types=["conv", "full_attention", "conv"],
        max_position_embeddings=64,
    ),
    "lfm3": lambda: tf.Lfm3Config(
        num_hidden_layers=4,
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        vocab_size=V,
        layer_types=["conv", "sliding_attention", "conv", "full_attention"],
        sliding_window=5,
        conv_L_cache=4,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    ),
    "minimax": lambda: tf.MiniMaxConfig(
        num_hidden_layers=3,
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        vocab_size=V,
        num_local_experts=2,
        num_experts_per_tok=1,
        layer_types=["linear_attention", "full_attention", "linear_attention"],
        block_size=8,  # L = 20: two full blocks and a partial one
        sliding_window=7,  # applies to MiniMax's softmax layers
        max_position_embeddings=64,
    ),
    "xlstm": lambda: tf.xLSTMConfig(
        num_blocks=2,
        num_hidden_layers=2,
        hidden_size=16,
        num_heads=2,
        vocab_size=V,
        chunk_size=8,  # L = 20: two chunks by the chunkwise kernel, 4 steps by the loop
    ),
}


def recurrent_model(family: str, dtype=F64):
    """A recurrent or short-convolution LM (``RECURRENT_CONFIGS``) in ``dtype``."""
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(
        RECURRENT_CONFIGS[family](), attn_implementation="eager", experts_implementation="eager"
    )
    return model.to(dtype).eval()


# ------------------------------------------------------- blocks with several mixers
MULTI_MIXER_CONFIGS = {
    "falcon_h1": lambda: tf.FalconH1Config(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=V,
        max_position_embeddings=64,
        mamba_d_ssm=32,
        mamba_n_heads=4,
        mamba_d_head=8,
        mamba_n_groups=2,
        mamba_d_state=6,
        mamba_chunk_size=8,
        mamba_expand=1,
    ),
    "nemotron_h": lambda: tf.NemotronHConfig(
        num_hidden_layers=4,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=V,
        max_position_embeddings=64,
        mamba_num_heads=4,
        mamba_head_dim=16,
        n_groups=2,
        ssm_state_size=6,
        chunk_size=8,
        hybrid_override_pattern="M-*M",  # SSD, MLP-only, attention, SSD
    ),
    "zamba2": lambda: tf.Zamba2Config(
        num_hidden_layers=4,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=V,
        max_position_embeddings=64,
        mamba_d_state=6,
        mamba_headdim=8,
        mamba_ngroups=2,
        chunk_size=8,
        n_mamba_heads=8,
        layers_block_type=["mamba", "hybrid", "mamba", "hybrid"],
        hybrid_layer_ids=[1, 3],
        num_mem_blocks=1,
        use_mem_rope=False,
    ),
}


def multi_mixer_model(family: str):
    """A float64 Falcon-H1, NemotronH or Zamba2 (``MULTI_MIXER_CONFIGS``), skip D ~ 1."""
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(
        MULTI_MIXER_CONFIGS[family](), attn_implementation="eager"
    )
    model = model.eval().double()
    with torch.no_grad():  # a skip D of order 1, so that leaving it out is seen
        for module in model.modules():
            if hasattr(module, "D") and hasattr(module, "dt_bias"):
                module.D.normal_()
    return model


# ----------------------------------------------------------------------- all of them
BUILDERS = {
    **{family: delta_model for family in DELTA_CONFIGS},
    **{family: recurrent_model for family in RECURRENT_CONFIGS},
    **{family: multi_mixer_model for family in MULTI_MIXER_CONFIGS},
}
FAMILIES = sorted(BUILDERS)  # the thirteen model types of issue 8


def tiny_model(family: str):
    """The tiny float64 model of any family in ``FAMILIES``."""
    return BUILDERS[family](family)
