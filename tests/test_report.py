"""The main job's report: known state sizes come out right."""

import pandas as pd

from ess_widgets.app.report import ess_report, main


def test_report_recovers_known_state_sizes():
    table = ess_report(L=32, tol=1e-6, relative=True).set_index("mixer")
    assert table.loc["LTI, state 3", "tolerance_ess_peak"] == 3
    assert table.loc["convolution, kernel 5", "tolerance_ess_peak"] == 4
    assert table.loc["linear attention, d_k 4", "tolerance_ess_peak"] == 4
    assert table.loc["selective SSM, d_state 8", "tolerance_ess_peak"] == 8
    # softmax attention is full rank: its peak reaches the bound min(i, L - i)
    assert table.loc["softmax attention", "tolerance_ess_peak"] == 16
    assert (table["tolerance_ess_peak"] <= table["bound_peak"]).all()
    assert (table["entropy_ess_peak"] <= table["tolerance_ess_peak"] + 1e-9).all()


def test_main_writes_csv(tmp_path, capsys):
    path = main(out_dir=str(tmp_path))
    assert path.exists()
    table = pd.read_csv(path)
    assert len(table) == 8
    assert "written:" in capsys.readouterr().out
