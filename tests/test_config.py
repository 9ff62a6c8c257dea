"""add_segalias_config: idempotent, keeps user values, every key round-trips through YAML and lives
under a SEGALIAS node; the one config loader names the new key of a renamed one."""

import pytest
import torch
import yaml
from detectron2.config import CfgNode, get_cfg

from segalias_d2 import add_segalias_config
from segalias_d2.config import SegAliasSetupError, UnknownConfigKeyError, load_config
from segalias_d2.evaluation.analysis import setup_cfg


def _fresh():
    cfg = get_cfg()
    add_segalias_config(cfg)
    return cfg


def test_idempotent_and_keeps_user_values():
    cfg = _fresh()
    before = cfg.dump()
    add_segalias_config(cfg)
    assert cfg.dump() == before
    cfg.MODEL.SEGALIAS.DAF.CUTOFF = 0.3
    cfg.TEST.SEGALIAS.SLIDING_WINDOW.ENABLED = True
    cfg.SOLVER.SEGALIAS.POLY_LR_POWER = 1.0
    cfg.SOLVER.SEGALIAS.EPOCH_SCHEDULE.NUM_IMAGES = 1561
    # a config rebuilt from a dump (e.g. OUTPUT_DIR/config.yaml) and extended again keeps its values
    again = CfgNode(yaml.safe_load(cfg.dump()))
    add_segalias_config(again)
    assert again.MODEL.SEGALIAS.DAF.CUTOFF == 0.3
    assert again.TEST.SEGALIAS.SLIDING_WINDOW.ENABLED is True
    assert again.SOLVER.SEGALIAS.POLY_LR_POWER == 1.0
    assert again.SOLVER.SEGALIAS.EPOCH_SCHEDULE.NUM_IMAGES == 1561


def test_paper_defaults():
    cfg = _fresh()
    assert cfg.MODEL.SEGALIAS.DAF.CUTOFF == 0.35 and cfg.MODEL.SEGALIAS.FREQMIX.CUTOFF == 0.35
    assert list(cfg.MODEL.SEGALIAS.DAF.STAGES) == ["res3", "res4", "res5"]
    assert (
        cfg.MODEL.SEGALIAS.FREQMIX.REDUCTION == 16 and cfg.MODEL.SEGALIAS.FREQMIX.GATE == "released"
    )
    assert cfg.SOLVER.SEGALIAS.FREQMIX_LR_MULTIPLIER == 2.0
    assert cfg.TEST.SEGALIAS.BOUNDARY_BAND_WIDTH == 15
    assert (cfg.SOLVER.SEGALIAS.POLY_LR_POWER, cfg.SOLVER.SEGALIAS.POLY_LR_MIN_LR) == (0.9, 1e-4)
    sw = cfg.TEST.SEGALIAS.SLIDING_WINDOW
    assert list(sw.SIZE) == [768, 768] and list(sw.STRIDE) == [512, 512]
    # released LIS 1x: 12 epochs, steps after 9 and 11; off unless a config enables it
    es = cfg.SOLVER.SEGALIAS.EPOCH_SCHEDULE
    assert (
        es.ENABLED,
        es.MAX_EPOCHS,
        tuple(es.STEP_EPOCHS),
        es.NUM_IMAGES,
        es.CHECKPOINT_EPOCHS,
    ) == (False, 12, (9, 11), 0, 0)


def test_dump_merges_back():
    cfg = _fresh()
    other = _fresh()
    other.merge_from_other_cfg(CfgNode(yaml.safe_load(cfg.dump())))
    assert yaml.safe_load(other.dump()) == yaml.safe_load(cfg.dump())


def _leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, CfgNode):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def test_every_added_key_lives_under_a_segalias_node():
    added = set(_leaves(_fresh())) - set(_leaves(get_cfg()))
    assert added and {k.split(".")[0] for k in added} == {
        "MODEL",
        "INPUT",
        "DATALOADER",
        "SOLVER",
        "TEST",
    }
    assert all(k.split(".")[1] == "SEGALIAS" for k in added), sorted(
        k for k in added if ".SEGALIAS." not in k
    )


# old layout -> new key, written out by hand (a file reports the first missing node, an override the
# leaf)
RENAMES = [
    (
        "SOLVER",
        "FREQMIX_LR_MULTIPLIER: 1.0",
        "SOLVER.FREQMIX_LR_MULTIPLIER",
        "SOLVER.SEGALIAS.FREQMIX_LR_MULTIPLIER",
    ),
    (
        "SOLVER",
        "HEAD_LR_MULTIPLIER: 2.0",
        "SOLVER.HEAD_LR_MULTIPLIER",
        "SOLVER.SEGALIAS.HEAD_LR_MULTIPLIER",
    ),
    ("SOLVER", "POLY_LR_POWER: 1.0", "SOLVER.POLY_LR_POWER", "SOLVER.SEGALIAS.POLY_LR_POWER"),
    ("SOLVER", "POLY_LR_MIN_LR: 0.0", "SOLVER.POLY_LR_MIN_LR", "SOLVER.SEGALIAS.POLY_LR_MIN_LR"),
    (
        "SOLVER",
        "EPOCH_SCHEDULE: {ENABLED: True}",
        "SOLVER.EPOCH_SCHEDULE",
        "SOLVER.SEGALIAS.EPOCH_SCHEDULE",
    ),
    (
        "INPUT",
        "RESIZE_SCALE: {MIN_SCALE: 0.3}",
        "INPUT.RESIZE_SCALE",
        "INPUT.SEGALIAS.RESIZE_SCALE",
    ),
    (
        "INPUT",
        "CROP: {SINGLE_CATEGORY_MAX_AREA: 0.75}",
        "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA",
        "INPUT.SEGALIAS.CROP_SINGLE_CATEGORY_MAX_AREA",
    ),
    (
        "TEST",
        "SLIDING_WINDOW: {ENABLED: True}",
        "TEST.SLIDING_WINDOW",
        "TEST.SEGALIAS.SLIDING_WINDOW",
    ),
]


@pytest.mark.parametrize("top,body,old,new", RENAMES)
def test_old_keys_in_a_file_name_the_new_key(tmp_path, top, body, old, new):
    path = tmp_path / "old.yaml"
    path.write_text(f"{top}:\n  {body}\n")
    with pytest.raises(UnknownConfigKeyError) as e:
        load_config(str(path))
    assert f"{old} was renamed to {new}" in str(e.value) and str(path) in str(e.value)
    assert isinstance(e.value, KeyError) and isinstance(e.value, SegAliasSetupError)
    # the new name exists, and the analysis tools' loader is the same loader
    node = _fresh()
    for part in new.split("."):
        node = node[part]

    with pytest.raises(KeyError, match=f"{old} was renamed to {new}"):
        setup_cfg(str(path), [])


@pytest.mark.parametrize(
    "old,new,value",
    [
        ("SOLVER.EPOCH_SCHEDULE.NUM_IMAGES", "SOLVER.SEGALIAS.EPOCH_SCHEDULE.NUM_IMAGES", "7"),
        ("TEST.SLIDING_WINDOW.SIZE", "TEST.SEGALIAS.SLIDING_WINDOW.SIZE", "[64, 64]"),
        ("INPUT.RESIZE_SCALE.ENABLED", "INPUT.SEGALIAS.RESIZE_SCALE.ENABLED", "True"),
        ("SOLVER.FREQMIX_LR_MULTIPLIER", "SOLVER.SEGALIAS.FREQMIX_LR_MULTIPLIER", "1.0"),
    ],
)
def test_old_keys_as_overrides_name_the_new_key(old, new, value):
    with pytest.raises(
        UnknownConfigKeyError, match=f"command-line override: Key {old} was renamed to {new}"
    ):
        load_config("", [old, value])
    node = load_config("", [new, value])
    for part in new.split("."):
        node = node[part]
    assert node == yaml.safe_load(value)


def test_unknown_key_and_bad_value_errors():
    with pytest.raises(UnknownConfigKeyError, match="Non-existent key: MODEL.NO_SUCH_KEY"):
        load_config("", ["MODEL.NO_SUCH_KEY", "1"])
    with pytest.raises(SegAliasSetupError, match="command-line override: Type mismatch") as e:
        load_config("", ["SOLVER.BASE_LR", "abc"])
    assert not isinstance(e.value, KeyError)


def test_a_key_another_project_defines_is_not_reported_as_renamed():
    # DeepLab / PointRend / Mask2Former define INPUT.CROP.SINGLE_CATEGORY_MAX_AREA themselves
    cfg = get_cfg()
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    add_segalias_config(cfg)
    cfg.merge_from_list(["INPUT.CROP.SINGLE_CATEGORY_MAX_AREA", "0.75"])
    assert (
        cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA == 0.75
        and cfg.INPUT.SEGALIAS.CROP_SINGLE_CATEGORY_MAX_AREA == 1.0
    )


def test_cpu_if_no_cuda(monkeypatch):

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_config("", ["MODEL.DEVICE", "cuda"], cpu_if_no_cuda=True).MODEL.DEVICE == "cpu"
    assert load_config("", ["MODEL.DEVICE", "cuda"]).MODEL.DEVICE == "cuda"
