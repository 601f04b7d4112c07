"""Command-line options declared once (typer ``Annotated`` aliases), shared by
every command that takes them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ModelSpec = Annotated[str, typer.Argument(help="model file, pretrained:NAME or zoo name")]
Dataset = Annotated[str, typer.Option(help="fashion_mnist, mnist, cifar10, folder:PATH or npz:PATH")]
DataDir = Annotated[Optional[str], typer.Option(help="folder of the data set's files (mnist, cifar10)")]
Seed = Annotated[int, typer.Option(help="seed of every random choice (calibration sample, search, training)")]
Threads = Annotated[Optional[int], typer.Option(min=1, help="CPU threads (torch, and the latency runtime)")]
Factory = Annotated[Optional[str], typer.Option(help="your model's constructor, package.module:function")]
FactoryKwargs = Annotated[Optional[str], typer.Option(help="JSON keyword arguments of --factory")]
Restart = Annotated[bool, typer.Option("--restart", help="discard this output's earlier run and start over")]
# training
Epochs = Annotated[int, typer.Option(min=1, help="training epochs")]
BatchSize = Annotated[int, typer.Option(min=1, help="images per training batch")]
LimitTrain = Annotated[Optional[int], typer.Option(min=1, help="use only this many training images")]
Lr = Annotated[float, typer.Option(help="learning rate (> 0)")]

# what to reach
TargetMacs = Annotated[Optional[str], typer.Option(help="'5x' = 5 times fewer MACs; 0.2 = keep 20%")]
TargetLatency = Annotated[Optional[str], typer.Option(
    help="'3x' = 3 times faster in the runtime (--runtime, --threads, first --batch); 0.33 = a third of the time")]
Method = Annotated[str, typer.Option(help="channel criterion (l1, aura, mass, random, taylor, greedy_refit), "
                                           "search, ges or none")]
Scope = Annotated[str, typer.Option(help="global ranking or the same fraction of every layer (uniform)")]
MinKeep = Annotated[float, typer.Option(help="every layer keeps at least this fraction of its channels")]
MinChannels = Annotated[int, typer.Option(help="... and at least this many channels")]
Tolerance = Annotated[float, typer.Option(help="relative tolerance on the target")]
CalibSize = Annotated[int, typer.Option(help="calibration images of the training split")]
# what happens to the pruned model
Reconstruct = Annotated[bool, typer.Option("--reconstruct/--no-reconstruct",
                                           help="refit the layers whose inputs lost channels (least squares)")]
FinetuneEpochs = Annotated[int, typer.Option(min=0, help="fine-tuning epochs after pruning")]
FinetuneLr = Annotated[float, typer.Option(help="fine-tuning learning rate")]
Distill = Annotated[bool, typer.Option("--distill/--no-distill",
                                       help="the unpruned model teaches the pruned one while fine-tuning")]
DistillWeight = Annotated[float, typer.Option(help="weight of the soft-target loss when distilling")]
DistillTemperature = Annotated[float, typer.Option(help="softmax temperature when distilling")]
Depth = Annotated[Optional[str], typer.Option(help="then remove rectifiers: easier or nepenthe")]
Fold = Annotated[bool, typer.Option("--fold/--no-fold", help="fold BatchNorm and linear chains before deploying")]
Quantize = Annotated[bool, typer.Option("--quantize/--no-quantize", help="end with static INT8 (ONNX Runtime)")]
Runtime = Annotated[str, typer.Option(help="runtime of the latency figures: onnxruntime or torch")]
Batch = Annotated[str, typer.Option(help="batch sizes of the latency figures, comma-separated")]
LatencyRepeats = Annotated[int, typer.Option(min=1, help="timed runs per latency measurement")]
Report = Annotated[Optional[Path], typer.Option(help="write a report folder (resumable; rerun to continue)")]
# the search
Reward = Annotated[str, typer.Option(help="reward: entropy, mass_entropy, accuracy, accuracy_flops")]
Importance = Annotated[str, typer.Option(help="channels removed inside a group: l1, aura or mass")]
Episodes = Annotated[int, typer.Option(help="search episodes (AMC: 800)")]
Warmup = Annotated[int, typer.Option(help="episodes of uniform random actions first (AMC: 100)")]
Lbound = Annotated[float, typer.Option(help="smallest preserve ratio of a group")]
RoundTo = Annotated[int, typer.Option(help="kept channels a multiple of this (AMC: 8)")]
Wall = Annotated[str, typer.Option(help="action wall: both (end at the target), upper (AMC) or spread (shares)")]
RewardImages = Annotated[int, typer.Option(help="images of the fixed calibration batch (entropy rewards)")]
ValSubset = Annotated[int, typer.Option(help="validation images of the accuracy rewards (0 = all)")]
TopK = Annotated[int, typer.Option(help="best policies whose validation accuracy is measured")]
CheckpointEvery = Annotated[int, typer.Option(help="episodes between checkpoints")]
AmcFull = Annotated[bool, typer.Option("--amc-full", help="AMC's settings: 800 episodes, 100 warm-up, full val")]
AdaptBn = Annotated[int, typer.Option(help="accuracy rewards: re-estimate BatchNorm stats on this many images")]
