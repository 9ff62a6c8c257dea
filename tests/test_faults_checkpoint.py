"""Checkpoints survive faults (issue 16.3): atomic writes, named read errors, --resume falling back
to the newest intact checkpoint, weights that fill too little of the model refused. In-process, tiny
models (both Detectron2 builds: also run with .venv-d2main/bin/python)."""

import itertools
import logging
import os

import pytest
import torch
from detectron2.config import get_cfg

from segalias_d2.checkpoint import (
    CheckpointReadError,
    SafeDetectionCheckpointer,
    WeightsMatchPolicy,
    WeightsMismatchError,
)
from segalias_d2.config import add_segalias_config
from segalias_d2.engine import Trainer, load_config, weights_match_policy


class _Net(torch.nn.Module):
    """backbone.bottom_up (2 tensors), backbone.fpn (2), head (2): 6 tensors."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = torch.nn.Module()
        self.backbone.bottom_up = torch.nn.Linear(4, 4)
        self.backbone.fpn = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 1)

    def forward(self, batch):
        x, y = batch
        return {
            "loss": ((self.head(self.backbone.fpn(self.backbone.bottom_up(x))) - y) ** 2).mean()
        }


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_save_is_atomic_and_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    ck = SafeDetectionCheckpointer(_Net(0), str(tmp_path))
    ck.save("model_final")
    before = (tmp_path / "model_final.pth").read_bytes()
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"

    def disk_full(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    ck2 = SafeDetectionCheckpointer(_Net(1), str(tmp_path))
    with pytest.raises(OSError, match="No space left"):
        ck2.save("model_final")
    assert (tmp_path / "model_final.pth").read_bytes() == before  # not overwritten in place
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_final.pth",
    ]  # no temporary left behind


def _three_checkpoints(tmp_path):
    nets = {}
    for i, name in ((1, "model_0000001"), (3, "model_0000003"), (5, "model_0000005")):
        nets[name] = _Net(i)
        SafeDetectionCheckpointer(nets[name], str(tmp_path)).save(name)
    return nets


def test_resume_with_a_truncated_newest_checkpoint_falls_back_to_the_newest_intact(
    tmp_path, caplog
):
    nets = _three_checkpoints(tmp_path)
    newest = tmp_path / "model_0000005.pth"
    newest.write_bytes(newest.read_bytes()[:200])  # killed mid-save by an old, non-atomic writer
    net = _Net(9)
    with caplog.at_level(logging.WARNING):
        SafeDetectionCheckpointer(net, str(tmp_path)).resume_or_load("", resume=True)
    assert _same(net, nets["model_0000003"])
    msg = [r.getMessage() for r in caplog.records if "falling back" in r.getMessage()]
    assert len(msg) == 1 and f"cannot read checkpoint {newest}" in msg[0]
    assert "weights_only" not in msg[0]


@pytest.mark.parametrize(
    "content",
    [b"\x00\xff\xfe garbage", b"model_0009999.pth", b"", b"../elsewhere.pth"],
    ids=["binary", "missing-file", "empty", "outside"],
)
def test_resume_with_a_corrupt_last_checkpoint_file_uses_the_newest_intact(
    tmp_path, caplog, content
):
    nets = _three_checkpoints(tmp_path)
    (tmp_path / "last_checkpoint").write_bytes(content)
    net = _Net(9)
    with caplog.at_level(logging.WARNING):
        SafeDetectionCheckpointer(net, str(tmp_path)).resume_or_load("", resume=True)
    assert _same(net, nets["model_0000005"])
    assert any(
        "last_checkpoint" in r.getMessage() and "newest intact" in r.getMessage()
        for r in caplog.records
    )


def test_resume_with_no_intact_checkpoint_is_one_clear_error(tmp_path):
    _three_checkpoints(tmp_path)
    for name in ("model_0000001.pth", "model_0000003.pth", "model_0000005.pth"):
        (tmp_path / name).write_text("not a checkpoint\n")
    with pytest.raises(CheckpointReadError) as e:
        SafeDetectionCheckpointer(_Net(9), str(tmp_path)).resume_or_load("", resume=True)
    assert str(e.value) == (
        f"--resume: no intact checkpoint in {tmp_path} (tried: model_0000005.pth, "
        "model_0000003.pth, model_0000001.pth); start without --resume or restore a checkpoint"
    )


def test_unreadable_weights_name_the_file_without_torch_advice(tmp_path):
    text = tmp_path / "weights.pth"
    text.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(CheckpointReadError) as e:
        SafeDetectionCheckpointer(_Net()).load(str(text))
    assert str(e.value).startswith(f"cannot read checkpoint {text}: UnpicklingError")
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)


def test_weights_matching_too_little_are_refused_with_the_count(tmp_path, caplog):
    full = _Net(1).state_dict()
    torch.save({"model": {"other." + k: v for k, v in full.items()}}, tmp_path / "none.pth")
    torch.save({"model": {k: full[k] for k in ("head.weight",)}}, tmp_path / "one.pth")
    torch.save(
        {"model": {k: full[k] for k in full if k.startswith("backbone.bottom_up.")}},
        tmp_path / "bb.pth",
    )
    whole = WeightsMatchPolicy(0.9, "")
    with pytest.raises(
        WeightsMismatchError, match=r"filled 0 of 6 of the model's tensors .*no tensor name/shape"
    ):
        SafeDetectionCheckpointer(_Net(), match_policy=whole).load(str(tmp_path / "none.pth"))
    with pytest.raises(
        WeightsMismatchError,
        match=r"filled 1 of 6 .*\(17%; at least 90% expected\); pass --allow-partial-weights",
    ):
        SafeDetectionCheckpointer(_Net(), match_policy=whole).load(str(tmp_path / "one.pth"))
    wrong = dict(full, **{"head.weight": torch.zeros(2, 4)})  # a shape mismatch fills nothing
    torch.save({"model": wrong}, tmp_path / "shape.pth")
    with pytest.raises(WeightsMismatchError, match=r"filled 5 of 6 "):
        SafeDetectionCheckpointer(_Net(), match_policy=whole).load(str(tmp_path / "shape.pth"))
    # a deliberate partial load: a warning with the count, and the tensor is loaded
    net = _Net()
    with caplog.at_level(logging.WARNING):
        SafeDetectionCheckpointer(net, match_policy=WeightsMatchPolicy(0.9, "", True)).load(
            str(tmp_path / "one.pth")
        )
    assert torch.equal(net.head.weight, full["head.weight"])
    assert any(
        "filled 1 of 6" in r.getMessage() and "partial weights allowed" in r.getMessage()
        for r in caplog.records
    )
    # a pretrained backbone fills only backbone.bottom_up: enough to train from, not to evaluate
    ck = SafeDetectionCheckpointer(
        _Net(), match_policy=WeightsMatchPolicy(0.5, "backbone.bottom_up.")
    )
    ck.load(str(tmp_path / "bb.pth"))
    assert ck.last_match == (2, 2, "backbone.bottom_up.")
    with pytest.raises(WeightsMismatchError, match="filled 2 of 6"):
        SafeDetectionCheckpointer(_Net(), match_policy=whole).load(str(tmp_path / "bb.pth"))


class _TinyTrainer(Trainer):
    @classmethod
    def build_model(cls, cfg):
        return _Net(0)

    @classmethod
    def build_train_loader(cls, cfg, start_iter=0):
        g = torch.Generator().manual_seed(1)
        return itertools.repeat((torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)))

    def build_writers(self):
        return []


def _tiny_cfg(out):
    cfg = add_segalias_config(get_cfg())
    cfg.OUTPUT_DIR, cfg.MODEL.DEVICE, cfg.DATASETS.TEST = out, "cpu", ()
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.CHECKPOINT_PERIOD, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.STEPS = (
        4,
        2,
        0,
        (),
    )
    cfg.SOLVER.IMS_PER_BATCH, cfg.TEST.EVAL_PERIOD = 8, 0
    return cfg


def test_trainer_writes_through_the_safe_checkpointer_and_resumes_past_a_corrupt_final(
    tmp_path, caplog
):
    trainer = _TinyTrainer(_tiny_cfg(str(tmp_path)))
    assert isinstance(trainer.checkpointer, SafeDetectionCheckpointer)
    trainer.resume_or_load(resume=False)
    trainer.train()
    names = sorted(n for n in os.listdir(tmp_path) if n.endswith(".pth") or n == "last_checkpoint")
    assert names == ["last_checkpoint", "model_0000001.pth", "model_0000003.pth", "model_final.pth"]
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
    final = tmp_path / "model_final.pth"
    final.write_bytes(final.read_bytes()[:100])
    resumed = _TinyTrainer(_tiny_cfg(str(tmp_path)))
    with caplog.at_level(logging.WARNING):
        resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4  # model_0000003.pth holds iteration 3
    assert any(f"cannot read checkpoint {final}" in r.getMessage() for r in caplog.records)


def test_an_imagenet_style_backbone_checkpoint_trains_but_does_not_evaluate(tmp_path):
    """The R50-DAF-FreqMix FPN recipe from a converted ImageNet backbone (bottom_up tensors without
    the new FreqMix/DAF ones, what tools/convert_pretrained.py writes) passes the training rule, not
    the evaluation one."""

    cfg = load_config(
        os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            "configs/quick_schedules/mask_rcnn_R_50_AAFPN_instant_test.yaml",
        )
    )
    cfg.MODEL.DEVICE = "cpu"
    model = Trainer.build_model(cfg)
    sd = model.state_dict()
    backbone = {
        k[len("backbone.bottom_up.") :]: v
        for k, v in sd.items()
        if k.startswith("backbone.bottom_up.") and ".freqmix." not in k and ".daf." not in k
    }
    torch.save(
        {"model": {"backbone.bottom_up." + k: v for k, v in backbone.items()}}, tmp_path / "r50.pth"
    )
    ck = SafeDetectionCheckpointer(model, match_policy=weights_match_policy(cfg, eval_only=False))
    ck.load(str(tmp_path / "r50.pth"))
    n_bottom_up = sum(1 for k in sd if k.startswith("backbone.bottom_up."))
    assert ck.last_match == (len(backbone), n_bottom_up, "backbone.bottom_up.")
    assert 0.5 < len(backbone) / n_bottom_up < 1.0
    with pytest.raises(
        WeightsMismatchError, match=f"filled {len(backbone)} of {len(sd)} of the model's tensors"
    ):
        SafeDetectionCheckpointer(
            model, match_policy=weights_match_policy(cfg, eval_only=True)
        ).load(str(tmp_path / "r50.pth"))
