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


def test_audit_settings_come_from_the_schema_and_the_dataset():
    schema = load_schema()["properties"]
    ds_props = schema["datasets"]["additionalProperties"]["properties"]
    defaults = st.AuditSettings.from_config()
    for key, spec in ds_props["audit"]["properties"].items():
        assert getattr(defaults, key) == spec["default"], key
    assert defaults.ignore_index == ds_props["ignore_index"]["default"]
    assert defaults.region_column == ds_props["region_column"]["default"]
    assert defaults.evaluation == st.Settings.from_config(None).evaluation
    assert defaults.seed == schema["seed"]["default"]
    cfg = validate_config(
        {
            "seed": 5,
            "partitions": {"kmeans": [3]},
            "datasets": {
                "a": {
                    "task": "flood",
                    "predictions": "p/*.tif",
                    "labels": "y/*.tif",
                    "ignore_index": 0,
                    "audit": {"n_boot": 9, "block_size": 500},
                }
            },
        }
    )
    s = st.AuditSettings.from_config(cfg, "a")
    assert (s.n_boot, s.block_size, s.ignore_index, s.seed) == (9, 500, 0, 5)
    assert s.partitions.kmeans == (3,) and s.confidence == defaults.confidence


def test_audit_settings_override_partially_and_check_values():
    from spatialfair.errors import InputError

    s = st.AuditSettings.from_config().override(
        n_boot=99, threshold=None, evaluation={"alpha": 0.1}, partitions={"kmeans": [2, 3]}
    )
    assert s.n_boot == 99 and s.threshold is None
    assert s.evaluation.alpha == 0.1 and s.evaluation.n_simulations > 0
    assert s.partitions.kmeans == (2, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n_boot = 1
    for bad in ({"align": "bilinear"}, {"block_size": -1}, {"confidence": 1.5}, {"n_boot": -1}):
        with pytest.raises(InputError):
            s.override(**bad)
    with pytest.raises(InputError, match="unknown setting"):
        s.override(evaluation={"alpah": 0.1})
    with pytest.raises(InputError, match="unknown setting"):
        s.override(bands=3)
