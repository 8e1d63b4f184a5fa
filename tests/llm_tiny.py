"""Tiny randomly initialised Qwen models, built locally and saved like real checkpoints.

No hub access: the tokenizer is a small byte-level BPE trained here on a few sentences, with
the special tokens the Qwen processors look up (``<|im_start|>``, ``<|video_pad|>``, ``<|AUDIO|>``
...) and a Qwen-style chat template. The models have one or two layers and hidden sizes of
32-64, so loading one and generating a few tokens takes well under a second on CPU.

Each builder writes a directory that ``from_pretrained(..., local_files_only=True)`` loads, the
same way the backends load production weights:

- :func:`build_tiny_text_model`: Qwen2ForCausalLM + tokenizer (merging, taxonomy, keywords).
- :func:`build_tiny_vl_model`: Qwen2-VL or Qwen2.5-VL + image/video processors (video captions).
- :func:`build_tiny_audio_model`: Qwen2-Audio + Whisper feature extractor (audio captions).

The outputs are nonsense; what tests can rely on is the shape of the call (counts, finish
reasons, order). ``always_stop=True`` zeroes the final norm so every logit ties at 0 and greedy
decoding picks token id 0, ``<|endoftext|>``, an end-of-sequence id: the reply is empty and
finishes with ``"stop"`` at the first step. ``reply_tokens=N`` makes the same tie but forbids
the end of sequence for N steps and special tokens always: the reply is N copies of the first
ordinary token, then ``"stop"`` -- a short non-empty nonsense reply, which lets a pipeline test
get past the caption steps to the JSON steps.
"""

from __future__ import annotations

from pathlib import Path

# id 0 is <|endoftext|> on purpose (see always_stop above)
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|AUDIO|>",
)

# Qwen2-VL / Qwen2.5 instruct style: a default system turn, media placeholders expanded by the processor
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'audio' or 'audio' in content %}<|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "A dog barks in a park while children laugh and a car passes by on the wet street.",
    "The camera pans across a crowded market; vendors shout, music plays from a radio.",
    "Rain falls on a tin roof. Thunder rolls in the distance and a door creaks open.",
    "A man plays the acoustic guitar and sings softly in a quiet room with wooden walls.",
    '{"category": "music", "subcategory": "instrument", "keywords": ["guitar", "singing"]}',
    "Ocean waves crash on rocks, seagulls cry, and wind blows across the sandy beach.",
    "An engine starts, tyres screech, and the crowd cheers as the race begins at noon.",
    "0123456789 .,;:!?'\"()[]{}<>-_=+*/\\ abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]

VOCAB_SIZE = 512  # tokenizer vocabulary (including the specials); model vocab is rounded up


def build_tiny_tokenizer(vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with Qwen's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == 0
    return tokenizer


def _ids(tokenizer) -> dict[str, int]:
    return {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}


def _text_config_kwargs(tokenizer, hidden_size: int) -> dict:
    ids = _ids(tokenizer)
    return dict(
        vocab_size=(len(tokenizer) + 63) // 64 * 64,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )


def _save(
    model, processor_or_tokenizer, tokenizer, path: Path, always_stop: bool, reply_tokens: int | None = None
) -> Path:
    import torch
    from transformers import GenerationConfig

    ids = _ids(tokenizer)
    if always_stop or reply_tokens:
        with torch.no_grad():
            model.get_decoder().norm.weight.zero_()
    eos = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    extra = {}
    if reply_tokens:
        extra = dict(min_new_tokens=reply_tokens, suppress_tokens=[i for i in ids.values() if i not in eos])
    # like Qwen's instruct checkpoints: both <|im_end|> and <|endoftext|> end a reply
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=ids["<|endoftext|>"], do_sample=False, **extra
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor_or_tokenizer.save_pretrained(path)
    return path


def build_tiny_text_model(
    path: Path, *, always_stop: bool = False, reply_tokens: int | None = None, seed: int = 0
) -> Path:
    """A 2-layer Qwen2ForCausalLM (hidden 64) and its tokenizer, saved to ``path``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    model = Qwen2ForCausalLM(Qwen2Config(**_text_config_kwargs(tokenizer, 64), tie_word_embeddings=False))
    return _save(model.eval(), tokenizer, tokenizer, Path(path), always_stop, reply_tokens)


def build_tiny_vl_model(
    path: Path,
    *,
    family: str = "qwen2_vl",
    always_stop: bool = False,
    reply_tokens: int | None = None,
    seed: int = 0,
) -> Path:
    """A Qwen2-VL (``family="qwen2_vl"``) or Qwen2.5-VL (``"qwen2_5_vl"``) with a 1-block vision tower
    (width 32) and a 2-layer text model (hidden 64), its image and video processors (patch 14, merge 2,
    temporal patch 2, a small pixel budget: a frame is a few 28x28 cells), saved to ``path``."""
    import torch
    import transformers

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    ids = _ids(tokenizer)
    text = _text_config_kwargs(tokenizer, 64)
    # mrope sections: 3 parts summing to head_dim / 2 = 64 / 4 / 2 = 8
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    vision = dict(depth=1, hidden_size=32, num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if family == "qwen2_vl":
        vision.update(embed_dim=32, hidden_size=64, mlp_ratio=2)
        config_class, model_class = transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
        processor_class = transformers.Qwen2VLProcessor
    elif family == "qwen2_5_vl":
        vision.update(intermediate_size=64, out_hidden_size=64, window_size=56, fullatt_block_indexes=[0])
        config_class, model_class = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration
        processor_class = transformers.Qwen2_5_VLProcessor
    else:
        raise ValueError(f"family must be 'qwen2_vl' or 'qwen2_5_vl', got {family!r}")
    config = config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = model_class(config)
    size = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 16}
    processor = processor_class(
        image_processor=transformers.Qwen2VLImageProcessor(size=size),
        video_processor=transformers.Qwen2VLVideoProcessor(size=size),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    return _save(model.eval(), processor, tokenizer, Path(path), always_stop, reply_tokens)


def build_tiny_audio_model(
    path: Path, *, always_stop: bool = False, reply_tokens: int | None = None, seed: int = 0
) -> Path:
    """A Qwen2-Audio with a 1-layer encoder (d_model 32, 32 mel bins, 8 s window) and a 2-layer text
    model (hidden 64), its Whisper feature extractor and processor, saved to ``path``."""
    import torch
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    ids = _ids(tokenizer)
    chunk_s = 8  # the real model takes 30 s windows; 8 s keeps the encoder cheap
    config = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=32, encoder_layers=1,
                          encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
                          max_source_positions=chunk_s * 100 // 2),
        text_config=dict(model_type="qwen2", **_text_config_kwargs(tokenizer, 64)),
        audio_token_index=ids["<|AUDIO|>"],
    )
    model = Qwen2AudioForConditionalGeneration(config)
    extractor = WhisperFeatureExtractor(feature_size=32, sampling_rate=16_000, chunk_length=chunk_s)
    processor = Qwen2AudioProcessor(feature_extractor=extractor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
    return _save(model.eval(), processor, tokenizer, Path(path), always_stop, reply_tokens)
