"""`fastnn.io.save` / `load`: exact round trips, atomic writes, refused files; pickling."""

import io as _io
import json
import os
import pickle
import stat
import zipfile

import numpy as np
import pytest

from conftest import DTYPES, TUTORIAL_X, TUTORIAL_Y
from fastnn import MLP, NeuralNetwork
from fastnn import io as fio
from fastnn.io import FORMAT_VERSION, ModelFileError, load, save


def _mlp(dtype=np.float64, optimizer="adam", random_state=0, **kw):
    kw.setdefault("activation", "tanh")
    m = MLP([3, 6, 2], dtype=dtype, random_state=random_state, **kw)
    if optimizer is not None:
        Y = np.hstack([TUTORIAL_Y, 1 - TUTORIAL_Y])
        m.fit(TUTORIAL_X, Y, epochs=7, batch_size=3, optimizer=optimizer, learning_rate=0.05)
    return m


def _targets(m):
    Y = np.hstack([TUTORIAL_Y, 1 - TUTORIAL_Y])
    return Y[:, : m.n_outputs]


def _assert_same_mlp(a, b):
    assert type(b) is MLP
    assert repr(a) == repr(b)
    assert a.random_state == b.random_state
    assert b._params.dtype == a.dtype
    np.testing.assert_array_equal(a._params, b._params)
    np.testing.assert_array_equal(a.history_, b.history_)
    np.testing.assert_array_equal(a._step_count, b._step_count)
    assert a._opt_name == b._opt_name
    if a._opt_name is not None:
        np.testing.assert_array_equal(a._state1, b._state1)
        np.testing.assert_array_equal(a._state2, b._state2)
    assert all(np.shares_memory(w, b._params) for w in b.weights)
    X = np.random.default_rng(5).standard_normal((9, a.n_features))
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", [None, "gd", "momentum", "adam"])
@pytest.mark.parametrize("bias", [True, False])
def test_mlp_round_trip_is_exact_and_training_continues_identically(dtype, optimizer, bias, tmp_path):
    m = _mlp(dtype, optimizer, bias=bias)
    path = tmp_path / "model.npz"
    save(m, path)
    clone = load(path)
    _assert_same_mlp(m, clone)
    # optimizer state, step counter and shuffling generator are restored too
    kw = dict(epochs=5, batch_size=3, optimizer=optimizer or "adam", learning_rate=0.05)
    np.testing.assert_array_equal(m.fit(TUTORIAL_X, _targets(m), **kw), clone.fit(TUTORIAL_X, _targets(m), **kw))
    np.testing.assert_array_equal(m._params, clone._params)


@pytest.mark.parametrize(
    "kw",
    [
        {"output_activation": "softmax", "loss": "log_loss"},
        {"activation": "relu", "output_activation": "identity", "loss": "mse"},
        {"activation": "logistic", "output_activation": "logistic", "loss": "log_loss"},
        {"random_state": None},
        {"random_state": np.random.default_rng(3)},
        {"random_state": np.random.Generator(np.random.MT19937(4))},
    ],
    ids=["softmax", "relu-mse", "logistic", "none", "generator", "mt19937"],
)
def test_mlp_round_trip_of_every_configuration(kw, tmp_path):
    m = _mlp(**kw)
    save(m, tmp_path / "m.npz")
    clone = load(tmp_path / "m.npz")
    if isinstance(m.random_state, np.random.Generator):
        assert clone.random_state is None  # the generator's state is kept, not the object
        m.random_state = None
    _assert_same_mlp(m, clone)
    a = m.fit(TUTORIAL_X, _targets(m), epochs=3, batch_size=2)
    b = clone.fit(TUTORIAL_X, _targets(m), epochs=3, batch_size=2)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("trained", [False, True])
def test_neural_network_round_trip(dtype, trained, tmp_path):
    np.random.seed(1)
    nn = NeuralNetwork(TUTORIAL_X, TUTORIAL_Y, hidden_size=5, learning_rate=0.7, dtype=dtype)
    if trained:
        nn.train(50)
    save(nn, tmp_path / "nn.npz")
    clone = load(tmp_path / "nn.npz")
    assert type(clone) is NeuralNetwork
    assert (clone.dtype, clone.hidden_size, clone.learning_rate) == (nn.dtype, 5, 0.7)
    for name in ("input", "y", "weights1", "weights2", "output"):
        a, b = getattr(nn, name), getattr(clone, name)
        assert b.dtype == a.dtype and b.flags.c_contiguous
        np.testing.assert_array_equal(a, b)
    assert hasattr(clone, "layer1") == trained
    if trained:
        clone.backprop()  # uses the stored layer1/output, like the original
        nn.backprop()
        np.testing.assert_array_equal(nn.weights1, clone.weights1)
    np.testing.assert_array_equal(nn.train(20), clone.train(20))
    clone.feedforward()
    nn.feedforward()
    np.testing.assert_array_equal(nn.output, clone.output)


def test_saved_file_layout_is_plain_arrays(tmp_path):
    m = _mlp()
    path = tmp_path / "m.npz"
    save(m, path)
    with np.load(path, allow_pickle=False) as f:
        assert int(f["fastnn_format"]) == FORMAT_VERSION
        assert str(f["fastnn_kind"]) == "MLP"
        config = json.loads(str(f["fastnn_config"]))
        assert config["layer_sizes"] == [3, 6, 2] and config["activation"] == "tanh"
        assert config["dtype"] == "float64" and config["optimizer"] == "adam"
        np.testing.assert_array_equal(f["param:params"], m._params)
        for name in f.files:
            assert f[name].dtype.kind != "O"


def test_path_is_written_as_given_and_replaces_atomically(tmp_path):
    m = _mlp()
    path = tmp_path / "weights.bin"
    save(m, str(path))
    assert sorted(os.listdir(tmp_path)) == ["weights.bin"]
    first = path.read_bytes()
    m.fit(TUTORIAL_X, _targets(m), epochs=2)
    save(m, path)
    assert path.read_bytes() != first
    assert sorted(os.listdir(tmp_path)) == ["weights.bin"]  # no temporary file left
    np.testing.assert_array_equal(load(path)._params, m._params)


def test_permissions_follow_the_umask(tmp_path):
    mask = os.umask(0o022)
    try:
        save(_mlp(), tmp_path / "m.npz")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o644


def test_an_interrupted_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    old = _mlp(random_state=1)
    save(old, path)
    before = path.read_bytes()

    def interrupted(file, **arrays):
        file.write(b"PK\x03\x04 half of a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(fio.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(_mlp(random_state=2), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]
    np.testing.assert_array_equal(load(path)._params, old._params)


def test_an_unwritable_array_is_refused_before_writing(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"

    def dump(model):
        return {}, {"bad": np.array([object()])}

    monkeypatch.setitem(fio._KINDS, "MLP", (MLP, dump, fio._KINDS["MLP"][2]))
    with pytest.raises(TypeError, match="bad"):
        save(_mlp(), path)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------- refused files
@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.npz"
    save(_mlp(), path)
    return path


@pytest.mark.parametrize("keep", [0, 1, 10, 100, 0.5, 0.9, -22, -1])
def test_truncated_files_are_refused(saved, keep):
    data = saved.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    saved.write_bytes(data[:cut])
    with pytest.raises(ModelFileError, match="fastnn model file") as info:
        load(saved)
    assert isinstance(info.value, ValueError)


def test_a_damaged_byte_is_detected(saved):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as z:
        info = z.getinfo("param:params.npy")
    # a byte inside the stored parameters (past the member's local header and .npy header)
    position = info.header_offset + 30 + len(info.filename) + 128 + 5
    data[position] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="damaged"):
        load(saved)


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as f:
        arrays = {name: f[name] for name in f.files}
    for name, value in changes.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    with open(path, "wb") as out:
        np.savez(out, **arrays)


def test_newer_format_is_refused_with_a_clear_error(saved):
    _rewrite(saved, fastnn_format=np.array(FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match=rf"newer fastnn \(file format {FORMAT_VERSION + 1}\).*upgrade"):
        load(saved)


@pytest.mark.parametrize(
    "changes,words",
    [
        ({"fastnn_format": None}, "not a fastnn model file"),
        ({"fastnn_kind": None}, "not a fastnn model file"),
        ({"fastnn_format": np.array(0)}, "invalid format version"),
        ({"fastnn_format": np.array([1, 2])}, "invalid format version"),
        ({"fastnn_format": np.array(1.0)}, "invalid format version"),
        ({"fastnn_kind": np.array("Transformer")}, "unknown kind 'Transformer'"),
        ({"fastnn_config": np.array("{not json")}, "damaged configuration"),
        ({"fastnn_config": np.array("[1, 2]")}, "damaged configuration"),
        ({"fastnn_config": np.array('{"layer_sizes": [3, 6, 2]}')}, "inconsistent MLP"),
        ({"param:params": np.zeros(5)}, "inconsistent MLP"),
        ({"param:params": None}, "inconsistent MLP"),
        ({"param:state1": np.zeros(3, np.float32)}, "inconsistent MLP"),
        ({"param:history": np.zeros((2, 2))}, "inconsistent MLP"),
    ],
)
def test_inconsistent_or_foreign_archives_are_refused(saved, changes, words):
    _rewrite(saved, **changes)
    with pytest.raises(ModelFileError, match=words.replace("(", r"\(")):
        load(saved)


def test_foreign_files_are_refused(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    npy = tmp_path / "array.npy"
    np.save(npy, np.arange(3))
    other = tmp_path / "other.npz"
    np.savez(other, a=np.arange(3), b=np.ones(2))
    empty_zip = tmp_path / "empty.npz"
    with zipfile.ZipFile(empty_zip, "w"):
        pass
    for path, words in [
        (text, "not a readable fastnn model file"),
        (npy, "single .npy array"),
        (other, "lacks the keys"),
        (empty_zip, "lacks the keys"),
    ]:
        with pytest.raises(ModelFileError, match=words):
            load(path)
    with pytest.raises(IsADirectoryError if os.name != "nt" else PermissionError):
        load(tmp_path)


class _Trap:
    def __reduce__(self):
        return (open, (os.environ["FASTNN_TRAP"], "w"))


def test_loading_never_unpickles(tmp_path, monkeypatch):
    marker = tmp_path / "executed"
    monkeypatch.setenv("FASTNN_TRAP", str(marker))
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps(_Trap()))
    with pytest.raises(ModelFileError):
        load(raw)
    # an object array where the parameters should be
    saved = tmp_path / "m.npz"
    save(_mlp(), saved)
    _rewrite(saved, **{"param:params": np.array([_Trap()], dtype=object)})
    with pytest.raises(ModelFileError):
        load(saved)
    assert not marker.exists()


def test_register_kind_validates_its_name():
    with pytest.raises(TypeError, match="kind"):
        fio.register_kind("", MLP, None, None)


# ----------------------------------------------------------------- pickling
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", [None, "momentum", "adam"])
def test_mlp_pickles_and_continues_identically(dtype, optimizer):
    m = _mlp(dtype, optimizer)
    clone = pickle.loads(pickle.dumps(m))
    _assert_same_mlp(m, clone)
    kw = dict(epochs=4, batch_size=3, optimizer=optimizer or "gd")
    np.testing.assert_array_equal(m.fit(TUTORIAL_X, _targets(m), **kw), clone.fit(TUTORIAL_X, _targets(m), **kw))


@pytest.mark.parametrize("fed", [False, True])
def test_neural_network_pickles(fed):
    np.random.seed(2)
    nn = NeuralNetwork(TUTORIAL_X, TUTORIAL_Y, dtype="float32")
    if fed:
        nn.feedforward()
    buffer = _io.BytesIO()
    pickle.dump(nn, buffer)
    clone = pickle.loads(buffer.getvalue())
    np.testing.assert_array_equal(nn.train(30), clone.train(30))
    np.testing.assert_array_equal(nn.weights2, clone.weights2)


def test_a_damaged_architecture_cannot_trigger_a_huge_allocation(saved):
    with np.load(saved, allow_pickle=False) as f:
        config = json.loads(str(f["fastnn_config"]))
    config["layer_sizes"] = [10**9, 10**9, 2]
    _rewrite(saved, fastnn_config=np.array(json.dumps(config)))
    with pytest.raises(ModelFileError, match="layer_sizes"):
        load(saved)
