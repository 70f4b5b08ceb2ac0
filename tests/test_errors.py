import gzip
import json
import os

import pytest

from iterators.errors import ArgumentParser, UserError, check_output_dir, check_output_file, reading, run_cli


def _main_raising(error):
    def main(argv=None):
        raise error
    return main


def test_run_cli_prints_one_line_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(_main_raising(UserError("x.json: not JSON;\n  fix it")), [])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: x.json: not JSON; fix it\n"


def test_run_cli_keeps_the_traceback_of_a_bug():
    with pytest.raises(ZeroDivisionError):
        run_cli(_main_raising(ZeroDivisionError("a bug")), [])


def test_run_cli_passes_argv_and_returns_normally():
    seen = []
    run_cli(seen.append, ["-a", "1"])
    assert seen == [["-a", "1"]]


def test_parser_errors_are_one_line(capsys):
    p = ArgumentParser("doc", prog="script.py")
    p.add_argument("-n", type=int, required=True)
    for argv in (["-n", "x"], [], ["-n", "1", "-bogus"]):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(lambda a: p.parse_args(a), argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ")
        assert "see script.py -h" in err


@pytest.mark.parametrize("content, expected", [
    (None, "no such file"),
    (b"", "not a valid cache"),
    (b"garbage, not gzip", "not a valid cache"),
    (gzip.compress("".join(json.dumps({"i": i}) + "\n" for i in range(2000)).encode())[:3000], "truncated"),
])
def test_reading_names_the_file(tmp_path, content, expected):
    path = tmp_path / "c.jsonl.gz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=expected) as info:
        with reading(path, "cache", "rebuild it with make_demo_caches.py"):
            with gzip.open(path, "rt") as f:
                for line in f:
                    json.loads(line)
            if not path.stat().st_size:
                json.loads("")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="is a folder"):
        with reading(tmp_path, "cache"):
            open(tmp_path).read()


def test_output_checks_write_nothing(tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert check_output_dir(tmp_path / "new" / "deeper", "-out_dir") == str(tmp_path / "new" / "deeper")
    with pytest.raises(UserError, match="-out_dir .*f.txt is a file, not a folder"):
        check_output_dir(a_file / "sub", "-out_dir")
    with pytest.raises(UserError, match="-export .*must end in .csv or .json"):
        check_output_file(tmp_path / "out.xlsx", "-export", (".csv", ".json"))
    with pytest.raises(UserError, match="-out .* is a folder"):
        check_output_file(tmp_path, "-out")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_output_file(a_file / "pred.json", "-out")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc, a folder nobody can write in")
def test_an_unwritable_output_folder_is_found_before_the_work():
    with pytest.raises(UserError, match="-out_dir /proc/results: cannot write in /proc"):
        check_output_dir("/proc/results", "-out_dir")
    with pytest.raises(UserError, match="-export /proc/r.csv: cannot write in /proc"):
        check_output_file("/proc/r.csv", "-export", (".csv",))
