"""The bad-input corpus (tests/bad_inputs/, written by its make_corpus.py): every case is refused
with exit 2 and one line on stderr naming the file or option, no traceback, no hang, and no
file changed or left behind. The CLI runs in-process (``sim.cli.main``) for speed; a few cases
that need a real process (a file size limit, a memory limit) run as subprocesses."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sim.cli import main
from sim.errors import SimError

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "bad_inputs"
REPO = HERE.parent
KINDS = ("hw", "workload", "onnx", "cli", "api")
TIMEOUT_S = 10


class _HangError(Exception):
    pass


def _alarm(_sig: int, _frame: Any) -> None:
    raise _HangError()


def _digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links not followed) -> sha256 of its bytes ('fifo' etc. for others)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p)] = "link:" + os.readlink(p)
        elif p.is_fifo():
            out[str(p)] = "fifo"
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p)] = "dir"
    return out


def _good_onnx(path: Path) -> None:
    from onnx import TensorProto, helper

    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 4]) for n in ("x", "y")]
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", vi[:1], vi[1:])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(m.SerializeToString())


def _sandbox(tmp: Path) -> dict[str, str]:
    """Good inputs, a FIFO, a directory ... that the cases' placeholders name."""
    (tmp / "w.yaml").write_text((CORPUS / "GOOD_WORKLOAD.yaml.txt").read_text())
    (tmp / "hw.yaml").write_text((CORPUS / "GOOD_HW.yaml.txt").read_text())
    (tmp / "rep.yaml").write_text((CORPUS / "GOOD_WORKLOAD.yaml.txt").read_text().replace(
        "features: d}", "features: d, repeat: 3}"))
    shutil.copy(REPO / "workloads" / "mlp-mnist.yaml", tmp / "mlp.yaml")
    shutil.copy(CORPUS / "hw" / "capacity_zero.yaml", tmp / "badhw.yaml")
    _good_onnx(tmp / "m.onnx")
    (tmp / "notes.txt").write_text("notes\n")
    (tmp / "dir").mkdir()
    (tmp / "dir.yaml").mkdir()
    os.mkfifo(tmp / "fifo.yaml")
    os.mkfifo(tmp / "fifo.onnx")
    (tmp / "link.json").symlink_to(tmp / "w.yaml")
    return {"tmp": str(tmp), "workload": str(tmp / "w.yaml"), "hw": str(tmp / "hw.yaml"),
            "repeated": str(tmp / "rep.yaml"), "mlp": str(tmp / "mlp.yaml"),
            "badhw": str(tmp / "badhw.yaml"), "onnx": str(tmp / "m.onnx"), "dir": str(tmp / "dir"),
            "yamldir": str(tmp / "dir.yaml"), "fifo": str(tmp / "fifo.yaml"),
            "fifoonnx": str(tmp / "fifo.onnx"), "link": str(tmp / "link.json"), "repo": str(REPO)}


def _cli_case(path: Path, names: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(argv, environment overrides) of a ``cli/*.args`` case."""
    env: dict[str, str] = {}
    argv: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("# env:"):
            k, v = line[len("# env:"):].strip().split("=", 1)
            env[k] = v
        elif line.strip():
            argv = shlex.split(line.format(**names))
    return argv, env


def _argv(kind: str, path: Path, names: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    if kind == "hw":
        return ["run", names["workload"], "--hw", str(path)], {}
    if kind in ("workload", "onnx"):
        return ["run", str(path), "--hw", names["hw"]], {}
    return _cli_case(path, names)


def _run_cli(argv: list[str], env: dict[str, str]) -> tuple[Any, str]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc: Any = main(argv)
    except _HangError:
        rc = "hang"
    except BaseException as exc:  # noqa: BLE001 - any escape is a failure of the promise
        rc = f"raised {type(exc).__name__}: {exc}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc, err.getvalue()


def _run_api(code: str, names: dict[str, str]) -> tuple[Any, str]:
    import sim
    from sim.frontends.expr import evaluate
    from sim.frontends.yaml_loader import load_yaml_text
    from sim.io import atomic_write

    ns = {"sim": sim, "evaluate": evaluate, "load_yaml_text": load_yaml_text, "atomic_write": atomic_write,
          "WORKLOAD": names["workload"], "TMP": names["tmp"], "FIFO": names["fifo"]}
    try:
        exec(compile(code, "<api case>", "exec"), ns)  # noqa: S102 - the corpus's own test code
    except _HangError:
        return "hang", ""
    except SimError as err:
        return 2, f"sim: error: {err}\n"
    except BaseException as exc:  # noqa: BLE001
        return f"raised {type(exc).__name__}: {exc}", ""
    return 0, ""


def _problem(rc: Any, err: str) -> str | None:
    lines = err.strip().splitlines()
    if rc != 2:
        return f"exit {rc}"
    if "Traceback" in err:
        return "traceback"
    if len(lines) != 1:
        return f"{len(lines)} lines on stderr"
    if not lines[0].startswith("sim"):
        return f"unexpected message {lines[0][:80]!r}"
    return None


def corpus_files() -> list[tuple[str, Path]]:
    return [(k, p) for k in KINDS for p in sorted((CORPUS / k).iterdir())]


def test_the_good_inputs_the_cases_break_run(tmp_path):
    """The cases are mutations of good inputs: those run (exit 0), so a case fails for its flaw."""
    names = _sandbox(tmp_path)
    for argv in (["run", names["workload"], "--hw", names["hw"]], ["run", names["onnx"], "--hw", names["hw"]],
                 ["run", names["repeated"], "--hw", names["hw"], "--streams", "2"],
                 ["run", names["mlp"], "--hw", names["hw"]]):
        rc, err = _run_cli(argv, {})
        assert rc == 0, err


def test_corpus_has_every_kind_and_150_cases():
    counts = {k: len(list((CORPUS / k).iterdir())) for k in KINDS}
    assert all(n >= 10 for n in counts.values()), counts
    assert sum(counts.values()) >= 150, counts


def test_every_bad_input_is_refused_in_one_line(tmp_path):
    """Exit 2, one line, no traceback, no hang, nothing changed, for every case of the corpus."""
    names = _sandbox(tmp_path)
    watched = [CORPUS, REPO / "hwspecs", REPO / "workloads"]
    before_all = {str(w): _digest(w) for w in watched}
    old = signal.signal(signal.SIGALRM, _alarm)
    failures = []
    try:
        for kind, path in corpus_files():
            before = _digest(tmp_path)
            signal.alarm(TIMEOUT_S)
            try:
                if kind == "api":
                    rc, err = _run_api(path.read_text(), names)
                else:
                    rc, err = _run_cli(*_argv(kind, path, names))
            finally:
                signal.alarm(0)
            problem = _problem(rc, err)
            if problem is None and _digest(tmp_path) != before:
                problem = "files changed or left behind"
            if problem:
                failures.append(f"{kind}/{path.name}: {problem}: {err.strip()[-300:]}")
    finally:
        signal.signal(signal.SIGALRM, old)
    assert {str(w): _digest(w) for w in watched} == before_all
    total = len(corpus_files())
    assert not failures, f"{len(failures)} of {total} cases failed:\n" + "\n".join(failures)


def _subprocess(argv: list[str], limits: dict[int, int], cwd: Path) -> subprocess.CompletedProcess:
    def preexec() -> None:
        for res, value in limits.items():
            resource.setrlimit(res, (value, value))

    return subprocess.run([sys.executable, "-m", "sim.cli", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=60, preexec_fn=preexec)


def test_a_write_cut_short_keeps_the_previous_output(tmp_path):
    """A file size limit hit while writing the JSON: exit 2, one line, the old file intact."""
    names = _sandbox(tmp_path)
    out = tmp_path / "r.json"
    out.write_text("previous result\n")
    res = _subprocess(["run", names["workload"], "--hw", names["hw"], "--json", str(out)],
                      {resource.RLIMIT_FSIZE: 1024}, tmp_path)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "r.json" in res.stderr
    assert out.read_text() == "previous result\n"
    assert sorted(p.name for p in tmp_path.glob(".r.json*")) == []


@pytest.mark.parametrize("case", ["workload/alias_bomb.yaml", "hw/alias_bomb.yaml",
                                  "workload/repeat_huge.yaml"])
def test_hostile_input_refused_within_memory_and_time(tmp_path, case):
    """Under a 1 GiB address-space limit and a 60 s timeout, a hostile input exits 2."""
    names = _sandbox(tmp_path)
    path = CORPUS / case
    argv = (["run", names["workload"], "--hw", str(path)] if case.startswith("hw/")
            else ["run", str(path), "--hw", names["hw"]])
    res = _subprocess(argv, {resource.RLIMIT_AS: 2**30 + 2**29}, tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) == 1
