"""exporter/workerfiles.py merges the WORKERS>1 metric files as prometheus_client's MultiProcessCollector
does: on files of every type and gauge mode, written with prometheus_client's own MmapedDict, both expositions
parse to the same families and samples, as the files grow, change, go and are replaced."""
from __future__ import annotations

import os

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics.exposition import generate_latest as reference_om
from prometheus_client.exposition import generate_latest as reference_text
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.workerfiles import WorkerFiles
from tests.exporter.test_exposition import families

BOUNDS = ("0.1", "1.0", "2.5", "+Inf")


class Worker:
    """The files one worker process would write (pid in the name), through prometheus_client's MmapedDict."""

    def __init__(self, path: str, pid: int):
        self.path, self.pid, self.files = path, pid, {}

    def _dict(self, prefix: str) -> MmapedDict:
        d = self.files.get(prefix)
        if d is None:
            d = self.files[prefix] = MmapedDict(os.path.join(self.path, f"{prefix}_{self.pid}.db"))
        return d

    def write(self, prefix, metric, sample, labels: dict, value: float, ts: float = 0.0, doc="help text"):
        key = mmap_key(metric, sample, list(labels), list(labels.values()), doc)
        self._dict(prefix).write_value(key, value, ts)

    def counter(self, name, labels, value):
        self.write("counter", name, name + "_total", labels, value)

    def histogram(self, name, labels, counts, total):
        for le, n in zip(BOUNDS, counts):
            self.write("histogram", name, name + "_bucket", {**labels, "le": le}, n)
        self.write("histogram", name, name + "_sum", labels, total)

    def gauge(self, mode, name, labels, value, ts=0.0):
        self.write(f"gauge_{mode}", name, name, labels, value, ts)

    def close(self):
        for d in self.files.values():
            d.close()
        self.files = {}


def drive(gen):
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def ours(wf: WorkerFiles, om: bool) -> bytes:
    out: list[str] = []
    values, present = drive(wf.read())
    for _ in wf.render(values, present, om, out.append):
        pass
    return ("".join(out) + ("# EOF\n" if om else "")).encode()


class Reference:
    def __init__(self, path):
        self.path = path

    def collect(self):
        return MultiProcessCollector(None, path=self.path).collect()


def assert_same(wf: WorkerFiles, path: str) -> list:
    got = None
    for om, ref, parse in ((True, reference_om, parse_om), (False, reference_text, parse_text)):
        got = families(parse, ours(wf, om))
        assert got == families(parse, ref(Reference(path))), "openmetrics" if om else "text"
    return got


def fill(a: Worker, b: Worker) -> None:
    for w, k in ((a, 1), (b, 2)):
        w.counter("t_requests", {"route": "/v1/text/summarize", "status": "200"}, 3 * k)
        w.counter("t_requests", {"route": "/v1/text/qa", "status": "500"}, 0.1 * k)   # float sums, file order
        w.counter("t_plain", {}, k)
        w.histogram("t_duration_seconds", {"op": "summarize"}, (k, 0, 2, 1), 4.25 * k)
        w.gauge("livesum", "t_in_flight", {}, k)
        w.gauge("livemax", "t_limit", {"kind": "cpu"}, 2 * k)
        w.gauge("livemin", "t_up", {}, k - 1)
        w.gauge("livemostrecent", "t_threshold", {"kpi": "p95"}, 10 * k, ts=1000.0 + (3 - k))  # a is newer
        w.gauge("livemostrecent", "t_never_set", {}, 5)                                         # ts 0: absent
        w.gauge("liveall", "t_per_worker", {"x": "y"}, 7 * k)
        w.gauge("all", "t_per_worker_kept", {}, k)
        w.gauge("sum", "t_sum_kept", {}, k)
        w.write("summary", "t_size_bytes", "t_size_bytes_count", {}, k)
        w.write("summary", "t_size_bytes", "t_size_bytes_sum", {}, 12.5 * k)


@pytest.fixture
def workers(tmp_path):
    a, b = Worker(str(tmp_path), 101), Worker(str(tmp_path), 202)
    yield a, b
    a.close()
    b.close()


def test_same_meaning_as_multiprocess_collector_on_every_type_and_mode(workers, tmp_path):
    a, b = workers
    fill(a, b)
    got = assert_same(WorkerFiles(str(tmp_path)), str(tmp_path))
    by_name = {f[0]: f for f in got}
    assert ("t_requests_total", (("route", "/v1/text/summarize"), ("status", "200")), 9.0, None, None) \
        in by_name["t_requests"][4]
    assert ("t_duration_seconds_count", (("op", "summarize"),), 9.0, None, None) in by_name["t_duration_seconds"][4]
    assert [s[2] for s in by_name["t_threshold"][4]] == [10.0]
    assert by_name["t_never_set"][4] == []
    assert len(by_name["t_per_worker"][4]) == 2  # one per pid


def test_growing_changing_and_vanishing_files_stay_exact(workers, tmp_path):
    a, b = workers
    fill(a, b)
    wf = WorkerFiles(str(tmp_path))
    assert_same(wf, str(tmp_path))
    # values change, new label sets and a new family are appended, past a page and past PARSE_STEP entries
    a.counter("t_requests", {"route": "/v1/text/summarize", "status": "200"}, 40)
    b.histogram("t_duration_seconds", {"op": "qa"}, (0, 1, 0, 0), 0.5)
    for i in range(300):
        a.counter("t_many", {"i": str(i), "pad": "x" * 40}, i)
    b.gauge("livemostrecent", "t_threshold", {"kpi": "p95"}, 99, ts=5000.0)
    got = assert_same(wf, str(tmp_path))
    assert any(f[0] == "t_many" and len(f[4]) == 300 for f in got)
    assert os.path.getsize(os.path.join(str(tmp_path), f"counter_{a.pid}.db")) > 4096
    # a dead worker's live gauge files go: its live series, and families only it held, go with them
    b.close()
    for f in os.listdir(str(tmp_path)):
        if f.startswith("gauge_live") and f.endswith(f"_{b.pid}.db"):
            os.remove(os.path.join(str(tmp_path), f))
    got = assert_same(wf, str(tmp_path))
    assert len({f[0]: f for f in got}["t_per_worker"][4]) == 1
    # a file replaced by a new one (another inode, less used) is decoded afresh
    a.close()
    os.remove(os.path.join(str(tmp_path), f"counter_{a.pid}.db"))
    c = Worker(str(tmp_path), a.pid)
    c.counter("t_other", {"k": "v"}, 1)
    try:
        got = assert_same(wf, str(tmp_path))
    finally:
        c.close()
    assert "t_many" not in {f[0] for f in got}


def test_reading_gives_the_loop_back_between_files_and_while_decoding(workers, tmp_path):
    a, b = workers
    fill(a, b)
    for i in range(120):
        a.counter("t_many", {"i": str(i)}, i)
    steps = 0
    gen = WorkerFiles(str(tmp_path)).read()
    try:
        while True:
            assert next(gen) == 0
            steps += 1
    except StopIteration:
        pass
    files = len(os.listdir(str(tmp_path)))
    assert steps >= files + 2  # one per file, and more within the big file's first decoding


def test_samples_of_named_families_are_multiprocess_collectors(workers, tmp_path):
    a, b = workers
    fill(a, b)
    names = ["t_requests", "t_duration_seconds", "t_per_worker", "t_threshold", "t_absent"]

    def key(s):
        return s.name, tuple(sorted(s.labels.items())), s.value

    wf = WorkerFiles(str(tmp_path))
    for step in range(2):
        ref = [s for fam in MultiProcessCollector(None, path=str(tmp_path)).collect() if fam.name in names
               for s in fam.samples]
        got = wf.samples(names)
        assert sorted(map(key, got)) == sorted(map(key, ref)) and len(ref) > 10
        a.counter("t_requests", {"route": "/v1/text/summarize", "status": "200"}, 50)  # then changed values
