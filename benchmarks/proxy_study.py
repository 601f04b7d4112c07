"""Is the entropy reward a good proxy for accuracy? (docs/METHODS.md section 3)

Draw random per-group preserve ratios, let the action wall of the search
environment bring each policy to the same MACs target, and prune the shipped
model with it (L1 inside each group). For every policy record
- the entropy reward ``-S(pruned)/S(original)`` (calibration batch, no fine-tune),
- the accuracy reward ``-error`` on the first 1,000 validation images (no fine-tune),
- the same after re-estimating the BatchNorm statistics on 512 training images
  ("adaptive BN", EagleEye; not in AMC), still without any gradient step,
- the validation accuracy after a short fine-tune (``--ft-epochs`` over the
  first ``--ft-images`` training images, lr 0.01, cosine),
and report the Spearman rank correlation of each reward with the fine-tuned
accuracy: a good proxy ranks policies as the fine-tuned accuracy does.

Resumable: each finished policy is one line of ``results/proxy-<model>-<target>.jsonl``;
a rerun skips the lines already there. The summary goes to ``results/PROXY.md``.

``--reconstructed`` scores the SAME policies again, each pruned model first
reconstructed (docs/METHODS.md section 7, with the search's per-episode setting:
256 images, 4096 positions), as the search now scores its episodes; the
fine-tuned accuracy they are ranked against is the one measured above (each
policy's raw pruned model, fine-tuned). Lines of
``results/proxy-<model>-<target>-rec.jsonl``.

    python benchmarks/proxy_study.py --model resnet20 --target 5x --n 50
    python benchmarks/proxy_study.py --model resnet20 --target 5x --reconstructed
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from entroprune.data import load_data
from entroprune.io import atomic_write_text, load
from entroprune.models.pretrained import pretrained_path
from entroprune.pruning.structural import parse_macs_target
from entroprune.reconstruct import ReconstructConfig
from entroprune.search.runner import SearchConfig, make_env, score_random_policies
from entroprune.training import TrainConfig, evaluate, recalibrate_batchnorm, train

RESULTS = Path(__file__).resolve().parent / "results"


def rows_path(model: str, target: str) -> Path:
    return RESULTS / f"proxy-{model}-{target}.jsonl"


def study(model: str, target: str, n: int, ft_epochs: int, ft_images: int, seed: int) -> None:
    path = rows_path(model, target)
    done = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if len(done) >= n:
        return
    data = load_data("fashion_mnist", seed=0, limit_train=ft_images)
    net = load(pretrained_path(model))
    # the same n policies on every run (seeded), so a resumed study continues the same list
    rng = np.random.default_rng(seed)
    n_groups = make_env(net, data, SearchConfig(target_macs=parse_macs_target(target)), with_reward=False).n_steps
    policies = [rng.uniform(0.2, 1.0, n_groups).tolist() for _ in range(n)]
    bn_images = data.calibration(512, seed=0)

    def adapted_reward(pruned) -> float:
        model = copy.deepcopy(pruned)
        recalibrate_batchnorm(model, bn_images)
        return evaluate(model, data.val_x[:1000], data.val_y[:1000]) / 100.0 - 1.0

    if any("accuracy_reward_adapt_bn" not in r for r in done):   # rows of an earlier version: add the column
        for r in done:
            if "accuracy_reward_adapt_bn" not in r:
                again = score_random_policies(net, data, parse_macs_target(target), policies=[r["proposed"]],
                                              keep_models=True)[0]
                assert again["channels"] == r["channels"]
                r["accuracy_reward_adapt_bn"] = adapted_reward(again["model"])
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in done))
    for i in range(len(done), n):
        t0 = time.time()
        row = score_random_policies(net, data, parse_macs_target(target), policies=[policies[i]],
                                    keep_models=True)[0]
        pruned = row.pop("model")
        row["accuracy_reward_adapt_bn"] = adapted_reward(pruned)
        train(pruned, data, TrainConfig(epochs=ft_epochs, lr=0.01, seed=seed, progress=False))
        row.update(index=i, ft_epochs=ft_epochs, ft_images=ft_images,
                   val_acc_finetuned=evaluate(pruned, data.val_x, data.val_y), seconds=time.time() - t0)
        with path.open("a") as f:          # one line per finished policy: a crash loses at most one
            f.write(json.dumps(row) + "\n")
        print(f"[{i + 1}/{n}] MACs {row['macs_fraction']:.3f} entropy {row['entropy_reward']:.4f} "
              f"accuracy {row['accuracy_reward']:.4f} -> fine-tuned val {row['val_acc_finetuned']:.2f}%",
              flush=True)


def study_reconstructed(model: str, target: str, seed: int) -> None:
    """The rewards of every policy of the study, on its reconstructed model."""
    raw = [json.loads(line) for line in rows_path(model, target).read_text().splitlines()]
    out = RESULTS / f"proxy-{model}-{target}-rec.jsonl"
    done = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    data = load_data("fashion_mnist", seed=0, limit_train=raw[0]["ft_images"])
    net = load(pretrained_path(model))
    bn_images = data.calibration(512, seed=0)
    rcfg = ReconstructConfig(images=256, positions=4096, seed=seed)
    for r in raw[len(done):]:
        t0 = time.time()
        row = score_random_policies(net, data, parse_macs_target(target), policies=[r["proposed"]],
                                    reconstruct=rcfg, keep_models=True)[0]
        assert row["channels"] == r["channels"]                    # the same policy, the same channels
        pruned = row.pop("model")
        adapted = copy.deepcopy(pruned)
        recalibrate_batchnorm(adapted, bn_images)
        rec = {"index": r["index"], "channels": r["channels"], "entropy_reward": row["entropy_reward"],
               "accuracy_reward": row["accuracy_reward"],
               "accuracy_reward_adapt_bn": evaluate(adapted, data.val_x[:1000], data.val_y[:1000]) / 100 - 1,
               "val_acc_finetuned": r["val_acc_finetuned"], "reconstruct": asdict(rcfg),
               "seconds": time.time() - t0}
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"[{r['index'] + 1}/{len(raw)}] reconstructed: entropy {rec['entropy_reward']:.4f} accuracy "
              f"{rec['accuracy_reward']:.4f} (fine-tuned val {rec['val_acc_finetuned']:.2f}%)", flush=True)


def _rho(reward: list[float], acc: np.ndarray) -> str:
    """Spearman rho with its p-value; undefined when the reward is the same for every policy."""
    if len(set(reward)) < 2:
        return "undefined (reward constant)"
    r = spearmanr(reward, acc)
    return f"{r.statistic:+.3f} (p={r.pvalue:.2g}, {len(set(reward))} distinct)"


def summary() -> Path:
    lines = ["# Proxy study: does a reward rank policies as the fine-tuned accuracy does?", "",
             "Generated by `python benchmarks/proxy_study.py`. Random policies brought to one MACs target "
             "by the action wall; rewards measured on the pruned model before any fine-tuning; "
             "accuracy on the validation split after the short fine-tune stated. "
             "Spearman rho with its two-sided p-value.", "",
             "| model | target | policies | fine-tune | MACs kept (mean) | rho(entropy reward, acc) | "
             "rho(accuracy reward, acc) | rho(accuracy reward with adaptive BN, acc) | "
             "fine-tuned val acc (min / median / max) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("proxy-*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        if len(rows) < 3:
            continue
        acc = np.array([r["val_acc_finetuned"] for r in rows])
        _, model, target = path.stem.split("-", 2)
        r0 = rows[0]
        if target.endswith("-rec"):       # rewards on reconstructed models, the raw study's fine-tuned accuracy
            raw = [json.loads(line) for line in rows_path(model, target[:-4]).read_text().splitlines()]
            r0 = {**raw[0], "macs_fraction": raw[0]["macs_fraction"]}
            rows = [{**x, "macs_fraction": raw[x["index"]]["macs_fraction"]} for x in rows]
            target = f"{target[:-4]}, rewards on reconstructed models"
        lines.append(f"| {model} | {target} | {len(rows)} | {r0['ft_epochs']} ep x {r0['ft_images']} images | "
                     f"{np.mean([r['macs_fraction'] for r in rows]):.3f} | "
                     f"{_rho([r['entropy_reward'] for r in rows], acc)} | "
                     f"{_rho([r['accuracy_reward'] for r in rows], acc)} | "
                     f"{_rho([r.get('accuracy_reward_adapt_bn', 0.0) for r in rows], acc)} | "
                     f"{acc.min():.2f} / {np.median(acc):.2f} / {acc.max():.2f} |")
    return atomic_write_text(RESULTS / "PROXY.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--target", default="5x")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--ft-epochs", type=int, default=1)
    ap.add_argument("--ft-images", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--summary", action="store_true", help="only rebuild PROXY.md")
    ap.add_argument("--reconstructed", action="store_true",
                    help="score the study's policies again on reconstructed models")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.reconstructed:
        study_reconstructed(args.model, args.target, args.seed)
    elif not args.summary:
        study(args.model, args.target, args.n, args.ft_epochs, args.ft_images, args.seed)
    print(summary().read_text())


if __name__ == "__main__":
    sys.exit(main())
