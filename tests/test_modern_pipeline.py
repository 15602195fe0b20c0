"""What the modern CNNs add to the core: the neutral resize, the shared dropout masks, the book's
settings per variant, and the command line's subsets."""

import numpy as np
import pytest

import polylenet
from polylenet.cli import main
from polylenet.masks import check_masks, dropout_masks
from polylenet.resize import bilinear_weights, resize_bilinear, to_model_inputs
from polylenet.runner import child_command
from polylenet.training import TrainConfig, eval_batch_size


def test_bilinear_resize_uses_half_pixel_centres():
    # 2 -> 4: output pixel i samples the input at (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 (clamped)
    assert bilinear_weights(2, 4).tolist() == [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]]
    x = np.array([[[[0.0, 1.0], [2.0, 3.0]]]], np.float32)
    y = resize_bilinear(x, 4, 4)
    assert y.dtype == np.float32 and y.shape == (1, 1, 4, 4)
    assert y[0, 0, 1, 1] == pytest.approx(0.75 * 0.75 * 0 + 0.75 * 0.25 * 1 + 0.25 * 0.75 * 2 + 0.25 * 0.25 * 3)
    # every row of weights sums to 1, so a constant image stays constant and [0, 1] stays [0, 1]
    np.testing.assert_allclose(bilinear_weights(28, 224).sum(axis=1), 1.0)


def test_model_inputs_are_resized_only_where_the_spec_asks():
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    lenet = to_model_inputs(images, (1, 28, 28))
    assert np.array_equal(lenet, polylenet.training.to_inputs(images))
    modern = to_model_inputs(images, (1, 224, 224))
    assert modern.shape == (3, 1, 224, 224) and 0.0 <= modern.min() and modern.max() <= 1.0
    # a whole number of output pixels per input pixel: the centre of each 8x8 block is near its pixel
    assert modern[:, 0, 4::8, 4::8] == pytest.approx(lenet[:, 0], abs=0.5)


def test_shared_masks_depend_on_seed_epoch_step_and_layer_alone():
    spec = polylenet.load_spec("alexnet")
    a, b = dropout_masks(spec, 8, 0, 1, 2), dropout_masks(spec, 8, 0, 1, 2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["dropout1"], a["dropout2"])  # each layer its own draw
    assert not np.array_equal(a["dropout1"], dropout_masks(spec, 8, 0, 1, 3)["dropout1"])
    assert not np.array_equal(a["dropout1"], dropout_masks(spec, 8, 1, 1, 2)["dropout1"])
    kept = (a["dropout1"] > 0).mean()
    assert abs(kept - 0.5) < 0.02  # 32,768 units: the spread is 0.003
    nin = dropout_masks(polylenet.load_spec("nin"), 2, 0, 0, 0)
    assert nin["dropout1"].shape == (2, 384, 5, 5)  # NCHW: NiN drops after its third max-pool


def test_masks_for_a_spec_are_checked_by_name_and_shape():
    spec = polylenet.load_spec("alexnet")
    with pytest.raises(ValueError, match=r"exactly the spec's dropout layers \['dropout1', 'dropout2'\]"):
        check_masks(spec, {"dropout1": np.ones((2, 4096))}, 2)
    with pytest.raises(ValueError, match=r"'dropout2' must be a float array of the layer's input shape \(2, 4096\)"):
        check_masks(spec, {"dropout1": np.ones((2, 4096)), "dropout2": np.ones((3, 4096))}, 2)
    assert check_masks(spec, None, 2) is None


def test_dropout_and_global_pool_are_validated():
    with pytest.raises(polylenet.SpecError, match=r"dropout p must be a probability in \[0, 1\), got 1.0"):
        polylenet.Spec("bad", (polylenet.flatten(), polylenet.dropout(1.0), polylenet.dense(10)), input_shape=(1, 2, 2))
    with pytest.raises(polylenet.SpecError, match="global_avg_pool needs an NCHW input"):
        polylenet.Spec("bad", (polylenet.flatten(), polylenet.global_avg_pool()), input_shape=(1, 2, 2))


def test_the_book_trains_each_modern_cnn_with_its_own_settings():
    assert [(polylenet.book_lr(n), polylenet.book_batch_size(n)) for n in ("alexnet", "vgg11-small", "nin")] == \
        [(0.01, 128), (0.05, 128), (0.1, 128)]
    assert all(polylenet.load_spec(n).input_shape == (1, 224, 224) for n in ("alexnet", "alexnet-tf-tab", "nin"))
    # the spec ends with (N, classes) without a dense layer: NiN
    assert polylenet.load_spec("nin").layers[-1].type == "flatten"
    # evaluation batches shrink with the input: 1000 LeNet images, 227 at 96x96, 41 at 224x224
    assert eval_batch_size(TrainConfig(), polylenet.load_spec("lenet5")) == 1000
    assert eval_batch_size(TrainConfig(), polylenet.load_spec("alexnet")) == 41
    assert eval_batch_size(TrainConfig(), polylenet.load_spec("resnet18")) == 227


def test_compare_hands_its_subsets_and_dropout_mode_to_every_child(tmp_path):
    config = TrainConfig(lr=0.01, batch_size=128, train_subset=512, test_subset=256, dropout="shared")
    cmd = child_command("python", "torch", "alexnet", config, tmp_path, None)
    for flag, value in (("--train-subset", "512"), ("--test-subset", "256"), ("--dropout", "shared"),
                        ("--batch-size", "128"), ("--lr", "0.01")):
        assert cmd[cmd.index(flag) + 1] == value


def test_a_bad_dropout_mode_is_refused():
    with pytest.raises(polylenet.errors.ConfigError, match=r"dropout must be one of \['native', 'shared'\]"):
        TrainConfig(dropout="same")


def test_shapes_prints_d2ls_alexnet_table(capsys):
    assert main(["shapes", "--spec", "alexnet"]) == 0
    out = capsys.readouterr().out
    assert "conv1     output shape: (1, 96, 54, 54)" in out
    assert "flatten1  output shape: (1, 6400)" in out and "dropout2  output shape: (1, 4096)" in out


def test_the_book_trains_each_block_cnn_with_its_own_settings():
    names = ("googlenet", "resnet18", "resnet18-tf-tab", "densenet")
    assert [(polylenet.book_lr(n), polylenet.book_batch_size(n)) for n in names] == \
        [(0.1, 128), (0.05, 256), (0.05, 256), (0.1, 256)]
    assert all(polylenet.load_spec(n).input_shape == (1, 96, 96) for n in names)


def test_a_dropout_mask_inside_a_block_is_keyed_by_its_path():
    relu = polylenet.activation("relu")
    spec = polylenet.Spec("masked-branch", (
        polylenet.conv2d(3, 3, padding=1),
        polylenet.concat((), (polylenet.conv2d(2, 1), relu, polylenet.dropout(0.5)), label="inception"),
        polylenet.flatten(), polylenet.dropout(0.25), polylenet.dense(10)), input_shape=(1, 4, 4))
    masks = dropout_masks(spec, 2, 0, 0, 0)
    assert sorted(masks) == ["dropout1", "inception1.branch2.dropout1"]
    assert masks["inception1.branch2.dropout1"].shape == (2, 2, 4, 4)
    oracle = polylenet.build(spec, backend="numpy")
    x, y = np.random.default_rng(0).random((2, 1, 4, 4), dtype=np.float32), np.array([1, 2])
    with pytest.raises(ValueError, match=r"exactly the spec's dropout layers \['inception1.branch2.dropout1', "
                                         r"'dropout1'\]"):
        polylenet.loss_and_grads(oracle, x, y, masks={"dropout1": masks["dropout1"]})
    polylenet.loss_and_grads(oracle, x, y, masks=masks)


def test_a_block_spec_trains_end_to_end_on_the_oracle(tmp_path):
    """The protocol on a tree: resize, batches, blocks' batchnorm in training mode, evaluation."""
    spec = polylenet.Spec("tiny-resnet", (
        polylenet.sequential("b", polylenet.conv2d(4, 3, stride=2, padding=1), polylenet.batchnorm(),
                             polylenet.activation("relu")),
        polylenet.sequential("b", polylenet.add(
            (polylenet.conv2d(8, 3, stride=2, padding=1), polylenet.batchnorm(), polylenet.activation("relu"),
             polylenet.conv2d(8, 3, padding=1), polylenet.batchnorm()),
            (polylenet.conv2d(8, 1, stride=2),), after=(polylenet.activation("relu"),))),
        polylenet.global_avg_pool(), polylenet.flatten(), polylenet.dense(10)), input_shape=(1, 32, 32))
    config = TrainConfig(lr=0.05, batch_size=64, epochs=1, train_subset=256, test_subset=128)
    history = polylenet.train(spec, backend="numpy", config=config, progress=False, out_dir=tmp_path / "run")
    assert len(history.step_losses) == 4 and all(np.isfinite(history.step_losses))
    trained, _ = polylenet.load_checkpoint(tmp_path / "run" / "checkpoint-epoch01.npz")
    assert sorted(trained) == sorted(polylenet.param_shapes(spec))  # nested keys in the checkpoint
    assert np.all(trained["b2.residual1.branch1.bn1.running_mean"] != 0)  # the block's batchnorm trained
