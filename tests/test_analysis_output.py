"""The JSON writer used for metrics.json: non-finite numbers become null, the write is atomic."""

import json
import math

from cryovae.analysis.output import write_json


def test_write_json_turns_non_finite_floats_into_null_and_leaves_no_temp_file(tmp_path):
    path = write_json({"r": 0.5, "nan": math.nan, "nested": [math.inf, 1.0, {"x": -math.inf}]},
                      tmp_path / "metrics.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text  # json.dumps would write these otherwise
    assert json.loads(text) == {"r": 0.5, "nan": None, "nested": [None, 1.0, {"x": None}]}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
