"""add_segalias_config: idempotent, keeps user values, and every key round-trips through YAML."""
import yaml
from detectron2.config import CfgNode, get_cfg

from segalias_d2 import add_segalias_config


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
    cfg.TEST.SLIDING_WINDOW.ENABLED = True
    cfg.SOLVER.POLY_LR_POWER = 1.0
    cfg.SOLVER.EPOCH_SCHEDULE.NUM_IMAGES = 1561
    # a config rebuilt from a dump (e.g. OUTPUT_DIR/config.yaml) and extended again keeps its values
    again = CfgNode(yaml.safe_load(cfg.dump()))
    add_segalias_config(again)
    assert again.MODEL.SEGALIAS.DAF.CUTOFF == 0.3
    assert again.TEST.SLIDING_WINDOW.ENABLED is True
    assert again.SOLVER.POLY_LR_POWER == 1.0
    assert again.SOLVER.EPOCH_SCHEDULE.NUM_IMAGES == 1561


def test_paper_defaults():
    cfg = _fresh()
    assert cfg.MODEL.SEGALIAS.DAF.CUTOFF == 0.35 and cfg.MODEL.SEGALIAS.FREQMIX.CUTOFF == 0.35
    assert list(cfg.MODEL.SEGALIAS.DAF.STAGES) == ["res3", "res4", "res5"]
    assert cfg.MODEL.SEGALIAS.FREQMIX.REDUCTION == 16 and cfg.MODEL.SEGALIAS.FREQMIX.GATE == "released"
    assert cfg.SOLVER.FREQMIX_LR_MULTIPLIER == 2.0
    assert cfg.TEST.SEGALIAS.BOUNDARY_BAND_WIDTH == 15
    assert (cfg.SOLVER.POLY_LR_POWER, cfg.SOLVER.POLY_LR_MIN_LR) == (0.9, 1e-4)
    assert list(cfg.TEST.SLIDING_WINDOW.SIZE) == [768, 768] and list(cfg.TEST.SLIDING_WINDOW.STRIDE) == [512, 512]
    es = cfg.SOLVER.EPOCH_SCHEDULE  # released LIS 1x: 12 epochs, steps after 9 and 11; off unless a config enables it
    assert (es.ENABLED, es.MAX_EPOCHS, tuple(es.STEP_EPOCHS), es.NUM_IMAGES, es.CHECKPOINT_EPOCHS) == \
        (False, 12, (9, 11), 0, 0)


def test_dump_merges_back():
    cfg = _fresh()
    other = _fresh()
    other.merge_from_other_cfg(CfgNode(yaml.safe_load(cfg.dump())))
    assert yaml.safe_load(other.dump()) == yaml.safe_load(cfg.dump())
