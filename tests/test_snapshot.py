"""Store snapshots for training rounds: every table written and read back, no retracted labels, a manifest."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from test_reward_dataset import T0, build_preference_store

from storage import queue as queue_repo
from storage.records import Label
from storage.schema import LATEST_VERSION
from storage.snapshot import SNAPSHOT_TABLES, SnapshotError, read_snapshot, write_snapshot


def test_snapshot_round_trip_of_every_table(store, tmp_path):
    build_preference_store(store, n_contexts=4, votes={0: [("ann1", "A", 2), ("ann2", "B", 1)]}, gold={3: "A"})
    with store.transaction() as con:
        queue_repo.import_labels(con, [Label("late", "pair001", "ann2", "B", strength=3, left_side="B",
                                             created_at=queue_repo.utcnow())])
        queue_repo.undo_last(con, "ann2", queue_repo.QueuePolicy())  # retracts "late"
    manifest = write_snapshot(store, tmp_path / "snap")
    assert manifest["schema_version"] == LATEST_VERSION
    assert set(manifest["tables"]) == set(SNAPSHOT_TABLES)
    on_disk = json.loads((tmp_path / "snap" / "manifest.json").read_text())
    assert on_disk == manifest

    snap = read_snapshot(tmp_path / "snap")
    counts = snap.counts()
    assert counts["contexts"] == 4 and counts["generations"] == 8 and counts["pairs"] == 4
    assert counts["catalog_items"] == 30 and counts["gold"] == 1
    labels = snap.table("labels")
    assert "late" not in set(labels["label_id"])  # retracted
    assert len(labels) == 2 + 1 + 1 + 1  # pair0 has two votes, pairs 1..3 one each
    assert not labels.empty and labels["item_flags"].map(lambda v: isinstance(v, dict)).all()
    # JSON columns come back decoded; records are offered too.
    ctx = snap.context_records()["ctx000"]
    assert ctx.candidates[:2] == ["I000", "I001"] and ctx.as_of == T0
    gen = snap.generation_records()["g000A"]
    assert gen.items[0].item_id == "I000" and gen.is_valid
    assert snap.catalog_records()["I005"].price == 5.0
    assert bool(snap.table("pairs").set_index("pair_id").loc["pair003", "is_gold"])


def test_snapshot_keeps_no_password_hashes(store, tmp_path):
    from rlhf.auth import create_user

    create_user(store, "alice", "correct-horse-1", "annotator")
    write_snapshot(store, tmp_path / "snap")
    annotators = read_snapshot(tmp_path / "snap").table("annotators")
    assert "password_hash" not in annotators.columns
    assert "alice" in set(annotators["annotator_id"]) | set(annotators["display_name"])


def test_snapshot_refuses_damaged_or_incomplete_folders(store, tmp_path):
    build_preference_store(store, n_contexts=2)
    write_snapshot(store, tmp_path / "snap", tables=("labels", "pairs"))
    snap = read_snapshot(tmp_path / "snap")
    with pytest.raises(SnapshotError, match="no table 'contexts'"):
        snap.table("contexts")
    with pytest.raises(SnapshotError, match="already holds a snapshot"):
        write_snapshot(store, tmp_path / "snap")
    with pytest.raises(SnapshotError, match="unknown tables"):
        write_snapshot(store, tmp_path / "other", tables=("labels", "secrets"))
    # A manifest whose counts disagree with the files is refused.
    manifest = json.loads((tmp_path / "snap" / "manifest.json").read_text())
    manifest["tables"]["labels"]["rows"] += 1
    (tmp_path / "snap" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match="damaged"):
        read_snapshot(tmp_path / "snap")
    # An interrupted export (no manifest) is not a snapshot.
    (tmp_path / "half").mkdir()
    with pytest.raises(SnapshotError, match="not a complete snapshot"):
        read_snapshot(tmp_path / "half")


def test_snapshot_does_not_see_later_labels(store, tmp_path):
    build_preference_store(store, n_contexts=2)
    write_snapshot(store, tmp_path / "snap")
    with store.transaction() as con:
        queue_repo.import_labels(con, [Label("after", "pair000", "ann9", "B", strength=1, left_side="A",
                                             created_at=T0 + timedelta(days=1))])
    assert "after" not in set(read_snapshot(tmp_path / "snap").table("labels")["label_id"])
