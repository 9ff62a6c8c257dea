"""The commands of README.md's "Use a trained model" section run as written, on the demo data, with
a tiny random-weight model saved where the section says the instant schedule writes its model."""

import os
import re
import shlex
import subprocess
import sys

from predict_helpers import REPO, save_checkpoint, trained_run


def _section_commands():
    text = open(os.path.join(REPO, "README.md")).read()
    section = text.split("## Use a trained model", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(cmd) for cmd in block.replace("\\\n", " ").splitlines() if cmd.strip()]


def test_readme_use_a_trained_model_commands(demo_datasets, tmp_path):
    commands = _section_commands()
    assert [c[1] for c in commands] == [
        "tools/predict.py",
        "tools/evaluate_predictions.py",
        "tools/visualize_errors.py",
    ]
    weights = commands[0][commands[0].index("MODEL.WEIGHTS") + 1]
    _, model, _, _, _, _ = trained_run("instance")
    save_checkpoint(model, str(tmp_path / weights))
    for name in ("configs", "tools"):
        os.symlink(os.path.join(REPO, name), tmp_path / name)
    os.symlink(demo_datasets["root"], tmp_path / "datasets")
    env = dict(os.environ, PYTHONWARNINGS="ignore", MPLBACKEND="Agg")
    env.pop("DETECTRON2_DATASETS", None)  # the commands use the default ./datasets
    outputs = []
    for cmd in commands:
        assert cmd[0] == "python"
        proc = subprocess.run(
            [sys.executable] + cmd[1:], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, (
            f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
        outputs.append(proc.stdout)
    assert "predict: 6 done, 0 failed" in outputs[0]
    assert (
        "3 file(s) not in the ground truth" in outputs[0]
    )  # the glob also matches the demo's training images
    assert "boundary_errors mIoU" in outputs[1] and "boundary AP" in outputs[1]
    assert sorted(os.listdir(tmp_path / "output/predict/error_maps")) == [
        "1_errors.png",
        "3_errors.png",
        "5_errors.png",
        "error_pixels.csv",
    ]
    assert len(os.listdir(tmp_path / "output/predict/vis")) == 6
