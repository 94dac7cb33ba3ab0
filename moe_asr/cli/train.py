"""Model subcommands: info, train, average, extract, adapt."""

from __future__ import annotations

import argparse


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="parameter counts of a model config: total and active per frame, per component",
        description="Build the model of CONFIG (with --set overrides) and print total "
        "parameters and parameters active per frame (MoE: only the top-k experts count) per "
        "component. Guidance labels get --label-values values each (the group label: the values "
        "of model.moe.guidance.groups).",
    )
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--vocab-size", type=int, default=None, help="default: tokenizer.vocab_size of CONFIG"
    )
    p.add_argument("--label-values", type=int, default=8, help="values per guidance label")
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from moe_asr.config import load_config
    from moe_asr.model import build_model, parameter_summary
    from moe_asr.nn.groups import placeholder_vocab

    cfg = load_config(args.config, args.set)
    vocab_size = args.vocab_size or cfg.tokenizer.vocab_size
    guidance = cfg.model.moe.guidance
    vocab = placeholder_vocab(guidance, args.label_values) if guidance.labels else None
    model = build_model(cfg.model, vocab_size, vocab)
    m = cfg.model
    print(
        f"{args.config}: ffn={m.ffn} d_model={m.d_model} layers={m.num_layers} "
        f"experts={m.moe.num_experts} top_k={m.moe.top_k} moe_layers={model.moe_layers or '-'} "
        f"vocab_size={vocab_size}"
    )
    print(f"{'component':<22} {'total':>12} {'active/frame':>13}")
    for row in parameter_summary(model):
        print(f"{row.component:<22} {row.total:>12,} {row.active:>13,}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (torchrun --nproc-per-node N -m moe_asr.cli train ... for DDP)",
        description="Train on a Kaldi data dir. Writes EXP/config.yaml (resolved), EXP/train.log, "
        "EXP/tensorboard/, EXP/checkpoints/ (epoch-N.pt, last.pt). --resume continues the same run.",
    )
    p.add_argument("--config", required=True, help="YAML experiment config")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. model.moe.num_experts=8 (repeatable)",
    )
    p.add_argument("--train-data", required=True)
    p.add_argument("--dev-data", required=True)
    p.add_argument("--tokenizer", required=True, help="dir written by `moe-asr train-tokenizer`")
    p.add_argument("--cmvn", default=None, help="global CMVN json from `moe-asr compute-cmvn`")
    p.add_argument("--exp", required=True, help="experiment dir")
    p.add_argument("--resume", action="store_true", help="continue from EXP/checkpoints/last.pt")
    p.add_argument(
        "--init",
        default=None,
        metavar="MODEL.pt",
        help="start from the weights of a package or checkpoint (train.init): matching tensors "
        "are loaded, dense feed-forwards are copied into every MoE expert, routers start fresh; "
        "EXP/init.json lists what was loaded/upcycled/skipped/new. With --resume the run "
        "continues from last.pt (which descends from the init); a different init than the "
        "run started with is refused as a changed config",
    )
    p.add_argument(
        "--init-noise",
        type=float,
        default=None,
        metavar="STD",
        help="noise on upcycled expert copies, relative to each tensor's std (train.init_noise)",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-clock budget; ends cleanly with a checkpoint (train.max_minutes)",
    )
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moe_asr.config import load_config
    from moe_asr.train.trainer import TrainSetup, train

    overrides = list(args.overrides)
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    config = load_config(args.config, overrides)
    # set here, not as --set overrides: a path must stay a string (YAML would parse "1e3")
    if args.init is not None:
        config.train.init = args.init
    if args.init_noise is not None:
        config.train.init_noise = args.init_noise
    result = train(
        TrainSetup(
            config=config,
            train_data=Path(args.train_data),
            dev_data=Path(args.dev_data),
            tokenizer_dir=Path(args.tokenizer),
            cmvn_path=Path(args.cmvn) if args.cmvn else None,
            exp_dir=Path(args.exp),
            resume=args.resume,
        )
    )
    print(f"{result.stopped_because}; {result.steps} steps, {result.epochs_completed} epochs")
    return 0


def _add_average(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "average",
        help="average checkpoints into EXP/model.pt, the self-contained model package",
    )
    p.add_argument("--exp", required=True)
    p.add_argument("--num", type=int, default=5, help="number of epoch checkpoints")
    p.add_argument("--best", action="store_true", help="the best by dev loss, not the last")
    p.add_argument("--overwrite", action="store_true", help="replace an existing EXP/model.pt")
    p.set_defaults(func=_run_average)


def _run_average(args: argparse.Namespace) -> int:
    from moe_asr.train.average import average_experiment

    path, epochs = average_experiment(args.exp, args.num, best=args.best, overwrite=args.overwrite)
    used = f"epochs {', '.join(map(str, epochs))}" if epochs else "last.pt"
    print(f"{path}: averaged {used}")
    return 0


def _add_extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="a smaller model for one accent (or label group): keep the experts it uses",
        description="--accent/--label: route the utterances of DATA whose utt2<NAME> value is "
        "one of V1,V2 (label-free, as in decoding), keep per MoE feed-forward the fewest "
        "experts that receive >= --coverage of their top-k assignments (at least top_k), drop "
        "the other experts and their router rows. --group-of VALUE (models that route within "
        "expert groups of a label: group_router or hard_groups): route DATA's utterances of "
        "VALUE's group (its family) with VALUE forced; the layers the group restricts keep "
        "exactly its experts (plus, with free_experts, those taking >= --coverage of the free "
        "choices), the others keep experts by --coverage; the group routers go, and the new "
        "model routes as the full one with --force NAME=VALUE. Both write a normal "
        "self-contained package (what was kept is in its meta) and print parameters and file "
        "size before and after.",
    )
    p.add_argument("--model", required=True, help="EXP/model.pt (an MoE package)")
    p.add_argument("--data", required=True, help="Kaldi data dir with the utt2<NAME> file")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--label", metavar="NAME=V1[,V2]", help="e.g. accent=fr,es or noise=clean")
    which.add_argument("--accent", metavar="V1[,V2]", help="the same as --label accent=V1[,V2]")
    which.add_argument(
        "--group-of",
        metavar="VALUE",
        help="keep the expert group of VALUE (a value of the model's group label, e.g. fr, "
        "or a family name of model.moe.guidance.groups) in a group-routed model",
    )
    p.add_argument("--coverage", type=float, default=0.95, help="in (0, 1]; default 0.95")
    p.add_argument("--max-utts", type=int, default=None, help="route at most N utterances")
    p.add_argument("--out", required=True, help="the new package, e.g. exp/moe/model_fr.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_extract)


def _run_extract(args: argparse.Namespace) -> int:
    from moe_asr.analysis.extract import ExtractError, extract_group, extract_model

    common = {
        "coverage": args.coverage,
        "out": args.out,
        "overwrite": args.overwrite,
        "max_utts": args.max_utts,
        "progress": not args.no_progress,
    }
    if args.group_of is not None:
        value = args.group_of.strip()
        if not value or "," in value or "=" in value:
            raise ExtractError(f"--group-of {args.group_of!r}: expected one value, e.g. fr")
        r = extract_group(args.model, args.data, value=value, **common)
        what = f"{r.label} group {r.group} ({', '.join(r.values)}), forced {r.forced},"
    else:
        spec = f"accent={args.accent}" if args.accent is not None else args.label
        name, sep, raw = spec.partition("=")
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not sep or not name.strip() or not values:
            raise ExtractError(f"--label {spec!r}: expected NAME=V1[,V2], e.g. accent=fr,es")
        r = extract_model(args.model, args.data, label=name.strip(), values=values, **common)
        what = f"{r.label}={','.join(r.values)}"
    kept = ", ".join(
        f"{f['layer']}{'ab'[f['half']]} {len(f['kept'])}/{f['experts']}" for f in r.ffns
    )
    print(f"{r.path}: {what} from {r.utts} utterances; experts kept {kept}")
    if r.group_layers:
        layers = ", ".join(map(str, r.group_layers))
        print(f"routing within group {r.group} (no group router) in layers {layers}")
    print(
        f"parameters {r.params_before:,} -> {r.params_after:,} "
        f"({100 * r.params_after / r.params_before:.1f}%); file {r.bytes_before / 1e6:.2f} MB "
        f"-> {r.bytes_after / 1e6:.2f} MB"
    )
    low = min(f["kept_prob_mass"] for f in r.ffns)
    print(f"lowest router probability mass kept in a feed-forward: {low:.3f}")
    for note in r.notes:
        print(f"note: {note}")
    return 0


def _add_adapt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="fine-tune a guided MoE model on a new accent (or label value): routers, "
        "routers + experts, or all",
        description="Train --params of MODEL on the utterances of TRAIN_DATA whose utt2<NAME> "
        "is VALUE (all of them when TRAIN_DATA has no utt2<NAME>; at most --minutes of audio, "
        "drawn by --seed), with the trainer's checkpoints, logging and --resume in --exp, and "
        "write a self-contained package (decode it label-free or with --force NAME=VALUE). A "
        "new VALUE joins the label vocabulary; in a model with expert groups it joins an "
        "existing group: --group, else the one the model's label-free routing of the data "
        "prefers. What was adapted is in the package's config (train.trainable) and "
        "meta['adapt'].",
    )
    p.add_argument("--model", required=True, help="EXP/model.pt of a guided MoE model")
    p.add_argument("--train-data", required=True, help="Kaldi data dir of the new accent")
    p.add_argument("--dev-data", default=None, help="dev dir (default: the selected data)")
    p.add_argument("--label", required=True, metavar="NAME=VALUE", help="e.g. accent=pt")
    p.add_argument(
        "--params",
        default="router",
        choices=["value", "router", "router+experts", "all"],
        help="what trains: only VALUE's own rows (its label embedding, value-router and "
        "estimate-head rows: no other value's routing changes; use with --replay-data so the "
        "estimate learns what VALUE is not); MoE routers + label guidance (embeddings, group "
        "routers, estimate heads); also the experts; everything",
    )
    p.add_argument("--minutes", type=float, default=None, help="default: all of VALUE's data")
    p.add_argument(
        "--group",
        default=None,
        help="expert group a new VALUE joins (default: its family in model.moe.guidance.groups, "
        "else the group the model's label-free routing of the data prefers)",
    )
    p.add_argument("--steps", type=int, default=200, help="updates (train.max_steps)")
    p.add_argument("--seed", type=int, default=0, help="data selection and training seed")
    p.add_argument(
        "--epoch-minutes",
        type=float,
        default=10.0,
        help="audio per epoch at least: a smaller selection is listed repeatedly (0 = off)",
    )
    p.add_argument(
        "--replay-data",
        default=None,
        help="data dir of the values the model already serves (e.g. its training data, with "
        "utt2<NAME>): a seeded draw of it trains beside the new value so that the shared "
        "routers and experts keep serving them (rehearsal)",
    )
    p.add_argument(
        "--replay-ratio",
        type=float,
        default=1.0,
        help="replay audio per second of the new value's audio in an epoch (default 1)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="train./data. config override, e.g. train.lr=0.0005 (repeatable)",
    )
    p.add_argument("--exp", default=None, help="run dir (default: OUT's dir/<OUT stem>_adapt)")
    p.add_argument("--out", required=True, help="the adapted package, e.g. exp/moe/model_pt.pt")
    p.add_argument("--resume", action="store_true", help="continue the run in --exp")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_run_adapt)


def _run_adapt(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moe_asr.train.adapt import AdaptError, AdaptSetup, adapt_model

    name, sep, value = args.label.partition("=")
    if not sep or not name.strip() or not value.strip() or "," in value:
        raise AdaptError(f"--label {args.label!r}: expected NAME=VALUE, e.g. accent=pt")
    r = adapt_model(
        AdaptSetup(
            model=Path(args.model),
            train_data=Path(args.train_data),
            dev_data=Path(args.dev_data) if args.dev_data else None,
            label=name.strip(),
            value=value.strip(),
            params=args.params,
            minutes=args.minutes,
            group=args.group,
            steps=args.steps,
            seed=args.seed,
            epoch_minutes=args.epoch_minutes,
            replay_data=Path(args.replay_data) if args.replay_data else None,
            replay_ratio=args.replay_ratio,
            overrides=list(args.overrides),
            exp_dir=Path(args.exp) if args.exp else None,
            out=Path(args.out),
            resume=args.resume,
            overwrite=args.overwrite,
        )
    )
    p = r.plan
    group = f"; group {p['group']} ({p['group_from']})" if p["group"] else ""
    if p.get("replay_utts"):
        group += f"; {len(p['replay_utts'])} replay utterances ({p['replay_seconds'] / 60:.2f} min)"
    print(
        f"{r.path}: {p['label']}={p['value']} from {len(p['utts'])} utterances "
        f"({p['seconds'] / 60:.2f} min){group}; {r.stopped_because}; {r.steps} updates of "
        f"{r.trainable:,} of {r.total:,} parameters ({p['params']}); run dir {r.exp_dir}"
    )
    return 0


# adders, in the order of `moe-asr --help`
COMMANDS = [_add_info, _add_train, _add_average, _add_extract, _add_adapt]
