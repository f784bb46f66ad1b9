"""Only a file's content is cached as its failure: a bug in our own code (TypeError,
AttributeError, ...) stops the run and is never recorded against the file."""

import pytest

from pipeline.extract.run import run_extraction
from pipeline.extract.sources.images import ImageReader
from tests.conftest import write_images


class BuggyReader(ImageReader):
    """An image reader with a bug on one file (a module-level class, so spawned decode
    workers can unpickle it)."""

    def read(self, path):
        if path.name.endswith("_1.png"):
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")
        yield from super().read(path)


def _extract(data, cache, decode="threads"):
    return run_extraction({"data": str(data), "backbone": "mobilenet", "weights": "none",
                           "input_size": 32, "batch_size": 4, "workers": 2, "decode": decode,
                           "cache_dir": str(cache)}, progress=False, echo=lambda *_: None)


def test_a_reader_bug_stops_the_run_and_the_fixed_reader_then_extracts_the_file(
        tmp_path, monkeypatch):
    data = write_images(tmp_path / "data", per_class=3, size=(32, 32))
    fixed_read = ImageReader.read

    def read_with_a_bug(self, path):
        if path.name.endswith("_1.png"):
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")
        yield from fixed_read(self, path)

    monkeypatch.setattr(ImageReader, "read", read_with_a_bug)
    with pytest.raises(TypeError, match="unsupported operand"):
        _extract(data, tmp_path / "cache")
    monkeypatch.undo()  # the reader is fixed
    result = _extract(data, tmp_path / "cache")
    assert result.n_failures == 0 and result.n_rows == 6


@pytest.mark.parametrize("feeder", ["files", "batches"])
def test_a_reader_bug_in_a_decode_process_is_raised_not_returned_as_a_reason(tmp_path, feeder):
    from pipeline.extract.decode_pool import ProcessBatchFeeder, ProcessChunkFeeder
    from pipeline.extract.sources.base import Sample

    data = write_images(tmp_path / "data", classes=("a",), per_class=3, size=(32, 32))
    samples = [Sample(id=p.name, path=p) for p in sorted((data / "a").glob("*.png"))]
    reader = BuggyReader((32, 32, 3))
    if feeder == "files":
        feed = ProcessChunkFeeder(samples, reader, processes=1)
    else:
        feed = ProcessBatchFeeder(reader, [s.path for s in samples], 3, 1)
    with pytest.raises(TypeError, match="unsupported operand"):
        list(feed)  # before: the file came back as a "failure" with the bug as its reason
