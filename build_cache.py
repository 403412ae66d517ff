"""Fill the frame cache for a dataset config ahead of training.

    python build_cache.py dataset.data_dir=/data/mvfouls dataset.cache_dir=/data/mvfouls-cache
    python build_cache.py --config-name quick_test dataset.cache_dir=/tmp/mvfoul-cache --workers 2

Takes the same config names and overrides as train_hydra.py; trains with the same
dataset.cache_dir then read the cached frames.
"""

from mvfoul.cli import run_command_app


def main() -> None:
    from hydra import compose, initialize_config_dir

    from mvfoul.data.cache_build import build_cache, parse_args
    from mvfoul.paths import CONF_DIR
    from mvfoul.rules import validate_config, with_schema

    args = parse_args()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = with_schema(compose(args.config_name, overrides=args.overrides))
    resolved = validate_config(cfg)
    workers = args.workers if args.workers is not None else max(1, cfg.dataset.num_workers)
    report = build_cache(cfg, resolved.frame_indices, workers, progress=not args.no_progress)
    print(report.summary())


if __name__ == "__main__":
    run_command_app(main)
