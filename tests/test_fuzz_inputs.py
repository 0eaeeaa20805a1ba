"""Fuzzed annotation files and configs: valid input reads back exactly; anything else is an
``AnnotationError`` naming the file (and the line where there is one) or a ``ConfigError`` naming
the file or the key, with a suggestion for a misspelt key. Never another exception type.

Writers of small text files (class names, video lists) are atomic: a SIGKILL or a full disk
mid-write leaves the previous file. Budget: ``TANET_FUZZ_EXAMPLES`` (default 100) examples per
property, derandomized.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tanet.config import Config, ConfigError, all_keys, apply_overrides, config_to_dict, load_config
from tanet.data.annotations import (AnnotationError, Record, read_annotations, read_class_names,
                                    write_class_names, write_video_list)

EXAMPLES = int(os.environ.get("TANET_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=list(HealthCheck), print_blob=False)

# ----------------------------------------------------------------------------- annotations
FMTS = ("frames", "videos", "kinetics", "sthv1", "sthv2")
SUFFIX = {"frames": ".txt", "videos": ".txt", "kinetics": ".csv", "sthv1": ".csv",
          "sthv2": ".json"}

_word = st.from_regex(r"[A-Za-z0-9_\u00e9\u4e2d][A-Za-z0-9_ '()\u00e9\u4e2d-]{0,10}[A-Za-z0-9)]",
                      fullmatch=True)
_video = st.from_regex(r"[A-Za-z0-9_\u00e9\u4e2d][A-Za-z0-9_./ \u00e9\u4e2d-]{0,14}\.mp4",
                       fullmatch=True)
_folder = st.from_regex(r"[A-Za-z0-9_\u00e9\u4e2d][A-Za-z0-9_/\u00e9\u4e2d-]{0,14}", fullmatch=True)
_vid = st.from_regex(r"[A-Za-z0-9_-]{1,11}", fullmatch=True)


@st.composite
def dataset(draw):
    """(format, class names, rows (video, label index, num_frames, start, end), labels beside?)"""
    fmt = draw(st.sampled_from(FMTS))
    names = draw(st.lists(_word, min_size=1, max_size=5, unique=True))
    n = draw(st.integers(1, 6))
    video = {"frames": _folder, "videos": _video}.get(fmt, _vid)
    rows = [(draw(video), draw(st.integers(0, len(names) - 1)), draw(st.integers(0, 10**6)),
             draw(st.integers(0, 10**5)), draw(st.integers(0, 10**5))) for _ in range(n)]
    beside = fmt == "sthv2" or draw(st.booleans())
    return fmt, names, rows, beside


def render(fmt, names, rows, beside) -> tuple[str, str | None, str | None, list, list]:
    """(annotation text, labels file name, labels text, expected records, expected names)."""
    if fmt in ("frames", "videos"):
        text = "".join(f"{v} {nf} {lab}\n" if fmt == "frames" else f"{v} {lab}\n"
                       for v, lab, nf, _, _ in rows)
        exp_names = names if beside else [str(i) for i in range(max(r[1] for r in rows) + 1)]
        recs = [Record(v, lab, nf if fmt == "frames" else None) for v, lab, nf, _, _ in rows]
        return text, "classes.txt", "".join(f"{n}\n" for n in names), recs, exp_names
    used = sorted({names[r[1]] for r in rows})
    exp_names = names if beside else used
    index = {n: i for i, n in enumerate(exp_names)}
    if fmt == "kinetics":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        for v, lab, _, s, e in rows:
            w.writerow([names[lab], v, s, e, "train"])
        used_index = {n: i for i, n in enumerate(used)}  # no class-names file for Kinetics
        recs = [Record(f"{v}_{s:06d}_{e:06d}.mp4", used_index[names[lab]])
                for v, lab, _, s, e in rows]
        return buf.getvalue(), None, None, recs, used
    if fmt == "sthv1":
        text = "".join(f"{v};{names[lab]}\n" for v, lab, *_ in rows)
        recs = [Record(v, index[names[lab]]) for v, lab, *_ in rows]
        return (text, "something-something-v1-labels.csv", "".join(f"{n}\n" for n in names),
                recs, exp_names)
    items = [{"id": v, "label": names[lab].lower(), "template": names[lab]} for v, lab, *_ in rows]
    text = json.dumps(items, indent=1, ensure_ascii=False)
    recs = [Record(f"{v}.webm", lab) for v, lab, *_ in rows]
    labels = json.dumps({n: str(i) for i, n in enumerate(names)}, indent=1, ensure_ascii=False)
    return text, "labels.json", labels, recs, names


_line_mutation = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 50), st.text(max_size=40)),
    st.tuples(st.just("insert"), st.integers(0, 50), st.sampled_from([
        "x.mp4 " + "9" * 30, "x.mp4 -1", "x 10 -2", "x -5 1", "1;no such class", "x.mp4",
        "x.mp4 1 2 3 4", "\ufeffx.mp4 0", "x.mp4 1e3", "x.mp4 0x10", "# comment", "", "  ",
        "unknownclass,abc,1,2,train", "a,b", '"unterminated,quote', "x.mp4 \u0661",
        '[{"id": 1}]', "{", "x.mp4 " + "1" * 5000])),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("duplicate"), st.integers(0, 50)),
    st.tuples(st.just("empty")),
)
_byte_mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("garbage"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 7)),
)
_encoding = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "latin-1", "cp1252"])
_newline = st.sampled_from(["\n", "\r\n", "\r"])


def _mutate_lines(text: str, ops) -> str:
    lines = text.split("\n")
    for op in ops:
        i = op[1] % (len(lines) + 1) if len(op) > 1 else 0
        if op[0] == "replace" and lines:
            lines[i % len(lines)] = op[2]
        elif op[0] == "insert":
            lines.insert(i, op[2])
        elif op[0] == "delete" and lines:
            del lines[i % len(lines)]
        elif op[0] == "duplicate" and lines:
            lines.insert(i, lines[i % len(lines)])
        elif op[0] == "empty":
            lines = []
    return "\n".join(lines)


def _mutate_bytes(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op in ops:
        at = int(op[1] * len(b))
        if op[0] == "truncate":
            del b[at:]
        elif op[0] == "garbage":
            b[at:at] = op[2]
        elif op[0] == "flip" and b:
            b[min(at, len(b) - 1)] ^= 1 << op[2]
    return bytes(b)


def _encode(text: str, encoding: str, newline: str) -> bytes | None:
    try:
        return text.replace("\n", newline).encode(encoding)
    except UnicodeEncodeError:
        return None


def _check_result(result, files: list[Path]):
    """A successful read is self-consistent; an error names one of ``files``."""
    if isinstance(result, AnnotationError):
        msg = str(result)
        assert any(msg.startswith(f"{f}:") or msg.startswith(f"{f} ") for f in files), msg
        assert Path(result.path) in files
        if result.line is not None:
            text = Path(result.path).read_bytes()
            assert 1 <= result.line <= max(text.count(b"\n"), text.count(b"\r"),
                                           text.count(b"\n\x00")) + 1, msg
        return "error"
    records, names = result
    assert records and names and all(isinstance(n, str) for n in names)
    for r in records:
        assert isinstance(r.path, str) and r.path and "\n" not in r.path and "\x00" not in r.path
        assert 0 <= r.label < len(names)
        assert r.num_frames is None or r.num_frames >= 0
    return "records"


def _read(path: Path, fmt: str):
    try:
        return read_annotations(path, format=fmt)
    except AnnotationError as e:
        return e


@FUZZ
@given(case=dataset(), encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
       newline=_newline)
def test_fuzz_annotations_valid_files_read_back(case, encoding, newline):
    """Any valid file, in UTF-8 (with or without BOM) or UTF-16, any newline style, reads back
    to exactly the records and classes it was written from."""
    fmt, names, rows, beside = case
    text, lab_name, lab_text, recs, exp_names = render(fmt, names, rows, beside)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"ann{SUFFIX[fmt]}"
        path.write_bytes(_encode(text, encoding, newline))
        if beside and lab_name:
            (Path(d) / lab_name).write_bytes(_encode(lab_text, encoding, newline))
        for f in (fmt, "auto") if fmt in ("kinetics", "sthv2") else (fmt,):
            got = read_annotations(path, format=f)
            assert got == (recs, exp_names)


OUTCOMES: dict[str, int] = {}  # outcome counts of the malformed-input properties


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    if OUTCOMES:
        print(f"\nfuzz inputs summary ({EXAMPLES} examples per property): {OUTCOMES}")


@FUZZ
@given(case=dataset(), line_ops=st.lists(_line_mutation, max_size=3),
       byte_ops=st.lists(_byte_mutation, max_size=2), encoding=_encoding, newline=_newline,
       mutate_labels=st.booleans(), auto=st.booleans())
def test_fuzz_annotations_malformed_files(case, line_ops, byte_ops, encoding, newline,
                                         mutate_labels, auto):
    """Malformed lines, other encodings, garbage bytes, cuts, unknown labels, empty files,
    huge and negative numbers: valid records or an AnnotationError naming the file."""
    fmt, names, rows, beside = case
    text, lab_name, lab_text, _, _ = render(fmt, names, rows, beside)
    data = _encode(_mutate_lines(text, line_ops), encoding, newline)
    assume(data is not None)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"ann{SUFFIX[fmt]}"
        path.write_bytes(_mutate_bytes(data, byte_ops))
        files = [path]
        if beside and lab_name:
            lab = Path(d) / lab_name
            lab_data = _encode(lab_text, encoding, newline) or lab_text.encode()
            if mutate_labels:
                lab_data = _mutate_bytes(_encode(_mutate_lines(lab_text, line_ops), "utf-8",
                                                 newline), byte_ops)
            lab.write_bytes(lab_data)
            files.append(lab)
        outcome = "annotations: " + _check_result(_read(path, "auto" if auto else fmt), files)
        OUTCOMES[outcome] = OUTCOMES.get(outcome, 0) + 1


@pytest.mark.parametrize("content,line,msg", [
    ("vid\u00e9.mp4 1\n".encode("latin-1"), 1, "not UTF-8 text"),
    (b"a.mp4 0\nb.mp4 1\n\x80\x81 2\n", 3, "not UTF-8 text"),
    (b"a.mp4 0\nb\x00.mp4 1\n", 2, "NUL byte"),
    (b"a.mp4 0\nb.mp4 99999999999\n", 2, "label 99999999999 would mean"),
    (bytes(range(256)) * 4, 2, "not UTF-8 text"),
])
def test_fuzz_inputs_examples_name_the_line(tmp_path, content, line, msg):
    p = tmp_path / "list.txt"
    p.write_bytes(content)
    with pytest.raises(AnnotationError, match=msg) as e:
        read_annotations(p, format="videos")
    assert e.value.line == line and str(e.value).startswith(f"{p}:{line}: ")


def test_fuzz_inputs_bom_and_utf16_are_read(tmp_path):
    """A UTF-8 BOM used to end up in the first path ('\\ufeffa.mp4')."""
    for enc in ("utf-8-sig", "utf-16"):
        p = tmp_path / f"{enc}.txt"
        p.write_bytes("a.mp4 1\r\nb.mp4 0\r\n".encode(enc))
        recs, names = read_annotations(p)
        assert [r.path for r in recs] == ["a.mp4", "b.mp4"] and names == ["0", "1"]
    k = tmp_path / "k.csv"
    k.write_bytes("label,youtube_id,time_start,time_end,split\nrun,abc,1,3,train\n"
                  .encode("utf-8-sig"))
    assert read_annotations(k)[0] == [Record("abc_000001_000003.mp4", 0)]


@pytest.mark.parametrize("fmt,name,content,msg", [
    ("kinetics", "k.csv", b"label,youtube_id,time_start,time_end,split\nx,a,inf,3,t\n",
     "k.csv:2: time_start/time_end must be numbers"),  # OverflowError escaped
    ("kinetics", "k.csv", b"label,youtube_id,time_start,time_end,split\nx,\"" + b"a" * 200_000
     + b"\",1,2,t\n", "k.csv:2: malformed CSV"),  # csv.Error escaped
    ("sthv2", "s.json", b"[" * 100_000, "s.json: invalid JSON"),  # RecursionError escaped
])
def test_fuzz_inputs_other_exceptions_became_annotation_errors(tmp_path, fmt, name, content,
                                                                msg):
    p = tmp_path / name
    p.write_bytes(content)
    (tmp_path / "labels.json").write_text('{"x": "0"}')
    with pytest.raises(AnnotationError, match=msg):
        read_annotations(p, format=fmt)


# ----------------------------------------------------------------------------- configs
KEYS = all_keys()
SECTIONS = sorted({k.split(".")[0] for k in KEYS if "." in k})


def _nest(flat: dict) -> dict:
    out: dict = {}
    for k, v in flat.items():
        *secs, leaf = k.split(".")
        d = out
        for s in secs:
            d = d.setdefault(s, {})
            if not isinstance(d, dict):
                break
        else:
            d[leaf] = v
    return out


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
_value = st.recursive(_scalar, lambda c: st.one_of(st.lists(c, max_size=4),
                                                    st.dictionaries(st.text(max_size=8), c,
                                                                    max_size=3)), max_leaves=8)


@st.composite
def _typo(draw, key: str) -> str:
    sec, _, leaf = key.rpartition(".")
    i = draw(st.integers(0, len(leaf) - 1))
    op = draw(st.sampled_from(["delete", "insert", "swap", "replace"]))
    c = draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz_"))
    if op == "delete":
        leaf = leaf[:i] + leaf[i + 1:]
    elif op == "insert":
        leaf = leaf[:i] + c + leaf[i:]
    elif op == "swap" and i + 1 < len(leaf):
        leaf = leaf[:i] + leaf[i + 1] + leaf[i] + leaf[i + 2:]
    else:
        leaf = leaf[:i] + c + leaf[i + 1:]
    return f"{sec}.{leaf}" if sec else leaf


def _load(path: Path, overrides=None):
    try:
        return load_config(path, overrides)
    except ConfigError as e:
        return e


@FUZZ
@given(data=st.data())
def test_fuzz_config_typo_in_a_key_suggests_the_key(data):
    key = data.draw(st.sampled_from(KEYS))
    typo = data.draw(_typo(key))
    assume(typo not in KEYS and typo.rsplit(".", 1)[-1] and typo not in SECTIONS)
    value = config_to_dict(Config())
    for part in key.split("."):
        value = value[part]  # the default: a valid value, so the key is the only fault
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.yaml"
        path.write_text(yaml.safe_dump(_nest({typo: value})))
        err = _load(path)
    assert isinstance(err, ConfigError), f"{typo} was accepted"
    assert str(err) == f"{path}: unknown key {typo!r}; did you mean {key!r}?"


@FUZZ
@given(data=st.data())
def test_fuzz_config_wrong_types_name_the_key(data):
    """A value of the wrong type for a key is a ConfigError naming the file and the key."""
    import typing

    from tanet.config import _hints

    key = data.draw(st.sampled_from(KEYS))
    obj, tp = Config, None
    for part in key.split("."):
        tp = _hints(obj)[part]
        obj = tp
    args = set(typing.get_args(tp)) or {tp}
    wrong = []
    if not args & {int, float, str}:  # str fields take numbers (a class file named 2024)
        wrong.append(st.integers(2, 10**9))
    if not args & {str}:
        wrong.append(st.from_regex(r"[a-z]{2,8}", fullmatch=True).filter(
            lambda s: s not in ("on", "off", "yes", "no", "y", "n", "true", "false", "null")))
    if not any(typing.get_origin(a) is list for a in args):
        wrong.append(st.lists(st.dictionaries(st.text(max_size=3), st.integers(), min_size=1),
                              min_size=1, max_size=2))
    if not any(typing.get_origin(a) is dict for a in args):
        wrong.append(st.dictionaries(st.from_regex(r"[a-z]{1,4}", fullmatch=True),
                                     st.lists(st.integers(), min_size=1), min_size=1, max_size=2))
    value = data.draw(st.one_of(wrong))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.yaml"
        path.write_text(yaml.safe_dump(_nest({key: value})))
        err = _load(path)
    assert isinstance(err, ConfigError), f"{key}: {value!r} was accepted"
    assert str(err).startswith(f"{path}: ") and key in str(err), str(err)


@FUZZ
@given(flat=st.dictionaries(st.one_of(st.sampled_from(KEYS), st.sampled_from(SECTIONS),
                                      st.text(max_size=12)), _value, max_size=6),
       byte_ops=st.lists(_byte_mutation, max_size=2), encoding=_encoding,
       extra=st.sampled_from(["", "\t- x\n", "a: [\n", "&a [*a]\n", "--- \n- 1\n", "!!binary x\n",
                              "!!python/object/apply:os.system ['touch pwned']\n"]),
       overrides=st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), st.text(max_size=12)),
                                    st.text(max_size=12)), max_size=2))
def test_fuzz_config_files_and_overrides(flat, byte_ops, encoding, extra, overrides):
    """Arbitrary keys and values, broken YAML, other encodings, lists instead of mappings,
    tags, garbage: a Config or a ConfigError naming the file (or the --set key)."""
    try:
        text = yaml.safe_dump(_nest(flat), allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        text = ""
    data = _encode(text + extra, encoding, "\n")
    assume(data is not None)
    sets = [f"{k}={v}" for k, v in overrides]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.yaml"
        path.write_bytes(_mutate_bytes(data, byte_ops))
        res = _load(path, sets)
        assert not (Path(d) / "pwned").exists()
    if isinstance(res, ConfigError):
        msg = str(res)
        assert msg.startswith(f"{path}") or msg.startswith("--set "), msg
    else:
        assert isinstance(res, Config)
    outcome = "configs: " + ("ConfigError" if isinstance(res, ConfigError) else "Config")
    OUTCOMES[outcome] = OUTCOMES.get(outcome, 0) + 1


@pytest.mark.parametrize("content,msg", [
    (b"- a\n- b\n", "expected a mapping at the top level, got list"),
    (b"42\n", "expected a mapping at the top level, got int"),
    (b"model: {name: [\n", "not valid YAML"),
    ("output: runs/vid\u00e9\n".encode("latin-1"), ":1: not UTF-8 text"),
    (bytes(range(256)), ":2: not UTF-8 text"),
    (b"train:\n  lr: .nan\n", "train.lr expects a number, got NaN"),
    (b"train:\n  epochs: 1" + b"0" * 5000 + b"\n", "not valid YAML"),
    (b"model: " + b"[" * 3000 + b"]" * 3000 + b"\n", "nested too deeply"),
    (b"modle:\n  name: tanet_tiny\n", "unknown key 'modle'; did you mean 'model'?"),
])
def test_fuzz_inputs_config_examples(tmp_path, content, msg):
    p = tmp_path / "c.yaml"
    p.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(msg)) as e:
        load_config(p)
    assert str(e.value).startswith(str(p))


@pytest.mark.timeout(30)
def test_fuzz_inputs_config_billion_laughs_is_refused_quickly(tmp_path):
    """Nested YAML aliases expand to 10**9 items: walking them expanded (the float fix-up, or
    the repr in an error message) hung for ever."""
    levels = "".join(f"    - &{c} [{', '.join(['*' + p] * 10)}]\n"
                     for p, c in zip("abcdefgh", "bcdefghi"))
    p = tmp_path / "laughs.yaml"
    p.write_text("train:\n  epochs:\n    - &a [x, x, x, x, x, x, x, x, x, x]\n" + levels)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="train.epochs expects int"):
        load_config(p)
    assert time.perf_counter() - t0 < 5


def test_fuzz_inputs_set_overrides_reject_nan_and_typos():
    cfg = Config()
    with pytest.raises(ConfigError, match="did you mean 'train.epochs'"):
        apply_overrides(cfg, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="--set train.lr: train.lr expects"):
        apply_overrides(cfg, ["train.lr=.nan"])


# ----------------------------------------------------------------------------- atomic writers
# One interpreter imports tanet once, then forks a writer per round; the test SIGKILLs the
# writer (a real process, a real signal) at a different moment each round.
_WRITER = textwrap.dedent("""
    import os, sys
    from tanet.data.annotations import Record, write_class_names, write_video_list
    names, vlist = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    for _ in sys.stdin:
        pid = os.fork()
        if pid == 0:
            i = 0
            while True:
                i += 1
                n = 2000 + (i % 7) * 1500  # versions of different lengths
                write_class_names(names, [f"class {i} {k}" for k in range(n)])
                write_video_list(vlist, [Record(f"v{i}/{k}.mp4", k % 5) for k in range(n)])
        print(pid, flush=True)
        os.waitpid(pid, 0)
        print("reaped", flush=True)
""")


def test_fuzz_inputs_writers_survive_sigkill(tmp_path):
    """Kill a process rewriting a class-names file and a video list in a loop: what is on disk
    is always one whole version (all lines from the same iteration, none cut)."""
    names, vlist = tmp_path / "classes.txt", tmp_path / "list.txt"
    helper = subprocess.Popen([sys.executable, "-c", _WRITER, str(names), str(vlist)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    versions = set()
    try:
        assert helper.stdout.readline().strip() == "ready"
        for delay in (0.03, 0.07, 0.13, 0.21, 0.29, 0.41):
            helper.stdin.write("go\n")
            helper.stdin.flush()
            pid = int(helper.stdout.readline())
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            assert helper.stdout.readline().strip() == "reaped"
            for path in (names, vlist):
                if not path.exists():
                    continue
                if path == names:
                    lines = read_class_names(path)
                    tags, n = {ln.split()[1] for ln in lines}, len(lines)
                else:
                    recs, _ = read_annotations(path, format="videos")
                    tags, n = {r.path.split("/")[0].lstrip("v") for r in recs}, len(recs)
                assert len(tags) == 1, f"{path.name}: lines of two versions"
                i = int(tags.pop())
                assert n == 2000 + (i % 7) * 1500, f"{path.name}: a cut version"
                versions.add((path.name, i))
            for debris in tmp_path.glob(".*.tmp"):  # a killed writer leaves its temp file only
                debris.unlink()
    finally:
        helper.kill()
        helper.wait()
    assert {v[0] for v in versions} == {"classes.txt", "list.txt"}, "no file was ever completed"


_FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    from tanet.data.annotations import Record, write_class_names, write_video_list
    resource.setrlimit(resource.RLIMIT_FSIZE, (5000, 5000))  # the disk is full past 5 kB
    for kind, path in zip(("names", "list"), sys.argv[1:]):
        try:
            if kind == "names":
                write_class_names(path, [f"new class {k}" for k in range(5000)])
            else:
                write_video_list(path, [Record(f"new/{k}.mp4", 0) for k in range(5000)])
        except OSError as e:
            print(kind, "OSError", e.errno)
""")


def test_fuzz_inputs_writers_full_disk_keep_previous_file(tmp_path):
    names, vlist = tmp_path / "classes.txt", tmp_path / "list.txt"
    write_class_names(names, ["a", "b"])
    write_video_list(vlist, [Record("a.mp4", 0), Record("b.mp4", 1)])
    before = names.read_bytes(), vlist.read_bytes()
    r = subprocess.run([sys.executable, "-c", _FULL_DISK, str(names), str(vlist)],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.split("\n")[:2] == ["names OSError 27", "list OSError 27"], r.stdout + r.stderr
    assert (names.read_bytes(), vlist.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.txt", "list.txt"]


def test_fuzz_inputs_writers_refuse_newlines(tmp_path):
    with pytest.raises(ValueError, match="newline"):
        write_video_list(tmp_path / "l.txt", [Record("a\nb.mp4", 0)])
    with pytest.raises(ValueError, match="newline"):
        write_class_names(tmp_path / "c.txt", ["a\rb"])
    assert not list(tmp_path.iterdir())
