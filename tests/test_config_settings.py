"""Settings come from the schema: every default and every key (the strategy enum: test_fairness)."""

from __future__ import annotations

import dataclasses

import pytest

from spatialfair import settings as st
from spatialfair.config import load_schema, validate_config

DATASETS = {"d": {"task": "flood", "images": "x/*.tif", "labels": "y/*.tif"}}


def test_every_field_default_is_the_schema_default():
    schema = load_schema()["properties"]
    defaults = st.Settings.from_config(None)
    for name, kind in st.SECTIONS.items():
        props = schema[name]["properties"]
        fields = [f.name for f in dataclasses.fields(kind)]
        assert fields == list(props), name  # same keys, schema order
        section = defaults.section(name)
        for key, spec in props.items():
            expected = spec["default"]
            if isinstance(expected, dict) and "properties" in spec:  # a block: its keys' defaults
                expected = {k: v["default"] for k, v in spec["properties"].items()} | expected
            assert section[key] == expected, f"{name}.{key}"
    assert defaults.seed == schema["seed"]["default"]
    assert defaults.results == schema["results"]["default"]


def test_from_config_reads_the_validated_values():
    cfg = validate_config(
        {
            "datasets": DATASETS,
            "seed": 7,
            "training": {"epochs": 3},
            "partitions": {"kmeans": [3, 5]},
        }
    )
    s = st.Settings.from_config(cfg)
    assert (s.seed, s.training.epochs, s.partitions.kmeans) == (7, 3, (3, 5))
    assert s.training.lr == cfg["training"]["lr"]
    assert s.section("partitions")["kmeans"] == [3, 5]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.training.epochs = 5  # type: ignore[misc]
    assert dataclasses.replace(s, seed=1).seed == 1


def test_unknown_key_in_unvalidated_config_is_an_error():
    with pytest.raises(TypeError):
        st.Settings.from_config({"training": {"epoch": 3}})


def test_section_defaults():
    assert st.section_defaults("split")["block_tiles"] == 2
    assert st.section_defaults("seed") == {"seed": 0}
    st.section_defaults("tiling")["size"] = 1  # a copy: the next call is unchanged
    assert st.section_defaults("tiling")["size"] == 64
