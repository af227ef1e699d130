import torch

from advlab.data.images import ImageSet, batches, load_splits, split_train_val, stratified_order
from advlab.data.synthetic import synthetic_images


def test_split_is_disjoint_sized_and_stratified():
    official = synthetic_images(1000, seed=1)
    train, val = split_train_val(official, train_size=700, val_size=200, seed=3)
    assert (len(train), len(val)) == (700, 200)
    # disjoint: compare whole images, since the synthetic generator never repeats one
    flat = lambda s: {bytes(img.flatten().tolist()) for img in s.images}  # noqa: E731
    assert not flat(train) & flat(val)
    expected = torch.bincount(official.labels).double()
    for part in (train, val):
        counts = torch.bincount(part.labels, minlength=10).double()
        assert (counts - expected * len(part) / len(official)).abs().max() <= 1


def test_split_is_seeded():
    official = synthetic_images(300, seed=1)
    a = split_train_val(official, 200, 50, seed=5)[1]
    b = split_train_val(official, 200, 50, seed=5)[1]
    c = split_train_val(official, 200, 50, seed=6)[1]
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_every_prefix_of_the_stratified_order_is_balanced():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    order = stratified_order(labels, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(100))
    for k in (10, 37, 64):
        counts = torch.bincount(labels[order[:k]], minlength=3).double()
        assert (counts - torch.tensor([0.5, 0.3, 0.2]) * k).abs().max() <= 1


def test_split_too_large_names_the_keys():
    official = synthetic_images(100, seed=1)
    try:
        split_train_val(official, 90, 20, seed=0)
    except ValueError as err:
        assert "data.train_size" in str(err) and "data.val_size" in str(err)
    else:
        raise AssertionError("expected a ValueError")


def test_image_set_saves_and_loads_in_one_read(tmp_path):
    data = synthetic_images(50, seed=2)
    data.save(tmp_path / "test.pt")
    loaded = load_splits(tmp_path, ("test",))["test"]
    assert torch.equal(loaded.images, data.images) and torch.equal(loaded.labels, data.labels)
    assert loaded.images.dtype == torch.uint8 and loaded.labels.dtype == torch.int64
    assert loaded.classes == data.classes


def test_image_set_rejects_labels_out_of_range():
    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    try:
        ImageSet(images, torch.tensor([0, 3]), ("a", "b", "c"))
    except ValueError as err:
        assert "0..2" in str(err)
    else:
        raise AssertionError("expected a ValueError")


def test_batches_cover_every_index_once():
    shuffled = torch.cat(list(batches(103, 10, torch.Generator().manual_seed(0))))
    assert sorted(shuffled.tolist()) == list(range(103))
    assert [len(b) for b in batches(103, 10)][-1] == 3
