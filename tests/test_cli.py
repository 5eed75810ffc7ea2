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
