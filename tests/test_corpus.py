"""Corpus specs: local files, folders and globs, builtins, and datasets loaded through `datasets.load_dataset`."""

from __future__ import annotations

import io
import json
import os
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from minigpt.data import builtin as builtin_corpora
from minigpt.data import cache as shardcache
from minigpt.data import files
from minigpt.data import hub as hfcorpus
from minigpt.data.corpus import open_corpus
from minigpt.errors import MiniGPTError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def offline_hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep `datasets` off the network and out of the user's cache."""
    datasets = pytest.importorskip("datasets")
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def write_parquet(path: Path, texts: list[str]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts, "n": list(range(len(texts)))}), path)
    return path


def test_folder_yields_text_files_recursively_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path / "b.txt", "second")
    write(tmp_path / "a" / "z.md", "first")
    write(tmp_path / "c" / "d" / "e.py", "third")
    write(tmp_path / ".hidden.txt", "hidden file")
    write(tmp_path / ".git" / "config", "hidden folder")
    write(tmp_path / "image.png", "binary by extension")
    (tmp_path / "data.dat").write_bytes(b"binary\0by content")

    assert list(open_corpus(str(tmp_path), tmp_path).documents()) == ["first", "second", "third"]


def test_glob_matches_files_recursively(tmp_path: Path) -> None:
    write(tmp_path / "notes" / "one.md", "one")
    write(tmp_path / "notes" / "deep" / "two.md", "two")
    write(tmp_path / "notes" / "skip.txt", "not markdown")

    documents = open_corpus(f"{tmp_path}/notes/**/*.md", tmp_path).documents()

    assert sorted(documents) == ["one", "two"]


def test_a_file_is_one_document_with_its_line_endings_kept(tmp_path: Path) -> None:
    (tmp_path / "crlf.txt").write_bytes(b"line one\r\nline two\r\n")

    assert list(open_corpus(str(tmp_path / "crlf.txt"), tmp_path).documents()) == ["line one\r\nline two\r\n"]


def test_missing_path_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(MiniGPTError, match="not found"):
        open_corpus(str(tmp_path / "nowhere.txt"), tmp_path)


def test_glob_matching_nothing_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(MiniGPTError, match="no text files match"):
        open_corpus(f"{tmp_path}/*.md", tmp_path)


def test_corpus_without_text_is_a_user_error(tmp_path: Path) -> None:
    write(tmp_path / "empty.txt", "")
    write(tmp_path / "blank.txt", " \n\t\n")

    with pytest.raises(MiniGPTError, match="contains no text"):
        list(open_corpus(str(tmp_path), tmp_path).documents())


def test_non_utf8_file_error_names_the_file_and_the_fix(tmp_path: Path) -> None:
    write(tmp_path / "good.txt", "fine")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))

    with pytest.raises(MiniGPTError, match=r"latin1\.txt is not UTF-8.*convert it to UTF-8") as err:
        list(open_corpus(str(tmp_path), tmp_path).documents())
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("where", ["a character cut by a block", "a bad byte", "an unfinished character at the end"])
def test_a_file_is_read_in_pieces_and_a_bad_byte_is_named_by_its_offset_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.setattr(files, "READ_BYTES", 100)
    text = "ünïcödé 🙂 text\n" * 40  # 1- to 4-byte characters, so blocks end inside characters
    data = text.encode()
    if where == "a bad byte":
        data = data[:250] + b"\xff" + data[250:]
    elif where == "an unfinished character at the end":
        data += "🙂".encode()[:3]
    (tmp_path / "t.txt").write_bytes(data)
    source = next(open_corpus(str(tmp_path / "t.txt"), tmp_path).sources())
    if where == "a character cut by a block":
        pieces = list(source())
        assert "".join(pieces) == text and max(len(piece.encode()) for piece in pieces) <= 103
        return
    with pytest.raises(MiniGPTError, match=rf"t\.txt is not UTF-8 \(bad byte at offset {250 if where == 'a bad byte' else len(data) - 3}\)"):
        list(source())



def test_fingerprint_changes_when_a_file_changes_and_only_then(tmp_path: Path) -> None:
    path = write(tmp_path / "data" / "a.txt", "hello")
    before = open_corpus(str(path.parent), tmp_path).fingerprint()
    assert open_corpus(str(path.parent), tmp_path).fingerprint() == before

    write(path, "hellO")

    assert open_corpus(str(path.parent), tmp_path).fingerprint() != before


def test_pydoc_builtin_is_every_reference_topic_sorted_by_key(tmp_path: Path) -> None:
    from pydoc_data.topics import topics

    documents = list(open_corpus("pydoc", tmp_path).documents())

    assert len(documents) == len(topics) > 50
    assert documents == [topics[key] for key in sorted(topics)]


def test_stdlib_builtin_is_the_top_level_python_sources(tmp_path: Path) -> None:
    source = open_corpus("stdlib", tmp_path)
    stdlib = Path(sysconfig.get_paths()["stdlib"])

    assert source.files == sorted(stdlib.glob("*.py"))
    assert "import" in next(source.documents())


def test_local_path_wins_over_a_builtin_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "pydoc", "my own pydoc")

    assert list(open_corpus("pydoc", tmp_path).documents()) == ["my own pydoc"]


def test_shakespeare_offline_is_a_user_error_that_suggests_a_local_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)

    with pytest.raises(MiniGPTError, match="--data path/to/tinyshakespeare.txt"):
        open_corpus("shakespeare", tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial download left behind


def test_shakespeare_is_downloaded_once_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_urlopen(url: str, timeout: float) -> io.BytesIO:
        calls.append(url)
        return io.BytesIO(b"First Citizen:\nBefore we proceed any further, hear me speak.\n")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)

    first = list(open_corpus("shakespeare", tmp_path).documents())
    second = list(open_corpus("shakespeare", tmp_path).documents())

    assert calls == [builtin_corpora.SHAKESPEARE_URL]
    assert first == second == ["First Citizen:\nBefore we proceed any further, hear me speak.\n"]


def test_default_cache_dir_follows_minigpt_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "elsewhere"))

    assert shardcache.default_cache_dir() == tmp_path / "elsewhere"


@pytest.mark.usefixtures("offline_hf")
def test_hf_parquet_file_rows_are_documents(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "rows.parquet", ["alpha", "", "beta"])

    documents = open_corpus(f"hf:parquet?data_files={path}", tmp_path).documents()

    assert list(documents) == ["alpha", "beta"]


@pytest.mark.usefixtures("offline_hf")
def test_hf_local_json_folder_with_field_and_limit(tmp_path: Path) -> None:
    rows = [{"body": f"story {i}", "text": 0} for i in range(5)]
    write(tmp_path / "ds" / "train.jsonl", "\n".join(json.dumps(row) for row in rows))

    documents = open_corpus(f"hf:{tmp_path / 'ds'}?field=body&limit=3", tmp_path).documents()

    assert list(documents) == ["story 0", "story 1", "story 2"]


@pytest.mark.usefixtures("offline_hf")
def test_hf_streaming_reads_the_same_rows(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "rows.parquet", ["alpha", "beta"])

    source = open_corpus(f"hf:parquet?data_files={path}&streaming=1", tmp_path)

    assert list(source.documents()) == ["alpha", "beta"]


@pytest.mark.usefixtures("offline_hf")
def test_hf_fingerprint_changes_with_the_data(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "rows.parquet", ["alpha", "beta"])
    spec = f"hf:parquet?data_files={path}"
    before = open_corpus(spec, tmp_path).fingerprint()

    write_parquet(path, ["alpha", "gamma"])

    assert open_corpus(spec, tmp_path).fingerprint() != before


@pytest.mark.usefixtures("offline_hf")
def test_hf_missing_field_is_a_user_error_listing_the_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "rows.parquet", ["alpha"])

    with pytest.raises(MiniGPTError, match=r"no field 'body'.*columns: text, n"):
        open_corpus(f"hf:parquet?data_files={path}&field=body", tmp_path)


@pytest.mark.usefixtures("offline_hf")
def test_hf_unreachable_hub_dataset_is_a_one_line_user_error(tmp_path: Path) -> None:
    with pytest.raises(MiniGPTError, match="could not load dataset 'hf:someone/no-such-dataset'.*network") as err:
        open_corpus("hf:someone/no-such-dataset", tmp_path)
    assert "\n" not in str(err.value)


def test_hf_unknown_option_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(MiniGPTError, match="unknown option.*colum"):
        open_corpus("hf:parquet?colum=text", tmp_path)


def test_hf_spec_parts_are_parsed() -> None:
    name, config, options = hfcorpus.parse_spec("hf:HuggingFaceFW/fineweb-edu:sample-10BT?split=train&limit=5")

    assert (name, config, options) == ("HuggingFaceFW/fineweb-edu", "sample-10BT", {"split": "train", "limit": "5"})


def test_a_single_binary_file_is_a_user_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "weights.txt").write_bytes(b"looks like text\0\x01\x02 but is not")

    with pytest.raises(MiniGPTError, match=r"weights\.txt is binary.*pass a UTF-8 text file") as err:
        open_corpus(str(tmp_path / "weights.txt"), tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="needs Linux's /proc")
def test_a_proc_file_cannot_be_fingerprinted_and_is_a_user_error() -> None:
    source = open_corpus("/proc/cpuinfo")  # a "regular" file whose stat size is 0 although it has content

    with pytest.raises(MiniGPTError, match=r"/proc/cpuinfo is not a stable regular file.*copy it") as err:
        source.fingerprint()
    assert "\n" not in str(err.value)


def test_a_pipe_is_a_user_error(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")

    with pytest.raises(MiniGPTError, match="neither a regular file nor a folder"):
        open_corpus(str(tmp_path / "pipe"), tmp_path)


def test_fingerprint_sees_an_edit_that_keeps_size_and_modification_time(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "hello")
    stat = path.stat()
    before = open_corpus(str(path), tmp_path).fingerprint()

    write(path, "hellO")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert open_corpus(str(path), tmp_path).fingerprint() != before


def test_a_download_into_a_cache_under_a_file_is_a_user_error(tmp_path: Path) -> None:
    write(tmp_path / "file", "not a folder")

    with pytest.raises(MiniGPTError, match=r"cannot write to the cache folder .*file/cache.*--cache_dir") as err:
        open_corpus("shakespeare", tmp_path / "file" / "cache")
    assert "\n" not in str(err.value)


def test_a_cache_under_a_link_to_nothing_names_the_link_and_makes_nothing(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "unmounted" / "disk")

    with pytest.raises(MiniGPTError, match=r"cache folder .*link/cache \('.*/link' is a link to '.*/unmounted/disk', which does not exist\)"):
        open_corpus("shakespeare", tmp_path / "link" / "cache")
    assert not (tmp_path / "unmounted").exists()


def test_an_unreadable_file_is_a_one_line_error(tmp_path, monkeypatch):
    from pathlib import Path

    from minigpt.data.corpus import open_corpus
    from minigpt.errors import MiniGPTError

    secret = tmp_path / "secret.txt"
    secret.write_text("private notes\n" * 10)
    real_open = Path.open

    def denied(self, *args, **kwargs):  # what chmod 000 does for anyone but root
        if self == secret:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(MiniGPTError, match="cannot read .*secret.txt \\(Permission denied\\)"):
        open_corpus(str(secret), tmp_path / "cache").fingerprint()


def save_dataset(path: Path, **splits: list[str]) -> Path:
    """`save_to_disk` a Dataset (one keyword, `rows`) or a DatasetDict (one keyword per split) of texts."""
    import datasets

    tables = {
        name: datasets.Dataset.from_dict({"text": rows, "n": list(range(len(rows)))}) for name, rows in splits.items()
    }
    saved = tables["rows"] if list(tables) == ["rows"] else datasets.DatasetDict(tables)
    saved.save_to_disk(str(path))
    return path


@pytest.mark.usefixtures("offline_hf")
def test_hf_saved_dataset_folder_rows_are_documents_with_field_and_limit(tmp_path: Path) -> None:
    path = save_dataset(tmp_path / "saved", rows=["alpha", "", "beta", "gamma"])

    assert list(open_corpus(f"hf:{path}", tmp_path).documents()) == ["alpha", "beta", "gamma"]
    assert list(open_corpus(f"hf:{path}?limit=2", tmp_path).documents()) == ["alpha"]  # limit counts rows
    with pytest.raises(MiniGPTError, match=r"no field 'body'.*columns: text, n"):
        open_corpus(f"hf:{path}?field=body", tmp_path)


@pytest.mark.usefixtures("offline_hf")
def test_hf_saved_dataset_dict_reads_the_chosen_split(tmp_path: Path) -> None:
    path = save_dataset(tmp_path / "saved", train=["t1", "t2"], validation=["v1"])

    assert list(open_corpus(f"hf:{path}", tmp_path).documents()) == ["t1", "t2"]
    assert list(open_corpus(f"hf:{path}?split=validation", tmp_path).documents()) == ["v1"]


@pytest.mark.usefixtures("offline_hf")
def test_hf_saved_dataset_dict_unknown_split_is_a_one_line_error_listing_the_splits(tmp_path: Path) -> None:
    path = save_dataset(tmp_path / "saved", train=["t1"], validation=["v1"])

    with pytest.raises(MiniGPTError, match=r"no split 'test'.*splits: train, validation") as err:
        open_corpus(f"hf:{path}?split=test", tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.usefixtures("offline_hf")
def test_hf_split_of_a_single_saved_dataset_is_a_user_error(tmp_path: Path) -> None:
    path = save_dataset(tmp_path / "saved", rows=["alpha"])

    with pytest.raises(MiniGPTError, match=r"one saved Dataset, not a DatasetDict.*drop \?split=validation"):
        open_corpus(f"hf:{path}?split=validation", tmp_path)


@pytest.mark.usefixtures("offline_hf")
def test_hf_unknown_split_of_local_files_is_a_one_line_error_listing_the_splits(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "rows.parquet", ["alpha"])

    with pytest.raises(MiniGPTError, match=r"Unknown split \"validation\".*'train'") as err:
        open_corpus(f"hf:parquet?data_files={path}&split=validation", tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.usefixtures("offline_hf")
def test_hf_saved_dataset_fingerprint_changes_with_the_content_of_its_split_only(tmp_path: Path) -> None:
    path = save_dataset(tmp_path / "saved", train=["t1", "t2"], validation=["v1"])
    spec = f"hf:{path}?split=validation"
    before = open_corpus(spec, tmp_path).fingerprint()
    assert open_corpus(spec, tmp_path).fingerprint() == before

    save_dataset(path, train=["t1", "t2", "t3"], validation=["v1"])
    assert open_corpus(spec, tmp_path).fingerprint() == before  # only another split changed

    save_dataset(path, train=["t1", "t2", "t3"], validation=["v2"])
    assert open_corpus(spec, tmp_path).fingerprint() != before


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc")
def test_a_file_that_opens_but_cannot_be_read_is_one_line() -> None:
    """/proc/self/mem opens, then fails to read (EIO): the corpus says which file, no traceback."""
    with pytest.raises(MiniGPTError, match=r"cannot read /proc/self/mem \(Input/output error\)"):
        list(files.whole(open_corpus("/proc/self/mem").sources()))


@pytest.mark.parametrize("spec, message", [("", "the corpus spec is empty"), (" ", "the corpus spec is empty"),
                                           ("x" * 300, "File name too long")])  # fmt: skip
def test_an_empty_or_unlookable_corpus_spec_is_one_line(spec: str, message: str) -> None:
    """An empty spec was the current folder (a repository's every file, .venv included, scored for minutes)."""
    with pytest.raises(MiniGPTError, match=message):
        open_corpus(spec)


def test_the_hubs_retry_messages_do_not_reach_the_user_before_the_one_line(tmp_path: Path, monkeypatch, capfd) -> None:
    """Offline, huggingface_hub logs each of its retries (ten lines, each twice) before the error."""
    import logging

    import datasets

    def retrying(*args, **kwargs):
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise ConnectionError("Couldn't reach 'someone/thing' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", retrying)
    level = logging.getLogger("huggingface_hub").level
    logging.getLogger("huggingface_hub").addHandler(handler := logging.StreamHandler())
    try:
        with pytest.raises(MiniGPTError, match="could not load dataset"):
            open_corpus("hf:someone/thing", tmp_path)
    finally:
        logging.getLogger("huggingface_hub").removeHandler(handler)
    assert "Retrying" not in capfd.readouterr().err
    assert logging.getLogger("huggingface_hub").level == level  # put back as it was
