"""Reading back what a tracker stored, each with its own library: TensorBoard's event files
(EventAccumulator), MLflow's tracking store (its client), a W&B offline run (its records)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

# A W&B run file: ":W&B", a 2-byte magic and a version byte, then records in LevelDB's log
# format (32 KiB blocks; each chunk a 7-byte header: checksum, length, type).
WANDB_HEADER = 7
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in the event files of ``folder``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def tensorboard_texts(folder: Path) -> dict[str, str]:
    """The text summaries of ``folder`` (tag -> the last text written)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    found = {}
    for tag in events.Tags()["tensors"]:
        tensor = events.Tensors(tag)[-1].tensor_proto
        found[tag.removesuffix("/text_summary")] = tensor.string_val[0].decode()
    return found


def mlflow_runs(uri: str, experiment: str, **tags: str) -> list:
    """The runs of ``experiment`` in the store at ``uri`` with these tags."""
    import os

    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    where = " and ".join(f"tags.{name} = '{value}'" for name, value in tags.items())
    return client.search_runs([found.experiment_id], filter_string=where)


def mlflow_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    return [
        (m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)
    ]


def wandb_records(run_file: Path) -> list:
    """The records of a W&B run file (``run-<id>.wandb`` of an offline run), as W&B's own
    protocol buffers (``wandb_internal_pb2.Record``)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", f"{run_file} is not a W&B run file"
    records, pending, offset = [], b"", WANDB_HEADER
    while offset + 7 <= len(data):
        left = BLOCK - offset % BLOCK
        if left < 7:  # the rest of a block too short for a header is padding
            offset += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        if offset + 7 + length > len(data):
            break  # the record W&B's own process is still writing: read what is complete
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            continue
        assert zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF == checksum, "damaged record"
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_offline_run(root: Path) -> tuple[object, list[dict]]:
    """(the run record, history rows) of the one offline run under ``root``/wandb."""
    from tests.conftest import wait_for

    def found() -> list[Path]:
        return sorted((root / "wandb").glob("offline-run-*/run-*.wandb"))

    def kinds() -> list[str]:
        runs = found()
        return [r.WhichOneof("record_type") for r in wandb_records(runs[0])] if runs else []

    # W&B's own process writes the file, after wandb.finish() returned; its last record
    # ("exit") closes the run. Until then the file may be missing or end in a partial record.
    wait_for(lambda: "exit" in kinds(), timeout=120, message=f"{found()}: {kinds()}")
    runs = found()
    assert len(runs) == 1, runs
    records = wandb_records(runs[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    history = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            history.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return run, history
