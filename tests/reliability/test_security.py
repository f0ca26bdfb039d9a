"""Security: no pickle is ever loaded from shared storage, a storage password never reaches any
output, and the dashboard binds to loopback unless --host says otherwise."""

from __future__ import annotations

import ast
import concurrent.futures
import hashlib
import json
import pickle
import shutil
import socket
import struct
from pathlib import Path

import pytest

from tests.ops._helpers import free_port, start, stop, wait_http
from tests.reliability._helpers import CLOSED_PORT, PASSWORD, error_line, run_cli
from tests.search._helpers import load

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("histosweep", "data", "model", "search", "bundle", "storage", "bench", "scripts")


class Planted:
    """Unpickling this creates `marker`: proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_pickle(path: Path, marker: Path, how: str) -> None:
    import torch

    payload = {"image.stem.0.weight": torch.zeros(2), "evil": Planted(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))


def test_planted_payload_is_live(tmp_path):
    """Control: loading the payload with pickle does run it, so the refusals below can fail."""
    import torch

    for how in ("torch.save", "pickle"):
        marker = tmp_path / f"marker-{how}"
        _write_pickle(tmp_path / "p", marker, how)
        if how == "torch.save":
            torch.load(tmp_path / "p", weights_only=False)
        else:
            pickle.loads((tmp_path / "p").read_bytes())
        assert marker.exists()


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
@pytest.mark.parametrize("manifest_hash", ["kept", "forged"])
def test_pickle_in_a_bundle_is_refused_by_predict(trained, tmp_path, how, manifest_hash):
    bundle = tmp_path / "bundle"
    shutil.copytree(trained.bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    fold = manifest["members"][0]["folds"][0]
    marker = tmp_path / "pwned"
    _write_pickle(bundle / fold["file"], marker, how)
    if manifest_hash == "forged":  # an attacker who can write the bundle can fix the hash too
        fold["sha256"] = hashlib.sha256((bundle / fold["file"]).read_bytes()).hexdigest()
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "sub.csv"
    line = error_line(run_cli("predict", str(bundle), "--images", str(trained.data / "TEST"),
                              "--out", str(out), "--no-progress"))
    assert f"fold {fold['fold']}" in line
    assert ("is corrupt" if manifest_hash == "kept" else "not a safetensors checkpoint") in line
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_pickle_in_the_artifact_store_is_refused_by_export(trained, tmp_path, how):
    store = tmp_path / "artifacts"
    shutil.copytree(trained.artifacts, store)
    best = load("rel", trained.url).best_trial
    for k in range(2):  # every fold checkpoint of the trial is a planted pickle
        _write_pickle(store / best.user_attrs[f"fold_{k}"]["checkpoint"], tmp_path / "pwned", how)
    out = tmp_path / "bundle"
    line = error_line(run_cli("export-best", "rel", "--out", str(out), "--storage", trained.url,
                              "--artifacts", str(store), "--no-progress"))
    assert f"trial {best.number} fold" in line and "not a safetensors checkpoint" in line
    assert not (tmp_path / "pwned").exists() and not out.exists()


# --- no unsafe deserialisation in the product code ---------------------------------------------
def unsafe_loads(source: str, name: str = "<src>") -> list[str]:
    """Calls that may unpickle: torch.load without weights_only=True (also imported as another
    name), pickle/joblib/dill loads, np.load with allow_pickle=True."""
    tree = ast.parse(source)
    torch_modules, torch_loads = {"torch"}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            torch_modules |= {a.asname for a in node.names if a.name == "torch" and a.asname}
        elif isinstance(node, ast.ImportFrom) and node.module == "torch":
            torch_loads |= {a.asname or a.name for a in node.names if a.name == "load"}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        true = {k.arg for k in node.keywords if isinstance(k.value, ast.Constant) and k.value.value is True}
        dotted = ast.unparse(func)
        is_torch_load = (
            isinstance(func, ast.Attribute) and func.attr == "load"
            and ast.unparse(func.value) in torch_modules
        ) or (isinstance(func, ast.Name) and func.id in torch_loads)
        bad = (
            (is_torch_load and "weights_only" not in true)
            or dotted in ("pickle.load", "pickle.loads", "joblib.load", "cloudpickle.load", "dill.load")
            or (dotted in ("np.load", "numpy.load") and "allow_pickle" in true)
        )
        if bad:
            found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_unsafe_load_finder_finds_what_it_should():
    assert unsafe_loads("import torch\ntorch.load(p)\n")
    assert unsafe_loads("import torch\ntorch.load(p, weights_only=False)\n")
    assert unsafe_loads("import torch as T\nT.load(p)\n")
    assert unsafe_loads("from torch import load as tl\ntl(p)\n")
    assert unsafe_loads("import pickle\npickle.loads(b)\n")
    assert unsafe_loads("import numpy as np\nnp.load(p, allow_pickle=True)\n")
    assert not unsafe_loads("import torch\ntorch.load(p, map_location='cpu', weights_only=True)\n")
    assert not unsafe_loads("import numpy as np\nnp.load(p, allow_pickle=False)\n")


def test_a_pickled_pretrained_path_never_runs_its_code(tmp_path):
    """A `.pth` given as *_pretrained_path is loaded by timm with weights_only=True: refused."""
    from histosweep.model import TrainConfig, build_model

    marker = tmp_path / "pwned"
    _write_pickle(tmp_path / "evil.pth", marker, "torch.save")
    cfg = TrainConfig(image_backbone="convnext_atto", mask_backbone="resnet10t",
                      mask_pretrained_path=str(tmp_path / "evil.pth"))
    with pytest.raises(Exception):  # noqa: B017 - timm's/torch's own refusal, whatever its type
        build_model(cfg)
    assert not marker.exists()


def test_dependency_floors_keep_checkpoint_loading_weights_only():
    """torch >= 2.6 (weights_only=True by default) and timm >= 1.0.27 (its load_state_dict
    defaults to weights_only=True; older ones pass weights_only=False for a pretrained file)."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {d.split(">=")[0]: tuple(int(x) for x in d.split(">=")[1].split(",")[0].split("."))
              for d in deps if ">=" in d}
    assert floors["torch"] >= (2, 6) and floors["timm"] >= (1, 0, 27), floors


def test_product_code_never_unpickles():
    files = [p for d in PRODUCT for p in (REPO / d).rglob("*.py")]
    assert len(files) > 30  # the product is really being read
    found = [hit for p in files for hit in unsafe_loads(p.read_text(), str(p.relative_to(REPO)))]
    assert not found, found


# --- the storage password ----------------------------------------------------------------------
def _bad_url() -> str:
    return f"postgresql+psycopg2://histosweep:{PASSWORD}@127.0.0.1:{CLOSED_PORT}/histosweep"


def _dashboard_stderr(url: str, artifacts: Path, log_dir: Path, *, expect_serving: bool) -> str:
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    proc, stderr_path = start(["dashboard", "--storage", url, "--artifacts", str(artifacts),
                               "--port", str(port)], log_dir)
    try:
        if expect_serving:
            wait_http(f"http://127.0.0.1:{port}/api/meta", proc, stderr_path)
        else:
            assert proc.wait(timeout=120) == 1
    finally:
        stop(proc)
    return stderr_path.read_text()


def test_password_never_appears_in_any_output(trained, tmp_path):
    outputs = dict(trained.outputs)  # prepare, create, worker, export-best, status: success
    bad = _bad_url()
    failing = {
        "create": ["create", "x", "--data", str(trained.data), "--space", str(trained.space),
                   "--folds", "2", "--storage", bad],
        "worker": ["worker", "x", "--storage", bad, "--log-dir", str(tmp_path / "logs")],
        "status": ["status", "x", "--storage", bad],
        "status --debug": ["status", "x", "--storage", bad, "--debug"],
        "export-best": ["export-best", "x", "--out", str(tmp_path / "b"), "--storage", bad],
        "status of an unknown study": ["status", "nope", "--storage", trained.url],
        "prepare": ["prepare", str(trained.data), "--resolutions", "32", "--storage", bad],
    }
    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # independent commands, in parallel
        runs = pool.map(lambda args: run_cli(*args, cwd=tmp_path), failing.values())
        procs = dict(zip(failing, runs, strict=True))
    for name, proc in procs.items():
        # prepare takes no --storage: a usage error (exit 2) that quotes the URL, redacted
        assert proc.returncode == (2 if name == "prepare" else 1), (name, proc.stderr[-2000:])
        outputs[f"{name} (failing)"] = proc.stdout + proc.stderr
    outputs["dashboard ok"] = _dashboard_stderr(trained.url, trained.artifacts, tmp_path / "d1",
                                                expect_serving=True)
    outputs["dashboard failing"] = _dashboard_stderr(bad, trained.artifacts, tmp_path / "d2",
                                                     expect_serving=False)
    # what the commands left behind: worker logs, the bundle's text files
    for folder in (trained.logs, tmp_path / "logs", trained.bundle):
        for p in folder.rglob("*"):
            if p.is_file() and p.suffix in (".log", ".json", ".html", ".csv", ".txt"):
                outputs[str(p)] = p.read_text(errors="replace")
    assert len(outputs) >= 16 and any("***" in text for text in outputs.values())
    leaked = [name for name, text in outputs.items() if PASSWORD in text]
    assert not leaked, f"password printed by: {leaked}"


# --- the dashboard's address -------------------------------------------------------------------
def _listening(port: int) -> set[str]:
    """Addresses with a listening TCP socket on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not Path(table).exists():
            continue
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            addr, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(addr)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(struct.pack("<I", *struct.unpack(">I", raw[i:i + 4])) for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


@pytest.mark.parametrize("host, expected", [(None, {"127.0.0.1"}), ("0.0.0.0", {"0.0.0.0"})])
def test_dashboard_binds_to_loopback_unless_told(trained, tmp_path, host, expected):
    port = free_port()
    args = ["dashboard", "--storage", trained.url, "--artifacts", str(trained.artifacts),
            "--port", str(port)] + (["--host", host] if host else [])
    proc, stderr_path = start(args, tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/meta", proc, stderr_path)
        assert _listening(port) == expected
    finally:
        stop(proc)
    assert f"http://127.0.0.1:{port}/dashboard" in stderr_path.read_text()


# --- generated passwords through every output path (secrets found by parsing) -----------------
GENERATED = ["ab'Secr3t\"q", "p@ss%w0rd!", "with space 42", "pässwörd-üñ", "semi;colon&amp=1"]


def _typed(password: str) -> str:
    """The password as a person writes it in a URL: what the URL syntax needs, percent-encoded."""
    return "".join({"@": "%40", "%": "%25", " ": "%20", "&": "%26", "=": "%3D"}.get(c, c)
                   for c in password)


def _urls(password: str) -> list[str]:
    typed = _typed(password)
    return [f"postgresql://u:{typed}@127.0.0.1:{CLOSED_PORT}/db",  # host and port
            f"postgresql://u:{typed}@/db?host=/nonexistent-socket-dir",  # Unix socket, no host
            f"postgresql://u@127.0.0.1:{CLOSED_PORT}/db?password={typed}"]  # libpq query form


@pytest.mark.parametrize("password", GENERATED)
def test_a_generated_password_reaches_no_output(password, tmp_path):
    """Terminal (usage error, connection error), --json, --debug traceback, the worker's log
    folder and $HISTOSWEEP_STORAGE: neither the password nor its typed form is ever printed."""
    url = _urls(password)[GENERATED.index(password) % 3]
    logs = tmp_path / "logs"
    runs = {
        "usage error": (["prepare", str(tmp_path), "--storage", url], None, 2),
        "usage error (--storage=)": (["prepare", str(tmp_path), f"--storage={url}"], None, 2),
        "status": (["status", "x", "--storage", url], None, 1),
        "status --debug": (["status", "x", "--storage", url, "--debug"], None, 1),
        "studies --json": (["studies", "--storage", url, "--json"], None, 1),
        "check": (["check", "x", "--storage", url, "--artifacts", str(tmp_path / "a")], None, 1),
        "worker": (["worker", "x", "--storage", url, "--log-dir", str(logs)], None, 1),
        "env": (["status", "x", "--debug"], {"HISTOSWEEP_STORAGE": url}, 1),
    }
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        procs = dict(zip(runs, pool.map(lambda r: run_cli(*r[0], env=r[1], cwd=tmp_path),
                                        runs.values()), strict=True))
    outputs = {}
    for name, proc in procs.items():
        assert proc.returncode == runs[name][2], (name, proc.stderr[-2000:])
        outputs[name] = proc.stdout + proc.stderr
    outputs.update({str(p): p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file()})
    assert any("***" in text for text in outputs.values())  # the URL was really quoted, redacted
    leaked = [name for name, text in outputs.items()
              if password in text or _typed(password) in text]
    assert not leaked, f"password {password!r} printed by: {leaked}"


def test_the_dashboard_banner_hides_a_parsed_password(tmp_path):
    password = GENERATED[0]
    text = _dashboard_stderr(_urls(password)[1], tmp_path / "a", tmp_path / "d", expect_serving=False)
    assert text.strip() and password not in text and _typed(password) not in text
