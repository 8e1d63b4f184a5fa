"""``javis``: the command line.

javis demo [--output DIR]                      make sample media and curate it
javis run --input PATH|URL|LIST|QUERY ... --output DIR [--preset NAME] [--config FILE]
          [--set section.key=value ...] [--address auto]
javis config [--preset NAME] [--json]           every config key, its value and what it does
javis crawl --output DIR --set keywords.llm.model_path=... [--keywords-only]
javis audit DIR [--json] [--items] [--clip ID | --source ID]
javis report DIR [--dest DIR]                  a static HTML report: funnel, histograms, what-ifs, gallery
javis latents OUT [--encoders tiny|production] [--preset tiny|paper|ditpp-tiny|ditpp-paper] [--path key=value ...]
javis train video|audio|prior|joint --preset NAME --data OUT --output RUN_DIR [--steps N] [--workers N]
          [--batch-size N] [--init-from CKPT] [--gpu]
javis sync-eval OUT [--backend av_align|javisscore ...] [--set av_sync.key=value] [--samples DIR] [--json]
javis params prior|dit|ditpp --preset NAME [--stage STAGE]
javis sample --checkpoint RUN_DIR --prompt TEXT --output FILE.mp4 [--preset tiny|paper] [-v]
javis preference --checkpoint RUN_OR_CKPT (--data OUT | --prompts FILE) --output PREF [--candidates K]
          [--steps N] [--cfg X] [--seed S] [--set key=value ...] [--gpus G] [--address ...] [-v]
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path

import click

from pipeline import __version__
from pipeline.config import PRESETS, load_config
from stages.storage import Storage


class _Location(click.ParamType):
    """An output location: a local folder, or an object-storage URI (``s3://bucket/prefix``).
    ``exists``: a local folder must exist (object storage is checked when it is read)."""

    name = "PATH|URI"

    def __init__(self, exists: bool = False) -> None:
        self.exists = exists

    def convert(self, value, param, ctx):  # noqa: ANN001 (click's signature)
        from stages.storage import is_uri

        text = str(value)
        if is_uri(text):
            return text
        return click.Path(exists=self.exists, file_okay=False).convert(text, param, ctx)


OUTPUT = _Location()
EXISTING_OUTPUT = _Location(exists=True)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:  # Ray Data logs every execution plan at INFO; our progress bar says enough
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="javis")
def main() -> None:
    """javis: curate sounding videos into training data for joint audio-video generation."""


def _config_options(fn):  # shared by run and demo
    fn = click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                      help="Override one config value, e.g. --set scene_cut.detector=content. Repeatable.")(fn)  # fmt: skip
    fn = click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
                      help="YAML or JSON file merged over the preset.")(fn)  # fmt: skip
    fn = click.option("--preset", default="default", show_default=True, type=click.Choice(sorted(PRESETS)),
                      help="Named starting configuration.")(fn)  # fmt: skip
    fn = click.option("--address", default=None,
                      help="Ray cluster to join ('auto' on a cluster node). Default: start a local Ray.")(fn)  # fmt: skip
    fn = click.option("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")(fn)
    fn = click.option("--quiet", is_flag=True, help="No progress bars.")(fn)
    fn = click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")(fn)
    return fn


def _resolve(preset, config_path, overrides, address, num_cpus):
    config = load_config(preset, config_path, list(overrides))
    if address is not None or num_cpus is not None:
        ray = dataclasses.replace(
            config.ray,
            address=address if address is not None else config.ray.address,
            num_cpus=num_cpus if num_cpus is not None else config.ray.num_cpus,
        )
        config = dataclasses.replace(config, ray=ray)
    return config


def _user_error(error: Exception, verbose: bool) -> click.ClickException:
    """A user mistake as one line (``Error: ...``, exit 1); its traceback only with -v."""
    if verbose:
        import traceback

        traceback.print_exception(error, file=sys.stderr)
    return click.ClickException(str(error))


def _curate(inputs, output, config, quiet, verbose=False) -> None:
    from pipeline.audit import format_funnel
    from pipeline.runner import run

    try:
        result = run(inputs, output, config, show_progress=not quiet)
    except (ValueError, FileNotFoundError) as e:  # user mistakes: a clear message, no traceback
        raise _user_error(e, verbose) from e
    click.echo(format_funnel([f.to_json() for f in result.funnel]))
    src, clip = result.counts["source"], result.counts["clip"]
    click.echo(
        f"\nsources: {dict(sorted(src.items()))}  clips: {dict(sorted(clip.items()))}"
        f"  ({result.num_skipped_sources} sources already complete, {result.wall_s:.1f} s)"
    )
    if result.skipped_inputs:  # hidden files, sidecars, the extension filter: counted, not curated
        skipped = ", ".join(f"{reason}={n}" for reason, n in result.skipped_inputs.items())
        click.echo(f"files skipped under the inputs (manifest.json: skipped_inputs): {skipped}")
    click.echo(f"outputs in {result.output_dir} (README.md, manifest.json, shards/, rejections/, ledger/)")
    click.echo(f"see them: javis report {result.output_dir}   why a clip was dropped: javis audit {result.output_dir} --clip ID")


@main.command()
@click.option("--input", "-i", "inputs", multiple=True, required=True, metavar="INPUT",
              help="A media file, folder or glob; a .txt/.csv list of URLs; an http(s) URL; or a "
                   "yt-dlp search like 'ytsearch10:dog barking'. Repeatable.")  # fmt: skip
@click.option("--output", "-o", required=True, type=OUTPUT,
              help="Output folder, or an object-storage URI such as s3://bucket/prefix.")  # fmt: skip
@_config_options
def run(inputs, output, preset, config_path, overrides, address, num_cpus, quiet, verbose) -> None:
    """Curate INPUTs into sharded Parquet. Rerun the same command to resume."""
    _setup_logging(verbose)
    try:
        config = _resolve(preset, config_path, overrides, address, num_cpus)
    except ValueError as e:
        raise _user_error(e, verbose) from e
    _curate(list(inputs), output, config, quiet, verbose)


@main.command()
@click.option("--output", "-o", default="out/demo", show_default=True, type=click.Path(file_okay=False))
@_config_options
def demo(output, preset, config_path, overrides, address, num_cpus, quiet, verbose) -> None:
    """Generate sample media (FFmpeg test sources, tones, noise, broken files) and curate it."""
    from pipeline.samples import make_sample_media

    _setup_logging(verbose)
    if preset == "default":
        preset = "demo"
    try:
        config = _resolve(preset, config_path, overrides, address, num_cpus)
    except ValueError as e:
        raise _user_error(e, verbose) from e
    samples = Path(output) / "sample_inputs"
    try:
        make_sample_media(samples)
    except (ValueError, FileNotFoundError) as e:  # an unusable $JAVIS_FFMPEG
        raise _user_error(e, verbose) from e
    click.echo(f"sample media in {samples}")
    _curate([str(samples)], output, config, quiet, verbose)


@main.command("config")
@click.option("--preset", default="default", show_default=True, type=click.Choice(sorted(PRESETS)),
              help="Show the values of this preset.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable: a list of {key, value, doc}.")
def config_command(preset, as_json) -> None:
    """Every config key (for --set and --config files) with its value under PRESET and what it does."""
    import json

    from pipeline.config_docs import config_keys

    keys = config_keys(preset)
    if as_json:
        click.echo(json.dumps({"preset": preset, "keys": [k.to_json() for k in keys]}, indent=2))
        return
    section = None
    for k in keys:
        head = k.key.split(".", 1)[0]
        if head != section:
            click.echo(("\n" if section else "") + f"[{head}]")
            section = head
        click.echo(f"  {k.key} = {json.dumps(k.value)}\n      {k.doc}")


@main.command()
@click.option("--output", "-o", required=True, type=OUTPUT, help="Output folder or object-storage URI.")
@click.option("--keywords-only", is_flag=True, help="Write the keyword plan (keywords.json) and stop.")
@_config_options
def crawl(output, keywords_only, preset, config_path, overrides, address, num_cpus, quiet, verbose) -> None:
    """Search keywords per taxonomy category from the text LLM (keywords.* settings), then
    yt-dlp searches with per-category quotas, curated like `javis run`. Rerun to resume: the
    keyword plan in OUTPUT/keywords.json is reused while the keyword settings are unchanged."""
    from pipeline.crawl import plan_crawl

    _setup_logging(verbose)
    try:
        config = _resolve(preset, config_path, overrides, address, num_cpus)
        plan = plan_crawl(output, config)
    except (ValueError, FileNotFoundError) as e:
        raise _user_error(e, verbose) from e
    source = "reused from keywords.json" if plan.reused else "from the model"
    click.echo(f"{len(plan.queries)} searches over {len(plan.keywords)} categories ({source})")
    for category, problem in sorted(plan.problems.items()):
        click.echo(f"  no keywords for {category}: {problem}")
    if keywords_only or not plan.queries:
        return
    _curate(plan.inputs, output, config, quiet, verbose)


@main.command()
@click.argument("output", type=EXISTING_OUTPUT)
@click.option("--seed", type=int, default=0, show_default=True, help="Run seed: same seed, byte-identical negatives.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override an augment setting, e.g. --set max_side=320 or --set separation.backend=nmf.")  # fmt: skip
@click.option("--address", default=None, help="Ray cluster to join. Default: start a local Ray.")
@click.option("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def augment(output, seed, overrides, address, num_cpus, verbose) -> None:
    """Build hard negatives (asynchronous audio-video pairs) for every accepted clip of OUTPUT."""
    from augment.build import AugmentConfig
    from pipeline.augment_runner import run_augment
    from pipeline.config import RayConfig, apply_overrides

    _setup_logging(verbose)
    try:
        config = apply_overrides(AugmentConfig(seed=seed), "augment", overrides)
        manifest = run_augment(output, config, RayConfig(address=address, num_cpus=num_cpus))
    except (ValueError, FileNotFoundError) as e:
        raise _user_error(e, verbose) from e
    f = manifest["funnel"]
    click.echo(f"augment: {f['in']} clips, {f['passed']} done, {f['failed']} failed; {manifest['negatives']} negatives")
    for name, count in sorted(manifest["by_operation"].items()):
        click.echo(f"  {name:<40} {count}")
    click.echo(f"outputs in {Storage(output).location(config.negatives_dir)}")


@main.command()
@click.argument("output", type=EXISTING_OUTPUT)
@click.option("--set", "overrides", multiple=True, required=True, metavar="SECTION.KEY=VALUE",
              help="A new threshold, e.g. --set motion.min_flow=0.05. Repeatable.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Print the new funnel without writing anything.")
@click.option("-v", "--verbose", is_flag=True, help="Tracebacks of errors.")
def refilter(output, overrides, dry_run, verbose) -> None:
    """Re-apply thresholds to a finished run from its stored scores (no decoding)."""
    from pipeline.audit import format_funnel
    from pipeline.refilter import refilter as run_refilter

    try:
        funnel = run_refilter(output, list(overrides), dry_run=dry_run)
    except (ValueError, FileNotFoundError) as e:
        raise _user_error(e, verbose) from e
    click.echo(format_funnel([f.to_json() for f in funnel]))
    if not dry_run:
        click.echo(f"\nrewrote the outputs of {output}; clips marked NeedsRescore are computed by the next `javis run`")


@main.command()
@click.argument("output", type=EXISTING_OUTPUT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (stable contract).")
@click.option("--items", is_flag=True, help="With --json: one entry per source and clip.")
@click.option("--clip", "clip_id", default=None, help="Explain one clip.")
@click.option("--source", "source_id", default=None, help="Explain one source and its clips.")
def audit(output, as_json, items, clip_id, source_id) -> None:
    """What each stage removed, and why a given source or clip was dropped."""
    from pipeline.audit import audit_json, dumps, explain, format_funnel

    item_id = clip_id or source_id
    try:
        if as_json:
            click.echo(dumps(audit_json(output, with_items=items, only_id=item_id)))
        elif item_id:
            click.echo(explain(output, item_id))
        else:
            click.echo(format_funnel(audit_json(output)["funnel"]))
    except (KeyError, FileNotFoundError) as e:
        raise click.ClickException(str(e).strip("'\"")) from e


@main.command()
@click.argument("output", type=EXISTING_OUTPUT)
@click.option("--dest", type=click.Path(file_okay=False), default=None,
              help="Folder for index.html and assets/ (default: OUTPUT/report; needed when OUTPUT is a URI).")  # fmt: skip
@click.option("--per-group", type=click.IntRange(min=0), default=12, show_default=True,
              help="Gallery clips shown per stage and reason.")  # fmt: skip
def report(output, dest, per_group) -> None:
    """Write a static HTML report of a finished run: funnel, score histograms with what-if
    thresholds, a gallery with thumbnails, sources, the manifest. Opens from disk, offline."""
    from pipeline.report import build_report

    try:
        path = build_report(output, dest, per_group)
    except (ValueError, OSError) as e:  # not a run folder, unreachable storage
        raise click.ClickException(str(e)) from e
    click.echo(f"report: {path}")


@main.command("sync-eval")
@click.argument("output", type=EXISTING_OUTPUT, required=False)
@click.option("--backend", "backends", multiple=True, default=("av_align",), show_default=True,
              help="Sync scorer to evaluate (av_align, javisscore). Repeatable.")  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="av_sync.KEY=VALUE",
              help="Override a scorer setting, e.g. --set av_sync.imagebind_weights=PATH. Repeatable.")  # fmt: skip
@click.option("--samples", multiple=True, type=click.Path(exists=True),
              help="Generated MP4 files (or folders of them) to score too, e.g. from javis sample. Repeatable.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object: {backends: {NAME: {auroc, accuracy, ...}}}.")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level; tracebacks of errors.")
def sync_eval_command(output, backends, overrides, samples, as_json, verbose) -> None:
    """AUROC and paired accuracy of sync scorers on OUTPUT's clips (positives) against their
    negatives from `javis augment`, overall and per negative family (the paper's Table A4)."""
    import json

    from pipeline.sync_eval import format_table, sync_eval

    _setup_logging(verbose)
    if output is None and not samples:
        raise click.UsageError("give an output folder of a run, --samples, or both")
    try:
        result = sync_eval(output, list(backends), list(overrides), list(samples))
    except (ValueError, FileNotFoundError) as e:
        raise _user_error(e, verbose) from e
    click.echo(json.dumps(result, indent=2, sort_keys=True) if as_json else format_table(result))


def _key_values(pairs, what: str) -> dict[str, str]:
    out = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{what} must look like key=value, got {text!r}")
        out[key.strip()] = value.strip()
    return out


@main.command()
@click.argument("output", type=click.Path(exists=True, file_okay=False))
@click.option("--encoders", type=click.Choice(["tiny", "production"]), default="tiny", show_default=True,
              help="tiny: random seeded modules (smoke runs); production: local weights from --path.")
@click.option("--preset", type=click.Choice(["tiny", "paper", "ditpp-tiny", "ditpp-paper"]), default="tiny",
              show_default=True, help="Latent sizes (model.spec): must match the preset you train with.")
@click.option("--path", "paths", multiple=True, metavar="KEY=DIR",
              help="Local weights for production encoders: t5 or umt5, imagebind, imagebind_bpe, video_vae, audio_vae, "
                   "vocoder.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True, help="Encoder actors.")
@click.option("--gpus", type=float, default=0, show_default=True, help="GPUs per encoder actor.")
@click.option("--address", default=None, help="Ray cluster to join. Default: start a local Ray.")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def latents(output, encoders, preset, paths, batch_size, workers, gpus, address, verbose) -> None:
    """Precompute VAE latents and text states of OUTPUT (a curated folder) into OUTPUT/latents/
    (OUTPUT/latents-ditpp-tiny/ or OUTPUT/latents-ditpp-paper/ for the JavisDiT++ presets)."""
    import json

    from model.latents import precompute_latents
    from model.spec import latent_spec

    _setup_logging(verbose)
    try:
        summary = precompute_latents(output, encoders=encoders, spec=latent_spec(preset),
                                     encoder_paths=_key_values(paths, "--path"), batch_size=batch_size,
                                     num_workers=workers, num_gpus=gpus, ray_address=address)
    except (ValueError, FileNotFoundError) as e:
        raise _user_error(e, verbose) from e
    click.echo(json.dumps({k: summary[k] for k in ("output_dir", "inputs", "positives", "negatives", "skipped_done",
                                                   "encoded", "failed")}))


@main.command()
@click.argument("stage", type=click.Choice(["video", "audio", "prior", "joint", "audio-pp", "sft", "dpo"]))
@click.option("--preset", default="tiny", show_default=True, help="Model sizes: tiny | paper.")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Curated output folder with latents (javis latents); dpo: a preference folder (javis preference).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Run folder; rerunning resumes from its latest checkpoint.")
@click.option("--steps", type=int, default=100, show_default=True, help="Total steps of the stage.")
@click.option("--workers", type=int, default=2, show_default=True, help="Ray Train workers.")
@click.option("--batch-size", type=int, default=2, show_default=True, help="Per worker.")
@click.option("--lr", type=float, default=1e-4, show_default=True)
@click.option("--init-from", default=None, help="Checkpoint (or run folder) of the previous stage.")
@click.option("--prior-from", default=None, help="joint: ST-Prior checkpoint if --init-from is not a prior one.")
@click.option("--wan-from", default=None, type=click.Path(exists=True, file_okay=False),
              help="audio-pp: local diffusers Wan2.1 transformer folder for the shared and video layers.")
@click.option("--beta", type=float, default=None, help="dpo: DPO temperature beta (default 5000, see model/dpo.py).")
@click.option("--holdout-pairs", type=int, default=None, help="dpo: pairs held back for the margin (default 20%).")
@click.option("--checkpoint-every", type=int, default=1000, show_default=True)
@click.option("--log-every", type=int, default=10, show_default=True)
@click.option("--cpus-per-worker", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--gpu", is_flag=True, help="One GPU per worker (NCCL, bf16 autocast).")
@click.option("--fsdp", is_flag=True, help="FSDP instead of DDP (paper sizes on small GPUs; untested).")
@click.option("--address", default=None, help="Ray cluster to join. Default: start a local Ray.")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def train(stage, preset, data, output, steps, workers, batch_size, lr, init_from, prior_from, wan_from, beta,
          holdout_pairs, checkpoint_every, log_every, cpus_per_worker, seed, gpu, fsdp, address, verbose) -> None:  # fmt: skip
    """Train one STAGE on Ray Train; prints the loss as it goes and ends with a JSON line.

    JavisDiT: video -> audio -> prior -> joint. JavisDiT++ (latents made with --preset ditpp-*):
    audio-pp -> sft (LoRA) -> dpo (on `javis preference` pairs; the line adds the reward margin)."""
    import json

    from model.train import TrainConfig
    from model.train import train as run_train

    _setup_logging(verbose)
    try:
        config = TrainConfig(stage=stage, data=data, output=output, preset=preset, steps=steps, batch_size=batch_size,
                             lr=lr, workers=workers, use_gpu=gpu, cpus_per_worker=cpus_per_worker, seed=seed,
                             parallel="fsdp" if fsdp else "ddp", checkpoint_every=checkpoint_every,
                             log_every=log_every, init_from=init_from, prior_from=prior_from, ray_address=address,
                             wan_from=wan_from, holdout_pairs=holdout_pairs, **({} if beta is None else {"beta": beta}))
        summary = run_train(config)
    except (ValueError, FileNotFoundError) as e:
        raise _user_error(e, verbose) from e
    keys = ("stage", "steps", "first_loss", "last_loss", "checkpoint", "margin_before", "margin_after")
    click.echo(json.dumps({k: summary[k] for k in keys if k in summary}))


@main.command()
@click.argument("kind", type=click.Choice(["prior", "dit", "ditpp"]))
@click.option("--preset", default="paper", show_default=True, help="tiny | paper.")
@click.option("--stage", default=None,
              type=click.Choice(["video", "audio", "prior", "joint", "audio-pp", "sft", "dpo"]),
              help="dit (video|audio|prior|joint), ditpp (audio-pp|sft|dpo): count what this stage trains as 'trainable'.")
def params(kind, preset, stage) -> None:
    """Total and trainable parameter counts (built on the meta device: instant for the paper sizes)."""
    import json

    from model.params import count_parameters

    try:
        click.echo(json.dumps(count_parameters(kind, preset, stage if kind in ("dit", "ditpp") else None)))
    except ValueError as e:
        raise click.ClickException(str(e)) from e


def _resolution(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--resolution must be HxW with positive integers, e.g. 48x64; got {text!r}")
    return int(parts[0]), int(parts[1])


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True), help="Checkpoint or run folder.")
@click.option("--prompt", required=True)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="FILE.mp4")
@click.option("--steps", type=int, default=30, show_default=True, help="Euler steps.")
@click.option("--cfg", type=float, default=7.0, show_default=True, help="Classifier-free guidance scale.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--duration", "duration_s", type=float, default=None, help="Seconds (default: shortest bucket).")
@click.option("--resolution", default=None, metavar="HxW", help="e.g. 48x64 (default: first bucket).")
@click.option("--prior-checkpoint", default=None, help="An ST-Prior checkpoint, if --checkpoint has none.")
@click.option("--path", "paths", multiple=True, metavar="KEY=DIR", help="Local weights for production encoders.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--preset", type=click.Choice(["tiny", "paper"]), default=None,
              help="Check that the checkpoint was trained with this preset (default: the checkpoint's).")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level; tracebacks of errors.")
def sample(checkpoint, prompt, output, steps, cfg, seed, duration_s, resolution, prior_checkpoint, paths,
           device, preset, verbose) -> None:  # fmt: skip
    """Write a video with its audio track (MP4, H.264 + AAC) for PROMPT from a checkpoint."""
    import json

    from model.sample import sample as run_sample

    _setup_logging(verbose)
    try:
        size = _resolution(resolution)
        summary = run_sample(checkpoint, prompt, output, steps=steps, cfg=cfg, seed=seed, duration_s=duration_s,
                             resolution=size, prior_checkpoint=prior_checkpoint,
                             encoder_paths=_key_values(paths, "--path"), device=device, preset=preset)
    except (ValueError, FileNotFoundError) as e:
        raise _user_error(e, verbose) from e
    click.echo(json.dumps(summary))



@main.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True), help="Checkpoint or run folder.")
@click.option("--data", default=None, type=click.Path(exists=True, file_okay=False),
              help="A curated run: its accepted clips' captions are the prompts.")
@click.option("--prompts", "prompts_file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A text file, one prompt per line.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="New preference folder (PREF); an existing non-empty one is refused.")
@click.option("--candidates", type=int, default=4, show_default=True, help="Candidates generated per prompt (K).")
@click.option("--steps", type=int, default=30, show_default=True, help="Euler steps.")
@click.option("--cfg", type=float, default=7.0, show_default=True, help="Classifier-free guidance scale.")
@click.option("--seed", type=int, default=0, show_default=True, help="Run seed (candidate seeds derive from it).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="e.g. --set rewards.sync=[javisscore] --set rewards.imagebind_weights=PATH "
                   "--set ranking.better_margin=0.8 --set num_frames=16. Repeatable.")  # fmt: skip
@click.option("--path", "paths", multiple=True, metavar="KEY=DIR", help="Local weights for production encoders.")
@click.option("--gpus", type=float, default=0, show_default=True, help="GPUs per generation actor.")
@click.option("--address", default=None, help="Ray cluster to join. Default: start a local Ray.")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level; tracebacks of errors.")
def preference(checkpoint, data, prompts_file, output, candidates, steps, cfg, seed, overrides, paths, gpus, address,
               verbose) -> None:  # fmt: skip
    """Generate K candidates per prompt, score them with reward models, and write modality-aware
    preference pairs (Parquet) with a ledger of every candidate and decision."""
    import json

    from pipeline.config import apply_overrides
    from pipeline.preference import PreferenceConfig, run_preference

    _setup_logging(verbose)
    try:
        if data is None and prompts_file is None:
            raise ValueError("give the prompts: --data OUT (a curated run) or --prompts FILE")
        config = apply_overrides(PreferenceConfig(num_candidates=candidates, steps=steps, cfg=cfg, seed=seed,
                                                  num_gpus=gpus), "preference", overrides)  # fmt: skip
        manifest = run_preference(checkpoint, output, config, data=data, prompts_file=prompts_file,
                                  encoder_paths=_key_values(paths, "--path"), ray_address=address)  # fmt: skip
    except (ValueError, FileNotFoundError, ImportError) as e:
        raise _user_error(e, verbose) from e
    click.echo(json.dumps(manifest["counts"], sort_keys=True))
    for modality, why in manifest["rewards"]["unscored_modalities"].items():
        click.echo(f"{modality}: not scored ({why})")
    click.echo(f"outputs in {output} (pairs/, candidates.parquet, decisions.parquet, prompts.parquet, manifest.json)")


if __name__ == "__main__":
    main()
