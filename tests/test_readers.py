"""load_trace / list_runs / detect_format on generated files of every format and the real logs."""

from __future__ import annotations

import json
import math
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import trace_files as tf

from lbw_sim.errors import TraceError
from lbw_sim.traces import detect_format, list_runs, load_trace
from lbw_sim.traces import docs as docs_mod


def at(df: pd.DataFrame, step: int, col: str) -> float:
    return float(df.loc[df.step == step, col].iloc[0])


# ------------------------------------------------------------------ HF Trainer


def test_trainer_state_eval_rows_go_to_val_loss(tmp_path):
    df = load_trace(tf.trainer_state(tmp_path / "trainer_state.json"))
    assert df.attrs["format"] == "hf_trainer_state"
    assert df.attrs["source"] == "trainer_state.json"
    assert list(df.step) == list(range(10, 101, 10))
    assert df.loss.max() < 3.0  # neither eval_loss (59, 109) nor train_loss (123) leaked
    assert at(df, 50, "val_loss") == 59.0 and at(df, 100, "val_loss") == 109.0
    assert df.val_loss.notna().sum() == 2
    assert at(df, 40, "lr") == pytest.approx(4e-3)
    assert math.isnan(at(df, 30, "grad_norm")) and at(df, 20, "grad_norm") == 21.0
    assert "grad_norm" not in df.attrs["missing"] and "wall_time" in df.attrs["missing"]


def test_trainer_state_from_checkpoint_folders(tmp_path):
    for n in (50, 100):
        (tmp_path / f"checkpoint-{n}").mkdir()
        tf.trainer_state(tmp_path / f"checkpoint-{n}" / "trainer_state.json", steps=n)
    assert detect_format(tmp_path) == "hf_trainer_state"
    assert load_trace(tmp_path).step.max() == 100  # the latest checkpoint
    assert load_trace(tmp_path / "checkpoint-50").step.max() == 50


def test_hf_console_runs_nan_and_eval(tmp_path):
    path = tmp_path / "train.out"
    path.write_text(tf.HF_CONSOLE)
    assert detect_format(path) == "hf_console"
    assert list_runs(path) == ["run0", "run1"]
    df = load_trace(path)
    assert list(df.step) == [0, 1, 2, 3]
    assert list(df.loss) == [2.5, 2.4, 2.3, 2.2]  # '2.2' as a string still a number
    assert math.isnan(df.grad_norm[1]) and math.isinf(df.grad_norm[2])
    assert at(df, 2, "val_loss") == 2.9  # the eval dict follows the step it evaluated
    assert df.lr[3] == pytest.approx(8e-5)
    second = load_trace(path, run="run1")
    assert list(second.loss) == [5.0, 4.0] and second.attrs["run"] == "run1"
    with pytest.raises(TraceError, match="no run 'run7'"):
        load_trace(path, run="run7")


# ------------------------------------------------------------------ TensorBoard


def write_events(logdir: Path, tags: dict[str, list[float]], start: int = 0) -> None:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(logdir))
    n = len(next(iter(tags.values())))
    for i in range(n):
        values = [Summary.Value(tag=t, simple_value=v[i]) for t, v in tags.items()]
        writer.add_event(Event(step=start + i, wall_time=1000.0 + 2 * i,
                               summary=Summary(value=values)))
    writer.close()


def test_tensorboard_dir_runs_and_mapping(tmp_path):
    write_events(tmp_path / "a", {"train/loss": [3.0, 2.0, 1.0], "train/grad_norm": [1, 9, 1],
                                  "train/learning_rate": [1e-3] * 3})
    write_events(tmp_path / "b", {"my/loss": [5.0, 4.0], "eval/loss": [6.0, 5.5]})
    assert detect_format(tmp_path) == "tensorboard"
    assert list_runs(tmp_path) == ["a", "b"]
    df = load_trace(tmp_path)
    assert list(df.loss) == [3.0, 2.0, 1.0] and list(df.grad_norm) == [1, 9, 1]
    assert list(df.wall_time) == [0.0, 2.0, 4.0] and np.allclose(df.lr, 1e-3)  # float32
    b = load_trace(tmp_path, run="b", loss="my/loss")
    assert list(b.loss) == [5.0, 4.0] and list(b.val_loss) == [6.0, 5.5]
    event_file = next((tmp_path / "a").iterdir())
    assert detect_format(event_file) == "tensorboard"
    assert len(load_trace(event_file)) == 3
    assert "loss" not in load_trace(tmp_path, run="b")  # my/loss is no synonym


# ------------------------------------------------------------------ Lightning, W&B


def test_lightning_sparse_rows_align_on_step(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(tf.LIGHTNING)
    assert detect_format(path) == "lightning_csv"
    df = load_trace(path)
    # lr-monitor rows logged no loss: each joins the train row before it (the first one,
    # before any training row, joins the first)
    assert list(df.step) == [9, 19, 29, 39]
    assert at(df, 19, "loss") == 4.5 and at(df, 19, "val_loss") == 4.8  # not 4.75 (epoch)
    assert at(df, 9, "lr") == 0.001 and at(df, 19, "lr") == 0.0005
    assert math.isnan(at(df, 39, "loss")) and at(df, 39, "val_loss") == 4.1  # explicit nan
    assert df.attrs["events"] == []


def test_wandb_chart_csv_runs(tmp_path):
    path = tmp_path / "wandb_export_2024.csv"
    path.write_text(tf.WANDB_CSV)
    assert detect_format(path) == "wandb_csv"
    assert list_runs(path) == ["runA", "runB"]
    a = load_trace(path)
    assert list(a.step) == [0, 2, 3] and list(a.loss) == [1.0, 0.9, 0.8]
    b = load_trace(path, run="runB", loss="train/loss")
    assert list(b.step) == [0, 2] and list(b.loss) == [2.0, 1.9]  # blank cells dropped


def test_wandb_history_jsonl(tmp_path):
    path = tf.jsonl(tmp_path / "history.jsonl", tf.wandb_history_rows())
    assert detect_format(path) == "wandb_jsonl"
    df = load_trace(path)
    assert list(df.step) == list(range(11))
    assert at(df, 5, "loss") == 0.25 and math.isnan(at(df, 3, "grad_norm"))
    assert at(df, 4, "wall_time") == 6.0 and at(df, 10, "val_loss") == 0.7


def test_llamafactory_jsonl_drops_all_null_row(tmp_path):
    path = tf.jsonl(tmp_path / "trainer_log.jsonl", tf.llamafactory_rows(20))
    assert detect_format(path) == "llamafactory_jsonl"
    assert detect_format(tmp_path) == "llamafactory_jsonl"
    df = load_trace(path)
    assert list(df.step) == list(range(5, 100, 5)) and df.lr.eq(5e-5).all()
    assert "val_loss" in df.attrs["missing"] and "val_loss" not in df.columns


# ------------------------------------------------------------------ plain tables


def test_plain_csv_synonyms_strings_and_resume(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("iter,train/loss,gradient_norm,learning_rate,note\n"
                    "0,2.0,1.0,1e-3,a\n10,\"1.9\",1.1,1e-3,b\n20,1.8,oops,1e-3,c\n"
                    "30,1.7,1.3,1e-3,d\n20,1.6,1.2,1e-3,resumed\n30,1.5,inf,1e-3,e\n"
                    "40,1.4,1.4,,\n50,1.3")
    df = load_trace(path)
    assert df.attrs["format"] == "csv"
    assert list(df.step) == [0, 10, 20, 30, 40]
    assert list(df.loss) == [2.0, 1.9, 1.6, 1.5, 1.4]  # the later record wins; torn row skipped
    assert math.isnan(at(df, 40, "lr")) and math.isinf(at(df, 30, "grad_norm"))
    assert df.attrs["events"] == [{"step": 20, "kind": "resume", "previous_step": 30}]


def test_mapping_overrides_and_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("k,my_loss,loss\n1,5.0,9.0\n2,4.0,9.0\n")
    df = load_trace(path, step="k", loss="my_loss")
    assert list(df.step) == [1, 2] and list(df.loss) == [5.0, 4.0]
    with pytest.raises(TraceError, match="no such column"):
        load_trace(path, loss="nope")
    with pytest.raises(TraceError, match="not a canonical column"):
        load_trace(path, lossy="my_loss")
    (tmp_path / "u.csv").write_text("a,b\n1,2\n")
    with pytest.raises(TraceError, match="no loss/grad_norm/lr/val_loss column"):
        load_trace(tmp_path / "u.csv")


def test_parquet_and_no_step_column(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"global_step": [5, 10, 15], "loss": ["1.0", "0.5", "x"],
                  "grad_norm": [1.0, 2.0, 3.0]}).to_parquet(path)
    df = load_trace(path)
    assert df.attrs["format"] == "parquet" and list(df.step) == [5, 10, 15]
    assert list(df.loss[:2]) == [1.0, 0.5] and math.isnan(df.loss[2])
    (tmp_path / "n.jsonl").write_text('{"loss": 3}\n{"loss": 2}\n{"loss": 1}\n')
    assert list(load_trace(tmp_path / "n.jsonl").step) == [0, 1, 2]


# ------------------------------------------------------------------ text logs


def test_nanogpt_resume_eval_and_traceback(tmp_path):
    path = tmp_path / "output.log"
    path.write_text(tf.NANOGPT)
    assert detect_format(path) == "nanogpt"
    df = load_trace(path)
    assert list(df.step) == [0, 1, 2, 3, 4, 5, 6]
    assert list(df.loss[3:5]) == [9.5, 9.4] and math.isnan(df.loss[5])
    assert at(df, 0, "val_loss") == 10.9897 and at(df, 4, "val_loss") == 9.45
    assert at(df, 0, "loss") == 10.9766  # the eval line's "train loss" is not the loss
    assert df.attrs["events"] == [{"step": 3, "kind": "resume", "previous_step": 5}]


def test_llmc_style_and_build_nanogpt(tmp_path):
    llmc = tmp_path / "llmc.txt"
    llmc.write_text("step    1/74 | train loss 11.0107 | norm 15.4 | lr 6.00e-06 | (1ms)\n"
                    "step    2/74 | train loss 10.5 | norm 9.1 | lr 1.2e-05 | (1ms)\n")
    df = load_trace(llmc)
    assert list(df.grad_norm) == [15.4, 9.1] and df.lr[1] == pytest.approx(1.2e-5)
    log = tmp_path / "log.txt"
    log.write_text(tf.BUILD_NANOGPT)
    assert detect_format(log) == "build_nanogpt"
    df = load_trace(log)
    assert list(df.loss) == [10.955, 10.5, 10.1] and at(df, 0, "val_loss") == 10.95


def test_user_regex(tmp_path):
    path = tmp_path / "custom.log"
    path.write_text("ep 1 | it=10 L=2.5 g=1.0\nnoise\nit=20 L=2.25 g=nan\n")
    rx = r"it=(?P<step>\d+) L=(?P<loss>\S+) g=(?P<grad_norm>\S+)"
    df = load_trace(path, pattern=rx)
    assert df.attrs["format"] == "regex" and list(df.step) == [10, 20]
    assert df.loss[1] == 2.25 and math.isnan(df.grad_norm[1])
    with pytest.raises(TraceError, match="not a valid regex"):
        load_trace(path, pattern="(?P<loss>")
    with pytest.raises(TraceError, match="named group"):
        load_trace(path, pattern=r"L=(\S+)")


# ------------------------------------------------------------------ hostile input


@pytest.mark.parametrize("name,content,match", [
    ("empty.csv", b"", "empty"),
    ("blob.bin", bytes(range(256)) * 40, "binary"),
    ("utf16.log", "iter 1: loss 2.0\n".encode("utf-16"), "binary"),
    ("latin.log", "iter 1: loss 2.0 caf\xe9\n".encode("latin-1"), "UTF-8"),
    ("trainer_state.json", b'{"log_history": [{"loss": 1.0, "st', "truncated"),
    ("deep.json", b"[" * 100000 + b"]" * 100000, "nested|JSON"),
    ("blank.log", b"\n\n   \n", "blank"),
    ("prose.txt", b"hello world\nnothing to see\n", "no known log lines"),
    ("events.out.tfevents.1.host", b"\x00garbage" * 100, "TensorBoard"),
    ("x.parquet", b"PAR1 not really", "Parquet"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_hostile_files_give_one_line_trace_errors(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TraceError, match=match) as info:
        load_trace(path)
    assert "\n" not in str(info.value) and name in str(info.value)


def test_unusable_directory_and_missing_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(TraceError, match="no trace found"):
        load_trace(tmp_path)
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(TraceError, match="unknown format"):
        load_trace(tmp_path / "notes.txt", format="excel")


def test_huge_lines_and_json_size_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.log"
    with open(path, "w") as f:
        f.write("iter 0: loss 2.0\n" + "x" * (3 << 20) + "\niter 1: loss 1.0\n")
    assert list(load_trace(path).loss) == [2.0, 1.0]
    big = tf.trainer_state(tmp_path / "trainer_state.json")
    monkeypatch.setattr(docs_mod, "MAX_JSON_DOC_BYTES", 100)
    with pytest.raises(TraceError, match="over the 0 MiB limit"):
        load_trace(big)


def test_bounded_memory_smoke(tmp_path):
    """200k rows: no per-row Python objects (tracemalloc sees numpy, not arrow)."""
    n = 200_000
    frame = pd.DataFrame({"step": np.arange(n), "loss": np.linspace(3, 1, n),
                          "grad_norm": np.ones(n), "lr": np.full(n, 1e-4)})
    frame.to_csv(tmp_path / "big.csv", index=False)
    with open(tmp_path / "big.jsonl", "w") as f:
        f.write(frame.to_json(orient="records", lines=True))
    for name in ("big.csv", "big.jsonl"):
        tracemalloc.start()
        df = load_trace(tmp_path / name)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(df) == n and df.step.iloc[-1] == n - 1
        assert df.loss.iloc[-1] == pytest.approx(1.0)
        assert peak < 64 * 2**20, f"{name}: {peak / 2**20:.0f} MiB traced"


# ------------------------------------------------------------------ the real logs


def real(prefix: str) -> Path:
    if not tf.SHARED.is_dir():
        pytest.skip("../shared/traces is absent")
    found = sorted(tf.SHARED.glob(prefix + "*"))
    if not found:
        pytest.skip(f"no {prefix}* in {tf.SHARED}")
    return found[0]


def running_ratio(g: pd.Series, window: int) -> pd.Series:
    return g / g.rolling(window, min_periods=5).median().shift(1)


def test_real_hf_sft_grad_norm_bumps():
    df = load_trace(real("hf_syGOAT"))
    assert df.attrs["format"] == "hf_trainer_state"
    assert len(df) == 866 and df.step.min() == 10 and df.step.max() == 8660
    assert (df.step.diff().dropna() == 10).all()
    assert {"loss", "grad_norm", "lr"} <= set(df.columns) and "val_loss" not in df
    bumps = df.step[running_ratio(df.grad_norm, 50) > 3].tolist()
    assert bumps == [3220, 4530, 5510, 6110, 6680]
    assert df.loss.max() < 3.0  # the summary row's train_loss did not leak in


def test_real_hf_grpo_spikes_and_zeros():
    df = load_trace(real("hf_ijinyu1113"))
    assert len(df) == 2000 and list(df.step[[0, 1999]]) == [1, 2000]
    assert int((df.grad_norm == 0).sum()) == 272
    assert df.loss.abs().max() < 0.1
    ratio = running_ratio(df.grad_norm.set_axis(df.step), 20).replace(np.inf, np.nan)
    assert ratio.idxmax() == 453 and 25 < ratio.max() < 30


def test_real_lightning_metrics():
    df = load_trace(real("lightning_0Xero7"))
    assert df.attrs["format"] == "lightning_csv"
    assert df.loss.notna().sum() == 2814 and (df.step[df.loss.notna()] % 50 == 49).all()
    assert df.loss.dropna().iloc[0] == pytest.approx(7.6286, abs=1e-3)
    assert 3.4 < df.loss.dropna().iloc[-1] < 3.8
    # eval rows (steps 14073, …) logged no train loss: they join the train row before them,
    # so no step reads as a NaN loss
    assert len(df) == 2814 and df.loss.notna().all()
    val = df[df.val_loss.notna()]
    assert len(val) == 10 and val.step.iloc[0] == 14049
    assert {"lr", "grad_norm"} <= set(df.attrs["missing"])


def test_real_llamafactory_jsonl():
    df = load_trace(real("jsonl_suzushi"))
    assert df.attrs["format"] == "llamafactory_jsonl"
    assert len(df) == 1742 and df.step.min() == 5 and df.step.max() == 8710
    assert df.loss.notna().all() and df.lr.notna().all()  # the all-null last row is gone
    assert "grad_norm" in df.attrs["missing"]


def test_real_nanogpt_output_log():
    df = load_trace(real("txt_druidowm"))
    assert df.attrs["format"] == "nanogpt" and df.attrs["events"] == []
    assert len(df) == 2547 and df.step.min() == 0 and df.step.max() == 2546
    assert df.val_loss.notna().sum() == 13
    assert at(df, 2400, "val_loss") == pytest.approx(3.6716)
    assert at(df, 0, "loss") == pytest.approx(10.9766)


def test_real_wandb_chart_export():
    path = real("wandb_EvergreenTree")
    assert list_runs(path) == ["oxford_flowers102-colu-conv2d", "oxford_flowers102-relu-conv2d"]
    a = load_trace(path)
    b = load_trace(path, run="oxford_flowers102-relu-conv2d")
    assert len(a) == 1170 and a.step.max() > len(a)  # sampling gaps are kept
    assert 0 < len(b) < len(a) and b.step.max() < a.step.max()
    assert a.loss.iloc[0] == pytest.approx(0.18484549)
    assert b.loss.iloc[0] == pytest.approx(0.2554025)


def test_real_files_detect_without_their_names(tmp_path):
    if not tf.SHARED.is_dir():
        pytest.skip("../shared/traces is absent")
    expected = {"hf_": "hf_trainer_state", "lightning_": "lightning_csv",
                "jsonl_": "llamafactory_jsonl", "txt_": "nanogpt", "wandb_": "wandb_csv"}
    for src in tf.SHARED.iterdir():
        fmt = next((v for k, v in expected.items() if src.name.startswith(k)), None)
        if fmt:
            anon = tmp_path / "upload"
            anon.write_bytes(src.read_bytes())
            assert detect_format(anon) == fmt, src.name
            os.remove(anon)
    assert json  # keep the import honest for readers of this file
