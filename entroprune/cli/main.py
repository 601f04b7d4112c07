"""The ``entroprune`` command line (typer). Each command lives in a small
module of this folder; this file only wires them together."""

from __future__ import annotations

import typer

from ..models import list_models
from .analyze_cmds import analyze_cmd, export_cmd
from .compress_cmds import compress_cmd, demo_cmd, prune_cmd, search_cmd
from .deploy_cmds import quantize_cmd
from .depth_cmds import depth_cmd
from .errors import EntropruneGroup
from .fold_cmds import fold_cmd
from .model_cmds import finetune_cmd, info_cmd
from .sparsify_cmds import sparsify_cmd
from .train_cmds import eval_cmd, train_cmd

# EntropruneGroup: one error path for every command (errors.py), also under CliRunner
app = typer.Typer(cls=EntropruneGroup, add_completion=False, no_args_is_help=True,
                  help="Entropy-guided pruning of convolutional networks.")
app.command("train")(train_cmd)
app.command("eval")(eval_cmd)
app.command("prune")(prune_cmd)
app.command("finetune")(finetune_cmd)
app.command("info")(info_cmd)
app.command("demo")(demo_cmd)
app.command("analyze")(analyze_cmd)
app.command("export")(export_cmd)
app.command("fold")(fold_cmd)
app.command("depth")(depth_cmd)
app.command("sparsify")(sparsify_cmd)
app.command("search")(search_cmd)
app.command("compress")(compress_cmd)
app.command("quantize")(quantize_cmd)


@app.command("models")
def models_cmd() -> None:
    """List the registered zoo models (and which have shipped checkpoints)."""
    from ..models.pretrained import manifest
    shipped = manifest()
    for name in list_models():
        entry = shipped.get(name)
        note = f"  shipped: test acc {entry['test_acc']:.2f}%" if entry else ""
        typer.echo(f"{name}{note}")


def main() -> None:
    app()
