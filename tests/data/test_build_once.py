"""One build per machine, with real processes: two processes that need the same image and
embedding caches at the same moment build each once (the other waits, says for whom, and reuses
it), and `prepare`'s sweep spares an old temp folder of a live build but not a killed one's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from histosweep.data import dataset_fingerprint, load_dataset
from histosweep.storage import build_lock

# Both processes import everything, say "ready", and start together on "go" (no sleeps).
EMBED = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(process)d %(message)s", stream=sys.stdout)
from histosweep.data import load_dataset
from histosweep.model import TrainConfig, ensure_embeddings
cfg = TrainConfig(train_mode="frozen", image_backbone="test_vit", resolution=32)
ds = load_dataset(sys.argv[1], labeled=True)
print("ready", flush=True)
sys.stdin.readline()
emb = ensure_embeddings(ds, cfg, cache_dir=sys.argv[2], device="cpu", progress=False)
print("shape", emb.features.shape, flush=True)
"""

BUILD = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
from histosweep.data import build_inputs, load_dataset, open_cache
ds = load_dataset(sys.argv[1], labeled=True)
build_inputs(ds, [(int(sys.argv[3]), "stretch")], cache_dir=sys.argv[2], workers=1, progress=False)
print("rows", len(open_cache(ds, int(sys.argv[3]), cache_dir=sys.argv[2], build=False).sample_ids),
      flush=True)
"""


def _python(script: str, *args, stdin=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_processes_embed_a_frozen_cache_once(synth_root, tmp_path):
    procs = [_python(EMBED, synth_root, tmp_path, stdin=subprocess.PIPE) for _ in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:  # both at once: the race two slots of one worker run on a frozen space
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    lines = "\n".join(outputs).splitlines()
    assert len([line for line in lines if " embedded " in line]) == 1, outputs
    assert len([line for line in lines if " built cache 32-stretch" in line]) == 1, outputs
    assert all("shape (64, 1, 64)" in out for out in outputs)


@pytest.mark.slow
def test_a_waiting_build_names_the_builder_and_reuses_its_cache(synth_root, tmp_path):
    ds = load_dataset(synth_root, labeled=True)
    base = tmp_path / "cache" / dataset_fingerprint(ds)[:16]
    with build_lock(base / "32-stretch"):  # this test process is "the builder"
        waiter = _python(BUILD, synth_root, tmp_path / "cache", 32)
        line = waiter.stdout.readline()
        assert line.startswith("waiting for the image cache (32-stretch) build by "), line
        assert f"by {socket.gethostname()}:{os.getpid()} (started " in line
        # the builder publishes its cache (built elsewhere here: the lock is this process's)
        code = _python(BUILD, synth_root, tmp_path / "elsewhere", 32)
        assert code.communicate(timeout=300)[0].count("built cache 32-stretch") == 1
        built = tmp_path / "elsewhere" / base.name
        os.rename(built / "32-stretch", base / "32-stretch")
        shutil.copy(built / "features.json", base / "features.json")
    out = waiter.communicate(timeout=300)[0]
    assert waiter.returncode == 0, out
    assert "built cache" not in out and "rows 64" in out  # reused, not rebuilt
    assert "waiting for" not in out  # one line, already read above


HOLD_TEMP = """
import sys
from pathlib import Path
from histosweep.storage import atomic_dir, build_lock
target = Path(sys.argv[1])
with build_lock(target), atomic_dir(target, marker=True) as tmp:
    print(tmp, flush=True)
    sys.stdin.readline()
"""


@pytest.mark.slow
def test_prepare_spares_an_old_temp_folder_of_a_live_build_and_sweeps_a_dead_one(synth_root, tmp_path):
    from histosweep.data import build_inputs

    ds = load_dataset(synth_root, labeled=True)
    ds.samples = ds.samples[:8]
    base = tmp_path / dataset_fingerprint(ds)[:16]
    builder = _python(HOLD_TEMP, base / "32-stretch", stdin=subprocess.PIPE)
    tmp = base / os.path.basename(builder.stdout.readline().strip())
    two_days_ago = time.time() - 2 * 86400  # older than any age rule would allow
    for path in (tmp, *tmp.iterdir()):
        os.utime(path, (two_days_ago, two_days_ago))
    try:
        build_inputs(ds, [(24, "stretch")], cache_dir=tmp_path, workers=1, progress=False)
        assert (base / "24-stretch" / "index.json").is_file() and tmp.is_dir()
    finally:
        builder.kill()
        builder.wait(60)
    build_inputs(ds, [(16, "stretch")], cache_dir=tmp_path, workers=1, progress=False)
    assert not tmp.exists()  # its builder was killed: swept
