"""``revive stats``: precompute covariance statistics (EasyEdit's cache layout) for a method's layers."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("stats", help="precompute FFN-key covariance statistics (EasyEdit npz layout)")
    p.add_argument("--method", default="MEMIT", help="method whose hparams give layers/sizes (default MEMIT)")
    p.add_argument("--model", default="smollm2-135m", help="bundled name, local HF folder or hub id")
    p.add_argument("--hparams", default=None, help="YAML file (default: <METHOD>/<model>.yaml shipped in revive_plugin/hparams)")
    p.add_argument("--stats-dir", default=None, help="override stats_dir of the hparams")
    p.add_argument("--n-samples", type=int, default=None, help="override mom2_n_samples (number of texts)")
    p.add_argument("--texts", default=None, help="text file, one text per line (default: offline Wikipedia)")
    p.add_argument("--dataset", default=None, help="dataset name in the path (default: mom2_dataset)")
    p.add_argument("--max-tokens", type=int, default=None, help="context cap per text (stats_max_tokens)")
    p.add_argument("--device", default=None, help="torch device for the model (default: CPU)")
    p.add_argument("--save-every", type=float, default=None, metavar="SECONDS",
                   help="save the pass's progress every SECONDS of work; a killed pass continues from it "
                        "(default: 300)")
    p.set_defaults(func=run)


def run(args) -> int:
    from . import get_method, load_hparams
    from ..models import load_model
    from .covariance import ensure_stats, texts_from_file
    from .editor import coerce_hparams

    spec = get_method(args.method)
    hp = coerce_hparams(args.hparams, spec.hparams_cls) if args.hparams else load_hparams(spec.name, args.model)
    overrides = {}
    if args.stats_dir:
        overrides["stats_dir"] = args.stats_dir
    if args.n_samples:
        overrides["mom2_n_samples"] = args.n_samples
    if args.max_tokens:
        overrides["stats_max_tokens"] = args.max_tokens
    if args.dataset:
        overrides["mom2_dataset"] = args.dataset
    if overrides:
        hp = hp.replace(**overrides)
    model, tok = load_model(args.model, device=args.device)
    editor = spec.editor_cls(model, tok, hp)
    texts = texts_from_file(args.texts) if args.texts else None
    paths = ensure_stats(model, tok, [editor.module_name(l) for l in editor.layers], hp.stats_dir,
                         mom2_dataset=hp.mom2_dataset, n_samples=hp.mom2_n_samples, dtype=hp.mom2_dtype,
                         texts=texts, max_tokens=hp.stats_max_tokens, batch_tokens=hp.stats_batch_tokens,
                         **({"save_every_s": args.save_every} if args.save_every else {}))
    for path in paths.values():
        print(path)
    return 0
