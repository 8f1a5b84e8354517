"""What fuzz/convert_msgpack.py, fuzz/convert_torch.py and
fuzz/convert_safetensors.py share: an atheris harness for dev/convert_hf.py's
reader of one released layout. `to-bigs` and `inspect` on any file (or set of
files) must either convert it or exit 1 with a message (a ConvertError); any
other exception is a bug, which atheris reports with the input that raised it."""
import atexit
import contextlib
import io
import os
import shutil
import sys
import tempfile

import atheris

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dev"))
with atheris.instrument_imports(include=["convert_hf"]):
    import convert_hf  # noqa: E402


def run(fmt, name, split=None):
    """Fuzzes `convert_hf.py to-bigs --format FMT` on a file called NAME, the
    input. With split, split(input) gives ({file name: bytes}, the file to
    convert) instead: several files in one folder (a sharded model)."""
    work = tempfile.mkdtemp(prefix="bigs_fuzz_%s_" % fmt)
    atexit.register(shutil.rmtree, work, True)
    model_dir, out = os.path.join(work, "model"), os.path.join(work, "model.bin")
    os.makedirs(model_dir)

    def test_one_input(data):
        files, model = split(data) if split else ({name: data}, name)
        for f in os.listdir(model_dir):  # the last input's files
            os.remove(os.path.join(model_dir, f))
        for f, blob in files.items():
            with open(os.path.join(model_dir, f), "wb") as fh:
                fh.write(blob)
        model = os.path.join(model_dir, model)
        for argv in (["to-bigs", "--model", model, "--out", out, "--format", fmt], ["inspect", model, "--format", fmt]):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                rc = convert_hf.main(argv)
            assert rc in (0, 1, None), rc

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
