"""Under DDP the ranks draw different noise: each rank gets its slice of the noise one process
would draw for the global batch (crops, flips, adversarial random start), and its own dropout;
for every training attack that draws a start (fgsm_rs, n_fgsm's noise, trades's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tqdm import tqdm

import advlab.training.loop
from advlab.data.images import ImageSet
from advlab.models import build_model, model_config
from advlab.params.train import Train
from advlab.training.distributed import SINGLE, Ranks
from advlab.training.loop import BatchNoise, FitJob, draw_noise, dropout_seed

CFG = Train(epochs=1, batch_size=8, augment=True, adversarial="fgsm_rs")
MODES = ("fgsm_rs", "n_fgsm", "trades")
WORLD = 2


def tiny_set() -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 8, 8), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(32) % 10, tuple("abcdefghij"))


def recorded_epoch(ranks: Ranks, mode: str = "fgsm_rs") -> dict[str, list[torch.Tensor]]:
    """One epoch of train_epoch with train.adversarial `mode`; returns per step the augmented
    inputs, the random starts handed to the training attack and the dropout masks."""
    cfg = CFG.model_copy(update={"adversarial": mode})
    data = tiny_set()
    torch.manual_seed(0)
    model = build_model(model_config("lab_cnn", data))
    record: dict[str, list[torch.Tensor]] = {"inputs": [], "starts": [], "dropout": []}
    attack = advlab.training.loop.adversarial_batch

    def recording_attack(model, x, y, cfg, start):
        record["inputs"].append(x.clone())
        record["starts"].append(start.clone())
        return attack(model, x, y, cfg, start)

    dropout = next(m for m in model.modules() if isinstance(m, torch.nn.Dropout))
    dropout.register_forward_hook(  # the mask, where known: ReLU zeros stay zero either way
        lambda module, args, out: record["dropout"].append(torch.where(
            args[0] != 0, (out != 0).float(), torch.nan)) if module.training else None)
    advlab.training.loop.adversarial_batch = recording_attack
    try:
        trained = model if ranks.world == 1 else torch.nn.parallel.DistributedDataParallel(model)
        with tqdm(total=4, disable=True) as bar:
            advlab.training.loop.train_epoch(FitJob(trained, data, data, cfg, 0, 8, ranks), 5, bar)
    finally:
        advlab.training.loop.adversarial_batch = attack
    return record


def rank_worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=WORLD)
    try:
        torch.save({mode: recorded_epoch(Ranks(rank, WORLD, rank), mode) for mode in MODES},
                   f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_draw_their_slice_of_the_global_noise_and_own_dropout(tmp_path: Path):
    mp.spawn(rank_worker, args=(str(tmp_path),), nprocs=WORLD)
    recorded = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for mode in MODES:
        assert_noise_rules([r[mode] for r in recorded], recorded_epoch(SINGLE, mode))


def assert_noise_rules(ranks: list[dict], single: dict) -> None:
    steps = len(single["inputs"])
    assert steps == 4 and all(len(r["inputs"]) == steps for r in ranks)
    for step in range(steps):
        for r, got in enumerate(ranks):  # crops, flips and random start: one process's, sliced
            assert torch.equal(got["inputs"][step], single["inputs"][step][r::WORLD])
            assert torch.equal(got["starts"][step], single["starts"][step][r::WORLD])
        assert not torch.equal(ranks[0]["starts"][step], ranks[1]["starts"][step])
        masks = ranks[0]["dropout"][step], ranks[1]["dropout"][step]
        known = ~masks[0].isnan() & ~masks[1].isnan()
        assert known.sum() > 100  # ranks sharing a seed would agree on every known entry
        assert (masks[0][known] != masks[1][known]).any()


def test_noise_slices_partition_the_global_batch():
    noise = draw_noise(6, (3, 4, 4), CFG, torch.Generator().manual_seed(1))
    parts = [noise.local(Ranks(r, 3)) for r in range(3)]
    for field in ("shifts", "flips", "start"):
        whole = getattr(noise, field)
        assert whole.shape[0] == 6
        rebuilt = torch.empty_like(whole)
        for r, part in enumerate(parts):
            rebuilt[r::3] = getattr(part, field)
        assert torch.equal(rebuilt, whole)
    assert noise.local(SINGLE) is noise
    assert draw_noise(6, (3, 4, 4), Train(), torch.Generator()) == BatchNoise(None, None, None)


def test_dropout_seeds_differ_per_rank_and_rank_0_keeps_the_epoch_seed():
    seeds = [dropout_seed(7, Ranks(r, 4)) for r in range(4)]
    assert seeds[0] == 7 and len(set(seeds)) == 4
