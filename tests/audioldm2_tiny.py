"""A tiny randomly initialised AudioLDM2 pipeline, built locally and saved like real weights.

The same classes as the production checkpoint (``ClapModel``, ``T5EncoderModel``,
``GPT2LMHeadModel``, ``AudioLDM2ProjectionModel``, ``AudioLDM2UNet2DConditionModel``,
``AutoencoderKL``, ``SpeechT5HifiGan``, a Roberta and a T5 tokenizer, ``ClapFeatureExtractor``,
``DDIMScheduler``), sized after diffusers' own fast tests
(tests/pipelines/audioldm2/test_audioldm2.py ``get_dummy_components``) but with no hub access:
both tokenizers are built from a word list in memory (transformers 5 builds a Roberta BPE or a
T5 Unigram tokenizer from a vocabulary alone). The vocoder upsamples 64x (not 4x) so that a few
seconds of audio is a short latent: two denoising steps of a 3 s clip take about a second on CPU.
The sound is noise; tests can rely on its shape, rate and seeding only.
"""

from __future__ import annotations

from pathlib import Path

WORDS = ("a", "dog", "barks", "in", "the", "rain", "music", "car", "tone", "beeps", "video", "sample")
VOCODER_RATE_HZ = 16000


def _tokenizers():
    from transformers import RobertaTokenizer, T5Tokenizer

    roberta_specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    roberta = RobertaTokenizer(
        vocab={w: i for i, w in enumerate([*roberta_specials, *WORDS])}, merges=[], model_max_length=77
    )
    t5_vocab = [(p, 0.0) for p in ("<pad>", "</s>", "<unk>")] + [("\u2581" + w, -1.0) for w in WORDS]
    t5 = T5Tokenizer(vocab=t5_vocab, extra_ids=0, model_max_length=77)
    return roberta, t5


def build_tiny_audioldm2(folder: str | Path) -> Path:
    """Write a loadable ``AudioLDM2Pipeline`` folder (model_index.json + components) and return it."""
    import torch
    from diffusers import (
        AudioLDM2Pipeline,
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AutoencoderKL,
        DDIMScheduler,
    )
    from transformers import (
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        GPT2Config,
        GPT2LMHeadModel,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
    )

    vocab_size = 32  # both tokenizers have fewer ids than this
    torch.manual_seed(0)
    unet = AudioLDM2UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16),
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=1,
        out_channels=1,
        norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
    )
    text_branch = dict(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, vocab_size=vocab_size, hidden_size=8, intermediate_size=37,
        num_attention_heads=1, num_hidden_layers=1, layer_norm_eps=1e-5, projection_dim=8,
    )  # fmt: skip
    audio_branch = dict(
        spec_size=8, window_size=4, num_mel_bins=8, intermediate_size=37, layer_norm_eps=1e-5, depths=[1, 1],
        num_attention_heads=[1, 1], num_hidden_layers=1, hidden_size=192, projection_dim=8, patch_size=2,
        patch_stride=2, patch_embed_input_channels=4,
    )  # fmt: skip
    clap = ClapModel(ClapConfig(text_config=text_branch, audio_config=audio_branch, projection_dim=16))
    t5 = T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=32, d_ff=37, d_kv=8, num_heads=1, num_layers=1))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=16, n_head=1, n_layer=1, vocab_size=vocab_size, n_ctx=99, n_positions=99))
    gpt2.config.max_new_tokens = 8
    projection = AudioLDM2ProjectionModel(text_encoder_dim=16, text_encoder_1_dim=32, langauge_model_dim=16)
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=8,
            sampling_rate=VOCODER_RATE_HZ,
            upsample_initial_channel=16,
            upsample_rates=[8, 8],
            upsample_kernel_sizes=[16, 16],
            resblock_kernel_sizes=[3, 7],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
            normalize_before=False,
        )
    )
    roberta, t5_tokenizer = _tokenizers()
    pipeline = AudioLDM2Pipeline(
        vae=vae,
        text_encoder=clap,
        text_encoder_2=t5,
        projection_model=projection,
        language_model=gpt2,
        tokenizer=roberta,
        tokenizer_2=t5_tokenizer,
        feature_extractor=ClapFeatureExtractor(feature_size=8, hop_length=7900),
        unet=unet,
        scheduler=DDIMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False
        ),
        vocoder=vocoder,
    )
    folder = Path(folder)
    pipeline.save_pretrained(folder)
    return folder
