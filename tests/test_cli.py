import json
import subprocess
import sys

import medseg_course as mc


def test_info_json(capsys, tf_setup):
    assert mc.cli.main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["threads"] == 2 and "numpy" in report["versions"]


def test_no_command_prints_help(capsys):
    assert mc.cli.main([]) == 2
    assert "usage: medseg-course" in capsys.readouterr().out


def test_console_script_installed():
    out = subprocess.run([sys.executable, "-m", "medseg_course.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "info" in out.stdout


def test_train_in_bfloat16_keeps_the_global_policy_and_records_it(tf_setup, tmp_path, capsys):
    """--precision bfloat16 builds the layers under mixed_bfloat16 (float32 head) without
    leaving that policy set in the caller's process, records it, and refuses to resume in
    another precision."""
    import json

    import keras

    out = tmp_path / "run"
    common = ["train", "--data", "phantom", "--num-images", "12", "--image-size", "32", "--depth", "2",
              "--base-filters", "4", "--batch-size", "4", "--out", str(out)]
    assert mc.cli.main([*common, "--epochs", "1", "--precision", "bfloat16"]) == 0
    assert keras.config.dtype_policy().name == "float32"
    assert json.loads((out / "config.json").read_text())["precision"] == "bfloat16"
    model = keras.models.load_model(out / "model.keras", compile=False)
    assert model.get_layer("enc1_conv1").compute_dtype == "bfloat16"
    assert model.get_layer("head").compute_dtype == "float32"
    capsys.readouterr()
    assert mc.cli.main([*common, "--epochs", "2", "--resume"]) != 0
    assert "precision" in capsys.readouterr().err
