"""The replication of the topics hookstream creates: automatic (min(3, brokers)) by default,
min.insync.replicas 2 with three copies, both configurable, and a contradiction refused at load.

The cluster side (the broker count asked through the admin client) is in
tests/integration/test_cluster.py, on a real three-broker cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import KafkaSettings
from schemas.config_loader import load_config
from schemas.errors import ConfigError
from streams.kafka.admin import _with_insync, insync_replicas

FILE = """\
kafka:
  replication_factor: {factor}
  min_insync_replicas: {insync}
sources:
  - {{name: a, signature: {{scheme: none}}}}
"""


def test_the_default_factor_is_automatic() -> None:
    assert KafkaSettings().replication_factor is None
    assert KafkaSettings().min_insync_replicas is None


def test_null_in_the_file_means_automatic(tmp_path: Path) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(FILE.format(factor="null", insync="null"), encoding="utf-8")
    kafka = load_config(path, env={}).kafka
    assert (kafka.replication_factor, kafka.min_insync_replicas) == (None, None)


@pytest.mark.parametrize(
    ("factor", "expected"), [(1, None), (2, None), (3, 2), (5, 2)], ids=lambda v: str(v)
)
def test_insync_is_two_from_three_copies_on(factor: int, expected: int | None) -> None:
    assert insync_replicas(KafkaSettings(), factor) == expected


def test_an_explicit_insync_is_kept_and_capped_at_the_copies_there_are() -> None:
    settings = KafkaSettings(min_insync_replicas=3)
    assert insync_replicas(settings, 5) == 3
    # Automatic factor on a single broker: 3 would refuse every acks=all write.
    assert insync_replicas(settings, 1) == 1


def test_a_topic_s_own_insync_wins() -> None:
    assert _with_insync({"min.insync.replicas": "1"}, 2) == {"min.insync.replicas": "1"}
    assert _with_insync({"cleanup.policy": "compact"}, 2) == {
        "cleanup.policy": "compact",
        "min.insync.replicas": "2",
    }
    assert _with_insync({}, None) == {}


def test_more_insync_replicas_than_copies_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(FILE.format(factor=2, insync=3), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value).splitlines()[-1].strip() == (
        f"{path}:3: kafka.min_insync_replicas: 3 is more than kafka.replication_factor (2): "
        "every write would be refused; at most the replication factor"
    )
